//! ChatGPT subscriptions (Plus, Pro, Business, ...) through the Codex backend: what Codex CLI
//! talks to when it is logged in with a ChatGPT account instead of an API key. It speaks the
//! Responses API at `{base}/responses` (and `/responses/compact`), with the login's access token
//! as a bearer token and the ChatGPT account (workspace) it was issued for in
//! `chatgpt-account-id`. It keeps no response (`store` must be `false`) and answers only as a
//! stream: a Responses call that is not streamed is sent as one, and the stream's final
//! `response` is the JSON answer ([`whole_answer`]). It serves Responses calls and compactions,
//! nothing else (not chat completions, embeddings, images or the model list: the scheduler
//! offers such accounts for no other call). The access token lasts days; the account's OAuth
//! grant renews it (`crate::oauth`).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::catalog::Account;
use crate::stream::sse::{SseEvent, SseFramer};
use crate::upstream_client::UpstreamResponse;

pub const DEFAULT_BASE_URL: &str = "https://chatgpt.com/backend-api/codex";

/// The claim of a ChatGPT access token (a JWT) that holds what it was issued for.
const AUTH_CLAIM: &str = "https://api.openai.com/auth";

static ACCOUNT_ID: HeaderName = HeaderName::from_static("chatgpt-account-id");
static OPENAI_BETA: HeaderName = HeaderName::from_static("openai-beta");
static ORIGINATOR: HeaderName = HeaderName::from_static("originator");

/// The ChatGPT account (workspace) id an access token was issued for: its JWT's
/// `https://api.openai.com/auth` claim's `chatgpt_account_id`. The signature is not checked:
/// the backend checks it.
pub fn account_id(access_token: &str) -> Option<String> {
    let claims = crate::oauth::jwt_claims(access_token)?;
    let id = claims
        .get(AUTH_CLAIM)?
        .get("chatgpt_account_id")?
        .as_str()?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// Whether a ChatGPT account serves an OpenAI call on `path` (after the version): a Responses
/// generation, or a compaction.
pub fn serves(path: &str) -> bool {
    matches!(path, "/responses" | "/responses/compact")
}

/// Whether a call on `path` that did not ask for a stream is sent as one, its answer then made
/// whole ([`whole_answer`]): a generation (a compaction answers JSON).
pub fn streams_for_client(path: &str, streams: bool) -> bool {
    path == "/responses" && !streams
}

/// `base_url` + the Responses path. The client's query does not go: the backend takes none.
pub fn upstream_url(account: &Account, path: &str) -> String {
    super::join(&account.record.base_url, path, None)
}

/// The client's headers (Codex CLI's `session_id`, `originator`, ... go as they came), the
/// access token as a bearer token, the ChatGPT account, and the Responses beta the backend
/// wants; `originator` says Codex's own name when the client gave none.
pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = super::openai::upstream_headers(client, account);
    if let Some(id) = &account.chatgpt_account {
        headers.insert(ACCOUNT_ID.clone(), id.clone());
    }
    headers.insert(
        OPENAI_BETA.clone(),
        HeaderValue::from_static("responses=experimental"),
    );
    if !headers.contains_key(&ORIGINATOR) {
        headers.insert(ORIGINATOR.clone(), HeaderValue::from_static("codex_cli_rs"));
    }
    headers
}

/// A Responses body as the backend takes it: `store: false` when the client asked the vendor to
/// keep the response (the default), which the backend refuses to do, `stream: true` when
/// `to_stream` (a generation the client did not stream), and the account's name for the model
/// when it has one (`model`). `None` when it goes as it is (Codex CLI's say both already), or is
/// not a JSON object.
pub fn request_body(
    body: &Bytes,
    stores: bool,
    to_stream: bool,
    model: Option<&str>,
) -> Option<Bytes> {
    if !stores && !to_stream && model.is_none() {
        return None;
    }
    // A compaction (neither) takes no `store`.
    let mut fields = Vec::with_capacity(3);
    if stores || to_stream {
        fields.push(("store", Value::Bool(false)));
    }
    if to_stream {
        fields.push(("stream", Value::Bool(true)));
    }
    if let Some(model) = model {
        fields.push(("model", Value::from(model)));
    }
    super::json_fields::with_fields(body, &fields)
}

/// The largest stream read for a JSON answer (its final event holds the whole response).
const MAX_WHOLE_BYTES: usize = 64 << 20;

