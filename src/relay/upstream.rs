//! Sending one attempt upstream, and what a failed attempt leaves for the client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;

use super::call::{Call, Respond, Target, Unread, UsageKind, WholeAnswer};
use super::respond;
use crate::app::App;
use crate::body::Body;
use crate::catalog::Account;
use crate::error::{ApiError, ErrorKind};
use crate::metrics as m;
use crate::providers::{
    self, anthropic, azure, bedrock, chatgpt, code_assist, gemini, json_fields, openai,
};
use crate::scheduler::health::Outcome;
use crate::store::Provider;
use crate::upstream_client::{UpstreamError, UpstreamResponse, read_capped};
use http_body_util::BodyExt;

/// The URL and headers of `call` for `account`, in its vendor's convention.
/// `model`: the account's name for the call's model, when its model map renames it.
fn request_for(
    call: &Call,
    client: &http::HeaderMap,
    account: &Account,
    model: Option<&str>,
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
        (Target::OpenAi { path }, Provider::ChatGpt) => (
            chatgpt::upstream_url(account, path),
            chatgpt::upstream_headers(client, account),
        ),
        (Target::OpenAi { path }, Provider::AzureOpenAi) => (
            azure::upstream_url(account, path, call.model.as_deref()),
            azure::upstream_headers(client, account),
        ),
        (Target::Gemini { version, path }, Provider::Gemini) => (
            gemini::upstream_url(account, version, &gemini::model_path(path, model), query),
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
    match account.record.provider {
        Provider::Bedrock => return send_bedrock(app, call, client, account).await,
        Provider::CodeAssist => return send_code_assist(app, call, client, account).await,
        _ => {}
    }
    // What the account's vendor calls the model, when its model map renames it.
    let model = account.upstream_model(call.model.as_deref());
    let Some((url, headers)) = request_for(call, client, account, model) else {
        return Err(SendError::Mismatch(account.record.provider));
    };
    // A generation the client did not stream, for the Codex backend, which answers only as a
    // stream: it goes as one, and its answer is made whole.
    let made_whole = matches!(
        (&call.target, account.record.provider),
        (Target::OpenAi { path }, Provider::ChatGpt) if chatgpt::streams_for_client(path, call.streams)
    );
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
        // The Codex backend keeps nothing (it refuses a request that asks it to), and answers
        // only as a stream.
        (_, _, Provider::ChatGpt) => {
            let stores = matches!(
                call.usage,
                Some(UsageKind::OpenAiResponses { stored: true })
            );
            chatgpt::request_body(&call.body, stores, made_whole, model)
                .unwrap_or_else(|| call.body.clone())
        }
        (_, Target::Gemini { path, .. }, Provider::Gemini) if model.is_some() => model
            .and_then(|model| gemini::renamed_body(path, &call.body, model))
            .unwrap_or_else(|| call.body.clone()),
        (_, Target::Anthropic { .. } | Target::OpenAi { .. }, _) if model.is_some() => {
            let model = serde_json::Value::from(model);
            json_fields::with_fields(&call.body, &[("model", model)])
                .unwrap_or_else(|| call.body.clone())
        }
        _ => call.body.clone(),
    };
    let sent_at = Instant::now();
    let sent = send_within(app, call, account, call.method.clone(), url, headers, body);
    let (mut resp, mut head_at) = sent.await?;
    // Made whole within what is left of the answer's time (its head comes then, as a JSON
    // answer's would).
    if made_whole {
        let within = Duration::from_secs(app.config.upstream.answer_timeout_secs)
            .saturating_sub(sent_at.elapsed());
        resp = chatgpt::whole_answer(resp, within).await;
        head_at = Instant::now();
    }
    Ok((take_whole(call, resp).await?, head_at))
}

/// Sends one request of `call`'s to `account` (through its proxy, if it has one), waiting at
/// most the first-byte timeout for its head (the answer timeout for an answer that is not
/// streamed): the response, and when its head came.
async fn send_within(
    app: &App,
    call: &Call,
    account: &Account,
    method: http::Method,
    url: String,
    headers: http::HeaderMap,
    body: Bytes,
) -> Result<(UpstreamResponse, Instant), SendError> {
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
    let send = app
        .http_via(account.proxy.as_deref())
        .send(method, url, headers, body);
    match tokio::time::timeout(first_byte, send).await {
        Ok(Ok(resp)) => Ok((resp, Instant::now())),
        Ok(Err(e)) => Err(SendError::Failed(e)),
        Err(_) => Err(SendError::Timeout(first_byte)),
    }
}

/// The answer as the caller takes it: read whole first when `call` takes a successful one so.
async fn take_whole(call: &Call, resp: UpstreamResponse) -> Result<UpstreamResponse, SendError> {
    match call.whole_answer {
        Some(whole) if resp.status().is_success() => read_whole(resp, whole).await,
        _ => Ok(resp),
    }
}

