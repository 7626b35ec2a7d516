//! Mock Anthropic Messages upstream that speaks the real wire format.
//!
//! [`MockUpstream::start`] listens on `127.0.0.1:0` (HTTP/1.1 and h2c) and answers:
//!
//! - `POST /v1/messages`: by the next queued [`Behavior`] (else the default one): an SSE stream
//!   when the body has `"stream": true`, else a JSON message. The `model` echoes the request's.
//! - `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N = the behaviour's `usage.input`
//!   (it also takes the next queued behaviour: `Error` answers the error, `DelayHeaders` waits).
//! - `GET /v1/models`: a small models list. Anything else: 404 with an Anthropic error body.
//!
//! The stream follows the event sequence and byte format of
//! `shared/fixtures/clients/responses/anthropic_stream.txt`; every event is its own body frame.
//! Bodies are deterministic functions of (model, usage): see [`expected_stream_bytes`] and
//! [`expected_json_bytes`]. Every request and every response body (as handed to hyper, partial
//! ones included) is recorded, in arrival order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;

/// Fixed message id used in every answer (bodies are deterministic).
pub const MESSAGE_ID: &str = "msg_mock_0001";
/// The text deltas of a streamed answer; the JSON answer's text is their concatenation.
pub const TEXT_DELTAS: [&str; 3] = ["Hi! ", "This is ", "the mock upstream."];
/// Model ids listed by `GET /v1/models`.
pub const MODELS: [(&str, &str); 3] = [
    ("claude-opus-4-8", "Claude Opus 4.8"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
];
/// How many leading events `StallAfterStart` / `ResetAfterStart` send: message_start, ping,
/// content_block_start and two content_block_delta.
pub const EVENTS_BEFORE_STALL: usize = 5;

/// Token counts reported by an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockUsage {
    pub input: u64,
    pub output: u64,
    pub cache_creation_5m: u64,
    pub cache_creation_1h: u64,
    pub cache_read: u64,
}

impl MockUsage {
    /// Input and output only, no cache tokens.
    pub fn new(input: u64, output: u64) -> MockUsage {
        MockUsage {
            input,
            output,
            ..MockUsage::default()
        }
    }

    /// `cache_creation_input_tokens` as Anthropic reports it: 5m + 1h writes.
    pub fn cache_creation(&self) -> u64 {
        self.cache_creation_5m + self.cache_creation_1h
    }
}

/// How the mock answers one `POST /v1/messages` (or count_tokens) request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// A normal answer: SSE stream if the request body has "stream": true, else JSON.
    Ok(MockUsage),
    /// An error status with a body and extra headers (e.g. 429 with retry-after /
    /// anthropic-ratelimit-* headers). `content-type: application/json` unless given.
    Error {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Stream normally but wait `delay` between events (JSON: wait `delay`, then the body).
    Slow { usage: MockUsage, delay: Duration },
    /// Send message_start, ping, content_block_start and two content deltas, then hang forever
    /// (JSON: the headers and the first half of the body, then hang).
    StallAfterStart(MockUsage),
    /// Sleep this long before sending response headers, then answer as `Ok`.
    DelayHeaders(Duration, MockUsage),
    /// Like `StallAfterStart`, but 50 ms after the leading events abort the body with an error
    /// (hyper closes the HTTP/1 connection without the final chunk, or resets the h2 stream). Counted neither as served
    /// nor as cancelled.
    ResetAfterStart(MockUsage),
}

impl Behavior {
    /// An Anthropic error answer: `{"type": "error", "error": {"type": kind, "message": ..}}`.
    pub fn error(status: u16, kind: &str, message: &str) -> Behavior {
        Behavior::Error {
            status,
            body: anthropic_error(kind, message),
            headers: Vec::new(),
        }
    }

