//! A Gemini `alt=sse` stream → OpenAI `chat.completion.chunk` events.
//!
//! Each Gemini event is a whole `GenerateContentResponse` carrying the next piece of text or
//! whole function calls, so each one becomes its OpenAI chunks as soon as its blank line
//! arrives. The sequence per choice is OpenAI's: a role chunk, content and tool-call deltas, a
//! chunk with an empty delta and the finish reason; then, once the upstream ends, a usage chunk
//! if the client asked for one, and `data: [DONE]`.

use std::collections::BTreeMap;

use bytes::BytesMut;
use serde::Serialize;

use super::openai_error;
use super::wire::{GenResponse, Part, UsageMetadata, failed_finish, finish_reason, write_json};
use crate::stream::sse::SseFramer;
use crate::translate::Translate;
use crate::translate::chat::{ToolCall, Usage};

/// Translates the stream event by event.
pub struct ToChatStream {
    framer: SseFramer,
    state: State,
}

struct State {
    client_model: String,
    include_usage: bool,
    created: i64,
    /// `chatcmpl-` and the upstream's `responseId`, fixed by the first event.
    id: Option<String>,
    /// Per choice index; a map so that a bogus index costs nothing.
    choices: BTreeMap<usize, ChoiceState>,
    /// The latest `usageMetadata`: Gemini repeats it, cumulative, on every event.
    usage: Option<UsageMetadata>,
    /// An error event was passed on: the stream is over for the client.
    failed: bool,
}

#[derive(Default)]
struct ChoiceState {
    /// Tool calls sent so far, the next one's `index`.
    tool_calls: usize,
    finished: bool,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    /// Absent without `include_usage`; `null` on every chunk but the usage chunk with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCall>>,
}

impl ToChatStream {
    /// `client_model` is echoed as `model`; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(client_model: &str, include_usage: bool, created_unix: i64) -> Self {
        ToChatStream {
            framer: SseFramer::new(),
            state: State {
                client_model: client_model.to_owned(),
                include_usage,
                created: created_unix,
                id: None,
                choices: BTreeMap::new(),
                usage: None,
                failed: false,
            },
        }
    }
}

impl Translate for ToChatStream {
    fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        let state = &mut self.state;
        self.framer.feed(chunk, |ev| state.on_event(ev.data, out));
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.state.finish(out);
    }
}

