//! A response body that shows every chunk to an observer and passes it on unchanged.
//!
//! Nothing is reordered or held back for long: the observer sees each frame the moment the
//! upstream yields it. Frames that arrive back to back are handed on merged (at most
//! `COALESCE_MAX` bytes, after at most `COALESCE_YIELDS` turns of the scheduler): hyper's client
//! body delivers one frame per poll and the server writes whenever the body is not ready, so
//! passing frames one by one costs one `writev` per SSE event, which dominated a streamed
//! answer's CPU (docs/benchmarks.md). A frame that arrives after a quiet moment goes out as soon
//! as the scheduler comes back to this task. The first frame can be read before the response head
//! is handed on (`poll_prime`), so that head and first bytes go out in one write, but never
//! waited for. The observer hears how the body ended exactly once:
//! when the upstream body finished, when it failed, or when the tap was dropped first (the client
//! went away; dropping the inner body cancels the upstream request).
//!
//! A stream that stalls (nothing for the idle timeout) or fails is cut; when the observer can
//! say so in the client's protocol (an SSE error event), the client gets that event and a clean
//! end instead of a broken connection.
//!
//! While the body runs, the observer is asked every renewal period to keep what the request holds
//! alive (`Observer::renew`: its leases, which would expire on their own). One timer serves both:
//! it is set to the earlier of the idle cut and the next renewal, so a renewal comes also while
//! the upstream is silent (an idle timeout at or beyond the leases' ttl), and a short body pays
//! one comparison per frame for it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How a tapped body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte the upstream sent was handed on.
    Complete,
    /// The upstream body failed (reset, idle timeout) after this error.
    Failed(String),
    /// The body was dropped before its end: the client disconnected.
    Dropped,
}

pub trait Observer: Send + 'static {
    fn on_data(&mut self, data: &Bytes);
    /// Called exactly once.
    fn on_end(&mut self, end: End);
    /// A last frame telling the client, in its protocol, that the stream was cut (an SSE error
    /// event); `None` passes the failure on as a body error instead.
    fn error_event(&self, _message: &str) -> Option<Bytes> {
        None
    }
    /// The body is still running: whatever the request holds that would expire on its own must be
    /// kept (its leases). Called every [`Tap::with_renewal`] period until the end; must not wait.
    fn renew(&mut self) {}
}

pub struct Tap<B: Body, O: Observer> {
    inner: B,
    /// `None` once the end was reported.
    observer: Option<O>,
    /// The idle cut and the renewals, when either was asked for.
    timer: Option<Timer>,
    /// The error event to send after a cut; then the body ends.
    trailer: Option<Bytes>,
    /// Set after a cut: the inner body is not polled again.
    cut: bool,
    /// The last two bytes observed (`\n\n` before any): whether a cut falls between two SSE
    /// events, or inside one that its error event must not run into.
    tail: [u8; 2],
    /// Data received and observed but not yet handed on (coalescing).
    held: BytesMut,
    /// Times this task yielded with `held` waiting for a next frame.
    yields: u8,
    /// What the inner body said after `held` began (its end, an error, trailers): handed on
    /// right after `held`.
    stashed: Option<Option<Result<Frame<Bytes>, B::Error>>>,
    /// The first frame, read by [`Tap::poll_prime`] before the response head was handed on.
    primed: Option<Option<Result<Frame<Bytes>, B::Error>>>,
    /// Set by [`Tap::defer_end`]: how the body ended, kept to be reported when the tap is
    /// dropped (`Some(None)` while it has not ended).
    deferred: Option<Option<End>>,
}

/// Merged frames are handed on at this size at the latest.
const COALESCE_MAX: usize = 64 * 1024;
/// Held data is handed on after this many turns of the scheduler without a new frame.
const COALESCE_YIELDS: u8 = 3;
/// [`Tap::poll_prime`] gives up after this many turns of the scheduler without a first frame.
const PRIME_YIELDS: u8 = 2;

/// The tap's one timer: it fires at the idle cut or at the next renewal, whichever comes first.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// A stream that yields nothing for this long is cut; and when, if nothing comes before.
    idle: Option<(Duration, Instant)>,
    /// `Observer::renew` is due this often while the body runs; and when next.
    renew: Option<(Duration, Instant)>,
}

