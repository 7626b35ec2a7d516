#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::error::ErrorKind;

/// Translates `chat` (with a default max_tokens of 1024) and returns the Messages JSON.
fn translate(chat: Value) -> Value {
    let req = request(chat.to_string().as_bytes(), 1024).unwrap();
    serde_json::from_slice(&req.body).unwrap()
}

fn rejected(chat: Value) -> ApiError {
    let err = request(chat.to_string().as_bytes(), 1024).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert_eq!(err.status, 400);
    err
}

fn with_messages(messages: Value) -> Value {
    json!({ "model": "claude-sonnet-4-5", "messages": messages })
}

#[test]
fn python_sdk_requests_from_the_fixture() {
    let path = format!(
        "{}/tests/fixtures/clients/python-sdks.requests.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let captures = std::fs::read_to_string(&path).unwrap();
    let mut seen = 0;
    for line in captures.lines() {
        let capture: Value = serde_json::from_str(line).unwrap();
        if capture["path"] != "/v1/chat/completions" {
            continue;
        }
        seen += 1;
        let chat = &capture["body"];
        let req = request(chat.to_string().as_bytes(), 4096).unwrap();
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(req.model, chat["model"].as_str().unwrap());
        assert_eq!(body["model"], chat["model"]);
        assert_eq!(req.stream, chat["stream"] == true);
        assert_eq!(body.get("stream").is_some(), req.stream);
        assert_eq!(
            req.include_usage,
            chat["stream_options"]["include_usage"] == true
        );
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(
            body["messages"][0]["content"][0]["text"],
            chat["messages"][0]["content"]
        );
        if chat.get("tools").is_some() {
            assert_eq!(
                body["tools"],
                json!([{ "name": "run", "input_schema": { "type": "object" } }])
            );
        }
    }
    assert!(seen >= 4, "only {seen} chat captures");
}

#[test]
fn missing_model_or_messages_is_a_clear_400() {
    let err = rejected(json!({ "messages": [] }));
    assert!(err.message.contains("`model`"), "{}", err.message);
    let err = rejected(json!({ "model": "m" }));
    assert!(err.message.contains("`messages`"), "{}", err.message);
    let err = rejected(json!({ "model": "m", "messages": "hi" }));
    assert!(err.message.contains("`messages`"), "{}", err.message);
    let err = request(b"{not json", 1).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    rejected(json!([1, 2]));
    let err = rejected(with_messages(
        json!([{ "role": "system", "content": "only" }]),
    ));
    assert!(err.message.contains("at least one"), "{}", err.message);
}

#[test]
fn system_and_developer_messages_become_the_system_blocks_in_order() {
    let body = translate(with_messages(json!([
        { "role": "system", "content": "first" },
        { "role": "user", "content": "hi" },
        { "role": "developer", "content": [
            { "type": "text", "text": "second" },
            { "type": "text", "text": "" },
            { "type": "text", "text": "third" },
        ]},
    ])));
    assert_eq!(
        body["system"],
        json!([
            { "type": "text", "text": "first" },
            { "type": "text", "text": "second" },
            { "type": "text", "text": "third" },
        ])
    );
    assert_eq!(
        body["messages"],
        json!([{ "role": "user", "content": [{ "type": "text", "text": "hi" }] }])
    );
    // No system message, no system field.
    let body = translate(with_messages(json!([{ "role": "user", "content": "hi" }])));
    assert!(body.get("system").is_none());
    // An image in a system message is refused.
    rejected(with_messages(json!([
        { "role": "system", "content": [{ "type": "image_url", "image_url": { "url": "https://x/y.png" } }] },
        { "role": "user", "content": "hi" },
    ])));
}

#[test]
fn user_content_parts_text_and_images() {
    let body = translate(with_messages(json!([{ "role": "user", "content": [
        { "type": "text", "text": "look" },
        { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0K", "detail": "high" } },
        { "type": "image_url", "image_url": { "url": "https://example.com/cat.jpg" } },
        { "type": "image_url", "image_url": "http://example.com/dog.gif" },
        { "type": "file", "file": { "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0" } },
        { "type": "image_url", "image_url": { "url": "data:image/JPG;base64,/9j/4AAQ" } },
    ]}])));
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            { "type": "text", "text": "look" },
            { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0K" } },
            { "type": "image", "source": { "type": "url", "url": "https://example.com/cat.jpg" } },
            { "type": "image", "source": { "type": "url", "url": "http://example.com/dog.gif" } },
            { "type": "document", "source": { "type": "base64", "media_type": "application/pdf", "data": "JVBERi0" } },
            // `image/jpg` (and capitals) as Anthropic names it.
            { "type": "image", "source": { "type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ" } },
        ])
    );
    for bad in [
        json!({ "type": "image_url", "image_url": { "url": "ftp://x/y.png" } }),
        json!({ "type": "image_url", "image_url": { "url": "data:image/png,rawbytes" } }),
        json!({ "type": "image_url" }),
        json!({ "type": "input_audio", "input_audio": { "data": "", "format": "wav" } }),
        json!({ "type": "file", "file": { "file_id": "file-1" } }),
    ] {
        let err = rejected(with_messages(json!([{ "role": "user", "content": [bad] }])));
        assert!(
            err.message.contains("messages[0].content[0]"),
            "{}",
            err.message
        );
    }
}

