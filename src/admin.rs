//! The admin API: `/admin/...`, every route behind `Authorization: Bearer <admin token>`, and
//! the admin console at `/admin/ui/` (`ui`), a page that asks for the token and calls the API.
//!
//! The CLI drives the same handlers, in process or over HTTP, so both behave alike.

mod accounts;
pub(crate) mod guard;
mod keys;
mod ui;
mod usage;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::app::App;
use crate::body::{self, Body, BoxError};
use crate::error::{ApiError, ErrorKind, Surface};

/// `peer`: the client's address (none for the CLI's requests made in process), by which
/// refusals of the admin token are counted (`guard`) and changes told (`audit`).
pub async fn handle<B>(app: &Arc<App>, req: Request<B>, peer: Option<IpAddr>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if app.config.server.admin_console
        && let Some(resp) = ui::serve(req.method(), req.uri().path(), req.headers())
    {
        return resp;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let now = std::time::Instant::now();
    if let Some(ip) = peer
        && let Err(wait) = app.admin_guard.check(ip, now)
    {
        tracing::warn!(target: "switchyard::audit", %method, path, peer = %ip, "admin request held back: too many refused tokens");
        return ApiError::new(
            ErrorKind::RateLimited,
            "too many refused admin tokens from this address: wait, then try again",
        )
        .with_retry_after(wait)
        .render(Surface::Admin);
    }
    let mut fields = String::new();
    let resp = match route(app, req, &mut fields).await {
        Ok(resp) => resp,
        Err(err) => err.render(Surface::Admin),
    };
    if resp.status() == StatusCode::UNAUTHORIZED
        && let Some(ip) = peer
    {
        app.admin_guard.refused(ip, now);
    }
    audit(&method, &path, peer, &fields, &resp);
    resp
}

/// The id of the record a `POST` made, for the audit line (a response extension).
#[derive(Clone)]
struct Created(String);

/// One line per change made through the admin API (target `switchyard::audit`): the method,
/// the path (which names the record), the outcome, the record a `POST` made and the names of
/// the fields sent, never their values (an api key, a proxy's password may be among them). And
/// one warning per refused admin token, for whoever watches for guessing.
fn audit(method: &Method, path: &str, peer: Option<IpAddr>, fields: &str, resp: &Response<Body>) {
    let status = resp.status().as_u16();
    let peer = peer.map(tracing::field::display);
    if status == 401 {
        tracing::warn!(target: "switchyard::audit", %method, path, status, peer, "admin token refused");
        return;
    }
    if method == Method::GET || method == Method::HEAD {
        return;
    }
    let created = resp.extensions().get::<Created>().map(|c| c.0.as_str());
    // Only the names of a change made: those of one refused may be anything the client sent.
    let fields = if resp.status().is_success() {
        fields
    } else {
        ""
    };
    tracing::info!(
        target: "switchyard::audit",
        %method,
        path,
        status,
        peer,
        created,
        fields,
        "admin change"
    );
}

/// The fields a key's or an account's JSON body sets, by name (`limits.daily_cost_nanousd,name`):
/// the names only, read past their values without building them (a body may be 32 MiB). A name
/// that is not a plain identifier of at most 64 characters shows as `?` (a handler refuses it;
/// it could be a secret pasted in the wrong place); at most 64 names.
fn field_names(body: &[u8]) -> String {
    type Names<'a> = BTreeMap<Cow<'a, str>, IgnoredAny>;
    #[derive(Deserialize)]
    struct Limits<'a> {
        #[serde(borrow)]
        limits: Option<Names<'a>>,
    }
    let Ok(top) = serde_json::from_slice::<Names>(body) else {
        return String::new();
    };
    let limits = serde_json::from_slice::<Limits>(body)
        .ok()
        .and_then(|l| l.limits)
        .filter(|l| !l.is_empty());
    let shown = |name: &str| {
        let plain = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if plain {
            name.to_owned()
        } else {
            "?".to_owned()
        }
    };
    let mut names = Vec::new();
    for name in top.keys() {
        match &limits {
            Some(inner) if name == "limits" => {
                names.extend(inner.keys().map(|k| format!("limits.{}", shown(k))));
            }
            _ => names.push(shown(name)),
        }
    }
    names.truncate(64);
    names.join(",")
}

