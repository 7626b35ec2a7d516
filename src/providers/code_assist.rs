//! Google logins through the Code Assist API: what Gemini CLI talks to when it is logged in with
//! a Google account ("Login with Google": Gemini Code Assist for individuals, Google AI Pro and
//! Ultra, Code Assist Standard) instead of an API key.
//!
//! The API has Gemini's generation calls under other names, at `{base}/v1internal:{method}`
//! (`generateContent`, `streamGenerateContent?alt=sse`, `countTokens`), with the login's access
//! token as a bearer token. A generation's body is the Gemini request wrapped with the model and
//! the Google Cloud project it is made for (`{"model", "project", "request": {…}}`), and each
//! answer, whole or streamed, is the Gemini answer wrapped (`{"response": {…}, "traceId"}`); a
//! token count is `{"request": {"model": "models/…", "contents"}}`, answered as Gemini answers
//! it. So the relay wraps the client's Gemini body ([`prepare`]) and hands the client the
//! Gemini answer inside ([`answer`]), before anything reads it: usage, failover and translation
//! (chat completions on Gemini models) see what a Gemini account would have answered. Errors are
//! Google's, as the Gemini API's are.
//!
//! The project is the account's `project` when set (a Code Assist Standard login needs its own);
//! else the one the API gives the login ([`project`]): `loadCodeAssist` names it for a login set
//! up already, else `onboardUser` sets the login up on its default (free) tier, as Gemini CLI
//! does at its first start. It is asked once per login and process: a reload of the accounts
//! keeps it for the same login (`catalog::Account::keep_learned`).
//!
//! Nothing else is served (embeddings, Imagen, the model list): the scheduler offers such
//! accounts for the generation calls only ([`serves`]). The access token lasts an hour; the
//! account's OAuth grant renews it (`crate::oauth`; Google's token endpoint takes the client's
//! secret too).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, header};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::app::App;
use crate::body::BoxError;
use crate::catalog::Account;
use crate::stream::sse::SseFramer;
use crate::upstream_client::{UpstreamResponse, read_capped};

pub const DEFAULT_BASE_URL: &str = "https://cloudcode-pa.googleapis.com";

/// The API's version path.
const VERSION: &str = "v1internal";

/// A Gemini call the Code Assist API has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Generate,
    Stream,
    CountTokens,
}

impl Op {
    /// The call on a Gemini `path` (after the version: `models/{model}:{method}`), and its model.
    pub fn of(path: &str) -> Option<(&str, Op)> {
        let (model, method) = path.strip_prefix("models/")?.rsplit_once(':')?;
        let op = match method {
            "generateContent" => Op::Generate,
            "streamGenerateContent" => Op::Stream,
            "countTokens" => Op::CountTokens,
            _ => return None,
        };
        (!model.is_empty()).then_some((model, op))
    }

    fn method(self) -> &'static str {
        match self {
            Op::Generate => "generateContent",
            Op::Stream => "streamGenerateContent",
            Op::CountTokens => "countTokens",
        }
    }
}

/// Whether a Code Assist account serves the Gemini call on `path` (after the version).
pub fn serves(path: &str) -> bool {
    Op::of(path).is_some()
}

/// `{base}/v1internal:{method}`; a stream always as server-sent events (the client's form is
/// made from them: [`answer`]).
pub fn upstream_url(account: &Account, op: Op) -> String {
    let path = format!("/{VERSION}:{}", op.method());
    super::join(
        &account.record.base_url,
        &path,
        (op == Op::Stream).then_some("alt=sse"),
    )
}

/// The client's headers as a Gemini account takes them (`gemini::client_headers`), with the
/// access token as a bearer token; the body is the relay's, JSON.
pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = super::gemini::client_headers(client);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(bearer) = &account.oauth_bearer {
        headers.insert(header::AUTHORIZATION, bearer.clone());
    }
    headers
}

