//! Request options other than the conversation: tools and `tool_choice`, and the sampling,
//! output-format and thinking settings that make up Gemini's `generationConfig`.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// `tools` and `tool_choice` → Gemini `tools` and `toolConfig`.
pub(super) fn tools(chat: &Map<String, Value>) -> Result<(Option<Value>, Option<Value>), ApiError> {
    let mut declarations = Vec::new();
    match chat.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, tool) in list.iter().enumerate() {
                let at = format!("tools[{i}]");
                if tool.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(ApiError::invalid(format!(
                        "{at}.type: only function tools are supported"
                    )));
                }
                let function = tool.get("function");
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ApiError::invalid(format!("{at}.function.name: required")))?;
                let mut decl = Map::new();
                decl.insert("name".into(), Value::from(name));
                if let Some(d) = function
                    .and_then(|f| f.get("description"))
                    .and_then(Value::as_str)
                {
                    decl.insert("description".into(), Value::from(d));
                }
                if let Some(p) = function
                    .and_then(|f| f.get("parameters"))
                    .filter(|p| !p.is_null())
                {
                    decl.insert("parametersJsonSchema".into(), p.clone());
                }
                declarations.push(Value::Object(decl));
            }
        }
        Some(_) => return Err(ApiError::invalid("tools: must be an array")),
    }

    let named = |v: &Value| -> Option<String> {
        v.get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let bad_choice = || ApiError::invalid("tool_choice: not a supported value");
    let (mode, allowed): (Option<&str>, Option<Vec<String>>) = match chat.get("tool_choice") {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => (Some("AUTO"), None),
            "none" => (Some("NONE"), None),
            "required" => (Some("ANY"), None),
            _ => return Err(bad_choice()),
        },
        Some(choice) => match choice.get("type").and_then(Value::as_str) {
            Some("function") => (
                Some("ANY"),
                Some(vec![named(choice).ok_or_else(bad_choice)?]),
            ),
            Some("allowed_tools") => {
                let spec = choice.get("allowed_tools").ok_or_else(bad_choice)?;
                let names: Vec<String> = spec
                    .get("tools")
                    .and_then(Value::as_array)
                    .ok_or_else(bad_choice)?
                    .iter()
                    .filter_map(named)
                    .collect();
                match spec.get("mode").and_then(Value::as_str) {
                    Some("required") => (Some("ANY"), Some(names)),
                    Some("auto") => {
                        // Gemini takes allowedFunctionNames only with ANY: offer just these.
                        declarations.retain(|d| {
                            d.get("name")
                                .and_then(Value::as_str)
                                .is_some_and(|n| names.iter().any(|a| a == n))
                        });
                        (Some("AUTO"), None)
                    }
                    _ => return Err(bad_choice()),
                }
            }
            _ => return Err(bad_choice()),
        },
    };
    let tools =
        (!declarations.is_empty()).then(|| json!([{ "functionDeclarations": declarations }]));
    let config = mode.map(|mode| {
        let mut fcc = json!({ "mode": mode });
        if let Some(names) = allowed {
            fcc["allowedFunctionNames"] = json!(names);
        }
        json!({ "functionCallingConfig": fcc })
    });
    Ok((tools, config))
}

pub(super) fn generation_config(
    chat: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, ApiError> {
    let mut config = Map::new();
    let number = |key: &str| -> Result<Option<Value>, ApiError> {
        match chat.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
            Some(_) => Err(ApiError::invalid(format!("{key}: must be a number"))),
        }
    };
    let max = match number("max_completion_tokens")? {
        Some(v) => Some(v),
        None => number("max_tokens")?,
    };
    // Only Gemini 2.0 models take penalties: the others answer 400 ("Penalty is not enabled
    // for this model") to any value but 0, which chat clients with penalty sliders send.
    let penalties = model
        .strip_prefix("models/")
        .unwrap_or(model)
        .starts_with("gemini-2.0");
    let penalty =
        |key: &str| -> Result<Option<Value>, ApiError> { Ok(number(key)?.filter(|_| penalties)) };
    for (value, gemini) in [
        (max, "maxOutputTokens"),
        (number("temperature")?, "temperature"),
        (number("top_p")?, "topP"),
        (number("n")?, "candidateCount"),
        (number("seed")?, "seed"),
        (penalty("presence_penalty")?, "presencePenalty"),
        (penalty("frequency_penalty")?, "frequencyPenalty"),
    ] {
        if let Some(v) = value {
            config.insert(gemini.into(), v);
        }
    }
    match chat.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            config.insert("stopSequences".into(), Value::Array(list.clone()));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stop: must be a string or an array of strings",
            ));
        }
    }
    match chat.get("response_format") {
        None | Some(Value::Null) => {}
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .ok_or_else(|| {
                        ApiError::invalid("response_format.json_schema.schema: required")
                    })?;
                config.insert("responseMimeType".into(), json!("application/json"));
                config.insert("responseJsonSchema".into(), schema.clone());
            }
            _ => {
                return Err(ApiError::invalid(
                    "response_format.type: must be text, json_object or json_schema",
                ));
            }
        },
    }
    match chat.get("reasoning_effort") {
        None | Some(Value::Null) => {}
        Some(Value::String(effort)) => {
            config.insert("thinkingConfig".into(), thinking(effort, model)?);
        }
        Some(_) => return Err(ApiError::invalid("reasoning_effort: must be a string")),
    }
    Ok(config)
}

