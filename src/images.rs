//! Image generation, in order:
//!
//! ```text
//! auth      the key, as for text (relay::authenticate_with)
//! body      read whole; parsed: JSON (generations), multipart (edits), Imagen's predict (native)
//! admit     limits::admit on the "images" surface: access rules, lease, reservations
//! cache     identical request within the TTL: the stored result, no upstream call (cache.rs)
//! send      relay::failover::attempts: OpenAI / Azure accounts, or Gemini ones (translated by
//!           gemini.rs); image timeouts of their own
//! read      the whole answer, within images.read_timeout_secs and max_response_bytes
//! cost      per image and per token (pricing::Pricing::image_cost)
//! store     images written to storage (storage.rs, files.rs), handed out as /files/{id} URLs
//! settle    the key's counters, stats (with the image count), then the answer
//! ```
//!
//! Unlike text, an image answer is buffered: it must be read to be counted, priced and stored,
//! and it is one JSON document, not a stream.

pub mod answer;
pub mod cache;
pub mod files;
pub mod gemini;
pub mod request;
pub mod storage;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use crate::app::App;
use crate::auth::new_id;
use crate::body::{self, Body, BoxError};
use crate::config::ImagesConfig;
use crate::error::{ApiError, ErrorKind, Surface};
use crate::limits::{self, Spent};
use crate::metrics as m;
use crate::pricing::ImageAsk;
use crate::providers;
use crate::relay::call::{Call, Respond, Target, Unread, WholeAnswer};
use crate::relay::failover::{self, Attempts, Ctx, Served};
use crate::relay::{authenticate_with, read_body};
use crate::store::{KeyRecord, RequestLogEntry};
use crate::usage::TokenUsage;
use answer::{Data, Generated};
use request::{Format, ImageRequest};
use storage::Storage;

/// Which image operation a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `POST /v1/images/generations` (JSON).
    Generations,
    /// `POST /v1/images/edits` (multipart).
    Edits,
    /// Gemini's native `POST /{version}/models/{model}:predict` (Imagen): relayed as sent.
    Predict { version: String, model: String },
}

impl Operation {
    fn name(&self) -> &'static str {
        match self {
            Operation::Generations => "generations",
            Operation::Edits => "edits",
            Operation::Predict { .. } => "predict",
        }
    }

    fn surface(&self) -> Surface {
        match self {
            Operation::Predict { .. } => Surface::Gemini,
            _ => Surface::OpenAi,
        }
    }
}

/// Relays one image request; errors render in the caller's protocol.
pub async fn relay<B>(app: &Arc<App>, op: Operation, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let request_id = new_id("req");
    let surface = op.surface();
    match forward(app, &op, req, started, &request_id).await {
        Ok(resp) => resp,
        Err(err) => {
            metrics::counter!(m::REQUESTS, "surface" => "images", "status" => err.status.as_str().to_owned())
                .increment(1);
            tracing::info!(
                request_id = %request_id,
                status = err.status.as_u16(),
                latency_ms = started.elapsed().as_millis() as u64,
                error = %err.message,
                "image request refused"
            );
            err.render(surface)
        }
    }
}

/// What one request's record needs, gathered on the way.
struct Record<'a> {
    request_id: &'a str,
    at_ms: i64,
    started: Instant,
    key: &'a KeyRecord,
    model: &'a str,
}

impl Record<'_> {
    fn entry(
        &self,
        account_id: Option<String>,
        status: u16,
        ttfb_ms: Option<u64>,
    ) -> RequestLogEntry {
        RequestLogEntry {
            request_id: self.request_id.to_owned(),
            at: self.at_ms,
            key_id: self.key.id.clone(),
            account_id,
            model: self.model.to_owned(),
            surface: "images".to_owned(),
            status,
            latency_ms: self.started.elapsed().as_millis() as u64,
            ttfb_ms,
            usage: TokenUsage::default(),
            cost_nanousd: 0,
            cache_hit: false,
            estimated: false,
        }
    }
}

