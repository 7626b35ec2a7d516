//! The data path, in order:
//!
//! ```text
//! auth      hash the presented key → key record (catalog cache)
//! body      read it whole, within the size limit
//! call      what it means upstream: accounts of which protocol, what to send (translated or
//!           not), how to read usage and hand the answer back (relay::call)
//! check     limits::check: access rules, the key's lease and reservations planned (no I/O)
//! pick      scheduler::pick: the account and its lease, taken with the key's admission in one
//!           atomic store call
//! send      the body, the account's credentials, identity encoding (relay::upstream)
//! respond   the upstream head, hop-by-hop headers dropped; body = Tap(upstream body, Settle),
//!           translated for the client when it speaks another protocol (relay::respond); while
//!           it runs, the leases are renewed every third of their ttl (relay::settle)
//! settle    at body end or drop: usage → cost → stats and the key's counters (relay::settle)
//! ```
//!
//! Every step is a plain call in `forward`; an error on the way renders in the surface's shape
//! and drops whatever leases were taken.

pub mod call;
pub(crate) mod failover;
pub mod probe;
mod respond;
mod settle;
mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
use crate::providers;
use crate::scheduler::session;
use crate::store::{KeyRecord, Provider};
use crate::stream::tap::Tap;
use crate::stream::usage::UsageReader;
use crate::upstream_client::UpstreamBody;

pub use call::Endpoint;
use call::UsageKind;
use failover::{Attempts, Ctx, Served};
use settle::Settle;

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
    let mut known = Known::default();
    match forward(
        app,
        endpoint,
        vendor_path,
        req,
        started,
        &request_id,
        &mut known,
    )
    .await
    {
        Ok(resp) => resp,
        Err(err) => {
            m::count_request(surface.as_str(), err.status.as_u16());
            tracing::info!(
                request_id = %request_id,
                key_id = known.key.as_ref().map(|k| display(&k.id)),
                model = known.model.as_deref().map(display),
                status = err.status.as_u16(),
                latency_ms = started.elapsed().as_millis() as u64,
                error = %err.message,
                "request refused"
            );
            err.render(surface)
        }
    }
}

/// What `forward` learned of a request, for the line that logs its refusal: the key once
/// authenticated, the model once read (and not refused as too long to show).
#[derive(Default)]
struct Known {
    key: Option<Arc<KeyRecord>>,
    model: Option<String>,
}

