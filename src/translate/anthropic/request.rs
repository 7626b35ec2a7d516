//! Chat Completions request → Anthropic Messages request.
//!
//! The chat body is read as a `serde_json::Value` rather than typed structs: clients send many
//! optional and loosely typed fields, unknown ones must be ignored, and errors must name the
//! offending field (`messages[2].tool_calls[0]`), which is easier walking the value by hand.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::model::{Claude, NON_STREAMING_MAX_TOKENS, Thinking};
use crate::error::ApiError;
use crate::translate::chat::history_arguments;

/// What the relay needs from a translated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesRequest {
    /// The model the client asked for, as it asked (also the `model` of the body).
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: the client wants a final usage chunk.
    pub include_usage: bool,
    /// The client declared legacy `functions` (not `tools`): it reads a call from
    /// `function_call`, not `tool_calls`.
    pub functions: bool,
    /// The Anthropic Messages JSON.
    pub body: Bytes,
}

type Object = Map<String, Value>;

/// Translates an OpenAI Chat Completions body. When the client set neither
/// `max_completion_tokens` nor `max_tokens`, Anthropic's required `max_tokens` is the model's
/// longest answer (OpenAI sets no limit), at most [`NON_STREAMING_MAX_TOKENS`] unless streamed;
/// `default_max_tokens` for a model the relay does not know.
pub fn request(chat_body: &[u8], default_max_tokens: u32) -> Result<MessagesRequest, ApiError> {
    let chat: Value = serde_json::from_slice(chat_body)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")))?;
    let Some(chat) = chat.as_object() else {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    };
    let model = match chat.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return Err(ApiError::invalid(
                "`model` is required and must be a string",
            ));
        }
    };
    let Some(Value::Array(messages)) = chat.get("messages") else {
        return Err(ApiError::invalid(
            "`messages` is required and must be an array",
        ));
    };
    if let Some(n) = present(chat, "n") {
        match n.as_u64() {
            Some(0 | 1) => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    "`n` greater than 1 is not supported for Claude models; send separate requests",
                ));
            }
            None => return Err(ApiError::invalid("`n` must be a positive integer")),
        }
    }

    let stream = match present(chat, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("`stream` must be a boolean")),
    };
    let claude = Claude::of(&model);
    let mut out = Object::new();
    out.insert("model".into(), json!(model));
    let (system, messages) = convert_messages(messages)?;
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    let longest = match claude {
        Some(c) if stream => c.max_output(),
        Some(c) => c.max_output().min(NON_STREAMING_MAX_TOKENS),
        None => default_max_tokens,
    };
    out.insert("max_tokens".into(), json!(max_tokens(chat, longest)?));
    sampling(chat, claude, &mut out)?;
    if let Some(stops) = stop_sequences(chat)? {
        out.insert("stop_sequences".into(), stops);
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    output_format(chat, claude, &mut out)?;
    let include_usage = stream
        && chat
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    if let Some(user) = present(chat, "user") {
        let user = user
            .as_str()
            .ok_or_else(|| ApiError::invalid("`user` must be a string"))?;
        // Anthropic wants an opaque id of at most 256 characters, and refuses one that looks
        // like an email address; OpenAI takes any string. Its digest stands for the same user.
        let digest = Sha256::digest(user.as_bytes());
        out.insert("metadata".into(), json!({ "user_id": hex::encode(digest) }));
    }
    tools(chat, &mut out)?;
    thinking(chat, claude, &mut out)?;
    let functions = present(chat, "tools").is_none() && present(chat, "functions").is_some();

    let body = serde_json::to_vec(&Value::Object(out))
        .map_err(|e| ApiError::internal(format!("encoding the Messages request: {e}")))?;
    Ok(MessagesRequest {
        model,
        stream,
        include_usage,
        functions,
        body: Bytes::from(body),
    })
}

/// A field that is present and not `null` (clients send `null` for "not set").
fn present<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn max_tokens(chat: &Object, default: u32) -> Result<u64, ApiError> {
    let (name, value) = match present(chat, "max_completion_tokens") {
        Some(v) => ("max_completion_tokens", v),
        None => match present(chat, "max_tokens") {
            Some(v) => ("max_tokens", v),
            None => return Ok(u64::from(default)),
        },
    };
    match value.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "`{name}` must be a positive integer"
        ))),
    }
}