async fn forward<B>(
    app: &Arc<App>,
    op: &Operation,
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
    let body = read_body(body, &app.config.server).await?;
    let ask = match op {
        Operation::Generations => request::parse_json(&body)?,
        Operation::Edits => {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            request::parse_multipart(ct, &body)?
        }
        Operation::Predict { model, .. } => predict_request(model, &body)?,
    };
    let to_gemini = matches!(op, Operation::Predict { .. }) || gemini::serves(&ask.model);
    if *op == Operation::Edits && to_gemini {
        return Err(ApiError::invalid(format!(
            "image edits are relayed to OpenAI and Azure OpenAI models; {} is not one",
            ask.model
        )));
    }
    if to_gemini && !matches!(op, Operation::Predict { .. }) {
        gemini::check(&ask)?;
    }
    // What the prompt weighs: an edit's files are images, not text (a 3 MB PNG read as text
    // would reserve a million tokens), each estimated as IMAGE_INPUT_TOKENS.
    let prompt_len = match ask.input_images {
        0 => body.len(),
        files => ask.text_len.saturating_add(
            usize::try_from(files.saturating_mul(IMAGE_INPUT_TOKENS))
                .unwrap_or(usize::MAX)
                .saturating_mul(
                    usize::try_from(app.config.limits.bytes_per_token).unwrap_or(usize::MAX),
                ),
        ),
    };
    let mut key_lease = limits::admit(
        app,
        &key,
        &limits::Request {
            surface: "images",
            client: limits::access::client_of(&parts.headers),
            model: Some(&ask.model),
            max_tokens: None,
            body_len: prompt_len,
            billed: true,
            cost_nanousd: Some(reservation(app, &ask, prompt_len)),
        },
    )
    .await?;
    let record = Record {
        request_id,
        at_ms,
        started,
        key: &key,
        model: &ask.model,
    };
    let cfg = &app.config.images;
    let storage = app.image_storage.clone();
    let native = matches!(op, Operation::Predict { .. });
    let label = m::model_label(&ask.model).to_owned();
    let format = answer_format(app, &ask, storage.is_some());
    let links = Links::of(app, &parts.headers);

    // The cache: native answers go back as sent, so only translated and OpenAI ones are cached.
    let cache_key = match (&storage, cfg.cache.enabled && !native) {
        (Some(_), true) => Some(cache::key(&key.id, op.name(), &ask.model, &ask.fingerprint)),
        _ => None,
    };
    if let (Some(storage), Some(ck)) = (&storage, &cache_key) {
        match cached(app, storage, ck, format, &links).await {
            Some(body) => {
                metrics::counter!(m::IMAGE_CACHE_HITS, "model" => label).increment(1);
                let images = body.1;
                let mut entry = record.entry(None, 200, None);
                entry.usage.images = images;
                entry.cache_hit = true;
                key_lease.settle(Spent::ONE_REQUEST);
                finish(app, entry, true);
                return Ok(json_response(StatusCode::OK, HeaderMap::new(), body.0));
            }
            None => {
                metrics::counter!(m::IMAGE_CACHE_MISSES, "model" => label.clone()).increment(1);
            }
        }
    }

    let call = build_call(
        app,
        op,
        &ask,
        &body,
        storage.is_some(),
        to_gemini,
        parts.uri.query(),
    );
    let ctx = Ctx {
        request_id,
        at_ms,
        started,
    };
    let Served {
        picked,
        upstream,
        read: _,
        sent_at,
        head_at,
        queued: _,
    } = match failover::attempts(app, &call, &parts.headers, &key, &mut key_lease, &ctx).await {
        Ok(Attempts::Served(served)) => served,
        // Every account tried failed without an answer (timeouts, connect errors, answers cut
        // or too large).
        Err(e) if key_lease.sent() => {
            unusable(app, record.entry(None, e.status.as_u16(), None));
            return Err(e);
        }
        Err(e) => return Err(e),
        // Every account failed with an answer: counted and logged as an image request.
        Ok(Attempts::Failed(answer)) => {
            finish(
                app,
                record.entry(None, answer.status().as_u16(), None),
                false,
            );
            return Ok(answer);
        }
    };
    let account_id = picked.account.id().to_owned();
    let budgeted = crate::budget::Budget::of(&picked.account.record).is_some();
    let ttfb_ms = Some((head_at - sent_at).as_millis() as u64);
    let status = upstream.status();
    let headers = providers::response_headers(upstream.headers().clone());
    let raw = read_all(upstream, whole_answer(cfg)).await;
    drop(picked);
    let raw = match raw {
        Ok(raw) => raw,
        // Cut, too large or too slow.
        Err(e) => {
            unusable(
                app,
                record.entry(Some(account_id), e.status.as_u16(), ttfb_ms),
            );
            return Err(e);
        }
    };
    if !status.is_success() {
        // The upstream's own answer (a refused prompt, a bad size): passed on, not billed.
        let entry = record.entry(Some(account_id), status.as_u16(), ttfb_ms);
        key_lease.settle(Spent::ONE_REQUEST);
        finish(app, entry, false);
        return Ok(passthrough(status, headers, raw));
    }
    let generated = match op {
        Operation::Predict { .. } => gemini::from_predict(&raw),
        _ if to_gemini && gemini::is_imagen(&ask.model) => gemini::from_predict(&raw),
        _ if to_gemini => gemini::from_generate(&raw),
        _ => answer::from_openai(&raw),
    };
    let mut generated = match generated {
        Ok(g) => g,
        Err(e) => {
            unusable(
                app,
                record.entry(Some(account_id), e.status.as_u16(), ttfb_ms),
            );
            return Err(e);
        }
    };
    generated.usage = generated.usage.capped();
    let pricing = app.pricing();
    let cost = pricing.image_cost(
        &ask.model,
        &ImageAsk {
            size: ask.size.as_deref(),
            quality: ask.quality.as_deref(),
            image_input_tokens: generated.image_input_tokens,
        },
        &generated.usage,
    );
    if budgeted {
        // Before the results are stored: a client leaving then does not take the charge away.
        crate::budget::charge(app, &account_id, request_id, started, cost.nanousd);
    }
    if !cost.known_model {
        metrics::counter!(m::UNKNOWN_MODEL_PRICE, "model" => label.clone()).increment(1);
    }
    metrics::counter!(m::IMAGES, "model" => label.clone()).increment(generated.usage.images);
    metrics::counter!(m::COST, "model" => label).increment(cost.nanousd);

    let body = if native {
        raw
    } else {
        // Kept only when a link or the cache refers to them: a file nothing names would be
        // written (and swept) for nothing.
        let stored = match &storage {
            Some(storage) if format == Format::Url || cache_key.is_some() => {
                store(app, storage, &generated, cache_key.as_deref()).await
            }
            _ => Vec::new(),
        };
        let urls: Vec<Option<String>> = stored
            .iter()
            .map(|id| id.as_ref().map(|id| links.url(id)))
            .collect();
        if storage.is_none() && !to_gemini && ask.response_format.is_none_or(|f| f == format) {
            // Nothing to change: the upstream's answer as it was.
            raw
        } else {
            answer::to_openai(&generated, format, &urls)
        }
    };
    let mut entry = record.entry(Some(account_id), status.as_u16(), ttfb_ms);
    entry.usage = generated.usage;
    entry.cost_nanousd = cost.nanousd;
    key_lease.settle(Spent::of(&generated.usage, cost.nanousd));
    tracing::info!(
        request_id,
        key_id = %key.id,
        account_id = ?entry.account_id,
        model = %ask.model,
        status = entry.status,
        latency_ms = entry.latency_ms,
        images = generated.usage.images,
        cost_nanousd = cost.nanousd,
        "image request"
    );
    finish(app, entry, true);
    Ok(json_response(status, headers, body))
}

