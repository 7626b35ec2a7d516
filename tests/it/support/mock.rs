//! Mock upstream that speaks every vendor's real wire format on one port, with fault injection.
//!
//! [`MockUpstream::start`] listens on `127.0.0.1:0` (HTTP/1.1 and h2c). One server answers every
//! vendor's paths; the [`Behavior`] queue and the counters are shared by all of them, so
//! `push_behavior` applies to whichever answering request comes next, and an error behaviour is
//! rendered in the shape of the vendor whose route was hit ([`render_error`]).
//!
//! Anthropic ([`anthropic`]):
//! - `POST /v1/messages`: SSE when the body has `"stream": true`, else JSON; `model` echoed.
//! - `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N = the behaviour's `usage.input`.
//! - `GET /v1/models` (unless the request carries only OpenAI or Gemini credentials, see below).
//!
//! OpenAI ([`openai`]; `Authorization: Bearer` required) and Azure OpenAI (`api-key` header and
//! an `api-version` query required):
//! - `POST /v1/chat/completions`, `/v1/responses`, `/v1/embeddings`, `/v1/images/generations`,
//!   `/v1/images/edits`, and the same under `/openai/deployments/{deployment}/…` for Azure.
//! - `GET /v1/models` with `authorization` and neither `x-api-key` nor `anthropic-version`.
//!
//! Gemini ([`gemini`]; `x-goog-api-key` or `?key=` required), under `/v1beta/` and `/v1/`:
//! - `POST models/{model}:generateContent`, `:streamGenerateContent` (`alt=sse`: SSE, else a
//!   streamed JSON array), `:countTokens`, `:embedContent`, `:predict` (Imagen, see [`images`]).
//! - `GET /v1beta/models` (and `GET /v1/models` with `x-goog-api-key` or `?key=`).
//!
//! ChatGPT's Codex backend (`Authorization: Bearer` required): `POST
//! /backend-api/codex/responses` and `/responses/compact`, as OpenAI's Responses, refusing a
//! request without `chatgpt-account-id`, or a generation that asks to store the response or
//! not to stream, as that backend does.
//!
//! `GET /mock-files/{id}` serves the images that `response_format: "url"` answers point to.
//!
//! Stored responses: by default none is held (`/v1/responses/{id}[/…]` answers 404, a
//! `previous_response_id` is not checked) and every Responses answer has the id
//! [`openai::RESPONSE_ID`]. A mock told to [`MockUpstream::hold_responses`] acts as one vendor
//! account: its answers have ids of their own (`resp_<tag>_<n>`), it keeps each one unless the
//! request said `store: false`, answers the paths of those it holds (GET: the response) and 404
//! for others, and refuses a `previous_response_id` it does not hold with
//! `previous_response_not_found`.
//! Anything else: 404 in the vendor shape its prefix suggests (Anthropic by default).
//!
//! Auth failures (and Azure's missing `api-version`) are answered before the queue is consulted:
//! they do not consume a queued behaviour. Models lists and files never consume one either.
//! Bodies are deterministic functions of (model, usage, [`AnswerOpts`]); see each vendor's
//! `expected_*` helpers. Every request and every response body (as handed to hyper, partial ones
//! included) is recorded, in arrival order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

pub mod anthropic;
mod bedrock;
mod body;
pub mod code_assist;
pub mod gemini;
pub mod images;
pub mod openai;
mod route;
#[cfg(test)]
mod tests;
mod wire;

// Re-exported for tests that use them (the existing ones name these from `mock`).
#[allow(unused_imports)]
pub use anthropic::{
    EVENTS_BEFORE_STALL, MESSAGE_ID, MODELS, THINKING_TEXT, anthropic_error, expected_json_bytes,
    expected_stream_bytes, stream_events,
};
#[allow(unused_imports)]
pub use images::FormPart;
#[allow(unused_imports)]
pub use wire::{base64_decode, base64_encode};

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use body::{Guard, MockBody, Step};
use route::{GeminiOp, OpenAiOp, Route, precheck};

