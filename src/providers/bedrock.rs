//! Amazon Bedrock: Claude models for Anthropic clients, through `bedrock-runtime`.
//!
//! A Messages request becomes `POST {base}/model/{model id}/invoke`
//! (`invoke-with-response-stream` when streamed; `count-tokens` for a token count) with the body
//! less `model` and `stream`, plus `anthropic_version` and the client's `anthropic-beta` header
//! as `anthropic_beta`. It is signed with SigV4 when the account has an access key id (the api
//! key is then the secret access key), else the api key is a Bedrock API key, sent as a bearer
//! token.
//!
//! The answer is made Anthropic's before anything else reads it ([`answer`]): a stream's binary
//! event-stream frames become the SSE events they carry, an error becomes Anthropic's error JSON
//! with the status its kind stands for (a throttle 429, an unavailable model 529, a refused
//! credential 401), a token count `{"input_tokens": n}`. From there on, the relay handles a
//! Bedrock answer as an Anthropic one: usage, failover on the first event, health.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue as FrameHeader, Message};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::BoxError;
use crate::catalog::Account;
use crate::upstream_client::{UpstreamBody, UpstreamResponse, read_capped};

/// The `anthropic_version` Bedrock's Claude models take in the body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The betas Bedrock's Claude models take (AWS's documentation): any other in the body fails the
/// request with "invalid beta flag", and Anthropic's clients send many (Claude Code sends
/// `claude-code-20250219`, `prompt-caching-scope-…` and others on every request).
const BETAS: [&str; 11] = [
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "tool-search-tool-2025-10-19",
    "tool-examples-2025-10-29",
];

/// The SigV4 service name.
const SERVICE: &str = "bedrock";

/// An error body is read up to this size; the rest is not needed to say what went wrong.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How long an error or token-count body may take once its head came.
const SMALL_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The region's runtime endpoint.
pub fn default_base_url(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// What a request asks of Bedrock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Invoke,
    InvokeStream,
    CountTokens,
}

impl Operation {
    /// The operation for an Anthropic path: Messages and its token count only.
    pub fn of(path: &str, stream: bool) -> Option<Operation> {
        match path {
            "/v1/messages" if stream => Some(Operation::InvokeStream),
            "/v1/messages" => Some(Operation::Invoke),
            "/v1/messages/count_tokens" => Some(Operation::CountTokens),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Operation::Invoke => "invoke",
            Operation::InvokeStream => "invoke-with-response-stream",
            Operation::CountTokens => "count-tokens",
        }
    }
}

/// The Bedrock model id for a model name: the account's own (`deployments`: an inference
/// profile such as `us.anthropic.claude-sonnet-4-5-20250929-v1:0`, or its ARN), a name that is
/// already a Bedrock id (it has a dot or is an ARN), else the cross-region inference profile of
/// the account's geography, `<geo>.anthropic.<model>-v1:0` (Claude 4 models take no on-demand
/// call by their bare id).
pub fn model_id<'a>(account: &'a Account, model: &'a str) -> Cow<'a, str> {
    if let Some(id) = account.record.deployments.get(model) {
        return Cow::Borrowed(id);
    }
    if model.contains('.') || model.starts_with("arn:") {
        return Cow::Borrowed(model);
    }
    let region = account.record.region.as_deref().unwrap_or_default();
    Cow::Owned(format!("{}anthropic.{model}-v1:0", geography(region)))
}

/// The prefix of a region's cross-region inference profiles.
fn geography(region: &str) -> &'static str {
    [
        ("us-gov-", "us-gov."),
        ("us-", "us."),
        ("eu-", "eu."),
        ("ap-", "apac."),
    ]
    .iter()
    .find(|(start, _)| region.starts_with(start))
    .map_or("global.", |(_, geo)| geo)
}