/// What the timer says when it fires.
enum Tick {
    Renew,
    /// Nothing came for this long.
    Stalled(Duration),
}

impl Timer {
    fn new() -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            idle: None,
            renew: None,
        }
    }

    /// Sets the sleep to the earlier of the idle cut and the next renewal.
    fn arm(&mut self) {
        let next = match (self.idle, self.renew) {
            (Some((_, cut)), Some((_, renew))) => cut.min(renew),
            (Some((_, at)), None) | (None, Some((_, at))) => at,
            (None, None) => return,
        };
        self.sleep.as_mut().reset(next);
    }

    /// A frame arrived: the idle cut moves back. Returns whether a renewal is due.
    fn on_frame(&mut self) -> bool {
        let now = Instant::now();
        if let Some((timeout, cut)) = &mut self.idle {
            *cut = now + *timeout;
        }
        let due = match &mut self.renew {
            Some((every, at)) if *at <= now => {
                *at = now + *every;
                true
            }
            _ => false,
        };
        self.arm();
        due
    }

    /// Polled while the upstream has nothing to hand on.
    fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Tick> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some((timeout, cut)) = self.idle
                && cut <= now
            {
                return Poll::Ready(Tick::Stalled(timeout));
            }
            if let Some((every, at)) = &mut self.renew
                && *at <= now
            {
                *at = now + *every;
                self.arm();
                return Poll::Ready(Tick::Renew);
            }
            // The sleep ends at the earlier of the two, so one of them is due; should the clock
            // say otherwise, wait for it again.
            self.arm();
        }
    }
}

impl<B: Body, O: Observer> Tap<B, O> {
    pub fn new(inner: B, observer: O) -> Tap<B, O> {
        Tap {
            inner,
            observer: Some(observer),
            timer: None,
            trailer: None,
            cut: false,
            tail: *b"\n\n",
            held: BytesMut::new(),
            yields: 0,
            stashed: None,
            primed: None,
            deferred: None,
        }
    }

    /// Reports the end only when the tap is dropped, not when the body ends: for a body read
    /// whole by its owner, who may change the observer ([`Tap::observer_mut`]) once it has
    /// judged what it read.
    pub fn defer_end(&mut self) {
        self.deferred.get_or_insert(None);
    }

    /// The observer, until the end was reported.
    pub fn observer_mut(&mut self) -> Option<&mut O> {
        self.observer.as_mut()
    }

    /// Hands on `next` now, or after the held data when there is some.
    fn after_held(
        &mut self,
        next: Option<Result<Frame<Bytes>, B::Error>>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if self.held.is_empty() {
            return Poll::Ready(next);
        }
        self.stashed = Some(next);
        Poll::Ready(Some(Ok(Frame::data(self.held.split().freeze()))))
    }

