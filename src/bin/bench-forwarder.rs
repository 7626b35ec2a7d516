//! The floor for the benchmark: a reverse proxy built from Switchyard's own stack (tokio,
//! hyper's server, hyper-util's pooled client) that does nothing but forward. No keys, no
//! limits, no scheduling, no usage: what a request costs on this stack before Switchyard does
//! any of its work.
//!
//! It serves the way Switchyard does: one single-threaded runtime per worker, each with its own
//! upstream client (so a request never leaves its thread), and it reads the request body whole
//! before sending it on, as a relay that looks into the body must. Workers share the port with
//! `SO_REUSEPORT` (Switchyard hands connections out from one acceptor instead; see
//! docs/benchmarks.md for why that matters little here).
//!
//! ```text
//! bench-forwarder --listen 127.0.0.1:9200 --upstream http://127.0.0.1:9100
//! ```
//!
//! Loopback only: it refuses to listen anywhere else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard::providers::{response_headers, strip_hop_by_hop};
use tokio::net::TcpSocket;

#[derive(Parser, Debug)]
#[command(
    name = "bench-forwarder",
    about = "A bare reverse proxy on Switchyard's stack, the benchmark's floor (loopback only)"
)]
struct Args {
    /// Address to listen on; must be a loopback address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// Base URL of the upstream, e.g. http://127.0.0.1:9100.
    #[arg(long)]
    upstream: String,
    /// Single-threaded runtimes, one thread each (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
}

type Answer = Response<Either<Incoming, Full<Bytes>>>;
type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

fn bad_gateway(why: impl std::fmt::Display) -> Answer {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!("{why}\n")))));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn forward(client: &Client, upstream: &str, req: Request<Incoming>) -> Answer {
    let (mut head, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_gateway(e),
    };
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    head.uri = match format!("{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => return bad_gateway(e),
    };
    // Switchyard's own hop-by-hop rules, both ways; the upstream's host comes from the URL.
    strip_hop_by_hop(&mut head.headers);
    head.headers.remove(header::HOST);
    match client
        .request(Request::from_parts(head, Full::new(body)))
        .await
    {
        Ok(answer) => {
            let (mut head, body) = answer.into_parts();
            head.headers = response_headers(head.headers);
            Response::from_parts(head, Either::Left(body))
        }
        Err(e) => bad_gateway(e),
    }
}

fn worker(listen: SocketAddr, upstream: Arc<str>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(1024)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (client, upstream) = (client.clone(), Arc::clone(&upstream));
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (client, upstream) = (client.clone(), Arc::clone(&upstream));
                    async move { Ok::<_, Infallible>(forward(&client, &upstream, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!("refusing to listen on {}: loopback only", args.listen);
    }
    // Port 0: the first bind picks the port and the other workers join it.
    let probe = std::net::TcpListener::bind(args.listen).context("binding the listen address")?;
    let listen = probe.local_addr()?;
    drop(probe);
    let upstream: Arc<str> = Arc::from(args.upstream.trim_end_matches('/'));
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let threads = (0..workers)
        .map(|i| {
            let upstream = Arc::clone(&upstream);
            std::thread::Builder::new()
                .name(format!("forwarder-{i}"))
                .spawn(move || worker(listen, upstream))
        })
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!("bench-forwarder listening on http://{listen}");
    for thread in threads {
        match thread.join() {
            Ok(result) => result?,
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    Ok(())
}