/// The model id a token count goes to: a token count takes the model, not a cross-region
/// profile (`us.anthropic.…` counts as `anthropic.…`).
fn counted_model(id: &str) -> &str {
    ["us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "global."]
        .iter()
        .find_map(|geo| id.strip_prefix(geo))
        .filter(|rest| rest.starts_with("anthropic."))
        .unwrap_or(id)
}

/// `{base}/model/{model id}/{operation}`, the id percent-encoded (`:` and an ARN's `/`).
pub fn upstream_url(account: &Account, op: Operation, model: &str) -> String {
    let id = model_id(account, model);
    let id = match op {
        Operation::CountTokens => counted_model(&id),
        Operation::Invoke | Operation::InvokeStream => &id,
    };
    let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!(
        "{}/model/{id}/{}",
        account.record.base_url.trim_end_matches('/'),
        op.path()
    )
}

/// The Bedrock body for an Anthropic Messages (or count_tokens) body, with the client's betas
/// that Bedrock takes ([`BETAS`]) unless `with_betas` is false; `None` when it is not a JSON object
/// (the relay read it already, so it is).
pub fn request_body(
    body: &[u8],
    client: &HeaderMap,
    op: Operation,
    with_betas: bool,
) -> Option<Bytes> {
    let mut map: Map<String, Value> = serde_json::from_slice(body).ok()?;
    map.remove("model");
    map.remove("stream");
    map.entry("anthropic_version")
        .or_insert_with(|| json!(ANTHROPIC_VERSION));
    let betas: Vec<Value> = super::anthropic::client_betas(client)
        .filter(|b| BETAS.contains(b))
        .map(|b| json!(b))
        .collect();
    if with_betas && !betas.is_empty() {
        map.entry("anthropic_beta")
            .or_insert_with(|| Value::Array(betas));
    }
    if !with_betas {
        // And the field that needs a beta (Claude Code sends it on every request).
        map.remove("anthropic_beta");
        map.remove("context_management");
    }
    if op == Operation::CountTokens {
        // The count takes an invocation's body, which needs a `max_tokens` (above a thinking
        // budget).
        let budget = map
            .get("thinking")
            .and_then(|t| t.get("budget_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        map.entry("max_tokens")
            .or_insert_with(|| json!(budget.saturating_add(1)));
        let invocation = serde_json::to_vec(&map).ok()?;
        let body = base64::engine::general_purpose::STANDARD.encode(invocation);
        let wrapped = json!({ "input": { "invokeModel": { "body": body } } });
        return serde_json::to_vec(&wrapped).ok().map(Bytes::from);
    }
    serde_json::to_vec(&map).ok().map(Bytes::from)
}

/// The request's headers: its content type, what it accepts, and its credentials (a SigV4
/// signature over the URL and body, or the Bedrock API key). The client's headers are not
/// forwarded: Bedrock takes nothing of them but the betas, which go in the body.
pub fn upstream_headers(
    account: &Account,
    op: Operation,
    url: &str,
    body: &[u8],
) -> Result<HeaderMap, String> {
    headers_at(account, op, url, body, SystemTime::now())
}

/// [`upstream_headers`] signed at `time`.
fn headers_at(
    account: &Account,
    op: Operation,
    url: &str,
    body: &[u8],
    time: SystemTime,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let accept = match op {
        Operation::InvokeStream => EVENT_STREAM,
        Operation::Invoke | Operation::CountTokens => "application/json",
    };
    headers.insert(ACCEPT, HeaderValue::from_static(accept));
    match &account.record.aws_access_key_id {
        Some(access_key_id) => {
            sign_v4(account, access_key_id, url, body, time, &mut headers)?;
        }
        None => {
            let key = account
                .api_key
                .to_str()
                .map_err(|_| "the Bedrock API key is not valid text".to_owned())?;
            let mut bearer = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "the Bedrock API key is not valid in a header".to_owned())?;
            bearer.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
        }
    }
    Ok(headers)
}

/// Adds the SigV4 headers (`x-amz-date`, `authorization`) for a POST of `body` to `url`.
fn sign_v4(
    account: &Account,
    access_key_id: &str,
    url: &str,
    body: &[u8],
    time: SystemTime,
    headers: &mut HeaderMap,
) -> Result<(), String> {
    let secret = account
        .api_key
        .to_str()
        .map_err(|_| "the secret access key is not valid text".to_owned())?;
    let region = account.record.region.as_deref().unwrap_or_default();
    let identity = Credentials::new(access_key_id, secret, None, None, "switchyard").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing the request: {e}"))?
        .into();
    let signed: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let request = SignableRequest::new("POST", url, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| format!("signing the request: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("signing the request: {e}"))?
        .into_parts();
    let mut added = Vec::new();
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let mut value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        value.set_sensitive(name == AUTHORIZATION);
        added.push((name, value));
    }
    headers.extend(added);
    Ok(())
}

/// Whether an error's message (from [`answer`]) refuses a beta the body named: Bedrock takes
/// fewer on some models than on others.
pub fn refuses_a_beta(error: Option<&str>) -> bool {
    error.is_some_and(|message| message.contains("invalid beta flag"))
}

/// Bedrock's answer as Anthropic's (see the module's documentation), and an error's message.
pub async fn answer(resp: UpstreamResponse, op: Operation) -> (UpstreamResponse, Option<String>) {
    let (mut head, body) = resp.into_parts();
    if !head.status.is_success() {
        let kind = head
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let bytes = read_small(body).await;
        let message = error_message(&bytes);
        let (status, body) = anthropic_error(head.status, kind.as_deref(), &message);
        head.status = status;
        return (super::json_answer(head, &body), Some(message));
    }
    let resp = match op {
        Operation::Invoke => Response::from_parts(head, body),
        Operation::CountTokens => {
            let bytes = read_small(body).await;
            let count = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("inputTokens").and_then(Value::as_u64));
            let body = match count {
                Some(n) => json!({ "input_tokens": n }),
                None => {
                    head.status = StatusCode::BAD_GATEWAY;
                    upstream_fault("Bedrock answered a token count without `inputTokens`")
                }
            };
            super::json_answer(head, &body)
        }
        Operation::InvokeStream => {
            let content_type = head
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !content_type.starts_with(EVENT_STREAM) {
                // Not a stream of frames (a proxy's page, a JSON answer): nothing to convert,
                // nor to buffer waiting for a frame's end.
                let message =
                    format!("Bedrock answered a stream with content type {content_type:?}");
                head.status = StatusCode::BAD_GATEWAY;
                return (
                    super::json_answer(head, &upstream_fault(&message)),
                    Some(message),
                );
            }
            head.headers.remove(CONTENT_LENGTH);
            head.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            let sse = EventStreamToSse {
                buffer: BytesMut::new(),
                decoder: MessageFrameDecoder::new(),
                in_frame: false,
                ended: false,
            };
            Response::from_parts(head, super::Converted::body(body, sse))
        }
    };
    (resp, None)
}

/// An `api_error` of the relay's: what Bedrock answered cannot be read as an answer.
fn upstream_fault(message: &str) -> Value {
    json!({ "type": "error", "error": { "type": "api_error", "message": message } })
}

/// A small body (an error, a token count), within a time and a size.
async fn read_small(body: UpstreamBody) -> Bytes {
    read_capped(body, MAX_ERROR_BYTES, SMALL_BODY_TIMEOUT).await
}

/// The message of a Bedrock error body (`{"message": …}`, some services `{"Message": …}`).
fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect())
}

