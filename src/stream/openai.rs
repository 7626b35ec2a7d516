//! Usage of OpenAI answers: chat completions (SSE and JSON), the Responses API (SSE and JSON) and
//! embeddings, and the id of a stored response, read in the same pass; and the one change
//! Switchyard makes to a native chat stream.
//!
//! OpenAI's `prompt_tokens` / `input_tokens` *include* the cached tokens
//! (`…_details.cached_tokens`); [`TokenUsage`] keeps them apart, so `input = prompt − cached` and
//! `cache_read = cached`, here and nowhere else. Reasoning tokens are already inside the output
//! count. DeepSeek's `prompt_cache_hit_tokens` is read as the cached count when present.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::fields::TopFields;
use super::sse::{SseEvent, SseFramer};
use crate::translate::Translate;
use crate::usage::TokenUsage;

/// Which OpenAI operation answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Responses,
    Embeddings,
}

/// Watches one OpenAI answer for its usage.
#[derive(Debug)]
pub struct OpenAiUsage {
    operation: Operation,
    /// `Some` for an SSE answer.
    framer: Option<SseFramer>,
    /// A JSON answer's `usage` and `id`, read as they pass.
    json: TopFields<2>,
    seen: Option<WireUsage>,
    /// Streamed chunks of the answer itself (not `[DONE]`, not the usage): about one token each.
    chunks: u64,
    /// Whether the response's id is wanted (`reading_response_id`).
    reads_id: bool,
    /// A Responses stream's response id, once an event named it.
    response_id: Option<String>,
}

impl OpenAiUsage {
    pub fn new(operation: Operation, streaming: bool) -> OpenAiUsage {
        OpenAiUsage {
            operation,
            framer: streaming.then(SseFramer::new),
            json: TopFields::new(["usage", "id"]),
            seen: None,
            chunks: 0,
            reads_id: false,
            response_id: None,
        }
    }

    /// Also reads the id of the response the answer made (Responses): a stream's
    /// `response.created` (or, failing that, its last event), a JSON answer's `id`.
    pub fn reading_response_id(mut self) -> OpenAiUsage {
        self.reads_id = self.operation == Operation::Responses;
        self
    }

    pub fn observe(&mut self, chunk: &[u8]) {
        let operation = self.operation;
        let (seen, chunks, id) = (&mut self.seen, &mut self.chunks, &mut self.response_id);
        let reads_id = self.reads_id;
        match &mut self.framer {
            Some(framer) => framer.feed(chunk, |ev| {
                let read = read_event(operation, ev, reads_id && id.is_none());
                if read.id.is_some() {
                    *id = read.id;
                }
                if let Some(usage) = read.usage {
                    *seen = Some(usage);
                } else if is_delta(operation, ev) {
                    *chunks += 1;
                }
            }),
            None => self.json.feed(chunk),
        }
    }

    /// The id of the response the answer made, when asked for (`reading_response_id`) and
    /// seen: of a stream, as soon as its first event; of a JSON answer, once it is whole.
    pub fn response_id(&self) -> Option<Cow<'_, str>> {
        if !self.reads_id {
            return None;
        }
        if self.framer.is_some() {
            return self.response_id.as_deref().map(Cow::Borrowed);
        }
        serde_json::from_slice::<Cow<'_, str>>(self.json.get("id")?)
            .ok()
            .filter(|id| !id.is_empty())
    }

    /// The usage reported so far (zero when none was).
    pub fn usage(&self) -> TokenUsage {
        self.wire().map(|w| w.normalised()).unwrap_or_default()
    }

    /// Reasoning tokens reported (inside the output count), for logs.
    pub fn reasoning_tokens(&self) -> u64 {
        self.wire().map_or(0, |w| w.reasoning())
    }

    /// For a stream: the chunks of the answer seen so far, when no usage was reported (the
    /// stream was cut before its usage chunk, or the upstream ignored `include_usage`).
    pub fn unreported_chunks(&self) -> Option<u64> {
        (self.framer.is_some() && self.seen.is_none()).then_some(self.chunks)
    }

    fn wire(&self) -> Option<WireUsage> {
        if self.framer.is_some() {
            return self.seen;
        }
        serde_json::from_slice(self.json.get("usage")?).ok()
    }
}

/// What one SSE event says.
#[derive(Default)]
struct EventRead {
    usage: Option<WireUsage>,
    /// The response's id, when it was asked for.
    id: Option<String>,
}