async fn route<B>(
    app: &Arc<App>,
    req: Request<B>,
    fields: &mut String,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    authorize(app, req.headers())?;
    let (parts, body) = req.into_parts();
    let body = crate::relay::read_body(body, &app.config.server).await?;
    let path = parts.uri.path();
    if matches!(parts.method, Method::POST | Method::PATCH)
        && (path.starts_with("/admin/keys") || path.starts_with("/admin/accounts"))
    {
        *fields = field_names(&body);
    }
    let query = parse_query(parts.uri.query());
    let segments: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
    let method = &parts.method;
    match (method, segments.as_slice()) {
        (&Method::GET, ["admin", "keys"]) => keys::list(app, &query).await,
        (&Method::POST, ["admin", "keys"]) => keys::create(app, parse(&body)?).await,
        (&Method::GET, ["admin", "keys", id]) => keys::get(app, id).await,
        (&Method::PATCH, ["admin", "keys", id]) => keys::patch(app, id, parse(&body)?).await,
        (&Method::DELETE, ["admin", "keys", id]) => keys::delete(app, id).await,
        (&Method::POST, ["admin", "keys", id, "rotate"]) => keys::rotate(app, id).await,
        (&Method::GET, ["admin", "accounts"]) => accounts::list(app).await,
        (&Method::POST, ["admin", "accounts"]) => accounts::create(app, parse(&body)?).await,
        (&Method::GET, ["admin", "accounts", id]) => accounts::get(app, id).await,
        (&Method::PATCH, ["admin", "accounts", id]) => {
            accounts::patch(app, id, parse(&body)?).await
        }
        (&Method::DELETE, ["admin", "accounts", id]) => accounts::delete(app, id).await,
        (&Method::POST, ["admin", "accounts", id, "reset"]) => accounts::reset(app, id).await,
        (&Method::POST, ["admin", "accounts", id, "refresh"]) => accounts::refresh(app, id).await,
        (&Method::POST, ["admin", "accounts", id, "test"]) => {
            let req = if body.is_empty() {
                accounts::TestAccount::default()
            } else {
                parse(&body)?
            };
            accounts::test(app, id, req).await
        }
        (&Method::GET, ["admin", "usage"]) => usage::usage(app, &query).await,
        (&Method::GET, ["admin", "requests"]) => usage::requests(app, &query).await,
        (&Method::POST, ["admin", "pricing", "import"]) => usage::import_pricing(app, &body).await,
        _ => Err(ApiError::not_found(format!(
            "no admin route for {method} {}",
            parts.uri.path()
        ))),
    }
}

fn authorize(app: &App, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(crate::auth::bearer);
    match presented {
        Some(token)
            if crate::auth::constant_time_eq(token.as_bytes(), app.admin_token.as_bytes()) =>
        {
            Ok(())
        }
        Some(_) => Err(ApiError::new(
            ErrorKind::Authentication,
            "invalid admin token",
        )),
        None => Err(ApiError::new(
            ErrorKind::Authentication,
            "missing admin token: send Authorization: Bearer <token>",
        )),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn ok(status: StatusCode, value: &serde_json::Value) -> Result<Response<Body>, ApiError> {
    Ok(body::json(status, value))
}

/// 201 with the record made, `id` named for the audit line.
fn created(id: &str, value: &serde_json::Value) -> Result<Response<Body>, ApiError> {
    let mut resp = body::json(StatusCode::CREATED, value);
    resp.extensions_mut().insert(Created(id.to_owned()));
    Ok(resp)
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    ApiError::store(e)
}

/// A record's display name, trimmed.
fn valid_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("name: must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Unix milliseconds as RFC 3339 (UTC).
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Distinguishes a field set to `null` (`Some(None)`) from an absent one (`None`) in PATCH bodies.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::field_names;

    #[test]
    fn an_audit_line_names_the_fields_sent_never_their_values() {
        let body = br#"{"name": "ci", "api_key": "sk-ant-secret", "limits": {"max_concurrency": 2, "window": {"seconds": 60}}}"#;
        let names = field_names(body);
        assert_eq!(names, "api_key,limits.max_concurrency,limits.window,name");
        assert!(!names.contains("secret"));
        assert_eq!(field_names(br#"{"limits": null}"#), "limits");
        assert_eq!(field_names(b"[1, 2]"), "");
        assert_eq!(field_names(b"not json"), "");
        // A name that is no plain identifier is not shown (it may be a secret pasted there).
        assert_eq!(
            field_names(br#"{"sk-ant-api03-xyz": 1, "limits": {"a\nb": 2}}"#),
            "limits.?,?"
        );
        assert_eq!(
            field_names(format!(r#"{{"{}": 1}}"#, "a".repeat(65)).as_bytes()),
            "?"
        );
        let many: String = (0..100)
            .map(|i| format!(r#""f{i}": 1"#))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            field_names(format!("{{{many}}}").as_bytes())
                .split(',')
                .count(),
            64
        );
    }
}
