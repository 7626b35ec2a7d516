//! The accept loop: HTTP/1.1 and h2c on one port, keep-alive, a header read timeout, and a
//! graceful stop that lets in-flight requests and streams finish within a grace period.
//!
//! Connections are served by `server.workers` workers, each a single-threaded tokio runtime on
//! a thread of its own (worker 0 is the caller's runtime). Worker 0 accepts and hands each new
//! connection to the worker with the fewest open ones; from then on everything that connection
//! does (the request task, its upstream connection from the worker's own client, the response
//! stream) stays on that worker's thread. On a work-stealing runtime these tasks hand each
//! other the request and the answer across threads, which cost about 100 µs a request
//! (docs/benchmarks.md).

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::app::App;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker serving the calling thread (0 outside the extra workers' threads).
pub fn worker_index() -> usize {
    WORKER.get()
}

pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    /// Runtimes for workers 1.., started by `run`.
    extra: Vec<tokio::runtime::Runtime>,
}

impl Server {
    /// Binds the configured address (port 0 picks a free one) and builds the workers' runtimes.
    pub async fn bind(app: Arc<App>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(app.config.listen).await?;
        // A serving instance renews its subscription accounts' tokens; a CLI run on the data
        // dir does not (it would spend their refresh tokens behind the server's back).
        crate::oauth::spawn(&app);
        // Accounts whose budget is spent rest again (the embedded store keeps no health).
        let reviewing = Arc::clone(&app);
        tokio::spawn(async move { crate::budget::review_all(&reviewing).await });
        let extra = (1..app.config.server.worker_count())
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Server {
            listener,
            app,
            extra,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting, waits up to the grace period for
    /// open connections on every worker (less if `cut` completes meanwhile: a second stop signal
    /// closes them at once), and flushes usage and the store, all within [`STOP_TAIL`] of the
    /// grace period's end.
    pub async fn run(self, shutdown: impl Future<Output = ()>, cut: impl Future<Output = ()>) {
        let Server {
            listener,
            app,
            extra,
        } = self;
        let (stop, stopping) = watch::channel(Stop::Serving);
        let (exit, exiting) = watch::channel(false);
        let mut workers = vec![Worker::new(0, None)];
        let mut drained = Vec::new();
        for (i, runtime) in extra.into_iter().enumerate() {
            let index = i + 1;
            let (send, receive) = mpsc::unbounded_channel();
            let (done, wait) = oneshot::channel();
            let worker = Worker::new(index, Some(send));
            let (app, stopping, exiting) = (Arc::clone(&app), stopping.clone(), exiting.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("switchyard-worker-{index}"))
                .spawn(move || {
                    worker_thread(index, runtime, app, receive, stopping, exiting, done);
                });
            match spawned {
                Ok(_) => {
                    workers.push(worker);
                    drained.push(wait);
                }
                Err(e) => {
                    tracing::error!(error = %e, worker = index, "cannot start a worker thread; serving with fewer")
                }
            }
        }
        let began = OnceLock::new();
        let cut_at = OnceLock::new();
        // Never completes: it stays to send the cut while the workers drain.
        let signals = async {
            shutdown.await;
            let _ = began.set(Instant::now());
            stop.send_replace(Stop::Draining);
            cut.await;
            tracing::warn!("stop asked again: closing the open connections now");
            let _ = cut_at.set(Instant::now());
            stop.send_replace(Stop::Cut);
            std::future::pending::<()>().await;
        };
        let served = async {
            accept(listener, &app, &workers, stopping).await;
            for wait in drained {
                let _ = wait.await;
            }
        };
        tokio::select! {
            () = served => {}
            () = signals => {}
        }
        // The tail began when the grace period ended, the stop was cut, or everything had
        // drained, whichever came first.
        let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
        let now = Instant::now();
        let tail_began = [began.get().map(|b| *b + grace), cut_at.get().copied()]
            .into_iter()
            .flatten()
            .fold(now, Instant::min);
        app.shutdown(tail_began + STOP_TAIL).await;
        let _ = exit.send(true);
        tracing::info!("stopped");
    }
}

/// The longest a stop takes after its grace period (`server.shutdown_grace_secs`) or a second
/// signal: closing what is still open, giving leases back, writing the last usage, flushing the
/// store. README and the Dockerfile tell operators to allow the grace plus 15 s: the second
/// left is for the process's exit.
pub const STOP_TAIL: Duration = Duration::from_secs(14);

/// How long the connections closed at the end of the grace period get to end (their requests
/// settle as they drop, so this is a ceiling rarely met); part of [`STOP_TAIL`].
const CUT_WAIT: Duration = Duration::from_secs(5);

/// Worker `index` (1..), on a thread of its own: serves what worker 0 hands it until the stop,
/// says when it has drained, and keeps its runtime turning until the whole server is done (tasks
/// the requests left, such as lease releases being retried, still run).
fn worker_thread(
    index: usize,
    runtime: tokio::runtime::Runtime,
    app: Arc<App>,
    handed: mpsc::UnboundedReceiver<Handed>,
    stopping: watch::Receiver<Stop>,
    mut exiting: watch::Receiver<bool>,
    drained: oneshot::Sender<()>,
) {
    WORKER.set(index);
    runtime.block_on(async move {
        // Serves at once; the worker's own store connections come when ready (until then, and
        // if they cannot be opened, it uses worker 0's).
        let store = Arc::clone(app.store());
        // Stopped by: the connections opened, or given up on (bounded by the store's connect
        // timeout).
        tokio::spawn(async move {
            if let Err(e) = store.start_worker(index).await {
                tracing::warn!(worker = index, error = %e, "the worker uses the first worker's store connections");
            }
        });
        serve_handed(handed, &app, stopping).await;
        let _ = drained.send(());
        let _ = exiting.wait_for(|exit| *exit).await;
    });
}

/// One worker as the acceptor sees it: where to hand it a new connection (`None`: worker 0,
/// which serves on the acceptor's own runtime).
struct Worker {
    index: usize,
    gauge: metrics::Gauge,
    hand: Option<mpsc::UnboundedSender<Handed>>,
}

/// A connection on its way to another worker.
type Handed = (std::net::TcpStream, SocketAddr, Open);

impl Worker {
    fn new(index: usize, hand: Option<mpsc::UnboundedSender<Handed>>) -> Worker {
        Worker {
            index,
            gauge: crate::metrics::worker_connections(index),
            hand,
        }
    }
}

/// One open connection in its worker's count (`WorkerSlot::connections`), from dispatch to
/// the connection's end.
struct Open {
    app: Arc<App>,
    index: usize,
    gauge: metrics::Gauge,
}

impl Open {
    fn of(app: &Arc<App>, worker: &Worker) -> Open {
        if let Some(slot) = app.workers.get(worker.index) {
            slot.connections.fetch_add(1, Ordering::Relaxed);
        }
        worker.gauge.increment(1.0);
        Open {
            app: Arc::clone(app),
            index: worker.index,
            gauge: worker.gauge.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(slot) = self.app.workers.get(self.index) {
            slot.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.gauge.decrement(1.0);
    }
}

/// The worker with the fewest open connections; ties go round the workers in turn. A worker
/// whose thread has ended (its receiver is gone) is passed over; worker 0 always serves.
fn least_busy(workers: &[Worker], turn: usize, open: impl Fn(usize) -> usize) -> Option<&Worker> {
    let n = workers.len();
    (0..n)
        .filter_map(|i| workers.get((turn + i) % n))
        .filter(|w| w.hand.as_ref().is_none_or(|hand| !hand.is_closed()))
        .min_by_key(|w| open(w.index))
}

/// Worker 0: accepts until the stop, serves its share of the connections, hands the others on.
async fn accept(
    listener: TcpListener,
    app: &Arc<App>,
    workers: &[Worker],
    stopping: watch::Receiver<Stop>,
) {
    let connections = Connections::new(app);
    let stop = reached(stopping.clone(), Stop::Draining);
    tokio::pin!(stop);
    let mut turn = 0usize;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        turn = turn.wrapping_add(1);
        let open_on = |i: usize| {
            app.workers
                .get(i)
                .map_or(usize::MAX, |slot| slot.connections.load(Ordering::Relaxed))
        };
        let Some(worker) = least_busy(workers, turn, open_on) else {
            continue;
        };
        let open = Open::of(app, worker);
        let Some(hand) = &worker.hand else {
            connections.serve(stream, peer, open);
            continue;
        };
        // Leaves this runtime's reactor for the other worker's. Should that worker end in
        // between, the connection closes unanswered (and `open` uncounts it).
        match stream.into_std() {
            Ok(std) => {
                let _ = hand.send((std, peer, open));
            }
            Err(e) => tracing::debug!(peer = %peer, error = %e, "connection lost before serving"),
        }
    }
    drop(listener);
    connections.drain(stopping).await;
}

/// Workers 1..: serve the connections worker 0 hands over, until the stop.
async fn serve_handed(
    mut handed: mpsc::UnboundedReceiver<Handed>,
    app: &Arc<App>,
    stopping: watch::Receiver<Stop>,
) {
    let connections = Connections::new(app);
    let stop = reached(stopping.clone(), Stop::Draining);
    tokio::pin!(stop);
    loop {
        let (std, peer, open) = tokio::select! {
            handed = handed.recv() => match handed {
                Some(conn) => conn,
                None => break,
            },
            () = &mut stop => break,
        };
        match TcpStream::from_std(std) {
            Ok(stream) => connections.serve(stream, peer, open),
            Err(e) => tracing::warn!(peer = %peer, error = %e, "cannot serve a connection"),
        }
    }
    // Connections handed over but not taken yet close unanswered, as unaccepted ones do.
    handed.close();
    connections.drain(stopping).await;
}

/// Completes once the server's stop is at `stage` or past it (at once if the server is gone).
async fn reached(mut stopping: watch::Receiver<Stop>, stage: Stop) {
    let _ = stopping.wait_for(|stop| *stop >= stage).await;
}

/// The connections of one worker, and how they are served.
struct Connections {
    app: Arc<App>,
    versions: Arc<Versions>,
    graceful: GracefulShutdown,
    /// Where the stop is: connections still deciding their version close when it begins, the
    /// others when the grace period is over.
    closing: watch::Sender<Stop>,
}

/// Stages of the stop, in order: the server's (`Server::run`) and each worker's connections'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    Serving,
    /// Finish what is open, take nothing new.
    Draining,
    /// The grace period is over, or the stop was asked again: close what is still open.
    Cut,
}

/// One builder per HTTP version, chosen by what the client sends first. hyper-util's
/// version-detecting builder reads the first 24 bytes on their own and hands them back to the
/// HTTP/1 parser as a prefix, which makes hyper double every connection's 8 KiB read buffer on
/// its next read (16 KiB held per open connection, docs/benchmarks.md); peeking at the socket
/// instead leaves the bytes where they are.
struct Versions {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// How long a new connection may stay silent.
    first_bytes_timeout: Duration,
    /// How long a write to the client may wait (`server.write_timeout_secs`).
    write_timeout: Duration,
}

impl Connections {
    fn new(app: &Arc<App>) -> Connections {
        let server = &app.config.server;
        let header_read_timeout = Duration::from_secs(server.header_read_timeout_secs);
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(server.keep_alive);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        Connections {
            app: Arc::clone(app),
            versions: Arc::new(Versions {
                http1,
                http2,
                first_bytes_timeout: header_read_timeout,
                write_timeout: Duration::from_secs(server.write_timeout_secs),
            }),
            graceful: GracefulShutdown::new(),
            closing: watch::channel(Stop::Serving).0,
        }
    }

    /// Serves one connection on a task of the current runtime.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, open: Open) {
        let app = Arc::clone(&self.app);
        let versions = Arc::clone(&self.versions);
        let watcher = self.graceful.watcher();
        let mut closing = self.closing.subscribe();
        // Stopped by: the connection closing, silence past the header timeout, or the stop
        // (at once while the version is undecided, else gracefully, and at the end of the grace
        // period by `Stop::Cut`).
        tokio::spawn(async move {
            let _open = open;
            let sniffed = tokio::select! {
                sniffed = tokio::time::timeout(versions.first_bytes_timeout, opens_with_h2_preface(&stream)) => sniffed,
                _ = closing.wait_for(|stop| *stop != Stop::Serving) => return,
            };
            let io = TokioIo::new(WriteDeadline::new(stream, versions.write_timeout));
            let served = match sniffed {
                Ok(Ok(false)) => {
                    let peer = peer.ip();
                    let service = service_fn(move |req| handle(&app, req, peer));
                    let serve = watcher.watch(versions.http1.serve_connection(io, service));
                    // Dropping a connection drops its request: the relay settles it as one whose
                    // client hung up (what passed is billed, the leases are given back).
                    tokio::select! {
                        served = serve => served,
                        _ = closing.wait_for(|stop| *stop == Stop::Cut) => Ok(()),
                    }
                }
                // h2c with prior knowledge is rare; its larger connection state gets a box of
                // its own, so that the task of every HTTP/1.1 connection stays small.
                Ok(Ok(true)) => {
                    // Counted by the stop's drain until the connection ends.
                    let _watched = watcher;
                    let activity = Arc::new(Activity::new());
                    let seen = Arc::clone(&activity);
                    let service = service_fn(move |req| {
                        let during = seen.begin();
                        let handled = handle(&app, req, peer.ip());
                        async move {
                            let resp = handled.await?;
                            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                                let stall = during.0.stall_probe();
                                During {
                                    body,
                                    during,
                                    stall,
                                }
                                .boxed()
                            }))
                        }
                    });
                    let conn = Box::pin(versions.http2.serve_connection(io, service));
                    let limits = H2Limits {
                        idle: versions.first_bytes_timeout,
                        stalled: versions.write_timeout,
                    };
                    serve_h2(conn, &activity, closing, limits).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "connection closed before a request");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "connection silent past the header timeout");
                    return;
                }
            };
            if let Err(e) = served {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }

    /// Waits up to the grace period for the open connections to finish, less if the server's
    /// stop (`stopping`) is cut meanwhile.
    async fn drain(self, stopping: watch::Receiver<Stop>) {
        let grace = Duration::from_secs(self.app.config.server.shutdown_grace_secs);
        tracing::info!(
            grace_secs = grace.as_secs(),
            "stopping: waiting for open requests to finish"
        );
        self.closing.send_replace(Stop::Draining);
        self.app.mark_stopping();
        let drained = self.graceful.shutdown();
        tokio::pin!(drained);
        tokio::select! {
            () = &mut drained => return,
            () = tokio::time::sleep(grace) => {
                tracing::warn!("grace period over; closing the remaining connections");
            }
            () = reached(stopping, Stop::Cut) => {}
        }
        self.closing.send_replace(Stop::Cut);
        // Each closed connection's request settles as it drops; their tasks end at once.
        let _ = tokio::time::timeout(CUT_WAIT, drained).await;
    }
}