/// `temperature` and `top_p`, for the models that take them.
fn sampling(chat: &Object, claude: Option<Claude>, out: &mut Object) -> Result<(), ApiError> {
    let temperature = present(chat, "temperature");
    let top_p = present(chat, "top_p");
    if temperature.is_some_and(|t| !t.is_number()) {
        return Err(ApiError::invalid("`temperature` must be a number"));
    }
    if top_p.is_some_and(|p| !p.is_number()) {
        return Err(ApiError::invalid("`top_p` must be a number"));
    }
    // Claude Opus 4.7 and later refuse both, whatever their value: they steer by prompt.
    if claude.is_some_and(|c| !c.takes_sampling()) {
        return Ok(());
    }
    if let Some(t) = temperature.and_then(Value::as_f64) {
        // OpenAI accepts 0..=2, Anthropic 0..=1.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    // Claude 4.5 models answer 400 when both are set, and many OpenAI clients send both by
    // default (often `top_p: 1`): the temperature is kept, as the usual knob.
    if let (Some(p), None) = (top_p, temperature) {
        out.insert("top_p".into(), p.clone());
    }
    Ok(())
}

/// `stop` as `stop_sequences`. Anthropic refuses a sequence of whitespace only (OpenAI takes
/// `"\n"`, which single-line completions send): such ones are left out.
fn stop_sequences(chat: &Object) -> Result<Option<Value>, ApiError> {
    let bad = || ApiError::invalid("`stop` must be a string or an array of strings");
    let items = match present(chat, "stop") {
        None => return Ok(None),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    let kept: Vec<Value> = items
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| json!(s))
        .collect();
    Ok((!kept.is_empty()).then_some(Value::Array(kept)))
}

/// `response_format`: a JSON schema becomes `output_config.format` for the models that take
/// it (Claude 4.5 on) when Claude takes the schema as it is ([`claude_takes_schema`]);
/// `json_object`, and any other schema, are left out, as before (docs/surfaces.md).
fn output_format(chat: &Object, claude: Option<Claude>, out: &mut Object) -> Result<(), ApiError> {
    let Some(format) = present(chat, "response_format") else {
        return Ok(());
    };
    if format.get("type").and_then(Value::as_str) != Some("json_schema")
        || !claude.is_some_and(Claude::takes_output_format)
    {
        return Ok(());
    }
    let Some(schema) = format.get("json_schema").and_then(|s| s.get("schema")) else {
        return Err(ApiError::invalid(
            "`response_format.json_schema.schema` is required for a `json_schema` format",
        ));
    };
    if !schema.is_object() {
        return Err(ApiError::invalid(
            "`response_format.json_schema.schema` must be an object",
        ));
    }
    if !claude_takes_schema(schema) || recursive(schema) {
        return Ok(());
    }
    out.insert(
        "output_config".into(),
        json!({ "format": { "type": "json_schema", "schema": schema } }),
    );
    Ok(())
}

/// The smallest thinking budget Claude takes.
const MIN_THINKING_BUDGET: u64 = 1024;

/// `reasoning_effort` as Claude's thinking, or Anthropic's own `thinking` object as sent (the
/// OpenAI SDK sends it in `extra_body`, as Anthropic's OpenAI-compatible endpoint documents).
/// An effort asks Claude 4.6 and later for adaptive thinking at that `output_config.effort`
/// (summarized on Opus 4.7 and later, which otherwise send their thinking empty), earlier
/// models from 3.7 on for a token budget (below `max_tokens`, at most half of it when the client
/// set none, so that the answer has room; none under 1,024), older and unknown models for
/// nothing. Thinking is left out where Claude would refuse the request for it: when
/// `tool_choice` forces a tool, when the last message is the assistant's (a prefill), and in a
/// tool loop (the last assistant turn called tools), where Claude wants that turn's signed
/// thinking back, which chat history cannot carry; the effort stays. With thinking on,
/// `temperature` and `top_p` are left out: thinking takes neither.
fn thinking(chat: &Object, claude: Option<Claude>, out: &mut Object) -> Result<(), ApiError> {
    let effort = match present(chat, "reasoning_effort") {
        None => None,
        Some(Value::String(effort)) => effort_level(effort)?,
        Some(_) => return Err(ApiError::invalid("`reasoning_effort` must be a string")),
    };
    let mode = claude.and_then(Claude::thinking);
    // The effort as `output_config.effort`, for the models that think adaptively.
    let adaptive_effort = effort
        .filter(|_| mode == Some(Thinking::Adaptive))
        .map(|e| match e {
            "minimal" => "low",
            "xhigh" if !claude.is_some_and(Claude::takes_xhigh_effort) => "high",
            other => other,
        });
    let thinking = match present(chat, "thinking") {
        Some(sent @ Value::Object(_)) => Some(sent.clone()),
        Some(_) => return Err(ApiError::invalid("`thinking` must be an object")),
        None => match (effort, mode) {
            (Some(_), Some(Thinking::Adaptive)) => {
                let mut adaptive = json!({ "type": "adaptive" });
                if claude.is_some_and(Claude::omits_thinking_by_default) {
                    adaptive["display"] = json!("summarized");
                }
                Some(adaptive)
            }
            (Some(effort), Some(Thinking::Budget)) => budget(chat, effort, out)
                .map(|budget| json!({ "type": "enabled", "budget_tokens": budget })),
            _ => None,
        },
    };
    if let Some(effort) = adaptive_effort
        && let Value::Object(config) = out.entry("output_config").or_insert_with(|| json!({}))
    {
        config.insert("effort".into(), json!(effort));
    }
    let Some(thinking) = thinking else {
        return Ok(());
    };
    if thinking.get("type").and_then(Value::as_str) != Some("disabled") {
        if forces_a_tool(out) || ends_with_the_assistant(out) || in_a_tool_loop(out) {
            return Ok(());
        }
        out.remove("temperature");
        out.remove("top_p");
    }
    out.insert("thinking".into(), thinking);
    Ok(())
}

/// The thinking budget for an effort: below `max_tokens` (at most half of it when the client
/// set none: the default is the model's longest answer, and the answer needs room too);
/// `None` when that leaves less than Claude's least budget.
fn budget(chat: &Object, effort: &str, out: &Object) -> Option<u64> {
    let wanted: u64 = match effort {
        "minimal" => 1024,
        "low" => 4096,
        "medium" => 8192,
        "high" => 24_576,
        _ => 32_000,
    };
    let max_tokens = out.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
    let client_set = ["max_completion_tokens", "max_tokens"]
        .iter()
        .any(|f| present(chat, f).is_some());
    let room = if client_set {
        max_tokens.saturating_sub(1)
    } else {
        max_tokens / 2
    };
    let budget = wanted.min(room);
    (budget >= MIN_THINKING_BUDGET).then_some(budget)
}

/// A `reasoning_effort`, checked: `None` for `none`, else the effort as OpenAI names it.
fn effort_level(effort: &str) -> Result<Option<&'static str>, ApiError> {
    Ok(Some(match effort {
        "none" => return Ok(None),
        "minimal" => "minimal",
        "low" => "low",
        "medium" => "medium",
        "high" => "high",
        "xhigh" => "xhigh",
        other => {
            return Err(ApiError::invalid(format!(
                "`reasoning_effort` {other:?} is not one of none, minimal, low, medium, high, xhigh"
            )));
        }
    }))
}

