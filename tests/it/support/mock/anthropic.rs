//! Anthropic Messages: the event sequence and byte format of
//! `tests/fixtures/clients/responses/anthropic_stream.txt`; every event is its own body frame.

use bytes::Bytes;
use http::Response;

use super::ErrorParts;
use super::body::Guard;
use super::{
    Behavior, MockBody, MockUsage, Shape, TEXT_DELTAS, Vendor, concat, error_response, play,
    vendor_json,
};

/// Fixed message id used in every answer (bodies are deterministic).
pub const MESSAGE_ID: &str = "msg_mock_0001";
/// Model ids listed by `GET /v1/models`.
pub const MODELS: [(&str, &str); 3] = [
    ("claude-opus-4-8", "Claude Opus 4.8"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
];
/// How many leading events `StallAfterStart` / `ResetAfterStart` send: message_start, ping,
/// content_block_start and two content_block_delta.
pub const EVENTS_BEFORE_STALL: usize = 5;

pub(super) async fn messages(behavior: Behavior, body: &[u8], guard: Guard) -> Response<MockBody> {
    if behavior.usage().is_none() {
        return error_response(Vendor::Anthropic, &behavior, guard);
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let Some(obj) = parsed.as_ref().and_then(|v| v.as_object()) else {
        let body = anthropic_error(
            "invalid_request_error",
            "The request body is not valid JSON.",
        );
        return vendor_json(Vendor::Anthropic, 400, body, guard);
    };
    let Some(model) = obj.get("model").and_then(|m| m.as_str()) else {
        let body = anthropic_error("invalid_request_error", "model: Field required");
        return vendor_json(Vendor::Anthropic, 400, body, guard);
    };
    let thinks = match thinking(obj) {
        Ok(thinks) => thinks,
        Err(message) => {
            let body = anthropic_error("invalid_request_error", &message);
            return vendor_json(Vendor::Anthropic, 400, body, guard);
        }
    };
    let usage = behavior.usage().unwrap_or_default();
    let shape = if obj.get("stream").and_then(|s| s.as_bool()).unwrap_or(false) {
        Shape::Stream {
            content_type: "text/event-stream",
            events: answer_events(model, usage, thinks),
            before_stall: EVENTS_BEFORE_STALL,
        }
    } else {
        Shape::Sized {
            content_type: "application/json",
            body: answer_json(model, usage, thinks),
        }
    };
    play(&behavior, shape, guard).await
}

/// The text of the thinking block an answer opens with when the request turned thinking on.
pub const THINKING_TEXT: &str = "The user asks; I answer.";

/// Whether the request turns thinking on, checked as Anthropic checks it (`Err`: the message
/// of its 400): a budget of at least 1,024 below `max_tokens`; no `temperature` but 1 and no
/// `top_p` under 0.95; no forced tool; a last assistant turn that called tools must open with
/// its thinking, and the last message must not be the assistant's (a prefill); an
/// `output_config.effort` Claude knows.
pub(super) fn thinking(obj: &serde_json::Map<String, serde_json::Value>) -> Result<bool, String> {
    use serde_json::Value;
    if let Some(effort) = obj.get("output_config").and_then(|c| c.get("effort")) {
        let known = ["low", "medium", "high", "xhigh", "max"];
        if !effort.as_str().is_some_and(|e| known.contains(&e)) {
            return Err(format!("output_config.effort: unknown effort {effort}"));
        }
    }
    let Some(thinking) = obj.get("thinking") else {
        return Ok(false);
    };
    match thinking.get("type").and_then(Value::as_str) {
        Some("disabled") => return Ok(false),
        Some("adaptive") => {}
        Some("enabled") => {
            let budget = thinking.get("budget_tokens").and_then(Value::as_u64);
            let max_tokens = obj.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
            match budget {
                Some(b) if b < 1024 => {
                    return Err("thinking.budget_tokens: must be at least 1024".into());
                }
                Some(b) if b >= max_tokens => {
                    return Err("`max_tokens` must be greater than `thinking.budget_tokens`".into());
                }
                Some(_) => {}
                None => return Err("thinking.budget_tokens: Field required".into()),
            }
        }
        _ => return Err("thinking.type: must be enabled, adaptive or disabled".into()),
    }
    if obj
        .get("temperature")
        .is_some_and(|t| t.as_f64() != Some(1.0))
    {
        return Err(
            "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode."
                .into(),
        );
    }
    if obj
        .get("top_p")
        .is_some_and(|p| p.as_f64().is_none_or(|p| p < 0.95))
    {
        return Err("`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled or in adaptive mode.".into());
    }
    let forced = obj
        .get("tool_choice")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str);
    if matches!(forced, Some("any" | "tool")) {
        return Err("Thinking may not be enabled when tool_choice forces tool use.".into());
    }
    let messages = obj.get("messages").and_then(Value::as_array);
    if messages
        .and_then(|m| m.last())
        .is_some_and(|m| m["role"] == "assistant")
    {
        return Err(
            "This model does not support assistant message prefill when thinking is enabled."
                .into(),
        );
    }
    let last_assistant = obj
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "assistant"))
        .and_then(|m| m["content"].as_array());
    if let Some(blocks) = last_assistant
        && blocks.iter().any(|b| b["type"] == "tool_use")
    {
        let first = blocks
            .first()
            .and_then(|b| b["type"].as_str())
            .unwrap_or("");
        if first != "thinking" && first != "redacted_thinking" {
            return Err(format!(
                "Expected `thinking` or `redacted_thinking`, but found `{first}`. When `thinking` \
                 is enabled, a final `assistant` message must start with a thinking block \
                 (preceeding the lastmost set of `tool_use` and `tool_result` blocks)."
            ));
        }
    }
    Ok(true)
}

