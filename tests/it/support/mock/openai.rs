//! OpenAI (and Azure OpenAI) chat completions, Responses and embeddings, in the byte format of
//! `tests/fixtures/clients/responses/openai_*.txt`.
//!
//! Chat SSE: `data: {chunk}\n\n` per chunk: a role chunk, one chunk per text delta, a
//! `finish_reason` chunk, then (only when the request had `stream_options.include_usage: true`)
//! a choices-less usage chunk, then `data: [DONE]\n\n`. Responses SSE: `event: NAME\ndata: {…}\n\n`
//! from `response.created` to `response.completed` (whose `response.usage` holds the usage).
//! Usage: `prompt_tokens` / `input_tokens` = `input + cache_read`, `cached_tokens = cache_read`,
//! `completion_tokens` / `output_tokens` = `output`, `reasoning_tokens` = the mock's reasoning
//! tokens (at most `output`).

use bytes::Bytes;
use http::Response;

use super::ErrorParts;
use super::body::Guard;
use super::wire::{J, base64_encode, o};
use super::{
    AnswerOpts, Behavior, CREATED, Ctx, MockBody, MockUsage, OpenAiOp, Shape, TEXT_DELTAS,
    TOOL_ARGUMENT_DELTAS, TOOL_ARGUMENTS, Vendor, asks_for_tool, concat, error_response, images,
    play, vendor_json,
};

pub const CHAT_ID: &str = "chatcmpl-mock0001";
pub const RESPONSE_ID: &str = "resp_mock0001";
/// The id of the message item of a Responses answer.
pub const OUTPUT_ITEM_ID: &str = "msg_mock0001";
/// The id of the function_call item of a Responses tool-call answer.
pub const FUNCTION_ITEM_ID: &str = "fc_mock0001";
/// The `id` / `call_id` of every tool call.
pub const CALL_ID: &str = "call_mock0001";
/// Chunks before a chat stall: role chunk and two deltas (Azure: one more, its filter chunk).
pub const CHAT_EVENTS_BEFORE_STALL: usize = 3;
/// Events before a Responses stall: created, in_progress, output_item.added,
/// content_part.added and two deltas.
pub const RESPONSES_EVENTS_BEFORE_STALL: usize = 6;
/// The vector of every embedding (exact in f32, so its JSON text is stable).
pub const EMBEDDING: [f32; 4] = [0.015625, -0.03125, 0.0625, -0.125];
/// Model ids listed by OpenAI's `GET /v1/models`.
pub const MODELS: [&str; 4] = [
    "gpt-4o-mini",
    "gpt-5",
    "text-embedding-3-small",
    "gpt-image-1",
];

const SSE: &str = "text/event-stream; charset=utf-8";

