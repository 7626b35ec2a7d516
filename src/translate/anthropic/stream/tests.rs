#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use super::*;
use crate::testing::fixture;
use proptest::prelude::*;

const CREATED: i64 = 1_795_331_914;

/// Feeds `chunks` and finishes; the whole client body.
fn run(include_usage: bool, chunks: &[&[u8]]) -> Vec<u8> {
    let mut t = ToChatStream::new("gpt-4o-mini", include_usage, CREATED);
    let mut out = BytesMut::new();
    for chunk in chunks {
        t.feed(chunk, &mut out);
    }
    t.finish(&mut out);
    out.to_vec()
}

/// What an OpenAI client reads: every `data:` payload, and whether `[DONE]` closed the stream.
struct Parsed {
    chunks: Vec<Value>,
    done: bool,
}

fn parse(body: &[u8]) -> Parsed {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    let mut chunks = Vec::new();
    let mut done = false;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("{event:?}"));
        assert!(!done, "data after [DONE]");
        if data == "[DONE]" {
            done = true;
        } else {
            chunks.push(serde_json::from_str(data).unwrap());
        }
    }
    Parsed { chunks, done }
}

/// A chat client's reassembly of the stream.
#[derive(Debug, Default, PartialEq)]
struct Assembled {
    content: String,
    reasoning: String,
    /// (id, name, arguments) per tool call index.
    tool_calls: Vec<(String, String, String)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

fn assemble(parsed: &Parsed) -> Assembled {
    let mut a = Assembled::default();
    for (i, chunk) in parsed.chunks.iter().enumerate() {
        let choices = chunk["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(a.usage.is_none(), "two usage chunks");
            a.usage = Some(chunk["usage"].clone());
            continue;
        }
        let choice = &choices[0];
        let delta = &choice["delta"];
        assert_eq!(
            delta["role"] == "assistant",
            i == 0,
            "role only in the first chunk"
        );
        if let Some(text) = delta["content"].as_str() {
            a.content.push_str(text);
        }
        if let Some(text) = delta["reasoning_content"].as_str() {
            a.reasoning.push_str(text);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = usize::try_from(call["index"].as_u64().unwrap()).unwrap();
            if let Some(id) = call["id"].as_str() {
                assert_eq!(
                    index,
                    a.tool_calls.len(),
                    "tool call indexes count up from 0"
                );
                assert_eq!(call["type"], "function");
                let name = call["function"]["name"].as_str().unwrap();
                a.tool_calls
                    .push((id.to_owned(), name.to_owned(), String::new()));
            }
            a.tool_calls[index]
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap());
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            assert!(a.finish_reason.is_none(), "two finish reasons");
            a.finish_reason = Some(reason.to_owned());
        }
    }
    a
}

#[test]
fn text_stream_fixture() {
    for include_usage in [false, true] {
        let parsed = parse(&run(include_usage, &[&fixture("anthropic_stream.txt")]));
        assert!(parsed.done);
        let a = assemble(&parsed);
        assert_eq!(a.content, "Hi! This is the mock upstream.");
        assert_eq!(a.finish_reason.as_deref(), Some("stop"));
        assert!(a.tool_calls.is_empty());
        if include_usage {
            assert_eq!(
                a.usage,
                Some(json!({
                    "prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                    "prompt_tokens_details": { "cached_tokens": 0 },
                }))
            );
        } else {
            assert_eq!(a.usage, None);
        }
        // role, two texts, finish (+ usage).
        assert_eq!(parsed.chunks.len(), 4 + usize::from(include_usage));
        for chunk in &parsed.chunks {
            assert_eq!(chunk["id"], "chatcmpl-msg_mock9d407cff7db24d609825");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["created"], CREATED);
            assert_eq!(chunk["model"], "gpt-4o-mini");
            assert_eq!(chunk.get("usage").is_some(), include_usage);
        }
        assert_eq!(
            parsed.chunks[0]["choices"],
            json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }])
        );
        let last_choice = &parsed.chunks[3];
        assert_eq!(
            last_choice["choices"],
            json!([{ "index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop" }])
        );
        if include_usage {
            assert_eq!(last_choice["usage"], Value::Null);
        }
    }
}