/// The usage an SSE event carries: a chat chunk with a `usage` object, or a Responses
/// `response.completed` (also `incomplete` and `failed`, which are billed too); and with
/// `want_id`, the response id of a Responses `response.created` or of one of those (parsed
/// once for both).
fn read_event(operation: Operation, ev: SseEvent<'_>, want_id: bool) -> EventRead {
    match operation {
        Operation::Chat | Operation::Embeddings => {
            // Nearly every chunk is a delta without usage (or with `"usage": null`): a scan
            // decides before any parse.
            if !has_usage_object(ev.data) {
                return EventRead::default();
            }
            let usage = serde_json::from_str::<JsonAnswer>(ev.data)
                .ok()
                .and_then(|a| a.usage);
            EventRead { usage, id: None }
        }
        Operation::Responses => {
            let named = ev.event.unwrap_or("");
            let ends = [
                "response.completed",
                "response.incomplete",
                "response.failed",
            ];
            let created = "response.created";
            let opens =
                want_id && (named == created || (ev.event.is_none() && ev.data.contains(created)));
            if !opens && !ends.contains(&named) && !ends.iter().any(|e| ev.data.contains(e)) {
                return EventRead::default();
            }
            let Some(response) = serde_json::from_str::<ResponsesEvent<'_>>(ev.data)
                .ok()
                .and_then(|e| e.response)
            else {
                return EventRead::default();
            };
            EventRead {
                usage: response.usage,
                id: response
                    .id
                    .filter(|id| want_id && !id.is_empty())
                    .map(Cow::into_owned),
            }
        }
    }
}

/// Whether an event without usage carries a piece of the answer: any chat chunk but `[DONE]`;
/// a Responses `*.delta` event.
fn is_delta(operation: Operation, ev: SseEvent<'_>) -> bool {
    match operation {
        Operation::Chat | Operation::Embeddings => ev.data != "[DONE]",
        Operation::Responses => match ev.event {
            Some(name) => name.ends_with(".delta"),
            None => ev.data.contains(".delta\""),
        },
    }
}

/// Whether `data` has `"usage"` followed by an object (not `null`).
fn has_usage_object(data: &str) -> bool {
    data.match_indices("\"usage\"").any(|(at, found)| {
        let rest = data[at + found.len()..].trim_start();
        rest.strip_prefix(':')
            .is_some_and(|r| r.trim_start().starts_with('{'))
    })
}

#[derive(Deserialize)]
struct JsonAnswer {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(default, borrow)]
    response: Option<ResponseObject<'a>>,
}

/// What a Responses event's `response` says: its id (escaped, so maybe owned) and, once it
/// ended, its usage.
#[derive(Deserialize)]
struct ResponseObject<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Chat, Responses and embeddings usage in one: each names the fields its own way.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<Details>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<Details>,
    /// DeepSeek.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    fn normalised(&self) -> TokenUsage {
        let prompt = self.prompt_tokens.unwrap_or(0);
        let cached = self
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .or(self.prompt_cache_hit_tokens)
            .unwrap_or(0)
            .min(prompt);
        TokenUsage {
            input_tokens: prompt - cached,
            output_tokens: self.completion_tokens.unwrap_or(0),
            cache_read_input_tokens: cached,
            ..TokenUsage::default()
        }
    }

    fn reasoning(&self) -> u64 {
        self.completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
    }
}

/// For a streamed chat request that did not ask for usage, the body asking for it (so every
/// stream can be billed); `None` when the body already asks or is not a stream. The field is
/// inserted at the front of the object, leaving every other byte as the client sent it.
pub fn ask_for_usage(body: &[u8]) -> Option<Bytes> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        stream: Option<bool>,
        /// `Some(Null)` for `"stream_options": null`, which must be replaced rather than sent
        /// alongside a second `stream_options` key.
        #[serde(default, deserialize_with = "sent")]
        stream_options: Option<serde_json::Value>,
    }
    fn sent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
        serde_json::Value::deserialize(d).map(Some)
    }
    let peek: Peek = serde_json::from_slice(body).ok()?;
    if peek.stream != Some(true) {
        return None;
    }
    match peek.stream_options {
        Some(options) if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) => {
            None
        }
        // Present but not asking, or `null`: rewrite it (key order may change; the upstream does
        // not care).
        Some(serde_json::Value::Object(_) | serde_json::Value::Null) => {
            let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
            // A JSON array can also fill `Peek` (serde reads a struct from a sequence): then
            // there is no object to rewrite and the body goes as sent.
            let options = value
                .as_object_mut()?
                .entry("stream_options")
                .or_insert(serde_json::Value::Null);
            if options.is_null() {
                *options = serde_json::Value::Object(serde_json::Map::new());
            }
            options
                .as_object_mut()?
                .insert("include_usage".into(), serde_json::Value::Bool(true));
            serde_json::to_vec(&value).ok().map(Bytes::from)
        }
        // Any other value is the client's mistake: sent as is, for the vendor to answer with its
        // own 400.
        Some(_) => None,
        None => {
            let open = body.iter().position(|b| *b == b'{')?;
            let mut out = Vec::with_capacity(body.len() + 40);
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
            out.extend_from_slice(&body[open + 1..]);
            Some(Bytes::from(out))
        }
    }
}

