//! Path → handler. Decides the surface, so every error renders in the caller's protocol.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::body::{self, Body, BoxError};
use crate::error::{ApiError, ErrorKind, Surface};
use crate::providers;
use crate::relay::{self, Endpoint};

/// `peer`: the client's address (none for the CLI's requests made in process).
pub async fn handle<B>(app: Arc<App>, req: Request<B>, peer: Option<IpAddr>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path().to_owned();
    if path == "/admin" || path.starts_with("/admin/") {
        return crate::admin::handle(&app, req, peer).await;
    }
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, p) if is_base_url(p) => return root(req.method()),
        (&Method::GET, "/health") => return health(&app).await,
        (&Method::GET, "/metrics") => return metrics(&app).await,
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/files/") => {
            return crate::images::serve_file(&app, &p["/files/".len()..]).await;
        }
        _ => {}
    }
    let Some((surface, vendor_path)) = surface_of(&path, req.headers(), req.uri().query()) else {
        return ApiError::not_found(format!("no route for {} {path}", req.method()))
            .render(Surface::Anthropic);
    };
    if leaves_its_directory(&vendor_path) {
        return ApiError::invalid(format!(
            "{path}: a path with `.` or `..` segments, or an encoded `.`, `/` or `\\`, is refused"
        ))
        .render(surface);
    }
    // A Gemini path names the model, which the key's model rules, the scheduler and the price
    // table read as written: an escaped name (`gemini-2.5-pr%6F`) would pass them as another
    // model than the one the vendor decodes. No model name needs escaping.
    if surface == Surface::Gemini && vendor_path.contains('%') {
        return ApiError::invalid(format!("{path}: model names are not percent-encoded"))
            .render(surface);
    }
    if vendor_path == "/v1/key-info" && req.method() == Method::GET {
        return key_info(&app, req.headers())
            .await
            .unwrap_or_else(|e| e.render(surface));
    }
    if let Some(op) = image_operation(surface, &vendor_path) {
        if req.method() != Method::POST {
            let mut resp = ApiError::new(
                ErrorKind::InvalidRequest,
                format!("{} {path} is not allowed; use POST", req.method()),
            )
            .render(surface);
            *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            return resp;
        }
        return crate::images::relay(&app, op, req).await;
    }
    let Some(endpoint) = endpoint_of(surface, &vendor_path, req.method()) else {
        return ApiError::not_found(format!("no route for {} {path}", req.method()))
            .render(surface);
    };
    let method = endpoint.method();
    if req.method() != method {
        let mut resp = ApiError::new(
            ErrorKind::InvalidRequest,
            format!("{} {path} is not allowed; use {method}", req.method()),
        )
        .render(surface);
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    relay::relay(&app, endpoint, &vendor_path, req).await
}

/// Prefixes a client's base URL may carry, and the surface each names.
const PREFIXES: &[(&str, Surface)] = &[
    ("/api", Surface::Anthropic),
    ("/claude", Surface::Anthropic),
    ("/openai", Surface::OpenAi),
    ("/gemini", Surface::Gemini),
];

/// The root, or a prefix alone: a base URL, which clients probe (Claude Code sends `HEAD` to
/// its `ANTHROPIC_BASE_URL` at start).
fn is_base_url(path: &str) -> bool {
    path == "/"
        || PREFIXES.iter().any(|(prefix, _)| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest == "/")
        })
}