pub(super) async fn handle(
    op: OpenAiOp,
    azure: Option<String>,
    behavior: Behavior,
    ctx: &Ctx,
    guard: Guard,
) -> Response<MockBody> {
    let vendor = if azure.is_some() {
        Vendor::Azure
    } else {
        Vendor::OpenAi
    };
    if behavior.usage().is_none() {
        return error_response(vendor, &behavior, guard);
    }
    if op == OpenAiOp::StoredResponse {
        if let Some(body) = stored_response(ctx) {
            return vendor_json(vendor, 200, body, guard);
        }
        let message = "No response found with this id.";
        let body = error_json(message, "invalid_request_error", None, None);
        return vendor_json(vendor, 404, body, guard);
    }
    if matches!(op, OpenAiOp::ImagesGenerate | OpenAiOp::ImagesEdit) {
        return images::openai(op, vendor, behavior, ctx, guard).await;
    }
    let bad = |message: &str| error_json(message, "invalid_request_error", None, None);
    let Some(obj) = ctx.json() else {
        let body = bad("We could not parse the JSON body of your request.");
        return vendor_json(vendor, 400, body, guard);
    };
    let Some(model) = obj
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .or(azure)
    else {
        return vendor_json(
            vendor,
            400,
            bad("you must provide a model parameter"),
            guard,
        );
    };
    let usage = behavior.usage().unwrap_or_default();
    let stream = obj.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    if let Some(refusal) = codex_backend_refusal(ctx, &obj, stream) {
        return vendor_json(
            vendor,
            400,
            serde_json::json!({ "detail": refusal }).to_string(),
            guard,
        );
    }
    let mut opts = AnswerOpts {
        azure: vendor == Vendor::Azure,
        reasoning: ctx.options.reasoning_tokens,
        ..AnswerOpts::default()
    };
    let shape = match op {
        OpenAiOp::Chat => {
            opts.include_usage = obj
                .get("stream_options")
                .and_then(|s| s.get("include_usage"))
                .and_then(|b| b.as_bool())
                .unwrap_or(false);
            opts.tool = tool_name(obj.get("tools"), obj.get("messages"));
            if stream {
                let before = CHAT_EVENTS_BEFORE_STALL + usize::from(opts.azure);
                stream_shape(chat_stream_events(&model, usage, &opts), before)
            } else {
                json_shape(expected_chat_json_bytes(&model, usage, &opts))
            }
        }
        OpenAiOp::Responses => {
            if let Some(tag) = &ctx.options.holds_responses {
                match hold_response(ctx, tag, &obj) {
                    Ok(id) => opts.response_id = Some(id),
                    Err(missing) => {
                        let message = format!("Previous response with id '{missing}' not found.");
                        let body = error_json(
                            &message,
                            "invalid_request_error",
                            Some("previous_response_id"),
                            Some("previous_response_not_found"),
                        );
                        return vendor_json(vendor, 400, body, guard);
                    }
                }
            }
            opts.tool = tool_name(obj.get("tools"), obj.get("input"));
            if stream {
                let events = responses_stream_events(&model, usage, &opts);
                stream_shape(events, RESPONSES_EVENTS_BEFORE_STALL)
            } else {
                json_shape(expected_responses_json_bytes(&model, usage, &opts))
            }
        }
        _ => {
            let inputs = match obj.get("input") {
                Some(serde_json::Value::String(_)) => 1,
                Some(serde_json::Value::Array(a)) if a.iter().all(|v| v.is_number()) => 1,
                Some(serde_json::Value::Array(a)) => a.len(),
                _ => 0,
            };
            if inputs == 0 {
                let body = bad("'input' is a required property");
                return vendor_json(vendor, 400, body, guard);
            }
            let b64 = obj.get("encoding_format").and_then(|f| f.as_str()) == Some("base64");
            json_shape(expected_embeddings_bytes(&model, inputs, usage, b64))
        }
    };
    play(&behavior, shape, guard).await
}

