//! The `switchyard` binary: configuration errors, the admin CLI on a data dir (in process and
//! against a running relay), and `serve` with a graceful SIGTERM stop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::mock::{Behavior, MockUpstream, MockUsage, http_client};
use crate::support::relay::messages_body;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn command(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("SWITCHYARD_ADMIN_TOKEN");
    command
}

fn switchyard(data_dir: &Path, args: &[&str]) -> Output {
    command(data_dir, args).output().unwrap()
}

/// As `switchyard`, with the environment's HTTP proxy pointing at a closed port.
fn switchyard_behind_a_dead_proxy(data_dir: &Path, args: &[&str]) -> Output {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    command(data_dir, args)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("ALL_PROXY", &proxy)
        .env("all_proxy", &proxy)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_invalid_option_is_one_line_naming_it_and_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nbody_limit_byte = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&file)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("body_limit_byte"), "{err}");

    let out = Command::new(BIN)
        .arg("serve")
        .env("SWITCHYARD_SERVER__SHUTDOWN_GRACE_SECS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SWITCHYARD_SERVER__SHUTDOWN_GRACE_SECS")
    );

    // A duration out of range is a configuration error too.
    let out = Command::new(BIN)
        .arg("serve")
        .env(
            "SWITCHYARD_SCHEDULER__ATTEMPT_DEADLINE_SECS",
            "9223372036854775807",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheduler.attempt_deadline_secs"));

    // A Redis URL without a host, before any connection is tried; a log filter that does not
    // parse. Each is one line naming what is wrong.
    for (name, value, named) in [
        ("SWITCHYARD_STORE", "redis://:6379", "`store`"),
        (
            "SWITCHYARD_STORE",
            "redis-cluster://h1:7000,:7001",
            "`store`",
        ),
        ("SWITCHYARD_LOG", "switchyard=loud", "SWITCHYARD_LOG"),
    ] {
        let out = Command::new(BIN)
            .arg("serve")
            .env(name, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{value}: {err}");
        assert!(err.contains(named), "{value}: {err}");
    }

    // So is a price file that cannot be read, before any store is opened.
    let out = Command::new(BIN)
        .arg("serve")
        .env(
            "SWITCHYARD_PRICING__FILE",
            dir.path().join("no-such-prices.json"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pricing.file"));
}

#[test]
fn keys_and_accounts_through_the_cli_on_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let created = json_of(&switchyard(dir.path(), &["keys", "create", "--name", "ci"]));
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["key"].as_str().unwrap().starts_with("sy-"));
    let listed = json_of(&switchyard(dir.path(), &["keys", "list"]));
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(listed["data"][0].get("key").is_none());
    // Limits: set at creation, changed by a merge patch, shown with their use.
    let limited = json_of(&switchyard(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "team",
            "--limits",
            r#"{"max_concurrency": 2, "daily_cost_nanousd": 5000000000}"#,
        ],
    ));
    let limited_id = limited["id"].as_str().unwrap().to_owned();
    assert_eq!(limited["limits"]["max_concurrency"], 2);
    let out = switchyard(
        dir.path(),
        &[
            "keys",
            "limits",
            &limited_id,
            r#"{"max_concurrency": null, "window": {"seconds": 3600, "requests": 10}}"#,
        ],
    );
    let patched = json_of(&out);
    // A change made in process is audited as one through a running relay is.
    let audit = String::from_utf8_lossy(&out.stderr);
    assert!(
        audit.contains("admin change")
            && audit.contains("method=PATCH")
            && audit.contains(&limited_id)
            && audit.contains("limits.max_concurrency,limits.window"),
        "{audit}"
    );
    assert_eq!(
        patched["limits"],
        serde_json::json!({ "daily_cost_nanousd": 5_000_000_000u64, "window": { "seconds": 3600, "requests": 10 } })
    );
    let shown = json_of(&switchyard(dir.path(), &["keys", "show", &limited_id]));
    assert_eq!(shown["usage"]["daily_cost"]["remaining"], 5_000_000_000u64);
    assert_eq!(shown["usage"]["window_requests"]["used"], 0);
    json_of(&switchyard(dir.path(), &["keys", "delete", &limited_id]));
    let disabled = json_of(&switchyard(dir.path(), &["keys", "disable", &id]));
    assert_eq!(disabled["enabled"], false);
    // A new secret, printed once; the key stays itself.
    let rotated = json_of(&switchyard(dir.path(), &["keys", "rotate", &id]));
    assert_eq!(rotated["id"], id.as_str());
    assert_eq!(rotated["enabled"], false);
    let new_secret = rotated["key"].as_str().unwrap();
    assert!(new_secret.starts_with("sy-") && new_secret != created["key"].as_str().unwrap());
    json_of(&switchyard(dir.path(), &["keys", "delete", &id]));
    assert_eq!(
        json_of(&switchyard(dir.path(), &["keys", "list"]))["data"],
        serde_json::json!([])
    );

    let account = json_of(&switchyard(
        dir.path(),
        &[
            "accounts",
            "add",
            "--name",
            "main",
            "--api-key",
            "sk-ant-cli-secret",
            "--model",
            "claude-*",
            "--priority",
            "5",
            "--proxy",
            "socks5://team:cli-proxy-pw@10.0.0.9:1080",
            "--daily-cost-nanousd",
            "20000000000",
            "--model-map",
            "claude-haiku-*=glm-4.5-air",
            "--model-map",
            "claude-sonnet-4-5=glm-4.6",
        ],
    ));
    assert_eq!(
        account["model_map"],
        json!({ "claude-haiku-*": "glm-4.5-air", "claude-sonnet-4-5": "glm-4.6" })
    );
    assert_eq!(account["base_url"], "https://api.anthropic.com");
    assert_eq!(account["priority"], 5);
    assert_eq!(account["daily_cost_nanousd"], 20_000_000_000u64);
    assert_eq!(account["budget"]["daily"]["spent_nanousd"], 0);
    assert!(account["budget"].get("monthly").is_none());
    assert!(account.get("api_key").is_none());
    // The proxy's credentials are sealed with the key, never shown.
    assert_eq!(account["proxy"], "socks5://***@10.0.0.9:1080");
    assert!(!account.to_string().contains("cli-proxy-pw"));
    let listed = json_of(&switchyard(dir.path(), &["accounts", "list"]));
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // A test of an account nobody answers for: the attempt and how it failed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = json_of(&switchyard(
        dir.path(),
        &[
            "accounts",
            "add",
            "--name",
            "gone",
            "--api-key",
            "sk-ant-gone",
            "--base-url",
            &nobody,
        ],
    ));
    let tested = json_of(&switchyard(
        dir.path(),
        &[
            "accounts",
            "test",
            unreachable["id"].as_str().unwrap(),
            "--model",
            "claude-opus-4-1",
        ],
    ));
    assert_eq!(
        (&tested["ok"], &tested["verdict"], &tested["model"]),
        (&json!(false), &json!("failing"), &json!("claude-opus-4-1")),
        "{tested}"
    );
    json_of(&switchyard(
        dir.path(),
        &["accounts", "remove", unreachable["id"].as_str().unwrap()],
    ));
    let usage = json_of(&switchyard(dir.path(), &["usage"]));
    assert_eq!(usage["requests"], 0);
    json_of(&switchyard(
        dir.path(),
        &["accounts", "remove", account["id"].as_str().unwrap()],
    ));

    let missing = switchyard(dir.path(), &["keys", "delete", "key_nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no key with id"));

    // The generated admin token is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn an_empty_admin_token_file_stops_serve_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), "\n").unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut serving = Serving { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve started with an empty admin token"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(serving.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("admin-token"), "{err}");
}