    /// Cuts the body when the upstream sends nothing for `timeout`.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Tap<B, O> {
        let timer = self.timer.get_or_insert_with(Timer::new);
        timer.idle = Some((timeout, Instant::now() + timeout));
        timer.arm();
        self
    }

    /// Calls `Observer::renew` at `first`, then every `every`, for as long as the body runs:
    /// with the first frame at or after each due time, or when it is due while the upstream is
    /// silent.
    pub fn with_renewal(mut self, first: Instant, every: Duration) -> Tap<B, O> {
        // A zero period would be due again at once, and the tap would renew in a loop.
        let every = every.max(Duration::from_millis(1));
        let timer = self.timer.get_or_insert_with(Timer::new);
        timer.renew = Some((every, first));
        timer.arm();
        self
    }

    /// Asks the observer to renew what the request holds.
    fn renew(&mut self) {
        if let Some(observer) = self.observer.as_mut() {
            observer.renew();
        }
    }

    /// Hands `read`, the first bytes of the inner body read by the caller before the tap was
    /// made (a stream's first event, judged before the answer was taken), on first: observed
    /// now, as the tap observes every frame, and held to go out merged with what the upstream
    /// has ready after it.
    pub fn prepend(&mut self, read: Bytes) {
        self.observe(&read);
        if self.inner.is_end_stream() {
            self.end(End::Complete);
        }
        // Taken over without a copy when nothing else holds it (the caller's buffer, frozen).
        match read.try_into_mut() {
            Ok(read) if self.held.is_empty() => self.held = read,
            Ok(read) => self.held.extend_from_slice(&read),
            Err(read) => self.held.extend_from_slice(&read),
        }
    }

    /// Shows `data` to the observer and keeps its last two bytes.
    fn observe(&mut self, data: &Bytes) {
        if let Some(observer) = self.observer.as_mut() {
            observer.on_data(data);
        }
        match data[..] {
            [] => {}
            [last] => self.tail = [self.tail[1], last],
            [.., a, b] => self.tail = [a, b],
        }
    }

    fn end(&mut self, end: End) {
        if let Some(deferred) = &mut self.deferred {
            deferred.get_or_insert(end);
            return;
        }
        if let Some(mut observer) = self.observer.take() {
            observer.on_end(end);
        }
    }

    /// Ends the body after a failure: reports it, then either sends the observer's error event
    /// or lets `Err` through. A cut inside an event (a partial line, or lines without their
    /// blank line) first ends that event, so that the error arrives as an event of its own
    /// rather than glued to the broken one (`\r\n\r\n` reads as inside: one blank line more
    /// is a no-op in SSE).
    fn fail(&mut self, message: String) -> Option<Bytes> {
        let event = self
            .observer
            .as_ref()
            .and_then(|o| o.error_event(&message))
            .map(|event| match &self.tail {
                b"\n\n" | b"\r\r" => event,
                _ => [&b"\n\n"[..], &event].concat().into(),
            });
        self.end(End::Failed(message));
        self.cut = event.is_some();
        event
    }
}

