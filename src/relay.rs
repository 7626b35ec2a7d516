//! The data path, in order:
//!
//! ```text
//! auth      hash the presented key → key record (catalog cache)
//! body      read it whole, within the size limit; learn model and stream flag
//! admit     limits::admit: the key's lease, one atomic store call
//! pick      scheduler::pick: the account and its lease, one atomic store call
//! send      the body unchanged, the account's credentials, identity encoding
//! respond   the upstream head, hop-by-hop headers dropped; body = Tap(upstream body, Settle)
//! settle    at body end or drop: usage → cost → stats; leases released
//! ```
//!
//! Every step is a plain call in `relay`; an error on the way renders in the surface's shape and
//! drops whatever leases were taken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};

use crate::app::App;
use crate::auth::{self, new_id};
use crate::body::{Body, BoxError};
use crate::catalog::Account;
use crate::error::{ApiError, ErrorKind, Surface};
use crate::limits::{self, AccountLease, KeyLease, Spent};
use crate::metrics as m;
use crate::providers::{self, anthropic};
use crate::scheduler::{self, health, health::Outcome, session};
use crate::store::{KeyRecord, Provider, RequestLogEntry};
use crate::stream::anthropic::AnthropicUsage;
use crate::stream::tap::{End, Observer, Tap};
use crate::usage::TokenUsage;

/// Which Anthropic endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages`: billed, logged.
    Messages,
    /// `POST /v1/messages/count_tokens`: relayed, not billed.
    CountTokens,
    /// `GET /v1/models[/{id}]`: relayed to any account.
    Models,
}

/// Relays one Anthropic request. `upstream_path` is the vendor path (`/v1/messages`), without
/// any prefix the client's base URL added.
pub async fn relay<B>(
    app: &Arc<App>,
    endpoint: Endpoint,
    upstream_path: &str,
    req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let request_id = new_id("req");
    match forward(app, endpoint, upstream_path, req, started, &request_id).await {
        Ok(resp) => resp,
        Err(err) => {
            metrics::counter!(m::REQUESTS, "surface" => "anthropic", "status" => err.status.as_str().to_owned())
                .increment(1);
            tracing::info!(
                request_id = %request_id,
                status = err.status.as_u16(),
                latency_ms = started.elapsed().as_millis() as u64,
                error = %err.message,
                "request refused"
            );
            err.render(Surface::Anthropic)
        }
    }
}