/// One request through the relay. Boxed: hyper keeps a slot the size of this future for the
/// whole life of the connection, and the relay's future is several KiB.
fn handle(
    app: &Arc<App>,
    req: http::Request<hyper::body::Incoming>,
    peer: std::net::IpAddr,
) -> impl Future<Output = Result<http::Response<crate::body::Body>, std::convert::Infallible>> + use<>
{
    let handled = Box::pin(crate::router::handle(Arc::clone(app), req, Some(peer)));
    async move { Ok(handled.await) }
}

/// What an h2c connection's requests are doing: how many began, how many are in flight (until
/// their response body ends or is dropped), and whether one's response waits for its window.
struct Activity {
    begun: AtomicU64,
    in_flight: AtomicU64,
    /// The connection's start: the streams' stall probes count from it.
    origin: std::time::Instant,
    /// Each response body's stall probe: since when (ms after `origin`, 0: not) its last frame
    /// has waited for hyper to ask for the next.
    stalls: std::sync::Mutex<Vec<std::sync::Weak<AtomicU64>>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            begun: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            origin: std::time::Instant::now(),
            stalls: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A stall probe for one response body, watched by `stalled_for`.
    fn stall_probe(&self) -> Arc<AtomicU64> {
        let probe = Arc::new(AtomicU64::new(0));
        let mut stalls = match self.stalls.lock() {
            Ok(stalls) => stalls,
            Err(poisoned) => poisoned.into_inner(),
        };
        stalls.retain(|s| s.strong_count() > 0);
        stalls.push(Arc::downgrade(&probe));
        probe
    }