impl<B, O> Tap<B, O>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display + From<std::io::Error> + Unpin,
    O: Observer + Unpin,
{
    /// Reads the first frame (merged as any other) before the response head is handed on, so
    /// that the server writes head and first bytes in one go: hyper flushes the head alone when
    /// the body's first poll finds nothing, which costs a second write to the client, and a
    /// second wake-up of the client, on nearly every streamed answer (the upstream's head and its
    /// first event come together, but the upstream connection's task hands the event over only
    /// after this one has the head). Gives up after a few turns of the scheduler when the
    /// upstream has sent nothing yet: the head is never held back waiting for the upstream.
    ///
    /// A poll function (`quiet` counts the turns given so far) rather than an `async fn`: the
    /// relay drives it from a future of its own (`relay::Priming` says why).
    pub fn poll_prime(&mut self, cx: &mut Context<'_>, quiet: &mut u8) -> Poll<()> {
        let first = match Pin::new(&mut *self).poll_frame(cx) {
            Poll::Ready(frame) => Some(frame),
            // Coalescing: the tap comes back by itself.
            Poll::Pending if !self.held.is_empty() => return Poll::Pending,
            Poll::Pending if *quiet < PRIME_YIELDS => {
                *quiet += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => None,
        };
        self.primed = first;
        Poll::Ready(())
    }
}

impl<B, O> Body for Tap<B, O>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display + From<std::io::Error> + Unpin,
    O: Observer + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.primed.take() {
            return Poll::Ready(first);
        }
        if let Some(event) = this.trailer.take() {
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        if let Some(next) = this.stashed.take() {
            return Poll::Ready(next);
        }
        if this.cut {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let renewal_due = this.timer.as_mut().is_some_and(Timer::on_frame);
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers.
                        Err(frame) => return this.after_held(Some(Ok(frame))),
                    };
                    this.observe(&data);
                    // Report the end before handing on the last bytes, so that whoever reads
                    // the whole response can rely on it having been accounted. The last frame
                    // renews nothing: the leases go back with the end.
                    let end = this.inner.is_end_stream();
                    if end {
                        this.end(End::Complete);
                    } else if renewal_due {
                        this.renew();
                    }
                    if this.held.is_empty() && (end || data.len() >= COALESCE_MAX) {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    this.held.extend_from_slice(&data);
                    this.yields = 0;
                    if end || this.held.len() >= COALESCE_MAX {
                        return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                    }
                    // More may be ready already: keep reading.
                }
                Poll::Ready(Some(Err(e))) => {
                    let next = match this.fail(e.to_string()) {
                        Some(event) => Ok(Frame::data(event)),
                        None => Err(e),
                    };
                    return this.after_held(Some(next));
                }
                Poll::Ready(None) => {
                    this.end(End::Complete);
                    return this.after_held(None);
                }
                Poll::Pending if !this.held.is_empty() => {
                    if this.yields < COALESCE_YIELDS {
                        // Let the task that reads the upstream run; come back right after.
                        this.yields += 1;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    this.yields = 0;
                    return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                }
                Poll::Pending => {
                    let tick = match &mut this.timer {
                        Some(timer) => timer.poll_tick(cx),
                        None => Poll::Pending,
                    };
                    let timeout = match tick {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Tick::Renew) => {
                            this.renew();
                            // Polls the upstream and the re-armed timer again, so that this task
                            // is woken by whichever comes first.
                            continue;
                        }
                        Poll::Ready(Tick::Stalled(timeout)) => timeout,
                    };
                    let message = format!(
                        "the upstream sent nothing for {} s; the stream was cut",
                        timeout.as_secs()
                    );
                    return match this.fail(message.clone()) {
                        Some(event) => Poll::Ready(Some(Ok(Frame::data(event)))),
                        None => Poll::Ready(Some(Err(B::Error::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            message,
                        ))))),
                    };
                }
            }
        }
    }

    /// Not before the observer heard of the end: a server drops a body that says it is at its
    /// end without polling it (an empty answer, a 502 with `content-length: 0`), which would
    /// read as a client that went away.
    fn is_end_stream(&self) -> bool {
        self.observer.is_none()
            && self.primed.is_none()
            && self.trailer.is_none()
            && self.held.is_empty()
            && self.stashed.is_none()
            && (self.cut || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.primed.is_some()
            || self.cut
            || self.trailer.is_some()
            || !self.held.is_empty()
            || self.stashed.is_some()
        {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl<B: Body, O: Observer> Drop for Tap<B, O> {
    fn drop(&mut self) {
        let end = self.deferred.take().flatten().unwrap_or(End::Dropped);
        self.end(end);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(Vec<u8>, Vec<End>)>>);

    impl Observer for Seen {
        fn on_data(&mut self, data: &Bytes) {
            self.0.lock().unwrap().0.extend_from_slice(data);
        }
        fn on_end(&mut self, end: End) {
            self.0.lock().unwrap().1.push(end);
        }
    }

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    fn body_of(
        chunks: Vec<Result<&'static str, &'static str>>,
    ) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames = chunks.into_iter().map(|c| {
            c.map(|s| Frame::data(Bytes::from(s)))
                .map_err(BoxError::from)
        });
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// A body fed by the test, frame by frame.
    fn channel_body() -> (
        tokio::sync::mpsc::Sender<&'static str>,
        impl Body<Data = Bytes, Error = BoxError> + Unpin,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(1);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|c| c.map(|s| Ok::<_, BoxError>(Frame::data(Bytes::from(s)))))
        });
        (tx, StreamBody::new(stream))
    }

    /// Every frame the tap hands on, to its end; each must be data.
    async fn data_frames<B>(tap: &mut B) -> Vec<Bytes>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Debug,
    {
        let mut frames = Vec::new();
        while let Some(frame) = tap.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        frames
    }

    /// An observer that can say "cut" in SSE.
    #[derive(Clone, Default)]
    struct Sse(Seen);

    impl Observer for Sse {
        fn on_data(&mut self, data: &Bytes) {
            self.0.on_data(data);
        }
        fn on_end(&mut self, end: End) {
            self.0.on_end(end);
        }
        fn error_event(&self, message: &str) -> Option<Bytes> {
            Some(Bytes::from(format!("event: error\ndata: {message}\n\n")))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_is_cut_with_an_error_event_after_the_idle_timeout() {
        use futures_util::StreamExt;
        let seen = Sse::default();
        let first = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from("ab")))]);
        let stalled = first.chain(futures_util::stream::pending());
        let tap = Tap::new(StreamBody::new(stalled), seen.clone())
            .with_idle_timeout(Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        let out = tap.collect().await.unwrap().to_bytes();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("ab\n\nevent: error\n"), "{text}");
        let s = seen.0.0.lock().unwrap();
        assert_eq!(s.0, b"ab", "what passed is what is accounted");
        assert!(matches!(&s.1[..], [End::Failed(m)] if m.contains("30 s")));
    }

    #[tokio::test(start_paused = true)]
    async fn each_frame_pushes_the_idle_deadline_back() {
        use futures_util::StreamExt;
        // Frames at 0 s, 20 s and 45 s, then nothing: cut 30 s after the last, at 75 s.
        let frames = futures_util::stream::iter([0u64, 20, 25]).then(|wait| async move {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            Ok::<_, BoxError>(Frame::data(Bytes::from("ab")))
        });
        let stalled = Box::pin(frames.chain(futures_util::stream::pending()));
        let tap = Tap::new(StreamBody::new(stalled), Sse::default())
            .with_idle_timeout(Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        let out = tap.collect().await.unwrap().to_bytes();
        assert_eq!(started.elapsed(), Duration::from_secs(75));
        assert!(out.starts_with(b"ababab"), "{out:?}");
    }

    /// Records when (since `started`) it was asked to renew, and how the body ended.
    #[derive(Clone)]
    struct Renews {
        started: tokio::time::Instant,
        seen: Arc<Mutex<(Vec<Duration>, Vec<End>)>>,
    }

    impl Renews {
        fn new() -> Renews {
            Renews {
                started: tokio::time::Instant::now(),
                seen: Arc::default(),
            }
        }

        fn renewals(&self) -> Vec<u64> {
            let seen = self.seen.lock().unwrap();
            seen.0.iter().map(Duration::as_secs).collect()
        }

        fn ends(&self) -> Vec<End> {
            self.seen.lock().unwrap().1.clone()
        }
    }

    impl Observer for Renews {
        fn on_data(&mut self, _: &Bytes) {}
        fn on_end(&mut self, end: End) {
            self.seen.lock().unwrap().1.push(end);
        }
        fn error_event(&self, message: &str) -> Option<Bytes> {
            Some(Bytes::from(format!("event: error\ndata: {message}\n\n")))
        }
        fn renew(&mut self) {
            let at = self.started.elapsed();
            self.seen.lock().unwrap().0.push(at);
        }
    }

    /// A body of one frame after each wait (seconds), then its end; `None` instead of the end:
    /// it then stays silent for good.
    fn timed_body(
        waits: &'static [u64],
        end: Option<()>,
    ) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        use futures_util::StreamExt;
        let frames = futures_util::stream::iter(waits.iter().copied()).then(|wait| async move {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            Ok::<_, BoxError>(Frame::data(Bytes::from("ab\n\n")))
        });
        let tail = match end {
            Some(()) => futures_util::stream::empty().boxed(),
            None => futures_util::stream::pending().boxed(),
        };
        StreamBody::new(Box::pin(frames.chain(tail)))
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_come_every_period_while_frames_flow() {
        let renews = Renews::new();
        let first = renews.started + Duration::from_secs(10);
        // A frame every 3 s for 36 s.
        let waits: &'static [u64] = &[0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3];
        let tap = Tap::new(timed_body(waits, Some(())), renews.clone())
            .with_idle_timeout(Duration::from_secs(300))
            .with_renewal(first, Duration::from_secs(10));
        let out = tap.collect().await.unwrap().to_bytes();
        assert_eq!(out.len(), 4 * waits.len());
        assert_eq!(renews.renewals(), [10, 20, 30]);
        assert_eq!(renews.ends(), [End::Complete]);
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_come_while_the_upstream_is_silent() {
        // The idle timeout is longer than the renewal period (a lease ttl below it): silence
        // between two frames must not let the leases expire.
        let renews = Renews::new();
        let first = renews.started + Duration::from_secs(10);
        let tap = Tap::new(timed_body(&[0, 45], Some(())), renews.clone())
            .with_idle_timeout(Duration::from_secs(100))
            .with_renewal(first, Duration::from_secs(10));
        let out = tap.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"ab\n\nab\n\n");
        assert_eq!(renews.renewals(), [10, 20, 30, 40]);
        assert_eq!(renews.ends(), [End::Complete]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_is_renewed_until_it_is_cut_and_no_longer() {
        let renews = Renews::new();
        let first = renews.started + Duration::from_secs(10);
        let mut tap = Tap::new(timed_body(&[0], None), renews.clone())
            .with_idle_timeout(Duration::from_secs(30))
            .with_renewal(first, Duration::from_secs(10));
        let frames = data_frames(&mut tap).await;
        assert_eq!(renews.started.elapsed(), Duration::from_secs(30));
        assert!(frames.last().unwrap().starts_with(b"event: error"));
        // Due at 30 s too, but the cut wins: nothing is renewed for a body that is over.
        assert_eq!(renews.renewals(), [10, 20]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(tap);
        assert_eq!(renews.renewals(), [10, 20]);
        assert!(matches!(&renews.ends()[..], [End::Failed(_)]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_body_is_never_renewed_and_a_late_one_at_its_first_frame() {
        let renews = Renews::new();
        let first = renews.started + Duration::from_secs(10);
        let tap = Tap::new(timed_body(&[0, 2, 2], Some(())), renews.clone())
            .with_idle_timeout(Duration::from_secs(300))
            .with_renewal(first, Duration::from_secs(10));
        tap.collect().await.unwrap();
        assert_eq!(renews.renewals(), Vec::<u64>::new());

        // Its leases taken long before (a slow failover): renewed with its first frame, once
        // for frames that come back to back.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let tap = Tap::new(body_of(vec![Ok("ab"), Ok("cd"), Ok("ef")]), renews.clone())
            .with_idle_timeout(Duration::from_secs(300))
            .with_renewal(first, Duration::from_secs(10));
        assert_eq!(&tap.collect().await.unwrap().to_bytes()[..], b"abcdef");
        assert_eq!(renews.renewals(), [24]);
        // One that starts late and runs on: renewed at once, then every period.
        let tap = Tap::new(timed_body(&[0, 6, 6], Some(())), renews.clone())
            .with_idle_timeout(Duration::from_secs(300))
            .with_renewal(first, Duration::from_secs(10));
        tap.collect().await.unwrap();
        assert_eq!(renews.renewals(), [24, 24, 34]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_frame_that_ends_the_body_renews_nothing() {
        // A JSON answer whose head came after a renewal was due: its one frame ends it, and
        // its leases go back with that end rather than being renewed just before.
        let renews = Renews::new();
        let first = renews.started + Duration::from_secs(10);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let whole = http_body_util::Full::new(Bytes::from_static(b"{}"))
            .map_err(|never: std::convert::Infallible| -> BoxError { match never {} });
        let tap = Tap::new(whole, renews.clone())
            .with_idle_timeout(Duration::from_secs(300))
            .with_renewal(first, Duration::from_secs(10));
        assert_eq!(&tap.collect().await.unwrap().to_bytes()[..], b"{}");
        assert_eq!(renews.renewals(), Vec::<u64>::new());
        assert_eq!(renews.ends(), [End::Complete]);
    }

    #[tokio::test]
    async fn a_failed_stream_ends_with_the_error_event_when_the_observer_has_one() {
        let seen = Sse::default();
        let tap = Tap::new(body_of(vec![Ok("ab"), Err("reset")]), seen.clone());
        let out = tap.collect().await.unwrap().to_bytes();
        // Cut inside an event: that event is ended first, so the error is an event of its own.
        assert_eq!(&out[..], b"ab\n\nevent: error\ndata: reset\n\n");
        assert_eq!(
            seen.0.0.lock().unwrap().1,
            vec![End::Failed("reset".into())]
        );
        // Between events (either line end, the last one in a frame of one byte): nothing added.
        for sent in [
            vec![Ok("data: a\n\n"), Err("reset")],
            vec![Ok("data: a\r\r"), Err("reset")],
            vec![Ok("data: a\n"), Ok("\n"), Err("reset")],
            vec![Err("reset")],
        ] {
            let passed: String = sent.iter().filter_map(|c| c.ok()).collect();
            let tap = Tap::new(body_of(sent), Sse::default());
            let out = tap.collect().await.unwrap().to_bytes();
            assert_eq!(out, format!("{passed}event: error\ndata: reset\n\n"));
        }
        // Inside one: a data line without its blank line, and a line cut short.
        for sent in ["data: a\n", "data: {\"te"] {
            let tap = Tap::new(body_of(vec![Ok(sent), Err("reset")]), Sse::default());
            let out = tap.collect().await.unwrap().to_bytes();
            assert_eq!(out, format!("{sent}\n\nevent: error\ndata: reset\n\n"));
        }
    }

    #[tokio::test]
    async fn passes_every_byte_and_reports_completion_once() {
        let seen = Seen::default();
        let tap = Tap::new(body_of(vec![Ok("ab"), Ok("cd")]), seen.clone());
        let out = tap.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"abcd");
        let s = seen.0.lock().unwrap();
        assert_eq!(s.0, b"abcd");
        assert_eq!(s.1, vec![End::Complete]);
    }

    #[tokio::test]
    async fn reports_failure_and_drop() {
        let seen = Seen::default();
        let tap = Tap::new(body_of(vec![Ok("ab"), Err("reset")]), seen.clone());
        assert!(tap.collect().await.is_err());
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Failed("reset".into())]);

        let seen = Seen::default();
        let (tx, body) = channel_body();
        let mut tap = Tap::new(body, seen.clone());
        tx.send("ab").await.unwrap();
        let first = tap.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        tx.send("cd").await.unwrap();
        drop(tap);
        let s = seen.0.lock().unwrap();
        assert_eq!(s.0, b"ab");
        assert_eq!(s.1, vec![End::Dropped]);
    }

    #[tokio::test]
    async fn a_deferred_end_is_reported_once_when_the_tap_is_dropped() {
        for (chunks, data, end) in [
            (vec![Ok("ab"), Ok("cd")], &b"abcd"[..], End::Complete),
            (
                vec![Ok("ab"), Err("reset")],
                &b"ab"[..],
                End::Failed("reset".into()),
            ),
        ] {
            let seen = Seen::default();
            let mut tap = Tap::new(body_of(chunks), seen.clone());
            tap.defer_end();
            while let Some(frame) = tap.frame().await {
                if frame.is_err() {
                    break;
                }
            }
            assert!(tap.observer_mut().is_some());
            assert_eq!(seen.0.lock().unwrap().1, vec![], "reported before the drop");
            drop(tap);
            let s = seen.0.lock().unwrap();
            assert_eq!((&s.0[..], &s.1), (data, &vec![end]));
        }
    }

    #[tokio::test]
    async fn frames_ready_together_go_out_merged_and_the_observer_sees_each() {
        let seen = Seen::default();
        let mut tap = Tap::new(
            body_of(vec![Ok("a"), Ok("b"), Ok("c"), Ok("d")]),
            seen.clone(),
        );
        let frames = data_frames(&mut tap).await;
        assert_eq!(frames, vec![Bytes::from_static(b"abcd")]);
        let (data, ends) = seen.0.lock().unwrap().clone();
        assert_eq!((data.as_slice(), ends), (&b"abcd"[..], vec![End::Complete]));
    }

    #[tokio::test]
    async fn a_frame_after_a_quiet_moment_is_not_held_for_the_next() {
        let (tx, body) = channel_body();
        let seen = Seen::default();
        let mut tap = Tap::new(body, seen.clone());
        tx.send("first").await.unwrap();
        // Nothing else comes until the client got the first frame: it must not wait for more.
        let first = tokio::time::timeout(Duration::from_secs(5), tap.frame())
            .await
            .expect("the first frame was held back");
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "first");
        tx.send("second").await.unwrap();
        drop(tx);
        let second = tap.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "second");
        assert!(tap.frame().await.is_none());
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Complete]);
    }

    #[tokio::test]
    async fn held_data_goes_out_before_a_failure() {
        let seen = Sse::default();
        let mut tap = Tap::new(body_of(vec![Ok("x"), Ok("y"), Err("reset")]), seen.clone());
        let out = data_frames(&mut tap).await;
        assert_eq!(out[0], "xy");
        assert!(out[1].starts_with(b"\n\nevent: error"));
        assert_eq!(out.len(), 2);
        assert!(matches!(
            seen.0.0.lock().unwrap().1.as_slice(),
            [End::Failed(_)]
        ));
    }

    async fn prime<B, O>(tap: &mut Tap<B, O>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display + From<std::io::Error> + Unpin,
        O: Observer + Unpin,
    {
        let mut quiet = 0;
        std::future::poll_fn(|cx| tap.poll_prime(cx, &mut quiet)).await;
    }

    #[tokio::test]
    async fn an_empty_answer_is_reported_complete_not_dropped() {
        let seen = Seen::default();
        let body =
            http_body_util::Empty::<Bytes>::new().map_err(|never| -> BoxError { match never {} });
        let mut tap = Tap::new(body, seen.clone());
        // Not at its end until polled once: a server then hears the end as it came.
        assert!(!tap.is_end_stream());
        assert!(tap.frame().await.is_none());
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Complete]);
        assert!(tap.is_end_stream());
        drop(tap);
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Complete]);
    }

    #[tokio::test]
    async fn priming_reads_what_is_ready_and_hands_it_on_first() {
        let seen = Seen::default();
        let mut tap = Tap::new(body_of(vec![Ok("ab"), Ok("cd")]), seen.clone());
        prime(&mut tap).await;
        // Read, observed and reported before the server asks for the first frame.
        assert_eq!(
            seen.0.lock().unwrap().clone(),
            (b"abcd".to_vec(), vec![End::Complete])
        );
        assert!(!tap.is_end_stream());
        let frames = data_frames(&mut tap).await;
        assert_eq!(frames, vec![Bytes::from_static(b"abcd")]);
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Complete]);
    }

    #[tokio::test]
    async fn priming_gives_up_on_an_upstream_that_sent_nothing_yet() {
        let seen = Seen::default();
        let (tx, body) = channel_body();
        let mut tap = Tap::new(body, seen.clone());
        tokio::time::timeout(Duration::from_secs(5), prime(&mut tap))
            .await
            .expect("priming waited for the upstream");
        assert!(seen.0.lock().unwrap().0.is_empty());
        tx.send("late").await.unwrap();
        drop(tx);
        let first = tap.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "late");
        assert!(tap.frame().await.is_none());
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Complete]);
    }

    #[tokio::test]
    async fn a_primed_failure_still_reaches_the_client() {
        let seen = Sse::default();
        let mut tap = Tap::new(body_of(vec![Ok("x"), Err("reset")]), seen.clone());
        prime(&mut tap).await;
        let out = tap.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"x\n\nevent: error\ndata: reset\n\n");
        assert_eq!(
            seen.0.0.lock().unwrap().1,
            vec![End::Failed("reset".into())]
        );

        let seen = Seen::default();
        let mut tap = Tap::new(body_of(vec![Err("reset")]), seen.clone());
        prime(&mut tap).await;
        assert!(tap.collect().await.is_err());
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Failed("reset".into())]);
    }

    #[tokio::test]
    async fn a_tap_dropped_after_priming_reports_the_drop() {
        let seen = Seen::default();
        let (tx, body) = channel_body();
        let mut tap = Tap::new(body, seen.clone());
        tx.send("ab").await.unwrap();
        prime(&mut tap).await;
        drop(tap);
        assert_eq!(
            seen.0.lock().unwrap().clone(),
            (b"ab".to_vec(), vec![End::Dropped])
        );
    }

    #[tokio::test]
    async fn bytes_read_before_the_tap_are_observed_and_handed_on_first() {
        let seen = Seen::default();
        let (tx, body) = channel_body();
        let mut tap = Tap::new(body, seen.clone());
        tap.prepend(Bytes::from_static(b"event: a\n\n"));
        assert_eq!(seen.0.lock().unwrap().0, b"event: a\n\n");
        assert!(!tap.is_end_stream());
        tx.send("rest").await.unwrap();
        drop(tx);
        let frames = data_frames(&mut tap).await;
        assert_eq!(frames, ["event: a\n\nrest"], "merged with what was ready");
        assert_eq!(
            seen.0.lock().unwrap().clone(),
            (b"event: a\n\nrest".to_vec(), vec![End::Complete])
        );

        // A body that ended in what was read: reported complete once.
        let seen = Seen::default();
        let ended = http_body_util::Empty::<Bytes>::new()
            .map_err(|never: std::convert::Infallible| -> BoxError { match never {} });
        let mut tap = Tap::new(ended, seen.clone());
        tap.prepend(Bytes::from_static(b"all"));
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Complete]);
        assert_eq!(
            data_frames(&mut tap).await,
            vec![Bytes::from_static(b"all")]
        );
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Complete]);
    }
}
