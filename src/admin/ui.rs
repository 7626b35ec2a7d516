//! The admin console: a page of our own (`src/admin/ui/`, plain HTML, CSS and JavaScript modules,
//! no build step), built into the binary and served at `/admin/ui/`.
//!
//! The files hold no secret, so they are served without the admin token: the page asks for the
//! token, keeps it in the tab's `sessionStorage`, and calls the admin API with it like any other
//! client. The answer's headers allow the page nothing but its own files and the API of its own
//! origin (no inline script, no framing, no referrer), so a name or an error message shown in it
//! cannot run as code and the token cannot leave for elsewhere.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::body::{self, Body};
use crate::error::{ApiError, ErrorKind, Surface};

/// Where the console lives; `/admin` and `/admin/ui` lead here.
pub const HOME: &str = "/admin/ui/";

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

struct Asset {
    /// The file's name under `/admin/ui/`; the page itself is "".
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// A file of `src/admin/ui/`, served under its own name.
macro_rules! file {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("ui/", $name)),
        }
    };
}

static ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: HTML,
        bytes: include_bytes!("ui/index.html"),
    },
    file!("app.css", CSS),
    file!("app.js", JS),
    file!("api.js", JS),
    file!("dom.js", JS),
    file!("format.js", JS),
    file!("charts.js", JS),
    file!("overview.js", JS),
    file!("keys.js", JS),
    file!("accounts.js", JS),
    file!("usage.js", JS),
    file!("requests.js", JS),
    file!("pricing.js", JS),
    file!("record.js", JS),
];

/// Each asset's entity tag: its content's digest, so a browser revalidates for a few bytes and a
/// new binary's files replace the old ones at once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::try_from(format!("\"{tag}\"")).unwrap_or(HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// Answers `path` when it is the console's, or `None` to leave it to the admin API.
pub fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    if path == "/admin" || path == "/admin/" || path == "/admin/ui" {
        return (method == Method::GET || method == Method::HEAD).then(|| moved(HOME));
    }
    let name = path.strip_prefix(HOME)?;
    if method != Method::GET && method != Method::HEAD {
        return Some(refused(method, path));
    }
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        let mut resp =
            ApiError::not_found(format!("no console file {path}")).render(Surface::Admin);
        secure(resp.headers_mut());
        return Some(resp);
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    let (status, bytes) = if fresh {
        (StatusCode::NOT_MODIFIED, &[][..])
    } else if method == Method::HEAD {
        (StatusCode::OK, &[][..])
    } else {
        (StatusCode::OK, asset.bytes)
    };
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if status == StatusCode::OK {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
    }
    h.insert(header::ETAG, etag.clone());
    // Revalidated on every load: an upgrade shows at once, and an unchanged file costs a 304.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(h);
    Some(resp)
}

/// The headers every console answer carries.
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A temporary redirect: a permanent one would be kept by browsers after the console is turned
/// off.
fn moved(to: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static(to));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    resp
}

fn refused(method: &Method, path: &str) -> Response<Body> {
    let mut resp = ApiError::new(
        ErrorKind::InvalidRequest,
        format!("{method} {path} is not allowed; the console's files are read with GET"),
    )
    .render(Surface::Admin);
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    secure(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap_or_default();
        for asset in &ASSETS[1..] {
            assert!(
                page.contains(asset.name)
                    || ASSETS.iter().any(|a| {
                        a.content_type == JS
                            && std::str::from_utf8(a.bytes)
                                .unwrap_or_default()
                                .contains(asset.name)
                    }),
                "{} is served but nothing loads it",
                asset.name
            );
        }
        // And nothing the page or a module imports is missing.
        for asset in ASSETS.iter().filter(|a| a.content_type != CSS) {
            let text = std::str::from_utf8(asset.bytes).unwrap_or_default();
            for (at, _) in text.match_indices("./") {
                let name: String = text[at + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                    .collect();
                if name.ends_with(".js") || name.ends_with(".css") {
                    assert!(
                        ASSETS.iter().any(|a| a.name == name),
                        "{} loads ./{name}, which is not served",
                        if asset.name.is_empty() {
                            "index.html"
                        } else {
                            asset.name
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn every_file_of_the_folder_is_served() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin/ui");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut served: Vec<String> = ASSETS
            .iter()
            .map(|a| {
                if a.name.is_empty() {
                    "index.html"
                } else {
                    a.name
                }
                .to_owned()
            })
            .collect();
        served.sort();
        assert_eq!(files, served);
    }

    #[test]
    fn the_page_runs_no_inline_code() {
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap_or_default();
        for forbidden in ["<style", " style=", " onclick=", " onload=", "javascript:"] {
            assert!(!page.contains(forbidden), "index.html holds {forbidden}");
        }
        for script in page.match_indices("<script").map(|(at, _)| &page[at..]) {
            let tag = &script[..script.find('>').unwrap_or(script.len())];
            assert!(tag.contains("src="), "an inline script: {tag}");
        }
    }
}
