//! The data path, in order:
//!
//! ```text
//! auth      hash the presented key → key record (catalog cache)
//! body      read it whole, within the size limit
//! call      what it means upstream: accounts of which protocol, what to send (translated or
//!           not), how to read usage and hand the answer back (relay::call)
//! admit     limits::admit: access rules, the key's lease and reservations, one store call
//! pick      scheduler::pick: the account and its lease, one atomic store call
//! send      the body, the account's credentials, identity encoding (relay::upstream)
//! respond   the upstream head, hop-by-hop headers dropped; body = Tap(upstream body, Settle),
//!           translated for the client when it speaks another protocol (relay::respond)
//! settle    at body end or drop: usage → cost → stats and the key's counters (relay::settle)
//! ```
//!
//! Every step is a plain call in `forward`; an error on the way renders in the surface's shape
//! and drops whatever leases were taken.

pub mod call;
mod respond;
mod settle;
mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};

use crate::app::App;
use crate::auth::{self, new_id};
use crate::body::{Body, BoxError};
use crate::error::{ApiError, ErrorKind};
use crate::limits;
use crate::metrics as m;
use crate::providers::{self, gemini};
use crate::scheduler::{self, health, health::Outcome, session};
use crate::store::{KeyRecord, RequestLogEntry};
use crate::stream::tap::Tap;
use crate::stream::usage::UsageReader;
use crate::usage::TokenUsage;

pub use call::Endpoint;
use settle::Settle;
use upstream::{Failure, SendError, buffer_failure, send};

/// Relays one request. `vendor_path` is the vendor's path (`/v1/messages`), without any prefix
/// the client's base URL added.
pub async fn relay<B>(
    app: &Arc<App>,
    endpoint: Endpoint,
    vendor_path: &str,
    req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let request_id = new_id("req");
    let surface = endpoint.surface();
    match forward(app, endpoint, vendor_path, req, started, &request_id).await {
        Ok(resp) => resp,
        Err(err) => {
            metrics::counter!(m::REQUESTS, "surface" => surface.as_str(), "status" => err.status.as_str().to_owned())
                .increment(1);
            tracing::info!(
                request_id = %request_id,
                status = err.status.as_u16(),
                latency_ms = started.elapsed().as_millis() as u64,
                error = %err.message,
                "request refused"
            );
            err.render(surface)
        }
    }
}

async fn forward<B>(
    app: &Arc<App>,
    endpoint: Endpoint,
    vendor_path: &str,
    req: Request<B>,
    started: Instant,
    request_id: &str,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let at_ms = jiff::Timestamp::now().as_millisecond();
    let key = authenticate_with(app, req.headers(), req.uri().query()).await?;
    let (parts, body) = req.into_parts();
    let body = read_body(body, app.config.server.body_limit_bytes).await?;
    let (mut call, hints) = call::build(
        &endpoint,
        vendor_path,
        parts.uri.query(),
        &body,
        app.config.limits.default_max_tokens,
    )?;
    if call.billed() {
        call.session = session::identify(&key.id, &parts.headers, &hints);
    }
    drop(hints);
    let model = call.model.clone();

    let key_lease = limits::admit(
        app,
        &key,
        &limits::Request {
            surface: call.surface.as_str(),
            client: limits::access::client_of(&parts.headers),
            model: model.as_deref(),
            max_tokens: call.max_tokens,
            body_len: body.len(),
            billed: call.billed(),
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
            protocol: call.target.protocol(),
            model: model.as_deref(),
            session: call.session.as_deref(),
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
                        surface: call.surface.as_str().to_owned(),
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
                    if call.billed() {
                        app.stats.record(entry, false);
                    }
                }
                return failure.respond(&call);
            }
        };
        let sent_at = Instant::now();
        let sent = send(app, &call, &parts.headers, &picked.account).await;
        let head_at = Instant::now();
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let outcome = match &sent {
            Ok(resp) => Outcome::Response {
                status: resp.status().as_u16(),
                headers: resp.headers(),
            },
            Err(SendError::Timeout(_)) => Outcome::Timeout,
            Err(SendError::Failed(_) | SendError::Mismatch(_)) => Outcome::ConnectError,
        };
        let verdict = health::judge(
            outcome,
            now_ms,
            Duration::from_secs(policy.rate_limit_cooldown_secs),
        );
        scheduler::report(&app.catalog, policy, &picked, &verdict, || match &sent {
            Ok(resp) => format!("upstream answered {}", resp.status()),
            Err(e) => e.describe(),
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
    let usage = call
        .usage
        .and_then(|kind| UsageReader::new(kind, streaming));
    metrics::gauge!(m::ACTIVE_STREAMS).increment(1.0);
    let settle = Settle {
        app: Arc::clone(app),
        request_id: request_id.to_owned(),
        key_id: key.id.clone(),
        account_id: account.id().to_owned(),
        model: model.unwrap_or_default(),
        surface: call.surface,
        status: head.status.as_u16(),
        at_ms,
        started,
        sent_at,
        ttfb_ms: (head_at - sent_at).as_millis() as u64,
        usage,
        error_event: streaming.then(|| respond::error_event(&call)),
        leases: Some((key_lease, picked.lease)),
    };
    let idle = Duration::from_secs(app.config.upstream.idle_timeout_secs);
    let tapped = Tap::new(upstream_body.map_err(BoxError::from), settle).with_idle_timeout(idle);
    let body = respond::body(&call.respond, head.status, &mut head.headers, tapped);
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
    authenticate_with(app, headers, None).await
}

/// As `authenticate`, also taking the key from the query's `key=` (Google's SDKs may send it so).
async fn authenticate_with(
    app: &App,
    headers: &http::HeaderMap,
    query: Option<&str>,
) -> Result<Arc<KeyRecord>, ApiError> {
    let from_query = gemini::query_key(query);
    let presented = auth::presented_key(headers)
        .or(from_query.as_deref())
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::Authentication,
                "missing API key: send it as x-api-key, Authorization: Bearer or x-goog-api-key",
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