/// A successful answer to a generation the client did not stream, which went as a stream: the
/// final `response` of its `response.completed` (or `response.incomplete`) event, the JSON the
/// Responses API answers when not streamed; a response that failed (`response.failed`, an
/// `error` event), OpenAI's error JSON with the status its code stands for; a stream that ends
/// without either, or does not end within `within`, a 502 or a 504. Anything but a 200 event
/// stream goes as it came (the backend's errors are JSON already).
pub async fn whole_answer(resp: UpstreamResponse, within: Duration) -> UpstreamResponse {
    let (mut head, mut body) = resp.into_parts();
    if !head.status.is_success() || !super::is_event_stream(&head.headers) {
        return Response::from_parts(head, body);
    }
    let mut framer = SseFramer::with_max_event_bytes(MAX_WHOLE_BYTES);
    let mut end: Option<(StatusCode, Value)> = None;
    let mut read = 0usize;
    let mut too_large = false;
    let reading = async {
        let mut ended = false;
        while end.is_none() && !ended {
            let chunk = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => chunk,
                    Err(_) => continue,
                },
                // The stream's end completes an event that was not followed by a blank line.
                _ => {
                    ended = true;
                    Bytes::from_static(b"\n\n")
                }
            };
            read += chunk.len();
            if read > MAX_WHOLE_BYTES {
                too_large = true;
                break;
            }
            framer.feed(&chunk, |event| {
                if end.is_none() {
                    end = final_event(event);
                }
            });
        }
    };
    let timed_out = tokio::time::timeout(within, reading).await.is_err();
    let (status, json) = end.unwrap_or_else(|| {
        let (status, why) = if timed_out {
            (
                StatusCode::GATEWAY_TIMEOUT,
                format!("the response did not end within {} s", within.as_secs()),
            )
        } else if too_large {
            (
                StatusCode::BAD_GATEWAY,
                format!("the response is larger than {MAX_WHOLE_BYTES} bytes"),
            )
        } else {
            (
                StatusCode::BAD_GATEWAY,
                "the response's stream ended before the response did".to_owned(),
            )
        };
        (status, error_json(&why, "server_error", None))
    });
    head.status = status;
    super::json_answer(head, &json)
}

/// The answer an event ends the response with, if it does: (status, JSON body).
fn final_event(event: SseEvent<'_>) -> Option<(StatusCode, Value)> {
    // Only the events that can end it are parsed (not every delta), by the `event:` line; one
    // without it by its data's `type`.
    let named = event.event;
    if named.is_some_and(|e| {
        !matches!(
            e,
            "response.completed" | "response.incomplete" | "response.failed" | "error"
        )
    }) {
        return None;
    }
    let data: Value = serde_json::from_str(event.data).ok()?;
    let kind = named.or_else(|| data.get("type")?.as_str())?;
    match kind {
        "response.completed" | "response.incomplete" => {
            Some((StatusCode::OK, data.get("response")?.clone()))
        }
        "response.failed" => {
            let error = data.get("response").and_then(|r| r.get("error"));
            Some(failure(error))
        }
        "error" => Some(failure(Some(data.get("error").unwrap_or(&data)))),
        _ => None,
    }
}

/// A failed response's error (`{code, message, ...}`) as OpenAI's error JSON, its fields kept
/// (the Codex backend's `resets_in_seconds` of a spent window, for the scheduler), with the
/// status its code stands for: a rate or usage limit, or spent quota, 429; a request the model
/// refuses 400; else 500.
fn failure(error: Option<&Value>) -> (StatusCode, Value) {
    let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str);
    let code = field("code").or_else(|| field("type"));
    let status = match code {
        Some(c) if c.contains("rate_limit") || c.contains("usage_limit") || c.contains("quota") => {
            StatusCode::TOO_MANY_REQUESTS
        }
        Some(c) if c.contains("invalid") || c.contains("context_length") => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let kind = match (field("type"), status) {
        (Some(kind), _) => kind,
        (None, StatusCode::BAD_REQUEST) => "invalid_request_error",
        (None, _) => "server_error",
    };
    let mut json = error_json(
        field("message").unwrap_or("the response failed"),
        kind,
        code,
    );
    if let (Some(Value::Object(given)), Some(Value::Object(made))) = (error, json.get_mut("error"))
    {
        for (name, value) in given {
            made.entry(name.clone()).or_insert_with(|| value.clone());
        }
    }
    (status, json)
}