/// What admission reserves for an image request: its images at their per-image price, or, for
/// token-billed models, the body as input and `limits.default_max_tokens` output tokens per
/// image (gpt-image-1 makes about 4,000 for a large high-quality image).
fn reservation(app: &App, ask: &ImageRequest, body_len: usize) -> u64 {
    let limits = &app.config.limits;
    let usage = TokenUsage {
        input_tokens: u64::try_from(body_len)
            .unwrap_or(u64::MAX)
            .div_ceil(limits.bytes_per_token.max(1)),
        output_tokens: limits.default_max_tokens.saturating_mul(ask.n),
        ..TokenUsage::default()
    };
    let pricing = app.pricing();
    let per_image = pricing
        .images()
        .price(&ask.model)
        .and_then(|p| p.per_image(ask.size.as_deref(), ask.quality.as_deref()));
    match per_image {
        Some(price) => price.saturating_mul(ask.n),
        None => pricing.cost(&ask.model, &usage).nanousd,
    }
}

/// Input tokens an edit's reservation assumes per image file it sends (OpenAI counts an input
/// image in the hundreds to a few thousand tokens, by size and fidelity); the settle bills what
/// the answer reports.
const IMAGE_INPUT_TOKENS: u64 = 2_000;

/// A request sent upstream whose answer never came whole or could not be read: logged with the
/// status the client gets, whose count in the metrics `relay` adds with the refusal. Its key
/// lease, dropped with the request, counts one request (`KeyLease::mark_sent`).
fn unusable(app: &App, entry: RequestLogEntry) {
    app.stats.record(entry, false);
}

