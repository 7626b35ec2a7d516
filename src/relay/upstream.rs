//! Sending one attempt upstream, and what a failed attempt leaves for the client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;

use super::call::{Call, Respond, Target, Unread, WholeAnswer};
use super::respond;
use crate::app::App;
use crate::body::Body;
use crate::catalog::Account;
use crate::error::{ApiError, ErrorKind};
use crate::metrics as m;
use crate::providers::{self, anthropic, azure, gemini, openai};
use crate::store::Provider;
use crate::upstream_client::{UpstreamError, UpstreamResponse};

/// The URL and headers of `call` for `account`, in its vendor's convention.
fn request_for(
    call: &Call,
    client: &http::HeaderMap,
    account: &Account,
) -> Option<(String, http::HeaderMap)> {
    let query = call.query.as_deref();
    Some(match (&call.target, account.record.provider) {
        (Target::Anthropic { path }, Provider::Anthropic) => (
            anthropic::upstream_url(account, path, query),
            anthropic::upstream_headers(client, account),
        ),
        (Target::OpenAi { path }, Provider::OpenAi) => (
            openai::upstream_url(account, path, query),
            openai::upstream_headers(client, account),
        ),
        (Target::OpenAi { path }, Provider::AzureOpenAi) => (
            azure::upstream_url(account, path, call.model.as_deref()),
            azure::upstream_headers(client, account),
        ),
        (Target::Gemini { version, path }, Provider::Gemini) => (
            gemini::upstream_url(account, version, path, query),
            gemini::upstream_headers(client, account),
        ),
        // The scheduler only offers accounts of the call's protocol.
        _ => return None,
    })
}

/// Sends the request to one account, waiting at most the first-byte timeout for the head (the
/// answer timeout for an answer that is not streamed, whose head comes when it is whole; and,
/// for a call that takes its answer whole, the read timeout for the rest). The response, and
/// when its head came.
pub(super) async fn send(
    app: &App,
    call: &Call,
    client: &http::HeaderMap,
    account: &Account,
) -> Result<(UpstreamResponse, Instant), SendError> {
    let Some((url, headers)) = request_for(call, client, account) else {
        return Err(SendError::Mismatch(account.record.provider));
    };
    let first_byte = call.first_byte_timeout.unwrap_or_else(|| {
        let upstream = &app.config.upstream;
        // Only a generation waits long for its head: a model list or a token count is quick.
        Duration::from_secs(if call.streams || !call.billed() {
            upstream.first_byte_timeout_secs
        } else {
            upstream
                .answer_timeout_secs
                .max(upstream.first_byte_timeout_secs)
        })
    });
    let body = match (&call.respond, &call.target, account.record.provider) {
        // Azure api-versions before 2024-09 refuse `stream_options`: such an account gets the
        // client's body as it was (its stream then carries no usage to bill).
        (Respond::HideUsageChunk, _, Provider::AzureOpenAi)
            if !azure::takes_stream_options(account) =>
        {
            call.client_body.clone()
        }
        // Azure's Responses API takes the deployment as the model.
        (_, Target::OpenAi { path }, Provider::AzureOpenAi) if path.starts_with("/responses") => {
            azure::responses_body(account, &call.body, call.model.as_deref())
                .unwrap_or_else(|| call.body.clone())
        }
        _ => call.body.clone(),
    };
    let send = app.http().send(call.method.clone(), url, headers, body);
    let resp = match tokio::time::timeout(first_byte, send).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(SendError::Failed(e)),
        Err(_) => return Err(SendError::Timeout(first_byte)),
    };
    let head_at = Instant::now();
    let resp = match call.whole_answer {
        Some(whole) if resp.status().is_success() => read_whole(resp, whole).await?,
        _ => resp,
    };
    Ok((resp, head_at))
}

/// Reads a successful answer whole, and hands it on as a response with that body in memory.
async fn read_whole(
    resp: UpstreamResponse,
    whole: WholeAnswer,
) -> Result<UpstreamResponse, SendError> {
    let (why, timed_out) = match whole.read(resp).await {
        Ok((head, body)) => {
            let body = http_body_util::Either::Right(crate::body::full(body));
            return Ok(Response::from_parts(head, body));
        }
        Err(Unread::TooLarge) => (
            format!("its answer is larger than {} bytes", whole.max_bytes),
            false,
        ),
        Err(Unread::Cut(e)) => (format!("its answer was cut: {e}"), false),
        Err(Unread::TimedOut) => (
            format!(
                "its answer did not arrive whole within {} s",
                whole.within.as_secs()
            ),
            true,
        ),
    };
    Err(SendError::Unfinished { why, timed_out })
}

/// An upstream attempt that produced no response head.
pub(super) enum SendError {
    Failed(UpstreamError),
    Timeout(Duration),
    /// A head came, but an answer taken whole (`Call::whole_answer`) did not: why, and whether
    /// for lack of time.
    Unfinished {
        why: String,
        timed_out: bool,
    },
    /// The account does not speak the call's protocol (a scheduler bug; never retried).
    Mismatch(Provider),
}