/// Whether the translated `tool_choice` makes Claude call a tool (`any`, or a named one).
fn forces_a_tool(out: &Object) -> bool {
    let kind = out
        .get("tool_choice")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str);
    matches!(kind, Some("any" | "tool"))
}

/// Whether the translated messages end with the assistant's (a prefill of its answer).
fn ends_with_the_assistant(out: &Object) -> bool {
    let last = match out.get("messages") {
        Some(Value::Array(messages)) => messages.last(),
        _ => None,
    };
    last.and_then(|m| m.get("role")).and_then(Value::as_str) == Some("assistant")
}

/// Whether the last assistant turn of the translated messages called a tool.
fn in_a_tool_loop(out: &Object) -> bool {
    let Some(Value::Array(messages)) = out.get("messages") else {
        return false;
    };
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

/// The chat messages as Anthropic's `system` blocks and alternating `messages`.
fn convert_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut system = Vec::new();
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    // Legacy `function_call`s carry no id; each gets one, and a later `function` message
    // answers the most recent call of its name.
    let mut legacy_calls: Vec<(String, String)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Some(message) = message.as_object() else {
            return Err(ApiError::invalid(format!("{at} must be an object")));
        };
        let content = present(message, "content");
        match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                for text in texts(content, &at)? {
                    system.push(json!({ "type": "text", "text": text }));
                }
            }
            Some("user") => turns.push((Role::User, user_content(content, &at)?)),
            Some("assistant") => {
                let blocks = assistant_content(message, &at, &mut legacy_calls)?;
                turns.push((Role::Assistant, blocks));
            }
            Some("tool") => {
                let Some(id) = message.get("tool_call_id").and_then(Value::as_str) else {
                    return Err(ApiError::invalid(format!(
                        "{at}: a tool message needs a string `tool_call_id`"
                    )));
                };
                turns.push((Role::User, vec![tool_result(id, content, &at)?]));
            }
            Some("function") => {
                let name = message.get("name").and_then(Value::as_str).unwrap_or("");
                let Some((_, id)) = legacy_calls.iter().rev().find(|(n, _)| n == name) else {
                    return Err(ApiError::invalid(format!(
                        "{at}: no earlier assistant `function_call` named `{name}`"
                    )));
                };
                let id = id.clone();
                turns.push((Role::User, vec![tool_result(&id, content, &at)?]));
            }
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "{at}: role `{other}` is not supported"
                )));
            }
            None => return Err(ApiError::invalid(format!("{at}: `role` is required"))),
        }
    }

    // Anthropic requires alternating roles and non-empty content.
    let mut merged: Vec<(Role, Vec<Value>)> = Vec::new();
    for (role, blocks) in turns {
        if blocks.is_empty() {
            continue;
        }
        match merged.last_mut() {
            Some((last, last_blocks)) if *last == role => last_blocks.extend(blocks),
            _ => merged.push((role, blocks)),
        }
    }
    if merged.is_empty() {
        return Err(ApiError::invalid(
            "`messages` must contain at least one user or assistant message with content",
        ));
    }
    let messages = merged
        .into_iter()
        .map(|(role, mut blocks)| {
            let role = match role {
                Role::User => {
                    // Tool results must open the user message that carries them.
                    blocks.sort_by_key(|b| b["type"] != "tool_result");
                    "user"
                }
                Role::Assistant => "assistant",
            };
            json!({ "role": role, "content": blocks })
        })
        .collect();
    Ok((system, messages))
}