async fn forward<B>(
    app: &Arc<App>,
    endpoint: Endpoint,
    upstream_path: &str,
    req: Request<B>,
    started: Instant,
    request_id: &str,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let at_ms = jiff::Timestamp::now().as_millisecond();
    let key = authenticate(app, req.headers()).await?;
    let (parts, body) = req.into_parts();
    let body = read_body(body, app.config.server.body_limit_bytes).await?;
    let (model, max_tokens, session) = match endpoint {
        Endpoint::Models => (None, None, None),
        Endpoint::Messages | Endpoint::CountTokens => {
            let ask = anthropic::inspect(&body)?;
            let session = session::identify(&key.id, &parts.headers, &ask.session);
            (Some(ask.model), ask.max_tokens, session)
        }
    };

    let key_lease = limits::admit(
        app,
        &key,
        &limits::Request {
            surface: Surface::Anthropic.as_str(),
            client: limits::access::client_of(&parts.headers),
            model: model.as_deref(),
            max_tokens,
            body_len: body.len(),
            billed: endpoint == Endpoint::Messages,
        },
    )
    .await?;

    // Attempts: another account takes over while nothing has reached the client.
    let policy = &app.config.scheduler;
    let deadline = started + Duration::from_secs(policy.attempt_deadline_secs);
    let mut tried: Vec<String> = Vec::new();
    let mut last_failure: Option<Failure> = None;
    let (picked, upstream, sent_at, head_at) = loop {
        let attempt = u32::try_from(tried.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let ask = scheduler::Ask {
            provider: Provider::Anthropic,
            model: model.as_deref(),
            session: session.as_deref(),
            binding: key.binding.as_ref(),
            exclude: &tried,
            attempt,
        };
        let picked = match scheduler::pick(&app.catalog, policy, &ask, &key_lease).await {
            Ok(picked) => picked,
            // Nobody else can take it: the client gets what the last attempt got.
            Err(unavailable) => {
                let Some(failure) = last_failure else {
                    return Err(unavailable);
                };
                if let Failure::Response(b) = &failure {
                    let entry = RequestLogEntry {
                        request_id: request_id.to_owned(),
                        at: at_ms,
                        key_id: key.id.clone(),
                        account_id: tried.last().cloned(),
                        model: model.clone().unwrap_or_default(),
                        surface: Surface::Anthropic.as_str().to_owned(),
                        status: b.status.as_u16(),
                        latency_ms: started.elapsed().as_millis() as u64,
                        ttfb_ms: None,
                        usage: TokenUsage::default(),
                        cost_nanousd: 0,
                    };
                    tracing::info!(
                        request_id,
                        key_id = %key.id,
                        account_id = ?entry.account_id,
                        model = %entry.model,
                        status = entry.status,
                        latency_ms = entry.latency_ms,
                        attempts = tried.len(),
                        "request failed upstream on every account tried"
                    );
                    if endpoint == Endpoint::Messages {
                        app.stats.record(entry, false);
                    }
                }
                return failure.respond();
            }
        };
        let sent_at = Instant::now();
        let sent = send(app, &parts, upstream_path, &picked.account, body.clone()).await;
        let head_at = Instant::now();
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let outcome = match &sent {
            Ok(resp) => Outcome::Response {
                status: resp.status().as_u16(),
                headers: resp.headers(),
            },
            Err(SendError::Timeout(_)) => Outcome::Timeout,
            Err(SendError::Failed(_)) => Outcome::ConnectError,
        };
        let verdict = health::judge(
            outcome,
            now_ms,
            Duration::from_secs(policy.rate_limit_cooldown_secs),
        );
        scheduler::report(&app.catalog, policy, &picked, &verdict, || match &sent {
            Ok(resp) => format!("upstream answered {}", resp.status()),
            Err(SendError::Timeout(limit)) => format!("no response within {} s", limit.as_secs()),
            Err(SendError::Failed(e)) => format!("request failed: {e}"),
        })
        .await;
        let may_retry = verdict.may_fail_over()
            && tried.len() + 1 < policy.max_attempts as usize
            && Instant::now() < deadline;
        match sent {
            Ok(resp) if !may_retry => break (picked, resp, sent_at, head_at),
            Ok(resp) => {
                tracing::info!(request_id, account_id = %picked.account.id(), status = resp.status().as_u16(), "upstream failed before the first byte; trying another account");
                last_failure = Some(Failure::Response(buffer_failure(resp).await));
            }
            Err(e) if !may_retry => return Err(e.into_api_error()),
            Err(e) => {
                let err = e.into_api_error();
                tracing::info!(request_id, account_id = %picked.account.id(), error = %err.message, "upstream failed before the first byte; trying another account");
                last_failure = Some(Failure::Error(err));
            }
        }
        metrics::counter!(m::FAILOVERS).increment(1);
        tried.push(picked.account.id().to_owned());
        // `picked` drops here: the failed attempt's account lease is released.
    };
    let account = picked.account;

    let (mut head, upstream_body) = http::Response::<reqwest::Body>::from(upstream).into_parts();
    head.headers = providers::response_headers(head.headers);
    let streaming = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let usage = (endpoint == Endpoint::Messages).then(|| {
        if streaming {
            AnthropicUsage::streaming()
        } else {
            AnthropicUsage::json()
        }
    });
    metrics::gauge!(m::ACTIVE_STREAMS).increment(1.0);
    let settle = Settle {
        app: Arc::clone(app),
        request_id: request_id.to_owned(),
        key_id: key.id.clone(),
        account_id: account.id().to_owned(),
        model: model.unwrap_or_default(),
        status: head.status.as_u16(),
        at_ms,
        started,
        sent_at,
        ttfb_ms: (head_at - sent_at).as_millis() as u64,
        usage,
        streaming,
        leases: Some((key_lease, picked.lease)),
    };
    let idle = Duration::from_secs(app.config.upstream.idle_timeout_secs);
    let body = Tap::new(upstream_body.map_err(BoxError::from), settle)
        .with_idle_timeout(idle)
        .boxed();
    metrics::histogram!(m::UPSTREAM_TTFB).record((head_at - sent_at).as_secs_f64());
    metrics::histogram!(m::RELAY_OVERHEAD)
        .record(((sent_at - started) + head_at.elapsed()).as_secs_f64());
    Ok(Response::from_parts(head, body))
}

/// The enabled key record behind the presented key, or a 401.
pub async fn authenticate(
    app: &App,
    headers: &http::HeaderMap,
) -> Result<Arc<KeyRecord>, ApiError> {
    let presented = auth::presented_key(headers).ok_or_else(|| {
        ApiError::new(
            ErrorKind::Authentication,
            "missing API key: send it as x-api-key or Authorization: Bearer",
        )
    })?;
    let key = app
        .catalog
        .key_by_hash(&auth::hash_key(presented))
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Unavailable,
                format!("the store is unavailable: {e}"),
            )
        })?
        .ok_or_else(|| ApiError::new(ErrorKind::Authentication, "invalid API key"))?;
    if !key.enabled {
        return Err(ApiError::new(
            ErrorKind::Authentication,
            "this API key is disabled",
        ));
    }
    Ok(key)
}