impl SendError {
    pub(super) fn describe(&self) -> String {
        match self {
            SendError::Timeout(limit) => format!("no response within {} s", limit.as_secs()),
            SendError::Failed(e) => format!("request failed: {}", e.message),
            SendError::Unfinished { why, .. } => why.clone(),
            SendError::Mismatch(p) => format!("a {} account cannot serve this", p.as_str()),
        }
    }

    pub(super) fn into_api_error(self) -> ApiError {
        match self {
            SendError::Mismatch(p) => ApiError::internal(format!(
                "a {} account was chosen for a request it cannot serve",
                p.as_str()
            )),
            SendError::Failed(e) => {
                metrics::counter!(m::UPSTREAM_ERRORS, "reason" => e.reason).increment(1);
                // The message names the URL without its query (the account's base URL, not a
                // secret) and the cause.
                ApiError::new(
                    ErrorKind::BadGateway,
                    format!("the upstream request failed ({}): {}", e.reason, e.message),
                )
            }
            SendError::Unfinished { why, timed_out } => {
                let (reason, kind) = if timed_out {
                    ("read_timeout", ErrorKind::GatewayTimeout)
                } else {
                    ("unfinished_answer", ErrorKind::BadGateway)
                };
                metrics::counter!(m::UPSTREAM_ERRORS, "reason" => reason).increment(1);
                ApiError::new(kind, format!("the upstream failed: {why}"))
            }
            SendError::Timeout(limit) => {
                metrics::counter!(m::UPSTREAM_ERRORS, "reason" => "first_byte_timeout")
                    .increment(1);
                ApiError::new(
                    ErrorKind::GatewayTimeout,
                    format!("the upstream sent no response within {} s", limit.as_secs()),
                )
            }
        }
    }
}

/// What a failed attempt left, to hand to the client if no other account can do better.
pub(super) enum Failure {
    Response(Buffered),
    Error(ApiError),
}

/// An upstream error answer, read whole (error bodies are small; at most `MAX_ERROR_BODY`).
pub(super) struct Buffered {
    pub(super) status: http::StatusCode,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Bytes,
}

const MAX_ERROR_BODY: usize = 64 * 1024;

pub(super) async fn buffer_failure(resp: UpstreamResponse) -> Buffered {
    let (head, upstream_body) = resp.into_parts();
    let status = head.status;
    let mut headers = providers::response_headers(head.headers);
    let mut body = Vec::new();
    let mut stream = http_body_util::BodyDataStream::new(upstream_body);
    let read = async {
        while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut stream).await {
            let room = MAX_ERROR_BODY.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    headers.remove(http::header::CONTENT_LENGTH);
    Buffered {
        status,
        headers,
        body: Bytes::from(body),
    }
}

/// An attempt's answer: its head with the body still to come, or, for the statuses whose
/// verdict reads the body (`health::reads_body`), read whole.
pub(super) enum Answer {
    Head(UpstreamResponse),
    Read(Buffered),
}

impl Answer {
    pub(super) async fn of(resp: UpstreamResponse) -> Answer {
        if crate::scheduler::health::reads_body(resp.status().as_u16()) {
            Answer::Read(buffer_failure(resp).await)
        } else {
            Answer::Head(resp)
        }
    }

    pub(super) fn status(&self) -> http::StatusCode {
        match self {
            Answer::Head(r) => r.status(),
            Answer::Read(b) => b.status,
        }
    }

    pub(super) fn headers(&self) -> &http::HeaderMap {
        match self {
            Answer::Head(r) => r.headers(),
            Answer::Read(b) => &b.headers,
        }
    }

    /// The body when it was read; empty otherwise.
    pub(super) fn body(&self) -> &[u8] {
        match self {
            Answer::Head(_) => &[],
            Answer::Read(b) => &b.body,
        }
    }

    /// The answer for the client, its body the bytes read when they were.
    pub(super) fn into_response(self) -> UpstreamResponse {
        match self {
            Answer::Head(r) => r,
            Answer::Read(b) => {
                let mut resp =
                    Response::new(http_body_util::Either::Right(crate::body::full(b.body)));
                *resp.status_mut() = b.status;
                *resp.headers_mut() = b.headers;
                resp
            }
        }
    }

    /// What a failed attempt leaves for the client: the answer read whole.
    pub(super) async fn into_failure(self) -> Buffered {
        match self {
            Answer::Head(r) => buffer_failure(r).await,
            Answer::Read(b) => b,
        }
    }
}

impl Failure {
    /// The failure as the client's answer: an upstream error as it was (translated when the
    /// client speaks another protocol), or Switchyard's own error.
    pub(super) fn respond(self, call: &Call) -> Result<Response<Body>, ApiError> {
        match self {
            Failure::Error(e) => Err(e),
            Failure::Response(b) => {
                let (headers, body) =
                    respond::error_body(&call.respond, b.status, b.headers, b.body);
                let mut resp = Response::new(crate::body::full(body));
                *resp.status_mut() = b.status;
                *resp.headers_mut() = headers;
                Ok(resp)
            }
        }
    }
}