/// The texts of a string or text-parts content (system, developer, tool); empty ones dropped,
/// as Anthropic rejects empty text blocks.
fn texts(content: Option<&Value>, at: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    match content {
        None => {}
        Some(Value::String(s)) => out.push(s.clone()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part_type(part) {
                    Some("text") => out.push(part_text(part, &format!("{at}.content[{j}]"))?),
                    other => {
                        return Err(ApiError::invalid(format!(
                            "{at}.content[{j}]: only text parts are allowed here, not `{}`",
                            other.unwrap_or("?")
                        )));
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{at}.content must be a string or an array of parts"
            )));
        }
    }
    out.retain(|t| !t.is_empty());
    Ok(out)
}

fn part_type(part: &Value) -> Option<&str> {
    part.get("type").and_then(Value::as_str)
}

fn part_text(part: &Value, at: &str) -> Result<String, ApiError> {
    match part.get("text") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError::invalid(format!(
            "{at}: a text part needs a string `text`"
        ))),
    }
}

fn text_block(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

fn user_content(content: Option<&Value>, at: &str) -> Result<Vec<Value>, ApiError> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{at}.content must be a string or an array of parts"
            )));
        }
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match part_type(part) {
            Some("text") => {
                let text = part_text(part, &at)?;
                if !text.is_empty() {
                    blocks.push(text_block(&text));
                }
            }
            Some("image_url") => {
                // `image_url` is `{"url": ..}`, or a bare string in some clients.
                let url = match part.get("image_url") {
                    Some(Value::String(u)) => Some(u.as_str()),
                    Some(v) => v.get("url").and_then(Value::as_str),
                    None => None,
                };
                let Some(url) = url else {
                    return Err(ApiError::invalid(format!(
                        "{at}: an image_url part needs `image_url.url`"
                    )));
                };
                blocks.push(json!({ "type": "image", "source": image_source(url, &at)? }));
            }
            Some("file") => {
                let data = part
                    .get("file")
                    .and_then(|f| f.get("file_data"))
                    .and_then(Value::as_str);
                let Some(data) = data else {
                    return Err(ApiError::invalid(format!(
                        "{at}: only inline `file.file_data` is supported for Claude models, not file ids"
                    )));
                };
                let Some((media_type, data)) = data_url(data) else {
                    return Err(ApiError::invalid(format!(
                        "{at}: `file_data` must be a base64 data URL"
                    )));
                };
                blocks.push(json!({
                    "type": "document",
                    "source": { "type": "base64", "media_type": media_type, "data": data },
                }));
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "{at}: content part type `{}` is not supported for Claude models",
                    other.unwrap_or("?")
                )));
            }
        }
    }
    Ok(blocks)
}