/// Anthropic's error type for a Bedrock error kind (`ThrottlingException`; in a stream
/// `throttlingException`) and message, else for the status.
fn anthropic_kind(status: StatusCode, kind: Option<&str>, message: &str) -> &'static str {
    let kind = kind.unwrap_or_default();
    let is = |name: &str| kind.eq_ignore_ascii_case(name);
    let says = |words: &str| message.to_ascii_lowercase().contains(words);
    if is("ValidationException")
        && (says("on-demand throughput") || says("model identifier is invalid"))
    {
        // A model this account cannot call so (it needs an inference profile, or has none):
        // another account may serve it.
        "permission_error"
    } else if is("ValidationException") {
        "invalid_request_error"
    } else if is("AccessDeniedException") {
        "permission_error"
    } else if is("InvalidSignatureException") && (says("expired") || says("not yet current")) {
        // The relay's clock, not the credential: transient, not a refused key.
        "api_error"
    } else if [
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    ]
    .iter()
    .any(|k| is(k))
    {
        "authentication_error"
    } else if is("ResourceNotFoundException") {
        "not_found_error"
    } else if [
        "ThrottlingException",
        "ServiceQuotaExceededException",
        "TooManyRequestsException",
    ]
    .iter()
    .any(|k| is(k))
    {
        "rate_limit_error"
    } else if is("ServiceUnavailableException") || is("ModelNotReadyException") {
        "overloaded_error"
    } else if is("ModelTimeoutException") {
        "timeout_error"
    } else {
        match status.as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            _ => "api_error",
        }
    }
}

/// An Anthropic error body, and the status its type stands for.
fn anthropic_error(status: StatusCode, kind: Option<&str>, message: &str) -> (StatusCode, Value) {
    let kind = anthropic_kind(status, kind, message);
    let body = json!({ "type": "error", "error": { "type": kind, "message": message } });
    let status = super::anthropic::error_status(body.to_string().as_bytes()).unwrap_or(status);
    (status, body)
}