#[test]
fn tool_use_stream_fixture() {
    let raw = fixture("anthropic_stream_tool_use.txt");
    let parsed = parse(&run(true, &[&raw]));
    assert!(parsed.done);
    let a = assemble(&parsed);
    assert_eq!(a.content, "Running a tool.");
    assert_eq!(a.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(a.tool_calls.len(), 1);
    let (id, name, arguments) = &a.tool_calls[0];
    assert_eq!(id, "toolu_mockb7cdf969d6e64de4");
    assert_eq!(name, "Bash");
    // The reassembled arguments equal the input Anthropic streamed.
    let upstream: String = String::from_utf8(raw)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|e| e["delta"]["partial_json"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(arguments, &upstream);
    let args: Value = serde_json::from_str(arguments).unwrap();
    assert_eq!(
        args,
        json!({ "command": "echo mock-tool-ok", "description": "Echo a marker" })
    );
    assert_eq!(a.usage.unwrap()["completion_tokens"], 20);
}

/// Our chunks carry every field the recorded OpenAI chunks carry (bar `system_fingerprint`,
/// which OpenAI itself sends only sometimes), plus `logprobs`.
#[test]
fn chunks_have_the_fields_of_recorded_openai_chunks() {
    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }
    for (theirs, ours) in [
        ("openai_chat_stream.txt", "anthropic_stream.txt"),
        (
            "openai_chat_stream_tool_calls.txt",
            "anthropic_stream_tool_use.txt",
        ),
    ] {
        let theirs = parse(&fixture(theirs));
        let ours = parse(&run(true, &[&fixture(ours)]));
        assert!(theirs.done && ours.done);
        let content_keys = |p: &Parsed| -> (BTreeSet<String>, BTreeSet<String>) {
            let chunk = p
                .chunks
                .iter()
                .find(|c| c["choices"][0].is_object())
                .unwrap();
            (keys(chunk), keys(&chunk["choices"][0]))
        };
        let (mut their_chunk, their_choice) = content_keys(&theirs);
        their_chunk.remove("system_fingerprint");
        let (our_chunk, our_choice) = content_keys(&ours);
        assert!(
            our_chunk.is_superset(&their_chunk),
            "{our_chunk:?} vs {their_chunk:?}"
        );
        assert!(our_choice.is_superset(&their_choice));
        assert!(our_choice.contains("logprobs"));
        let their_usage = theirs.chunks.last().unwrap();
        let our_usage = ours.chunks.last().unwrap();
        assert_eq!(our_usage["choices"], json!([]));
        assert!(keys(&our_usage["usage"]).is_superset(&keys(&their_usage["usage"])));
        // The tool call's first chunk has the same shape as OpenAI's.
        if let Some(their_call) = theirs.chunks[0]["choices"][0]["delta"]["tool_calls"].get(0) {
            let our_call = ours
                .chunks
                .iter()
                .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
                .unwrap();
            assert_eq!(keys(our_call), keys(their_call));
            assert_eq!(keys(&our_call["function"]), keys(&their_call["function"]));
        }
    }
}

#[test]
fn every_two_chunk_split_gives_the_same_output() {
    for name in ["anthropic_stream.txt", "anthropic_stream_tool_use.txt"] {
        let raw = fixture(name);
        for include_usage in [false, true] {
            let whole = run(include_usage, &[&raw]);
            for at in 0..=raw.len() {
                let (a, b) = raw.split_at(at);
                assert_eq!(run(include_usage, &[a, b]), whole, "{name} split at {at}");
            }
        }
    }
}

#[test]
fn output_is_emitted_as_soon_as_each_event_completes() {
    let raw = fixture("anthropic_stream.txt");
    let text = std::str::from_utf8(&raw).unwrap();
    let mut t = ToChatStream::new("m", false, CREATED);
    let mut out = BytesMut::new();
    // Up to the end of the first text delta: role chunk and that text, nothing else yet.
    let first_delta_end = text.find("event: content_block_delta").unwrap();
    let second_delta = text[first_delta_end + 1..]
        .find("event: content_block_delta")
        .unwrap()
        + first_delta_end
        + 1;
    t.feed(&raw[..second_delta], &mut out);
    let parsed = parse(&out);
    assert!(!parsed.done);
    assert_eq!(assemble(&parsed).content, "Hi! This is ");
    // The rest of the body completes the stream before finish() is called.
    out.clear();
    t.feed(&raw[second_delta..], &mut out);
    let parsed = parse(&out);
    assert!(parsed.done);
    let mut rest = BytesMut::new();
    t.finish(&mut rest);
    assert!(rest.is_empty(), "nothing after [DONE]");
}

fn event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap()
    )
}