    /// Whether some body's frame has waited `limit` for hyper to take the next: its client
    /// gives the stream no window (an HTTP/2 client that stops reading one stream while it
    /// reads the others; the socket stays writable, so the write deadline never sees it).
    fn stalled_for(&self, limit: Duration) -> bool {
        let now = self.now_ms();
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let stalls = match self.stalls.lock() {
            Ok(stalls) => stalls,
            Err(poisoned) => poisoned.into_inner(),
        };
        stalls.iter().filter_map(std::sync::Weak::upgrade).any(|s| {
            let since = s.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since) >= limit
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn is_quiet(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }
}

/// One request in flight on an h2c connection.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that counts as its request in flight until it ends or is dropped, and
/// notes how long a frame it handed over waits for the next poll (`Activity::stalled_for`).
struct During {
    body: crate::body::Body,
    during: InFlight,
    stall: Arc<AtomicU64>,
}

impl http_body::Body for During {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        // A frame handed over is sent as the client's window allows; hyper asks for the next
        // once it is. Waiting on the upstream (pending) is not a stall.
        let since = match &polled {
            std::task::Poll::Ready(Some(Ok(_))) => self.during.0.now_ms(),
            _ => 0,
        };
        self.stall.store(since, Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The times an h2c connection is held to.
#[derive(Clone, Copy)]
struct H2Limits {
    /// Without a request begun or running (the header timeout).
    idle: Duration,
    /// A response's frame waiting for its stream's window (the write timeout).
    stalled: Duration,
}

/// Serves an h2c connection. hyper's h2 server closes none that stays open without requests,
/// so one where no request began nor ran for `idle` is shut, gracefully (GOAWAY: the client
/// opens another connection for more), as an idle HTTP/1.1 connection is closed after the
/// header timeout; and dropped if it is still open with nothing in flight `idle` later (a
/// client that does not answer the shutdown's PING keeps it open otherwise). A connection
/// where a response's frame has waited `stalled` for its stream's window is dropped, as an
/// HTTP/1.1 client that stops reading is cut by the write deadline (its requests settle as
/// ones whose client went away). The stop shuts it the same way, and `Stop::Cut` drops it.
async fn serve_h2<C>(
    mut conn: std::pin::Pin<Box<C>>,
    activity: &Activity,
    mut closing: watch::Receiver<Stop>,
    limits: H2Limits,
) -> Result<(), hyper::Error>
where
    C: hyper_util::server::graceful::GracefulConnection<Error = hyper::Error>,
{
    let H2Limits { idle, stalled } = limits;
    // Often enough to notice a stall within a fraction of its limit past it.
    let every = idle.min(stalled / 4).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut quiet_for = Duration::ZERO;
    let mut seen = activity.begun.load(Ordering::Relaxed);
    let mut shutting = false;
    loop {
        let stop = *closing.borrow_and_update();
        if stop == Stop::Cut {
            return Ok(());
        }
        if stop == Stop::Draining && !shutting {
            conn.as_mut().graceful_shutdown();
            shutting = true;
        }
        tokio::select! {
            served = conn.as_mut() => return served,
            changed = closing.changed() => {
                if changed.is_err() {
                    // The server is gone: nothing will signal the stop any more.
                    return conn.await;
                }
            }
            _ = tick.tick() => {
                if activity.stalled_for(stalled) {
                    tracing::debug!("h2c stream without window past the write timeout; connection dropped");
                    return Ok(());
                }
                let begun = activity.begun.load(Ordering::Relaxed);
                quiet_for = if begun == seen && activity.is_quiet() {
                    quiet_for + every
                } else {
                    Duration::ZERO
                };
                seen = begun;
                if quiet_for < idle {
                    continue;
                }
                quiet_for = Duration::ZERO;
                if shutting {
                    return Ok(());
                }
                conn.as_mut().graceful_shutdown();
                shutting = true;
            }
        }
    }
}

/// A client connection whose writes may wait at most `limit`. hyper has no write timeout and
/// polls a response body only when it can write, so a client that stops reading would hold its
/// request, the upstream connection and its leases for as long as it likes (the tap's idle timer
/// is not polled either); past the limit the write fails, hyper closes the connection, and the
/// request settles as one whose client went away. The timer is made on the first write that
/// has to wait, and reset by each write that goes through.
struct WriteDeadline {
    stream: TcpStream,
    limit: Duration,
    waiting: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: TcpStream, limit: Duration) -> WriteDeadline {
        WriteDeadline {
            stream,
            limit,
            waiting: None,
        }
    }

    /// After a write that could not go through now: fails once it has waited `limit`.
    fn wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<usize>> {
        let limit = self.limit;
        let timer = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client has not read for the write timeout",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn wrote(
        &mut self,
        written: std::task::Poll<std::io::Result<usize>>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        match written {
            std::task::Poll::Pending => self.wait(cx),
            done => {
                self.waiting = None;
                done
            }
        }
    }
}

impl tokio::io::AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(written, cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// HTTP/2's connection preface: a client that opens with it speaks h2c with prior knowledge.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client's first bytes are HTTP/2's preface, looked at without taking them off the
/// socket. An error when the client closes before sending anything.
async fn opens_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if first[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // The start of the preface and nothing more yet: peeking again at once would find the
        // same bytes (the socket stays readable), so wait a moment for the rest, longer each time
        // (a client that stalls here on purpose costs a wake-up every 64 ms, until the timeout).
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(64));
    }
}

/// SIGINT and SIGTERM, counted from this call on: the first completes the first future (stop
/// gracefully), the second the second (cut the grace short: an operator who will not wait
/// presses Ctrl-C again). Each completes at most once, and never if no signal can be listened to.
pub fn stop_signals() -> (
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
) {
    let (count, counted) = watch::channel(0u32);
    listen_for_signals(count);
    (signalled(counted.clone(), 1), signalled(counted, 2))
}

async fn signalled(mut counted: watch::Receiver<u32>, times: u32) {
    if counted.wait_for(|n| *n >= times).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(unix)]
fn listen_for_signals(count: watch::Sender<u32>) {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    // Registered here, before the caller goes on: a signal from now on is not missed.
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::error!(error = %e, signal = name, "cannot listen for a stop signal");
            None
        }
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    async fn next(listener: &mut Option<Signal>) -> Option<()> {
        match listener {
            Some(l) => l.recv().await,
            None => std::future::pending().await,
        }
    }
    // Stopped by: the end of the runtime (signals count as long as the process serves), or
    // both listeners closing.
    tokio::spawn(async move {
        while interrupt.is_some() || terminate.is_some() {
            let (got, which) = tokio::select! {
                got = next(&mut interrupt) => (got, 0),
                got = next(&mut terminate) => (got, 1),
            };
            match (got, which) {
                (Some(()), _) => {
                    count.send_modify(|n| *n = n.saturating_add(1));
                }
                (None, 0) => interrupt = None,
                (None, _) => terminate = None,
            }
        }
    });
}

#[cfg(not(unix))]
fn listen_for_signals(count: watch::Sender<u32>) {
    // Stopped by: the end of the runtime, or Ctrl-C becoming impossible to listen for.
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            count.send_modify(|n| *n = n.saturating_add(1));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(workers: &[Worker], turn: usize, open: &[usize]) -> Option<usize> {
        least_busy(workers, turn, |i| open[i]).map(|w| w.index)
    }

    #[test]
    fn new_connections_go_to_the_least_busy_live_worker_and_ties_take_turns() {
        let (hand1, gone1) = mpsc::unbounded_channel();
        let (hand2, _alive2) = mpsc::unbounded_channel();
        let workers = [
            Worker::new(0, None),
            Worker::new(1, Some(hand1)),
            Worker::new(2, Some(hand2)),
        ];
        assert_eq!(pick(&workers, 0, &[3, 1, 2]), Some(1));
        assert_eq!(pick(&workers, 5, &[0, 4, 4]), Some(0));
        let turns: Vec<_> = (0..3).map(|t| pick(&workers, t, &[2, 2, 2])).collect();
        assert_eq!(turns, [Some(0), Some(1), Some(2)], "ties go round");
        // Worker 1's thread ended: passed over even when it has the fewest.
        drop(gone1);
        assert_eq!(pick(&workers, 1, &[3, 0, 2]), Some(2));
        assert_eq!(pick(&workers, 1, &[0, 0, 2]), Some(0));
    }
}