/// Counts the request and hands its record to stats.
fn finish(app: &App, entry: RequestLogEntry, billed: bool) {
    metrics::counter!(m::REQUESTS, "surface" => "images", "status" => entry.status.to_string())
        .increment(1);
    app.stats.record(entry, billed);
}

/// The form the client gets: what it asked for; else links when storage is on and
/// `return_url_by_default` says so; else the model's own default (links for DALL·E, inline for
/// everything else).
fn answer_format(app: &App, ask: &ImageRequest, storage: bool) -> Format {
    if let Some(f) = ask.response_format {
        return f;
    }
    if storage && app.config.images.return_url_by_default {
        return Format::Url;
    }
    if ask.model.starts_with("dall-e") {
        Format::Url
    } else {
        Format::B64Json
    }
}

/// Imagen's native request: the model from the path, the image count from `sampleCount`.
fn predict_request(model: &str, body: &[u8]) -> Result<ImageRequest, ApiError> {
    crate::relay::check_model_name(model)?;
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))?;
    let instances = v["instances"].as_array().map_or(1, Vec::len).max(1) as u64;
    // Google's default is as many as the model makes (four; Imagen Ultra one).
    let per = v["parameters"]["sampleCount"]
        .as_u64()
        .unwrap_or_else(|| gemini::imagen_max_n(model))
        .max(1);
    Ok(ImageRequest {
        model: model.to_owned(),
        prompt: v["instances"][0]["prompt"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        n: instances.saturating_mul(per),
        size: None,
        quality: None,
        response_format: None,
        output_format: None,
        fingerprint: [0; 32],
        input_images: 0,
        text_len: 0,
    })
}

/// What goes upstream. With storage on, an OpenAI generations body asks for `b64_json` (DALL·E)
/// or no `response_format` (gpt-image, which only answers inline), so the images can be kept;
/// edits go as the client sent them.
fn build_call(
    app: &App,
    op: &Operation,
    ask: &ImageRequest,
    body: &Bytes,
    storage: bool,
    to_gemini: bool,
    query: Option<&str>,
) -> Call {
    let (target, upstream_body, query) = match op {
        Operation::Predict { version, model } => (
            Target::Gemini {
                version: version.clone(),
                path: format!("models/{model}:predict"),
            },
            body.clone(),
            query.map(str::to_owned),
        ),
        _ if to_gemini => {
            let (path, body) = gemini::request(ask);
            (
                Target::Gemini {
                    version: "v1beta".to_owned(),
                    path,
                },
                body,
                None,
            )
        }
        Operation::Generations => (
            Target::OpenAi {
                path: "/images/generations".to_owned(),
            },
            if storage {
                ask_inline(body, &ask.model)
            } else {
                body.clone()
            },
            None,
        ),
        Operation::Edits => (
            Target::OpenAi {
                path: "/images/edits".to_owned(),
            },
            body.clone(),
            None,
        ),
    };
    Call {
        surface: op.surface(),
        target,
        method: http::Method::POST,
        model: Some(ask.model.clone()),
        max_tokens: None,
        client_body: body.clone(),
        body: upstream_body,
        usage: None,
        respond: Respond::Passthrough,
        query,
        session: None,
        streams: false,
        first_byte_timeout: Some(Duration::from_secs(
            app.config.images.first_byte_timeout_secs,
        )),
        whole_answer: Some(whole_answer(&app.config.images)),
    }
}

/// The generations body asking for inline images.
fn ask_inline(body: &Bytes, model: &str) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
    else {
        return body.clone();
    };
    if model.starts_with("gpt-image") {
        v.remove("response_format");
    } else {
        v.insert("response_format".into(), "b64_json".into());
    }
    Bytes::from(serde_json::Value::Object(v).to_string())
}

/// How image answers are read: whole, within `images.read_timeout_secs` and
/// `images.max_response_bytes`.
fn whole_answer(cfg: &ImagesConfig) -> WholeAnswer {
    WholeAnswer {
        within: Duration::from_secs(cfg.read_timeout_secs),
        max_bytes: cfg.max_response_bytes,
    }
}