async fn forward<B>(
    app: &Arc<App>,
    endpoint: Endpoint,
    vendor_path: &str,
    req: Request<B>,
    started: Instant,
    request_id: &str,
    known: &mut Known,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let at_ms = jiff::Timestamp::now().as_millisecond();
    let key = authenticate_with(app, req.headers(), req.uri().query()).await?;
    known.key = Some(Arc::clone(&key));
    let (parts, body) = req.into_parts();
    let body = read_body(body, &app.config.server).await?;
    let (mut call, mut hints) = call::build(
        &endpoint,
        vendor_path,
        parts.uri.query(),
        &body,
        app.config.limits.default_max_tokens,
        &|model| app.catalog.openai_lists(model),
    )?;
    if let Some(model) = &call.model {
        check_model_name(model)?;
    }
    // With no stored response remembered, a request naming one has the session it would have
    // without the name.
    if app.config.scheduler.response_binding_ttl_secs == 0 {
        hints.response_id = None;
    }
    // Unbilled calls have no session, but a stored response's own paths: theirs finds the
    // account that holds it.
    if call.billed() || hints.response_id.is_some() {
        call.session = session::identify(&key.id, &parts.headers, &hints);
    }
    drop(hints);
    known.model.clone_from(&call.model);

    let mut key_lease = limits::check(
        app,
        &key,
        &limits::Request {
            surface: call.surface.as_str(),
            client: limits::access::client_of(&parts.headers),
            model: known.model.as_deref(),
            max_tokens: call.max_tokens,
            body_len: body.len(),
            billed: call.billed(),
            cost_nanousd: None,
        },
    )?;

    if endpoint
        == (Endpoint::OpenAiModels {
            path: "/models".into(),
        })
        && let Some(list) = model_list_without_openai_accounts(app)
    {
        return Ok(crate::body::json(http::StatusCode::OK, &list));
    }
    if let Endpoint::GeminiModels { rest, .. } = &endpoint
        && let Some(listed) = gemini_models_of_google_logins(app, rest)
    {
        return Ok(crate::body::json(http::StatusCode::OK, &listed));
    }

    let ctx = Ctx {
        request_id,
        at_ms,
        started,
    };
    let Served {
        picked,
        upstream,
        read,
        sent_at,
        head_at,
        queued,
    } = match failover::attempts(app, &call, &parts.headers, &key, &mut key_lease, &ctx).await? {
        Attempts::Served(served) => served,
        Attempts::Failed(answer) => {
            m::count_request(call.surface.as_str(), answer.status().as_u16());
            // The key's lease, dropped, counts it as one request: it was sent.
            return Ok(answer);
        }
    };
    let account = picked.account;

    let (mut head, upstream_body) = upstream.into_parts();
    head.headers = providers::response_headers(head.headers);
    let streaming = providers::is_event_stream(&head.headers);
    let usage = call
        .usage
        .map(|kind| match (kind, account.record.provider) {
            // The Codex backend keeps no response (it is sent `store: false`): none to bind.
            (UsageKind::OpenAiResponses { .. }, Provider::ChatGpt) => {
                UsageReader::new(UsageKind::OpenAiResponses { stored: false }, streaming)
            }
            (kind, _) => UsageReader::new(kind, streaming),
        });
    m::active_streams().increment(1.0);
    let settle = Settle {
        app: Arc::clone(app),
        request_id: request_id.to_owned(),
        key_id: key.id.clone(),
        account,
        model: known.model.take().unwrap_or_default(),
        surface: call.surface,
        status: head.status.as_u16(),
        at_ms,
        started,
        sent_at,
        ttfb_ms: (head_at - sent_at).as_millis() as u64,
        usage,
        input_estimate: limits::input_estimate(app, body.len()),
        error_event: streaming.then(|| respond::error_event(&call)),
        leases: Some((key_lease, picked.lease)),
    };
    let idle = Duration::from_secs(app.config.upstream.idle_timeout_secs);
    let renew = settle::renewal_period(Duration::from_secs(app.config.relay.lease_ttl_secs));
    let whole = respond::whole_json(&call.respond, head.status, streaming, &mut head.headers);
    // An empty answer (a 502 with `content-length: 0`): hyper writes its head and never polls
    // its body, which would read as a client gone; its end is reported before the head goes.
    let empty = whole.is_none() && http_body::Body::is_end_stream(&upstream_body);
    let tapped = {
        // The leases were taken after `started`: renewing from then on is in time for both.
        let first_renewal = tokio::time::Instant::from_std(started) + renew;
        let tapped = Tap::new(upstream_body, settle)
            .with_idle_timeout(idle)
            .with_renewal(first_renewal, renew);
        // A JSON answer's body is ready when its head is (one frame): hyper writes them
        // together. A stream whose first event was judged hands that on first, merged with
        // what came after it.
        match read {
            Some(read) => primed(prepended(tapped, read)).await,
            None if streaming || empty => primed(tapped).await,
            None => tapped,
        }
    };
    m::upstream_ttfb().record((head_at - sent_at).as_secs_f64());
    // Less any wait for a slot: that is the accounts', not the relay's.
    let before_send = (sent_at - started).saturating_sub(queued);
    m::relay_overhead().record((before_send + head_at.elapsed()).as_secs_f64());
    if let Some(translate) = whole {
        let read = ReadWhole::new(tapped, translate).await;
        return Ok(translated_whole(head, read, call.surface));
    }
    let body = respond::body(
        &call.respond,
        head.status,
        streaming,
        &mut head.headers,
        tapped,
    );
    Ok(Response::from_parts(head, body))
}

/// A JSON answer translated for the client, read whole before its head goes: one that could not
/// be translated (unreadable, over the cap, an error sent with 200) reaches the client as a 502,
/// which its SDK raises and retries, not as a 200 whose body is an error. The request is settled
/// (logged, counted) with the status the client got.
fn translated_whole(
    mut head: http::response::Parts,
    Read { json, mut tap }: Read,
    surface: crate::error::Surface,
) -> Response<Body> {
    let answer = match json {
        Ok(json) => {
            if json.starts_with(b"{\"error\"") {
                head.status = http::StatusCode::BAD_GATEWAY;
            }
            Response::from_parts(head, crate::body::full(json))
        }
        Err(e) => ApiError::new(
            ErrorKind::BadGateway,
            format!("the upstream's answer could not be read: {e}"),
        )
        .render(surface),
    };
    if let Some(settle) = tap.observer_mut() {
        settle.status = answer.status().as_u16();
    }
    drop(tap);
    answer
}

