//! A chat completions request as an Anthropic Messages request.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// What the relay needs of a translated request.
#[derive(Debug, Clone)]
pub struct MessagesRequest {
    /// The model as the client named it (Anthropic's own name).
    pub model: String,
    pub stream: bool,
    /// The client asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The Messages request body.
    pub body: Bytes,
}

/// Maps a chat completions body onto the Messages API: system and developer messages become
/// `system`, tool calls `tool_use` blocks, tool messages `tool_result` blocks, images image
/// blocks; consecutive messages of one role are merged, as Anthropic wants roles to alternate.
/// `default_max_tokens` fills in the `max_tokens` that Anthropic requires.
pub fn request(chat: &[u8], default_max_tokens: u64) -> Result<MessagesRequest, ApiError> {
    let value: Value = serde_json::from_slice(chat)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(chat) = value else {
        return Err(ApiError::invalid("request body must be a JSON object"));
    };
    let model = chat
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model: field required"))?
        .to_owned();
    let input = chat
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("messages: field required (an array)"))?;
    if chat.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(ApiError::invalid(
            "n: only 1 choice is supported for Claude models",
        ));
    }
    let stream = chat.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = stream
        && chat
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);

    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in input.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(texts(content, i)?);
                continue;
            }
            "user" => ("user", blocks(content, i)?),
            "assistant" => ("assistant", assistant_blocks(message, content, i)?),
            "tool" | "function" => ("user", vec![tool_result(message, content, i)?]),
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{i}].role: unsupported role {other:?}"
                )));
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .filter(|(_, blocks)| !blocks.is_empty())
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();

    let max_tokens = chat
        .get("max_completion_tokens")
        .or_else(|| chat.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_max_tokens);
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    if let Some(t) = chat.get("temperature").and_then(Value::as_f64) {
        // OpenAI allows 0..=2, Anthropic 0..=1.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = chat.get("top_p").and_then(Value::as_f64) {
        out.insert("top_p".into(), json!(p));
    }
    match chat.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    let tools = tools(&chat)?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice(&chat, has_tools)? {
        out.insert("tool_choice".into(), choice);
    }
    let body = serde_json::to_vec(&Value::Object(out))
        .map_err(|e| ApiError::internal(format!("encoding the translated request: {e}")))?;
    Ok(MessagesRequest {
        model,
        stream,
        include_usage,
        body: Bytes::from(body),
    })
}

/// The texts of a system message's content (a string or text parts).
fn texts(content: &Value, i: usize) -> Result<Vec<String>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.get("text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::invalid(format!("messages[{i}]: system content must be text"))
                    })
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(ApiError::invalid(format!(
            "messages[{i}].content: expected a string or an array of parts"
        ))),
    }
}

/// A user or assistant message's content as Anthropic blocks; empty texts are dropped (Anthropic
/// refuses them).
fn blocks(content: &Value, i: usize) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "type": "text", "text": s })]),
        Value::Null => Ok(Vec::new()),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = part.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(json!({ "type": "text", "text": text }));
                        }
                    }
                    Some("image_url") => out.push(image(part, i)?),
                    other => {
                        return Err(ApiError::invalid(format!(
                            "messages[{i}].content: part type {} is not supported for Claude models",
                            other.unwrap_or("(none)")
                        )));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::invalid(format!(
            "messages[{i}].content: expected a string or an array of parts"
        ))),
    }
}