/// Reads the whole upstream answer. A successful one is already in memory (the attempt read it:
/// `Call::whole_answer`); an error answer is read here.
async fn read_all(
    upstream: crate::upstream_client::UpstreamResponse,
    whole: WholeAnswer,
) -> Result<Bytes, ApiError> {
    match whole.read(upstream).await {
        Ok((_, body)) => Ok(body),
        Err(Unread::TooLarge) => Err(ApiError::new(
            ErrorKind::BadGateway,
            format!(
                "the upstream's image answer is larger than {} bytes",
                whole.max_bytes
            ),
        )),
        Err(Unread::Cut(e)) => Err(ApiError::new(
            ErrorKind::BadGateway,
            format!("the upstream's image answer was cut: {e}"),
        )),
        Err(Unread::TimedOut) => {
            metrics::counter!(m::UPSTREAM_ERRORS, "reason" => "image_read_timeout").increment(1);
            Err(ApiError::new(
                ErrorKind::GatewayTimeout,
                format!(
                    "the upstream's image answer did not arrive within {} s",
                    whole.within.as_secs()
                ),
            ))
        }
    }
}

/// How URLs of stored files are written: `images.public_url`, else the request's own host.
struct Links {
    base: String,
}

impl Links {
    fn of(app: &App, headers: &HeaderMap) -> Links {
        let base = match &app.config.images.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("localhost");
                let scheme = headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .filter(|p| *p == "https")
                    .unwrap_or("http");
                format!("{scheme}://{host}")
            }
        };
        Links { base }
    }

    fn url(&self, id: &str) -> String {
        format!("{}/files/{id}", self.base)
    }
}

/// Writes every inline image to storage; returns each image's file id (`None` for upstream
/// links and failed writes). With `cache_key`, and every image stored, records the result.
async fn store(
    app: &App,
    storage: &Storage,
    generated: &Generated,
    cache_key: Option<&str>,
) -> Vec<Option<String>> {
    let cfg = &app.config.images;
    let now = app.clock.now_ms();
    let secs = |s: u64| i64::try_from(s.saturating_mul(1_000)).unwrap_or(i64::MAX / 4);
    // A cached result's files outlive the entry by a URL's life.
    let extra = if cache_key.is_some() {
        secs(cfg.cache.ttl_secs)
    } else {
        0
    };
    let expires_ms = now + extra + secs(cfg.url_ttl_secs);
    let delete_ms = (now + secs(cfg.retention_secs)).max(expires_ms);
    let mut ids = Vec::with_capacity(generated.images.len());
    let mut cached = Vec::with_capacity(generated.images.len());
    for image in &generated.images {
        let Data::Bytes { bytes, mime } = &image.data else {
            ids.push(None);
            continue;
        };
        let meta = files::FileMeta {
            mime: mime.clone(),
            created_ms: now,
            expires_ms,
            delete_ms,
        };
        match files::save(storage, bytes.clone(), &meta).await {
            Ok(id) => {
                cached.push(cache::CachedImage {
                    id: id.clone(),
                    mime: mime.clone(),
                    revised_prompt: image.revised_prompt.clone(),
                });
                ids.push(Some(id));
            }
            Err(e) => {
                tracing::warn!(error = %e, "an image could not be stored; it is answered inline");
                ids.push(None);
            }
        }
    }
    if let Some(key) = cache_key
        && !cached.is_empty()
        && cached.len() == generated.images.len()
    {
        let entry = cache::Entry {
            created_ms: now,
            expires_ms: now + secs(cfg.cache.ttl_secs),
            images: cached,
        };
        if let Err(e) = cache::put(storage, key, &entry).await {
            tracing::warn!(error = %e, "an image result could not be cached");
        }
    }
    ids
}

