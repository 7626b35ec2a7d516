//! A fast mock upstream for benchmarks: the Anthropic Messages and OpenAI chat completions wire
//! formats, with configurable delays, chunk counts and token counts, and counters of what it
//! served.
//!
//! ```text
//! POST /v1/messages           SSE stream when the body has "stream": true, else a JSON message
//! POST /v1/chat/completions   SSE chunks (a final usage chunk, then data: [DONE]), else JSON
//! GET  /stats                 {"requests": …, "streams_completed": …, "streams_cancelled": …, …}
//! ```
//!
//! The byte format follows `tests/fixtures/clients/responses/anthropic_stream.txt` and
//! `openai_chat_stream.txt`; the request's `model` is echoed. Every response is rendered once per
//! distinct model and kept: serving a request reads the body's top-level `model` and `stream`
//! members (a scan, no JSON values built) and hands out reference-counted byte chunks.
//!
//! Per-request overrides, for a load script that needs one mock to behave several ways (they pass
//! through a relay like any end-to-end header): `x-mock-chunks`, `x-mock-chunk-delay-ms`,
//! `x-mock-first-byte-delay-ms`.
//!
//! Loopback only: it refuses to listen anywhere else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Sleep;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "mock-upstream",
    about = "A fast mock Anthropic / OpenAI upstream for benchmarks (loopback only)"
)]
struct Args {
    /// Address to listen on; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Wait this long before sending the response head.
    #[arg(long, default_value_t = 0)]
    first_byte_delay_ms: u64,
    /// Number of content deltas in a streamed answer.
    #[arg(long, default_value_t = 10)]
    chunks: u32,
    /// Wait this long before each content delta of a stream.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Input (prompt) tokens reported in the usage.
    #[arg(long, default_value_t = 1000)]
    input_tokens: u64,
    /// Output (completion) tokens reported in the usage.
    #[arg(long, default_value_t = 100)]
    output_tokens: u64,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: only loopback addresses are allowed",
            args.listen
        );
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mock = Arc::new(Mock::new(&args));
    eprintln!("mock-upstream listening on {}", listener.local_addr()?);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mock = Arc::clone(&mock);
        let service = service_fn(move |req| {
            let mock = Arc::clone(&mock);
            async move { Ok::<_, Infallible>(mock.handle(req).await) }
        });
        // Stopped by: the connection closing (or the process exiting).
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    eprintln!("mock-upstream stopping: {}", mock.counters.json());
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// What was served so far.
#[derive(Default)]
struct Counters {
    /// Every request to an API path (not `/stats`).
    requests: AtomicU64,
    json_responses: AtomicU64,
    streams_started: AtomicU64,
    /// Streams whose every chunk was handed to the connection.
    streams_completed: AtomicU64,
    /// Streams dropped before their end (the client went away).
    streams_cancelled: AtomicU64,
    /// 400 and 404 answers.
    errors: AtomicU64,
}

impl Counters {
    fn json(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let started = get(&self.streams_started);
        let completed = get(&self.streams_completed);
        let cancelled = get(&self.streams_cancelled);
        format!(
            "{{\"requests\": {}, \"json_responses\": {}, \"streams_started\": {started}, \
             \"streams_completed\": {completed}, \"streams_cancelled\": {cancelled}, \
             \"open_streams\": {}, \"errors\": {}}}",
            get(&self.requests),
            get(&self.json_responses),
            started.saturating_sub(completed + cancelled),
            get(&self.errors),
        )
    }
}

/// Which wire format a request speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Anthropic,
    OpenAi,
}

struct Mock {
    args: Args,
    counters: Arc<Counters>,
    /// Responses already rendered, by the model's raw (JSON-escaped) bytes.
    rendered: RwLock<HashMap<Box<[u8]>, Arc<Rendered>>>,
    /// Seconds since the epoch at start: the OpenAI `created` of every answer.
    created: u64,
}