type Tapped = Tap<UpstreamBody, Settle>;

/// The tap with the first bytes of its body, read before it was made, handed on first; a plain
/// function for the reason `ReadWhole::new` gives.
fn prepended(mut tap: Tapped, read: Bytes) -> Tapped {
    tap.prepend(read);
    tap
}

/// The tap with its first frame read ([`Tap::poll_prime`]).
fn primed(tap: Tapped) -> Priming {
    Priming {
        tap: Some(tap),
        quiet: 0,
    }
}

/// A future of its own rather than an `async` block: the tap's body type (`Either`, whose error
/// is converted under a `From` bound) fails the server's `Send` check inside an `async` block,
/// where rustc erases the lifetimes it would need.
struct Priming {
    tap: Option<Tapped>,
    quiet: u8,
}

impl Future for Priming {
    type Output = Tapped;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Tapped> {
        let this = self.get_mut();
        let Some(tap) = this.tap.as_mut() else {
            return Poll::Pending;
        };
        std::task::ready!(tap.poll_prime(cx, &mut this.quiet));
        this.tap.take().map_or(Poll::Pending, Poll::Ready)
    }
}

/// What [`ReadWhole`] read, and the tap it read from.
struct Read {
    /// The error as its message.
    json: Result<Bytes, String>,
    tap: Tapped,
}

/// Reads the tapped answer whole through its translator into one JSON body, then hands the tap
/// back; a future of its own, and not generic, for the reason `Priming` gives.
struct ReadWhole {
    /// `None` once read.
    tap: Option<Tapped>,
    translate: Box<dyn crate::translate::Translate + Sync>,
    out: bytes::BytesMut,
}

impl ReadWhole {
    /// A plain function: the tap's methods called in the relay's `async fn` fail the server's
    /// `Send` check as an `async` block does (`Priming`).
    fn new(mut tap: Tapped, translate: Box<dyn crate::translate::Translate + Sync>) -> ReadWhole {
        tap.defer_end();
        ReadWhole {
            tap: Some(tap),
            translate,
            out: bytes::BytesMut::new(),
        }
    }
}

impl Future for ReadWhole {
    type Output = Read;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(tap) = this.tap.as_mut() else {
            return Poll::Pending;
        };
        let read = loop {
            match std::task::ready!(http_body::Body::poll_frame(Pin::new(&mut *tap), cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.translate.feed(&data, &mut this.out);
                    }
                }
                Some(Err(e)) => break Err(e.to_string()),
                None => {
                    this.translate.finish(&mut this.out);
                    break Ok(this.out.split().freeze());
                }
            }
        };
        this.tap
            .take()
            .map_or(Poll::Pending, |tap| Poll::Ready(Read { json: read, tap }))
    }
}

