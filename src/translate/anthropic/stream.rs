//! Anthropic Messages SSE → `chat.completion.chunk` SSE ending with `data: [DONE]`.
//!
//! Each upstream event is translated as soon as the framer completes it, so the client sees
//! text at the pace the model writes it. The mapping:
//!
//! | Anthropic event                          | chat chunk                                       |
//! |------------------------------------------|--------------------------------------------------|
//! | `message_start`                          | `delta {role: assistant, content: ""}`           |
//! | `text_delta` / `thinking_delta`          | `delta.content` / `delta.reasoning_content`      |
//! | `content_block_start` of a `tool_use`    | `delta.tool_calls[{index, id, type, function}]`  |
//! | `input_json_delta`                       | `delta.tool_calls[{index, function.arguments}]`  |
//! | `message_delta` with a `stop_reason`     | empty delta with `finish_reason`                 |
//! | `message_stop` (or the end of the body)  | the usage chunk if asked, then `[DONE]`          |
//! | `error`                                  | `data: {"error": ..}`, and nothing after it      |
//!
//! `index` in `tool_calls` counts tool calls, not content blocks (a text block before the
//! first tool does not shift it).

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{WireError, WireUsage, finish_reason, openai_error};
use crate::stream::sse::{SseEvent, SseFramer};
use crate::translate::Translate;
use crate::translate::chat::Usage;

/// Translates an Anthropic Messages event stream into Chat Completions chunks.
#[derive(Debug)]
pub struct ToChatStream {
    framer: SseFramer,
    state: State,
}

impl ToChatStream {
    /// `client_model` is echoed in every chunk; `include_usage` is the client's
    /// `stream_options.include_usage`; `created_unix` is every chunk's `created`.
    pub fn new(client_model: &str, include_usage: bool, created_unix: i64) -> ToChatStream {
        ToChatStream {
            framer: SseFramer::new(),
            state: State {
                model: client_model.to_owned(),
                created: created_unix,
                include_usage,
                id: None,
                tools: Vec::new(),
                usage: WireUsage::default(),
                finished: false,
                ended: false,
                functions: false,
            },
        }
    }

    /// For a request that declared legacy `functions`: the first call goes out as
    /// `delta.function_call` (the legacy API has one call per answer; later ones are dropped),
    /// and a tool-use stop as `finish_reason: "function_call"`.
    pub fn with_functions(mut self, functions: bool) -> ToChatStream {
        self.state.functions = functions;
        self
    }
}

impl Translate for ToChatStream {
    fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        let ToChatStream { framer, state } = self;
        framer.feed(chunk, |event| state.on_event(event, out));
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.state.ended {
            return;
        }
        // Cut after its stop reason (only `message_stop` missing): the answer is whole.
        if self.state.finished {
            self.state.end(out);
            return;
        }
        // A clean end before the stop reason is a cut upstream: an error chunk and no `[DONE]`,
        // as the Gemini translation does, so that a client does not take a partial answer (a
        // half-written tool call) for a whole one.
        let cut = WireError {
            kind: Some("api_error".to_owned()),
            message: Some("upstream stream ended before the answer was complete".to_owned()),
        };
        write_data(out, &json!({ "error": openai_error(&cut, Some(502)) }));
        self.state.ended = true;
    }
}

#[derive(Debug)]
struct State {
    model: String,
    created: i64,
    include_usage: bool,
    /// `chatcmpl-<message id>`, set by `message_start` (or a stand-in if it never came); the
    /// role chunk has been sent once this is set.
    id: Option<String>,
    /// Tool-use blocks seen so far, in order; a tool call's OpenAI `index` is its position.
    tools: Vec<ToolBlock>,
    usage: WireUsage,
    /// The finish_reason chunk was sent.
    finished: bool,
    /// `[DONE]` or an error event was sent; nothing more goes out.
    ended: bool,
    /// Calls go out as the legacy `function_call` (`ToChatStream::with_functions`).
    functions: bool,
}

#[derive(Debug)]
struct ToolBlock {
    /// The Anthropic content block index.
    block: u64,
    /// Some arguments were sent; if none were, `{}` is sent when the block stops, so that the
    /// client assembles valid JSON for a call without parameters.
    sent_arguments: bool,
}

