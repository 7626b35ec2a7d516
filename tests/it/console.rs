//! The admin console at `/admin/ui/`: its files, the headers that fence them in, and (where a
//! browser is installed) the page driven end to end by `tests/ui/console.mjs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use serde_json::Value;

use crate::support::mock::MockUpstream;
use crate::support::relay::{ACCOUNT_KEY, ADMIN_TOKEN, Relay, relay_with_account};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_console_is_served_without_the_token_and_fenced_in() {
    let (relay, _mock, key, _account) = relay_with_account().await;
    let http = client();

    let page = http.get(relay.url("/admin/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
    let policy = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(headers[X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[REFERRER_POLICY], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("./app.js"), "{html}");

    // Its script and style, each with its own type; none holds a secret.
    let mut served = html.clone();
    for (file, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let resp = http
            .get(relay.url(&format!("/admin/ui/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{file}");
        let content_type = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{file}: {content_type}");
        assert!(resp.headers().contains_key(CONTENT_SECURITY_POLICY));
        served.push_str(&resp.text().await.unwrap());
    }
    for secret in [ADMIN_TOKEN, ACCOUNT_KEY, key.as_str()] {
        assert!(!served.contains(secret));
    }

    // Revalidation: the same file answers 304 with no body; HEAD tells the size without it.
    let etag = headers[ETAG].clone();
    let again = http
        .get(relay.url("/admin/ui/"))
        .header(IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()[ETAG], etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let head = http.head(relay.url("/admin/ui/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        html.len().to_string()
    );

    // The short addresses lead to it; the admin API stays behind the token.
    for path in ["/admin", "/admin/", "/admin/ui"] {
        let resp = http.get(relay.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 307, "{path}");
        assert_eq!(resp.headers()[LOCATION], "/admin/ui/", "{path}");
        assert!(
            resp.headers().contains_key(CONTENT_SECURITY_POLICY),
            "{path}"
        );
    }
    // Paths sent as written (an HTTP client would resolve the dots first): none reaches the API.
    for path in [
        "/admin/keys",
        "/admin/ui/../keys",
        "/admin/ui/%2e%2e/keys",
        "/admin/ui/..%2fkeys",
        "/admin/ui//app.js",
        "/admin/UI/",
        "//admin/keys",
    ] {
        let (status, body) = raw_get(relay.addr, path).await;
        assert!(status == 401 || status == 404, "{path}: {status} {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
        assert!(body.get("data").is_none() && !body.is_array(), "{path}");
    }
    let missing = http
        .get(relay.url("/admin/ui/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key(CONTENT_SECURITY_POLICY));
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");
    let post = http.post(relay.url("/admin/ui/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    assert_eq!(post.headers()[X_FRAME_OPTIONS], "DENY");
    relay.stop().await;
}

/// `GET path` written on the wire as it is: (status, body).
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn the_console_can_be_turned_off() {
    let relay = Relay::start_configured(|c| c.server.admin_console = false).await;
    let resp = client().get(relay.url("/admin/ui/")).send().await.unwrap();
    // Left to the admin API, which wants its token.
    assert_eq!(resp.status(), 401);
    let (status, _) = relay.admin(Method::GET, "/admin/ui/", None).await;
    assert_eq!(status, 404);
    relay.stop().await;
}

/// What the browser test needs: Node.js, playwright-core installed in `tests/ui` (`npm ci`) and
/// Chromium. Without them the test is skipped, unless `REQUIRE_BROWSER_TESTS=1` (CI) makes
/// their absence a failure.
fn browser() -> Option<String> {
    let required = std::env::var("REQUIRE_BROWSER_TESTS").is_ok_and(|v| v == "1");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    // playwright-core wants Node.js 20 or later.
    let node_major = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            let version = String::from_utf8_lossy(&out.stdout).into_owned();
            version
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()
        });
    let missing = [
        (
            !ui.join("node_modules/playwright-core").is_dir(),
            "tests/ui/node_modules/playwright-core (npm ci in tests/ui)",
        ),
        (!Path::new(&chromium).exists(), "chromium"),
        (node_major.is_none_or(|v| v < 20), "Node.js 20 or later"),
    ];
    let missing: Vec<&str> = missing.iter().filter(|m| m.0).map(|m| m.1).collect();
    if missing.is_empty() {
        return Some(chromium);
    }
    assert!(
        !required,
        "REQUIRE_BROWSER_TESTS=1 but missing: {missing:?}"
    );
    eprintln!("skipped: the console's browser test needs {missing:?}");
    None
}

#[tokio::test]
async fn the_console_works_in_a_browser() {
    let Some(chromium) = browser() else {
        return;
    };
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/console.mjs");
    let shots = relay.data_dir.join("screenshots");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("CONSOLE_URL", relay.url("/admin/ui/"))
        .env("RELAY_URL", relay.url(""))
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("UPSTREAM_URL", mock.base_url())
        .env("CHROMIUM", chromium)
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test ran for 240 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/ui/console.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The page drove the real relay: the request it sent through the relay reached the mock.
    assert!(mock.served() >= 1, "{stdout}");
    relay.stop().await;
}

/// Guessing the admin token: after `server.admin_failures_per_minute` refusals from one
/// address, every admin request from it gets 429 for the rest of the minute, the right token
/// too; another address is not held back, nor are the console's files.
#[tokio::test]
async fn guessing_the_admin_token_is_held_back_per_address() {
    let relay = Relay::start_configured(|c| c.server.admin_failures_per_minute = 3).await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let guesser = from([127, 0, 0, 1]);
    for guess in 0..3 {
        let resp = guesser
            .get(relay.url("/admin/keys"))
            .bearer_auth(format!("guess-number-{guess}-of-many"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "guess {guess}");
    }
    let resp = guesser
        .get(relay.url("/admin/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let page = guesser.get(relay.url("/admin/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);

    let other = from([127, 0, 0, 2])
        .get(relay.url("/admin/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    relay.stop().await;
}