/// [`send`] to a Bedrock account: the Anthropic call as Bedrock's operation, and its answer as
/// Anthropic's (`providers::bedrock`), before anything reads it.
async fn send_bedrock(
    app: &App,
    call: &Call,
    client: &http::HeaderMap,
    account: &Account,
) -> Result<(UpstreamResponse, Instant), SendError> {
    let op = match &call.target {
        Target::Anthropic { path } => bedrock::Operation::of(path, call.streams),
        _ => None,
    };
    let (Some(op), Some(model)) = (op, call.model.as_deref()) else {
        return Err(SendError::Mismatch(account.record.provider));
    };
    let url = bedrock::upstream_url(account, op, model);
    let mut with_betas = !account.refuses_betas.contains(model);
    loop {
        let body = bedrock::request_body(&call.body, client, op, with_betas)
            .unwrap_or_else(|| call.body.clone());
        let headers = bedrock::upstream_headers(account, op, &url, &body).map_err(|why| {
            SendError::Unfinished {
                why,
                timed_out: false,
            }
        })?;
        let sent = send_within(
            app,
            call,
            account,
            http::Method::POST,
            url.clone(),
            headers,
            body,
        );
        let (resp, head_at) = sent.await?;
        let (resp, error) = bedrock::answer(resp, op).await;
        // Some models take fewer betas than others: once more without them.
        if with_betas && bedrock::refuses_a_beta(error.as_deref()) {
            account.refuses_betas.insert(model.to_owned());
            with_betas = false;
            continue;
        }
        return Ok((take_whole(call, resp).await?, head_at));
    }
}

/// [`send`] to a Code Assist account: the Gemini call wrapped for the Code Assist API, for the
/// login's project, and its answer unwrapped (`providers::code_assist`) before anything reads
/// it. An answer refusing the project's setup is the attempt's answer (a 401 is the token's).
async fn send_code_assist(
    app: &App,
    call: &Call,
    client: &http::HeaderMap,
    account: &Account,
) -> Result<(UpstreamResponse, Instant), SendError> {
    let op = match &call.target {
        Target::Gemini { path, .. } => code_assist::Op::of(path),
        _ => None,
    };
    let Some((model, op)) = op else {
        return Err(SendError::Mismatch(account.record.provider));
    };
    // Nothing of a body that cannot be wrapped goes (the API would read a project and model
    // from it): refused before the API is asked anything.
    let Some(prepared) = code_assist::prepare(&call.body, op) else {
        return Ok((code_assist::invalid_body(), Instant::now()));
    };
    // Within the first-byte timeout, as the call's own head would be.
    let within = Duration::from_secs(app.config.upstream.first_byte_timeout_secs);
    let project = match tokio::time::timeout(within, code_assist::project(app, account)).await {
        Ok(Ok(project)) => project,
        Ok(Err(code_assist::Setup::Answer(resp))) => return Ok((resp, Instant::now())),
        Ok(Err(code_assist::Setup::Failed(why))) => {
            return Err(SendError::Unfinished {
                why,
                timed_out: false,
            });
        }
        Err(_) => return Err(SendError::Timeout(within)),
    };
    let body = prepared.body(model, &project);
    let url = code_assist::upstream_url(account, op);
    let headers = code_assist::upstream_headers(client, account);
    let sent = send_within(app, call, account, http::Method::POST, url, headers, body);
    let (resp, head_at) = sent.await?;
    // Refused for the project it learned: asked for again at the next call.
    if account.record.project.is_none() && resp.status() == http::StatusCode::FORBIDDEN {
        account.code_assist.forget(&project);
    }
    let client_sse = call.query.as_deref().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "alt" && v == "sse")
    });
    let resp = code_assist::answer(resp, op, client_sse);
    Ok((take_whole(call, resp).await?, head_at))
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
    /// What the account's health is judged by: running out of time, or a failure to connect
    /// (or to read an answer taken whole).
    pub(super) fn outcome(&self) -> Outcome<'static> {
        match self {
            SendError::Timeout(_)
            | SendError::Unfinished {
                timed_out: true, ..
            } => Outcome::Timeout,
            SendError::Failed(_)
            | SendError::Mismatch(_)
            | SendError::Unfinished {
                timed_out: false, ..
            } => Outcome::ConnectError,
        }
    }

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
    let body = read_capped(upstream_body, MAX_ERROR_BODY, Duration::from_secs(5)).await;
    headers.remove(http::header::CONTENT_LENGTH);
    Buffered {
        status,
        headers,
        body,
    }
}