#[test]
fn assistant_tool_calls_become_tool_use_and_tool_messages_merge_into_one_user_turn() {
    let body = translate(with_messages(json!([
        { "role": "user", "content": "weather in Paris and Oslo?" },
        { "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
            { "id": "call.2", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" } },
            { "id": "call_3", "type": "function", "function": { "name": "now", "arguments": "" } },
        ]},
        { "role": "tool", "tool_call_id": "call_1", "content": "sunny" },
        { "role": "tool", "tool_call_id": "call.2", "content": [{ "type": "text", "text": "rain" }, { "type": "text", "text": "cold" }] },
        { "role": "tool", "tool_call_id": "call_3", "content": "" },
        { "role": "user", "content": "thanks" },
    ])));
    assert_eq!(
        body["messages"],
        json!([
            { "role": "user", "content": [{ "type": "text", "text": "weather in Paris and Oslo?" }] },
            { "role": "assistant", "content": [
                { "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } },
                { "type": "tool_use", "id": "call_2", "name": "weather", "input": { "city": "Oslo" } },
                { "type": "tool_use", "id": "call_3", "name": "now", "input": {} },
            ]},
            { "role": "user", "content": [
                { "type": "tool_result", "tool_use_id": "call_1", "content": "sunny" },
                { "type": "tool_result", "tool_use_id": "call_2", "content": [
                    { "type": "text", "text": "rain" }, { "type": "text", "text": "cold" },
                ]},
                { "type": "tool_result", "tool_use_id": "call_3" },
                { "type": "text", "text": "thanks" },
            ]},
        ])
    );
}

#[test]
fn assistant_text_and_tool_calls_share_one_message() {
    let body = translate(with_messages(json!([
        { "role": "user", "content": "go" },
        { "role": "assistant", "content": [{ "type": "text", "text": "on it" }, { "type": "refusal", "refusal": "" }],
          "tool_calls": [{ "id": "c", "type": "function", "function": { "name": "f", "arguments": "{}" } }] },
    ])));
    assert_eq!(
        body["messages"][1]["content"],
        json!([
            { "type": "text", "text": "on it" },
            { "type": "tool_use", "id": "c", "name": "f", "input": {} },
        ])
    );
}

/// A call cut short in the history (its answer ended at its length limit) has arguments that
/// are not a JSON object: they go as written, as OpenAI takes them. Arguments given as a JSON
/// value that is not an object are refused, naming the call.
#[test]
fn history_tool_call_arguments_that_are_not_an_object() {
    let body = translate(with_messages(json!([
        { "role": "user", "content": "go" },
        { "role": "assistant", "tool_calls": [
            { "id": "call_ok", "type": "function", "function": { "name": "f", "arguments": "{}" } },
            { "id": "call_cut", "type": "function", "function": { "name": "g", "arguments": "{\"a\":" } },
            { "id": "call_list", "type": "function", "function": { "name": "h", "arguments": "[1]" } },
        ]},
    ])));
    let inputs: Vec<&Value> = body["messages"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["input"])
        .collect();
    assert_eq!(
        inputs,
        [
            &json!({}),
            &json!({ "_raw_arguments": "{\"a\":" }),
            &json!({ "_raw_arguments": "[1]" })
        ]
    );
    let err = rejected(with_messages(json!([
        { "role": "user", "content": "go" },
        { "role": "assistant", "tool_calls": [
            { "id": "call_bad", "type": "function", "function": { "name": "g", "arguments": [1] } },
        ]},
    ])));
    assert!(
        err.message.contains("messages[1].tool_calls[0]") && err.message.contains("call_bad"),
        "{}",
        err.message
    );
    assert!(err.message.contains("JSON object"), "{}", err.message);
    let err = rejected(with_messages(json!([{ "role": "tool", "content": "x" }])));
    assert!(err.message.contains("tool_call_id"), "{}", err.message);
}

#[test]
fn consecutive_same_role_messages_merge() {
    let body = translate(with_messages(json!([
        { "role": "user", "content": "a" },
        { "role": "system", "content": "sys" },
        { "role": "user", "content": "b" },
        { "role": "assistant", "content": "c" },
        { "role": "assistant", "content": "" },
        { "role": "assistant", "content": "d" },
        { "role": "user", "content": "" },
    ])));
    assert_eq!(
        body["messages"],
        json!([
            { "role": "user", "content": [{ "type": "text", "text": "a" }, { "type": "text", "text": "b" }] },
            { "role": "assistant", "content": [{ "type": "text", "text": "c" }, { "type": "text", "text": "d" }] },
        ])
    );
}

#[test]
fn tool_results_open_their_user_message() {
    let body = translate(with_messages(json!([
        { "role": "user", "content": "go" },
        { "role": "assistant", "tool_calls": [{ "id": "c", "type": "function", "function": { "name": "f", "arguments": "{}" } }] },
        { "role": "user", "content": "also this" },
        { "role": "tool", "tool_call_id": "c", "content": "done" },
    ])));
    assert_eq!(
        body["messages"][2]["content"],
        json!([
            { "type": "tool_result", "tool_use_id": "c", "content": "done" },
            { "type": "text", "text": "also this" },
        ])
    );
}

#[test]
fn legacy_functions_and_function_call() {
    let body = translate(json!({
        "model": "m",
        "functions": [{ "name": "lookup", "description": "finds", "parameters": { "type": "object", "properties": { "q": { "type": "string" } } } }],
        "function_call": { "name": "lookup" },
        "messages": [
            { "role": "user", "content": "find x" },
            { "role": "assistant", "content": null, "function_call": { "name": "lookup", "arguments": "{\"q\":\"x\"}" } },
            { "role": "function", "name": "lookup", "content": "found" },
        ],
    }));
    assert_eq!(
        body["tools"],
        json!([{ "name": "lookup", "description": "finds", "input_schema": { "type": "object", "properties": { "q": { "type": "string" } } } }])
    );
    assert_eq!(
        body["tool_choice"],
        json!({ "type": "tool", "name": "lookup" })
    );
    let call = &body["messages"][1]["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["input"], json!({ "q": "x" }));
    assert_eq!(
        body["messages"][2]["content"][0],
        json!({ "type": "tool_result", "tool_use_id": call["id"], "content": "found" })
    );
    let err = rejected(with_messages(
        json!([{ "role": "function", "name": "nope", "content": "x" }]),
    ));
    assert!(err.message.contains("nope"), "{}", err.message);
}

#[test]
fn tools_and_tool_choice() {
    let tools = json!([
        { "type": "function", "function": { "name": "a", "description": "does a", "parameters": { "type": "object", "properties": {} }, "strict": true } },
        { "type": "function", "function": { "name": "b" } },
    ]);
    let translated = |choice: Value, parallel: Value| {
        let mut chat = with_messages(json!([{ "role": "user", "content": "hi" }]));
        chat["tools"] = tools.clone();
        chat["tool_choice"] = choice;
        chat["parallel_tool_calls"] = parallel;
        translate(chat)
    };
    let body = translated(Value::Null, Value::Null);
    assert_eq!(
        body["tools"],
        json!([
            { "name": "a", "description": "does a", "input_schema": { "type": "object", "properties": {} } },
            { "name": "b", "input_schema": { "type": "object", "properties": {} } },
        ])
    );
    assert!(body.get("tool_choice").is_none());
    // Parameters without a `type` get `"type": "object"`, which Anthropic requires; `{}` reads
    // as no parameters, and a schema that has its `type` goes unchanged.
    for (parameters, want) in [
        (json!({}), json!({ "type": "object", "properties": {} })),
        (
            json!({ "properties": { "q": { "type": "string" } }, "required": ["q"] }),
            json!({ "type": "object", "properties": { "q": { "type": "string" } }, "required": ["q"] }),
        ),
        (
            json!({ "type": null, "properties": {} }),
            json!({ "type": "object", "properties": {} }),
        ),
        (
            json!({ "type": "object", "additionalProperties": false }),
            json!({ "type": "object", "additionalProperties": false }),
        ),
    ] {
        let mut chat = with_messages(json!([{ "role": "user", "content": "hi" }]));
        chat["tools"] =
            json!([{ "type": "function", "function": { "name": "c", "parameters": parameters } }]);
        assert_eq!(
            translate(chat)["tools"],
            json!([{ "name": "c", "input_schema": want }]),
            "{parameters}"
        );
    }
    for (choice, want) in [
        (json!("auto"), json!({ "type": "auto" })),
        (json!("none"), json!({ "type": "none" })),
        (json!("required"), json!({ "type": "any" })),
        (
            json!({ "type": "function", "function": { "name": "b" } }),
            json!({ "type": "tool", "name": "b" }),
        ),
    ] {
        assert_eq!(
            translated(choice.clone(), Value::Null)["tool_choice"],
            want,
            "{choice}"
        );
    }
    // allowed_tools: only those are offered, with the mode as the choice.
    for (mode, want) in [("auto", "auto"), ("required", "any")] {
        let choice = json!({ "type": "allowed_tools", "allowed_tools": {
            "mode": mode, "tools": [{ "type": "function", "function": { "name": "b" } }],
        } });
        let body = translated(choice, Value::Null);
        assert_eq!(body["tool_choice"], json!({ "type": want }), "{mode}");
        assert_eq!(
            body["tools"],
            json!([{ "name": "b", "input_schema": { "type": "object", "properties": {} } }]),
            "{mode}"
        );
    }
    let mut chat = with_messages(json!([{ "role": "user", "content": "hi" }]));
    chat["tools"] = tools.clone();
    chat["tool_choice"] =
        json!({ "type": "allowed_tools", "allowed_tools": { "mode": "sometimes", "tools": [] } });
    assert!(super::request(&serde_json::to_vec(&chat).unwrap(), 64).is_err());
    // parallel_tool_calls: false.
    assert_eq!(
        translated(Value::Null, json!(false))["tool_choice"],
        json!({ "type": "auto", "disable_parallel_tool_use": true })
    );
    assert_eq!(
        translated(json!("required"), json!(false))["tool_choice"],
        json!({ "type": "any", "disable_parallel_tool_use": true })
    );
    assert_eq!(
        translated(json!("none"), json!(false))["tool_choice"],
        json!({ "type": "none" })
    );
    assert!(
        translated(json!("auto"), json!(true))["tool_choice"]["disable_parallel_tool_use"]
            .is_null()
    );
    // No tools: no tools and no tool_choice.
    let mut chat = with_messages(json!([{ "role": "user", "content": "hi" }]));
    chat["tool_choice"] = json!("required");
    let body = translate(chat.clone());
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    // Unsupported shapes.
    chat["tools"] = json!([{ "type": "web_search" }]);
    assert!(rejected(chat.clone()).message.contains("tools[0]"));
    chat["tools"] = tools;
    chat["tool_choice"] = json!("sometimes");
    assert!(rejected(chat.clone()).message.contains("tool_choice"));
    chat["tool_choice"] = json!({ "type": "function" });
    assert!(rejected(chat).message.contains("tool_choice"));
}

/// Unset, `max_tokens` is the model's longest answer (OpenAI sets no limit), held to what a
/// request that is not streamed may ask; the configured default for a model the relay does not
/// know.
#[test]
fn max_tokens_from_either_field_or_the_model() {
    let mut chat = with_messages(json!([{ "role": "user", "content": "hi" }]));
    assert_eq!(translate(chat.clone())["max_tokens"], 21_333);
    chat["stream"] = json!(true);
    assert_eq!(translate(chat.clone())["max_tokens"], 64_000);
    chat["model"] = json!("claude-3-haiku-20240307");
    assert_eq!(translate(chat.clone())["max_tokens"], 4_096);
    chat["model"] = json!("claude-opus-4-1");
    assert_eq!(translate(chat.clone())["max_tokens"], 32_000);
    chat["model"] = json!("team-claude");
    assert_eq!(translate(chat.clone())["max_tokens"], 1024);
    chat["max_tokens"] = json!(100);
    assert_eq!(translate(chat.clone())["max_tokens"], 100);
    chat["max_completion_tokens"] = json!(200);
    assert_eq!(translate(chat.clone())["max_tokens"], 200);
    chat["max_completion_tokens"] = Value::Null;
    assert_eq!(translate(chat.clone())["max_tokens"], 100);
    chat["max_tokens"] = json!(0);
    assert!(rejected(chat.clone()).message.contains("max_tokens"));
    chat["max_tokens"] = json!("many");
    rejected(chat);
}

#[test]
fn sampling_and_stop_and_user() {
    let mut chat = with_messages(json!([{ "role": "user", "content": "hi" }]));
    chat["temperature"] = json!(1.6);
    chat["top_p"] = json!(0.9);
    chat["stop"] = json!("END");
    chat["user"] = json!("user-42");
    chat["logprobs"] = json!(false);
    chat["some_future_field"] = json!({ "x": 1 });
    let body = translate(chat.clone());
    assert_eq!(body["temperature"], json!(1.0));
    // Claude refuses both at once: the temperature wins.
    assert!(body.get("top_p").is_none());
    assert_eq!(body["stop_sequences"], json!(["END"]));
    // The user as an opaque id: Anthropic refuses one that looks like an email address.
    let digest = hex::encode(Sha256::digest(b"user-42"));
    assert_eq!(body["metadata"], json!({ "user_id": digest }));
    chat["user"] = json!("alice@example.com");
    let id = translate(chat.clone())["metadata"]["user_id"].clone();
    assert_eq!(id.as_str().unwrap().len(), 64);
    assert!(!id.as_str().unwrap().contains('@'));
    assert!(body.get("some_future_field").is_none() && body.get("logprobs").is_none());
    chat["temperature"] = json!(0.3);
    chat["stop"] = json!(["a", "b"]);
    let body = translate(chat.clone());
    assert_eq!(body["temperature"], json!(0.3));
    assert_eq!(body["stop_sequences"], json!(["a", "b"]));
    chat["temperature"] = json!(-1);
    assert_eq!(translate(chat.clone())["temperature"], json!(0.0));
    chat["stop"] = json!([]);
    assert!(translate(chat.clone()).get("stop_sequences").is_none());
    // Anthropic refuses sequences of whitespace only, which OpenAI takes: left out.
    chat["stop"] = json!(["\n", "END", " ", ""]);
    assert_eq!(translate(chat.clone())["stop_sequences"], json!(["END"]));
    chat["stop"] = json!("\n\n");
    assert!(translate(chat.clone()).get("stop_sequences").is_none());
    chat["stop"] = json!([1]);
    rejected(chat.clone());
    chat["stop"] = Value::Null;
    // top_p alone (or with a null temperature) is kept; a bad one is refused even beside a
    // temperature.
    chat["temperature"] = Value::Null;
    let body = translate(chat.clone());
    assert_eq!(body["top_p"], json!(0.9));
    assert!(body.get("temperature").is_none());
    chat["temperature"] = json!(0.5);
    chat["top_p"] = json!("wide");
    assert!(rejected(chat.clone()).message.contains("top_p"));
    chat["top_p"] = Value::Null;
    chat["temperature"] = json!("hot");
    rejected(chat.clone());
    // Claude Opus 4.7 and later refuse both, whatever their value.
    chat["temperature"] = json!(0);
    chat["top_p"] = json!(1);
    for model in ["claude-opus-4-7", "claude-sonnet-5"] {
        chat["model"] = json!(model);
        let body = translate(chat.clone());
        assert!(
            body.get("temperature").is_none() && body.get("top_p").is_none(),
            "{model}"
        );
    }
    chat["temperature"] = json!("hot");
    rejected(chat);
}

/// A JSON schema asked for becomes Anthropic's structured output where the model takes it;
/// `json_object`, and a schema for an older model, are left out (the model answers in prose).
#[test]
fn response_format_json_schema_becomes_the_output_format() {
    let schema = json!({ "type": "object", "properties": { "n": { "type": "integer" } },
        "required": ["n"], "additionalProperties": false });
    let mut chat = with_messages(json!([{ "role": "user", "content": "count" }]));
    chat["response_format"] = json!({ "type": "json_schema",
        "json_schema": { "name": "count", "strict": true, "schema": schema } });
    assert_eq!(
        translate(chat.clone())["output_config"],
        json!({ "format": { "type": "json_schema", "schema": schema } })
    );
    // A schema Claude refuses (a bound, an open object): left out, as before.
    for refused in [
        json!({ "type": "object", "properties": { "n": { "type": "integer", "minimum": 1 } },
            "required": ["n"], "additionalProperties": false }),
        json!({ "type": "object", "properties": { "n": { "type": "integer" } } }),
        json!({ "type": "object", "properties": { "s": { "type": "string", "pattern": "^a" } },
            "additionalProperties": false }),
    ] {
        let mut asked = chat.clone();
        asked["response_format"]["json_schema"]["schema"] = refused.clone();
        assert!(translate(asked).get("output_config").is_none(), "{refused}");
    }
    // A schema that refers to itself, directly or through its definitions: left out.
    for recursive in [
        json!({ "type": "object", "additionalProperties": false,
            "properties": { "children": { "type": "array", "items": { "$ref": "#" } } } }),
        json!({ "type": "object", "additionalProperties": false,
            "properties": { "root": { "$ref": "#/$defs/node" } },
            "$defs": { "node": { "type": "object", "additionalProperties": false,
                "properties": { "next": { "anyOf": [{ "$ref": "#/$defs/node" }, { "type": "null" }] } } } } }),
        json!({ "type": "object", "additionalProperties": false,
            "properties": { "x": { "$ref": "https://example.com/schema" } } }),
    ] {
        let mut asked = chat.clone();
        asked["response_format"]["json_schema"]["schema"] = recursive.clone();
        assert!(
            translate(asked).get("output_config").is_none(),
            "{recursive}"
        );
    }
    // Nested objects, arrays, unions and references, each closed: taken.
    let nested = json!({ "type": "object", "additionalProperties": false, "required": ["items"],
        "properties": { "items": { "type": "array", "items": { "$ref": "#/$defs/item" } },
            "note": { "anyOf": [{ "type": "string" }, { "type": "null" }] } },
        "$defs": { "item": { "type": "object", "additionalProperties": false,
            "properties": { "kind": { "enum": ["a", "b"], "description": "which" } } } } });
    let mut asked = chat.clone();
    asked["response_format"]["json_schema"]["schema"] = nested.clone();
    assert_eq!(
        translate(asked)["output_config"]["format"]["schema"],
        nested
    );
    chat["model"] = json!("claude-3-5-haiku-latest");
    assert!(translate(chat.clone()).get("output_config").is_none());
    chat["model"] = json!("claude-opus-4-1");
    assert!(translate(chat.clone()).get("output_config").is_none());
    chat["model"] = json!("claude-haiku-4-5");
    chat["response_format"] = json!({ "type": "json_object" });
    assert!(translate(chat.clone()).get("output_config").is_none());
    chat["response_format"] = json!({ "type": "json_schema", "json_schema": { "name": "x" } });
    assert!(rejected(chat).message.contains("json_schema.schema"));
}

#[test]
fn stream_and_include_usage() {
    let mut chat = with_messages(json!([{ "role": "user", "content": "hi" }]));
    let req = request(chat.to_string().as_bytes(), 1).unwrap();
    assert!(!req.stream && !req.include_usage);
    // include_usage means nothing without stream.
    chat["stream_options"] = json!({ "include_usage": true });
    let req = request(chat.to_string().as_bytes(), 1).unwrap();
    assert!(!req.stream && !req.include_usage);
    chat["stream"] = json!(true);
    let req = request(chat.to_string().as_bytes(), 1).unwrap();
    assert!(req.stream && req.include_usage);
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["stream"], true);
    assert!(body.get("stream_options").is_none());
    chat["stream_options"] = json!({ "include_usage": false });
    let req = request(chat.to_string().as_bytes(), 1).unwrap();
    assert!(req.stream && !req.include_usage);
}

#[test]
fn n_above_one_is_refused() {
    let mut chat = with_messages(json!([{ "role": "user", "content": "hi" }]));
    chat["n"] = json!(1);
    translate(chat.clone());
    chat["n"] = json!(3);
    let err = rejected(chat);
    assert!(err.message.contains("`n`"), "{}", err.message);
    assert!(err.message.contains("not supported"), "{}", err.message);
}

#[test]
fn unknown_roles_and_bad_content_are_refused() {
    let err = rejected(with_messages(
        json!([{ "role": "wizard", "content": "hi" }]),
    ));
    assert!(err.message.contains("wizard"));
    let err = rejected(with_messages(json!([{ "content": "hi" }])));
    assert!(err.message.contains("messages[0]"));
    rejected(with_messages(json!([{ "role": "user", "content": 7 }])));
}

/// `reasoning_effort` asks each generation for thinking the way it takes it, and is left out
/// where Claude would refuse the request for it.
#[test]
fn reasoning_effort_becomes_thinking() {
    let mut chat = with_messages(json!([{ "role": "user", "content": "think" }]));
    chat["temperature"] = json!(0.2);
    chat["top_p"] = json!(0.5);
    chat["max_tokens"] = json!(30_000);
    // Up to Claude 4.5: a token budget, under max_tokens; sampling is left out.
    for (effort, budget) in [
        ("minimal", 1024),
        ("low", 4096),
        ("medium", 8192),
        ("high", 24_576),
        ("xhigh", 29_999),
    ] {
        chat["reasoning_effort"] = json!(effort);
        let body = translate(chat.clone());
        assert_eq!(
            body["thinking"],
            json!({ "type": "enabled", "budget_tokens": budget }),
            "{effort}"
        );
        assert!(body.get("temperature").is_none() && body.get("top_p").is_none());
        assert!(body.get("output_config").is_none(), "{effort}");
    }
    // A budget must be at least 1,024 and below max_tokens: without room, no thinking.
    chat["reasoning_effort"] = json!("high");
    chat["max_tokens"] = json!(1024);
    let body = translate(chat.clone());
    assert!(body.get("thinking").is_none());
    assert_eq!(body["temperature"], json!(0.2));
    chat["max_tokens"] = json!(1025);
    assert_eq!(
        translate(chat.clone())["thinking"]["budget_tokens"],
        json!(1024)
    );
    // Without max_tokens (the model's longest non-streamed answer, 21,333), at most half of it:
    // the answer needs room too.
    chat["max_tokens"] = Value::Null;
    assert_eq!(
        translate(chat.clone())["thinking"]["budget_tokens"],
        json!(10_666)
    );
    chat["max_tokens"] = json!(30_000);

    // Claude 4.6 and later: adaptive thinking at an effort, beside a structured output.
    chat["model"] = json!("claude-sonnet-4-6");
    chat["response_format"] = json!({ "type": "json_schema", "json_schema": { "name": "n",
        "schema": { "type": "object", "properties": {}, "additionalProperties": false } } });
    for (model, effort, sent) in [
        ("claude-sonnet-4-6", "minimal", "low"),
        ("claude-sonnet-4-6", "medium", "medium"),
        ("claude-sonnet-4-6", "xhigh", "high"),
        ("claude-opus-4-7", "high", "high"),
        ("claude-opus-4-7", "xhigh", "xhigh"),
    ] {
        chat["model"] = json!(model);
        chat["reasoning_effort"] = json!(effort);
        let body = translate(chat.clone());
        // Opus 4.7 and later send their thinking empty unless asked for a summary.
        let thinking = if model == "claude-opus-4-7" {
            json!({ "type": "adaptive", "display": "summarized" })
        } else {
            json!({ "type": "adaptive" })
        };
        assert_eq!(body["thinking"], thinking, "{model} {effort}");
        assert_eq!(
            body["output_config"]["effort"],
            json!(sent),
            "{model} {effort}"
        );
        assert_eq!(
            body["output_config"]["format"]["type"],
            json!("json_schema")
        );
        assert!(body.get("temperature").is_none() && body.get("top_p").is_none());
    }
    chat["response_format"] = Value::Null;

    // `none`, and models that do not think, ask for nothing.
    for (model, effort) in [
        ("claude-sonnet-4-5", "none"),
        ("claude-opus-4-7", "none"),
        ("claude-3-5-haiku-latest", "high"),
    ] {
        chat["model"] = json!(model);
        chat["reasoning_effort"] = json!(effort);
        let body = translate(chat.clone());
        assert!(body.get("thinking").is_none() && body.get("output_config").is_none());
    }
    chat["model"] = json!("claude-sonnet-4-5");
    chat["reasoning_effort"] = json!("max");
    assert!(rejected(chat.clone()).message.contains("reasoning_effort"));
    chat["reasoning_effort"] = json!(2);
    assert!(rejected(chat.clone()).message.contains("reasoning_effort"));
    chat["reasoning_effort"] = json!("medium");

    // A forced tool, and a tool loop's next turn, go without thinking.
    let tools = json!([{ "type": "function", "function": { "name": "f", "parameters": {} } }]);
    chat["tools"] = tools;
    chat["tool_choice"] = json!("required");
    assert!(translate(chat.clone()).get("thinking").is_none());
    chat["tool_choice"] = json!({ "type": "function", "function": { "name": "f" } });
    assert!(translate(chat.clone()).get("thinking").is_none());
    chat["tool_choice"] = json!("auto");
    assert!(translate(chat.clone()).get("thinking").is_some());
    let call = json!({ "role": "assistant", "content": null, "tool_calls": [{ "id": "c1",
        "type": "function", "function": { "name": "f", "arguments": "{}" } }] });
    let result = json!({ "role": "tool", "tool_call_id": "c1", "content": "42" });
    chat["messages"] = json!([{ "role": "user", "content": "think" }, call, result]);
    let body = translate(chat.clone());
    assert!(body.get("thinking").is_none());
    assert_eq!(body["temperature"], json!(0.2));
    // On a model that thinks adaptively, the effort stays without the thinking.
    chat["model"] = json!("claude-sonnet-4-6");
    let body = translate(chat.clone());
    assert!(body.get("thinking").is_none());
    assert_eq!(body["output_config"], json!({ "effort": "medium" }));
    chat["model"] = json!("claude-sonnet-4-5");
    // Once the loop has ended in an answer, the next question thinks again.
    let answer = json!({ "role": "assistant", "content": "It is 42." });
    let next = json!({ "role": "user", "content": "why?" });
    chat["messages"] =
        json!([{ "role": "user", "content": "think" }, call, result, answer.clone(), next]);
    assert_eq!(
        translate(chat.clone())["thinking"]["type"],
        json!("enabled")
    );
    // An answer begun by the client (a prefill): Claude refuses thinking before it.
    chat["messages"] = json!([{ "role": "user", "content": "think" }, answer]);
    assert!(translate(chat.clone()).get("thinking").is_none());
    chat["messages"] = json!([{ "role": "user", "content": "think" }]);

    // Anthropic's own `thinking` goes as sent, before any effort, under the same rules.
    chat["thinking"] = json!({ "type": "enabled", "budget_tokens": 2000 });
    let body = translate(chat.clone());
    assert_eq!(
        body["thinking"],
        json!({ "type": "enabled", "budget_tokens": 2000 })
    );
    assert!(body.get("temperature").is_none());
    chat["thinking"] = json!({ "type": "disabled" });
    let body = translate(chat.clone());
    assert_eq!(body["thinking"], json!({ "type": "disabled" }));
    assert_eq!(body["temperature"], json!(0.2));
    // Beside an adaptive one, the effort still goes.
    chat["model"] = json!("claude-opus-4-7");
    chat["thinking"] = json!({ "type": "adaptive" });
    let body = translate(chat.clone());
    assert_eq!(body["thinking"], json!({ "type": "adaptive" }));
    assert_eq!(body["output_config"], json!({ "effort": "medium" }));
    chat["thinking"] = json!("on");
    assert!(rejected(chat).message.contains("thinking"));
}
