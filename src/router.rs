//! Path → handler. Decides the surface, so every error renders in the caller's protocol.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::body::{self, Body, BoxError};
use crate::error::{ApiError, ErrorKind, Surface};
use crate::relay::{self, Endpoint};

/// Prefixes under which the Anthropic API is also served, so `ANTHROPIC_BASE_URL` may be the
/// root, `/api` or `/claude`.
const ANTHROPIC_PREFIXES: &[&str] = &["/api", "/claude"];

pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path().to_owned();
    if path == "/admin" || path.starts_with("/admin/") {
        return crate::admin::handle(&app, req).await;
    }
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/") => return root(req.method()),
        (&Method::GET, "/health") => return health(&app).await,
        (&Method::GET, "/metrics") => return metrics(&app).await,
        _ => {}
    }
    let vendor_path = ANTHROPIC_PREFIXES
        .iter()
        .find_map(|p| path.strip_prefix(p).filter(|rest| rest.starts_with("/v1/")))
        .unwrap_or(&path)
        .to_owned();
    if vendor_path == "/v1/key-info" && req.method() == Method::GET {
        return key_info(&app, req.headers())
            .await
            .unwrap_or_else(|e| e.render(Surface::Anthropic));
    }
    let endpoint = match vendor_path.as_str() {
        "/v1/messages" => (Method::POST, Endpoint::Messages),
        "/v1/messages/count_tokens" => (Method::POST, Endpoint::CountTokens),
        p if p == "/v1/models" || p.starts_with("/v1/models/") => (Method::GET, Endpoint::Models),
        _ => {
            return ApiError::not_found(format!("no route for {} {path}", req.method()))
                .render(Surface::Anthropic);
        }
    };
    if req.method() != endpoint.0 {
        let mut resp = ApiError::new(
            ErrorKind::InvalidRequest,
            format!("{} {path} is not allowed; use {}", req.method(), endpoint.0),
        )
        .render(Surface::Anthropic);
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    relay::relay(&app, endpoint.1, &vendor_path, req).await
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
        }),
    )
}

async fn metrics(app: &App) -> Response<Body> {
    account_gauges(app).await;
    let mut resp = Response::new(body::full(crate::metrics::render()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// Each account's status and load, read at scrape time (the store is the truth, shared by every
/// instance).
async fn account_gauges(app: &App) {
    use crate::scheduler::policy::Status;
    let now = jiff::Timestamp::now().as_millisecond();
    for account in app.catalog.accounts().iter() {
        let Ok(runtime) = app.store().account_runtime(account.id()).await else {
            return;
        };
        let current = runtime.health.status_at(now);
        for (status, name) in [
            (Status::Ok, "ok"),
            (Status::RateLimited, "rate_limited"),
            (Status::CoolingDown, "cooling_down"),
            (Status::Unauthorized, "unauthorized"),
        ] {
            let value = if status == current { 1.0 } else { 0.0 };
            metrics::gauge!(crate::metrics::ACCOUNT_STATUS, "account_id" => account.id().to_owned(), "status" => name)
                .set(value);
        }
        metrics::gauge!(crate::metrics::ACCOUNT_IN_FLIGHT, "account_id" => account.id().to_owned())
            .set(f64::from(runtime.in_flight));
        metrics::gauge!(crate::metrics::ACCOUNT_FAILURES, "account_id" => account.id().to_owned())
            .set(f64::from(runtime.health.consecutive_failures));
    }
}