/// A fault behaviour in Anthropic's shape.
pub(super) fn render_fault(behavior: &Behavior) -> ErrorParts {
    match behavior {
        Behavior::RateLimited { retry_after_secs } => {
            let now = jiff::Timestamp::now().as_second();
            let secs = i64::try_from(*retry_after_secs).unwrap_or(i64::MAX / 2);
            let reset = jiff::Timestamp::from_second(now.saturating_add(secs))
                .expect("reset timestamp in range");
            (
                429,
                anthropic_error(
                    "rate_limit_error",
                    "This request would exceed your organization's rate limit of 50 requests per minute.",
                ),
                vec![
                    ("retry-after".into(), retry_after_secs.to_string()),
                    ("anthropic-ratelimit-requests-limit".into(), "50".into()),
                    ("anthropic-ratelimit-requests-remaining".into(), "0".into()),
                    (
                        "anthropic-ratelimit-requests-reset".into(),
                        reset.to_string(),
                    ),
                ],
            )
        }
        Behavior::VendorError {
            status,
            kind,
            message,
        } => (*status, anthropic_error(kind, message), Vec::new()),
        _ => (
            529,
            anthropic_error("overloaded_error", "Overloaded"),
            Vec::new(),
        ),
    }
}

/// 401 for a missing or wrong key.
pub(super) fn auth_error(missing: bool) -> (u16, String) {
    let message = if missing {
        "x-api-key header is required"
    } else {
        "invalid x-api-key"
    };
    (401, anthropic_error("authentication_error", message))
}