/// Passes a chat stream through byte for byte, but for the usage-only chunk (`choices: []` with
/// a `usage` object) that Switchyard asked for on the client's behalf. Events are held only
/// until the blank line that ends them, and at most `MAX_HELD` bytes: a usage chunk is a few
/// hundred, so a longer event is not one and goes on before its end.
#[derive(Debug, Default)]
pub struct HideUsageChunk {
    pending: BytesMut,
    /// Where the line being read begins in `pending` (the search for a blank line goes on from
    /// there rather than from the start each time).
    line: usize,
}

/// The most of one event held back.
const MAX_HELD: usize = 64 * 1024;

impl Translate for HideUsageChunk {
    fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        self.pending.extend_from_slice(chunk);
        loop {
            match event_end(&self.pending, self.line) {
                Ok(end) => {
                    let event = self.pending.split_to(end);
                    self.line = 0;
                    if !is_usage_only(&event) {
                        out.extend_from_slice(&event);
                    }
                }
                Err(_) if self.pending.len() > MAX_HELD => {
                    out.extend_from_slice(&self.pending.split());
                    self.line = 0;
                    return;
                }
                Err(line) => {
                    self.line = line;
                    return;
                }
            }
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        let rest = std::mem::take(&mut self.pending);
        self.line = 0;
        if !is_usage_only(&rest) {
            out.extend_from_slice(&rest);
        }
    }
}

/// The end (exclusive) of the first complete event in `buf`, after its blank line, reading
/// lines from `line` (a line's start); else where the line being read begins. A line ends with
/// `\n`, `\r\n` or `\r`, as SSE has it (a `\r` last in `buf` waits for what follows).
fn event_end(buf: &[u8], line: usize) -> Result<usize, usize> {
    let mut line = line;
    while let Some(found) = buf
        .get(line..)
        .and_then(|rest| memchr::memchr2(b'\n', b'\r', rest))
    {
        let at = line + found;
        let len = match (buf[at], buf.get(at + 1)) {
            (b'\r', Some(b'\n')) => 2,
            // The blank line is whole (a `\n` after it would be a blank line of its own, which
            // changes nothing); another line's `\r` may be the start of its `\r\n`.
            (b'\r', None) if found > 0 => return Err(line),
            _ => 1,
        };
        if found == 0 {
            return Ok(at + len);
        }
        line = at + len;
    }
    Err(line)
}

