//! OpenAI Chat Completions request → Gemini `generateContent` request.
//!
//! The body is read as a `serde_json::Value` rather than typed structs: clients send many shapes
//! (string or array content, legacy `function_call`, `image_url` as a string or an object), and
//! a mismatch must come back as a 400 that names the offending field, not a serde message.
//!
//! Choices worth knowing (the first and last are made in `options`):
//! - Tool parameters go to `parametersJsonSchema` and `json_schema` formats to
//!   `responseJsonSchema`, unchanged. Both accept standard JSON Schema (`additionalProperties`,
//!   `$ref`/`$defs`, `anyOf`), which is what Gemini CLI itself sends, so nothing has to be
//!   stripped or rewritten into the OpenAPI-subset `parameters` dialect.
//! - Replayed `functionCall` parts carry Google's documented placeholder `thoughtSignature`: an
//!   OpenAI client cannot keep the real signature, and Gemini 3 rejects a function-calling
//!   history without one.
//! - `reasoning_effort` becomes `thinkingConfig.thinkingLevel` on `gemini-3*` models and a
//!   `thinkingBudget` (Google's own OpenAI-compatibility figures) on earlier ones.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::options::{generation_config, tools};
use crate::error::ApiError;
use crate::translate::chat::history_arguments;

/// A translated request: what the relay needs to route it and the Gemini body to send.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The model as the client named it (a `models/` prefix included, if the client sent one).
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage` of a streaming request: end with a usage chunk.
    pub include_usage: bool,
    /// The Gemini `generateContent` JSON.
    pub body: Bytes,
}

/// What `thoughtSignature` a replayed function call carries (see the module doc).
const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

/// Translates an OpenAI Chat Completions body; errors are 400s naming the field.
pub fn request(chat_body: &[u8]) -> Result<GenerateRequest, ApiError> {
    let chat: Value = serde_json::from_slice(chat_body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))?;
    let Some(chat) = chat.as_object() else {
        return Err(ApiError::invalid("request body must be a JSON object"));
    };
    let model = match chat.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        None | Some(Value::Null) => return Err(ApiError::invalid("model: required")),
        Some(_) => return Err(ApiError::invalid("model: must be a non-empty string")),
    };
    let bare = model.strip_prefix("models/").unwrap_or(&model);
    if bare.is_empty() || !crate::relay::fits_a_path(bare) {
        return Err(ApiError::invalid(format!(
            "model: {model:?} is not a valid Gemini model name"
        )));
    }
    let messages = match chat.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(ApiError::invalid("messages: must not be empty")),
        None | Some(Value::Null) => return Err(ApiError::invalid("messages: required")),
        Some(_) => return Err(ApiError::invalid("messages: must be an array")),
    };
    let stream = opt_bool(chat, "stream")?;
    let include_usage = stream
        && chat
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);

    let mut body = Map::new();
    let (system, contents) = contents(messages)?;
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let (tools, tool_config) = tools(chat)?;
    if let Some(tools) = tools {
        body.insert("tools".into(), tools);
    }
    if let Some(config) = tool_config {
        body.insert("toolConfig".into(), config);
    }
    let config = generation_config(chat, bare)?;
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    let body = serde_json::to_vec(&Value::Object(body))
        .map_err(|e| ApiError::internal(format!("encoding the Gemini request: {e}")))?;
    Ok(GenerateRequest {
        model,
        stream,
        include_usage,
        body: Bytes::from(body),
    })
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(format!("{key}: must be a boolean"))),
    }
}

/// The system parts and the conversation, with consecutive same-role contents merged (Gemini
/// wants turns to alternate; OpenAI allows several user or tool messages in a row).
fn contents(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut system = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool call id → function name, from the assistant messages seen so far: OpenAI's tool
    // message names only the id, Gemini's functionResponse needs the name.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Some(message) = message.as_object() else {
            return Err(ApiError::invalid(format!("{at}: must be an object")));
        };
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, parts) = match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                system.extend(text_parts(content, &at)?);
                continue;
            }
            Some("user") => ("user", user_parts(content, &at)?),
            Some("assistant") => ("model", assistant_parts(message, &at, &mut call_names)?),
            Some(role @ ("tool" | "function")) => {
                let name = if role == "tool" {
                    let id = message
                        .get("tool_call_id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ApiError::invalid(format!("{at}.tool_call_id: required")))?;
                    match call_names.get(id) {
                        Some(name) => name.clone(),
                        None => message
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .ok_or_else(|| {
                                ApiError::invalid(format!(
                                    "{at}.tool_call_id: {id:?} matches no earlier assistant tool call"
                                ))
                            })?,
                    }
                } else {
                    message
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| ApiError::invalid(format!("{at}.name: required")))?
                };
                let text: String = text_parts(content, &at)?
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(obj)) => Value::Object(obj),
                    _ => json!({ "content": text }),
                };
                let mut call = json!({ "name": name, "response": response });
                if let Some(id) = message.get("tool_call_id").and_then(Value::as_str) {
                    call["id"] = Value::from(id);
                }
                ("user", vec![json!({ "functionResponse": call })])
            }
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "{at}.role: {other:?} is not a supported role"
                )));
            }
            None => return Err(ApiError::invalid(format!("{at}.role: required"))),
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let contents = contents
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect();
    Ok((system, contents))
}

/// Text-only content (system, tool): a string or an array of `text` parts.
fn text_parts(content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(text_part(s).into_iter().collect()),
        Value::Array(items) => {
            let mut parts = Vec::new();
            for (j, item) in items.iter().enumerate() {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => parts.extend(text_part(part_text(item, at, j)?)),
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "{at}.content[{j}]: only text parts are allowed here"
                        )));
                    }
                }
            }
            Ok(parts)
        }
        _ => Err(ApiError::invalid(format!(
            "{at}.content: must be a string or an array"
        ))),
    }
}

/// Gemini rejects empty text parts, so they are dropped.
fn text_part(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({ "text": text }))
}

fn part_text<'a>(item: &'a Value, at: &str, j: usize) -> Result<&'a str, ApiError> {
    item.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("{at}.content[{j}].text: must be a string")))
}

fn user_parts(content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let Value::Array(items) = content else {
        return text_parts(content, at);
    };
    let mut parts = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let here = format!("{at}.content[{j}]");
        match item.get("type").and_then(Value::as_str) {
            Some("text") => parts.extend(text_part(part_text(item, at, j)?)),
            Some("image_url") => {
                let url = match item.get("image_url") {
                    Some(Value::String(url)) => url.as_str(),
                    Some(obj) => obj.get("url").and_then(Value::as_str).unwrap_or(""),
                    None => "",
                };
                if url.is_empty() {
                    return Err(ApiError::invalid(format!("{here}.image_url.url: required")));
                }
                parts.push(media_part(url, &here)?);
            }
            Some("input_audio") => {
                let audio = item.get("input_audio");
                let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
                let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
                let (Some(data), Some(format)) = (data, format) else {
                    return Err(ApiError::invalid(format!(
                        "{here}.input_audio: data and format are required"
                    )));
                };
                parts.push(json!({
                    "inlineData": { "mimeType": format!("audio/{format}"), "data": data }
                }));
            }
            Some("file") => {
                let data = item
                    .get("file")
                    .and_then(|f| f.get("file_data"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "{here}.file.file_data: required (uploaded file ids are not supported)"
                        ))
                    })?;
                parts.push(media_part(data, &here)?);
            }
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "{here}.type: {other:?} is not supported"
                )));
            }
            None => return Err(ApiError::invalid(format!("{here}.type: required"))),
        }
    }
    Ok(parts)
}

/// A `data:` URL becomes inline bytes; a remote URL a `fileData` reference.
fn media_part(url: &str, at: &str) -> Result<Value, ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((header, data)) = rest.split_once(',') else {
            return Err(ApiError::invalid(format!("{at}: malformed data URL")));
        };
        let Some(mime) = header.strip_suffix(";base64") else {
            return Err(ApiError::invalid(format!(
                "{at}: only base64 data URLs are supported"
            )));
        };
        // Parameters (`;name=a.png`, `;charset=…`) are not part of Gemini's `mimeType`.
        let mime = mime.split(';').next().unwrap_or(mime);
        let mime = if mime.is_empty() { "image/jpeg" } else { mime };
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    if ["http://", "https://", "gs://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Ok(json!({ "fileData": { "mimeType": guess_mime(url), "fileUri": url } }));
    }
    Err(ApiError::invalid(format!(
        "{at}: the URL must be a data: URL or an http(s) URL"
    )))
}

/// The media type a remote file's extension suggests; Gemini needs one and most are images.
fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => "image/jpeg",
    }
}

fn assistant_parts(
    message: &Map<String, Value>,
    at: &str,
    call_names: &mut HashMap<String, String>,
) -> Result<Vec<Value>, ApiError> {
    let mut parts = Vec::new();
    match message.get("content").unwrap_or(&Value::Null) {
        Value::Array(items) => {
            for (j, item) in items.iter().enumerate() {
                let text = match item.get("type").and_then(Value::as_str) {
                    Some("text") => part_text(item, at, j)?,
                    Some("refusal") => item.get("refusal").and_then(Value::as_str).unwrap_or(""),
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "{at}.content[{j}]: only text and refusal parts are allowed here"
                        )));
                    }
                };
                parts.extend(text_part(text));
            }
        }
        other => parts.extend(text_parts(other, at)?),
    }
    let mut calls: Vec<(String, &Value)> = Vec::new();
    if let Some(list) = message.get("tool_calls").filter(|v| !v.is_null()) {
        let Some(list) = list.as_array() else {
            return Err(ApiError::invalid(format!(
                "{at}.tool_calls: must be an array"
            )));
        };
        for (j, call) in list.iter().enumerate() {
            calls.push((format!("{at}.tool_calls[{j}]"), call));
        }
    }
    // The legacy single `function_call` has the same inner shape as a tool call's `function`.
    let legacy = message.get("function_call").filter(|v| !v.is_null());
    let legacy_wrapped = legacy.map(|f| json!({ "function": f }));
    if let Some(wrapped) = &legacy_wrapped {
        calls.push((format!("{at}.function_call"), wrapped));
    }
    for (here, call) in calls {
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid(format!("{here}.function.name: required")))?;
        let raw = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = history_arguments(raw);
        let mut function_call = json!({ "name": name, "args": args });
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            call_names.insert(id.to_owned(), name.to_owned());
            function_call["id"] = Value::from(id);
        }
        parts.push(json!({
            "functionCall": function_call,
            "thoughtSignature": PLACEHOLDER_SIGNATURE,
        }));
    }
    Ok(parts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn translate(chat: Value) -> (GenerateRequest, Value) {
        let req = request(chat.to_string().as_bytes()).unwrap();
        let body = serde_json::from_slice(&req.body).unwrap();
        (req, body)
    }

    fn gemini(chat: Value) -> Value {
        translate(chat).1
    }

    fn rejects(chat: Value, needle: &str) {
        let err = request(chat.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.status, 400, "{err}");
        assert!(err.message.contains(needle), "{needle:?} not in {err}");
    }

    fn with_messages(messages: Value) -> Value {
        json!({ "model": "gemini-2.5-flash", "messages": messages })
    }

    #[test]
    fn sdk_fixture_requests_translate() {
        let path = format!(
            "{}/tests/fixtures/clients/python-sdks.requests.jsonl",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut seen = 0;
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let capture: Value = serde_json::from_str(line).unwrap();
            if capture["path"] != "/v1/chat/completions" {
                continue;
            }
            seen += 1;
            let (req, body) = translate(capture["body"].clone());
            assert_eq!(req.model, "gpt-4o-mini");
            assert_eq!(req.stream, capture["body"]["stream"] == true);
            assert_eq!(req.include_usage, req.stream);
            let text = &capture["body"]["messages"][0]["content"];
            assert_eq!(body["contents"][0]["role"], "user");
            assert_eq!(body["contents"][0]["parts"][0]["text"], *text);
            if capture["body"].get("tools").is_some() {
                let decl = &body["tools"][0]["functionDeclarations"][0];
                assert_eq!(decl["name"], "run");
                assert_eq!(decl["parametersJsonSchema"], json!({ "type": "object" }));
            }
        }
        assert_eq!(seen, 5);
    }

    #[test]
    fn missing_or_bad_top_level_fields_are_400() {
        rejects(json!({ "messages": [] }), "model: required");
        rejects(json!({ "model": "" , "messages": []}), "model");
        rejects(json!({ "model": "gemini-2.5-flash" }), "messages: required");
        rejects(with_messages(json!([])), "messages: must not be empty");
        rejects(
            json!({ "model": "../x", "messages": [{"role": "user", "content": "hi"}] }),
            "not a valid Gemini model",
        );
        rejects(json!([1]), "JSON object");
        let err = request(b"{").unwrap_err();
        assert!(err.message.contains("not valid JSON"));
        rejects(
            with_messages(json!([{ "role": "robot", "content": "x" }])),
            "messages[0].role",
        );
        rejects(
            with_messages(json!([{ "content": "x" }])),
            "messages[0].role: required",
        );
    }

    #[test]
    fn roles_system_and_merging() {
        let body = gemini(with_messages(json!([
            { "role": "system", "content": "be brief" },
            { "role": "developer", "content": [{ "type": "text", "text": "be kind" }] },
            { "role": "user", "content": "a" },
            { "role": "user", "content": [{ "type": "text", "text": "b" }] },
            { "role": "assistant", "content": "c" },
            { "role": "assistant", "content": [{ "type": "text", "text": "d" }, { "type": "refusal", "refusal": "no" }] },
            { "role": "user", "content": "" },
            { "role": "user", "content": "e" },
        ])));
        assert_eq!(
            body["systemInstruction"],
            json!({ "parts": [{ "text": "be brief" }, { "text": "be kind" }] })
        );
        assert_eq!(
            body["contents"],
            json!([
                { "role": "user", "parts": [{ "text": "a" }, { "text": "b" }] },
                { "role": "model", "parts": [{ "text": "c" }, { "text": "d" }, { "text": "no" }] },
                { "role": "user", "parts": [{ "text": "e" }] },
            ])
        );
        assert!(body.get("generationConfig").is_none());
        assert!(body.get("tools").is_none());
        rejects(
            with_messages(
                json!([{ "role": "system", "content": [{ "type": "image_url", "image_url": "x" }] }]),
            ),
            "only text parts",
        );
    }

    #[test]
    fn images_audio_and_files() {
        let body = gemini(with_messages(json!([{ "role": "user", "content": [
            { "type": "text", "text": "look" },
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0K", "detail": "high" } },
            { "type": "image_url", "image_url": { "url": "https://example.com/a/cat.WEBP?x=1" } },
            { "type": "image_url", "image_url": "https://example.com/photo" },
            { "type": "input_audio", "input_audio": { "data": "UklG", "format": "wav" } },
            { "type": "file", "file": { "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf" } },
            { "type": "image_url", "image_url": { "url": "data:image/png;name=a.png;base64,iVBO" } },
        ]}])));
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                { "text": "look" },
                { "inlineData": { "mimeType": "image/png", "data": "iVBORw0K" } },
                { "fileData": { "mimeType": "image/webp", "fileUri": "https://example.com/a/cat.WEBP?x=1" } },
                { "fileData": { "mimeType": "image/jpeg", "fileUri": "https://example.com/photo" } },
                { "inlineData": { "mimeType": "audio/wav", "data": "UklG" } },
                { "inlineData": { "mimeType": "application/pdf", "data": "JVBE" } },
                { "inlineData": { "mimeType": "image/png", "data": "iVBO" } },
            ])
        );
        let image = |url: &str| {
            with_messages(
                json!([{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": url } }] }]),
            )
        };
        rejects(image("ftp://x/y.png"), "data: URL or an http(s) URL");
        rejects(image("data:image/png,abc"), "only base64");
        rejects(image("data:image/png;base64"), "malformed data URL");
        rejects(image(""), "image_url.url: required");
        rejects(
            with_messages(json!([{ "role": "user", "content": [{ "type": "video", "x": 1 }] }])),
            "\"video\" is not supported",
        );
        assert_eq!(guess_mime("https://h/x.png#frag"), "image/png");
        assert_eq!(guess_mime("https://h/x.jpeg"), "image/jpeg");
        assert_eq!(guess_mime("https://h.png/file"), "image/jpeg");
        assert_eq!(guess_mime("https://h/doc.pdf"), "application/pdf");
    }

    #[test]
    fn tool_calls_and_results() {
        let body = gemini(with_messages(json!([
            { "role": "user", "content": "weather?" },
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_a", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" } },
                { "id": "call_b", "type": "function", "function": { "name": "time", "arguments": "" } },
            ]},
            { "role": "tool", "tool_call_id": "call_a", "content": "{\"temp\": 3}" },
            { "role": "tool", "tool_call_id": "call_b", "content": [{ "type": "text", "text": "noon" }] },
            { "role": "user", "content": "thanks" },
        ])));
        let contents = body["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{body}");
        assert_eq!(contents[1]["role"], "model");
        assert_eq!(
            contents[1]["parts"],
            json!([
                { "functionCall": { "id": "call_a", "name": "weather", "args": { "city": "Oslo" } }, "thoughtSignature": PLACEHOLDER_SIGNATURE },
                { "functionCall": { "id": "call_b", "name": "time", "args": {} }, "thoughtSignature": PLACEHOLDER_SIGNATURE },
            ])
        );
        assert_eq!(contents[2]["role"], "user");
        assert_eq!(
            contents[2]["parts"],
            json!([
                { "functionResponse": { "id": "call_a", "name": "weather", "response": { "temp": 3 } } },
                { "functionResponse": { "id": "call_b", "name": "time", "response": { "content": "noon" } } },
                { "text": "thanks" },
            ])
        );
    }

    #[test]
    fn legacy_function_call_and_function_role() {
        let body = gemini(with_messages(json!([
            { "role": "user", "content": "go" },
            { "role": "assistant", "function_call": { "name": "run", "arguments": "{\"x\":1}" } },
            { "role": "function", "name": "run", "content": "[1,2]" },
        ])));
        assert_eq!(
            body["contents"][1]["parts"][0]["functionCall"],
            json!({ "name": "run", "args": { "x": 1 } })
        );
        // A JSON array is not an object: wrapped.
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"],
            json!({ "name": "run", "response": { "content": "[1,2]" } })
        );
    }

    #[test]
    fn bad_tool_messages_are_400() {
        let call = |args: &str| {
            with_messages(json!([{ "role": "assistant", "tool_calls": [
                { "id": "c", "type": "function", "function": { "name": "f", "arguments": args } }
            ]}]))
        };
        // Arguments cut short (an answer that ended at its length limit) go as they were written.
        for raw in ["{not json", "[1]"] {
            let body = gemini(call(raw));
            assert_eq!(
                body["contents"][0]["parts"][0]["functionCall"]["args"],
                json!({ "_raw_arguments": raw })
            );
        }
        rejects(
            with_messages(json!([{ "role": "tool", "tool_call_id": "nope", "content": "x" }])),
            "matches no earlier assistant tool call",
        );
        rejects(
            with_messages(json!([{ "role": "tool", "content": "x" }])),
            "tool_call_id: required",
        );
        // A tool message naming its function is accepted without a matching call.
        let body = gemini(with_messages(
            json!([{ "role": "tool", "tool_call_id": "x", "name": "f", "content": "ok" }]),
        ));
        assert_eq!(
            body["contents"][0]["parts"][0]["functionResponse"]["name"],
            "f"
        );
    }

    #[test]
    fn stream_flags() {
        let mut chat = with_messages(json!([{ "role": "user", "content": "x" }]));
        chat["stream_options"] = json!({ "include_usage": true });
        let (req, _) = translate(chat.clone());
        // include_usage means nothing without a stream.
        assert!(!req.stream && !req.include_usage);
        chat["stream"] = json!(true);
        let (req, _) = translate(chat.clone());
        assert!(req.stream && req.include_usage);
        chat["stream_options"] = json!({ "include_usage": false });
        assert!(!translate(chat.clone()).0.include_usage);
        chat["stream"] = json!("yes");
        rejects(chat, "stream: must be a boolean");
    }
}