/// The text deltas of a streamed answer (every vendor); a JSON answer's text is their
/// concatenation.
pub const TEXT_DELTAS: [&str; 3] = ["Hi! ", "This is ", "the mock upstream."];
/// A request whose last message contains this (and that offers tools) gets a tool-call answer
/// calling the first tool offered (OpenAI chat and Responses, Gemini), as the fixtures' clients
/// asked for one.
pub const TOOL_TRIGGER: &str = "MOCK_TOOL";
/// The arguments of a tool-call answer, as streamed; their concatenation is [`TOOL_ARGUMENTS`].
pub const TOOL_ARGUMENT_DELTAS: [&str; 4] = ["{\"comman", "d\": \"ech", "o mock-t", "ool-ok\"}"];
/// The arguments of a tool-call answer.
pub const TOOL_ARGUMENTS: &str = "{\"command\": \"echo mock-tool-ok\"}";
/// `created` / `created_at` in every OpenAI answer (bodies are deterministic).
pub const CREATED: u64 = 1_795_331_914;

/// Token counts reported by an answer, in Anthropic's terms: `input` excludes cache reads and
/// writes. Other vendors derive theirs from it (OpenAI: `prompt_tokens = input + cache_read`,
/// `cached_tokens = cache_read`; Gemini: `promptTokenCount = input + cache_read`,
/// `cachedContentTokenCount = cache_read`); cache writes exist only on Anthropic.
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

    /// OpenAI's `prompt_tokens` / `input_tokens` and Gemini's `promptTokenCount`: cached included.
    pub fn prompt_with_cached(&self) -> u64 {
        self.input + self.cache_read
    }
}

/// The vendor whose wire format a route speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Anthropic,
    OpenAi,
    Azure,
    Gemini,
    Bedrock,
}

/// How the mock answers one request (any answering route: not models lists or files).
#[derive(Clone, Debug)]
pub enum Behavior {
    /// A normal answer: a stream if the request asked for one, else JSON.
    Ok(MockUsage),
    /// This status, body and extra headers, verbatim on every route. `content-type`: the
    /// route's JSON type (`application/json`; Gemini: `application/json; charset=UTF-8`) unless
    /// given.
    Error {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// An error rendered in the shape of the vendor hit. `kind` is Anthropic's error type
    /// (`invalid_request_error`, `api_error`, …); OpenAI maps it to its `type`, Gemini derives its
    /// `status` from the HTTP status. Made by [`Behavior::error`].
    VendorError {
        status: u16,
        kind: String,
        message: String,
    },
    /// 429 as the vendor hit sends it (Anthropic: `retry-after` + `anthropic-ratelimit-*`;
    /// OpenAI: `retry-after` + `x-ratelimit-*`; Azure: `retry-after`, `retry-after-ms`;
    /// Gemini: `RESOURCE_EXHAUSTED` with a `RetryInfo` detail, no header).
    RateLimited { retry_after_secs: u64 },
    /// Overloaded as the vendor hit says it: Anthropic 529 `overloaded_error`; OpenAI and Azure
    /// 503; Gemini 503 `UNAVAILABLE`.
    Overloaded,
    /// Stream normally but wait `delay` between events (JSON: wait `delay`, then the body).
    Slow { usage: MockUsage, delay: Duration },
    /// Send the leading events (Anthropic: [`EVENTS_BEFORE_STALL`]; each vendor module names its
    /// count), then hang forever (JSON: the headers and the first half of the body, then hang).
    StallAfterStart(MockUsage),
    /// Sleep this long before sending response headers, then answer as `Ok`.
    DelayHeaders(Duration, MockUsage),
    /// Send the response headers at once, then nothing for this long, then the whole answer.
    QuietStart(Duration, MockUsage),
    /// Send the leading events (as `StallAfterStart`), then nothing for this long, then the
    /// rest of the answer (JSON: as `Ok`).
    PauseAfterStart(Duration, MockUsage),
    /// Like `StallAfterStart`, but 50 ms after the leading events abort the body with an error
    /// (hyper closes the HTTP/1 connection without the final chunk, or resets the h2 stream).
    /// Counted neither as served nor as cancelled.
    ResetAfterStart(MockUsage),
    /// Like `ResetAfterStart`, with the first half of the next event sent before the abort: a
    /// stream cut inside an event.
    ResetMidEvent(MockUsage),
}

impl Behavior {
    /// An error in the hit vendor's shape (Anthropic: `{"type": "error", "error": {"type": kind,
    /// "message": ..}}`).
    pub fn error(status: u16, kind: &str, message: &str) -> Behavior {
        Behavior::VendorError {
            status,
            kind: kind.to_owned(),
            message: message.to_owned(),
        }
    }

    /// 429 with the hit vendor's retry hints (reset = now + `retry_after_secs`).
    pub fn rate_limited(retry_after_secs: u64) -> Behavior {
        Behavior::RateLimited { retry_after_secs }
    }