/// Beyond this many distinct models, answers are rendered per request and not kept.
const MAX_CACHED_MODELS: usize = 64;

impl Mock {
    fn new(args: &Args) -> Mock {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Mock {
            args: args.clone(),
            counters: Arc::default(),
            rendered: RwLock::new(HashMap::new()),
            created,
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<MockBody> {
        let api = match (req.method(), req.uri().path()) {
            (&Method::POST, "/v1/messages") => Api::Anthropic,
            (&Method::POST, "/v1/chat/completions") => Api::OpenAi,
            (&Method::GET, "/stats") => {
                return respond(
                    StatusCode::OK,
                    "application/json",
                    Bytes::from(self.counters.json()),
                );
            }
            _ => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                return error(Api::Anthropic, StatusCode::NOT_FOUND, "no such path");
            }
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let chunks = header("x-mock-chunks")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(self.args.chunks);
        let chunk_delay = header("x-mock-chunk-delay-ms").unwrap_or(self.args.chunk_delay_ms);
        let first_byte_delay =
            header("x-mock-first-byte-delay-ms").unwrap_or(self.args.first_byte_delay_ms);
        let body = match req.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                return error(api, StatusCode::BAD_REQUEST, "could not read the body");
            }
        };
        let Some(peek) = peek(&body) else {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return error(
                api,
                StatusCode::BAD_REQUEST,
                "the body is not a JSON object",
            );
        };
        let Some(model) = peek.model.filter(|m| valid_model(m)) else {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return error(api, StatusCode::BAD_REQUEST, "model: field required");
        };
        let rendered = self.rendered(model);
        if first_byte_delay > 0 {
            tokio::time::sleep(Duration::from_millis(first_byte_delay)).await;
        }
        if !peek.stream {
            self.counters.json_responses.fetch_add(1, Ordering::Relaxed);
            let json = match api {
                Api::Anthropic => rendered.anthropic_json.clone(),
                Api::OpenAi => rendered.openai_json.clone(),
            };
            return respond(StatusCode::OK, "application/json", json);
        }
        self.counters
            .streams_started
            .fetch_add(1, Ordering::Relaxed);
        let content_type = match api {
            Api::Anthropic => "text/event-stream; charset=utf-8",
            Api::OpenAi => "text/event-stream",
        };
        let sse = Sse {
            rendered,
            api,
            step: 0,
            chunks: chunks as usize,
            chunk_delay: Duration::from_millis(chunk_delay),
            sleep: None,
            counters: Arc::clone(&self.counters),
            finished: false,
        };
        let mut resp = Response::new(MockBody::Sse(sse));
        let headers = resp.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    }

    /// The answers for `model`, rendered on first use.
    fn rendered(&self, model: &[u8]) -> Arc<Rendered> {
        if let Ok(cache) = self.rendered.read()
            && let Some(hit) = cache.get(model)
        {
            return Arc::clone(hit);
        }
        let rendered = Arc::new(Rendered::new(&self.args, model, self.created));
        if let Ok(mut cache) = self.rendered.write()
            && cache.len() < MAX_CACHED_MODELS
        {
            cache.insert(model.into(), Arc::clone(&rendered));
        }
        rendered
    }
}

/// Every byte of the answers for one model.
struct Rendered {
    anthropic: Script,
    anthropic_json: Bytes,
    openai: Script,
    openai_json: Bytes,
}

/// A stream as events: `head`, then the one `delta` as many times as asked, then `tail`.
struct Script {
    head: Vec<Bytes>,
    delta: Bytes,
    tail: Vec<Bytes>,
}

/// The text of one content delta; the JSON answer's text is this, `--chunks` times.
const DELTA_TEXT: &str = "The quick brown fox jumps over the lazy dog. ";
const MESSAGE_ID: &str = "msg_mock0001";
const COMPLETION_ID: &str = "chatcmpl-mock0001";