/// An attempt's answer: its head with the body still to come; for the statuses whose verdict
/// reads the body (`health::reads_body`), read whole; for a stream that opens with an error
/// (`Call::opens_with_event`), its first event read.
pub(super) enum Answer {
    Head(UpstreamResponse),
    Read(Buffered),
    /// A stream with its first event read: the response with the rest to come, the bytes read,
    /// and, when that event was an error, that error as the answer it stands for.
    Opened {
        resp: UpstreamResponse,
        read: Bytes,
        error: Option<Buffered>,
    },
}

impl Answer {
    /// The answer to `resp`. `first_event`: the stream's first event is read (within this time)
    /// to see whether it is an error.
    pub(super) async fn of(
        resp: UpstreamResponse,
        first_event: Option<Duration>,
    ) -> Result<Answer, SendError> {
        if crate::scheduler::health::reads_body(resp.status().as_u16()) {
            return Ok(Answer::Read(buffer_failure(resp).await));
        }
        match first_event {
            Some(within)
                if resp.status().is_success() && providers::is_event_stream(resp.headers()) =>
            {
                open(resp, within).await
            }
            _ => Ok(Answer::Head(resp)),
        }
    }

    pub(super) fn status(&self) -> http::StatusCode {
        match self {
            Answer::Head(r) | Answer::Opened { resp: r, .. } => r.status(),
            Answer::Read(b) => b.status,
        }
    }

    /// What the account's health is judged by: an error event that opened a stream counts as
    /// the status its type stands for.
    pub(super) fn outcome(&self) -> Outcome<'_> {
        let (status, headers, body): (_, _, &[u8]) = match self {
            Answer::Head(r)
            | Answer::Opened {
                resp: r,
                error: None,
                ..
            } => (r.status(), r.headers(), &[]),
            Answer::Read(b) | Answer::Opened { error: Some(b), .. } => {
                (b.status, &b.headers, &b.body)
            }
        };
        Outcome::Response {
            status: status.as_u16(),
            headers,
            body,
        }
    }

    /// For the log.
    pub(super) fn describe(&self) -> String {
        match self {
            Answer::Opened { error: Some(b), .. } => format!(
                "upstream answered {} with an error event that stands for {}",
                self.status(),
                b.status
            ),
            _ => format!("upstream answered {}", self.status()),
        }
    }

    /// The answer for the client, its body the bytes read when they were; and, for an opened
    /// stream, what was read of it (the tap hands it on first).
    pub(super) fn into_served(self) -> (UpstreamResponse, Option<Bytes>) {
        match self {
            Answer::Head(r) => (r, None),
            Answer::Opened { resp, read, .. } => (resp, Some(read)),
            Answer::Read(b) => {
                let mut resp =
                    Response::new(http_body_util::Either::Right(crate::body::full(b.body)));
                *resp.status_mut() = b.status;
                *resp.headers_mut() = b.headers;
                (resp, None)
            }
        }
    }

    /// What a failed attempt leaves for the client: the answer read whole (for a stream that
    /// opened with an error, that error as a JSON answer).
    pub(super) async fn into_failure(self) -> Buffered {
        match self {
            Answer::Head(r) => buffer_failure(r).await,
            Answer::Read(b) | Answer::Opened { error: Some(b), .. } => b,
            Answer::Opened {
                resp,
                read,
                error: None,
            } => {
                let mut rest = buffer_failure(resp).await;
                let mut body = read.to_vec();
                body.extend_from_slice(&rest.body);
                rest.body = Bytes::from(body);
                rest
            }
        }
    }
}