/// The client's Gemini body, checked before anything is asked of the API: a generation's whole
/// (spliced as it came, a body that closed its object early could name another project after
/// it, and the API reads the project and model from the top of the body it is sent), a token
/// count's contents (given as such, or inside a `generateContentRequest`; the API counts contents
/// alone: a system instruction or tools beside them are not counted). `None` when the body is not
/// one JSON object, or a token count's has no contents: nothing of it may go ([`invalid_body`]
/// answers instead).
pub fn prepare(body: &Bytes, op: Op) -> Option<Prepared<'_>> {
    match op {
        Op::Generate | Op::Stream => {
            let raw: &RawValue = serde_json::from_slice(body).ok()?;
            raw.get()
                .starts_with('{')
                .then_some(Prepared::Generation(raw))
        }
        Op::CountTokens => {
            let mut object: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
            let contents = match object.remove("contents") {
                Some(contents) => contents,
                None => object
                    .get_mut("generateContentRequest")
                    .and_then(|r| r.get_mut("contents"))
                    .map(Value::take)?,
            };
            Some(Prepared::Count(contents))
        }
    }
}

/// A client's body that may go ([`prepare`]).
pub enum Prepared<'a> {
    Generation(&'a RawValue),
    Count(Value),
}

impl Prepared<'_> {
    /// The body the API is sent: a generation wrapped with its model and project; a token
    /// count's contents with the model.
    pub fn body(&self, model: &str, project: &str) -> Bytes {
        match self {
            Prepared::Generation(raw) => {
                let mut out =
                    Vec::with_capacity(raw.get().len() + model.len() + project.len() + 48);
                out.extend_from_slice(b"{\"model\":");
                push_json_string(&mut out, model);
                out.extend_from_slice(b",\"project\":");
                push_json_string(&mut out, project);
                out.extend_from_slice(b",\"request\":");
                out.extend_from_slice(raw.get().as_bytes());
                out.push(b'}');
                Bytes::from(out)
            }
            Prepared::Count(contents) => {
                let request = json!({ "request": { "model": format!("models/{model}"), "contents": contents } });
                Bytes::from(request.to_string())
            }
        }
    }
}

/// `text` as a JSON string.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(Value::from(text).to_string().as_bytes());
}

/// Google's 400 for a body that may not go ([`prepare`]), answered without sending it.
pub fn invalid_body() -> UpstreamResponse {
    let body = json!({ "error": {
        "code": 400,
        "message": "Invalid JSON payload received: the request body must be one JSON object \
                    (a token count's with its `contents`).",
        "status": "INVALID_ARGUMENT",
    } });
    let (mut head, ()) = Response::new(()).into_parts();
    head.status = http::StatusCode::BAD_REQUEST;
    super::json_answer(head, &body)
}

/// The Code Assist answer as the Gemini API's (see the module's documentation): a generation's
/// `response` handed on alone (with the `traceId` as its `responseId` when it has none), as one
/// JSON answer, as server-sent events, or, for a client that streamed without `alt=sse`, as the
/// JSON array Gemini streams then. Error answers and token counts go as they came.
pub fn answer(resp: UpstreamResponse, op: Op, client_sse: bool) -> UpstreamResponse {
    let (mut head, body) = resp.into_parts();
    if !head.status.is_success() || op == Op::CountTokens {
        return Response::from_parts(head, body);
    }
    let form = match op {
        Op::Stream if super::is_event_stream(&head.headers) => {
            if client_sse {
                Form::Sse
            } else {
                head.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=UTF-8"),
                );
                Form::Array { opened: false }
            }
        }
        // A stream that came as one JSON answer (no `alt=sse` honoured): taken as a generation.
        Op::Stream | Op::Generate => Form::Json,
        Op::CountTokens => return Response::from_parts(head, body),
    };
    head.headers.remove(header::CONTENT_LENGTH);
    let unwrapping = Unwrapping {
        framer: SseFramer::with_max_event_bytes(MAX_ANSWER_BYTES),
        form,
        whole: BytesMut::new(),
    };
    Response::from_parts(head, super::Converted::body(body, unwrapping))
}

