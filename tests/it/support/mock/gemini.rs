//! Gemini `generateContent`, `streamGenerateContent`, `countTokens` and `embedContent`, in the byte format of
//! `tests/fixtures/clients/responses/gemini_*.txt`.
//!
//! A text answer streams one chunk per text delta; intermediate chunks carry
//! `usageMetadata: {promptTokenCount, totalTokenCount}` and the last one `finishReason: STOP` and
//! the full usage. With `alt=sse` each chunk is `data: {…}\r\n\r\n` (CRLF, as Google sends and the
//! fixture has); without it the chunks are a JSON array streamed as `[c0`, `,\r\nc1`, …, `]`.
//! A function-call or image answer is one chunk. Usage: `promptTokenCount = input + cache_read`,
//! `cachedContentTokenCount = cache_read` (when not 0), `thoughtsTokenCount` = the mock's
//! reasoning tokens (at most `output`, when not 0), `candidatesTokenCount = output - thoughts`,
//! `totalTokenCount = prompt + output`.

use bytes::Bytes;
use http::Response;

use super::ErrorParts;
use super::body::Guard;
use super::wire::{J, o};
use super::{
    AnswerOpts, Behavior, Ctx, GeminiOp, MockBody, MockUsage, Shape, TEXT_DELTAS, TOOL_ARGUMENTS,
    Vendor, asks_for_tool, concat, count, error_response, images, play, vendor_json,
};

pub const RESPONSE_ID: &str = "mockresp0001";
/// Chunks before a stall of a text stream (two of its three).
pub const EVENTS_BEFORE_STALL: usize = 2;
/// Models listed by `GET /v1beta/models`: (id, display name, methods).
pub const MODELS: [(&str, &str, &str); 4] = [
    (
        "gemini-2.5-flash",
        "Gemini 2.5 Flash",
        "generateContent countTokens",
    ),
    (
        "gemini-2.5-pro",
        "Gemini 2.5 Pro",
        "generateContent countTokens",
    ),
    (
        "gemini-2.5-flash-image",
        "Gemini 2.5 Flash Image",
        "generateContent countTokens",
    ),
    ("imagen-4.0-generate-001", "Imagen 4", "predict"),
];

/// `code_assist`: answered as the Code Assist API does, each answer wrapped
/// (`{"response": …, "traceId": …}`, [`code_assist_events`]).
pub(super) async fn handle(
    op: GeminiOp,
    model: &str,
    behavior: Behavior,
    ctx: &Ctx,
    guard: Guard,
    code_assist: bool,
) -> Response<MockBody> {
    if behavior.usage().is_none() {
        return error_response(Vendor::Gemini, &behavior, guard);
    }
    let Some(obj) = ctx.json() else {
        let body = error_json(400, "Invalid JSON payload received.", None);
        return vendor_json(Vendor::Gemini, 400, body, guard);
    };
    match op {
        GeminiOp::Predict => return images::imagen(&obj, behavior, guard).await,
        GeminiOp::CountTokens => {
            let render = |u: MockUsage| o! {"totalTokens": u.input}.render();
            return count(Vendor::Gemini, behavior, render, guard).await;
        }
        GeminiOp::Embed => {
            let render = |_| r#"{"embedding":{"values":[0.25,-0.5,0.125]}}"#.to_owned();
            return count(Vendor::Gemini, behavior, render, guard).await;
        }
        GeminiOp::Generate | GeminiOp::Stream => {}
    }
    let Some(contents) = obj.get("contents").filter(|c| c.is_array()) else {
        let body = error_json(
            400,
            "* GenerateContentRequest.contents: contents is not specified",
            None,
        );
        return vendor_json(Vendor::Gemini, 400, body, guard);
    };
    let image = obj
        .get("generationConfig")
        .and_then(|g| g.get("responseModalities"))
        .and_then(|m| m.as_array())
        .is_some_and(|m| {
            m.iter()
                .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("image")))
        });
    let tool = obj
        .get("tools")
        .and_then(|t| t.as_array())
        .and_then(|t| {
            t.iter()
                .find_map(|t| t.get("functionDeclarations")?.get(0)?.get("name")?.as_str())
        })
        .filter(|_| asks_for_tool(Some(contents)))
        .map(str::to_owned);
    let opts = AnswerOpts {
        image,
        tool,
        reasoning: ctx.options.reasoning_tokens,
        ..AnswerOpts::default()
    };
    let usage = behavior.usage().unwrap_or_default();
    let shape = if op == GeminiOp::Generate {
        let body = expected_json_bytes(model, usage, &opts);
        Shape::Sized {
            content_type: "application/json; charset=UTF-8",
            body: if code_assist {
                Bytes::from(code_assist_wrapped(&String::from_utf8_lossy(&body)))
            } else {
                body
            },
        }
    } else {
        let sse = code_assist || ctx.query_param("alt").as_deref() == Some("sse");
        let events = if code_assist {
            code_assist_events(model, usage, &opts)
        } else {
            stream_events(model, usage, &opts, sse)
        };
        Shape::Stream {
            content_type: if sse {
                "text/event-stream"
            } else {
                "application/json; charset=UTF-8"
            },
            before_stall: EVENTS_BEFORE_STALL.min(events.len() - 1),
            events,
        }
    };
    play(&behavior, shape, guard).await
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The google.rpc status name of an HTTP status.
pub fn rpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// `{"error": {"code", "message", "status"[, "details"]}}`
pub fn error_json(code: u16, message: &str, details: Option<J>) -> String {
    let mut fields = vec![
        ("code", J::from(code)),
        ("message", J::from(message)),
        ("status", J::from(rpc_status(code))),
    ];
    if let Some(details) = details {
        fields.push(("details", details));
    }
    o! {"error": J::Obj(fields)}.render()
}

