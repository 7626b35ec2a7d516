//! `POST /admin/accounts/{id}/test`: a short generation sent to one account the way a client's
//! would go (its credential, proxy, model map, vendor conventions, a Code Assist project found
//! first, a Codex answer made whole), and what came back. Nothing else happens: the account's
//! health is not reported, no key is charged, no usage is recorded (the vendor bills the few
//! tokens to the account).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use super::call::{self, Endpoint, WholeAnswer};
use super::upstream;
use crate::app::App;
use crate::catalog::Account;
use crate::error::ApiError;
use crate::providers;
use crate::scheduler::health::{self, Outcome, Verdict};
use crate::store::{Protocol, Provider};
use crate::upstream_client::read_capped;

/// What the account is asked.
const PROMPT: &str = "Reply with the single word OK.";
/// Claude subscriptions serve only Claude Code's requests, which open with this system prompt.
const CLAUDE_CODE_SYSTEM: &str = "You are Claude Code, Anthropic's official CLI for Claude.";
/// The most of the answer read, and of its text shown.
const MAX_ANSWER: u64 = 256 * 1024;
const MAX_SHOWN: usize = 500;

/// Sends the test request for `model` to `account`; the result as the admin API shows it. The
/// whole of it, answer read, within the first-byte timeout: a test is a short answer or none.
pub async fn probe(app: &App, account: &Account, model: &str) -> Result<Value, ApiError> {
    let (endpoint, vendor_path, body) = request(account, model);
    let body = Bytes::from(body.to_string());
    // Native on the account's own protocol: an OpenAI account named for a `claude-…` model is
    // still asked in OpenAI's terms.
    let (mut call, _) = call::build(
        &endpoint,
        &vendor_path,
        None,
        &body,
        app.config.limits.default_max_tokens,
        &|_| true,
    )?;
    let within = Duration::from_secs(app.config.upstream.first_byte_timeout_secs.max(1));
    call.first_byte_timeout = Some(within);
    // Read whole as part of the attempt: an answer that stalls or is cut is a failure.
    call.whole_answer = Some(WholeAnswer {
        within,
        max_bytes: MAX_ANSWER,
    });
    let mut client = HeaderMap::new();
    client.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let started = Instant::now();
    let cooldown = Duration::from_secs(app.config.scheduler.rate_limit_cooldown_secs);
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut shown = json!({
        "account_id": account.id(),
        "model": model,
        "upstream_model": upstream_name(account, model),
    });
    let attempt = async {
        let (resp, _) = upstream::send(app, &call, &client, account).await?;
        let (head, answer) = resp.into_parts();
        let answer = read_capped(answer, MAX_ANSWER as usize, within).await;
        Ok::<_, upstream::SendError>((head, answer))
    };
    let attempt = tokio::time::timeout(within, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(upstream::SendError::Unfinished {
                why: format!("no whole answer within {} s", within.as_secs()),
                timed_out: true,
            })
        });
    match attempt {
        Err(e) => {
            shown["ok"] = json!(false);
            shown["status"] = Value::Null;
            let verdict = health::judge(e.outcome(), now_ms, cooldown);
            shown["verdict"] = json!(verdict_name(&verdict));
            shown["error"] = json!(e.describe());
        }
        Ok((head, answer)) => {
            let verdict = health::judge(
                Outcome::Response {
                    status: head.status.as_u16(),
                    headers: &head.headers,
                    body: &answer,
                },
                now_ms,
                cooldown,
            );
            let parsed: Option<Value> = serde_json::from_slice(&answer).ok();
            let text = parsed.as_ref().and_then(reply);
            // A redirect is no answer (the base URL is wrong); nor is a 200 without a reply.
            let ok = verdict == Verdict::Healthy && head.status.is_success() && text.is_some();
            shown["ok"] = json!(ok);
            shown["status"] = json!(head.status.as_u16());
            shown["verdict"] = json!(verdict_name(&verdict));
            if ok {
                shown["reply"] = json!(text.map(|t| clipped(&redacted(account, t))));
            } else {
                let message = match (&verdict, parsed.as_ref().and_then(error_message)) {
                    (Verdict::Healthy, _) => format!(
                        "the answer is not a generation{}",
                        head.headers
                            .get(http::header::LOCATION)
                            .and_then(|l| l.to_str().ok())
                            .map(|l| format!(" (it sends to {l})"))
                            .unwrap_or_default()
                    ),
                    (_, Some(message)) => message,
                    (_, None) => String::from_utf8_lossy(&answer).into_owned(),
                };
                shown["error"] = json!(clipped(&redacted(account, &message)));
            }
        }
    }
    shown["latency_ms"] = json!(started.elapsed().as_millis() as u64);
    Ok(shown)
}

/// The name the account's vendor is asked for `model` by: its Azure deployment, its Bedrock
/// model id, or its model map's name.
fn upstream_name(account: &Account, model: &str) -> String {
    match account.record.provider {
        Provider::AzureOpenAi => providers::azure::deployment(account, model).to_owned(),
        Provider::Bedrock => providers::bedrock::model_id(account, model).into_owned(),
        _ => account
            .upstream_model(Some(model))
            .unwrap_or(model)
            .to_owned(),
    }
}