impl Rendered {
    fn new(args: &Args, model: &[u8], created: u64) -> Rendered {
        let (input, output) = (args.input_tokens, args.output_tokens);
        let total = input.saturating_add(output);
        let model = String::from_utf8_lossy(model);
        let text = DELTA_TEXT.repeat(args.chunks as usize);
        let anthropic = Script {
            head: vec![
                Bytes::from(format!(
                    "event: message_start\ndata: {{\"type\": \"message_start\", \"message\": \
                     {{\"id\": \"{MESSAGE_ID}\", \"type\": \"message\", \"role\": \"assistant\", \
                     \"model\": \"{model}\", \"content\": [], \"stop_reason\": null, \
                     \"stop_sequence\": null, \"usage\": {{\"input_tokens\": {input}, \
                     \"output_tokens\": 1, \"cache_creation_input_tokens\": 0, \
                     \"cache_read_input_tokens\": 0}}}}}}\n\n"
                )),
                Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"),
                Bytes::from_static(
                    b"event: content_block_start\ndata: {\"type\": \"content_block_start\", \
                      \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n",
                ),
            ],
            delta: Bytes::from(format!(
                "event: content_block_delta\ndata: {{\"type\": \"content_block_delta\", \
                 \"index\": 0, \"delta\": {{\"type\": \"text_delta\", \"text\": \"{DELTA_TEXT}\"}}}}\n\n"
            )),
            tail: vec![
                Bytes::from_static(
                    b"event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \
                      \"index\": 0}\n\n",
                ),
                Bytes::from(format!(
                    "event: message_delta\ndata: {{\"type\": \"message_delta\", \"delta\": \
                     {{\"stop_reason\": \"end_turn\", \"stop_sequence\": null}}, \"usage\": \
                     {{\"output_tokens\": {output}}}}}\n\n"
                )),
                Bytes::from_static(b"event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n"),
            ],
        };
        let anthropic_json = Bytes::from(format!(
            "{{\"id\": \"{MESSAGE_ID}\", \"type\": \"message\", \"role\": \"assistant\", \
             \"model\": \"{model}\", \"content\": [{{\"type\": \"text\", \"text\": \"{text}\"}}], \
             \"stop_reason\": \"end_turn\", \"stop_sequence\": null, \"usage\": \
             {{\"input_tokens\": {input}, \"output_tokens\": {output}, \
             \"cache_creation_input_tokens\": 0, \"cache_read_input_tokens\": 0}}}}"
        ));
        let chunk = |rest: &str| {
            Bytes::from(format!(
                "data: {{\"id\": \"{COMPLETION_ID}\", \"object\": \"chat.completion.chunk\", \
                 \"created\": {created}, \"model\": \"{model}\", \"system_fingerprint\": null, \
                 {rest}}}\n\n"
            ))
        };
        let openai = Script {
            head: vec![chunk(
                "\"choices\": [{\"index\": 0, \"delta\": {\"role\": \"assistant\", \
                 \"content\": \"\"}, \"finish_reason\": null}]",
            )],
            delta: chunk(&format!(
                "\"choices\": [{{\"index\": 0, \"delta\": {{\"content\": \"{DELTA_TEXT}\"}}, \
                 \"finish_reason\": null}}]"
            )),
            tail: vec![
                chunk("\"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"stop\"}]"),
                chunk(&format!(
                    "\"choices\": [], \"usage\": {{\"prompt_tokens\": {input}, \
                     \"completion_tokens\": {output}, \"total_tokens\": {total}}}"
                )),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ],
        };
        let openai_json = Bytes::from(format!(
            "{{\"id\": \"{COMPLETION_ID}\", \"object\": \"chat.completion\", \"created\": {created}, \
             \"model\": \"{model}\", \"system_fingerprint\": null, \"choices\": [{{\"index\": 0, \
             \"message\": {{\"role\": \"assistant\", \"content\": \"{text}\", \"refusal\": null}}, \
             \"logprobs\": null, \"finish_reason\": \"stop\"}}], \"usage\": {{\"prompt_tokens\": \
             {input}, \"completion_tokens\": {output}, \"total_tokens\": {total}}}}}"
        ));
        Rendered {
            anthropic,
            anthropic_json,
            openai,
            openai_json,
        }
    }