pub(super) fn render_fault(behavior: &Behavior) -> ErrorParts {
    match behavior {
        Behavior::RateLimited { retry_after_secs } => {
            // As Google's free tier answers: the quota exceeded is the model's own.
            let quota = o! {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": J::Arr(vec![o! {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "quotaDimensions": o! {"location": "global", "model": "gemini-2.5-pro"},
                "quotaValue": "5"
            }])};
            let retry = o! {"@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{retry_after_secs}s")};
            let body = error_json(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                Some(J::Arr(vec![quota, retry])),
            );
            (429, body, Vec::new())
        }
        Behavior::VendorError {
            status, message, ..
        } => (*status, error_json(*status, message, None), Vec::new()),
        _ => (
            503,
            error_json(
                503,
                "The model is overloaded. Please try again later.",
                None,
            ),
            Vec::new(),
        ),
    }
}

pub(super) fn auth_error(missing: bool) -> (u16, String) {
    if missing {
        let message = "Method doesn't allow unregistered callers (callers without established \
                       identity). Please use API Key or other form of API consumer identity to call this API.";
        (403, error_json(403, message, None))
    } else {
        let info = o! {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID", "domain": "googleapis.com"};
        let body = error_json(
            400,
            "API key not valid. Please pass a valid API key.",
            Some(J::Arr(vec![info])),
        );
        (400, body)
    }
}

pub(super) fn models_json() -> String {
    let models: Vec<J> = MODELS
        .iter()
        .map(|(id, name, methods)| {
            o! {
                "name": format!("models/{id}"),
                "version": "001",
                "displayName": *name,
                "inputTokenLimit": 1_048_576,
                "outputTokenLimit": 65_536,
                "supportedGenerationMethods": methods.split(' ').collect::<Vec<_>>(),
            }
        })
        .collect();
    o! {"models": models}.render()
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

fn usage_metadata(usage: MockUsage, opts: &AnswerOpts) -> J {
    let prompt = usage.prompt_with_cached();
    let thoughts = opts.reasoning.min(usage.output);
    let candidates = usage.output - thoughts;
    let mut fields = vec![
        ("promptTokenCount", J::from(prompt)),
        ("candidatesTokenCount", J::from(candidates)),
        ("totalTokenCount", J::from(prompt + usage.output)),
    ];
    if usage.cache_read > 0 {
        fields.push(("cachedContentTokenCount", J::from(usage.cache_read)));
    }
    if opts.image {
        let details =
            |modality: &str, n: u64| J::Arr(vec![o! {"modality": modality, "tokenCount": n}]);
        fields.push(("promptTokensDetails", details("TEXT", prompt)));
        fields.push(("candidatesTokensDetails", details("IMAGE", candidates)));
    }
    if thoughts > 0 {
        fields.push(("thoughtsTokenCount", J::from(thoughts)));
    }
    J::Obj(fields)
}

/// The parts of the answer: the whole text, one function call, or one image.
fn answer_parts(opts: &AnswerOpts, text: &str) -> Vec<J> {
    if let Some(name) = &opts.tool {
        vec![o! {"functionCall": o! {"name": name, "args": J::Raw(TOOL_ARGUMENTS.into())}}]
    } else if opts.image {
        vec![o! {"inlineData": o! {"mimeType": "image/png", "data": images::PNG_B64}}]
    } else {
        vec![o! {"text": text}]
    }
}

fn content(parts: Vec<J>) -> J {
    o! {"parts": J::Arr(parts), "role": "model"}
}

/// The JSON text of each streamed chunk.
fn chunks(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Vec<String> {
    let texts: Vec<&str> = if opts.tool.is_some() || opts.image {
        vec![""]
    } else {
        TEXT_DELTAS.to_vec()
    };
    let last = texts.len() - 1;
    let prompt = usage.prompt_with_cached();
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let parts = content(answer_parts(opts, text));
            let (candidate, usage) = if i == last {
                let candidate = o! {"content": parts, "index": 0, "finishReason": "STOP"};
                (candidate, usage_metadata(usage, opts))
            } else {
                let partial = o! {"promptTokenCount": prompt, "totalTokenCount": prompt};
                (o! {"content": parts, "index": 0}, partial)
            };
            o! {"candidates": vec![candidate], "usageMetadata": usage, "modelVersion": model,
            "responseId": RESPONSE_ID}
            .render()
        })
        .collect()
}

/// The frames of a streamed answer: SSE events (`sse`) or pieces of a JSON array.
pub fn stream_events(model: &str, usage: MockUsage, opts: &AnswerOpts, sse: bool) -> Vec<Bytes> {
    let chunks = chunks(model, usage, opts);
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            Bytes::from(if sse {
                format!("data: {c}\r\n\r\n")
            } else {
                let open = if i == 0 { "[" } else { ",\r\n" };
                let close = if i == last { "]" } else { "" };
                format!("{open}{c}{close}")
            })
        })
        .collect()
}