impl State {
    fn on_event(&mut self, data: &str, out: &mut BytesMut) {
        if self.failed {
            return;
        }
        let response: GenResponse = match serde_json::from_str(data) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a Gemini stream event that does not parse");
                return;
            }
        };
        if let Some(error) = &response.error {
            self.fail(out, &openai_error(error.code.unwrap_or(500), error));
            return;
        }
        if self.id.is_none() {
            self.id = Some(match response.response_id.as_deref() {
                Some(rid) if !rid.is_empty() => format!("chatcmpl-{rid}"),
                _ => crate::auth::new_id("chatcmpl").replacen('_', "-", 1),
            });
        }
        if let Some(usage) = response.usage_metadata {
            self.usage = Some(usage);
        }
        if response.prompt_blocked() {
            self.start(0, out);
            self.end_choice(0, "content_filter", out);
        }
        for (position, candidate) in response.candidates.iter().enumerate() {
            let index = candidate.choice_index(position);
            self.start(index, out);
            // Runs of text parts become one content delta, runs of calls one tool-call delta,
            // keeping the order the model produced them in.
            let mut text = String::new();
            let mut calls = Vec::new();
            for part in candidate.parts() {
                if let Some(t) = part.answer_text() {
                    self.flush_calls(index, &mut calls, out);
                    text.push_str(t);
                }
                if part.function_call.is_some() {
                    self.flush_text(index, &mut text, out);
                    calls.push(part);
                }
            }
            self.flush_text(index, &mut text, out);
            self.flush_calls(index, &mut calls, out);
            if let Some(reason) = &candidate.finish_reason {
                if failed_finish(reason) {
                    let error = super::GeminiError::internal(format!(
                        "the model's answer failed: {reason}"
                    ));
                    self.fail(out, &openai_error(502, &error));
                    return;
                }
                let has_calls = self.choices.get(&index).is_some_and(|c| c.tool_calls > 0);
                self.end_choice(index, finish_reason(reason, has_calls), out);
            }
        }
    }

    /// The role chunk, the first time a choice appears.
    fn start(&mut self, index: usize, out: &mut BytesMut) {
        if self.choices.contains_key(&index) {
            return;
        }
        self.choices.insert(index, ChoiceState::default());
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
            tool_calls: None,
        };
        self.emit(index, delta, None, out);
    }

    fn flush_text(&mut self, index: usize, text: &mut String, out: &mut BytesMut) {
        if text.is_empty() {
            return;
        }
        let delta = Delta {
            content: Some(text),
            ..Delta::default()
        };
        self.emit(index, delta, None, out);
        text.clear();
    }

    fn flush_calls(&mut self, index: usize, calls: &mut Vec<&Part>, out: &mut BytesMut) {
        if calls.is_empty() {
            return;
        }
        let choice = self.choices.entry(index).or_default();
        let mut tool_calls = Vec::with_capacity(calls.len());
        for call in calls.drain(..).filter_map(|p| p.function_call.as_ref()) {
            tool_calls.push(ToolCall::from_gemini(call, Some(choice.tool_calls)));
            choice.tool_calls += 1;
        }
        let delta = Delta {
            tool_calls: Some(tool_calls),
            ..Delta::default()
        };
        self.emit(index, delta, None, out);
    }

    fn end_choice(&mut self, index: usize, reason: &'static str, out: &mut BytesMut) {
        let choice = self.choices.entry(index).or_default();
        if choice.finished {
            return;
        }
        choice.finished = true;
        self.emit(index, Delta::default(), Some(reason), out);
    }

    fn emit(
        &mut self,
        index: usize,
        delta: Delta<'_>,
        finish: Option<&'static str>,
        out: &mut BytesMut,
    ) {
        let choice = ChunkChoice {
            index,
            delta,
            logprobs: None,
            finish_reason: finish,
        };
        let usage = self.include_usage.then_some(None);
        self.write_chunk(vec![choice], usage, out);
    }

    fn write_chunk(
        &mut self,
        choices: Vec<ChunkChoice<'_>>,
        usage: Option<Option<Usage>>,
        out: &mut BytesMut,
    ) {
        let id = self
            .id
            .get_or_insert_with(|| crate::auth::new_id("chatcmpl").replacen('_', "-", 1));
        let chunk = Chunk {
            id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.client_model,
            choices,
            usage,
        };
        out.extend_from_slice(b"data: ");
        write_json(out, &chunk);
        out.extend_from_slice(b"\n\n");
    }

    /// Passes an error on as OpenAI does mid-stream, and ends the stream there.
    fn fail(&mut self, out: &mut BytesMut, error: &serde_json::Value) {
        out.extend_from_slice(b"data: ");
        write_json(out, error);
        out.extend_from_slice(b"\n\n");
        self.failed = true;
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.failed {
            return;
        }
        if !self.choices.values().any(|c| c.finished) {
            // A clean end without a finish reason is a cut upstream: say so rather than let
            // the client take a partial answer for a whole one.
            let error = super::GeminiError::internal(
                "upstream stream ended before the answer was complete",
            );
            self.fail(out, &openai_error(502, &error));
            return;
        }
        if self.include_usage {
            let usage = Usage::from_gemini(&self.usage.unwrap_or_default());
            self.write_chunk(Vec::new(), Some(Some(usage)), out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::fixture;
    use serde_json::{Value, json};

    fn run(include_usage: bool, chunks: &[&[u8]]) -> Vec<u8> {
        let mut t = ToChatStream::new("my-model", include_usage, 1_700_000_000);
        let mut out = BytesMut::new();
        for c in chunks {
            t.feed(c, &mut out);
        }
        t.finish(&mut out);
        out.to_vec()
    }

    /// The `data:` payloads of an SSE body, in order (`[DONE]` as a string).
    fn events(raw: &[u8]) -> Vec<Value> {
        let mut framer = SseFramer::new();
        let mut events = Vec::new();
        framer.feed(raw, |ev| {
            events.push(if ev.data == "[DONE]" {
                Value::from("[DONE]")
            } else {
                serde_json::from_str(ev.data).unwrap()
            })
        });
        events
    }

    /// What a client assembles from chunks: content, tool calls by index (name, parsed
    /// arguments), finish reason, usage.
    #[derive(Debug, PartialEq)]
    struct Assembled {
        content: String,
        calls: Vec<(String, Value)>,
        finish: Option<String>,
        usage: Option<Value>,
        done: bool,
    }

    fn assemble(events: &[Value]) -> Assembled {
        let mut a = Assembled {
            content: String::new(),
            calls: Vec::new(),
            finish: None,
            usage: None,
            done: false,
        };
        let mut raw_args: Vec<String> = Vec::new();
        for ev in events {
            if ev == "[DONE]" {
                a.done = true;
                continue;
            }
            assert_eq!(ev["object"], "chat.completion.chunk");
            if let Some(u) = ev.get("usage").filter(|u| !u.is_null()) {
                assert_eq!(ev["choices"], json!([]));
                a.usage = Some(u.clone());
            }
            for choice in ev["choices"].as_array().unwrap() {
                let delta = &choice["delta"];
                if let Some(t) = delta["content"].as_str() {
                    a.content.push_str(t);
                }
                for call in delta["tool_calls"].as_array().into_iter().flatten() {
                    let i = call["index"].as_u64().unwrap() as usize;
                    if i == a.calls.len() {
                        a.calls.push((String::new(), Value::Null));
                        raw_args.push(String::new());
                    }
                    if let Some(name) = call["function"]["name"].as_str() {
                        a.calls[i].0 = name.to_owned();
                    }
                    raw_args[i].push_str(call["function"]["arguments"].as_str().unwrap());
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    a.finish = Some(f.to_owned());
                }
            }
        }
        for (call, args) in a.calls.iter_mut().zip(raw_args) {
            call.1 = serde_json::from_str(&args).unwrap();
        }
        a
    }

    #[test]
    fn fixture_stream_matches_what_openai_sends() {
        let raw = fixture("gemini_stream_sse.txt");
        let ours = events(&run(true, &[&raw]));
        let openai = events(&fixture("openai_chat_stream.txt"));
        let (a, b) = (assemble(&ours), assemble(&openai));
        assert_eq!(a.content, "Hi! This is the mock upstream.");
        assert_eq!(a.content, b.content);
        assert_eq!(a.finish, b.finish);
        assert!(a.done && b.done);
        assert_eq!(
            a.usage.unwrap(),
            json!({
                "prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16,
                "prompt_tokens_details": { "cached_tokens": 0 },
                "completion_tokens_details": { "reasoning_tokens": 0 },
            })
        );
        // Same sequence of chunk kinds as OpenAI: role, two contents, finish, usage, [DONE].
        assert_eq!(ours.len(), openai.len());
        assert_eq!(
            ours[0]["choices"][0]["delta"],
            json!({ "role": "assistant", "content": "" })
        );
        assert_eq!(ours[3]["choices"][0]["delta"], json!({}));
        for ev in &ours[..ours.len() - 1] {
            assert_eq!(ev["id"], "chatcmpl-mock7ee38f4fe72b");
            assert_eq!(ev["model"], "my-model");
            assert_eq!(ev["created"], 1_700_000_000);
            assert!(
                ev.get("usage").is_some(),
                "include_usage: usage on every chunk"
            );
        }
        for ev in &ours[..4] {
            assert_eq!(ev["usage"], Value::Null);
            assert_eq!(ev["choices"][0]["logprobs"], Value::Null);
            assert_eq!(ev["choices"][0]["index"], 0);
        }
        assert_eq!(ours[2]["choices"][0]["finish_reason"], Value::Null);
    }

    #[test]
    fn no_usage_unless_asked() {
        let out = run(false, &[&fixture("gemini_stream_sse.txt")]);
        let evs = events(&out);
        assert_eq!(evs.len(), 5, "role, two contents, finish, [DONE]");
        for ev in &evs[..4] {
            assert!(ev.get("usage").is_none(), "{ev}");
        }
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let a = assemble(&evs);
        assert_eq!(a.usage, None);
        assert_eq!(a.finish.as_deref(), Some("stop"));
    }

    /// A function-calling stream in Gemini's shape, ids given so the output is deterministic.
    fn tool_stream() -> Vec<u8> {
        let events = [
            json!({ "candidates": [{ "content": { "role": "model", "parts": [
                { "text": "thinking", "thought": true },
                { "text": "Running it." },
            ]}}], "responseId": "r1" }),
            json!({ "candidates": [{ "content": { "role": "model", "parts": [
                { "functionCall": { "id": "fc_1", "name": "run", "args": { "command": "echo mock-tool-ok" } }, "thoughtSignature": "sig" },
                { "functionCall": { "id": "fc_2", "name": "noop" } },
            ]}}], "responseId": "r1" }),
            json!({ "candidates": [{ "content": { "role": "model", "parts": [
                { "functionCall": { "id": "fc_3", "name": "last", "args": {} } },
            ]}, "finishReason": "STOP" }],
              "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 3, "thoughtsTokenCount": 4, "totalTokenCount": 17 },
              "responseId": "r1" }),
        ];
        let mut raw = Vec::new();
        for ev in events {
            raw.extend_from_slice(format!("data: {ev}\r\n\r\n").as_bytes());
        }
        raw
    }

    #[test]
    fn tool_calls() {
        let evs = events(&run(true, &[&tool_stream()]));
        let a = assemble(&evs);
        assert_eq!(a.content, "Running it.");
        assert_eq!(a.finish.as_deref(), Some("tool_calls"));
        assert_eq!(
            a.calls,
            [
                ("run".to_owned(), json!({ "command": "echo mock-tool-ok" })),
                ("noop".to_owned(), json!({})),
                ("last".to_owned(), json!({})),
            ]
        );
        // The same calls a client assembles from OpenAI's own stream of this tool call.
        let openai = assemble(&events(&fixture("openai_chat_stream_tool_calls.txt")));
        assert_eq!(openai.calls[0], a.calls[0]);
        assert_eq!(openai.finish, a.finish);
        // Whole calls: one delta with both calls of the second event, then the third.
        let call_chunks: Vec<&Value> = evs
            .iter()
            .filter(|e| e["choices"][0]["delta"].get("tool_calls").is_some())
            .collect();
        assert_eq!(call_chunks.len(), 2);
        assert_eq!(
            call_chunks[0]["choices"][0]["delta"]["tool_calls"][1],
            json!({ "index": 1, "id": "fc_2", "type": "function", "function": { "name": "noop", "arguments": "{}" } })
        );
        assert_eq!(
            call_chunks[1]["choices"][0]["delta"]["tool_calls"][0]["index"],
            2
        );
        let usage = a.usage.unwrap();
        assert_eq!(usage["completion_tokens"], 7);
        assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 4);
    }

    #[test]
    fn generated_call_ids_are_unique() {
        let ev = json!({ "candidates": [{ "content": { "parts": [
            { "functionCall": { "name": "a", "args": {} } },
            { "functionCall": { "name": "b", "args": {} } },
        ]}, "finishReason": "STOP" }] });
        let evs = events(&run(false, &[format!("data: {ev}\n\n").as_bytes()]));
        let calls = &evs[1]["choices"][0]["delta"]["tool_calls"];
        let (a, b) = (
            calls[0]["id"].as_str().unwrap(),
            calls[1]["id"].as_str().unwrap(),
        );
        assert!(a.starts_with("call_") && b.starts_with("call_"));
        assert_ne!(a, b);
        // No responseId: a generated chunk id, the same on every chunk.
        let id = evs[0]["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-"));
        assert!(evs[..evs.len() - 1].iter().all(|e| e["id"] == id));
    }

    #[test]
    fn every_split_gives_the_same_output() {
        for (raw, usage) in [
            (fixture("gemini_stream_sse.txt"), true),
            (fixture("gemini_stream_sse.txt"), false),
            (tool_stream(), true),
        ] {
            let whole = run(usage, &[&raw]);
            for at in 0..=raw.len() {
                let (a, b) = raw.split_at(at);
                assert_eq!(run(usage, &[a, b]), whole, "split at {at}");
            }
            let bytes: Vec<&[u8]> = raw.chunks(1).collect();
            assert_eq!(run(usage, &bytes), whole, "byte by byte");
            let threes: Vec<&[u8]> = raw.chunks(3).collect();
            assert_eq!(run(usage, &threes), whole, "three bytes at a time");
        }
    }

    /// Where the fixture's first event ends (after its blank line; the fixture uses CRLF).
    fn first_event_end(raw: &[u8]) -> usize {
        raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
    }

    #[test]
    fn chunks_go_out_as_soon_as_their_event_is_complete() {
        let raw = fixture("gemini_stream_sse.txt");
        let end = first_event_end(&raw);
        let mut t = ToChatStream::new("m", false, 0);
        let mut out = BytesMut::new();
        // Up to the data line's CRLF: the blank line has not come yet.
        t.feed(&raw[..end - 2], &mut out);
        assert!(out.is_empty(), "nothing before the event ends");
        t.feed(&raw[end - 2..end], &mut out);
        let a = assemble(&events(&out));
        assert_eq!(a.content, "Hi! This is ");
        assert_eq!(a.finish, None);
    }

    #[test]
    fn upstream_error_event_ends_the_stream() {
        let raw = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\n\n\
data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\n\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"more\"}]},\"finishReason\":\"STOP\"}]}\n\n";
        let out = run(true, &[raw]);
        let evs = events(&out);
        assert_eq!(
            evs.len(),
            3,
            "role, text, error: {}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(
            evs[2],
            json!({ "error": { "message": "overloaded", "type": "server_error", "param": null, "code": "UNAVAILABLE" } })
        );
        assert!(!out.ends_with(b"[DONE]\n\n"));
    }

    #[test]
    fn cut_stream_is_reported() {
        let raw = fixture("gemini_stream_sse.txt");
        let first = &raw[..first_event_end(&raw)];
        let evs = events(&run(true, &[first]));
        let last = evs.last().unwrap();
        assert_eq!(
            last["error"]["message"],
            "upstream stream ended before the answer was complete"
        );
        assert!(!evs.iter().any(|e| e == "[DONE]"));
        // Nothing at all from upstream: the same.
        assert!(
            events(&run(false, &[]))
                .last()
                .unwrap()
                .get("error")
                .is_some()
        );
    }

    #[test]
    fn a_failed_function_call_is_an_error_not_a_stop() {
        let ev = json!({ "candidates": [{ "content": { "parts": [] },
                                          "finishReason": "MALFORMED_FUNCTION_CALL" }] });
        let evs = events(&run(true, &[format!("data: {ev}\n\n").as_bytes()]));
        let last = evs.last().unwrap();
        assert_eq!(
            last["error"]["message"],
            "the model's answer failed: MALFORMED_FUNCTION_CALL"
        );
        assert!(!evs.iter().any(|e| e == "[DONE]"));
    }

    #[test]
    fn blocked_prompt_and_other_finishes() {
        let ev = json!({ "promptFeedback": { "blockReason": "PROHIBITED_CONTENT" },
                         "usageMetadata": { "promptTokenCount": 5 } });
        let evs = events(&run(true, &[format!("data: {ev}\n\n").as_bytes()]));
        let a = assemble(&evs);
        assert_eq!(a.content, "");
        assert_eq!(a.finish.as_deref(), Some("content_filter"));
        assert_eq!(a.usage.unwrap()["prompt_tokens"], 5);

        let ev = json!({ "candidates": [{ "content": { "parts": [{ "text": "abc" }] }, "finishReason": "MAX_TOKENS" }] });
        let a = assemble(&events(&run(
            false,
            &[format!("data: {ev}\n\n").as_bytes()],
        )));
        assert_eq!(a.finish.as_deref(), Some("length"));
        assert_eq!(a.content, "abc");
    }

    #[test]
    fn several_candidates_each_get_their_sequence() {
        let ev = json!({ "candidates": [
            { "index": 0, "content": { "parts": [{ "text": "a" }] }, "finishReason": "STOP" },
            { "index": 1, "content": { "parts": [{ "text": "b" }] }, "finishReason": "STOP" },
        ]});
        let evs = events(&run(false, &[format!("data: {ev}\n\n").as_bytes()]));
        let per_choice = |i: u64| -> Vec<Value> {
            evs.iter()
                .filter(|e| e["choices"][0]["index"] == i)
                .map(|e| e["choices"][0].clone())
                .collect()
        };
        for (i, text) in [(0, "a"), (1, "b")] {
            let seq = per_choice(i);
            assert_eq!(seq.len(), 3);
            assert_eq!(seq[0]["delta"]["role"], "assistant");
            assert_eq!(seq[1]["delta"]["content"], text);
            assert_eq!(seq[2]["finish_reason"], "stop");
        }
        // Garbage events are skipped without ending the stream.
        let out = run(
            false,
            &[b"data: not json\n\n", format!("data: {ev}\n\n").as_bytes()],
        );
        assert!(out.ends_with(b"data: [DONE]\n\n"));
    }

    #[tokio::test]
    async fn through_the_translated_body() {
        use crate::translate::Translated;
        use http_body::Frame;
        use http_body_util::{BodyExt, StreamBody};

        let raw = fixture("gemini_stream_sse.txt");
        let frames: Vec<Result<Frame<bytes::Bytes>, std::io::Error>> = raw
            .chunks(7)
            .map(|c| Ok(Frame::data(bytes::Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let translated = Translated::new(body, ToChatStream::new("my-model", true, 1_700_000_000));
        let out = translated.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], &run(true, &[&raw])[..]);
    }
}