/// `data:<mime>[;params];base64,<data>` → `(mime, data)`.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    let mime = meta.split(';').next().unwrap_or(meta);
    (!mime.is_empty()).then_some((mime, data))
}

/// Whether Claude's structured outputs take `schema` as it is: made of the keywords a strict
/// OpenAI schema uses (types, properties, required, items, enum, const, anyOf, references,
/// descriptions), every object closed (`additionalProperties: false`). Claude refuses the
/// others (`minimum`, `maxLength`, `pattern`, an open object …) with a 400, where a request
/// without the format is answered in prose; OpenAI takes them.
fn claude_takes_schema(schema: &Value) -> bool {
    let Some(obj) = schema.as_object() else {
        return schema.is_boolean();
    };
    let nested = |v: &Value| -> bool {
        match v {
            Value::Object(map) => map.values().all(claude_takes_schema),
            _ => false,
        }
    };
    let object =
        obj.get("type").and_then(Value::as_str) == Some("object") || obj.contains_key("properties");
    if object && obj.get("additionalProperties") != Some(&Value::Bool(false)) {
        return false;
    }
    obj.iter().all(|(key, value)| match key.as_str() {
        "type" | "required" | "enum" | "const" | "description" | "title" | "$ref" => true,
        "additionalProperties" => value == &Value::Bool(false),
        "properties" | "$defs" | "definitions" => nested(value),
        "items" => claude_takes_schema(value),
        "anyOf" => value
            .as_array()
            .is_some_and(|all| all.iter().all(claude_takes_schema)),
        _ => false,
    })
}

/// Whether a schema refers to itself (`"$ref": "#"`, or definitions that lead back to one
/// another), or to anything but its own definitions: Claude's structured outputs take neither,
/// where OpenAI takes recursive schemas.
fn recursive(schema: &Value) -> bool {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        // Definitions are followed through their references, not walked here.
                        ("$defs" | "definitions", _) => {}
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(all) => all.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let definition = |r: &str| -> Option<&Value> {
        let name = r
            .strip_prefix("#/$defs/")
            .or_else(|| r.strip_prefix("#/definitions/"))?;
        let defs = schema.get("$defs").or_else(|| schema.get("definitions"))?;
        defs.get(name)
    };
    // Depth-first from the root, with the definitions on the current path.
    fn leads_back<'a>(
        v: &'a Value,
        path: &mut Vec<&'a str>,
        definition: &dyn Fn(&str) -> Option<&'a Value>,
    ) -> bool {
        let mut found = Vec::new();
        refs(v, &mut found);
        found.into_iter().any(|r| {
            if path.contains(&r) {
                return true;
            }
            let Some(def) = definition(r) else {
                // `#` itself, or what is not one of its definitions.
                return true;
            };
            path.push(r);
            let back = leads_back(def, path, definition);
            path.pop();
            back
        })
    }
    leads_back(schema, &mut Vec::new(), &definition)
}