/// The trace id the Code Assist API wraps answers with.
pub const TRACE_ID: &str = "mocktrace0001";

/// One answer as the Code Assist API wraps it.
fn code_assist_wrapped(answer: &str) -> String {
    format!("{{\"response\": {answer}, \"traceId\": \"{TRACE_ID}\"}}")
}

/// A streamed answer as the Code Assist API sends it (`alt=sse`): each chunk wrapped, as an
/// SSE event. Unwrapped, they are [`expected_sse_bytes`]'s.
pub fn code_assist_events(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Vec<Bytes> {
    chunks(model, usage, opts)
        .into_iter()
        .map(|c| Bytes::from(format!("data: {}\r\n\r\n", code_assist_wrapped(&c))))
        .collect()
}

/// The body of `:streamGenerateContent?alt=sse`.
pub fn expected_sse_bytes(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Bytes {
    concat(&stream_events(model, usage, opts, true))
}

/// The body of `:streamGenerateContent` without `alt=sse` (a JSON array).
pub fn expected_array_bytes(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Bytes {
    concat(&stream_events(model, usage, opts, false))
}

/// The body of `:generateContent`.
pub fn expected_json_bytes(model: &str, usage: MockUsage, opts: &AnswerOpts) -> Bytes {
    let parts = content(answer_parts(opts, &TEXT_DELTAS.concat()));
    let candidate = o! {"content": parts, "finishReason": "STOP", "index": 0};
    Bytes::from(
        o! {"candidates": vec![candidate], "usageMetadata": usage_metadata(usage, opts),
        "modelVersion": model, "responseId": RESPONSE_ID}
        .render(),
    )
}