/// Reads a stream up to its first event (at most `MAX_ERROR_BODY` bytes, within `within`). An
/// Anthropic stream can open with an `error` event instead of `message_start` (an overload
/// after the 200 head): that one fails over as the status it stands for would.
async fn open(resp: UpstreamResponse, within: Duration) -> Result<Answer, SendError> {
    let (head, mut body) = resp.into_parts();
    let mut read = bytes::BytesMut::new();
    let mut framer = crate::stream::sse::SseFramer::with_max_event_bytes(MAX_ERROR_BODY);
    // The first event's data, when the event is an error.
    let mut first: Option<Option<Bytes>> = None;
    let reading = async {
        while first.is_none() && read.len() < MAX_ERROR_BODY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    // Trailers (never sent with a stream by the vendors) end the reading.
                    let Ok(data) = frame.into_data() else { break };
                    framer.feed(&data, |event| {
                        if first.is_none() {
                            first = Some(
                                (event.event == Some("error"))
                                    .then(|| Bytes::copy_from_slice(event.data.as_bytes())),
                            );
                        }
                    });
                    read.extend_from_slice(&data);
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => break,
            }
        }
        Ok(())
    };
    match tokio::time::timeout(within, reading).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(SendError::Unfinished {
                why: format!("its stream broke before its first event: {e}"),
                timed_out: false,
            });
        }
        Err(_) => {
            return Err(SendError::Unfinished {
                why: "its stream sent no event within the first-byte timeout".to_owned(),
                timed_out: true,
            });
        }
    }
    let error = first.flatten().and_then(|data| {
        let status = anthropic::error_status(&data)?;
        let mut headers = providers::response_headers(head.headers.clone());
        headers.remove(http::header::CONTENT_LENGTH);
        // The 200's rate-limit headers describe limits that let the request through: neither
        // the verdict (a reset hours away) nor the client may read them as this error's.
        let limits: Vec<_> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("anthropic-ratelimit-"))
            .cloned()
            .collect();
        for name in limits {
            headers.remove(name);
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Some(Buffered {
            status,
            headers,
            body: data,
        })
    });
    Ok(Answer::Opened {
        resp: Response::from_parts(head, body),
        read: read.freeze(),
        error,
    })
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use http_body::Frame;

    /// A 200 event stream whose body yields `chunks` (an `Err` fails the body there).
    fn stream(chunks: Vec<Result<&'static str, &'static str>>) -> UpstreamResponse {
        let frames = chunks.into_iter().map(|c| {
            c.map(|s| Frame::data(Bytes::from(s)))
                .map_err(crate::body::BoxError::from)
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut resp = Response::new(http_body_util::Either::Right(
            http_body_util::BodyExt::boxed(body),
        ));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        resp
    }

    async fn opened(chunks: Vec<Result<&'static str, &'static str>>) -> Answer {
        match Answer::of(stream(chunks), Some(Duration::from_secs(5))).await {
            Ok(answer) => answer,
            Err(e) => panic!("not opened: {}", e.describe()),
        }
    }

    #[tokio::test]
    async fn a_stream_opening_with_an_error_split_across_frames_stands_for_its_status() {
        let answer = opened(vec![
            Ok("event: err"),
            Ok("or\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_"),
            Ok("error\",\"message\":\"Overloaded\"}}\n"),
            Ok("\nevent: ping\ndata: {}\n\n"),
        ])
        .await;
        let Outcome::Response { status, body, .. } = answer.outcome() else {
            panic!("an answer")
        };
        assert_eq!(status, 529);
        assert_eq!(
            crate::providers::anthropic::error_status(body).unwrap(),
            529
        );
        let failure = answer.into_failure().await;
        assert_eq!(failure.status, 529);
        assert_eq!(
            failure.headers[http::header::CONTENT_TYPE],
            "application/json"
        );
    }

    #[tokio::test]
    async fn an_opening_rate_limit_error_is_judged_without_the_200_s_limit_headers() {
        let mut resp = stream(vec![Ok(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"x\"}}\n\n",
        )]);
        // Limits that let the 200 through: the 5-hour window resets hours away.
        let h = resp.headers_mut();
        h.insert(
            "anthropic-ratelimit-unified-5h-reset",
            http::HeaderValue::from_static("2099-01-01T00:00:00Z"),
        );
        h.insert(
            "anthropic-ratelimit-unified-5h-status",
            http::HeaderValue::from_static("allowed"),
        );
        let answer = match Answer::of(resp, Some(Duration::from_secs(5))).await {
            Ok(answer) => answer,
            Err(e) => panic!("not opened: {}", e.describe()),
        };
        let now_ms = 1_000_000;
        let verdict =
            crate::scheduler::health::judge(answer.outcome(), now_ms, Duration::from_secs(30));
        assert_eq!(
            verdict,
            crate::scheduler::health::Verdict::RateLimited {
                until_ms: now_ms + 30_000,
                family: None,
                per_model: false,
            }
        );
        let failure = answer.into_failure().await;
        assert!(
            failure
                .headers
                .keys()
                .all(|n| !n.as_str().starts_with("anthropic-ratelimit-"))
        );
    }

    #[tokio::test]
    async fn a_stream_opening_with_its_answer_is_handed_on_with_what_was_read() {
        let answer = opened(vec![
            Ok(": comment\n\n"),
            Ok("event: message_start\ndata: {\"type\":\"message_start\"}\n\n"),
            Ok("event: ping\ndata: {}\n\n"),
        ])
        .await;
        assert!(matches!(
            answer.outcome(),
            Outcome::Response { status: 200, .. }
        ));
        let (resp, read) = answer.into_served();
        let read = read.unwrap();
        assert_eq!(
            &read[..],
            b": comment\n\nevent: message_start\ndata: {\"type\":\"message_start\"}\n\n",
            "read up to the first event, no further"
        );
        let rest = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"event: ping\ndata: {}\n\n");
    }

    #[tokio::test]
    async fn a_stream_that_breaks_before_its_first_event_is_a_failed_attempt() {
        let sent = Answer::of(
            stream(vec![Ok("event: message_st"), Err("reset")]),
            Some(Duration::from_secs(5)),
        )
        .await;
        assert!(matches!(
            sent,
            Err(SendError::Unfinished {
                timed_out: false,
                ..
            })
        ));
    }
}