fn message_start(usage: Value) -> String {
    event(json!({
        "type": "message_start",
        "message": { "id": "msg_x", "type": "message", "role": "assistant", "content": [], "usage": usage },
    }))
}

#[test]
fn thinking_parallel_tools_without_arguments_and_cache_usage() {
    let stream = [
        message_start(json!({
            "input_tokens": 5, "output_tokens": 1,
            "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1000,
        })),
        event(json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "thinking", "thinking": "" } })),
        event(json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "thinking_delta", "thinking": "hmm" } })),
        event(json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "signature_delta", "signature": "sig" } })),
        event(json!({ "type": "content_block_stop", "index": 0 })),
        event(json!({ "type": "content_block_start", "index": 1, "content_block": { "type": "tool_use", "id": "toolu_a", "name": "now", "input": {} } })),
        event(json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "input_json_delta", "partial_json": "" } })),
        event(json!({ "type": "content_block_stop", "index": 1 })),
        event(json!({ "type": "content_block_start", "index": 2, "content_block": { "type": "tool_use", "id": "toolu_b", "name": "weather", "input": {} } })),
        event(json!({ "type": "content_block_delta", "index": 2, "delta": { "type": "input_json_delta", "partial_json": "{\"city\":" } })),
        event(json!({ "type": "content_block_delta", "index": 2, "delta": { "type": "input_json_delta", "partial_json": "\"Oslo\"}" } })),
        event(json!({ "type": "content_block_stop", "index": 2 })),
        event(json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use" }, "usage": { "output_tokens": 30 } })),
        event(json!({ "type": "message_stop" })),
    ]
    .concat();
    let parsed = parse(&run(true, &[stream.as_bytes()]));
    assert!(parsed.done);
    let a = assemble(&parsed);
    assert_eq!(a.reasoning, "hmm");
    assert_eq!(a.content, "");
    assert_eq!(
        a.tool_calls,
        vec![
            ("toolu_a".into(), "now".into(), "{}".into()),
            (
                "toolu_b".into(),
                "weather".into(),
                r#"{"city":"Oslo"}"#.into()
            ),
        ]
    );
    assert_eq!(a.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        a.usage,
        Some(json!({
            "prompt_tokens": 1305, "completion_tokens": 30, "total_tokens": 1335,
            "prompt_tokens_details": { "cached_tokens": 1000 },
        }))
    );
}

#[test]
fn error_event_ends_the_stream_without_done() {
    let raw = fixture("anthropic_stream.txt");
    let text = std::str::from_utf8(&raw).unwrap();
    let cut = text.find("event: content_block_stop").unwrap();
    let error = event(
        json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
    );
    let body = run(true, &[&raw[..cut], error.as_bytes(), &raw[cut..]]);
    let parsed = parse(&body);
    assert!(!parsed.done);
    let last = parsed.chunks.last().unwrap();
    assert_eq!(
        last,
        &json!({ "error": { "message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded" } })
    );
    // Nothing from after the error (the rest of the fixture) was translated.
    let a = assemble(&Parsed {
        chunks: parsed.chunks[..parsed.chunks.len() - 1].to_vec(),
        done: false,
    });
    assert_eq!(a.content, "Hi! This is the mock upstream.");
    assert_eq!(a.finish_reason, None);
    // An error as the very first event.
    let parsed = parse(&run(false, &[error.as_bytes()]));
    assert!(!parsed.done);
    assert_eq!(parsed.chunks.len(), 1);
    assert_eq!(parsed.chunks[0]["error"]["code"], "overloaded");
}