/// Which surface a path belongs to, and the vendor's path without Switchyard's prefix. Without a
/// prefix the path decides, and for `/v1/models` (every vendor has one) the credentials do:
/// `anthropic-version` or `x-api-key` is Anthropic's SDK, `x-goog-api-key`, `?key=` or
/// `x-goog-api-client` Google's, anything else OpenAI's.
fn surface_of(
    path: &str,
    headers: &http::HeaderMap,
    query: Option<&str>,
) -> Option<(Surface, String)> {
    for (prefix, surface) in PREFIXES {
        if let Some(rest) = path.strip_prefix(prefix)
            && rest.starts_with('/')
        {
            return Some((*surface, rest.to_owned()));
        }
    }
    let surface =
        if path.starts_with("/v1beta/") || path.starts_with("/v1alpha/") || is_gemini_call(path) {
            Surface::Gemini
        } else if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Surface::Anthropic
        } else if path == "/v1/models" || path.starts_with("/v1/models/") || path == "/v1/key-info"
        {
            if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
                Surface::Anthropic
            } else if headers.contains_key("x-goog-api-key")
                || headers.contains_key("x-goog-api-client")
                || providers::query_key(query).is_some()
            {
                Surface::Gemini
            } else {
                Surface::OpenAi
            }
        } else if path.starts_with("/v1/") {
            Surface::OpenAi
        } else {
            return None;
        };
    Some((surface, path.to_owned()))
}

/// `/v1/models/{model}:{method}`: a Gemini model name has no colon, so one colon in the last
/// segment, before a method's name (camel case: `generateContent`, `countTokens`; or
/// `predict`), is a call. OpenAI's fine-tuned ids (`ft:gpt-4o-mini:org::id`) have several
/// colons, an OpenAI-compatible vendor's tagged ids (`llama3.1:8b`, `qwen:latest`) no method.
fn is_gemini_call(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/models/") else {
        return false;
    };
    let mut parts = rest.split(':');
    let (Some(_), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    method.bytes().all(|b| b.is_ascii_alphabetic())
        && (method.bytes().any(|b| b.is_ascii_uppercase()) || method == "predict")
}

/// Whether a path could name another endpoint than it seems to once a server resolves it: a dot
/// segment, also one made by escaped slashes or backslashes (`x%2F..%2Ffiles`), or an escaped
/// dot. The vendor path goes upstream with the account's credentials, so `/v1/models/../files`
/// must not reach a vendor that resolves it. An escaped slash alone is fine: OpenAI SDKs send
/// `models/Qwen%2FQwen2.5-7B` for an OpenAI-compatible vendor's model id.
fn leaves_its_directory(path: &str) -> bool {
    let escaped_dot = path
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'e'));
    if escaped_dot {
        return true;
    }
    let dot_segment = |p: &str| p.split('/').any(|s| s == "." || s == "..");
    // The common path has neither escapes nor backslashes: read as it is.
    if !path.contains(['%', '\\']) {
        return dot_segment(path);
    }
    let unescaped = path
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%5C", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    dot_segment(&unescaped)
}

/// The image operation a vendor path names: OpenAI's images endpoints, and Imagen's native
/// `:predict` (billed per image, so it takes the image path rather than the text one).
fn image_operation(surface: Surface, path: &str) -> Option<crate::images::Operation> {
    use crate::images::Operation;
    match (surface, endpoint_of(surface, path, &Method::POST)) {
        (Surface::OpenAi, _) => match path {
            "/v1/images/generations" => Some(Operation::Generations),
            "/v1/images/edits" => Some(Operation::Edits),
            _ => None,
        },
        (
            Surface::Gemini,
            Some(Endpoint::Gemini {
                version,
                model,
                method,
            }),
        ) if method == "predict" => Some(Operation::Predict { version, model }),
        _ => None,
    }
}