/// A mock holding responses: the id of the one this request makes (kept unless it says
/// `store: false`), or the `previous_response_id` it names that is not held.
fn hold_response(
    ctx: &Ctx,
    tag: &str,
    request: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, String> {
    let mut st = super::lock(&ctx.shared);
    if let Some(previous) = request.get("previous_response_id").and_then(|p| p.as_str())
        && !st.held_responses.contains(previous)
    {
        return Err(previous.to_owned());
    }
    st.responses_made += 1;
    let id = format!("resp_{tag}_{}", st.responses_made);
    if request.get("store") != Some(&serde_json::Value::Bool(false)) {
        st.held_responses.insert(id.clone());
    }
    Ok(id)
}

/// A mock holding responses: its answer on a stored response's path (`/v1/responses/{id}[/…]`)
/// when it holds that response. GET: the response; DELETE: deleted (no longer held); the other
/// paths: the response's id and object.
fn stored_response(ctx: &Ctx) -> Option<String> {
    ctx.options.holds_responses.as_ref()?;
    let rest = ctx.path.strip_prefix("/v1/responses/")?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let mut st = super::lock(&ctx.shared);
    if !st.held_responses.contains(id) {
        return None;
    }
    let body = match (&ctx.method, tail) {
        (&http::Method::GET, "") => {
            let opts = AnswerOpts {
                response_id: Some(id.to_owned()),
                ..AnswerOpts::default()
            };
            let usage = MockUsage::new(10, 7);
            return Some(response_object("gpt-5", Some((usage, 0)), &opts).render());
        }
        (&http::Method::DELETE, "") => {
            st.held_responses.remove(id);
            o! {"id": id, "object": "response.deleted", "deleted": true}
        }
        _ => o! {"id": id, "object": "response"},
    };
    Some(body.render())
}

fn stream_shape(events: Vec<Bytes>, before_stall: usize) -> Shape {
    let before_stall = before_stall.min(events.len().saturating_sub(1));
    Shape::Stream {
        content_type: SSE,
        events,
        before_stall,
    }
}

fn json_shape(body: Bytes) -> Shape {
    Shape::Sized {
        content_type: "application/json",
        body,
    }
}

/// The first tool's name, when tools are offered and the last message asks for one.
fn tool_name(
    tools: Option<&serde_json::Value>,
    messages: Option<&serde_json::Value>,
) -> Option<String> {
    let first = tools?.as_array()?.first()?;
    let name = first
        .get("function")
        .and_then(|f| f.get("name"))
        .or_else(|| first.get("name"))?
        .as_str()?;
    asks_for_tool(messages).then(|| name.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// `{"error": {"message", "type", "param", "code"}}`
pub fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> String {
    o! {"error": o! {"message": message, "type": kind, "param": param, "code": code}}.render()
}

/// Azure's `{"error": {"code", "message"}}`.
pub fn azure_error_json(code: &str, message: &str) -> String {
    o! {"error": o! {"code": code, "message": message}}.render()
}

/// A Go-style duration as in `x-ratelimit-reset-*`: `7s`, `1m30s`, `2h0m0s`.
pub fn reset_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

pub(super) fn render_fault(behavior: &Behavior, azure: bool) -> ErrorParts {
    match (behavior, azure) {
        (
            Behavior::RateLimited {
                retry_after_secs: n,
            },
            false,
        ) => (
            429,
            error_json(
                &format!(
                    "Rate limit reached for gpt-4o in organization org-mock on requests per min \
                     (RPM): Limit 500, Used 500, Requested 1. Please try again in {n}s."
                ),
                "requests",
                None,
                Some("rate_limit_exceeded"),
            ),
            vec![
                ("retry-after".into(), n.to_string()),
                ("x-ratelimit-limit-requests".into(), "500".into()),
                ("x-ratelimit-remaining-requests".into(), "0".into()),
                ("x-ratelimit-reset-requests".into(), reset_duration(*n)),
                ("x-ratelimit-limit-tokens".into(), "200000".into()),
                ("x-ratelimit-remaining-tokens".into(), "200000".into()),
                ("x-ratelimit-reset-tokens".into(), "0s".into()),
            ],
        ),
        (
            Behavior::RateLimited {
                retry_after_secs: n,
            },
            true,
        ) => (
            429,
            azure_error_json(
                "429",
                &format!(
                    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API have \
                     exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry \
                     after {n} seconds."
                ),
            ),
            vec![
                ("retry-after".into(), n.to_string()),
                ("retry-after-ms".into(), (n * 1000).to_string()),
                ("x-ratelimit-remaining-requests".into(), "0".into()),
            ],
        ),
        (
            Behavior::VendorError {
                status, message, ..
            },
            true,
        ) => (
            *status,
            azure_error_json(&status.to_string(), message),
            Vec::new(),
        ),
        (
            Behavior::VendorError {
                status,
                kind,
                message,
            },
            false,
        ) => {
            let (kind, code) = match kind.as_str() {
                "rate_limit_error" => ("requests", Some("rate_limit_exceeded")),
                "authentication_error" => ("invalid_request_error", Some("invalid_api_key")),
                "not_found_error" => ("invalid_request_error", Some("model_not_found")),
                "api_error" | "overloaded_error" => ("server_error", None),
                "permission_error" | "request_too_large" => ("invalid_request_error", None),
                other => (other, None),
            };
            (*status, error_json(message, kind, None, code), Vec::new())
        }
        (_, true) => (
            503,
            azure_error_json(
                "503",
                "The service is temporarily overloaded. Please try again later.",
            ),
            Vec::new(),
        ),
        (_, false) => (
            503,
            error_json(
                "The server is overloaded or not ready yet.",
                "server_error",
                None,
                None,
            ),
            Vec::new(),
        ),
    }
}

pub(super) fn auth_error(azure: bool, missing: bool) -> (u16, String) {
    let body = match (azure, missing) {
        (true, _) => azure_error_json(
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to \
             provide a valid key for an active subscription and use a correct regional API \
             endpoint for your resource.",
        ),
        (false, true) => error_json(
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
            None,
            None,
        ),
        (false, false) => error_json(
            "Incorrect API key provided.",
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
    };
    (401, body)
}

pub(super) fn azure_missing_api_version() -> (u16, String) {
    let body = azure_error_json(
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
    );
    (400, body)
}

pub(super) fn not_found(azure: bool, path: &str) -> String {
    if azure {
        azure_error_json("404", "Resource not found")
    } else {
        error_json(
            &format!("Invalid URL (POST {path})"),
            "invalid_request_error",
            None,
            None,
        )
    }
}

pub(super) fn models_json() -> String {
    let data: Vec<J> = MODELS
        .iter()
        .map(|id| o! {"id": *id, "object": "model", "created": CREATED, "owned_by": "system"})
        .collect();
    o! {"object": "list", "data": data}.render()
}

// ---------------------------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------------------------

fn sse_data(json: String) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

fn chat_usage(usage: MockUsage, reasoning: u64) -> J {
    let prompt = usage.prompt_with_cached();
    o! {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": o! {"cached_tokens": usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": o! {
            "reasoning_tokens": reasoning.min(usage.output),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
}

fn chunk(model: &str, choices: Vec<J>, usage: Option<J>) -> Bytes {
    let mut fields = vec![
        ("id", J::from(CHAT_ID)),
        ("object", J::from("chat.completion.chunk")),
        ("created", J::from(CREATED)),
        ("model", J::from(model)),
        ("system_fingerprint", J::Null),
        ("choices", J::Arr(choices)),
    ];
    if let Some(usage) = usage {
        fields.push(("usage", usage));
    }
    sse_data(J::Obj(fields).render())
}

fn choice(delta: J, finish: Option<&str>) -> Vec<J> {
    vec![o! {"index": 0, "delta": delta, "finish_reason": finish}]
}

fn prompt_filter_results() -> J {
    J::Arr(vec![
        o! {"prompt_index": 0, "content_filter_results": o! {}},
    ])
}

/// The chunks of a streamed chat answer, one `Bytes` per `data:` event, `[DONE]` included.
pub fn chat_stream_events(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Vec<Bytes> {
    let mut events = Vec::new();
    if opts.azure {
        events.push(sse_data(
            o! {"choices": J::Arr(Vec::new()), "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": prompt_filter_results()}
            .render(),
        ));
    }
    let finish = match &opts.tool {
        Some(name) => {
            let call = o! {"index": 0, "id": CALL_ID, "type": "function",
            "function": o! {"name": name, "arguments": ""}};
            let delta = o! {"role": "assistant", "content": J::Null, "tool_calls": vec![call]};
            events.push(chunk(model, choice(delta, None), None));
            for args in TOOL_ARGUMENT_DELTAS {
                let call = o! {"index": 0, "function": o! {"arguments": args}};
                events.push(chunk(
                    model,
                    choice(o! {"tool_calls": vec![call]}, None),
                    None,
                ));
            }
            "tool_calls"
        }
        None => {
            let delta = o! {"role": "assistant", "content": ""};
            events.push(chunk(model, choice(delta, None), None));
            for text in TEXT_DELTAS {
                events.push(chunk(model, choice(o! {"content": text}, None), None));
            }
            "stop"
        }
    };
    events.push(chunk(model, choice(o! {}, Some(finish)), None));
    if opts.include_usage {
        let usage = chat_usage(usage, opts.reasoning);
        events.push(chunk(model, Vec::new(), Some(usage)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

pub fn expected_chat_stream_bytes(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Bytes {
    concat(&chat_stream_events(model, usage, opts))
}

/// The body of a non-streamed chat answer.
pub fn expected_chat_json_bytes(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Bytes {
    let (message, finish) = match &opts.tool {
        Some(name) => {
            let call = o! {"id": CALL_ID, "type": "function",
            "function": o! {"name": name, "arguments": TOOL_ARGUMENTS}};
            let message = o! {"role": "assistant", "content": J::Null, "tool_calls": vec![call],
            "refusal": J::Null};
            (message, "tool_calls")
        }
        None => {
            let message =
                o! {"role": "assistant", "content": TEXT_DELTAS.concat(), "refusal": J::Null};
            (message, "stop")
        }
    };
    let mut fields = vec![
        ("id", J::from(CHAT_ID)),
        ("object", J::from("chat.completion")),
        ("created", J::from(CREATED)),
        ("model", J::from(model)),
        (
            "choices",
            J::Arr(vec![
                o! {"index": 0, "message": message, "logprobs": J::Null, "finish_reason": finish},
            ]),
        ),
        ("usage", chat_usage(usage, opts.reasoning)),
        ("system_fingerprint", J::Null),
    ];
    if opts.azure {
        fields.push(("prompt_filter_results", prompt_filter_results()));
    }
    Bytes::from(J::Obj(fields).render())
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn sse_event(name: &str, json: J) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {}\n\n", json.render()))
}

fn responses_usage(usage: MockUsage, reasoning: u64) -> J {
    let input = usage.prompt_with_cached();
    o! {
        "input_tokens": input,
        "input_tokens_details": o! {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output,
        "output_tokens_details": o! {"reasoning_tokens": reasoning.min(usage.output)},
        "total_tokens": input + usage.output,
    }
}

/// The output item, in progress (empty) or completed.
fn output_item(opts: &AnswerOpts, done: bool) -> J {
    let status = if done { "completed" } else { "in_progress" };
    match &opts.tool {
        Some(name) => o! {"id": FUNCTION_ITEM_ID, "type": "function_call", "status": status,
        "call_id": CALL_ID, "name": name, "arguments": if done { TOOL_ARGUMENTS } else { "" }},
        None => {
            let content = if done {
                vec![text_part(&TEXT_DELTAS.concat())]
            } else {
                Vec::new()
            };
            o! {"id": OUTPUT_ITEM_ID, "type": "message", "status": status, "role": "assistant",
            "content": J::Arr(content)}
        }
    }
}

fn text_part(text: &str) -> J {
    o! {"type": "output_text", "text": text, "annotations": J::Arr(Vec::new())}
}

/// The response object; `usage` only once completed.
fn response_object(model: &str, usage: Option<(MockUsage, u64)>, opts: &AnswerOpts) -> J {
    let done = usage.is_some();
    let output = if done {
        vec![output_item(opts, true)]
    } else {
        Vec::new()
    };
    o! {
        "id": opts.response_id.as_deref().unwrap_or(RESPONSE_ID),
        "object": "response",
        "created_at": CREATED,
        "status": if done { "completed" } else { "in_progress" },
        "model": model,
        "output": J::Arr(output),
        "usage": usage.map(|(u, r)| responses_usage(u, r)),
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": J::Arr(Vec::new()),
        "error": J::Null,
        "incomplete_details": J::Null,
        "instructions": J::Null,
        "metadata": o! {},
        "temperature": J::Raw("1.0".into()),
        "top_p": J::Raw("1.0".into()),
        "text": o! {"format": o! {"type": "text"}},
    }
}

/// The events of a streamed Responses answer (text, or a function call with `opts.tool`).
pub fn responses_stream_events(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Vec<Bytes> {
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut push = |name: &str, fields: Vec<(&'static str, J)>| {
        let mut all = vec![("type", J::from(name)), ("sequence_number", J::from(seq))];
        all.extend(fields);
        events.push(sse_event(name, J::Obj(all)));
        seq += 1;
    };
    push(
        "response.created",
        vec![("response", response_object(model, None, opts))],
    );
    push(
        "response.in_progress",
        vec![("response", response_object(model, None, opts))],
    );
    push(
        "response.output_item.added",
        vec![
            ("output_index", J::from(0)),
            ("item", output_item(opts, false)),
        ],
    );
    if opts.tool.is_some() {
        let at = || {
            vec![
                ("item_id", J::from(FUNCTION_ITEM_ID)),
                ("output_index", J::from(0)),
            ]
        };
        for delta in TOOL_ARGUMENT_DELTAS {
            let mut f = at();
            f.push(("delta", J::from(delta)));
            push("response.function_call_arguments.delta", f);
        }
        let mut f = at();
        f.push(("arguments", J::from(TOOL_ARGUMENTS)));
        push("response.function_call_arguments.done", f);
    } else {
        let at = || {
            vec![
                ("item_id", J::from(OUTPUT_ITEM_ID)),
                ("output_index", J::from(0)),
                ("content_index", J::from(0)),
            ]
        };
        let full = TEXT_DELTAS.concat();
        let mut f = at();
        f.push(("part", text_part("")));
        push("response.content_part.added", f);
        for delta in TEXT_DELTAS {
            let mut f = at();
            f.push(("delta", J::from(delta)));
            push("response.output_text.delta", f);
        }
        let mut f = at();
        f.push(("text", J::from(&full)));
        push("response.output_text.done", f);
        let mut f = at();
        f.push(("part", text_part(&full)));
        push("response.content_part.done", f);
    }
    push(
        "response.output_item.done",
        vec![
            ("output_index", J::from(0)),
            ("item", output_item(opts, true)),
        ],
    );
    let done = response_object(model, Some((usage, opts.reasoning)), opts);
    push("response.completed", vec![("response", done)]);
    events
}

pub fn expected_responses_stream_bytes(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Bytes {
    concat(&responses_stream_events(model, usage, opts))
}

/// The body of a non-streamed Responses answer: the completed response object.
pub fn expected_responses_json_bytes(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Bytes {
    Bytes::from(response_object(model, Some((usage, opts.reasoning)), opts).render())
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

/// `inputs` embeddings of [`EMBEDDING`] (as base64 of little-endian f32 with `base64`);
/// `prompt_tokens = total_tokens = input + cache_read`.
pub fn expected_embeddings_bytes(
    model: &str,
    inputs: usize,
    usage: MockUsage,
    base64: bool,
) -> Bytes {
    let vector = if base64 {
        let bytes: Vec<u8> = EMBEDDING.iter().flat_map(|f| f.to_le_bytes()).collect();
        J::from(base64_encode(&bytes))
    } else {
        J::from(EMBEDDING.to_vec())
    };
    let data: Vec<J> = (0..inputs)
        .map(|i| o! {"object": "embedding", "index": i, "embedding": J::Raw(vector.render())})
        .collect();
    let tokens = usage.prompt_with_cached();
    let usage = o! {"prompt_tokens": tokens, "total_tokens": tokens};
    Bytes::from(o! {"object": "list", "data": data, "model": model, "usage": usage}.render())
}

/// What ChatGPT's Codex backend refuses (on its path only): a request without the ChatGPT
/// account, or one asking it to keep the response, or (but a compaction) not to stream.
fn codex_backend_refusal(
    ctx: &Ctx,
    obj: &serde_json::Map<String, serde_json::Value>,
    stream: bool,
) -> Option<&'static str> {
    let path = ctx.path.strip_prefix("/backend-api/codex/")?;
    if ctx.headers.get("chatgpt-account-id").is_none() {
        return Some("Missing chatgpt-account-id");
    }
    // A compaction's body (Codex CLI's) says neither.
    if path != "responses" {
        return None;
    }
    if obj.get("store").and_then(|s| s.as_bool()) != Some(false) {
        return Some("Store must be set to false");
    }
    if !stream {
        return Some("Stream must be set to true");
    }
    None
}
