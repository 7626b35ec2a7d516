//! Image generation end to end: the real relay against a small image upstream that speaks
//! OpenAI's images API (JSON generations with `b64_json` or `url`, multipart edits), Imagen's
//! `:predict` and Gemini's `generateContent` with inline image parts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use futures_util::StreamExt;

use crate::support::mock::http_client;
use crate::support::relay::Relay;
use switchyard::config::{Config, ImageStorage};

/// The image bytes the mock makes: a PNG signature and the image's index.
fn png(i: u64) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend_from_slice(format!("mock-image-{i}").as_bytes());
    b
}

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct MockState {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Statuses to fail the next requests with; `STALL`: a 200 head and half a body, then
    /// nothing.
    fail: Arc<Mutex<VecDeque<u16>>>,
}

const STALL: u16 = 0;

type MockBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// An image upstream on 127.0.0.1:0.
struct ImageMock {
    addr: SocketAddr,
    state: MockState,
}

impl ImageMock {
    async fn start() -> ImageMock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = MockState::default();
        let served = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), addr, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ImageMock { addr, state }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The next answer: a 200 head and the first half of its body, then a stall.
    fn stall_next(&self) {
        self.fail_next(STALL);
    }

    fn fail_next(&self, status: u16) {
        self.state.fail.lock().unwrap().push_back(status);
    }
}

async fn answer(
    state: MockState,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path().to_owned();
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let reply = |status: u16, v: Value| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())).boxed())
            .unwrap())
    };
    let failure = state.fail.lock().unwrap().pop_front();
    if failure == Some(STALL) {
        let half = Bytes::from_static(br#"{"created": 1700000000, "data": [{"b64_j"#);
        let frames = futures_util::stream::iter([Ok(http_body::Frame::data(half))])
            .chain(futures_util::stream::pending());
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
            .unwrap());
    }
    if let Some(status) = failure {
        return reply(
            status,
            json!({ "error": { "message": "mock failure", "type": "server_error" } }),
        );
    }
    if path.ends_with("/images/generations") {
        let v: Value = serde_json::from_slice(&body).unwrap();
        let n = v["n"].as_u64().unwrap_or(1);
        let model = v["model"].as_str().unwrap_or("");
        let data: Vec<Value> = (0..n)
            .map(|i| {
                if v["response_format"] == "url" {
                    json!({ "url": format!("http://{addr}/img/{i}.png"), "revised_prompt": "revised" })
                } else {
                    json!({ "b64_json": B64.encode(png(i)), "revised_prompt": "revised" })
                }
            })
            .collect();
        let mut out = json!({ "created": 1_700_000_000, "data": data });
        if model.starts_with("gpt-image") {
            out["usage"] = json!({ "input_tokens": 20, "output_tokens": 4160, "total_tokens": 4180,
                "input_tokens_details": { "text_tokens": 20, "image_tokens": 0 } });
        }
        return reply(200, out);
    }
    if path.ends_with("/images/edits") {
        return reply(
            200,
            json!({ "created": 1_700_000_000, "data": [{ "b64_json": B64.encode(png(7)) }],
                "usage": { "input_tokens": 50, "output_tokens": 50, "total_tokens": 100,
                    "input_tokens_details": { "text_tokens": 10, "image_tokens": 40 } } }),
        );
    }
    if path.ends_with(":predict") {
        let v: Value = serde_json::from_slice(&body).unwrap();
        let n = v["parameters"]["sampleCount"].as_u64().unwrap_or(1);
        let predictions: Vec<Value> = (0..n)
            .map(|i| json!({ "bytesBase64Encoded": B64.encode(png(i)), "mimeType": "image/png" }))
            .collect();
        return reply(200, json!({ "predictions": predictions }));
    }
    if path.ends_with(":generateContent") {
        return reply(
            200,
            json!({
                "candidates": [{ "content": { "role": "model", "parts": [
                    { "text": "Here is your image." },
                    { "inlineData": { "mimeType": "image/png", "data": B64.encode(png(3)) } }
                ]}, "finishReason": "STOP" }],
                "usageMetadata": { "promptTokenCount": 12, "candidatesTokenCount": 1290,
                    "totalTokenCount": 1302,
                    "candidatesTokensDetails": [{ "modality": "IMAGE", "tokenCount": 1290 }] }
            }),
        );
    }
    reply(404, json!({ "error": { "message": "no such route" } }))
}