    /// 429 `rate_limit_error` with `retry-after` and `anthropic-ratelimit-requests-*` headers
    /// (reset = now + `retry_after_secs`, RFC 3339).
    pub fn rate_limited(retry_after_secs: u64) -> Behavior {
        let now = jiff::Timestamp::now().as_second();
        let secs = i64::try_from(retry_after_secs).unwrap_or(i64::MAX / 2);
        let reset = jiff::Timestamp::from_second(now.saturating_add(secs))
            .expect("reset timestamp in range");
        Behavior::Error {
            status: 429,
            body: anthropic_error(
                "rate_limit_error",
                "This request would exceed your organization's rate limit of 50 requests per minute.",
            ),
            headers: vec![
                ("retry-after".into(), retry_after_secs.to_string()),
                ("anthropic-ratelimit-requests-limit".into(), "50".into()),
                ("anthropic-ratelimit-requests-remaining".into(), "0".into()),
                (
                    "anthropic-ratelimit-requests-reset".into(),
                    reset.to_string(),
                ),
            ],
        }
    }

    /// 529 `overloaded_error`.
    pub fn overloaded() -> Behavior {
        Behavior::error(529, "overloaded_error", "Overloaded")
    }

    fn usage(&self) -> Option<MockUsage> {
        match self {
            Behavior::Ok(u)
            | Behavior::Slow { usage: u, .. }
            | Behavior::StallAfterStart(u)
            | Behavior::DelayHeaders(_, u)
            | Behavior::ResetAfterStart(u) => Some(*u),
            Behavior::Error { .. } => None,
        }
    }
}

/// One request as received (headers exactly as they came, body raw).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The body parsed as JSON (panics if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("recorded body is JSON")
    }

    /// A header as a string, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A running mock upstream; serves until dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

struct State {
    requests: Vec<Recorded>,
    responses: Vec<Vec<u8>>,
    served: usize,
    cancelled: usize,
    in_flight: usize,
    max_in_flight: usize,
    queue: VecDeque<Behavior>,
    default: Behavior,
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MockUpstream {
    /// Starts on 127.0.0.1:0 (loopback only). Default behaviour: `Ok(MockUsage::new(10, 7))`.
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock upstream address");
        let shared = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            responses: Vec::new(),
            served: 0,
            cancelled: 0,
            in_flight: 0,
            max_in_flight: 0,
            queue: VecDeque::new(),
            default: Behavior::Ok(MockUsage::new(10, 7)),
        }));
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        MockUpstream { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared).requests.clone()
    }

    /// The body bytes handed to hyper for each request (same order as `requests`), including
    /// partial ones for cancelled, stalled or reset answers.
    pub fn responses(&self) -> Vec<Bytes> {
        lock(&self.shared)
            .responses
            .iter()
            .map(|r| Bytes::copy_from_slice(r))
            .collect()
    }

    /// Requests answered to completion (the last body frame was handed to hyper).
    pub fn served(&self) -> usize {
        lock(&self.shared).served
    }

    /// Requests whose client went away before the end of the answer (body dropped before its
    /// last frame, or request dropped before the headers were sent).
    pub fn cancelled(&self) -> usize {
        lock(&self.shared).cancelled
    }

    /// Highest number of concurrent requests seen.
    pub fn max_in_flight(&self) -> usize {
        lock(&self.shared).max_in_flight
    }

    /// Requests from arrival until their body completed or was dropped.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared).in_flight
    }

    /// Queue a behaviour: the next messages / count_tokens request uses it.
    pub fn push_behavior(&self, b: Behavior) {
        lock(&self.shared).queue.push_back(b);
    }

    /// The behaviour used when the queue is empty.
    pub fn set_default(&self, b: Behavior) {
        lock(&self.shared).default = b;
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Mutex<State>>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Messages,
    CountTokens,
    Models,
    NotFound,
}