/// The largest answer (or event) unwrapped.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The answer's form for the client.
enum Form {
    /// One JSON answer: read whole, then unwrapped.
    Json,
    /// Server-sent events, one per event that came.
    Sse,
    /// A JSON array of the events' answers; `opened` once its `[` went.
    Array { opened: bool },
}

/// A Code Assist answer's body, unwrapped as it comes.
struct Unwrapping {
    framer: SseFramer,
    form: Form,
    /// A JSON answer read so far.
    whole: BytesMut,
}

impl super::Convert for Unwrapping {
    /// What `data` (a chunk of the answer) completes, in the client's form.
    fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<bool, BoxError> {
        match &mut self.form {
            Form::Json => {
                if self.whole.len() + data.len() > MAX_ANSWER_BYTES {
                    return Err(format!("an answer over {MAX_ANSWER_BYTES} bytes").into());
                }
                self.whole.extend_from_slice(data);
            }
            Form::Sse => self.framer.feed(data, |event| {
                out.extend_from_slice(b"data: ");
                // An answer sent over several `data:` lines goes on one: the line breaks the
                // framer joined them with stand between JSON tokens, where a space does as well.
                let answer = unwrapped(event.data.as_bytes());
                out.extend(answer.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n\r\n");
            }),
            Form::Array { opened } => self.framer.feed(data, |event| {
                out.extend_from_slice(if *opened { b",\r\n" } else { b"[" });
                *opened = true;
                out.extend_from_slice(&unwrapped(event.data.as_bytes()));
            }),
        }
        Ok(false)
    }

    /// What is left when the answer ended.
    fn finish(&mut self, out: &mut BytesMut) -> Result<(), BoxError> {
        if matches!(self.form, Form::Json) {
            out.extend_from_slice(&unwrapped(&self.whole));
            return Ok(());
        }
        // An event the stream did not end with a blank line.
        self.feed(b"\n\n", out)?;
        if let Form::Array { opened } = self.form {
            out.extend_from_slice(if opened { b"]" } else { b"[]" });
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow)]
    response: Option<&'a RawValue>,
    #[serde(borrow, rename = "traceId")]
    trace_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Identified {
    #[serde(rename = "responseId")]
    response_id: Option<IgnoredAny>,
}

/// The Gemini answer inside one Code Assist answer (`{"response": {…}, "traceId": "…"}`): the
/// `response` as it came, with `"responseId": <traceId>` first when it names none (as Gemini
/// CLI reads it). Anything else (an error object) as it came.
fn unwrapped(data: &[u8]) -> Cow<'_, [u8]> {
    let Ok(Wrapped {
        response: Some(response),
        trace_id,
    }) = serde_json::from_slice::<Wrapped<'_>>(data)
    else {
        return Cow::Borrowed(data);
    };
    let inner = response.get();
    let named = serde_json::from_str::<Identified>(inner).is_ok_and(|r| r.response_id.is_some());
    match (trace_id, inner.strip_prefix('{')) {
        (Some(trace), Some(rest)) if !named && trace.get().starts_with('"') => {
            let rest = rest.trim_start();
            let mut out = Vec::with_capacity(inner.len() + trace.get().len() + 16);
            out.extend_from_slice(b"{\"responseId\":");
            out.extend_from_slice(trace.get().as_bytes());
            if !rest.starts_with('}') {
                out.push(b',');
            }
            out.extend_from_slice(rest.as_bytes());
            Cow::Owned(out)
        }
        _ => Cow::Owned(inner.as_bytes().to_vec()),
    }
}

/// What the project could not be had for: the API refusing the login (a 401 or 403, judged as
/// the call's answer would be: a 401 is the token's), or why not (anything else: the account
/// fails this attempt).
pub enum Setup {
    Answer(UpstreamResponse),
    Failed(String),
}

/// How long one setup call may take, and the most of its answer read.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_SETUP_BYTES: usize = 256 * 1024;
/// `onboardUser` is asked again this many times, this long apart, while it is not done.
const ONBOARD_ATTEMPTS: u32 = 5;
const ONBOARD_PAUSE: Duration = Duration::from_secs(2);

/// How long a login's failure to give a project is answered without asking the API again.
const FAILURE_KEPT: Duration = Duration::from_secs(30);
/// How long a project learned is kept whatever the API answers (a 403 about something else, a
/// model the login may not use, does not make every call ask again).
const KEPT_AT_LEAST: Duration = Duration::from_secs(60);

/// What this process learned of a Code Assist login's project ([`project`]): one discovery at
/// a time (`discovery`), its outcome read and written without waiting (`learned`): the project,
/// kept until the API refuses a call made for it ([`ProjectCell::forget`]), or the failure, kept
/// [`FAILURE_KEPT`] so that the requests that waited on it do not each ask again. Shared by the
/// account's later selves for as long as they are the same login (`Account::keep_learned`).
#[derive(Default)]
pub struct ProjectCell {
    learned: std::sync::Mutex<Learned>,
    discovery: tokio::sync::Mutex<()>,
}

#[derive(Default, Clone)]
enum Learned {
    #[default]
    Unknown,
    Known {
        project: String,
        at: Instant,
    },
    Failed {
        why: String,
        at: Instant,
    },
}

impl ProjectCell {
    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The project learned, if any.
    pub fn known(&self) -> Option<String> {
        match &*self.learned() {
            Learned::Known { project, .. } => Some(project.clone()),
            _ => None,
        }
    }