/// The endpoint a vendor path names on a surface; `method` is the request's, for the paths that
/// take several.
fn endpoint_of(surface: Surface, path: &str, method: &Method) -> Option<Endpoint> {
    match surface {
        Surface::Anthropic => match path {
            "/v1/messages" => Some(Endpoint::Messages),
            "/v1/messages/count_tokens" => Some(Endpoint::CountTokens),
            p if p == "/v1/models" || p.starts_with("/v1/models/") => {
                Some(Endpoint::AnthropicModels)
            }
            _ => None,
        },
        Surface::OpenAi => {
            let rest = path.strip_prefix("/v1")?;
            match rest {
                "/chat/completions" => Some(Endpoint::ChatCompletions),
                "/responses" | "/responses/compact" => Some(Endpoint::Responses {
                    path: rest.to_owned(),
                }),
                p if p.starts_with("/responses/") => stored_response(p, method),
                "/embeddings" => Some(Endpoint::Embeddings),
                p if p == "/models" || p.starts_with("/models/") => {
                    Some(Endpoint::OpenAiModels { path: p.to_owned() })
                }
                _ => None,
            }
        }
        Surface::Gemini => {
            let (version, rest) = path.strip_prefix('/')?.split_once('/')?;
            if !matches!(version, "v1beta" | "v1" | "v1alpha") {
                return None;
            }
            let version = version.to_owned();
            let model_path = rest.strip_prefix("models/");
            match model_path.and_then(|m| m.rsplit_once(':')) {
                Some((model, method)) if !model.is_empty() && !method.is_empty() => {
                    Some(Endpoint::Gemini {
                        version,
                        model: model.to_owned(),
                        method: method.to_owned(),
                    })
                }
                Some(_) => None,
                None if rest == "models" || model_path.is_some() => Some(Endpoint::GeminiModels {
                    version,
                    rest: rest.to_owned(),
                }),
                None => None,
            }
        }
        Surface::Admin => None,
    }
}

/// `/responses/{id}` (GET, DELETE), `/responses/{id}/cancel` (POST),
/// `/responses/{id}/input_items` (GET). Another method gets the endpoint with the expected one,
/// which the router answers with 405.
fn stored_response(path: &str, method: &Method) -> Option<Endpoint> {
    let rest = path.strip_prefix("/responses/")?;
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    if id.is_empty() {
        return None;
    }
    let expected = match action {
        "" if *method == Method::DELETE => Method::DELETE,
        "" | "input_items" => Method::GET,
        "cancel" => Method::POST,
        _ => return None,
    };
    Some(Endpoint::StoredResponse {
        path: path.to_owned(),
        method: expected,
    })
}

/// `GET /v1/key-info`: the presented key's limits, use and expiry, for its holder.
async fn key_info(app: &App, headers: &http::HeaderMap) -> Result<Response<Body>, ApiError> {
    let key = relay::authenticate(app, headers).await?;
    let base = json!({ "id": key.id, "name": key.name, "enabled": key.enabled });
    let view = crate::limits::info::view(app, &key, base).await?;
    Ok(body::json(StatusCode::OK, &view))
}