fn error_json(message: &str, kind: &str, code: Option<&str>) -> Value {
    serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn the_account_id_is_read_from_the_access_tokens_auth_claim() {
        let token = jwt(serde_json::json!({
            "exp": 1_800_000_000,
            AUTH_CLAIM: { "chatgpt_account_id": "acc-123", "chatgpt_plan_type": "pro" }
        }));
        assert_eq!(account_id(&token).as_deref(), Some("acc-123"));
        assert_eq!(crate::oauth::jwt_expiry_ms(&token), Some(1_800_000_000_000));
        for bad in [
            jwt(serde_json::json!({ "exp": 1 })),
            jwt(serde_json::json!({ AUTH_CLAIM: { "chatgpt_account_id": "" } })),
            "sk-proj-not-a-jwt".to_owned(),
            "a.%%%.c".to_owned(),
        ] {
            assert_eq!(account_id(&bad), None, "{bad}");
        }
    }

    #[test]
    fn only_responses_and_compactions_are_served() {
        assert!(serves("/responses") && serves("/responses/compact"));
        assert!(streams_for_client("/responses", false));
        assert!(!streams_for_client("/responses", true));
        assert!(!streams_for_client("/responses/compact", false));
        for path in [
            "/chat/completions",
            "/embeddings",
            "/models",
            "/responses/resp_1",
            "/images/generations",
        ] {
            assert!(!serves(path), "{path}");
        }
    }

    #[test]
    fn a_body_that_asks_to_store_goes_with_store_false() {
        let body = Bytes::from_static(br#"{"model":"gpt-5","input":"hi","stream":true}"#);
        let sent: serde_json::Value =
            serde_json::from_slice(&request_body(&body, true, false, None).unwrap()).unwrap();
        assert_eq!(sent["store"], false);
        assert_eq!(sent["input"], "hi");
        assert_eq!(request_body(&body, false, false, None), None);
        // A generation the client did not stream goes as a stream.
        let body = Bytes::from_static(br#"{"model":"gpt-5","input":"hi","store":false}"#);
        let sent: serde_json::Value =
            serde_json::from_slice(&request_body(&body, false, true, None).unwrap()).unwrap();
        assert_eq!(
            (sent["store"].clone(), sent["stream"].clone()),
            (json!(false), json!(true))
        );
        // The account's name for the model, alone.
        let sent: serde_json::Value = serde_json::from_slice(
            &request_body(&body, false, false, Some("gpt-5-codex")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            sent,
            json!({ "model": "gpt-5-codex", "input": "hi", "store": false })
        );
        // A compaction's: the name alone, no `store` added.
        let compact = Bytes::from_static(br#"{"model":"gpt-5","input":[],"instructions":"c"}"#);
        assert_eq!(
            request_body(&compact, false, false, Some("gpt-5-codex")).unwrap(),
            r#"{"model":"gpt-5-codex","input":[],"instructions":"c"}"#
        );
    }

    fn stream(events: &str) -> UpstreamResponse {
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(http_body_util::Either::Right(crate::body::full(
                Bytes::from(events.to_owned()),
            )))
            .unwrap()
    }

    async fn whole(events: &str) -> (u16, Value) {
        let resp = whole_answer(stream(events), Duration::from_secs(5)).await;
        let status = resp.status().as_u16();
        assert_eq!(resp.headers()["content-type"], "application/json");
        let length = resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(length, body.len().to_string());
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_streamed_answer_is_made_the_json_answer_of_its_final_response() {
        let completed = concat!(
            "event: response.created\n",
            "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\n",
            "event: response.output_text.delta\n",
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
            "event: response.completed\n",
            "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":5,\"output_tokens\":2,\"total_tokens\":7}}}\n\n",
        );
        let (status, body) = whole(completed).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"id": "resp_1", "status": "completed", "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}})
        );
        // Without `event:` lines, by the data's type; an incomplete response is still one.
        let (status, body) = whole(
            "data: {\"type\":\"response.incomplete\",\"response\":{\"id\":\"r\",\"status\":\"incomplete\"}}\n\n",
        )
        .await;
        assert_eq!((status, body["status"].clone()), (200, json!("incomplete")));
    }

    #[tokio::test]
    async fn a_failed_or_cut_stream_is_an_error_in_openais_shape() {
        let (status, body) = whole(concat!(
            "event: response.failed\n",
            "data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}\n\n",
        ))
        .await;
        assert_eq!(
            (status, body["error"]["message"].clone()),
            (500, json!("boom"))
        );
        let (status, body) = whole(
            "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\"}\n\n",
        )
        .await;
        assert_eq!(status, 429);
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        // A spent window keeps its reset, for the scheduler to rest the account until then.
        let (status, body) = whole(
            "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"type\":\"usage_limit_reached\",\"message\":\"limit\",\"resets_in_seconds\":90}}}",
        )
        .await;
        assert_eq!(
            status, 429,
            "the last event counts without a blank line after it"
        );
        assert_eq!(
            (
                body["error"]["type"].clone(),
                body["error"]["resets_in_seconds"].clone()
            ),
            (json!("usage_limit_reached"), json!(90))
        );
        let (status, body) = whole(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n",
        )
        .await;
        assert_eq!(status, 502);
        assert_eq!(body["error"]["type"], "server_error");
        // An answer that is not a 200 stream goes as it came.
        let refused = http::Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(http_body_util::Either::Right(crate::body::full(
                Bytes::from_static(br#"{"detail":"Unsupported parameter"}"#),
            )))
            .unwrap();
        let resp = whole_answer(refused, Duration::from_secs(5)).await;
        assert_eq!(resp.status(), 400);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"detail":"Unsupported parameter"}"#);
    }
}