/// A relay configured by `configure`, an account of `provider` on `mock`, and a key.
async fn setup(
    provider: &str,
    configure: impl FnOnce(&mut Config),
) -> (Relay, ImageMock, String, String) {
    let mock = ImageMock::start().await;
    let relay = Relay::start_configured(configure).await;
    add(&relay, &mock, provider, 1).await;
    let (id, key) = relay.create_key("painter").await;
    (relay, mock, id, key)
}

async fn add(relay: &Relay, mock: &ImageMock, provider: &str, priority: i32) -> String {
    let base = match provider {
        "openai" => format!("http://{}/v1", mock.addr),
        _ => format!("http://{}", mock.addr),
    };
    let mut body = json!({ "name": format!("{provider} {priority}"), "provider": provider,
        "base_url": base, "api_key": "sk-upstream", "priority": priority });
    if provider == "azure-openai" {
        body["deployments"] = json!({ "dall-e-3": "painter-dep" });
    }
    let (status, v) = relay
        .admin(reqwest::Method::POST, "/admin/accounts", Some(body))
        .await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn generate(relay: &Relay, key: &str, body: Value) -> (u16, Value) {
    let resp = http_client()
        .post(relay.url("/v1/images/generations"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn storage_on(c: &mut Config) {
    c.images.storage = ImageStorage::Local;
    c.images.url_ttl_secs = 60;
    c.images.retention_secs = 120;
}

async fn last_request(relay: &Relay) -> Value {
    relay.app.stats.flush().await;
    relay.requests("limit=1").await.remove(0)
}

#[tokio::test]
async fn both_formats_pass_through_without_storage_and_are_priced_per_image() {
    let (relay, mock, key_id, key) = setup("openai", |_| {}).await;
    let ask = json!({ "model": "dall-e-3", "prompt": "a red fox", "n": 2, "size": "1024x1024",
        "quality": "hd", "response_format": "b64_json" });
    let (status, v) = generate(&relay, &key, ask).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        B64.decode(v["data"][1]["b64_json"].as_str().unwrap())
            .unwrap(),
        png(1)
    );
    // The upstream got the account's credential, never the key.
    let seen = mock.seen();
    assert_eq!(seen[0].path, "/v1/images/generations");
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-upstream");
    let r = last_request(&relay).await;
    assert_eq!(
        (r["surface"].clone(), r["images"].clone()),
        (json!("images"), json!(2))
    );
    assert_eq!(r["cost_nanousd"], 160_000_000, "2 HD images at $0.08");
    assert_eq!(r["cache_hit"], false);

    let (status, v) = generate(
        &relay,
        &key,
        json!({ "model": "dall-e-3", "prompt": "a red fox", "response_format": "url" }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["data"][0]["url"],
        format!("http://{}/img/0.png", mock.addr),
        "the upstream's own link, untouched"
    );
    let usage = relay.usage(&format!("key_id={key_id}")).await;
    assert_eq!(usage["totals"]["images"], 3, "{usage}");
    assert_eq!(usage["totals"]["cost_nanousd"], 200_000_000);
}

#[tokio::test]
async fn stored_images_are_served_from_files_until_they_expire() {
    let (relay, mock, _, key) = setup("openai", storage_on).await;
    let (status, v) = generate(
        &relay,
        &key,
        json!({ "model": "dall-e-3", "prompt": "a lighthouse", "response_format": "url" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Switchyard asked for the bytes to keep them.
    let sent: Value = serde_json::from_slice(&mock.seen()[0].body).unwrap();
    assert_eq!(sent["response_format"], "b64_json");
    let url = v["data"][0]["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&relay.url("/files/")), "{url}");
    let id = url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(id.len(), 64, "256 random bits");
    assert_eq!(v["data"][0]["revised_prompt"], "revised");
    let got = http_client().get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.unwrap(), png(0));
    // The same request inline: the image itself, not stored (no link or cache entry would
    // name the file).
    let (_, v) = generate(
        &relay,
        &key,
        json!({ "model": "dall-e-3", "prompt": "a lighthouse", "response_format": "b64_json" }),
    )
    .await;
    assert_eq!(
        B64.decode(v["data"][0]["b64_json"].as_str().unwrap())
            .unwrap(),
        png(0)
    );
    // A guessed or malformed id is a 404.
    let miss = http_client()
        .get(relay.url(&format!("/files/{}", "0".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_eq!(miss.status(), 404);
    let miss = http_client()
        .get(relay.url("/files/..%2Fadmin-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(miss.status(), 404);

    // Past url_ttl_secs: 404, though the file is still kept …
    relay.app.clock.advance(Duration::from_secs(61));
    assert_eq!(http_client().get(&url).send().await.unwrap().status(), 404);
    let file = relay.data_dir.join("images").join("files").join(&id);
    assert!(file.exists());
    assert_eq!(switchyard::images::sweep_now(&relay.app).await, 0);
    // … until retention_secs, when the sweeper deletes it.
    relay.app.clock.advance(Duration::from_secs(60));
    assert_eq!(switchyard::images::sweep_now(&relay.app).await, 1);
    assert!(!file.exists());
}

#[tokio::test]
async fn identical_requests_hit_the_cache_and_others_miss() {
    let (relay, mock, key_id, key) = setup("openai", |c| {
        storage_on(c);
        c.images.cache.enabled = true;
        c.images.cache.ttl_secs = 600;
    })
    .await;
    let ask = json!({ "model": "dall-e-2", "prompt": "a cat", "size": "512x512", "response_format": "url" });
    let (status, first) = generate(&relay, &key, ask.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(mock.seen().len(), 1);
    // Same request, inline this time: from the cache, the same image.
    let mut inline = ask.clone();
    inline["response_format"] = json!("b64_json");
    let (status, hit) = generate(&relay, &key, inline).await;
    assert_eq!(status, 200, "{hit}");
    assert_eq!(mock.seen().len(), 1, "no upstream call on a hit");
    assert_eq!(
        B64.decode(hit["data"][0]["b64_json"].as_str().unwrap())
            .unwrap(),
        png(0)
    );
    let r = last_request(&relay).await;
    assert_eq!(r["cache_hit"], true);
    assert_eq!(r["cost_nanousd"], 0);
    assert_eq!(r["account_id"], Value::Null);
    assert_eq!(r["images"], 1);
    // The link form of a hit names the same stored file.
    let (_, again) = generate(&relay, &key, ask.clone()).await;
    assert_eq!(again["data"][0]["url"], first["data"][0]["url"]);
    assert_eq!(mock.seen().len(), 1);
    let metrics = relay.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_image_cache_hits_total{model=\"dall-e-2\"}")),
        "{metrics}"
    );
    // Another size: a miss.
    let mut other = ask.clone();
    other["size"] = json!("256x256");
    let (status, _) = generate(&relay, &key, other).await;
    assert_eq!(status, 200);
    assert_eq!(mock.seen().len(), 2);
    // Another key: its own cache.
    let (_, key2) = relay.create_key("other").await;
    generate(&relay, &key2, ask.clone()).await;
    assert_eq!(mock.seen().len(), 3);
    // Past the TTL: a miss again.
    relay.app.clock.advance(Duration::from_secs(601));
    generate(&relay, &key, ask).await;
    assert_eq!(mock.seen().len(), 4);
    let usage = relay.usage(&format!("key_id={key_id}")).await;
    assert_eq!(usage["totals"]["requests"], 5, "{usage}");
    // Three upstream calls at $0.018, $0.016, $0.018; the two hits cost nothing.
    assert_eq!(usage["totals"]["cost_nanousd"], 52_000_000);
}

#[tokio::test]
async fn edits_go_upstream_intact_and_are_priced_per_token() {
    let (relay, mock, _, key) = setup("openai", |_| {}).await;
    let boundary = "----switchyard-test-boundary";
    let mut body = Vec::new();
    for (k, v) in [
        ("model", "gpt-image-1"),
        ("prompt", "add a hat"),
        ("size", "1024x1024"),
    ] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"cat.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
    body.extend_from_slice(&png(42));
    body.extend_from_slice(b"\r\n\x00\xff binary tail");
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = http_client()
        .post(relay.url("/openai/v1/images/edits"))
        .bearer_auth(&key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        B64.decode(v["data"][0]["b64_json"].as_str().unwrap())
            .unwrap(),
        png(7)
    );
    let seen = &mock.seen()[0];
    assert_eq!(seen.path, "/v1/images/edits");
    assert_eq!(seen.body, body, "the multipart body, byte for byte");
    assert_eq!(
        seen.headers["content-type"],
        format!("multipart/form-data; boundary={boundary}").as_str()
    );
    let r = last_request(&relay).await;
    assert_eq!(
        (r["input_tokens"].clone(), r["output_tokens"].clone()),
        (json!(50), json!(50))
    );
    assert_eq!(r["images"], 1);
    // 10 text × $5 + 40 image × $10 + 50 output × $40, per million tokens.
    assert_eq!(r["cost_nanousd"], 2_450_000);

    // A broken multipart body: 400 in OpenAI's shape, nothing recorded, nothing sent.
    let resp = http_client()
        .post(relay.url("/v1/images/edits"))
        .bearer_auth(&key)
        .header("content-type", "multipart/form-data; boundary=zzz")
        .body("--zzz\r\nno headers end")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multipart"),
        "{err}"
    );
    assert_eq!(mock.seen().len(), 1);
    relay.app.stats.flush().await;
    assert_eq!(relay.requests("").await.len(), 1);
}

/// An edit reserves its file as an image, not its bytes as text: a 3 MB PNG read as text would
/// hold a million tokens of the key's limits (all of them, up to the limit) while it runs.
#[tokio::test]
async fn an_edit_reserves_its_image_as_an_image_not_as_text() {
    let (relay, mock, _, _) = setup("openai", |c| c.images.read_timeout_secs = 1).await;
    let (status, created) = relay
        .admin(
            reqwest::Method::POST,
            "/admin/keys",
            Some(json!({ "name": "k", "limits": { "window": { "seconds": 3600, "tokens": 1_000_000 } } })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let boundary = "b0undary";
    let mut body = Vec::new();
    for (k, v) in [("model", "gpt-image-1"), ("prompt", "add a hat")] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
    body.extend_from_slice(&png(1));
    body.resize(body.len() + 3 * 1024 * 1024, 0);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    // The answer stalls, so the request is in flight while the key is read.
    mock.stall_next();
    let send = http_client()
        .post(relay.url("/v1/images/edits"))
        .bearer_auth(&key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send();
    let sent = tokio::spawn(send);
    let mut reserved = 0;
    for _ in 0..200 {
        let info = relay.key_info(&key).await;
        reserved = info["usage"]["window_tokens"]["reserved"].as_u64().unwrap();
        if reserved > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A 2,000-token image, the prompt, and 4,096 output tokens: about 6,100.
    assert!((6_000..7_000).contains(&reserved), "reserved {reserved}");
    let resp = sent.await.unwrap().unwrap();
    assert_eq!(resp.status(), 504);
}

#[tokio::test]
async fn google_models_are_translated_and_native_predict_is_billed() {
    let (relay, mock, _, key) = setup("gemini", |_| {}).await;
    // Imagen through /v1/images/generations, inline.
    let (status, v) = generate(
        &relay,
        &key,
        json!({ "model": "imagen-4.0-generate-001", "prompt": "a boat", "n": 2, "size": "1792x1024", "response_format": "b64_json" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        B64.decode(v["data"][1]["b64_json"].as_str().unwrap())
            .unwrap(),
        png(1)
    );
    let seen = mock.seen();
    assert_eq!(
        seen[0].path,
        "/v1beta/models/imagen-4.0-generate-001:predict"
    );
    assert_eq!(seen[0].headers["x-goog-api-key"], "sk-upstream");
    let sent: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        sent["parameters"],
        json!({ "sampleCount": 2, "aspectRatio": "16:9" })
    );
    assert_eq!(last_request(&relay).await["cost_nanousd"], 80_000_000);
    // A Gemini image model, as a link without storage: a data URL; priced by its tokens.
    let (status, v) = generate(
        &relay,
        &key,
        json!({ "model": "gemini-2.5-flash-image", "prompt": "a boat", "response_format": "url" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let url = v["data"][0]["url"].as_str().unwrap();
    assert_eq!(url, format!("data:image/png;base64,{}", B64.encode(png(3))));
    assert_eq!(
        mock.seen()[1].path,
        "/v1beta/models/gemini-2.5-flash-image:generateContent"
    );
    let r = last_request(&relay).await;
    assert_eq!(
        (r["output_tokens"].clone(), r["images"].clone()),
        (json!(1290), json!(1))
    );
    // 12 × $0.30 + 1290 × $30 per million tokens.
    assert_eq!(r["cost_nanousd"], 38_703_600);

    // Imagen natively: the answer as sent, billed per image.
    let native =
        json!({ "instances": [{ "prompt": "a boat" }], "parameters": { "sampleCount": 3 } });
    let resp = http_client()
        .post(relay.url("/v1beta/models/imagen-4.0-fast-generate-001:predict"))
        .header("x-goog-api-key", &key)
        .json(&native)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["predictions"].as_array().unwrap().len(), 3);
    let r = last_request(&relay).await;
    assert_eq!(
        (r["images"].clone(), r["cost_nanousd"].clone()),
        (json!(3), json!(60_000_000))
    );
    // Gemini image models make one image a request, Imagen at most four (Ultra one): 400,
    // nothing sent.
    for (model, n) in [
        ("gemini-2.5-flash-image", 2),
        ("imagen-4.0-generate-001", 5),
        ("imagen-4.0-ultra-generate-001", 2),
    ] {
        let (status, v) = generate(
            &relay,
            &key,
            json!({ "model": model, "prompt": "a boat", "n": n }),
        )
        .await;
        assert_eq!(status, 400, "{model}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with("n: "),
            "{v}"
        );
    }
    assert_eq!(mock.seen().len(), 3);
    // Edits are OpenAI's only: 400, nothing sent.
    let resp = http_client()
        .post(relay.url("/v1/images/edits"))
        .bearer_auth(&key)
        .header("content-type", "multipart/form-data; boundary=b")
        .body("--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nimagen-4.0-generate-001\r\n--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--b--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.seen().len(), 3);
}

#[tokio::test]
async fn limits_apply_to_images() {
    let mock = ImageMock::start().await;
    let relay = Relay::start().await;
    add(&relay, &mock, "openai", 1).await;
    let create = |limits: Value| {
        let relay = &relay;
        async move {
            let (status, v) = relay
                .admin(
                    reqwest::Method::POST,
                    "/admin/keys",
                    Some(json!({ "name": "k", "limits": limits })),
                )
                .await;
            assert_eq!(status, 201, "{v}");
            v["key"].as_str().unwrap().to_owned()
        }
    };
    let ask = json!({ "model": "dall-e-3", "prompt": "a fox", "response_format": "b64_json" });
    // A key without the images surface.
    let text_only = create(json!({ "allowed_surfaces": ["openai", "anthropic"] })).await;
    let (status, v) = generate(&relay, &text_only, ask.clone()).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("images"),
        "{v}"
    );
    assert!(mock.seen().is_empty());
    // A budget of $0.05 and $0.04 images: the second is admitted while $0.01 is left and
    // nothing is in flight (docs/limits.md), the third is refused: the budget counts images.
    let budget = create(json!({ "total_cost_nanousd": 50_000_000 })).await;
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    for _ in 0..4 {
        let (status, v) = generate(&relay, &budget, ask.clone()).await;
        statuses.push(status);
        last = v;
    }
    assert_eq!(statuses, [200, 200, 403, 403], "{last}");
    assert_eq!(last["error"]["code"], "budget_exceeded", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("$0.080000 used"),
        "{last}"
    );
    assert_eq!(mock.seen().len(), 2);
    // A request window counts every request sent upstream, also one that every account failed.
    let window = create(json!({ "window": { "seconds": 86_400, "requests": 2 } })).await;
    mock.fail_next(500);
    assert_eq!(generate(&relay, &window, ask.clone()).await.0, 500);
    let info = relay.key_info(&window).await;
    assert_eq!(info["usage"]["window_requests"]["used"], 1, "{info}");
}

#[tokio::test]
async fn a_failing_account_hands_over_and_azure_uses_its_deployment() {
    let (relay, first, _, key) = setup("openai", |c| c.scheduler.max_attempts = 2).await;
    let second = ImageMock::start().await;
    add(&relay, &second, "azure-openai", 2).await;
    first.fail_next(500);
    let (status, v) = generate(
        &relay,
        &key,
        json!({ "model": "dall-e-3", "prompt": "a fox", "response_format": "b64_json" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(first.seen().len(), 1);
    let seen = second.seen();
    assert_eq!(
        seen[0].path,
        "/openai/deployments/painter-dep/images/generations"
    );
    assert_eq!(seen[0].headers["api-key"], "sk-upstream");
    let r = last_request(&relay).await;
    assert_eq!(r["status"], 200);
    assert_eq!(r["images"], 1);
    // Every account failing: the upstream's error reaches the client, no image billed.
    second.fail_next(503);
    first.fail_next(503);
    let (status, _) = generate(
        &relay,
        &key,
        json!({ "model": "dall-e-3", "prompt": "a fox 2", "response_format": "b64_json" }),
    )
    .await;
    assert_eq!(status, 503);
    // Logged and counted as an image request that failed, billed nothing.
    let r = last_request(&relay).await;
    assert_eq!(
        (r["status"].as_u64(), r["images"].as_u64()),
        (Some(503), Some(0))
    );
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains(r#"switchyard_requests_total{surface="images",status="503"} 1"#),
        "{metrics}"
    );
    // A 200 whose body holds no images: a 502 to the client, logged and counted once.
    let (relay, only, _, key) = setup("openai", |_| {}).await;
    only.fail_next(200);
    let (status, v) = generate(
        &relay,
        &key,
        json!({ "model": "dall-e-3", "prompt": "a fox 3", "response_format": "b64_json" }),
    )
    .await;
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{v}"
    );
    let r = last_request(&relay).await;
    assert_eq!(
        (r["status"].as_u64(), r["images"].as_u64()),
        (Some(502), Some(0))
    );
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains(r#"switchyard_requests_total{surface="images",status="502"} 1"#),
        "{metrics}"
    );
}

/// An answer that stalls after its head is a failed attempt like a missing head: nothing has
/// reached the client yet, so another account takes over. With no other account the client gets
/// a 504 in OpenAI's error shape, and nothing is billed.
#[tokio::test]
async fn an_answer_that_stalls_after_its_head_hands_over_to_another_account() {
    let (relay, first, _, key) = setup("openai", |c| {
        c.scheduler.max_attempts = 2;
        c.images.read_timeout_secs = 1;
    })
    .await;
    let second = ImageMock::start().await;
    let second_id = add(&relay, &second, "openai", 2).await;
    first.stall_next();
    let ask = json!({ "model": "dall-e-3", "prompt": "a fox", "response_format": "b64_json" });
    let (status, v) = generate(&relay, &key, ask.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        B64.decode(v["data"][0]["b64_json"].as_str().unwrap())
            .unwrap(),
        png(0)
    );
    assert_eq!((first.seen().len(), second.seen().len()), (1, 1));
    let r = last_request(&relay).await;
    assert_eq!(
        (r["status"].as_u64(), r["images"].as_u64()),
        (Some(200), Some(1))
    );
    assert_eq!(r["account_id"], second_id.as_str());

    // One account, stalling.
    let (relay, only, _, key) = setup("openai", |c| c.images.read_timeout_secs = 1).await;
    only.stall_next();
    let (status, v) = generate(&relay, &key, ask).await;
    assert_eq!(status, 504, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("did not arrive whole within 1 s"),
        "{message}"
    );
    relay.app.stats.flush().await;
    assert_eq!(relay.usage("").await["images"], 0);
    // Logged as an image request that failed, as one that failed with an answer is.
    let r = last_request(&relay).await;
    assert_eq!(
        (
            r["status"].as_u64(),
            r["surface"].as_str(),
            r["images"].as_u64()
        ),
        (Some(504), Some("images"), Some(0))
    );
}