/// Claude Code probes the root with HEAD before its first request.
fn root(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD {
        body::empty()
    } else {
        body::full("switchyard\n")
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

async fn health(app: &App) -> Response<Body> {
    let store = app.store().ping().await;
    let status = if store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    body::json(
        status,
        &json!({
            "status": if store.is_ok() { "ok" } else { "unavailable" },
            "store": match &store { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": app.started.elapsed().as_secs(),
            "worker_connections": app
                .workers
                .iter()
                .map(|w| w.connections.load(std::sync::atomic::Ordering::Relaxed))
                .collect::<Vec<_>>(),
        }),
    )
}

async fn metrics(app: &App) -> Response<Body> {
    // The accounts' state is read from the store at most once a second: `/metrics` takes no
    // credential, and a store call per account per scrape was the store's load to set.
    let now = jiff::Timestamp::now().as_millisecond();
    let last = app
        .accounts_scraped_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(last) >= 1_000
        && app
            .accounts_scraped_ms
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        account_gauges(app).await;
    }
    let mut resp = Response::new(body::full(crate::metrics::render()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// Each account's status and load, read at scrape time (the store is the truth, shared by every
/// instance). An account deleted since the last scrape reads all zeros: no status, nothing in
/// flight (the exporter cannot drop a series).
async fn account_gauges(app: &App) {
    use crate::scheduler::policy::Status;
    let now = jiff::Timestamp::now().as_millisecond();
    let accounts = app.catalog.accounts();
    let gone: Vec<String> = {
        let mut shown = app
            .accounts_shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current: Vec<String> = accounts.iter().map(|a| a.id().to_owned()).collect();
        std::mem::replace(&mut *shown, current)
            .into_iter()
            .filter(|id| accounts.iter().all(|a| a.id() != id))
            .collect()
    };
    let set = |id: &str, current: Option<Status>, in_flight: u32, failures: u32, spent: bool| {
        for (status, name) in [
            (Status::Ok, "ok"),
            (Status::RateLimited, "rate_limited"),
            (Status::CoolingDown, "cooling_down"),
            (Status::Unauthorized, "unauthorized"),
        ] {
            let value = if Some(status) == current { 1.0 } else { 0.0 };
            metrics::gauge!(crate::metrics::ACCOUNT_STATUS, "account_id" => id.to_owned(), "status" => name)
                .set(value);
        }
        metrics::gauge!(crate::metrics::ACCOUNT_IN_FLIGHT, "account_id" => id.to_owned())
            .set(f64::from(in_flight));
        metrics::gauge!(crate::metrics::ACCOUNT_FAILURES, "account_id" => id.to_owned())
            .set(f64::from(failures));
        metrics::gauge!(crate::metrics::ACCOUNT_BUDGET_SPENT, "account_id" => id.to_owned())
            .set(if spent { 1.0 } else { 0.0 });
    };
    for id in &gone {
        set(id, None, 0, 0, false);
    }
    for account in accounts.iter() {
        let Ok(runtime) = app.store().account_runtime(account.id()).await else {
            return;
        };
        set(
            account.id(),
            Some(runtime.health.status_at(now)),
            runtime.in_flight,
            runtime.health.consecutive_failures,
            runtime.health.budget_spent_at(now),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colon_in_a_model_path_is_gemini_only_as_its_one_method() {
        let bearer = {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static("Bearer sy-x"),
            );
            h
        };
        for (path, surface) in [
            (
                "/v1/models/gemini-2.5-flash:generateContent",
                Surface::Gemini,
            ),
            ("/v1/models/ft:gpt-4o-mini:org::abc123", Surface::OpenAi),
            (
                "/v1/models/ft:gpt-4o-mini:org:suffix:abc123",
                Surface::OpenAi,
            ),
            ("/v1/models/gpt-4o", Surface::OpenAi),
            ("/v1/models/llama3.1:8b", Surface::OpenAi),
            ("/v1/models/qwen:latest", Surface::OpenAi),
            (
                "/v1/models/imagen-4.0-generate-001:predict",
                Surface::Gemini,
            ),
            ("/v1/models/gemini-2.5-flash:countTokens", Surface::Gemini),
            (
                "/v1alpha/models/gemini-2.5-flash:generateContent",
                Surface::Gemini,
            ),
        ] {
            assert_eq!(
                surface_of(path, &bearer, None).map(|(s, _)| s),
                Some(surface),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_that_leave_their_directory() {
        for path in [
            "/v1/models/../files",
            "/v1/models/./x",
            "/v1/models/..",
            "/v1/models/%2e%2e/files",
            "/v1/models/%2E%2E/files",
            "/v1/models/x%2F..%2Ffiles",
            "/v1/models/x%5C..%5Cfiles",
            "/v1/models/x\\..\\files",
        ] {
            assert!(leaves_its_directory(path), "{path}");
        }
        for path in [
            "/v1/messages",
            "/v1/models/claude-sonnet-4.5",
            "/v1/models/ft:gpt-4o-mini:org::abc",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "/v1/models/a..b",
            "/v1/models/%20",
            "/v1/models/Qwen%2FQwen2.5-7B",
        ] {
            assert!(!leaves_its_directory(path), "{path}");
        }
    }
}