    /// The hit vendor's "overloaded" answer.
    pub fn overloaded() -> Behavior {
        Behavior::Overloaded
    }

    fn usage(&self) -> Option<MockUsage> {
        match self {
            Behavior::Ok(u)
            | Behavior::Slow { usage: u, .. }
            | Behavior::StallAfterStart(u)
            | Behavior::DelayHeaders(_, u)
            | Behavior::QuietStart(_, u)
            | Behavior::PauseAfterStart(_, u)
            | Behavior::ResetAfterStart(u)
            | Behavior::ResetMidEvent(u) => Some(*u),
            Behavior::Error { .. }
            | Behavior::VendorError { .. }
            | Behavior::RateLimited { .. }
            | Behavior::Overloaded => None,
        }
    }
}

/// What shapes an answer besides (model, usage); the `expected_*` helpers take it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnswerOpts {
    /// OpenAI chat stream: the request had `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// A Responses answer's id, when not [`openai::RESPONSE_ID`].
    pub response_id: Option<String>,
    /// A tool-call answer calling this function (see [`TOOL_TRIGGER`]).
    pub tool: Option<String>,
    /// Azure flavour: chat answers carry `prompt_filter_results` (a stream opens with a
    /// choices-less chunk holding them, as Azure's do).
    pub azure: bool,
    /// Gemini: the request asked for `responseModalities` with `IMAGE`: an `inlineData` answer.
    pub image: bool,
    /// Reasoning / thinking tokens, counted inside `usage.output` (the mock's
    /// [`MockUpstream::set_reasoning_tokens`]).
    pub reasoning: u64,
}

/// Per-mock settings beyond the per-request behaviour.
#[derive(Clone, Debug, Default)]
pub struct MockOptions {
    /// Reasoning tokens reported inside `output` (OpenAI `reasoning_tokens`, Gemini
    /// `thoughtsTokenCount`, which Gemini reports beside, not inside, `candidatesTokenCount`).
    pub reasoning_tokens: u64,
    /// Holds the Responses it makes, naming them `resp_<tag>_<n>` ([`MockUpstream::hold_responses`]).
    pub holds_responses: Option<String>,
    /// Image input tokens of `gpt-image-*` edits (`input_tokens_details.image_tokens`).
    pub image_input_tokens: u64,
    /// When set, every credential presented must equal it (all vendors, Anthropic included).
    pub api_key: Option<String>,
    /// Code Assist: the project `loadCodeAssist` names (a login set up already); unset, the
    /// login is set up by `onboardUser` (`code_assist::ONBOARDED_PROJECT`).
    pub code_assist_project: Option<String>,
    /// Code Assist: how many `onboardUser` calls answer "not done" before one is.
    pub onboard_pending: usize,
    /// Code Assist: `loadCodeAssist` answers this status with Google's error.
    pub load_fails: Option<u16>,
    /// Code Assist: `loadCodeAssist` answers after this long.
    pub load_delay: Duration,
    /// Every answer of a route that takes a behaviour waits this long first (requests sent
    /// together all arrive before any is answered).
    pub answer_delay: Duration,
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