fn image_source(url: &str, at: &str) -> Result<Value, ApiError> {
    if url.starts_with("data:") {
        let Some((media_type, data)) = data_url(url) else {
            return Err(ApiError::invalid(format!(
                "{at}: an image data URL must be `data:<type>;base64,<data>`"
            )));
        };
        // Anthropic takes `image/jpeg`, `image/png`, `image/gif` and `image/webp` only, as
        // written; clients also write `image/jpg` and capitals.
        let media_type = match media_type.to_ascii_lowercase().as_str() {
            "image/jpg" => "image/jpeg".to_owned(),
            other => other.to_owned(),
        };
        return Ok(json!({ "type": "base64", "media_type": media_type, "data": data }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({ "type": "url", "url": url }));
    }
    Err(ApiError::invalid(format!(
        "{at}: an image URL must be http(s) or a base64 data URL"
    )))
}

/// Anthropic ids must match `[a-zA-Z0-9_-]+`; OpenAI ids from other sources may not. The same
/// mapping is applied to `tool_calls[].id` and `tool_call_id`, so pairs still match.
fn tool_id(id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() { "_".to_owned() } else { id }
}

fn assistant_content(
    message: &Object,
    at: &str,
    legacy_calls: &mut Vec<(String, String)>,
) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    match present(message, "content") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => blocks.push(text_block(s)),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let field = match part_type(part) {
                    Some("text") => "text",
                    Some("refusal") => "refusal",
                    other => {
                        return Err(ApiError::invalid(format!(
                            "{at}.content[{j}]: assistant content part type `{}` is not supported",
                            other.unwrap_or("?")
                        )));
                    }
                };
                if let Some(text) = part.get(field).and_then(Value::as_str)
                    && !text.is_empty()
                {
                    blocks.push(text_block(text));
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{at}.content must be a string, an array of parts or null"
            )));
        }
    }
    if let Some(calls) = present(message, "tool_calls") {
        let Some(calls) = calls.as_array() else {
            return Err(ApiError::invalid(format!(
                "{at}.tool_calls must be an array"
            )));
        };
        for (k, call) in calls.iter().enumerate() {
            let at = format!("{at}.tool_calls[{k}]");
            let Some(id) = call.get("id").and_then(Value::as_str) else {
                return Err(ApiError::invalid(format!(
                    "{at}: a tool call needs a string `id`"
                )));
            };
            let function = call.get("function").unwrap_or(&Value::Null);
            blocks.push(tool_use(&tool_id(id), function, &at)?);
        }
    }
    if let Some(function) = present(message, "function_call") {
        let id = format!("call_legacy_{}", legacy_calls.len());
        let block = tool_use(&id, function, &format!("{at}.function_call"))?;
        let name = block["name"].as_str().unwrap_or("").to_owned();
        legacy_calls.push((name, id));
        blocks.push(block);
    }
    Ok(blocks)
}

/// `{"name", "arguments": "<json>"}` → a `tool_use` block with the arguments as an object.
fn tool_use(id: &str, function: &Value, at: &str) -> Result<Value, ApiError> {
    let Some(name) = function.get("name").and_then(Value::as_str) else {
        return Err(ApiError::invalid(format!(
            "{at}: `function.name` is required"
        )));
    };
    let input = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) => history_arguments(s),
        Some(v) => v.clone(),
    };
    if !input.is_object() {
        return Err(ApiError::invalid(format!(
            "{at} (id `{id}`, function `{name}`): `arguments` must be a JSON object"
        )));
    }
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

fn tool_result(id: &str, content: Option<&Value>, at: &str) -> Result<Value, ApiError> {
    let mut block = json!({ "type": "tool_result", "tool_use_id": tool_id(id) });
    let texts = texts(content, at)?;
    match texts.as_slice() {
        [] => {}
        [one] => block["content"] = json!(one),
        many => {
            block["content"] = Value::Array(many.iter().map(|t| text_block(t)).collect());
        }
    }
    Ok(block)
}