    /// What a call gets without asking the API: the project, or a failure still kept.
    fn settled(&self) -> Option<Result<String, Setup>> {
        match &*self.learned() {
            Learned::Known { project, .. } => Some(Ok(project.clone())),
            Learned::Failed { why, at } if at.elapsed() < FAILURE_KEPT => {
                Some(Err(Setup::Failed(why.clone())))
            }
            _ => None,
        }
    }

    /// Forgets `project`, if it is still the one learned (and was learned a while ago): the API
    /// refused a call made for it (the project gone, the login moved to another tier); the next
    /// call asks again.
    pub fn forget(&self, project: &str) {
        let mut learned = self.learned();
        if let Learned::Known { project: p, at } = &*learned
            && p == project
            && at.elapsed() >= KEPT_AT_LEAST
        {
            tracing::info!(project = %project, "the Code Assist API refused a call for the login's project; asking for it again");
            *learned = Learned::Unknown;
        }
    }
}

/// The Google Cloud project `account`'s calls are made for: its `project`, else the one the API
/// gives the login ([`ProjectCell`]).
pub async fn project(app: &App, account: &Account) -> Result<String, Setup> {
    if let Some(project) = &account.record.project {
        return Ok(project.clone());
    }
    let cell = &account.code_assist;
    if let Some(settled) = cell.settled() {
        return settled;
    }
    let _turn = cell.discovery.lock().await;
    // Another request's discovery may have settled it meanwhile.
    if let Some(settled) = cell.settled() {
        return settled;
    }
    let found = discover(app, account).await;
    let at = Instant::now();
    match &found {
        Ok(project) => {
            *cell.learned() = Learned::Known {
                project: project.clone(),
                at,
            };
        }
        Err(Setup::Failed(why)) => {
            *cell.learned() = Learned::Failed {
                why: why.clone(),
                at,
            };
        }
        // The login refused (a 401 is renewed): asked again at the next call.
        Err(Setup::Answer(_)) => {}
    }
    found
}

/// The client's metadata the setup calls carry, as Gemini CLI sends it.
fn metadata() -> Value {
    json!({ "ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI" })
}

/// The login's project: the one `loadCodeAssist` names, else the one `onboardUser` sets the
/// login up with on its default tier.
async fn discover(app: &App, account: &Account) -> Result<String, Setup> {
    let loaded = setup_call(
        app,
        account,
        "loadCodeAssist",
        json!({ "metadata": metadata() }),
    )
    .await?;
    if let Some(project) = project_id(&loaded["cloudaicompanionProject"]) {
        tracing::info!(account_id = %account.id(), project = %project, "the Code Assist API named the login's project");
        return Ok(project);
    }
    // Google's reasons go to the log, for the admin; the client is told what to ask for.
    let needs_project = |why: &str| {
        let reasons: Vec<&str> = loaded["ineligibleTiers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["reasonMessage"].as_str())
            .collect();
        tracing::warn!(account_id = %account.id(), why, reasons = %reasons.join("; "), "the Google login has no Code Assist project: set the account's `project`");
        Setup::Failed(format!(
            "the account's Google login has no Code Assist project ({why}): an admin must set \
             the account's `project` to a Google Cloud project it may use"
        ))
    };
    if loaded.get("currentTier").is_some_and(|t| !t.is_null()) {
        return Err(needs_project("its tier takes the user's own"));
    }
    let tier = loaded["allowedTiers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["isDefault"].as_bool() == Some(true));
    let Some(tier) = tier else {
        return Err(needs_project("no tier is open to it"));
    };
    if tier["userDefinedCloudaicompanionProject"].as_bool() == Some(true) {
        return Err(needs_project("its tier takes the user's own"));
    }
    let Some(tier_id) = tier["id"].as_str() else {
        return Err(needs_project("its default tier has no id"));
    };
    let onboard = json!({ "tierId": tier_id, "metadata": metadata() });
    for attempt in 0..ONBOARD_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(ONBOARD_PAUSE).await;
        }
        let operation = setup_call(app, account, "onboardUser", onboard.clone()).await?;
        if operation["done"].as_bool() != Some(true) {
            continue;
        }
        return match project_id(&operation["response"]["cloudaicompanionProject"]) {
            Some(project) => {
                tracing::info!(account_id = %account.id(), project = %project, tier = %tier_id, "set the Google login up for Code Assist");
                Ok(project)
            }
            None => Err(needs_project("setting it up gave none")),
        };
    }
    Err(Setup::Failed(
        "the Google login is being set up for Code Assist; try again shortly".to_owned(),
    ))
}

/// A project as the API names it: its id, or an object holding it (`{"id": …}`).
fn project_id(value: &Value) -> Option<String> {
    value
        .as_str()
        .or_else(|| value["id"].as_str())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// One setup call (`POST {base}/v1internal:{method}`): its JSON answer, or the answer that was
/// not a success.
async fn setup_call(
    app: &App,
    account: &Account,
    method: &str,
    body: Value,
) -> Result<Value, Setup> {
    let url = super::join(
        &account.record.base_url,
        &format!("/{VERSION}:{method}"),
        None,
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(bearer) = &account.oauth_bearer {
        headers.insert(header::AUTHORIZATION, bearer.clone());
    }
    let send = app.http_via(account.proxy.as_deref()).send(
        http::Method::POST,
        url,
        headers,
        Bytes::from(body.to_string()),
    );
    let resp = match tokio::time::timeout(SETUP_TIMEOUT, send).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            return Err(Setup::Failed(format!(
                "Code Assist's {method} failed: {}",
                e.message
            )));
        }
        Err(_) => {
            return Err(Setup::Failed(format!(
                "Code Assist's {method} did not answer within {} s",
                SETUP_TIMEOUT.as_secs()
            )));
        }
    };
    let status = resp.status();
    if matches!(status.as_u16(), 401 | 403) {
        return Err(Setup::Answer(resp));
    }
    let body = read_capped(resp.into_body(), MAX_SETUP_BYTES, SETUP_TIMEOUT).await;
    if !status.is_success() {
        // A limit or fault of the setup call is the login's, not the model's: not handed on
        // as the call's own answer (a 429 would rest one model only).
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(Setup::Failed(format!(
            "Code Assist's {method} answered {status} {message}"
        )));
    }
    serde_json::from_slice(&body).map_err(|_| {
        Setup::Failed(format!(
            "Code Assist's {method} answered {status} with no JSON"
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