/// The content type of Bedrock's streamed answers.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// The largest frame of an event stream (its specification's limit): a prelude announcing more
/// is not a frame, and nothing more is buffered waiting for its end.
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// A stream's event-stream frames as the SSE events they carry: each `chunk` event's payload,
/// `{"bytes": "<base64 of an Anthropic event>"}`, becomes `event: <its type>` and `data: <it>`;
/// an exception becomes an Anthropic `error` event, after which the stream ends.
struct EventStreamToSse {
    buffer: BytesMut,
    decoder: MessageFrameDecoder,
    /// A frame is under way: its prelude was checked (the decoder may hold it already).
    in_frame: bool,
    /// An exception ended the stream.
    ended: bool,
}

impl super::Convert for EventStreamToSse {
    /// The SSE of every whole frame in the buffer, with `data` added.
    fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<bool, BoxError> {
        self.buffer.extend_from_slice(data);
        while !self.ended && self.next_frame(out)? {}
        Ok(self.ended)
    }

    fn finish(&mut self, _: &mut BytesMut) -> Result<(), BoxError> {
        if !self.buffer.is_empty() || self.in_frame {
            return Err("the event stream ended inside a frame".into());
        }
        Ok(())
    }
}

impl EventStreamToSse {
    /// Converts the next frame when the buffer holds it whole; `Ok(false)` while it waits for
    /// the rest. A frame's prelude is checked before anything of it is buffered.
    fn next_frame(&mut self, out: &mut BytesMut) -> Result<bool, BoxError> {
        if !self.in_frame {
            let Some(prelude) = self.buffer.get(..12) else {
                return Ok(false);
            };
            checked_prelude(prelude)?;
            self.in_frame = true;
        }
        match self.decoder.decode_frame(&mut self.buffer)? {
            DecodedFrame::Complete(message) => {
                self.in_frame = false;
                self.ended = sse_of(&message, out)?;
                Ok(true)
            }
            DecodedFrame::Incomplete => Ok(false),
        }
    }
}

/// A frame's prelude (total length, headers length, CRC of the two), checked: its length.
fn checked_prelude(prelude: &[u8]) -> Result<usize, BoxError> {
    let word = |at: usize| {
        prelude
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_be_bytes)
    };
    let (total, headers, crc) = (word(0) as usize, word(4) as usize, word(8));
    if crc32fast::hash(prelude.get(..8).unwrap_or_default()) != crc {
        return Err(
            "the event stream is not made of frames (a prelude's checksum is wrong)".into(),
        );
    }
    // Prelude (12) + headers + message CRC (4) at least.
    if total > MAX_FRAME_BYTES || total < 16 + headers {
        return Err(format!("an event-stream frame of {total} bytes").into());
    }
    Ok(total)
}

/// Writes the SSE event `message` stands for; `true` when it ends the stream (an exception).
fn sse_of(message: &Message, out: &mut BytesMut) -> Result<bool, BoxError> {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| match h.value() {
                FrameHeader::String(s) => Some(s.as_str()),
                _ => None,
            })
    };
    match header(":message-type") {
        Some("event") => {
            if header(":event-type") != Some("chunk") {
                return Ok(false);
            }
            #[derive(serde::Deserialize)]
            struct Chunk {
                bytes: String,
            }
            let chunk: Chunk = serde_json::from_slice(message.payload())?;
            let event = base64::engine::general_purpose::STANDARD.decode(chunk.bytes)?;
            #[derive(serde::Deserialize)]
            struct Typed<'a> {
                #[serde(rename = "type", borrow)]
                kind: Cow<'a, str>,
            }
            let typed: Typed<'_> = serde_json::from_slice(&event)?;
            // Written into the SSE framing: nothing in them may break it.
            if !typed
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                return Err("an event Bedrock streamed has a type SSE cannot carry".into());
            }
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(typed.kind.as_bytes());
            out.extend_from_slice(b"\ndata: ");
            if event.contains(&b'\n') || event.contains(&b'\r') {
                // JSON written over several lines: on one.
                let value: Value = serde_json::from_slice(&event)?;
                out.extend_from_slice(value.to_string().as_bytes());
            } else {
                out.extend_from_slice(&event);
            }
            out.extend_from_slice(b"\n\n");
            Ok(false)
        }
        Some("exception") | Some("error") => {
            let kind = header(":exception-type").or_else(|| header(":error-code"));
            let text = match header(":error-message") {
                Some(text) => text.to_owned(),
                None => error_message(message.payload()),
            };
            let kind = anthropic_kind(StatusCode::INTERNAL_SERVER_ERROR, kind, &text);
            out.extend_from_slice(&super::anthropic::typed_error_event(kind, &text));
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