struct Serving {
    child: Child,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &Path) -> (Serving, String) {
    serve_with(data_dir, &[])
}

/// As `serve`, with these variables in its environment.
fn serve_with(data_dir: &Path, env: &[(&str, &str)]) -> (Serving, String) {
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serving = Serving { child };
    let addr_file = data_dir.join("serve.addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !addr_file.exists() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(20));
    let addr = std::fs::read_to_string(&addr_file).unwrap();
    (serving, format!("http://{}", addr.trim()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_running_relay_and_sigterm_stops_it_gracefully() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage {
        input: 4,
        output: 5,
        ..MockUsage::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let (mut serving, base) = serve(dir.path());

    // The relay holds the data dir; the CLI goes through its admin API.
    let d = dir.path().to_owned();
    let base_url = mock.base_url();
    let (key, limited, account) = tokio::task::spawn_blocking(move || {
        let key = json_of(&switchyard(&d, &["keys", "create", "--name", "live"]));
        let limited = json_of(&switchyard(
            &d,
            &[
                "keys",
                "create",
                "--name",
                "haiku only",
                "--limits",
                r#"{"allowed_models": ["claude-haiku-*"]}"#,
            ],
        ));
        let account = json_of(&switchyard(
            &d,
            &[
                "accounts",
                "add",
                "--name",
                "mock",
                "--api-key",
                "sk-ant-live",
                "--base-url",
                &base_url,
            ],
        ));
        (key, limited, account)
    })
    .await
    .unwrap();
    let secret = key["key"].as_str().unwrap();
    let resp = http_client()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", secret)
        .json(&messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(mock.requests()[0].header("x-api-key"), Some("sk-ant-live"));
    // A refused request's line names its key and model too.
    let resp = http_client()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", limited["key"].as_str().unwrap())
        .json(&messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(account["id"].as_str().unwrap().starts_with("acct_"));
    // An admin token guessed: refused, and told in the log.
    let resp = http_client()
        .get(format!("{base}/admin/keys"))
        .bearer_auth("not-the-admin-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The admin token does not go through the environment's proxy to a relay on this host.
    let d = dir.path().to_owned();
    let usage = tokio::task::spawn_blocking(move || {
        json_of(&switchyard_behind_a_dead_proxy(&d, &["usage"]))
    })
    .await
    .unwrap();
    assert_eq!(
        (
            usage["input_tokens"].as_u64(),
            usage["output_tokens"].as_u64()
        ),
        (Some(4), Some(5))
    );

    // SIGTERM: exits 0, and the log names the admin token's file, never the token.
    let pid = serving.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let mut log = String::new();
    std::io::Read::read_to_string(serving.child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    assert!(log.contains("admin-token"), "{log}");
    assert!(
        !log.contains(token.trim()),
        "the admin token leaked into the log"
    );
    assert!(
        !log.contains(secret) && !log.contains("sk-ant-live"),
        "a secret leaked into the log"
    );
    assert!(log.contains("request_id"), "one line per request: {log}");
    let refused = log
        .lines()
        .find(|l| l.contains("request refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert!(
        refused.contains(&format!("key_id={}", limited["id"].as_str().unwrap()))
            && refused.contains("model=claude-sonnet-4-5")
            && refused.contains("status=403"),
        "{refused}"
    );
    // The admin changes, each with what it made and the fields it sent (their names only).
    let changes: Vec<&str> = log.lines().filter(|l| l.contains("admin change")).collect();
    let made = |id: &Value| {
        let id = id.as_str().unwrap();
        *changes
            .iter()
            .find(|l| l.contains(&format!("created=\"{id}\"")))
            .unwrap_or_else(|| panic!("no audit line for {id}: {log}"))
    };
    let line = made(&limited["id"]);
    assert!(
        line.contains("method=POST")
            && line.contains("path=\"/admin/keys\"")
            && line.contains("status=201")
            && line.contains("limits.allowed_models"),
        "{line}"
    );
    let line = made(&account["id"]);
    assert!(
        line.contains("path=\"/admin/accounts\"") && line.contains("api_key"),
        "{line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("admin token refused") && l.contains("\"/admin/keys\"")),
        "{log}"
    );
    // Lines are buffered (src/logging.rs); the last one, logged just before exit, is there.
    assert!(log.trim_end().ends_with("stopped"), "{log}");
    assert!(!dir.path().join("serve.addr").exists());
}

fn signal(serving: &Serving, signal: &str) {
    let pid = serving.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// A second SIGTERM during the grace period closes what is still open at once, as the end of
/// the grace would: the stop does not wait the grace out, and the stream it closed is billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_grace_period_at_once() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::StallAfterStart(MockUsage {
        input: 7,
        output: 1,
        ..MockUsage::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let (mut serving, base) = serve_with(
        dir.path(),
        &[("SWITCHYARD_SERVER__SHUTDOWN_GRACE_SECS", "300")],
    );
    let d = dir.path().to_owned();
    let base_url = mock.base_url();
    let key = tokio::task::spawn_blocking(move || {
        json_of(&switchyard(
            &d,
            &[
                "accounts",
                "add",
                "--name",
                "mock",
                "--api-key",
                "sk-ant-live",
                "--base-url",
                &base_url,
            ],
        ));
        json_of(&switchyard(&d, &["keys", "create", "--name", "live"]))
    })
    .await
    .unwrap();
    // A stream that stays open: its leading events, then nothing.
    let mut resp = http_client()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key["key"].as_str().unwrap())
        .json(&messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.chunk().await.unwrap().is_some());

    // The first SIGTERM is taken (the relay stops accepting) and the stream is waited for.
    signal(&serving, "-TERM");
    let addr = base.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "serve did not stop accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        serving.child.try_wait().unwrap().is_none(),
        "the grace is 300 s"
    );
    // The second ends the grace: out well before it, the stream closed.
    signal(&serving, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve waited out the grace after a second SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        !String::from_utf8_lossy(&rest).contains("message_stop"),
        "the stream was closed, not finished"
    );
    // Billed as a stream whose client hung up: the usage was written before the exit.
    let d = dir.path().to_owned();
    let usage = tokio::task::spawn_blocking(move || json_of(&switchyard(&d, &["usage"])))
        .await
        .unwrap();
    assert_eq!(
        (usage["requests"].as_u64(), usage["input_tokens"].as_u64()),
        (Some(1), Some(7)),
        "{usage}"
    );
}

#[test]
fn a_chatgpt_subscription_is_added_from_codex_clis_login_file() {
    use crate::support::token_endpoint::{chatgpt_token, jwt};
    let dir = tempfile::tempdir().unwrap();
    let login = dir.path().join("auth.json");
    let access = chatgpt_token("ws-cli", 3600, 0);
    std::fs::write(
        &login,
        serde_json::json!({
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": jwt(&serde_json::json!({ "aud": ["app_test_client"], "email": "a@b.c" })),
                "access_token": access,
                "refresh_token": "rt-cli",
                "account_id": "ws-cli",
            },
            "last_refresh": "2026-12-07T00:00:00Z",
        })
        .to_string(),
    )
    .unwrap();
    let add = [
        "accounts",
        "add",
        "--name",
        "pro",
        "--codex-auth",
        login.to_str().unwrap(),
    ];
    // An api key in the environment does not stand in the way.
    let account = json_of(
        &command(dir.path(), &add)
            .env("SWITCHYARD_ACCOUNT_API_KEY", "sk-elsewhere")
            .output()
            .unwrap(),
    );
    assert_eq!(account["provider"], "chatgpt");
    assert_eq!(account["base_url"], "https://chatgpt.com/backend-api/codex");
    assert_eq!(account["oauth"]["client_id"], "app_test_client");
    assert_eq!(
        account["oauth"]["token_url"],
        "https://auth.openai.com/oauth/token"
    );
    assert!(account["oauth"]["expires_at"].is_string());
    let shown = account.to_string();
    assert!(!shown.contains("rt-cli") && !shown.contains(&access));

    // A login file without a ChatGPT login says so.
    std::fs::write(&login, r#"{"OPENAI_API_KEY": "sk-x", "tokens": null}"#).unwrap();
    let out = switchyard(dir.path(), &add);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no tokens.access_token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A grant given by hand needs its endpoint and client; they need the grant.
    for (flag, value) in [
        ("--refresh-token", "rt"),
        ("--token-url", "https://example.com/oauth/token"),
    ] {
        let add = [
            "accounts",
            "add",
            "--name",
            "max",
            "--api-key",
            "sk-ant-oat01-x",
        ];
        let out = switchyard(dir.path(), &[&add[..], &[flag, value]].concat());
        assert_eq!(out.status.code(), Some(2), "{flag} alone");
    }
}

#[test]
fn a_google_login_is_added_from_gemini_clis_login_file() {
    use crate::support::token_endpoint::jwt;
    let dir = tempfile::tempdir().unwrap();
    let login = dir.path().join("oauth_creds.json");
    std::fs::write(
        &login,
        serde_json::json!({
            "access_token": "ya29.access-cli",
            "refresh_token": "1//rt-google-cli",
            "scope": "https://www.googleapis.com/auth/cloud-platform openid",
            "token_type": "Bearer",
            "id_token": jwt(&serde_json::json!({ "aud": "123-test.apps.googleusercontent.com", "email": "a@b.c" })),
            "expiry_date": 1_900_000_000_000_i64,
        })
        .to_string(),
    )
    .unwrap();
    // `accounts add` with Google's client secret in the environment.
    let with_secret = |args: &[&str]| {
        json_of(
            &command(dir.path(), args)
                .env("SWITCHYARD_OAUTH_CLIENT_SECRET", "cs-cli-secret")
                .output()
                .unwrap(),
        )
    };
    let add = [
        "accounts",
        "add",
        "--name",
        "google",
        "--gemini-auth",
        login.to_str().unwrap(),
        "--project",
        "my-project-1",
    ];
    let account = with_secret(&add);
    assert_eq!(account["provider"], "code-assist");
    assert_eq!(account["base_url"], "https://cloudcode-pa.googleapis.com");
    assert_eq!(account["project"], "my-project-1");
    assert_eq!(
        account["oauth"]["client_id"],
        "123-test.apps.googleusercontent.com"
    );
    assert_eq!(
        account["oauth"]["token_url"],
        "https://oauth2.googleapis.com/token"
    );
    assert_eq!(account["oauth"]["expires_at"], "2030-03-17T17:46:40Z");
    assert_eq!(account["oauth"]["client_secret_set"], true);
    let shown = account.to_string();
    for secret in ["rt-google-cli", "access-cli", "cs-cli-secret"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    // Without the client's secret its tokens could not be renewed: refused.
    let out = switchyard(dir.path(), &add);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --client-secret"));
    // The secret in the environment stands in the way of no account without a grant.
    let plain = ["accounts", "add", "--name", "y", "--api-key", "sk-y"];
    let account = with_secret(&plain);
    assert!(account["oauth"].is_null());
    // Nor is it given to another vendor's grant.
    let claude = [
        "accounts",
        "add",
        "--name",
        "z",
        "--api-key",
        "sk-ant-oat01-z",
        "--refresh-token",
        "rt-z",
        "--token-url",
        "https://example.com/oauth/token",
        "--client-id",
        "claude-client",
    ];
    let account = with_secret(&claude);
    assert_eq!(account["oauth"]["client_secret_set"], false, "{account}");
    // A client or its secret without a grant to go with: refused, not dropped.
    for flag in ["--client-id", "--client-secret"] {
        let add = [
            "accounts",
            "add",
            "--name",
            "x",
            "--api-key",
            "sk-x",
            flag,
            "v",
        ];
        let out = switchyard(dir.path(), &add);
        assert_eq!(out.status.code(), Some(1), "{flag}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("goes with --refresh-token"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