async fn handle(shared: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<MockBody> {
    let mut guard = Guard::new(shared.clone());
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let route = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/messages") => Route::Messages,
        (&Method::POST, "/v1/messages/count_tokens") => Route::CountTokens,
        (&Method::GET, "/v1/models") => Route::Models,
        _ => Route::NotFound,
    };
    let (index, behavior) = {
        let mut st = lock(&shared);
        let index = st.requests.len();
        st.requests.push(Recorded {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        st.responses.push(Vec::new());
        let behavior = match route {
            Route::Messages | Route::CountTokens => {
                Some(st.queue.pop_front().unwrap_or_else(|| st.default.clone()))
            }
            Route::Models | Route::NotFound => None,
        };
        (index, behavior)
    };
    guard.index = Some(index);
    let request_id = format!("req_mock_{:04}", index + 1);

    let mut response = match (route, behavior) {
        (Route::Messages, Some(b)) => messages(b, &body, guard).await,
        (Route::CountTokens, Some(b)) => count_tokens(b, guard).await,
        (Route::Models, _) => json_response(200, models_json(), guard),
        _ => json_response(
            404,
            anthropic_error(
                "not_found_error",
                &format!("Not found: {}", parts.uri.path()),
            ),
            guard,
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", v);
    }
    response
}

async fn messages(behavior: Behavior, body: &[u8], guard: Guard) -> Response<MockBody> {
    if let Behavior::Error { .. } = behavior {
        return error_response(&behavior, guard);
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let Some(obj) = parsed.as_ref().and_then(|v| v.as_object()) else {
        return json_response(
            400,
            anthropic_error(
                "invalid_request_error",
                "The request body is not valid JSON.",
            ),
            guard,
        );
    };
    let Some(model) = obj.get("model").and_then(|m| m.as_str()) else {
        return json_response(
            400,
            anthropic_error("invalid_request_error", "model: Field required"),
            guard,
        );
    };
    let stream = obj.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);

    let (usage, delay) = match &behavior {
        Behavior::Slow { usage, delay } => (*usage, Some(*delay)),
        Behavior::DelayHeaders(d, usage) => {
            tokio::time::sleep(*d).await;
            (*usage, None)
        }
        other => (other.usage().unwrap_or_default(), None),
    };
    let cut = matches!(
        behavior,
        Behavior::StallAfterStart(_) | Behavior::ResetAfterStart(_)
    );
    let tail = if matches!(behavior, Behavior::ResetAfterStart(_)) {
        Step::Fail
    } else {
        Step::Hang
    };

    let mut steps = VecDeque::new();
    if stream {
        let events = stream_events(model, usage);
        let count = if cut {
            EVENTS_BEFORE_STALL
        } else {
            events.len()
        };
        for (i, event) in events.into_iter().take(count).enumerate() {
            if let (Some(d), true) = (delay, i > 0) {
                steps.push_back(Step::Sleep(d));
            }
            steps.push_back(Step::Data(event));
        }
        if cut {
            // Let hyper flush the head and the leading events before stalling or failing.
            steps.push_back(Step::Sleep(Duration::from_millis(50)));
            steps.push_back(tail);
        }
        let mut response = Response::new(MockBody::new(steps, None, guard));
        *response.status_mut() = StatusCode::OK;
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else {
        let json = expected_json_bytes(model, usage);
        let len = json.len() as u64;
        if let Some(d) = delay {
            steps.push_back(Step::Sleep(d));
        }
        if cut {
            steps.push_back(Step::Data(json.slice(..json.len() / 2)));
            steps.push_back(Step::Sleep(Duration::from_millis(50)));
            steps.push_back(tail);
        } else {
            steps.push_back(Step::Data(json));
        }
        sized_response(200, "application/json", steps, len, guard)
    }
}

async fn count_tokens(behavior: Behavior, guard: Guard) -> Response<MockBody> {
    if let Behavior::DelayHeaders(d, _) = &behavior {
        tokio::time::sleep(*d).await;
    }
    match behavior.usage() {
        Some(usage) => json_response(200, format!("{{\"input_tokens\": {}}}", usage.input), guard),
        None => error_response(&behavior, guard),
    }
}

fn error_response(behavior: &Behavior, guard: Guard) -> Response<MockBody> {
    let Behavior::Error {
        status,
        body,
        headers,
    } = behavior
    else {
        panic!("error_response called with a non-error behaviour");
    };
    let mut response = json_response(*status, body.clone(), guard);
    let h = response.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
        let value = HeaderValue::from_str(value).expect("valid header value");
        if name == CONTENT_TYPE {
            h.insert(name, value);
        } else {
            h.append(name, value);
        }
    }
    response
}

fn json_response(status: u16, body: String, guard: Guard) -> Response<MockBody> {
    let body = Bytes::from(body);
    let len = body.len() as u64;
    sized_response(
        status,
        "application/json",
        VecDeque::from([Step::Data(body)]),
        len,
        guard,
    )
}

fn sized_response(
    status: u16,
    content_type: &'static str,
    steps: VecDeque<Step>,
    len: u64,
    guard: Guard,
) -> Response<MockBody> {
    let mut response = Response::new(MockBody::new(steps, Some(len), guard));
    *response.status_mut() = StatusCode::from_u16(status).expect("valid status code");
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

fn models_json() -> String {
    let data: Vec<serde_json::Value> = MODELS
        .iter()
        .map(|(id, name)| {
            serde_json::json!({
                "type": "model",
                "id": id,
                "display_name": name,
                "created_at": "2026-01-15T00:00:00Z",
            })
        })
        .collect();
    serde_json::json!({
        "data": data,
        "has_more": false,
        "first_id": MODELS[0].0,
        "last_id": MODELS[MODELS.len() - 1].0,
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Wire format (deterministic; same spacing as the captured fixtures)
// ---------------------------------------------------------------------------------------------

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

/// `{"type": "error", "error": {"type": kind, "message": message}}`
pub fn anthropic_error(kind: &str, message: &str) -> String {
    format!(
        "{{\"type\": \"error\", \"error\": {{\"type\": {}, \"message\": {}}}}}",
        json_str(kind),
        json_str(message)
    )
}

fn usage_json(usage: MockUsage, output: u64) -> String {
    format!(
        "{{\"input_tokens\": {}, \"output_tokens\": {}, \"cache_creation_input_tokens\": {}, \
         \"cache_read_input_tokens\": {}, \"cache_creation\": {{\"ephemeral_5m_input_tokens\": {}, \
         \"ephemeral_1h_input_tokens\": {}}}}}",
        usage.input,
        output,
        usage.cache_creation(),
        usage.cache_read,
        usage.cache_creation_5m,
        usage.cache_creation_1h
    )
}

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The SSE events of a streamed answer, one `Bytes` per event (each is sent as its own frame):
/// message_start, ping, content_block_start, 3 × content_block_delta, content_block_stop,
/// message_delta (usage.output_tokens = `usage.output`), message_stop.
pub fn stream_events(model: &str, usage: MockUsage) -> Vec<Bytes> {
    let mut events = Vec::with_capacity(6 + TEXT_DELTAS.len());
    events.push(event(
        "message_start",
        &format!(
            "{{\"type\": \"message_start\", \"message\": {{\"id\": \"{MESSAGE_ID}\", \"type\": \"message\", \
             \"role\": \"assistant\", \"model\": {}, \"content\": [], \"stop_reason\": null, \
             \"stop_sequence\": null, \"usage\": {}}}}}",
            json_str(model),
            usage_json(usage, 1)
        ),
    ));
    events.push(event("ping", "{\"type\": \"ping\"}"));
    events.push(event(
        "content_block_start",
        "{\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}",
    ));
    for text in TEXT_DELTAS {
        events.push(event(
            "content_block_delta",
            &format!(
                "{{\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {{\"type\": \"text_delta\", \"text\": {}}}}}",
                json_str(text)
            ),
        ));
    }
    events.push(event(
        "content_block_stop",
        "{\"type\": \"content_block_stop\", \"index\": 0}",
    ));
    events.push(event(
        "message_delta",
        &format!(
            "{{\"type\": \"message_delta\", \"delta\": {{\"stop_reason\": \"end_turn\", \"stop_sequence\": null}}, \
             \"usage\": {{\"output_tokens\": {}}}}}",
            usage.output
        ),
    ));
    events.push(event("message_stop", "{\"type\": \"message_stop\"}"));
    events
}

/// The full body of a streamed answer.
pub fn expected_stream_bytes(model: &str, usage: MockUsage) -> Bytes {
    let events = stream_events(model, usage);
    let mut all = Vec::with_capacity(events.iter().map(Bytes::len).sum());
    for e in &events {
        all.extend_from_slice(e);
    }
    Bytes::from(all)
}

/// The full body of a JSON (non-streamed) answer.
pub fn expected_json_bytes(model: &str, usage: MockUsage) -> Bytes {
    Bytes::from(format!(
        "{{\"id\": \"{MESSAGE_ID}\", \"type\": \"message\", \"role\": \"assistant\", \"model\": {}, \
         \"content\": [{{\"type\": \"text\", \"text\": {}}}], \"stop_reason\": \"end_turn\", \
         \"stop_sequence\": null, \"usage\": {}}}",
        json_str(model),
        json_str(&TEXT_DELTAS.concat()),
        usage_json(usage, usage.output)
    ))
}

// ---------------------------------------------------------------------------------------------
// Response body with accounting
// ---------------------------------------------------------------------------------------------

/// Counts one request: in flight from arrival; served / cancelled at the end.
struct Guard {
    shared: Arc<Mutex<State>>,
    index: Option<usize>,
    done: bool,
}

impl Guard {
    fn new(shared: Arc<Mutex<State>>) -> Guard {
        {
            let mut st = lock(&shared);
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
        }
        Guard {
            shared,
            index: None,
            done: false,
        }
    }

    fn record(&self, data: &[u8]) {
        if let Some(i) = self.index {
            if let Some(r) = lock(&self.shared).responses.get_mut(i) {
                r.extend_from_slice(data);
            }
        }
    }

    /// The last frame was handed to hyper.
    fn complete(&mut self) {
        if !self.done {
            self.done = true;
            let mut st = lock(&self.shared);
            st.in_flight -= 1;
            st.served += 1;
        }
    }

    /// The body ended with an error on purpose (ResetAfterStart).
    fn fail(&mut self) {
        if !self.done {
            self.done = true;
            lock(&self.shared).in_flight -= 1;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            let mut st = lock(&self.shared);
            st.in_flight -= 1;
            st.cancelled += 1;
        }
    }
}

enum Step {
    Sleep(Duration),
    Data(Bytes),
    /// Never produce another frame.
    Hang,
    /// End the body with an error.
    Fail,
}

/// A scripted body: each `Data` step is one frame.
struct MockBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Remaining bytes when the body is sent with a Content-Length.
    remaining: Option<u64>,
    guard: Guard,
}

impl MockBody {
    fn new(steps: VecDeque<Step>, len: Option<u64>, guard: Guard) -> MockBody {
        MockBody {
            steps,
            sleep: None,
            remaining: len,
            guard,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.steps.pop_front() {
                None => {
                    this.guard.complete();
                    return Poll::Ready(None);
                }
                Some(Step::Sleep(d)) => this.sleep = Some(Box::pin(tokio::time::sleep(d))),
                Some(Step::Data(data)) => {
                    this.guard.record(&data);
                    if let Some(r) = this.remaining.as_mut() {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    if this.steps.is_empty() {
                        this.guard.complete();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Step::Hang) => {
                    this.steps.push_front(Step::Hang);
                    return Poll::Pending;
                }
                Some(Step::Fail) => {
                    this.guard.fail();
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "mock upstream reset the stream",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for tests
// ---------------------------------------------------------------------------------------------

/// A plain reqwest client (installs the ring rustls provider once; reqwest is built with
/// `rustls-no-provider` and panics without one).
pub fn http_client() -> reqwest::Client {
    static PROVIDER: OnceLock<()> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::new()
}

/// Polls `cond` every 10 ms until it holds; panics after 5 s with `what`.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn usage() -> MockUsage {
        MockUsage {
            input: 12,
            output: 34,
            cache_creation_5m: 5,
            cache_creation_1h: 6,
            cache_read: 7,
        }
    }

    fn messages_body(model: &str, stream: bool) -> String {
        serde_json::json!({
            "model": model,
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": "say hi"}],
        })
        .to_string()
    }

    async fn post(mock: &MockUpstream, model: &str, stream: bool) -> reqwest::Response {
        http_client()
            .post(format!("{}/v1/messages?beta=true", mock.base_url()))
            .header("x-api-key", "sk-upstream")
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "a-2025,b-2026")
            .header("content-type", "application/json")
            .body(messages_body(model, stream))
            .send()
            .await
            .unwrap()
    }

    async fn json_of(resp: reqwest::Response) -> serde_json::Value {
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
    }

    fn event_names(body: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(body)
            .lines()
            .filter_map(|l| l.strip_prefix("event: ").map(str::to_owned))
            .collect()
    }

    #[tokio::test]
    async fn stream_answer_has_real_event_sequence_and_usage() {
        let mock = MockUpstream::start().await;
        mock.set_default(Behavior::Ok(usage()));
        let resp = post(&mock, "claude-test-x", true).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert!(resp.headers().get("content-length").is_none());
        assert_eq!(resp.headers()["request-id"], "req_mock_0001");
        let body = resp.bytes().await.unwrap();
        assert_eq!(body, expected_stream_bytes("claude-test-x", usage()));
        let text = std::str::from_utf8(&body).unwrap();
        for needle in [
            "\"model\": \"claude-test-x\"",
            "\"input_tokens\": 12, \"output_tokens\": 1,",
            "\"cache_creation_input_tokens\": 11",
            "\"cache_read_input_tokens\": 7",
            "\"cache_creation\": {\"ephemeral_5m_input_tokens\": 5, \"ephemeral_1h_input_tokens\": 6}",
            "\"usage\": {\"output_tokens\": 34}",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
        assert_eq!(
            event_names(&body),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for block in text.split_terminator("\n\n") {
            let data = block
                .lines()
                .nth(1)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap();
            let _: serde_json::Value = serde_json::from_str(data).unwrap();
        }
        wait_until("served", || mock.served() == 1).await;
        assert_eq!(mock.cancelled(), 0);
        assert_eq!(mock.in_flight(), 0);
        assert_eq!(mock.responses(), vec![body]);
        let reqs = mock.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].path, "/v1/messages");
        assert_eq!(reqs[0].query.as_deref(), Some("beta=true"));
        assert_eq!(reqs[0].header("x-api-key"), Some("sk-upstream"));
        assert_eq!(reqs[0].header("anthropic-beta"), Some("a-2025,b-2026"));
        assert_eq!(reqs[0].json()["model"], "claude-test-x");
    }

    #[tokio::test]
    async fn stream_bytes_match_fixture_format() {
        // The captured fixture: input 10, output 7, no cache; only the usage object gained
        // the `cache_creation` breakdown, the id and the text split differ.
        let fixture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clients/responses/anthropic_stream.txt"
        ))
        .unwrap();
        let ours = expected_stream_bytes("claude-opus-4-8", MockUsage::new(10, 7));
        let ours = std::str::from_utf8(&ours).unwrap();
        assert_eq!(
            event_names(fixture.as_bytes())[..3],
            event_names(ours.as_bytes())[..3]
        );
        for line in [
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            "data: {\"type\": \"content_block_stop\", \"index\": 0}\n\n",
            "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\": null}, \"usage\": {\"output_tokens\": 7}}\n\n",
            "event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n",
        ] {
            assert!(fixture.contains(line) && ours.contains(line), "{line}");
        }
    }

    #[tokio::test]
    async fn json_answer() {
        let mock = MockUpstream::start().await;
        mock.push_behavior(Behavior::Ok(usage()));
        let resp = post(&mock, "claude-json", false).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let expected = expected_json_bytes("claude-json", usage());
        assert_eq!(
            resp.headers()["content-length"],
            expected.len().to_string().as_str()
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(body, expected);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], "claude-json");
        assert_eq!(v["content"][0]["text"], "Hi! This is the mock upstream.");
        assert_eq!(v["usage"]["input_tokens"], 12);
        assert_eq!(v["usage"]["output_tokens"], 34);
        assert_eq!(v["usage"]["cache_creation_input_tokens"], 11);
        assert_eq!(v["usage"]["cache_read_input_tokens"], 7);
        assert_eq!(v["usage"]["cache_creation"]["ephemeral_1h_input_tokens"], 6);
        wait_until("served", || mock.served() == 1).await;
        assert_eq!(mock.responses(), vec![body]);

        // Queue consumed: the default (10 / 7) answers the next one.
        let body = post(&mock, "claude-json", false)
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            body,
            expected_json_bytes("claude-json", MockUsage::new(10, 7))
        );
    }

    #[tokio::test]
    async fn error_behaviour_with_headers_then_default() {
        let mock = MockUpstream::start().await;
        mock.push_behavior(Behavior::rate_limited(7));
        mock.push_behavior(Behavior::Error {
            status: 503,
            body: "upstream gone".into(),
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("x-extra".into(), "1".into()),
            ],
        });
        mock.push_behavior(Behavior::overloaded());

        let resp = post(&mock, "m", true).await;
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        assert_eq!(
            resp.headers()["anthropic-ratelimit-requests-remaining"],
            "0"
        );
        let reset = resp.headers()["anthropic-ratelimit-requests-reset"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(reset.parse::<jiff::Timestamp>().is_ok(), "{reset}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v = json_of(resp).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");

        let resp = post(&mock, "m", true).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert_eq!(resp.headers()["x-extra"], "1");
        assert_eq!(resp.text().await.unwrap(), "upstream gone");

        let resp = post(&mock, "m", false).await;
        assert_eq!(resp.status(), 529);
        let v = json_of(resp).await;
        assert_eq!(v["error"]["type"], "overloaded_error");

        let resp = post(&mock, "m", true).await;
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.unwrap();
        assert_eq!(body, expected_stream_bytes("m", MockUsage::new(10, 7)));
        wait_until("served", || mock.served() == 4).await;
        assert_eq!(mock.requests().len(), 4);
    }

    #[tokio::test]
    async fn count_tokens_models_and_not_found() {
        let mock = MockUpstream::start().await;
        mock.set_default(Behavior::Ok(MockUsage::new(11, 1)));
        let client = http_client();
        let resp = client
            .post(format!("{}/v1/messages/count_tokens", mock.base_url()))
            .body(messages_body("m", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "{\"input_tokens\": 11}");

        let resp = client
            .get(format!("{}/v1/models?limit=20", mock.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v = json_of(resp).await;
        assert_eq!(v["data"][0]["type"], "model");
        assert_eq!(v["data"][0]["id"], "claude-opus-4-8");
        assert_eq!(v["has_more"], false);
        assert_eq!(v["first_id"], "claude-opus-4-8");

        let resp = client
            .get(format!("{}/v1/nope", mock.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        let v = json_of(resp).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");

        let resp = client
            .post(format!("{}/v1/messages", mock.base_url()))
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);

        wait_until("served", || mock.served() == 4).await;
        let paths: Vec<_> = mock.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            [
                "/v1/messages/count_tokens",
                "/v1/models",
                "/v1/nope",
                "/v1/messages"
            ]
        );
    }

    #[tokio::test]
    async fn slow_stream_arrives_event_by_event() {
        let mock = MockUpstream::start().await;
        mock.set_default(Behavior::Slow {
            usage: usage(),
            delay: Duration::from_millis(30),
        });
        let resp = post(&mock, "slow", true).await;
        let mut chunks = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            chunks.push(chunk.unwrap());
        }
        // Events are separate frames spaced by the delay: several chunks, each ending on an
        // event boundary (a loaded machine may still coalesce two).
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.ends_with(b"\n\n")));
        assert_eq!(chunks.concat(), expected_stream_bytes("slow", usage()));
        wait_until("served", || mock.served() == 1).await;
    }

    #[tokio::test]
    async fn client_dropping_mid_stream_is_counted_as_cancelled() {
        let mock = MockUpstream::start().await;
        mock.push_behavior(Behavior::Slow {
            usage: usage(),
            delay: Duration::from_millis(100),
        });
        let resp = post(&mock, "m", true).await;
        let mut stream = resp.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"event: message_start\n"));
        assert_eq!(mock.in_flight(), 1);
        drop(stream);
        wait_until("cancelled", || mock.cancelled() == 1).await;
        assert_eq!(mock.served(), 0);
        assert_eq!(mock.in_flight(), 0);
        let sent = &mock.responses()[0];
        assert!(sent.starts_with(&first));
        assert!(sent.len() < expected_stream_bytes("m", usage()).len());
    }

    #[tokio::test]
    async fn stall_then_disconnect_is_cancelled() {
        let mock = MockUpstream::start().await;
        mock.push_behavior(Behavior::StallAfterStart(usage()));
        let resp = post(&mock, "m", true).await;
        let mut stream = resp.bytes_stream();
        let mut got = Vec::new();
        while event_names(&got).len() < EVENTS_BEFORE_STALL {
            got.extend_from_slice(&stream.next().await.unwrap().unwrap());
        }
        let more = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        assert!(more.is_err(), "the stream should hang");
        assert_eq!(mock.in_flight(), 1);
        drop(stream);
        wait_until("cancelled", || mock.cancelled() == 1).await;
        assert_eq!(mock.in_flight(), 0);
        assert_eq!(mock.responses()[0], got);
    }

    #[tokio::test]
    async fn reset_after_start_breaks_the_body() {
        let mock = MockUpstream::start().await;
        mock.push_behavior(Behavior::ResetAfterStart(usage()));
        let resp = post(&mock, "m", true).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.bytes().await.is_err());
        wait_until("in flight 0", || mock.in_flight() == 0).await;
        assert_eq!(mock.served(), 0);
        assert_eq!(mock.cancelled(), 0);
    }

    #[tokio::test]
    async fn delay_headers_waits_before_the_head() {
        let mock = MockUpstream::start().await;
        mock.push_behavior(Behavior::DelayHeaders(Duration::from_millis(150), usage()));
        let started = std::time::Instant::now();
        let resp = post(&mock, "m", false).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(
            resp.bytes().await.unwrap(),
            expected_json_bytes("m", usage())
        );
    }

    #[tokio::test]
    async fn max_in_flight_with_parallel_slow_requests() {
        let mock = Arc::new(MockUpstream::start().await);
        mock.set_default(Behavior::Slow {
            usage: usage(),
            delay: Duration::from_millis(40),
        });
        let mut tasks = JoinSet::new();
        for i in 0..5 {
            let mock = mock.clone();
            tasks.spawn(async move {
                let model = format!("m{i}");
                let body = post(&mock, &model, true).await.bytes().await.unwrap();
                assert_eq!(body, expected_stream_bytes(&model, usage()));
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        wait_until("served", || mock.served() == 5).await;
        assert_eq!(mock.max_in_flight(), 5);
        assert_eq!(mock.in_flight(), 0);
        assert_eq!(mock.cancelled(), 0);
    }

    #[tokio::test]
    async fn h2c_prior_knowledge_works() {
        let _ = http_client();
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let mock = MockUpstream::start().await;
        let resp = client
            .post(format!("{}/v1/messages", mock.base_url()))
            .header("x-api-key", "k")
            .body(messages_body("h2", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(
            resp.bytes().await.unwrap(),
            expected_stream_bytes("h2", MockUsage::new(10, 7))
        );
        wait_until("served", || mock.served() == 1).await;
        assert_eq!(mock.requests()[0].header("x-api-key"), Some("k"));
    }
}