/// `image_url` (a `data:` URL or an http(s) URL) as an image block.
fn image(part: &Value, i: usize) -> Result<Value, ApiError> {
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("messages[{i}]: image_url.url required")))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| ApiError::invalid(format!("messages[{i}]: malformed data: URL")))?;
        let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
            ApiError::invalid(format!(
                "messages[{i}]: only base64 data: URLs are supported"
            ))
        })?;
        return Ok(json!({
            "type": "image",
            "source": { "type": "base64", "media_type": media_type, "data": data },
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(ApiError::invalid(format!(
        "messages[{i}]: image_url must be a data: or http(s) URL"
    )))
}

/// An assistant message: its text, then its tool calls as `tool_use` blocks.
fn assistant_blocks(message: &Value, content: &Value, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut out = blocks(content, i)?;
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (j, call) in calls.into_iter().flatten().enumerate() {
        let function = call.get("function").unwrap_or(&Value::Null);
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "messages[{i}].tool_calls[{j}].function.name required"
                ))
            })?;
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| format!("call_{i}_{j}"), str::to_owned);
        out.push(json!({
            "type": "tool_use",
            "id": id,
            "name": name,
            "input": arguments(function, i, j)?,
        }));
    }
    // The legacy single `function_call`.
    if let Some(function) = message.get("function_call") {
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        out.push(json!({
            "type": "tool_use",
            "id": format!("call_{name}"),
            "name": name,
            "input": arguments(function, i, 0)?,
        }));
    }
    Ok(out)
}

/// A tool call's `arguments` (a JSON string) as the object Anthropic takes.
fn arguments(function: &Value, i: usize, j: usize) -> Result<Value, ApiError> {
    let raw = function
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    if raw.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str::<Value>(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "messages[{i}].tool_calls[{j}].function.arguments is not a JSON object"
            ))
        })
}

/// A `tool` message (or a legacy `function` one) as a `tool_result` block.
fn tool_result(message: &Value, content: &Value, i: usize) -> Result<Value, ApiError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            message
                .get("name")
                .and_then(Value::as_str)
                .map(|n| format!("call_{n}"))
        })
        .ok_or_else(|| ApiError::invalid(format!("messages[{i}].tool_call_id required")))?;
    let content = match content {
        Value::String(s) => json!(s),
        Value::Array(_) => Value::Array(blocks(content, i)?),
        Value::Null => json!(""),
        other => json!(other.to_string()),
    };
    Ok(json!({ "type": "tool_result", "tool_use_id": id, "content": content }))
}

/// `tools` (functions; also the legacy `functions`) as Anthropic tools.
fn tools(chat: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    let listed = chat.get("tools").and_then(Value::as_array);
    for (i, tool) in listed.into_iter().flatten().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::invalid(format!(
                "tools[{i}]: only function tools are supported for Claude models"
            )));
        }
        out.push(function_tool(
            tool.get("function").unwrap_or(&Value::Null),
            i,
        )?);
    }
    let legacy = chat.get("functions").and_then(Value::as_array);
    for (i, function) in legacy.into_iter().flatten().enumerate() {
        out.push(function_tool(function, i)?);
    }
    Ok(out)
}

fn function_tool(function: &Value, i: usize) -> Result<Value, ApiError> {
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("tools[{i}].function.name required")))?;
    let mut tool = json!({
        "name": name,
        "input_schema": function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
    });
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        tool["description"] = json!(description);
    }
    Ok(tool)
}