/// Reads a request body whole, refusing more than `limit` bytes with 413.
pub async fn read_body<B>(body: B, limit: u64) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        ApiError::new(
            ErrorKind::RequestTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if body.size_hint().lower() > limit {
        return Err(too_large());
    }
    match Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Sends the request to one account, waiting at most the first-byte timeout for the head.
async fn send(
    app: &App,
    parts: &http::request::Parts,
    upstream_path: &str,
    account: &Account,
    body: Bytes,
) -> Result<reqwest::Response, SendError> {
    let url = anthropic::upstream_url(account, upstream_path, parts.uri.query());
    let headers = anthropic::upstream_headers(&parts.headers, account);
    let first_byte = Duration::from_secs(app.config.upstream.first_byte_timeout_secs);
    let send = app
        .http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send();
    match tokio::time::timeout(first_byte, send).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(SendError::Failed(e)),
        Err(_) => Err(SendError::Timeout(first_byte)),
    }
}

/// An upstream attempt that produced no response head.
enum SendError {
    Failed(reqwest::Error),
    Timeout(Duration),
}

impl SendError {
    fn into_api_error(self) -> ApiError {
        match self {
            SendError::Failed(e) => {
                let reason = if e.is_connect() {
                    "connect"
                } else if e.is_timeout() {
                    "timeout"
                } else {
                    "other"
                };
                metrics::counter!(m::UPSTREAM_ERRORS, "reason" => reason).increment(1);
                // reqwest's message names the URL (the account's base URL, not a secret) and the cause.
                ApiError::new(
                    ErrorKind::BadGateway,
                    format!("the upstream request failed ({reason}): {e}"),
                )
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
enum Failure {
    Response(Buffered),
    Error(ApiError),
}

/// An upstream error answer, read whole (error bodies are small; at most `MAX_ERROR_BODY`).
struct Buffered {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

const MAX_ERROR_BODY: usize = 64 * 1024;

async fn buffer_failure(resp: reqwest::Response) -> Buffered {
    let status = resp.status();
    let mut headers = providers::response_headers(resp.headers().clone());
    let mut body = Vec::new();
    let mut stream = http_body_util::BodyDataStream::new(reqwest::Body::from(resp));
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

impl Failure {
    fn respond(self) -> Result<Response<Body>, ApiError> {
        match self {
            Failure::Error(e) => Err(e),
            Failure::Response(b) => {
                metrics::counter!(m::REQUESTS, "surface" => "anthropic", "status" => b.status.as_str().to_owned()).increment(1);
                let mut resp = Response::new(crate::body::full(b.body));
                *resp.status_mut() = b.status;
                *resp.headers_mut() = b.headers;
                Ok(resp)
            }
        }
    }
}

/// Settles a request when its response body ends or is dropped.
struct Settle {
    app: Arc<App>,
    request_id: String,
    key_id: String,
    account_id: String,
    model: String,
    status: u16,
    at_ms: i64,
    started: Instant,
    sent_at: Instant,
    ttfb_ms: u64,
    /// `None` for endpoints that are not billed.
    usage: Option<AnthropicUsage>,
    /// An SSE response: a cut is told to the client as an error event.
    streaming: bool,
    leases: Option<(KeyLease, AccountLease)>,
}

impl Observer for Settle {
    fn on_data(&mut self, data: &Bytes) {
        if let Some(usage) = &mut self.usage {
            usage.observe(data);
        }
    }

    fn error_event(&self, message: &str) -> Option<Bytes> {
        self.streaming
            .then(|| anthropic::error_event("api_error", message))
    }

    fn on_end(&mut self, end: End) {
        let leases = self.leases.take();
        metrics::gauge!(m::ACTIVE_STREAMS).decrement(1.0);
        let latency_ms = self.started.elapsed().as_millis() as u64;
        metrics::histogram!(m::UPSTREAM_LATENCY).record(self.sent_at.elapsed().as_secs_f64());
        metrics::counter!(m::REQUESTS, "surface" => "anthropic", "status" => self.status.to_string())
            .increment(1);
        let usage = self
            .usage
            .as_ref()
            .map(AnthropicUsage::usage)
            .unwrap_or_default();
        let cost = self.app.pricing().cost(&self.model, &usage);
        if let Some((key_lease, account_lease)) = leases {
            drop(account_lease);
            key_lease.settle(Spent::of(&usage, cost.nanousd));
        }
        if self.usage.is_some() {
            if !cost.known_model {
                metrics::counter!(m::UNKNOWN_MODEL_PRICE, "model" => self.model.clone())
                    .increment(1);
            }
            record_token_metrics(&self.model, &usage, cost.nanousd);
            let billed = self.status < 400 || !usage.is_empty();
            let entry = RequestLogEntry {
                request_id: self.request_id.clone(),
                at: self.at_ms,
                key_id: self.key_id.clone(),
                account_id: Some(self.account_id.clone()),
                model: self.model.clone(),
                surface: Surface::Anthropic.as_str().to_owned(),
                status: self.status,
                latency_ms,
                ttfb_ms: Some(self.ttfb_ms),
                usage,
                cost_nanousd: cost.nanousd,
            };
            self.app.stats.record(entry, billed);
        }
        let end = match &end {
            End::Complete => "complete",
            End::Failed(_) => "upstream_failed",
            End::Dropped => "client_disconnected",
        };
        tracing::info!(
            request_id = %self.request_id,
            key_id = %self.key_id,
            account_id = %self.account_id,
            model = %self.model,
            status = self.status,
            latency_ms,
            ttfb_ms = self.ttfb_ms,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cost_nanousd = cost.nanousd,
            end,
            "request"
        );
    }
}

fn record_token_metrics(model: &str, usage: &TokenUsage, cost_nanousd: u64) {
    for (kind, n) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_creation", usage.cache_creation_input_tokens),
        ("cache_read", usage.cache_read_input_tokens),
    ] {
        if n > 0 {
            metrics::counter!(m::TOKENS, "model" => model.to_owned(), "kind" => kind).increment(n);
        }
    }
    metrics::counter!(m::COST, "model" => model.to_owned()).increment(cost_nanousd);
}
