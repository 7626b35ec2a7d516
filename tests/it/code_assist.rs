//! Google logins through the Code Assist API (provider `code-assist`): Gemini CLI's requests
//! wrapped for it with the login's project, its answers handed back as the Gemini API's, the
//! project found or set up once, and the login's token renewed at Google's token endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::code_assist::ONBOARDED_PROJECT;
use crate::support::mock::{
    AnswerOpts, Behavior, MockUpstream, MockUsage, gemini, http_client, wait_until,
};
use crate::support::relay::Relay;
use crate::support::token_endpoint::TokenEndpoint;

/// A Code Assist account on `mock` holding `token`, with `extra` fields.
async fn google_login(relay: &Relay, mock: &MockUpstream, token: &str, extra: Value) -> String {
    let mut body = json!({ "provider": "code-assist" });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    relay.add_account(mock, token, body).await
}

/// A Gemini call through the relay with `key`.
async fn gemini_call(relay: &Relay, path: &str, key: &str, body: &Value) -> reqwest::Response {
    http_client()
        .post(relay.url(path))
        .header("x-goog-api-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// [`gemini_call`] with a one-line conversation.
async fn ask(relay: &Relay, path: &str, key: &str) -> reqwest::Response {
    gemini_call(relay, path, key, &hello()).await
}

/// The setup calls (`loadCodeAssist`, `onboardUser`) `mock` received.
fn setup_calls(mock: &MockUpstream) -> Vec<String> {
    mock.requests()
        .into_iter()
        .filter(|r| r.path == "/v1internal:loadCodeAssist" || r.path == "/v1internal:onboardUser")
        .map(|r| r.path)
        .collect()
}

fn hello() -> Value {
    json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_is_served_by_a_google_login_as_by_the_gemini_api() {
    let mock = MockUpstream::start().await;
    let usage = MockUsage {
        input: 50,
        output: 12,
        cache_read: 10,
        ..MockUsage::default()
    };
    mock.set_default(Behavior::Ok(usage));
    mock.set_code_assist_project(Some("proj-loaded"));
    mock.require_api_key("ya29.login");
    let relay = Relay::start().await;
    let id = google_login(&relay, &mock, "ya29.login", json!({})).await;
    let (_, key) = relay.create_key("k").await;

    // Gemini CLI's captured requests, as it sends them with an API key: answered with the
    // bytes the Gemini API would have sent.
    let opts = AnswerOpts::default();
    for (req, raw) in relay.gemini_cli_requests(&key) {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        // What the API sent, each event's `response` alone (its answers name their id).
        let wrapped = String::from_utf8(mock.responses().pop().unwrap().to_vec()).unwrap();
        let suffix = format!(", \"traceId\": \"{}\"}}", gemini::TRACE_ID);
        let expected: String = wrapped
            .split_terminator("\r\n\r\n")
            .map(|event| {
                let inner = event.strip_prefix("data: {\"response\": ").unwrap();
                format!("data: {}\r\n\r\n", inner.strip_suffix(&suffix).unwrap())
            })
            .collect();
        assert_eq!(resp.bytes().await.unwrap(), expected.as_bytes());

        // Sent to the Code Assist API: wrapped for the login's project, the client's body
        // inside byte for byte, the login's token as a bearer token and no API key.
        let sent = mock.requests().pop().unwrap();
        assert_eq!(sent.path, "/v1internal:streamGenerateContent");
        assert_eq!(sent.query_param("alt").as_deref(), Some("sse"));
        assert_eq!(sent.header("authorization"), Some("Bearer ya29.login"));
        assert!(sent.header("x-goog-api-key").is_none());
        assert!(
            sent.header("user-agent")
                .unwrap()
                .starts_with("GeminiCLI-tui/")
        );
        let wrapped = sent.json();
        assert_eq!(wrapped["model"], "gemini-2.5-flash");
        assert_eq!(wrapped["project"], "proj-loaded");
        let text = std::str::from_utf8(&sent.body).unwrap();
        assert!(text.ends_with(&format!(
            ",\"request\":{}}}",
            std::str::from_utf8(&raw).unwrap()
        )));
    }
    // The project was asked for once.
    assert_eq!(setup_calls(&mock), ["/v1internal:loadCodeAssist"]);

    // Billed as a Gemini answer, to the account.
    let logged = relay.logged(2).await;
    let e = &logged[0];
    assert_eq!(e["account_id"], id.as_str());
    assert_eq!(e["surface"], "gemini");
    assert_eq!(
        (
            e["input_tokens"].as_u64(),
            e["cache_read_input_tokens"].as_u64(),
            e["output_tokens"].as_u64()
        ),
        (Some(50), Some(10), Some(12))
    );

    // Not streamed; streamed without `alt=sse` (Gemini's JSON array); a token count.
    let resp = ask(
        &relay,
        "/v1beta/models/gemini-2.5-pro:generateContent",
        &key,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.unwrap(),
        gemini::expected_json_bytes("gemini-2.5-pro", usage, &opts)
    );
    assert_eq!(
        mock.requests().pop().unwrap().path,
        "/v1internal:generateContent"
    );
    let resp = ask(
        &relay,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
        &key,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        resp.bytes().await.unwrap(),
        gemini::expected_array_bytes("gemini-2.5-pro", usage, &opts)
    );
    let resp = ask(&relay, "/v1beta/models/gemini-2.5-pro:countTokens", &key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "totalTokens": 50 })
    );
    assert_eq!(
        mock.requests().pop().unwrap().json(),
        json!({ "request": { "model": "models/gemini-2.5-pro", "contents": hello()["contents"] } })
    );

    // Chat completions on a Gemini model, translated, through the login.
    let resp = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "gemini-2.5-flash", "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let chat = resp.json::<Value>().await.unwrap();
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["usage"]["prompt_tokens"], 60);
    assert_eq!(
        mock.requests().pop().unwrap().path,
        "/v1internal:generateContent"
    );
    // Streamed: the chunks made from the events unwrapped, the usage chunk asked for last.
    let resp = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "gemini-2.5-flash", "stream": true,
                       "stream_options": { "include_usage": true },
                       "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let said: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(said, "Hi! This is the mock upstream.");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 12);
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert_eq!(
        mock.requests().pop().unwrap().path,
        "/v1internal:streamGenerateContent"
    );

    // What the API has not (embeddings, the model list) is not sent to the login.
    let before = mock.requests().len();
    let resp = gemini_call(
        &relay,
        "/v1beta/models/text-embedding-004:embedContent",
        &key,
        &json!({ "content": { "parts": [{ "text": "hi" }] } }),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let error = resp.json::<Value>().await.unwrap();
    assert_eq!(error["error"]["status"], "NOT_FOUND", "{error}");
    assert_eq!(mock.requests().len(), before);
    assert_eq!(setup_calls(&mock).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_not_set_up_is_onboarded_once_and_a_given_project_is_used_as_it_is() {
    let mock = MockUpstream::start().await;
    mock.set_code_assist_project(None);
    // Not done at the first answer: asked again.
    mock.set_onboard_pending(1);
    let relay = Relay::start().await;
    google_login(&relay, &mock, "ya29.new", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let path = "/v1beta/models/gemini-2.5-pro:generateContent";
    for _ in 0..2 {
        let resp = ask(&relay, path, &key).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            mock.requests().pop().unwrap().json()["project"],
            ONBOARDED_PROJECT
        );
    }
    assert_eq!(
        setup_calls(&mock),
        [
            "/v1internal:loadCodeAssist",
            "/v1internal:onboardUser",
            "/v1internal:onboardUser"
        ]
    );
    let onboard = mock
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1internal:onboardUser")
        .unwrap();
    assert_eq!(onboard.json()["tierId"], "free-tier");
    assert_eq!(onboard.header("authorization"), Some("Bearer ya29.new"));

    // An account that names its project: no setup call at all.
    let own = MockUpstream::start().await;
    let relay = Relay::start().await;
    let id = google_login(
        &relay,
        &own,
        "ya29.std",
        json!({ "project": "my-gcp-project" }),
    )
    .await;
    let (_, key) = relay.create_key("k").await;
    let resp = ask(&relay, path, &key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(own.requests().len(), 1);
    assert_eq!(own.requests()[0].json()["project"], "my-gcp-project");
    // Changed by PATCH, and taken away (`null`: asked of the API).
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{id}"),
            Some(json!({ "project": null })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["project"].is_null());
    own.set_code_assist_project(Some("proj-loaded"));
    let resp = ask(&relay, path, &key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        own.requests().pop().unwrap().json()["project"],
        "proj-loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_needs_a_project_of_its_own_says_so() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    let (_, key) = relay.create_key("k").await;
    google_login(&relay, &mock, "ya29.std", json!({})).await;
    // A login on the standard tier already (`currentTier` set, no project named).
    mock.set_code_assist_project(Some(""));
    // Requests at once (as Gemini CLI sends them): the API is asked once, and those waiting on
    // it are told the same without asking again.
    mock.delay_code_assist_setup(Duration::from_millis(300));
    let path = "/v1beta/models/gemini-2.5-pro:generateContent";
    let racing: Vec<_> = (0..4).map(|_| ask(&relay, path, &key)).collect();
    for resp in futures_util::future::join_all(racing).await {
        assert_eq!(resp.status(), 502);
        let error = resp.json::<Value>().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("set the account's `project`"), "{message}");
    }
    assert_eq!(setup_calls(&mock), ["/v1internal:loadCodeAssist"]);
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_login_is_renewed_with_the_client_secret_as_a_form() {
    let mock = MockUpstream::start().await;
    mock.set_code_assist_project(Some("proj-loaded"));
    let tokens = TokenEndpoint::start().await;
    tokens.as_google("cs-google");
    tokens.serve_for(&mock, "at-0");
    let relay = Relay::start_configured(|c| c.upstream.oauth_check_ms = 50).await;
    let mut grant = tokens.grant();
    grant["client_secret"] = json!("cs-google");
    // An hour left: nothing to renew until the API refuses the token.
    grant["expires_at"] =
        json!((jiff::Timestamp::now() + jiff::SignedDuration::from_mins(60)).to_string());
    let id = google_login(&relay, &mock, "at-stale", json!({ "oauth": grant })).await;
    let (_, key) = relay.create_key("k").await;
    let view = relay
        .admin(Method::GET, &format!("/admin/accounts/{id}"), None)
        .await
        .1;
    assert!(!view.to_string().contains("cs-google"), "{view}");

    // The project's setup call is refused (401): the account is out of rotation and renewed
    // at once, with Google's grant.
    let path = "/v1beta/models/gemini-2.5-pro:generateContent";
    let resp = ask(&relay, path, &key).await;
    // The client is told the account's credential was refused, in Gemini's shape.
    let status = resp.status();
    let error = resp.json::<Value>().await.unwrap();
    assert_eq!(status, 502, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused this account's credentials"),
        "{error}"
    );
    wait_until("the token is renewed", || tokens.granted() >= 1).await;
    assert_eq!(
        tokens.content_types()[0],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        tokens.requests()[0],
        json!({ "grant_type": "refresh_token", "refresh_token": "rt-0",
                "client_id": "test-cli-client", "client_secret": "cs-google" })
    );
    // Back in rotation with the new token.
    let mut served = None;
    for _ in 0..100 {
        let resp = ask(&relay, path, &key).await;
        if resp.status() == 200 {
            served = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(served.is_some(), "never served again");
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.header("authorization"), Some("Bearer at-1"));
    assert_eq!(sent.json()["project"], "proj-loaded");

    // Google keeps the refresh token: the next renewal sends it again.
    let (status, v) = relay
        .admin(Method::POST, &format!("/admin/accounts/{id}/refresh"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(tokens.requests()[1]["refresh_token"], "rt-0");
    assert_eq!(tokens.granted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_assist_fields_are_checked() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    for (extra, field) in [
        (json!({ "provider": "gemini", "project": "p" }), "project"),
        (
            json!({ "provider": "code-assist", "project": "has space" }),
            "project",
        ),
    ] {
        let mut body = json!({ "name": "g", "base_url": mock.base_url(), "api_key": "ya29.x" });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let (status, v) = relay
            .admin(Method::POST, "/admin/accounts", Some(body))
            .await;
        assert_eq!(status, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
    let id = google_login(&relay, &mock, "ya29.x", json!({})).await;
    let (status, v) = relay
        .admin(Method::GET, &format!("/admin/accounts/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["provider"], "code-assist");
    assert!(v["project"].is_null());
    // Google's token endpoint wants the client's secret: a grant without one is refused, unless
    // it replaces one of the same client, whose secret it keeps.
    let mut grant = json!({
        "refresh_token": "1//rt", "token_url": "https://oauth2.googleapis.com/token",
        "client_id": "c.apps.googleusercontent.com",
        "expires_at": (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(60)).to_string(),
    });
    let path = format!("/admin/accounts/{id}");
    let patch = |grant: &Value| json!({ "oauth": grant });
    let (status, v) = relay.admin(Method::PATCH, &path, Some(patch(&grant))).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_secret")
    );
    grant["client_secret"] = json!("cs-1");
    let (status, v) = relay.admin(Method::PATCH, &path, Some(patch(&grant))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["oauth"]["client_secret_set"], true);
    grant.as_object_mut().unwrap().remove("client_secret");
    grant["refresh_token"] = json!("1//rt-2");
    let (status, v) = relay.admin(Method::PATCH, &path, Some(patch(&grant))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["oauth"]["client_secret_set"], true);
    assert!(!v.to_string().contains("cs-1"));
    // Another client: its secret is not the old one's.
    grant["client_id"] = json!("other.apps.googleusercontent.com");
    let (status, v) = relay.admin(Method::PATCH, &path, Some(patch(&grant))).await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_model_quota_leaves_the_login_serving_its_other_models() {
    let mock = MockUpstream::start().await;
    mock.set_code_assist_project(Some("proj-loaded"));
    let relay = Relay::start().await;
    google_login(&relay, &mock, "ya29.login", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let pro = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse";
    // As the Code Assist API says it: no quota named (no `QuotaFailure`), yet the model's.
    mock.push_behavior(Behavior::error(
        429,
        "RESOURCE_EXHAUSTED",
        "You have exhausted your capacity on this model.",
    ));
    let resp = ask(&relay, pro, &key).await;
    assert_eq!(resp.status(), 429);
    let error = resp.json::<Value>().await.unwrap();
    assert_eq!(error["error"]["status"], "RESOURCE_EXHAUSTED", "{error}");
    let sent = mock.requests().len();
    // Pro rests; Flash is served by the same login.
    let resp = ask(&relay, pro, &key).await;
    assert_ne!(resp.status(), 200);
    assert_eq!(mock.requests().len(), sent);
    let flash = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let resp = ask(&relay, flash, &key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.requests().pop().unwrap().json()["model"],
        "gemini-2.5-flash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_cannot_be_wrapped_is_refused_and_nothing_of_it_is_sent() {
    let mock = MockUpstream::start().await;
    mock.set_code_assist_project(Some("proj-loaded"));
    let relay = Relay::start().await;
    google_login(&relay, &mock, "ya29.login", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    // JSON but for a byte that is not UTF-8, in a string the relay does not read: as it came,
    // its own `project` and `model` would be what the API reads.
    let mut smuggled =
        br#"{"model":"gemini-2.5-pro","project":"someone-elses","request":{"contents":[{"parts":[{"text":"hi "#
            .to_vec();
    smuggled.push(0xff);
    smuggled.extend_from_slice(br#""}]}]},"contents":[{"parts":[{"text":"hi"}]}]}"#);
    for method in ["generateContent", "countTokens"] {
        let resp = http_client()
            .post(relay.url(&format!("/v1beta/models/gemini-2.5-flash:{method}")))
            .header("x-goog-api-key", &key)
            .header("content-type", "application/json")
            .body(smuggled.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let error = resp.json::<Value>().await.unwrap();
        assert_eq!(status, 400, "{method}: {error}");
        assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "{error}");
    }
    // A token count without contents neither.
    let resp = gemini_call(
        &relay,
        "/v1beta/models/gemini-2.5-flash:countTokens",
        &key,
        &json!({ "model": "gemini-2.5-pro", "project": "someone-elses" }),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(setup_calls(&mock).len(), mock.requests().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_is_asked_for_once_by_racing_requests_and_kept_across_reloads() {
    let mock = MockUpstream::start().await;
    mock.set_code_assist_project(Some("proj-loaded"));
    let relay = Relay::start().await;
    let id = google_login(&relay, &mock, "ya29.login", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let racing: Vec<_> = (0..8).map(|_| ask(&relay, path, &key)).collect();
    for resp in futures_util::future::join_all(racing).await {
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(setup_calls(&mock).len(), 1);
    // Another field changed: the accounts reload, the login is the same.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{id}"),
            Some(json!({ "priority": 3 })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // The view says what was learned (the record holds no project).
    assert_eq!(v["project_learned"], "proj-loaded", "{v}");
    assert!(v["project"].is_null());
    assert_eq!(ask(&relay, path, &key).await.status(), 200);
    assert_eq!(setup_calls(&mock).len(), 1);
    // Another login (a new token, no grant): asked again.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{id}"),
            Some(json!({ "api_key": "ya29.other" })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    mock.require_api_key("ya29.other");
    assert_eq!(ask(&relay, path, &key).await.status(), 200);
    assert_eq!(setup_calls(&mock).len(), 2);
    // A grant given to it: another login too.
    let grant = json!({
        "refresh_token": "1//rt", "token_url": "http://127.0.0.1:9/token",
        "client_id": "c.apps.googleusercontent.com", "client_secret": "cs",
        "expires_at": (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(60)).to_string(),
    });
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{id}"),
            Some(json!({ "oauth": grant })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(ask(&relay, path, &key).await.status(), 200);
    assert_eq!(setup_calls(&mock).len(), 3);
    // A 403 right after the project was learned is about something else (a model the login
    // may not use): the project stays (one learned a while ago is asked for again: the unit
    // tests of `ProjectCell`).
    mock.push_behavior(Behavior::error(
        403,
        "PERMISSION_DENIED",
        "Permission denied on resource project proj-loaded.",
    ));
    assert_eq!(ask(&relay, path, &key).await.status(), 403);
    assert_eq!(ask(&relay, path, &key).await.status(), 200);
    assert_eq!(setup_calls(&mock).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_call_fails_the_attempt_for_the_whole_login() {
    let mock = MockUpstream::start().await;
    mock.fail_code_assist_setup(Some(429));
    let relay = Relay::start().await;
    let id = google_login(&relay, &mock, "ya29.login", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let resp = ask(
        &relay,
        "/v1beta/models/gemini-2.5-pro:generateContent",
        &key,
    )
    .await;
    let status = resp.status();
    let error = resp.json::<Value>().await.unwrap();
    assert_eq!(status, 502, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loadCodeAssist answered 429"),
        "{error}"
    );
    // Counted against the account, not one model's quota.
    let (_, view) = relay
        .admin(Method::GET, &format!("/admin/accounts/{id}"), None)
        .await;
    assert_eq!(view["state"]["consecutive_failures"], 1, "{view}");
    assert_eq!(view["state"]["rate_limited_families"], json!({}), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_logins_alone_list_the_models_they_name() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    let models = json!({ "models": ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-3-*"] });
    google_login(&relay, &mock, "ya29.login", models).await;
    let (_, key) = relay.create_key("k").await;
    let get = |path: &str| {
        http_client()
            .get(relay.url(path))
            .header("x-goog-api-key", &key)
            .send()
    };
    let list = get("/v1beta/models").await.unwrap();
    assert_eq!(list.status(), 200);
    let list = list.json::<Value>().await.unwrap();
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]);
    let one = get("/v1beta/models/gemini-2.5-pro").await.unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(
        one.json::<Value>().await.unwrap()["supportedGenerationMethods"],
        json!(["generateContent", "countTokens"])
    );
    // Nothing was asked of the API (it has no list).
    assert!(mock.requests().is_empty());

    // Beside a Gemini API account, the list is that account's.
    let gemini = MockUpstream::start().await;
    relay
        .add_account(&gemini, "sk-gem", json!({ "provider": "gemini" }))
        .await;
    let list = get("/v1beta/models").await.unwrap();
    assert_eq!(list.status(), 200);
    assert_eq!(gemini.requests().len(), 1);
    assert!(mock.requests().is_empty());
}