/// The answer from the cache, and how many images it has; `None` on a miss (or a cached file
/// that is gone).
async fn cached(
    app: &App,
    storage: &Storage,
    key: &str,
    format: Format,
    links: &Links,
) -> Option<(Bytes, u64)> {
    let now = app.clock.now_ms();
    let entry = match cache::lookup(storage, key, now).await {
        Ok(entry) => entry?,
        Err(e) => {
            tracing::warn!(error = %e, "the image cache could not be read");
            return None;
        }
    };
    let mut generated = Generated::default();
    let mut urls = Vec::with_capacity(entry.images.len());
    for image in &entry.images {
        let data = match format {
            Format::Url => {
                files::meta(storage, &image.id, now).await.ok()??;
                urls.push(Some(links.url(&image.id)));
                Data::Bytes {
                    bytes: Bytes::new(),
                    mime: image.mime.clone(),
                }
            }
            Format::B64Json => {
                let (_, bytes) = files::open(storage, &image.id, now).await.ok()??;
                urls.push(None);
                Data::Bytes {
                    bytes,
                    mime: image.mime.clone(),
                }
            }
        };
        generated.images.push(answer::Image {
            data,
            revised_prompt: image.revised_prompt.clone(),
        });
    }
    generated
        .fields
        .insert("created".into(), (entry.created_ms / 1_000).into());
    let n = generated.images.len() as u64;
    Some((answer::to_openai(&generated, format, &urls), n))
}

fn passthrough(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn json_response(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Response<Body> {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    passthrough(status, headers, body)
}

/// `GET /files/{id}`: the stored image while its URL lives, else 404. No key: the unguessable
/// id is the credential, so links work in a browser or an `<img>` tag.
pub async fn serve_file(app: &App, id: &str) -> Response<Body> {
    let not_found =
        || ApiError::not_found("no such file, or its link expired").render(Surface::OpenAi);
    let Some(storage) = &app.image_storage else {
        return not_found();
    };
    match files::open(storage, id, app.clock.now_ms()).await {
        Ok(Some((meta, bytes))) => {
            let mut resp = Response::new(body::full(bytes));
            let headers = resp.headers_mut();
            if let Ok(ct) = HeaderValue::from_str(&meta.mime) {
                headers.insert(header::CONTENT_TYPE, ct);
            }
            let left = (meta.expires_ms - app.clock.now_ms()).max(0) / 1_000;
            if let Ok(cc) = HeaderValue::from_str(&format!("private, max-age={left}")) {
                headers.insert(header::CACHE_CONTROL, cc);
            }
            headers.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            resp
        }
        Ok(None) => not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "a stored image could not be read");
            ApiError::new(ErrorKind::Unavailable, "the image storage is unavailable")
                .render(Surface::OpenAi)
        }
    }
}

/// Deletes expired images every `images.sweep_interval_secs` while the app lives.
pub fn spawn_sweeper(app: &Arc<App>) {
    if app.image_storage.is_none() {
        return;
    }
    let weak: Weak<App> = Arc::downgrade(app);
    let every = Duration::from_secs(app.config.images.sweep_interval_secs);
    let mut at = min_ages(&app.config.images);
    // Stopped by: the app being dropped (the next tick finds no app), or the runtime's end.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { return };
            let Some(storage) = app.image_storage.clone() else {
                return;
            };
            let now = app.clock.now_ms();
            drop(app);
            // Round after round until the listing wrapped: a round deletes at most a thousand,
            // and more than that may expire between two ticks.
            let mut deleted = 0;
            at.start_lap();
            for _ in 0..ROUNDS_PER_TICK {
                match files::sweep(&storage, now, &mut at).await {
                    Ok(n) => deleted += n,
                    Err(e) => {
                        tracing::warn!(error = %e, "image sweep failed; retried next round");
                        break;
                    }
                }
                if at.went_round() {
                    break;
                }
            }
            if deleted > 0 {
                tracing::info!(deleted, "expired images deleted");
            }
        }
    });
}

/// A sweep that reads only the records old enough to be due.
fn min_ages(cfg: &ImagesConfig) -> files::Sweep {
    files::Sweep::with_min_ages(cfg.retention_secs, cfg.cache.ttl_secs)
}

/// Sweep rounds per tick at most (a round looks at 10,000 names of each kind).
const ROUNDS_PER_TICK: usize = 100;
/// And for one sweep now.
const SWEEP_NOW_ROUNDS: usize = 1_000;

/// One sweep now (tests, and an admin who wants space back at once).
pub async fn sweep_now(app: &App) -> usize {
    match &app.image_storage {
        Some(storage) => {
            // Round after round until both listings went round: every name looked at once.
            let (mut at, mut deleted) = (min_ages(&app.config.images), 0);
            for _ in 0..SWEEP_NOW_ROUNDS {
                match files::sweep(storage, app.clock.now_ms(), &mut at).await {
                    Ok(n) => deleted += n,
                    Err(_) => return deleted,
                }
                if at.went_round() {
                    break;
                }
            }
            deleted
        }
        None => 0,
    }
}