pub(super) fn models_json() -> String {
    let data: Vec<serde_json::Value> = MODELS
        .iter()
        .map(|(id, name)| {
            serde_json::json!({
                "type": "model",
                "id": id,
                "display_name": name,
                "created_at": "2026-01-15T00:00:00Z",
            })
        })
        .collect();
    serde_json::json!({
        "data": data,
        "has_more": false,
        "first_id": MODELS[0].0,
        "last_id": MODELS[MODELS.len() - 1].0,
    })
    .to_string()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

/// `{"type": "error", "error": {"type": kind, "message": message}}`
pub fn anthropic_error(kind: &str, message: &str) -> String {
    format!(
        "{{\"type\": \"error\", \"error\": {{\"type\": {}, \"message\": {}}}}}",
        json_str(kind),
        json_str(message)
    )
}

fn usage_json(usage: MockUsage, output: u64) -> String {
    format!(
        "{{\"input_tokens\": {}, \"output_tokens\": {}, \"cache_creation_input_tokens\": {}, \
         \"cache_read_input_tokens\": {}, \"cache_creation\": {{\"ephemeral_5m_input_tokens\": {}, \
         \"ephemeral_1h_input_tokens\": {}}}}}",
        usage.input,
        output,
        usage.cache_creation(),
        usage.cache_read,
        usage.cache_creation_5m,
        usage.cache_creation_1h
    )
}

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The SSE events of a streamed answer, one `Bytes` per event (each is sent as its own frame):
/// message_start, ping, content_block_start, 3 × content_block_delta, content_block_stop,
/// message_delta (usage.output_tokens = `usage.output`), message_stop.
pub fn stream_events(model: &str, usage: MockUsage) -> Vec<Bytes> {
    answer_events(model, usage, false)
}

/// [`stream_events`], opening with a thinking block (its text, then its signature) when
/// `thinks`.
pub(super) fn answer_events(model: &str, usage: MockUsage, thinks: bool) -> Vec<Bytes> {
    let mut events = Vec::with_capacity(10 + TEXT_DELTAS.len());
    events.push(event(
        "message_start",
        &format!(
            "{{\"type\": \"message_start\", \"message\": {{\"id\": \"{MESSAGE_ID}\", \"type\": \"message\", \
             \"role\": \"assistant\", \"model\": {}, \"content\": [], \"stop_reason\": null, \
             \"stop_sequence\": null, \"usage\": {}}}}}",
            json_str(model),
            usage_json(usage, 1)
        ),
    ));
    events.push(event("ping", "{\"type\": \"ping\"}"));
    if thinks {
        events.push(event(
            "content_block_start",
            "{\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"thinking\", \"thinking\": \"\", \"signature\": \"\"}}",
        ));
        events.push(event(
            "content_block_delta",
            &format!(
                "{{\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {{\"type\": \"thinking_delta\", \"thinking\": {}}}}}",
                json_str(THINKING_TEXT)
            ),
        ));
        events.push(event(
            "content_block_delta",
            "{\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"signature_delta\", \"signature\": \"c2lnbmVk\"}}",
        ));
        events.push(event(
            "content_block_stop",
            "{\"type\": \"content_block_stop\", \"index\": 0}",
        ));
    }
    let index = u8::from(thinks);
    events.push(event(
        "content_block_start",
        &format!("{{\"type\": \"content_block_start\", \"index\": {index}, \"content_block\": {{\"type\": \"text\", \"text\": \"\"}}}}"),
    ));
    for text in TEXT_DELTAS {
        events.push(event(
            "content_block_delta",
            &format!(
                "{{\"type\": \"content_block_delta\", \"index\": {index}, \"delta\": {{\"type\": \"text_delta\", \"text\": {}}}}}",
                json_str(text)
            ),
        ));
    }
    events.push(event(
        "content_block_stop",
        &format!("{{\"type\": \"content_block_stop\", \"index\": {index}}}"),
    ));
    events.push(event(
        "message_delta",
        &format!(
            "{{\"type\": \"message_delta\", \"delta\": {{\"stop_reason\": \"end_turn\", \"stop_sequence\": null}}, \
             \"usage\": {{\"output_tokens\": {}}}}}",
            usage.output
        ),
    ));
    events.push(event("message_stop", "{\"type\": \"message_stop\"}"));
    events
}

/// The full body of a streamed answer.
pub fn expected_stream_bytes(model: &str, usage: MockUsage) -> Bytes {
    concat(&stream_events(model, usage))
}

/// The full body of a JSON (non-streamed) answer.
pub fn expected_json_bytes(model: &str, usage: MockUsage) -> Bytes {
    answer_json(model, usage, false)
}

/// [`expected_json_bytes`], opening with a thinking block when `thinks`.
pub(super) fn answer_json(model: &str, usage: MockUsage, thinks: bool) -> Bytes {
    let thinking = if thinks {
        format!(
            "{{\"type\": \"thinking\", \"thinking\": {}, \"signature\": \"c2lnbmVk\"}}, ",
            json_str(THINKING_TEXT)
        )
    } else {
        String::new()
    };
    Bytes::from(format!(
        "{{\"id\": \"{MESSAGE_ID}\", \"type\": \"message\", \"role\": \"assistant\", \"model\": {}, \
         \"content\": [{thinking}{{\"type\": \"text\", \"text\": {}}}], \"stop_reason\": \"end_turn\", \
         \"stop_sequence\": null, \"usage\": {}}}",
        json_str(model),
        json_str(&TEXT_DELTAS.concat()),
        usage_json(usage, usage.output)
    ))
}