/// `tool_choice` and `parallel_tool_calls` as Anthropic's `tool_choice`.
fn tool_choice(chat: &Map<String, Value>, has_tools: bool) -> Result<Option<Value>, ApiError> {
    if !has_tools {
        return Ok(None);
    }
    let mut choice = match chat.get("tool_choice") {
        None | Some(Value::Null) => json!({ "type": "auto" }),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({ "type": "auto" }),
            "none" => json!({ "type": "none" }),
            "required" => json!({ "type": "any" }),
            other => {
                return Err(ApiError::invalid(format!(
                    "tool_choice: unsupported value {other:?}"
                )));
            }
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("tool_choice.function.name required"))?;
            json!({ "type": "tool", "name": name })
        }
    };
    if chat.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false)
        && choice["type"] != "none"
    {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    Ok(Some(choice))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn translate(chat: Value) -> Value {
        let t = request(&serde_json::to_vec(&chat).unwrap(), 1024).unwrap();
        serde_json::from_slice(&t.body).unwrap()
    }

    #[test]
    fn maps_system_roles_tools_and_parameters() {
        let out = translate(json!({
            "model": "claude-sonnet-4-5",
            "max_completion_tokens": 300,
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "user": "u1",
            "messages": [
                { "role": "system", "content": "be brief" },
                { "role": "developer", "content": [{ "type": "text", "text": "use tools" }] },
                { "role": "user", "content": "weather?" },
                { "role": "user", "content": [
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } },
                    { "type": "image_url", "image_url": { "url": "https://x/y.jpg" } }
                ] },
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_1", "type": "function", "function": { "name": "get", "arguments": "{\"city\":\"Oslo\"}" } },
                    { "id": "call_2", "type": "function", "function": { "name": "get", "arguments": "{\"city\":\"Rome\"}" } }
                ] },
                { "role": "tool", "tool_call_id": "call_1", "content": "cold" },
                { "role": "tool", "tool_call_id": "call_2", "content": "warm" },
                { "role": "assistant", "content": "" }
            ],
            "tools": [{ "type": "function", "function": { "name": "get", "description": "d", "parameters": { "type": "object" } } }],
            "tool_choice": "required",
            "parallel_tool_calls": false
        }));
        assert_eq!(out["system"], "be brief\n\nuse tools");
        assert_eq!(out["max_tokens"], 300);
        assert_eq!(out["temperature"], 1.0);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"]["user_id"], "u1");
        let messages = out["messages"].as_array().unwrap();
        // Two user turns merged; two tool results merged into one user turn; the empty
        // assistant turn dropped.
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0]["content"].as_array().unwrap().len(), 3);
        assert_eq!(
            messages[0]["content"][1]["source"],
            json!({ "type": "base64", "media_type": "image/png", "data": "AAAA" })
        );
        assert_eq!(
            messages[0]["content"][2]["source"],
            json!({ "type": "url", "url": "https://x/y.jpg" })
        );
        assert_eq!(
            messages[1]["content"][0],
            json!({ "type": "tool_use", "id": "call_1", "name": "get", "input": { "city": "Oslo" } })
        );
        assert_eq!(
            messages[2]["content"][1],
            json!({ "type": "tool_result", "tool_use_id": "call_2", "content": "warm" })
        );
        assert_eq!(
            out["tools"][0],
            json!({ "name": "get", "description": "d", "input_schema": { "type": "object" } })
        );
        assert_eq!(
            out["tool_choice"],
            json!({ "type": "any", "disable_parallel_tool_use": true })
        );
        assert!(out.get("stream").is_none());
    }

    #[test]
    fn stream_flags_and_defaults() {
        let t = request(
            br#"{"model":"claude-x","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
            777,
        )
        .unwrap();
        assert!(t.stream && t.include_usage);
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(
            (v["max_tokens"].as_u64(), v["stream"].as_bool()),
            (Some(777), Some(true))
        );
        let choice = |c: Value| {
            translate(json!({ "model": "m", "messages": [], "tools": [{ "type": "function", "function": { "name": "f" } }], "tool_choice": c }))["tool_choice"].clone()
        };
        assert_eq!(choice(json!("none")), json!({ "type": "none" }));
        assert_eq!(
            choice(json!({ "type": "function", "function": { "name": "f" } })),
            json!({ "type": "tool", "name": "f" })
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let err = |body: &[u8]| request(body, 1).unwrap_err().message;
        assert!(err(b"{").contains("not valid JSON"));
        assert!(err(br#"{"messages":[]}"#).contains("model"));
        assert!(err(br#"{"model":"m"}"#).contains("messages"));
        assert!(err(br#"{"model":"m","n":2,"messages":[]}"#).contains("n:"));
        assert!(err(br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{oops"}}]}]}"#).contains("arguments"));
        assert!(
            err(
                br#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}"#
            )
            .contains("input_audio")
        );
        assert!(
            err(br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#).contains("robot")
        );
    }
}