    fn script(&self, api: Api) -> &Script {
        match api {
            Api::Anthropic => &self.anthropic,
            Api::OpenAi => &self.openai,
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::Full(Some(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// An error in the API's own shape. The message is one of ours (never the client's input).
fn error(api: Api, status: StatusCode, message: &'static str) -> Response<MockBody> {
    let body = match api {
        Api::Anthropic => format!(
            "{{\"type\": \"error\", \"error\": {{\"type\": \"{}\", \"message\": \"{message}\"}}}}",
            if status == StatusCode::NOT_FOUND {
                "not_found_error"
            } else {
                "invalid_request_error"
            }
        ),
        Api::OpenAi => format!(
            "{{\"error\": {{\"message\": \"{message}\", \"type\": \"invalid_request_error\", \
             \"param\": null, \"code\": null}}}}"
        ),
    };
    respond(status, "application/json", Bytes::from(body))
}

/// A response body: one whole buffer, or a stream of events.
enum MockBody {
    Full(Option<Bytes>),
    Sse(Sse),
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            MockBody::Sse(sse) => sse.poll_next(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(data) => data.is_none(),
            MockBody::Sse(sse) => sse.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            MockBody::Sse(_) => SizeHint::default(),
        }
    }
}

/// A streamed answer: every event is its own frame; content deltas wait `chunk_delay` first.
struct Sse {
    rendered: Arc<Rendered>,
    api: Api,
    /// The next event: head events, then `chunks` deltas, then tail events.
    step: usize,
    chunks: usize,
    chunk_delay: Duration,
    /// Armed while waiting before a delta.
    sleep: Option<Pin<Box<Sleep>>>,
    counters: Arc<Counters>,
    finished: bool,
}

impl Sse {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let script = self.rendered.script(self.api);
        let (head, tail) = (script.head.len(), script.tail.len());
        let step = self.step;
        let chunk = if step < head {
            script.head[step].clone()
        } else if step < head + self.chunks {
            if !self.chunk_delay.is_zero() {
                let delay = self.chunk_delay;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            script.delta.clone()
        } else if step < head + self.chunks + tail {
            script.tail[step - head - self.chunks].clone()
        } else {
            return Poll::Ready(None);
        };
        self.step += 1;
        if self.step == head + self.chunks + tail && !self.finished {
            self.finished = true;
            self.counters
                .streams_completed
                .fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Some(chunk))
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        if !self.finished {
            self.counters
                .streams_cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the mock reads of a request body.
struct Peek<'a> {
    /// The model's string as it stands in the body, still JSON-escaped (echoed as is).
    model: Option<&'a [u8]>,
    stream: bool,
}

/// Finds the top-level `model` and `stream` members of a JSON object without building values:
/// nested values and strings are skipped over. `None` when the body is not a JSON object.
fn peek(body: &[u8]) -> Option<Peek<'_>> {
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut out = Peek {
        model: None,
        stream: false,
    };
    loop {
        i = skip_ws(body, i);
        match body.get(i)? {
            b'}' => return Some(out),
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let (key, after_key) = string(body, i)?;
        i = skip_ws(body, after_key);
        if body.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(body, i + 1);
        i = skip_value(body, start)?;
        match key {
            b"model" => {
                if let Some((value, _)) = string(body, start) {
                    out.model = Some(value);
                }
            }
            b"stream" => out.stream = body.get(start..i) == Some(b"true"),
            _ => {}
        }
    }
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while matches!(body.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// The string starting at `body[i] == '"'`: its raw content and the index after its closing quote.
fn string(body: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if body.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        j += quote_or_backslash(body.get(j..)?)?;
        if body[j] == b'"' {
            return Some((&body[i + 1..j], j + 1));
        }
        // A backslash escapes the next byte (`\uXXXX` needs no more: hex digits are not quotes).
        j += 2;
    }
}

/// The index of the first `"` or `\` in `s`, eight bytes at a time.
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut words = s.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_ne_bytes(bytes);
        if has_zero(x ^ QUOTES) | has_zero(x ^ BACKSLASHES) != 0 {
            break;
        }
        offset += 8;
    }
    s[offset..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|p| offset + p)
}

/// The index just after the JSON value starting at `body[i]`.
fn skip_value(body: &[u8], i: usize) -> Option<usize> {
    match body.get(i)? {
        b'"' => string(body, i).map(|(_, next)| next),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match body.get(j)? {
                    b'"' => {
                        j = string(body, j)?.1;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(b) = body.get(j) {
                if matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// A model string safe to echo between quotes: non-empty, no control characters.
fn valid_model(model: &[u8]) -> bool {
    !model.is_empty() && model.len() <= 256 && model.iter().all(|&b| b >= 0x20)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_top_level_model_and_stream_only() {
        let body =
            br#"{"messages": [{"role": "user", "content": "say \"model\": \\ {[", "model": "x"}],
            "model": "claude-\u00e9", "nested": {"stream": true, "a": [1, {"b": "}"}]},
            "stream" : true, "max_tokens": 64}"#;
        let p = peek(body).unwrap();
        assert_eq!(p.model.unwrap(), br"claude-\u00e9");
        assert!(p.stream);

        let p = peek(br#"{"model":"m","stream":false}"#).unwrap();
        assert_eq!(p.model.unwrap(), b"m");
        assert!(!p.stream);
        assert!(peek(br#"{"max_tokens": 5}"#).unwrap().model.is_none());
        assert!(peek(b"[1]").is_none());
        assert!(peek(br#"{"model": "unterminated"#).is_none());
    }

    #[test]
    fn quote_search_finds_the_first_in_any_position() {
        for n in 0..40 {
            let mut s = vec![b'a'; 40];
            s[n] = b'\\';
            assert_eq!(quote_or_backslash(&s), Some(n));
            s[n] = b'"';
            assert_eq!(quote_or_backslash(&s), Some(n));
        }
        assert_eq!(quote_or_backslash(&[b'a'; 17]), None);
    }

    #[test]
    fn rendered_stream_matches_the_fixture_shape() {
        let args = Args::parse_from(["mock-upstream", "--chunks", "2", "--input-tokens", "10"]);
        let r = Rendered::new(&args, b"claude-opus-4-8", 1);
        let mut all = Vec::new();
        for b in r
            .anthropic
            .head
            .iter()
            .chain([&r.anthropic.delta, &r.anthropic.delta])
        {
            all.extend_from_slice(b);
        }
        for b in &r.anthropic.tail {
            all.extend_from_slice(b);
        }
        let text = String::from_utf8(all).unwrap();
        assert!(text.starts_with("event: message_start\ndata: {\"type\": \"message_start\""));
        assert!(text.contains("\"model\": \"claude-opus-4-8\""));
        assert!(text.contains(
            "\"usage\": {\"input_tokens\": 10, \"output_tokens\": 1, \
             \"cache_creation_input_tokens\": 0, \"cache_read_input_tokens\": 0}}}\n\n"
        ));
        assert!(text.ends_with("event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n"));
        for event in text.split("\n\n").filter(|e| !e.is_empty()) {
            let data = event
                .lines()
                .nth(1)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap();
            serde_json::from_str::<serde_json::Value>(data).unwrap();
        }
        serde_json::from_slice::<serde_json::Value>(&r.anthropic_json).unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.openai_json).unwrap();
        let last = r.openai.tail.last().unwrap();
        assert_eq!(&last[..], b"data: [DONE]\n\n");
    }
}