#[test]
fn a_stream_cut_before_its_stop_reason_ends_with_an_error_not_done() {
    let raw = fixture("anthropic_stream.txt");
    let text = std::str::from_utf8(&raw).unwrap();
    // Cut inside the message_delta event: the text arrived, the stop reason did not.
    let cut = text.find(r#""stop_reason": "end_turn""#).unwrap();
    let out = run(true, &[&raw[..cut]]);
    let parsed = parse(&out);
    assert!(!parsed.done, "{}", String::from_utf8_lossy(&out));
    let (errors, chunks): (Vec<Value>, Vec<Value>) = parsed
        .chunks
        .into_iter()
        .partition(|c| c.get("error").is_some());
    assert_eq!(errors.len(), 1, "{errors:?}");
    let a = assemble(&Parsed {
        chunks,
        done: false,
    });
    assert_eq!(a.content, "Hi! This is the mock upstream.");
    assert_eq!(a.finish_reason, None);
    assert_eq!(errors[0]["error"]["type"], "server_error", "{errors:?}");
    let text_out = String::from_utf8(out).unwrap();
    let last = text_out.trim_end().rsplit("\n\n").next().unwrap();
    let last: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(
        last.get("error").is_some(),
        "the error comes last: {text_out}"
    );
    // Cut after message_delta but before message_stop: the answer is whole.
    let cut = text.find("event: message_stop").unwrap();
    let parsed = parse(&run(true, &[&raw[..cut]]));
    assert!(parsed.done);
    let a = assemble(&parsed);
    assert_eq!(a.finish_reason.as_deref(), Some("stop"));
    assert_eq!(a.usage.unwrap()["completion_tokens"], 7);
    // Nothing at all: an error too.
    let out = String::from_utf8(run(true, &[])).unwrap();
    assert!(out.starts_with("data: {\"error\""), "{out}");
    assert!(!out.contains("[DONE]"));
}

#[test]
fn streams_without_message_start_or_with_garbage_do_not_break() {
    let stream = [
        "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_owned(),
        "data: not json\n\n".to_owned(),
        event(json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "orphan" } })),
        event(json!({ "type": "content_block_delta", "index": 5, "delta": { "type": "input_json_delta", "partial_json": "{}" } })),
        event(json!({ "type": "brand_new_event", "x": 1 })),
        event(json!({ "type": "message_delta", "delta": { "stop_reason": "max_tokens" }, "usage": { "output_tokens": 3 } })),
        event(json!({ "type": "message_stop" })),
        event(json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "late" } })),
    ]
    .concat();
    let parsed = parse(&run(false, &[stream.as_bytes()]));
    assert!(parsed.done);
    let a = assemble(&parsed);
    assert_eq!(a.content, "orphan");
    assert_eq!(a.finish_reason.as_deref(), Some("length"));
    assert!(a.tool_calls.is_empty());
    assert!(
        parsed
            .chunks
            .iter()
            .all(|c| c["id"] == "chatcmpl-switchyard")
    );
}

proptest! {
    #[test]
    fn arbitrary_chunking_gives_the_same_output(
        cuts in proptest::collection::vec(0usize..2200, 0..24),
        tool in any::<bool>(),
        include_usage in any::<bool>(),
    ) {
        let raw = fixture(if tool { "anthropic_stream_tool_use.txt" } else { "anthropic_stream.txt" });
        let whole = run(include_usage, &[&raw]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (raw.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut prev = 0;
        for c in cuts {
            pieces.push(&raw[prev..c]);
            prev = c;
        }
        pieces.push(&raw[prev..]);
        prop_assert_eq!(run(include_usage, &pieces), whole);
    }
}