/// `text` with the account's credential masked, should the vendor quote it.
fn redacted(account: &Account, text: &str) -> String {
    match account.api_key.to_str() {
        Ok(key) if key.len() >= 8 => text.replace(key, "***"),
        _ => text.to_owned(),
    }
}

/// The endpoint, its vendor path and the body of the test request in the account's protocol.
fn request(account: &Account, model: &str) -> (Endpoint, String, Value) {
    let provider = account.record.provider;
    match provider.protocol() {
        Protocol::Anthropic => {
            let mut body = json!({
                "model": model,
                "max_tokens": 16,
                "messages": [{ "role": "user", "content": PROMPT }],
            });
            if account.oauth_bearer.is_some() && provider == Provider::Anthropic {
                body["system"] = json!(CLAUDE_CODE_SYSTEM);
            }
            (Endpoint::Messages, "/v1/messages".to_owned(), body)
        }
        // The Codex backend serves the Responses API only, and wants instructions and the input
        // as a list of items.
        Protocol::OpenAi if provider == Provider::ChatGpt => (
            Endpoint::Responses {
                path: "/responses".to_owned(),
            },
            "/v1/responses".to_owned(),
            json!({
                "model": model,
                "instructions": "Answer briefly.",
                "input": [{
                    "type": "message",
                    "role": "user",
                    "content": [{ "type": "input_text", "text": PROMPT }],
                }],
                "store": false,
            }),
        ),
        Protocol::OpenAi => (
            Endpoint::ChatCompletions,
            "/v1/chat/completions".to_owned(),
            json!({ "model": model, "messages": [{ "role": "user", "content": PROMPT }] }),
        ),
        Protocol::Gemini => (
            Endpoint::Gemini {
                version: "v1beta".to_owned(),
                model: model.to_owned(),
                method: "generateContent".to_owned(),
            },
            format!("/v1beta/models/{model}:generateContent"),
            json!({ "contents": [{ "role": "user", "parts": [{ "text": PROMPT }] }] }),
        ),
    }
}

/// How the scheduler would take the answer, by name.
fn verdict_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Healthy => "serving",
        Verdict::ClientFault => "request_refused",
        Verdict::Refused => "refused",
        Verdict::Elsewhere => "elsewhere",
        Verdict::RateLimited { .. } => "rate_limited",
        Verdict::Overloaded => "overloaded",
        Verdict::Exhausted => "out_of_credit",
        Verdict::Failing => "failing",
        Verdict::Unauthorized => "unauthorized",
    }
}

/// The answer's first text, whatever the vendor's shape: Anthropic's `content[].text`,
/// Gemini's `parts[].text` (under `response` from Code Assist), a Responses `output`'s, or a
/// chat completion's `message.content`.
fn reply(answer: &Value) -> Option<&str> {
    match answer {
        Value::Object(fields) => {
            if let Some(Value::String(text)) = fields.get("text") {
                return Some(text);
            }
            if let Some(Value::String(text)) = fields.get("content") {
                return Some(text);
            }
            fields.values().find_map(reply)
        }
        Value::Array(items) => items.iter().find_map(reply),
        _ => None,
    }
}

/// The message of a vendor's error JSON (`{"error": {"message": …}}` in each vendor's variant).
fn error_message(answer: &Value) -> Option<String> {
    let error = answer.get("error").unwrap_or(answer);
    match error {
        Value::String(message) => Some(message.clone()),
        _ => error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// At most `MAX_SHOWN` characters.
fn clipped(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_is_found_in_each_vendor_s_answer() {
        for (answer, want) in [
            (
                json!({ "content": [{ "type": "text", "text": "OK" }], "model": "claude" }),
                "OK",
            ),
            (
                json!({ "choices": [{ "message": { "role": "assistant", "content": "OK." } }] }),
                "OK.",
            ),
            (
                json!({ "response": { "candidates": [{ "content": { "parts": [{ "text": "ok" }] } }] } }),
                "ok",
            ),
            (
                json!({ "output": [{ "type": "reasoning", "summary": [] }, { "type": "message", "content": [{ "type": "output_text", "text": "OK" }] }] }),
                "OK",
            ),
        ] {
            assert_eq!(reply(&answer), Some(want), "{answer}");
        }
        assert_eq!(reply(&json!({ "content": [] })), None);
    }

    #[test]
    fn errors_are_read_in_each_vendor_s_shape_and_clipped() {
        let anthropic = json!({ "type": "error", "error": { "type": "authentication_error", "message": "invalid x-api-key" } });
        assert_eq!(error_message(&anthropic).unwrap(), "invalid x-api-key");
        let google = json!({ "error": { "code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT" } });
        assert_eq!(error_message(&google).unwrap(), "API key not valid.");
        assert_eq!(error_message(&json!({ "error": "nope" })).unwrap(), "nope");
        assert_eq!(error_message(&json!([1])), None);
        let long = "é".repeat(MAX_SHOWN + 10);
        assert_eq!(clipped(&long).chars().count(), MAX_SHOWN + 1);
        assert_eq!(clipped("short"), "short");
    }
}