/// `GET /v1/models` on the OpenAI surface when no OpenAI-protocol account exists to ask: the
/// models the other accounts name exactly (globs cannot be listed), in OpenAI's list shape, so
/// that OpenAI-format tools can discover the Claude and Gemini models they may call.
fn model_list_without_openai_accounts(app: &App) -> Option<serde_json::Value> {
    let accounts = app.catalog.accounts();
    let usable = || accounts.iter().filter(|a| a.record.enabled);
    if usable().any(|a| a.record.provider.serves_openai_api()) {
        return None;
    }
    let mut seen = std::collections::BTreeMap::new();
    for account in usable() {
        for model in &account.record.models {
            if !crate::catalog::is_glob(model) {
                seen.entry(model.clone())
                    .or_insert(account.record.provider.as_str());
            }
        }
    }
    let data: Vec<serde_json::Value> = seen
        .into_iter()
        .map(|(id, owner)| serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": owner }))
        .collect();
    Some(serde_json::json!({ "object": "list", "data": data }))
}

/// `GET /{version}/models[/{model}]` on the Gemini surface when no `gemini` account exists to
/// ask and Google logins (`code-assist` accounts, whose API has no model list) do: the models they
/// name exactly, in Gemini's shape (a model they do not name goes on to the usual answer).
fn gemini_models_of_google_logins(app: &App, rest: &str) -> Option<serde_json::Value> {
    let accounts = app.catalog.accounts();
    let usable = || accounts.iter().filter(|a| a.record.enabled);
    if usable().any(|a| a.record.provider == Provider::Gemini)
        || !usable().any(|a| a.record.provider == Provider::CodeAssist)
    {
        return None;
    }
    let named: std::collections::BTreeSet<&str> = usable()
        .filter(|a| a.record.provider == Provider::CodeAssist)
        .flat_map(|a| &a.record.models)
        .filter(|m| !crate::catalog::is_glob(m))
        .map(String::as_str)
        .collect();
    let model = |id: &str| {
        serde_json::json!({
            "name": format!("models/{id}"),
            "displayName": id,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        })
    };
    match rest.strip_prefix("models/") {
        Some(id) => named.contains(id).then(|| model(id)),
        None => {
            let models: Vec<serde_json::Value> = named.into_iter().map(model).collect();
            Some(serde_json::json!({ "models": models }))
        }
    }
}

/// The longest model name taken (vendors' are under 100 bytes).
pub const MAX_MODEL_NAME: usize = 256;

/// Model names are short; the client's goes into the price cache, metrics, logs and the request
/// log, so a long one is refused (without being echoed) before any of them sees it. One made of
/// dots alone would be a path's `.` or `..` in the URLs that carry the model (Azure's
/// deployment, Bedrock's model id).
pub fn check_model_name(model: &str) -> Result<(), ApiError> {
    if model.len() > MAX_MODEL_NAME {
        return Err(ApiError::invalid(format!(
            "model: a model name is at most {MAX_MODEL_NAME} bytes"
        )));
    }
    if !model.is_empty() && model.bytes().all(|b| b == b'.') {
        return Err(ApiError::invalid("model: not a model name"));
    }
    Ok(())
}

/// Whether a model name can stand in a URL's path as it is (`models/{model}:{method}`, Gemini's
/// and Imagen's): letters, digits, `-`, `_` and `.` only.
pub fn fits_a_path(model: &str) -> bool {
    model
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The enabled key record behind the presented key, or a 401.
pub async fn authenticate(
    app: &App,
    headers: &http::HeaderMap,
) -> Result<Arc<KeyRecord>, ApiError> {
    authenticate_with(app, headers, None).await
}

/// As `authenticate`, also taking the key from the query's `key=` (Google's SDKs may send it so).
pub(crate) async fn authenticate_with(
    app: &App,
    headers: &http::HeaderMap,
    query: Option<&str>,
) -> Result<Arc<KeyRecord>, ApiError> {
    let from_query = providers::query_key(query);
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
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::new(ErrorKind::Authentication, "invalid API key"))?;
    if !key.enabled {
        return Err(ApiError::new(
            ErrorKind::Authentication,
            "this API key is disabled",
        ));
    }
    Ok(key)
}

/// Reads a request body whole within `server.body_read_timeout_secs` (else 408), refusing more
/// than `server.body_limit_bytes` with 413.
pub async fn read_body<B>(body: B, server: &crate::config::ServerConfig) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let within = Duration::from_secs(server.body_read_timeout_secs);
    match tokio::time::timeout(within, read_limited(body, server.body_limit_bytes)).await {
        Ok(read) => read,
        Err(_) => {
            let mut e = ApiError::invalid(format!(
                "the request body did not arrive within {} s",
                within.as_secs()
            ));
            e.status = http::StatusCode::REQUEST_TIMEOUT;
            Err(e)
        }
    }
}

async fn read_limited<B>(body: B, limit: u64) -> Result<Bytes, ApiError>
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The tapped body is boxed once per request (`respond::body`). glibc serves boxes of up to
    /// 1,032 bytes from its per-thread cache; a larger one goes through its shared bins, after a
    /// consolidation of the small free chunks, on every request (`UsageReader` boxes its larger
    /// readers for this).
    #[test]
    fn the_tapped_body_fits_the_allocators_thread_cache() {
        let size = std::mem::size_of::<Tapped>();
        assert!(size <= 1032, "the tapped body is {size} bytes");
    }
}