fn is_usage_only(event: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        usage: Option<serde_json::Value>,
    }
    let Ok(text) = std::str::from_utf8(event) else {
        return false;
    };
    if !has_usage_object(text) {
        return false;
    }
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str::<Chunk>(&data).is_ok_and(|c| {
        c.choices.is_some_and(|c| c.is_empty()) && c.usage.is_some_and(|u| u.is_object())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    fn read(op: Operation, streaming: bool, body: &[u8], split: usize) -> OpenAiUsage {
        let mut u = OpenAiUsage::new(op, streaming);
        for part in body.chunks(split.max(1)) {
            u.observe(part);
        }
        u
    }

    #[test]
    fn chat_stream_usage_is_normalised_whatever_the_chunking() {
        let body = fixture("openai_chat_stream.txt");
        let whole = read(Operation::Chat, true, &body, body.len()).usage();
        assert!(
            whole.input_tokens + whole.cache_read_input_tokens > 0,
            "{whole:?}"
        );
        for split in [1, 7, 64] {
            assert_eq!(read(Operation::Chat, true, &body, split).usage(), whole);
        }
        let tools = fixture("openai_chat_stream_tool_calls.txt");
        assert!(read(Operation::Chat, true, &tools, 5).usage().output_tokens > 0);
    }

    #[test]
    fn cached_tokens_are_taken_out_of_the_prompt() {
        let chat = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":30},"completion_tokens_details":{"reasoning_tokens":8}}}"#;
        let u = read(Operation::Chat, false, chat, 9);
        assert_eq!(
            u.usage(),
            TokenUsage {
                input_tokens: 70,
                output_tokens: 20,
                cache_read_input_tokens: 30,
                ..TokenUsage::default()
            }
        );
        assert_eq!(u.reasoning_tokens(), 8);
        let responses = br#"{"id":"r","usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":50},"output_tokens":5}}"#;
        assert_eq!(
            read(Operation::Responses, false, responses, 4)
                .usage()
                .input_tokens,
            0
        );
        let deepseek = br#"{"usage":{"prompt_tokens":40,"completion_tokens":2,"prompt_cache_hit_tokens":32,"prompt_cache_miss_tokens":8}}"#;
        let u = read(Operation::Chat, false, deepseek, 3).usage();
        assert_eq!((u.input_tokens, u.cache_read_input_tokens), (8, 32));
        let embeddings =
            br#"{"object":"list","data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}"#;
        assert_eq!(
            read(Operation::Embeddings, false, embeddings, 2)
                .usage()
                .input_tokens,
            9
        );
        assert_eq!(
            read(Operation::Chat, false, b"{\"error\":{}}", 3).usage(),
            TokenUsage::default()
        );
    }

    #[test]
    fn responses_streams_are_billed_from_their_last_event() {
        for name in [
            "openai_responses_stream.txt",
            "openai_responses_stream_function_call.txt",
        ] {
            let body = fixture(name);
            let whole = read(Operation::Responses, true, &body, body.len()).usage();
            assert!(whole.output_tokens > 0, "{name}: {whole:?}");
            assert_eq!(
                read(Operation::Responses, true, &body, 3).usage(),
                whole,
                "{name}"
            );
        }
    }

    /// A stored response's id, read in the pass that reads the usage: a stream's from its first
    /// event (so a stream cut after it still has it), else from its last; a JSON answer's once
    /// it is whole. Only when asked for, and only of a Responses answer.
    #[test]
    fn the_response_id_is_read_with_the_usage_whatever_the_chunking() {
        let id = |reader: &OpenAiUsage| reader.response_id().map(Cow::into_owned);
        let stored =
            |streaming| OpenAiUsage::new(Operation::Responses, streaming).reading_response_id();
        let body = fixture("openai_responses_stream.txt");
        let text = std::str::from_utf8(&body).unwrap();
        let want = Some("resp_mockadcb6f249dd44fc4".to_owned());
        for split in [1, 7, 64, body.len()] {
            let mut reader = stored(true);
            for part in body.chunks(split) {
                reader.observe(part);
            }
            assert_eq!(id(&reader), want, "split {split}");
            assert!(reader.usage().output_tokens > 0);
        }
        // Cut right after `response.created`.
        let first = text.find("\n\n").unwrap() + 2;
        let mut reader = stored(true);
        reader.observe(&body[..first]);
        assert_eq!(id(&reader), want);
        // Without a `response.created` (nor event names): from the last event.
        let last: String = text
            .split("\n\n")
            .filter(|e| e.contains("response.completed"))
            .map(|e| {
                format!(
                    "{}\n\n",
                    e.lines()
                        .filter(|l| l.starts_with("data:"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
            .collect();
        let mut reader = stored(true);
        reader.observe(last.as_bytes());
        assert_eq!(id(&reader), want);
        assert!(reader.usage().output_tokens > 0);
        // Not asked for, or not a Responses answer: none.
        let mut reader = OpenAiUsage::new(Operation::Responses, true);
        reader.observe(&body);
        assert_eq!(id(&reader), None);
        assert_eq!(
            id(&OpenAiUsage::new(Operation::Chat, false).reading_response_id()),
            None
        );

        let json = br#"{"id": "resp_1x", "object": "response", "output": [{"id": "msg_1", "content": [{"text": "{\"id\": \"no\"}"}]}], "usage": {"input_tokens": 5, "output_tokens": 2}}"#;
        for split in [1, 5, json.len()] {
            let mut reader = stored(false);
            for part in json.chunks(split) {
                reader.observe(part);
            }
            assert_eq!(id(&reader).as_deref(), Some("resp_1x"), "split {split}");
            assert_eq!(reader.usage().input_tokens, 5);
        }
        // Not whole: not known yet.
        let mut reader = stored(false);
        reader.observe(&json[..json.len() - 1]);
        assert_eq!(id(&reader), None);
    }

    #[test]
    fn usage_is_asked_for_without_touching_the_rest() {
        let body = br#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
        let asked = ask_for_usage(body).unwrap();
        assert_eq!(
            asked.as_ref(),
            br#"{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[]}"#
        );
        assert!(ask_for_usage(br#"{"stream":false}"#).is_none());
        assert!(
            ask_for_usage(br#"{"stream":true,"stream_options":{"include_usage":true}}"#).is_none()
        );
        let rewritten =
            ask_for_usage(br#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#)
                .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&rewritten).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({ "include_usage": true, "x": 1 })
        );
    }

    #[test]
    fn stream_options_of_the_wrong_type_are_left_for_the_vendor() {
        // Each of these once panicked in serde_json's `IndexMut`; `None` sends the body as is.
        for options in ["5", "true", "\"x\"", "[]", "[1]", "{\"a\":1}"] {
            let body = format!(r#"{{"stream":true,"stream_options":{options},"model":"m"}}"#);
            let asked = ask_for_usage(body.as_bytes());
            if options.starts_with('{') {
                assert!(asked.is_some(), "{options}");
            } else {
                assert!(asked.is_none(), "{options}");
            }
        }
        // A body that is an array still reads as a `Peek`: nothing to rewrite.
        assert!(ask_for_usage(br#"[true,{}]"#).is_none());
        assert!(ask_for_usage(br#"[true,null]"#).is_none());
    }

    #[test]
    fn a_null_stream_options_is_replaced_not_duplicated() {
        let body = br#"{"model":"m","stream":true,"stream_options":null,"messages":[]}"#;
        let asked = ask_for_usage(body).unwrap();
        let text = std::str::from_utf8(&asked).unwrap();
        assert_eq!(text.matches("\"stream_options\"").count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_slice(&asked).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "m",
                "stream": true,
                "stream_options": { "include_usage": true },
                "messages": [],
            })
        );
    }

    #[test]
    fn the_usage_chunk_is_hidden_at_every_split() {
        let events = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n",
        ];
        let all = events.concat();
        let want = [events[0], events[1], events[3]].concat();
        for split in 1..all.len() {
            let mut hide = HideUsageChunk::default();
            let mut out = BytesMut::new();
            hide.feed(&all.as_bytes()[..split], &mut out);
            hide.feed(&all.as_bytes()[split..], &mut out);
            hide.finish(&mut out);
            assert_eq!(out.as_ref(), want.as_bytes(), "split at {split}");
        }
        // CRLF framing too, and a stream without the chunk is untouched.
        let crlf =
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let mut out = BytesMut::new();
        let mut hide = HideUsageChunk::default();
        hide.feed(crlf.as_bytes(), &mut out);
        hide.finish(&mut out);
        assert_eq!(out.as_ref(), b"data: [DONE]\r\n\r\n");
        // CR framing: each event goes on as it ends, not at the stream's end.
        let mut out = BytesMut::new();
        let mut hide = HideUsageChunk::default();
        hide.feed(b"data: {\"choices\":[{}]}\r\r", &mut out);
        assert_eq!(out.as_ref(), b"data: {\"choices\":[{}]}\r\r");
        hide.feed(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\r",
            &mut out,
        );
        hide.feed(b"data: [DONE]\r", &mut out);
        hide.feed(b"\r", &mut out);
        assert_eq!(
            out.as_ref(),
            b"data: {\"choices\":[{}]}\r\rdata: [DONE]\r\r"
        );
    }

    #[test]
    fn a_long_event_goes_on_before_its_end() {
        let mut hide = HideUsageChunk::default();
        let mut out = BytesMut::new();
        let big = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}",
            "x".repeat(MAX_HELD)
        );
        hide.feed(big.as_bytes(), &mut out);
        assert_eq!(out.len(), big.len(), "held no more than MAX_HELD");
        let tail = b"\"}}]}\n\ndata: [DONE]\n\n";
        hide.feed(tail, &mut out);
        hide.finish(&mut out);
        assert_eq!(out.len(), big.len() + tail.len());
        assert!(out.ends_with(b"data: [DONE]\n\n"));
    }
}