/// Gemini 3 takes a level (and cannot turn thinking off: `none` is its lowest level); earlier
/// models take a token budget. Gemini 3's Pro models take only `low` and `high`: the other
/// efforts go to the nearer of the two, as Google's own OpenAI-compatible endpoint does.
fn thinking(effort: &str, model: &str) -> Result<Value, ApiError> {
    if model.starts_with("gemini-3") {
        let pro = model.contains("-pro");
        let level = match effort {
            "none" | "minimal" if pro => "low",
            "medium" if pro => "high",
            "none" | "minimal" => "minimal",
            "low" => "low",
            "medium" => "medium",
            "high" | "xhigh" => "high",
            _ => return Err(bad_effort(effort)),
        };
        return Ok(json!({ "thinkingLevel": level }));
    }
    let budget = match effort {
        // 2.5 Pro cannot think less than 128 tokens, nor not at all.
        "none" if model.contains("-pro") => 128,
        "none" => 0,
        "minimal" | "low" => 1024,
        "medium" => 8192,
        "high" | "xhigh" => 24576,
        _ => return Err(bad_effort(effort)),
    };
    Ok(json!({ "thinkingBudget": budget }))
}

fn bad_effort(effort: &str) -> ApiError {
    ApiError::invalid(format!(
        "reasoning_effort: {effort:?} is not one of none, minimal, low, medium, high, xhigh"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::request;
    use super::*;

    fn gemini(chat: Value) -> Value {
        let req = request(chat.to_string().as_bytes()).unwrap();
        serde_json::from_slice(&req.body).unwrap()
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
    fn tools_and_tool_choice() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": { "q": { "type": "string" } },
            "additionalProperties": false,
        });
        let base = |choice: Value| {
            let mut chat = with_messages(json!([{ "role": "user", "content": "x" }]));
            chat["tools"] = json!([
                { "type": "function", "function": { "name": "search", "description": "find", "parameters": schema.clone(), "strict": true } },
                { "type": "function", "function": { "name": "noop" } },
            ]);
            chat["tool_choice"] = choice;
            gemini(chat)
        };
        let body = base(Value::Null);
        assert_eq!(
            body["tools"],
            json!([{ "functionDeclarations": [
                { "name": "search", "description": "find", "parametersJsonSchema": schema },
                { "name": "noop" },
            ]}])
        );
        assert!(body.get("toolConfig").is_none());
        let mode = |choice: Value| base(choice)["toolConfig"]["functionCallingConfig"].clone();
        assert_eq!(mode(json!("auto")), json!({ "mode": "AUTO" }));
        assert_eq!(mode(json!("none")), json!({ "mode": "NONE" }));
        assert_eq!(mode(json!("required")), json!({ "mode": "ANY" }));
        assert_eq!(
            mode(json!({ "type": "function", "function": { "name": "search" } })),
            json!({ "mode": "ANY", "allowedFunctionNames": ["search"] })
        );
        let allowed = |m: &str| {
            base(
                json!({ "type": "allowed_tools", "allowed_tools": { "mode": m, "tools": [
                    { "type": "function", "function": { "name": "noop" } }
                ]}}),
            )
        };
        assert_eq!(
            allowed("required")["toolConfig"]["functionCallingConfig"],
            json!({ "mode": "ANY", "allowedFunctionNames": ["noop"] })
        );
        let auto = allowed("auto");
        assert_eq!(
            auto["toolConfig"]["functionCallingConfig"],
            json!({ "mode": "AUTO" })
        );
        assert_eq!(
            auto["tools"][0]["functionDeclarations"],
            json!([{ "name": "noop" }])
        );

        let mut chat = with_messages(json!([{ "role": "user", "content": "x" }]));
        chat["tool_choice"] = json!("sometimes");
        rejects(chat.clone(), "tool_choice");
        chat["tool_choice"] = Value::Null;
        chat["tools"] = json!([{ "type": "custom", "custom": { "name": "x" } }]);
        rejects(chat, "only function tools");
    }

    #[test]
    fn generation_config_fields() {
        let mut chat = with_messages(json!([{ "role": "user", "content": "x" }]));
        for (k, v) in [
            ("max_tokens", json!(100)),
            ("max_completion_tokens", json!(200)),
            ("temperature", json!(0.5)),
            ("top_p", json!(0.9)),
            ("stop", json!(["END", "STOP"])),
            ("n", json!(2)),
            ("seed", json!(42)),
            ("presence_penalty", json!(0.1)),
            ("frequency_penalty", json!(-0.2)),
            ("response_format", json!({ "type": "json_object" })),
            ("user", json!("ignored")),
            ("parallel_tool_calls", json!(true)),
        ] {
            chat[k] = v;
        }
        assert_eq!(
            gemini(chat.clone())["generationConfig"],
            json!({
                "maxOutputTokens": 200,
                "temperature": 0.5,
                "topP": 0.9,
                "stopSequences": ["END", "STOP"],
                "candidateCount": 2,
                "seed": 42,
                "responseMimeType": "application/json",
            })
        );
        // Penalties go to the models that take them only (Gemini 2.0); a bad one is refused.
        for (model, taken) in [
            ("gemini-2.0-flash", true),
            ("models/gemini-2.0-flash-001", true),
            ("gemini-3-pro-preview", false),
        ] {
            let mut chat = chat.clone();
            chat["model"] = json!(model);
            let config = &gemini(chat)["generationConfig"];
            assert_eq!(config["presencePenalty"] == json!(0.1), taken, "{model}");
            assert_eq!(config["frequencyPenalty"] == json!(-0.2), taken, "{model}");
        }
        let mut bad = chat.clone();
        bad["frequency_penalty"] = json!("high");
        rejects(bad, "frequency_penalty");
        chat.as_object_mut()
            .unwrap()
            .remove("max_completion_tokens");
        chat["stop"] = json!("END");
        chat["response_format"] = json!({ "type": "json_schema", "json_schema": {
            "name": "answer", "strict": true, "schema": { "type": "object", "additionalProperties": false }
        }});
        let config = &gemini(chat.clone())["generationConfig"];
        assert_eq!(config["maxOutputTokens"], 100);
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert_eq!(config["responseMimeType"], "application/json");
        assert_eq!(
            config["responseJsonSchema"],
            json!({ "type": "object", "additionalProperties": false })
        );

        chat["response_format"] = json!({ "type": "text" });
        assert!(
            gemini(chat.clone())["generationConfig"]
                .get("responseMimeType")
                .is_none()
        );
        chat["temperature"] = json!("hot");
        rejects(chat.clone(), "temperature: must be a number");
        chat["temperature"] = json!(1);
        chat["stop"] = json!([1]);
        rejects(chat.clone(), "stop:");
        chat["stop"] = Value::Null;
        chat["response_format"] = json!({ "type": "json_schema" });
        rejects(chat, "json_schema.schema: required");
    }

    #[test]
    fn reasoning_effort_maps_to_thinking() {
        let effort = |model: &str, effort: &str| {
            let mut chat =
                json!({ "model": model, "messages": [{ "role": "user", "content": "x" }] });
            chat["reasoning_effort"] = json!(effort);
            gemini(chat)["generationConfig"]["thinkingConfig"].clone()
        };
        assert_eq!(
            effort("gemini-2.5-flash", "none"),
            json!({ "thinkingBudget": 0 })
        );
        assert_eq!(
            effort("gemini-2.5-flash", "low"),
            json!({ "thinkingBudget": 1024 })
        );
        assert_eq!(
            effort("models/gemini-2.5-pro", "medium"),
            json!({ "thinkingBudget": 8192 })
        );
        assert_eq!(
            effort("gemini-2.5-pro", "high"),
            json!({ "thinkingBudget": 24576 })
        );
        assert_eq!(
            effort("gemini-3-pro-preview", "high"),
            json!({ "thinkingLevel": "high" })
        );
        assert_eq!(
            effort("gemini-3-flash-preview", "none"),
            json!({ "thinkingLevel": "minimal" })
        );
        assert_eq!(
            effort("gemini-3-flash-preview", "medium"),
            json!({ "thinkingLevel": "medium" })
        );
        // Gemini 3 Pro takes only low and high; 2.5 Pro cannot turn thinking off.
        for (level, want) in [
            ("none", "low"),
            ("minimal", "low"),
            ("low", "low"),
            ("medium", "high"),
        ] {
            assert_eq!(
                effort("gemini-3-pro-preview", level),
                json!({ "thinkingLevel": want }),
                "{level}"
            );
        }
        assert_eq!(
            effort("gemini-2.5-pro", "none"),
            json!({ "thinkingBudget": 128 })
        );
        rejects(
            json!({ "model": "gemini-2.5-flash", "messages": [{ "role": "user", "content": "x" }], "reasoning_effort": "max" }),
            "reasoning_effort",
        );
    }
}