    /// A query parameter, percent-decoded (`api-version`, `alt`, `key`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query.as_deref(), name)
    }

    /// The Azure deployment in `/openai/deployments/{deployment}/…`.
    pub fn azure_deployment(&self) -> Option<&str> {
        let rest = self.path.strip_prefix("/openai/deployments/")?;
        rest.split('/').next().filter(|d| !d.is_empty())
    }

    /// The credential presented, whichever way (`x-api-key`, `api-key`, `x-goog-api-key`,
    /// `?key=`, `Authorization: Bearer`).
    pub fn credential(&self) -> Option<String> {
        credential(&self.headers, self.query.as_deref())
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    for name in ["x-api-key", "api-key", "x-goog-api-key"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return Some(v.to_owned());
        }
    }
    if let Some(bearer) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.to_owned());
    }
    query_param(query, "key")
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
    options: MockOptions,
    /// Images served at `/mock-files/{id}` (answers with `response_format: "url"`).
    files: HashMap<String, Bytes>,
    base_url: String,
    /// Responses made (with `holds_responses`), and the ids of those held.
    responses_made: usize,
    held_responses: HashSet<String>,
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MockUpstream {
    /// `start`, every answer reporting `input` and `output` tokens.
    pub async fn start_reporting(input: u64, output: u64) -> MockUpstream {
        let mock = MockUpstream::start().await;
        mock.set_default(Behavior::Ok(MockUsage {
            input,
            output,
            ..MockUsage::default()
        }));
        mock
    }

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
            options: MockOptions::default(),
            files: HashMap::new(),
            base_url: format!("http://{addr}"),
            responses_made: 0,
            held_responses: HashSet::new(),
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

    /// Queue a behaviour: the next answering request (any vendor's route) uses it.
    pub fn push_behavior(&self, b: Behavior) {
        lock(&self.shared).queue.push_back(b);
    }

    /// The behaviour used when the queue is empty.
    pub fn set_default(&self, b: Behavior) {
        lock(&self.shared).default = b;
    }

    /// Reasoning tokens reported from now on (inside `output`; see [`MockOptions`]).
    pub fn set_reasoning_tokens(&self, n: u64) {
        lock(&self.shared).options.reasoning_tokens = n;
    }

    /// Image input tokens reported by `gpt-image-*` edits from now on.
    pub fn set_image_input_tokens(&self, n: u64) {
        lock(&self.shared).options.image_input_tokens = n;
    }

    /// Code Assist: the project `loadCodeAssist` names from now on (`None`: the login is not
    /// set up; `onboardUser` sets it up with `code_assist::ONBOARDED_PROJECT`).
    pub fn set_code_assist_project(&self, project: Option<&str>) {
        lock(&self.shared).options.code_assist_project = project.map(str::to_owned);
    }

    /// Code Assist: `loadCodeAssist` answers `status` with Google's error from now on.
    pub fn fail_code_assist_setup(&self, status: Option<u16>) {
        lock(&self.shared).options.load_fails = status;
    }

    /// Every answer waits `delay` from now on (`MockOptions::answer_delay`).
    pub fn delay_answers(&self, delay: Duration) {
        lock(&self.shared).options.answer_delay = delay;
    }

    /// Code Assist: `loadCodeAssist` answers after `delay` from now on.
    pub fn delay_code_assist_setup(&self, delay: Duration) {
        lock(&self.shared).options.load_delay = delay;
    }

    /// Code Assist: `onboardUser` answers "not done" this many times before it is.
    pub fn set_onboard_pending(&self, n: usize) {
        lock(&self.shared).options.onboard_pending = n;
    }

    /// From now on the mock acts as one vendor account holding the Responses it makes (see the
    /// module's doc): their ids are `resp_<tag>_<n>`.
    pub fn hold_responses(&self, tag: &str) {
        lock(&self.shared).options.holds_responses = Some(tag.to_owned());
    }

    /// The stored responses held, sorted.
    pub fn held_responses(&self) -> Vec<String> {
        let mut held: Vec<String> = lock(&self.shared).held_responses.iter().cloned().collect();
        held.sort();
        held
    }

    /// From now on every credential must equal `key` (401/400 in the vendor's shape otherwise).
    pub fn require_api_key(&self, key: &str) {
        lock(&self.shared).options.api_key = Some(key.to_owned());
    }

    /// [`MockUpstream::require_api_key`] from elsewhere (a token endpoint issuing keys).
    pub fn credential_setter(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move |key| lock(&shared).options.api_key = Some(key.to_owned())
    }

    pub fn options(&self) -> MockOptions {
        lock(&self.shared).options.clone()
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

/// What a vendor handler gets besides the behaviour and the guard.
struct Ctx {
    method: http::Method,
    path: String,
    body: Bytes,
    headers: HeaderMap,
    query: Option<String>,
    /// The request's position in `requests()` (names the files it makes).
    index: usize,
    options: MockOptions,
    shared: Arc<Mutex<State>>,
}

impl Ctx {
    fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query.as_deref(), name)
    }

    /// The body as a JSON object.
    fn json(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match serde_json::from_slice(&self.body).ok()? {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    }
}

async fn handle(shared: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<MockBody> {
    let mut guard = Guard::new(shared.clone());
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let query = parts.uri.query().map(str::to_owned);
    let route = Route::parse(
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        query.as_deref(),
    );
    let (index, behavior, rejected, options) = {
        let mut st = lock(&shared);
        let index = st.requests.len();
        st.requests.push(Recorded {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: query.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        st.responses.push(Vec::new());
        let rejected = precheck(
            &route,
            &parts.headers,
            query.as_deref(),
            st.options.api_key.as_deref(),
        );
        let behavior = if rejected.is_none() && route.takes_behavior() {
            Some(st.queue.pop_front().unwrap_or_else(|| st.default.clone()))
        } else {
            None
        };
        (index, behavior, rejected, st.options.clone())
    };
    guard.index = Some(index);
    if behavior.is_some() && !options.answer_delay.is_zero() {
        tokio::time::sleep(options.answer_delay).await;
    }
    let request_id = format!("req_mock_{:04}", index + 1);
    let vendor = route.vendor();
    let ctx = Ctx {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        body,
        headers: parts.headers,
        query,
        index,
        options,
        shared,
    };

    let mut response = match (route, behavior, rejected) {
        (_, _, Some((status, body))) => vendor_json(vendor, status, body, guard),
        (Route::Messages, Some(b), _) => anthropic::messages(b, &ctx.body, guard).await,
        (Route::CountTokens, Some(b), _) => {
            count(
                Vendor::Anthropic,
                b,
                |u| format!("{{\"input_tokens\": {}}}", u.input),
                guard,
            )
            .await
        }
        (Route::Models(v), _, _) => {
            let body = match v {
                Vendor::Anthropic => anthropic::models_json(),
                Vendor::OpenAi | Vendor::Azure => openai::models_json(),
                Vendor::Gemini => gemini::models_json(),
                Vendor::Bedrock => unreachable!("Bedrock routes no model list"),
            };
            vendor_json(v, 200, body, guard)
        }
        (Route::OpenAi(op, azure), Some(b), _) => openai::handle(op, azure, b, &ctx, guard).await,
        (Route::Bedrock(op, model), Some(b), _) => {
            bedrock::handle(op, &model, b, &ctx, guard).await
        }
        (Route::Gemini(op, model), Some(b), _) => {
            gemini::handle(op, &model, b, &ctx, guard, false).await
        }
        (Route::CodeAssist(op), b, _) => code_assist::handle(op, b, &ctx, guard).await,
        (Route::File(id), _, _) => images::file(&id, &ctx, guard),
        (route, _, _) => {
            let path = parts.uri.path();
            let body = match route.vendor() {
                Vendor::Anthropic => {
                    anthropic_error("not_found_error", &format!("Not found: {path}"))
                }
                Vendor::OpenAi | Vendor::Azure => openai::not_found(vendor == Vendor::Azure, path),
                Vendor::Gemini => gemini::error_json(404, &format!("Not found: {path}"), None),
                Vendor::Bedrock => {
                    serde_json::json!({ "message": format!("Not found: {path}") }).to_string()
                }
            };
            vendor_json(vendor, 404, body, guard)
        }
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("request-id", v.clone());
        if matches!(vendor, Vendor::OpenAi | Vendor::Azure) {
            h.insert("x-request-id", v);
        }
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Answers shared by every vendor
// ---------------------------------------------------------------------------------------------

/// A successful answer's body before the behaviour's timing is applied.
enum Shape {
    /// One frame per event, no content-length; `before_stall` events precede a stall or reset.
    Stream {
        content_type: &'static str,
        events: Vec<Bytes>,
        before_stall: usize,
    },
    /// One body with a content-length (stalls after half of it).
    Sized {
        content_type: &'static str,
        body: Bytes,
    },
}

/// Plays a successful answer by the behaviour's timing (`Slow`, `DelayHeaders`, stall, reset).
async fn play(behavior: &Behavior, shape: Shape, guard: Guard) -> Response<MockBody> {
    let delay = match behavior {
        Behavior::Slow { delay, .. } => Some(*delay),
        Behavior::DelayHeaders(d, _) => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    };
    let mut steps = VecDeque::new();
    if let Behavior::QuietStart(d, _) = behavior {
        steps.push_back(Step::Sleep(*d));
    }
    let mid_event = matches!(behavior, Behavior::ResetMidEvent(_));
    let cut = mid_event
        || matches!(
            behavior,
            Behavior::StallAfterStart(_) | Behavior::ResetAfterStart(_)
        );
    let tail = if matches!(
        behavior,
        Behavior::ResetAfterStart(_) | Behavior::ResetMidEvent(_)
    ) {
        Step::Fail
    } else {
        Step::Hang
    };
    match shape {
        Shape::Stream {
            content_type,
            events,
            before_stall,
        } => {
            let count = if cut { before_stall } else { events.len() };
            let half = events
                .get(count)
                .filter(|_| mid_event)
                .map(|next| next.slice(..next.len() / 2));
            let pause = match behavior {
                Behavior::PauseAfterStart(d, _) => Some(*d),
                _ => None,
            };
            for (i, event) in events.into_iter().take(count).enumerate() {
                if let (Some(d), true) = (delay, i > 0) {
                    steps.push_back(Step::Sleep(d));
                }
                if let (Some(d), true) = (pause, i == before_stall) {
                    steps.push_back(Step::Sleep(d));
                }
                steps.push_back(Step::Data(event));
            }
            steps.extend(half.map(Step::Data));
            if cut {
                // Let hyper flush the head and the leading events before stalling or failing.
                steps.push_back(Step::Sleep(Duration::from_millis(50)));
                steps.push_back(tail);
            }
            let mut response = Response::new(MockBody::new(steps, None, guard));
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Shape::Sized { content_type, body } => {
            let len = body.len() as u64;
            if let Some(d) = delay {
                steps.push_back(Step::Sleep(d));
            }
            if cut {
                steps.push_back(Step::Data(body.slice(..body.len() / 2)));
                steps.push_back(Step::Sleep(Duration::from_millis(50)));
                steps.push_back(tail);
            } else {
                steps.push_back(Step::Data(body));
            }
            sized_response(200, content_type, steps, len, guard)
        }
    }
}

/// A token-counting answer: waits for `DelayHeaders`, else answers at once (no stall or slow
/// variant, as Anthropic's count_tokens always did).
async fn count(
    vendor: Vendor,
    behavior: Behavior,
    render: impl FnOnce(MockUsage) -> String,
    guard: Guard,
) -> Response<MockBody> {
    if let Behavior::DelayHeaders(d, _) = &behavior {
        tokio::time::sleep(*d).await;
    }
    match behavior.usage() {
        Some(usage) => vendor_json(vendor, 200, render(usage), guard),
        None => error_response(vendor, &behavior, guard),
    }
}

/// An error answer: (status, body, extra headers).
pub type ErrorParts = (u16, String, Vec<(String, String)>);

/// The error a behaviour stands for, in `vendor`'s shape: (status, body, extra headers).
/// `None` for a successful behaviour.
pub fn render_error(vendor: Vendor, behavior: &Behavior) -> Option<ErrorParts> {
    match behavior {
        Behavior::Error {
            status,
            body,
            headers,
        } => Some((*status, body.clone(), headers.clone())),
        Behavior::VendorError { .. } | Behavior::RateLimited { .. } | Behavior::Overloaded => {
            Some(match vendor {
                Vendor::Anthropic => anthropic::render_fault(behavior),
                Vendor::OpenAi => openai::render_fault(behavior, false),
                Vendor::Azure => openai::render_fault(behavior, true),
                Vendor::Gemini => gemini::render_fault(behavior),
                Vendor::Bedrock => bedrock::render_fault(behavior),
            })
        }
        _ => None,
    }
}

/// The answer to an error behaviour on a `vendor` route.
fn error_response(vendor: Vendor, behavior: &Behavior, guard: Guard) -> Response<MockBody> {
    let (status, body, headers) =
        render_error(vendor, behavior).expect("error_response called with a non-error behaviour");
    let mut response = vendor_json(vendor, status, body, guard);
    let h = response.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
        let value = HeaderValue::from_str(&value).expect("valid header value");
        if name == CONTENT_TYPE {
            h.insert(name, value);
        } else {
            h.append(name, value);
        }
    }
    response
}

/// The JSON content type each vendor sends.
fn json_type(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Gemini => "application/json; charset=UTF-8",
        _ => "application/json",
    }
}

fn vendor_json(vendor: Vendor, status: u16, body: String, guard: Guard) -> Response<MockBody> {
    let body = Bytes::from(body);
    let len = body.len() as u64;
    sized_response(
        status,
        json_type(vendor),
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

/// Concatenates events into one body.
fn concat(events: &[Bytes]) -> Bytes {
    let mut all = Vec::with_capacity(events.iter().map(Bytes::len).sum());
    for e in events {
        all.extend_from_slice(e);
    }
    Bytes::from(all)
}

/// Whether the last element of `items` mentions [`TOOL_TRIGGER`] (any nesting).
fn asks_for_tool(items: Option<&serde_json::Value>) -> bool {
    let last = match items {
        Some(serde_json::Value::Array(items)) => items.last(),
        other => other,
    };
    last.is_some_and(|v| v.to_string().contains(TOOL_TRIGGER))
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