/// `tools`/`functions` and `tool_choice`/`function_call`/`parallel_tool_calls`.
fn tools(chat: &Object, out: &mut Object) -> Result<(), ApiError> {
    let mut tools = Vec::new();
    if let Some(list) = present(chat, "tools") {
        let Some(list) = list.as_array() else {
            return Err(ApiError::invalid("`tools` must be an array"));
        };
        for (i, tool) in list.iter().enumerate() {
            let at = format!("tools[{i}]");
            match tool.get("type").and_then(Value::as_str) {
                Some("function") => {}
                other => {
                    return Err(ApiError::invalid(format!(
                        "{at}: tool type `{}` is not supported for Claude models",
                        other.unwrap_or("?")
                    )));
                }
            }
            tools.push(tool_definition(tool.get("function"), &at)?);
        }
    } else if let Some(list) = present(chat, "functions") {
        let Some(list) = list.as_array() else {
            return Err(ApiError::invalid("`functions` must be an array"));
        };
        for (i, function) in list.iter().enumerate() {
            tools.push(tool_definition(Some(function), &format!("functions[{i}]"))?);
        }
    }

    let choice = match present(chat, "tool_choice") {
        Some(c) if c.get("type").and_then(Value::as_str) == Some("allowed_tools") => {
            // Claude has no list of allowed tools: only those are offered.
            let (choice, allowed) = allowed_tools(c)?;
            tools.retain(|t| {
                t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| allowed.iter().any(|a| a == n))
            });
            Some(choice)
        }
        Some(c) => tool_choice(c, "tool_choice")?,
        None => match present(chat, "function_call") {
            Some(c) => tool_choice(c, "function_call")?,
            None => None,
        },
    };
    // Anthropic rejects a tool_choice without tools; with no tools there is nothing to choose.
    if tools.is_empty() {
        return Ok(());
    }
    out.insert("tools".into(), Value::Array(tools));
    let parallel = chat
        .get("parallel_tool_calls")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut choice = match choice {
        Some(c) => c,
        None if parallel => return Ok(()),
        None => json!({ "type": "auto" }),
    };
    if !parallel && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    out.insert("tool_choice".into(), choice);
    Ok(())
}

fn tool_definition(function: Option<&Value>, at: &str) -> Result<Value, ApiError> {
    let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
        return Err(ApiError::invalid(format!("{at}: `name` is required")));
    };
    let function = function.unwrap_or(&Value::Null);
    let schema = match function.get("parameters") {
        Some(Value::Object(p)) => {
            let mut schema = p.clone();
            // Anthropic requires `"type": "object"`, which OpenAI clients often leave out (a
            // function without arguments is commonly `"parameters": {}`): filled in as for a
            // function without parameters.
            if present(&schema, "type").is_none() {
                schema.insert("type".into(), json!("object"));
                schema.entry("properties").or_insert_with(|| json!({}));
            }
            Value::Object(schema)
        }
        // A function without parameters takes none.
        _ => json!({ "type": "object", "properties": {} }),
    };
    let mut tool = json!({ "name": name, "input_schema": schema });
    if let Some(d) = function.get("description").and_then(Value::as_str) {
        tool["description"] = json!(d);
    }
    Ok(tool)
}

/// `{"type": "allowed_tools", "allowed_tools": {"mode": "auto" | "required", "tools": [...]}}`:
/// Anthropic's choice for the mode, and the names of the tools allowed.
fn allowed_tools(choice: &Value) -> Result<(Value, Vec<String>), ApiError> {
    let bad = || {
        ApiError::invalid(
            "`tool_choice.allowed_tools` must have a `mode` (auto or required) and `tools`",
        )
    };
    let spec = choice.get("allowed_tools").ok_or_else(bad)?;
    let names = spec
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(bad)?
        .iter()
        .filter_map(|t| {
            t.get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| t.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let choice = match spec.get("mode").and_then(Value::as_str) {
        Some("auto") => json!({ "type": "auto" }),
        Some("required") => json!({ "type": "any" }),
        _ => return Err(bad()),
    };
    Ok((choice, names))
}

/// OpenAI's `tool_choice` (or legacy `function_call`) as Anthropic's.
fn tool_choice(choice: &Value, field: &str) -> Result<Option<Value>, ApiError> {
    let named = |name: Option<&str>| match name {
        Some(n) => Ok(Some(json!({ "type": "tool", "name": n }))),
        None => Err(ApiError::invalid(format!("`{field}` names no function"))),
    };
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(Some(json!({ "type": "auto" }))),
            "none" => Ok(Some(json!({ "type": "none" }))),
            "required" if field == "tool_choice" => Ok(Some(json!({ "type": "any" }))),
            other => Err(ApiError::invalid(format!(
                "`{field}` value `{other}` is not supported"
            ))),
        },
        Value::Object(o) if field == "tool_choice" => named(
            o.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str),
        ),
        Value::Object(o) => named(o.get("name").and_then(Value::as_str)),
        _ => Err(ApiError::invalid(format!(
            "`{field}` must be a string or an object"
        ))),
    }
}

#[cfg(test)]
mod tests;