impl State {
    fn on_event(&mut self, event: SseEvent<'_>, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        let event: Event = match serde_json::from_str(event.data) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "skipping an unreadable Anthropic stream event");
                return;
            }
        };
        match event {
            Event::MessageStart { message } => {
                if let Some(usage) = &message.usage {
                    self.usage.update(usage);
                }
                if self.id.is_none() {
                    self.id = Some(format!("chatcmpl-{}", message.id));
                    self.role_chunk(out);
                }
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => self.block_start(index, content_block, out),
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => self.text(&text, out),
                BlockDelta::ThinkingDelta { thinking } => self.reasoning(&thinking, out),
                BlockDelta::InputJsonDelta { partial_json } => {
                    self.arguments(index, &partial_json, out);
                }
                BlockDelta::Other => {}
            },
            Event::ContentBlockStop { index } => {
                if self
                    .tools
                    .iter()
                    .any(|t| t.block == index && !t.sent_arguments)
                {
                    self.arguments(index, "{}", out);
                }
            }
            Event::MessageDelta { delta, usage } => {
                if let Some(usage) = &usage {
                    self.usage.update(usage);
                }
                if let Some(stop) = delta.stop_reason
                    && !self.finished
                {
                    self.finished = true;
                    let finish = match finish_reason(&stop) {
                        "tool_calls" if self.functions => "function_call",
                        other => other,
                    };
                    self.chunk(out, Delta::default(), Some(finish));
                }
            }
            Event::MessageStop => self.end(out),
            Event::Error { error } => {
                write_data(out, &json!({ "error": openai_error(&error, None) }));
                self.ended = true;
            }
            Event::Ping | Event::Other => {}
        }
    }

    fn block_start(&mut self, index: u64, block: StartBlock, out: &mut BytesMut) {
        match block {
            StartBlock::Text { text } => self.text(&text, out),
            StartBlock::Thinking { thinking } => self.reasoning(&thinking, out),
            StartBlock::ToolUse { id, name, input } => {
                // The legacy API answers one call: the others are not followed.
                if self.functions && !self.tools.is_empty() {
                    return;
                }
                // Streams start tool inputs as `{}` and send them in deltas; a non-empty one
                // is sent whole now.
                let arguments = match &input {
                    Some(Value::Object(o)) if !o.is_empty() => input_string(&input),
                    _ => String::new(),
                };
                let tool_index = self.tools.len();
                self.tools.push(ToolBlock {
                    block: index,
                    sent_arguments: !arguments.is_empty(),
                });
                let call = ToolCallDelta {
                    index: tool_index,
                    id: Some(&id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(&name),
                        arguments: &arguments,
                    },
                };
                let delta = self.call_delta(call);
                self.chunk(out, delta, None);
            }
            StartBlock::Other => {}
        }
    }

    fn text(&mut self, text: &str, out: &mut BytesMut) {
        if !text.is_empty() {
            let delta = Delta {
                content: Some(text),
                ..Delta::default()
            };
            self.chunk(out, delta, None);
        }
    }

    fn reasoning(&mut self, text: &str, out: &mut BytesMut) {
        if !text.is_empty() {
            let delta = Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            };
            self.chunk(out, delta, None);
        }
    }

    fn arguments(&mut self, block: u64, partial: &str, out: &mut BytesMut) {
        let Some(tool_index) = self.tools.iter().position(|t| t.block == block) else {
            return;
        };
        if partial.is_empty() {
            return;
        }
        if let Some(tool) = self.tools.get_mut(tool_index) {
            tool.sent_arguments = true;
        }
        let call = ToolCallDelta {
            index: tool_index,
            id: None,
            kind: None,
            function: FunctionDelta {
                name: None,
                arguments: partial,
            },
        };
        let delta = self.call_delta(call);
        self.chunk(out, delta, None);
    }

    /// A tool call's delta as the client reads it: in `tool_calls`, or as the legacy
    /// `function_call` (which has no index, id or type).
    fn call_delta<'a>(&self, call: ToolCallDelta<'a>) -> Delta<'a> {
        if self.functions {
            Delta {
                function_call: Some(call.function),
                ..Delta::default()
            }
        } else {
            Delta {
                tool_calls: Some([call]),
                ..Delta::default()
            }
        }
    }

    /// The usage chunk if the client asked for it, then `[DONE]`.
    fn end(&mut self, out: &mut BytesMut) {
        if self.include_usage && self.id.is_some() {
            let chunk = Chunk {
                id: self.id.as_deref().unwrap_or_default(),
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: &[],
                usage: Some(Some(self.usage.to_chat())),
            };
            write_data(out, &chunk);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.ended = true;
    }

    /// `delta {role: assistant, content: ""}`, OpenAI's first chunk.
    fn role_chunk(&mut self, out: &mut BytesMut) {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
            ..Delta::default()
        };
        self.chunk(out, delta, None);
    }

    fn chunk(&mut self, out: &mut BytesMut, delta: Delta<'_>, finish: Option<&'static str>) {
        if self.id.is_none() {
            // Content before (or without) message_start: start the chat stream anyway.
            self.id = Some("chatcmpl-switchyard".to_owned());
            self.role_chunk(out);
        }
        let chunk = Chunk {
            id: self.id.as_deref().unwrap_or_default(),
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &[ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: self.include_usage.then_some(None),
        };
        write_data(out, &chunk);
    }
}

fn input_string(input: &Option<Value>) -> String {
    input.as_ref().map(Value::to_string).unwrap_or_default()
}

/// `data: <json>\n\n`. The values written here always serialize; should one not, the event is
/// skipped rather than half-written.
fn write_data(out: &mut BytesMut, value: &impl Serialize) {
    match serde_json::to_vec(value) {
        Ok(json) => {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&json);
            out.extend_from_slice(b"\n\n");
        }
        Err(e) => tracing::warn!(error = %e, "could not encode a chat chunk"),
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless the client asked for usage; then `null` on every chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionDelta<'a>>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// The stream events this translator reads; unknown types and fields are skipped.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: WireError,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    id: String,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Option<Value>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// `signature_delta`, `citations_delta` and newer kinds.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

#[cfg(test)]
mod tests;
