//! Usage of Anthropic Messages responses (SSE and JSON).
//!
//! The observer sees the same chunks the client gets, in the same order, and can be asked for the
//! usage at any time: when the body ends, or when it is dropped half-way because the client went
//! away (DESIGN principle 2). A cut stream is billed for what `message_start` and the last
//! `message_delta` reported.
//!
//! Anthropic's `input_tokens` already excludes cache reads and writes, which is the
//! [`TokenUsage`] convention, so the counts are taken as they are. Web searches run by Anthropic's
//! server tool come in `usage.server_tool_use.web_search_requests` (cumulative in `message_delta`,
//! like the other counts) and are billed per search.

use serde::Deserialize;

use super::fields::TopFields;
use super::sse::{SseEvent, SseFramer};
use crate::usage::TokenUsage;

/// Watches one Anthropic Messages response body for token usage.
#[derive(Debug)]
pub struct AnthropicUsage {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Streaming {
        framer: SseFramer,
        seen: Seen,
    },
    /// A JSON body: its `type`, `model` and `usage`, read as they pass.
    Json(TopFields<3>),
}

/// What the response has reported so far.
#[derive(Debug, Default, Clone)]
struct Seen {
    usage: TokenUsage,
    model: Option<String>,
    /// `content_block_delta` events: a few tokens of the answer each.
    deltas: u64,
    /// A `message_delta` reported the final counts.
    finished: bool,
    /// How many events were JSON-parsed; tests check that bulk deltas are not.
    #[cfg(test)]
    parses: usize,
}

impl AnthropicUsage {
    /// For `text/event-stream` responses.
    pub fn streaming() -> AnthropicUsage {
        AnthropicUsage {
            mode: Mode::Streaming {
                framer: SseFramer::new(),
                seen: Seen::default(),
            },
        }
    }

    /// For `application/json` responses.
    pub fn json() -> AnthropicUsage {
        AnthropicUsage {
            mode: Mode::Json(TopFields::new(["type", "model", "usage"])),
        }
    }

    /// Shows the observer the next chunk of the body, exactly as it went to the client.
    pub fn observe(&mut self, chunk: &[u8]) {
        match &mut self.mode {
            Mode::Streaming { framer, seen } => framer.feed(chunk, |ev| seen.on_event(ev)),
            Mode::Json(fields) => fields.feed(chunk),
        }
    }

    /// The usage reported so far; zero if nothing (or an error) was reported.
    pub fn usage(&self) -> TokenUsage {
        match &self.mode {
            Mode::Streaming { seen, .. } => seen.normalised_usage(),
            Mode::Json(fields) => answer_field::<WireUsage>(fields, "usage")
                .map(|usage| {
                    let mut seen = Seen::default();
                    seen.apply(&usage);
                    seen.normalised_usage()
                })
                .unwrap_or_default(),
        }
    }

    /// For a stream whose final counts never came (no `message_delta` with usage): the
    /// `content_block_delta` events seen, each a few tokens of the answer.
    pub fn unreported_deltas(&self) -> Option<u64> {
        match &self.mode {
            Mode::Streaming { seen, .. } if !seen.finished => Some(seen.deltas),
            _ => None,
        }
    }

    /// The model that answered, as the response names it.
    pub fn model(&self) -> Option<String> {
        match &self.mode {
            Mode::Streaming { seen, .. } => seen.model.clone(),
            Mode::Json(fields) => answer_field(fields, "model"),
        }
    }
}

/// A field of a complete JSON answer; `None` for an error (`"type": "error"`), an unreadable or
/// unfinished body, or a field that is absent or not of the expected shape.
fn answer_field<T: serde::de::DeserializeOwned>(fields: &TopFields<3>, name: &str) -> Option<T> {
    if !fields.complete() {
        tracing::debug!("Anthropic JSON response incomplete or unreadable; no usage");
        return None;
    }
    if fields.get("type") == Some(br#""error""#) {
        return None;
    }
    serde_json::from_slice(fields.get(name)?).ok()
}

impl Seen {
    fn on_event(&mut self, ev: SseEvent<'_>) {
        // `content_block_delta` events are nearly all of a stream: decide from the event name
        // (or, for a stream without names, a substring scan) and never JSON-parse them.
        let candidate = match ev.event {
            Some("message_start" | "message_delta") => true,
            Some(name) => {
                self.deltas += u64::from(name == "content_block_delta");
                false
            }
            None if names_usage_event(ev.data) => true,
            None => {
                self.deltas += u64::from(ev.data.contains("\"content_block_delta\""));
                false
            }
        };
        if !candidate {
            return;
        }
        #[cfg(test)]
        {
            self.parses += 1;
        }
        let event: WireEvent = match serde_json::from_str(ev.data) {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(%error, "unreadable Anthropic usage event ignored");
                return;
            }
        };
        match event.kind.as_str() {
            "message_start" => {
                if let Some(message) = event.message {
                    if message.model.is_some() {
                        self.model = message.model;
                    }
                    if let Some(usage) = &message.usage {
                        self.apply(usage);
                    }
                }
            }
            "message_delta" => {
                if let Some(usage) = &event.usage {
                    self.apply(usage);
                    self.finished = true;
                }
            }
            _ => {}
        }
    }

    /// Every reported count replaces the earlier one: `message_delta`'s `output_tokens` is
    /// cumulative, and newer API versions repeat the input and cache counts there with final values.
    fn apply(&mut self, wire: &WireUsage) {
        let u = &mut self.usage;
        let fields = [
            (wire.input_tokens, &mut u.input_tokens),
            (wire.output_tokens, &mut u.output_tokens),
            (
                wire.cache_creation_input_tokens,
                &mut u.cache_creation_input_tokens,
            ),
            (wire.cache_read_input_tokens, &mut u.cache_read_input_tokens),
        ];
        for (reported, slot) in fields {
            if let Some(n) = reported {
                *slot = n;
            }
        }
        if let Some(split) = &wire.cache_creation {
            if let Some(n) = split.ephemeral_5m_input_tokens {
                u.cache_creation_5m_input_tokens = n;
            }
            if let Some(n) = split.ephemeral_1h_input_tokens {
                u.cache_creation_1h_input_tokens = n;
            }
        }
        if let Some(n) = wire
            .server_tool_use
            .as_ref()
            .and_then(|tools| tools.web_search_requests)
        {
            u.web_search_requests = n;
        }
    }

    /// Keeps `TokenUsage`'s promise that the total covers the split, whatever the upstream sent.
    fn normalised_usage(&self) -> TokenUsage {
        let mut u = self.usage;
        let split = u
            .cache_creation_5m_input_tokens
            .saturating_add(u.cache_creation_1h_input_tokens);
        u.cache_creation_input_tokens = u.cache_creation_input_tokens.max(split);
        u
    }
}

/// Whether `data` contains the JSON string `"message_start"` or `"message_delta"`: a scan far
/// cheaper than a parse, with rare false positives that the parse then rejects.
fn names_usage_event(data: &str) -> bool {
    data.match_indices("\"message_").any(|(at, found)| {
        let rest = &data[at + found.len()..];
        rest.starts_with("start\"") || rest.starts_with("delta\"")
    })
}

/// The parts of a stream event that carry usage. Unknown fields are skipped by serde.
#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    message: Option<WireMessage>,
    usage: Option<WireUsage>,
}

/// `message_start`'s `message`.
#[derive(Deserialize)]
struct WireMessage {
    model: Option<String>,
    usage: Option<WireUsage>,
}

/// Options throughout: a field may be absent or `null`, and only reported fields replace
/// earlier values.
#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation: Option<WireCacheCreation>,
    server_tool_use: Option<WireServerToolUse>,
}

#[derive(Deserialize)]
struct WireServerToolUse {
    web_search_requests: Option<u64>,
}

#[derive(Deserialize)]
struct WireCacheCreation {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::fixture;
    use proptest::prelude::*;

    fn observe_all(mut observer: AnthropicUsage, chunks: &[&[u8]]) -> AnthropicUsage {
        for chunk in chunks {
            observer.observe(chunk);
        }
        observer
    }

    fn io(input: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            ..TokenUsage::default()
        }
    }

    fn parses(observer: &AnthropicUsage) -> usize {
        match &observer.mode {
            Mode::Streaming { seen, .. } => seen.parses,
            Mode::Json(_) => 0,
        }
    }

    #[test]
    fn stream_fixture() {
        let o = observe_all(
            AnthropicUsage::streaming(),
            &[&fixture("anthropic_stream.txt")],
        );
        assert_eq!(o.usage(), io(10, 7));
        assert_eq!(o.model().as_deref(), Some("claude-opus-4-8"));
        // Only message_start and message_delta were parsed.
        assert_eq!(parses(&o), 2);
    }

    #[test]
    fn tool_use_stream_fixture() {
        let o = observe_all(
            AnthropicUsage::streaming(),
            &[&fixture("anthropic_stream_tool_use.txt")],
        );
        assert_eq!(o.usage(), io(11, 20));
        assert_eq!(o.model().as_deref(), Some("claude-opus-4-8"));
        assert_eq!(parses(&o), 2);
    }

    #[test]
    fn json_fixture() {
        let o = observe_all(AnthropicUsage::json(), &[&fixture("anthropic_json.txt")]);
        assert_eq!(o.usage(), io(10, 7));
        assert_eq!(o.model().as_deref(), Some("claude-opus-4-8"));
    }

    const CACHED_STREAM: &str = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"cache_creation_input_tokens":300,"cache_read_input_tokens":1000,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"output_tokens":1,"service_tier":"standard"}}}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\"message_delta\" is not this"}}"#,
        "\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":5,"cache_creation_input_tokens":300,"cache_read_input_tokens":1000,"output_tokens":50}}"#,
        "\n\n",
        "event: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );

    #[test]
    fn cache_split_and_reads() {
        let o = observe_all(AnthropicUsage::streaming(), &[CACHED_STREAM.as_bytes()]);
        assert_eq!(
            o.usage(),
            TokenUsage {
                input_tokens: 5,
                output_tokens: 50,
                cache_creation_input_tokens: 300,
                cache_creation_5m_input_tokens: 100,
                cache_creation_1h_input_tokens: 200,
                cache_read_input_tokens: 1000,
                images: 0,
                web_search_requests: 0,
            }
        );
        assert_eq!(o.model().as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(parses(&o), 2);
    }

    #[test]
    fn message_delta_values_replace_earlier_ones() {
        let stream = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":5,"output_tokens":1,"cache_read_input_tokens":7}}}"#,
            "\n\n",
            "event: message_delta\n",
            r#"data: {"type":"message_delta","usage":{"output_tokens":4}}"#,
            "\n\n",
            "event: message_delta\n",
            r#"data: {"type":"message_delta","usage":{"input_tokens":12,"output_tokens":9,"cache_read_input_tokens":null}}"#,
            "\n\n",
        );
        let o = observe_all(AnthropicUsage::streaming(), &[stream.as_bytes()]);
        assert_eq!(
            o.usage(),
            TokenUsage {
                input_tokens: 12,
                output_tokens: 9,
                cache_read_input_tokens: 7,
                ..TokenUsage::default()
            }
        );
    }

    #[test]
    fn stream_without_event_names() {
        let stream: String = CACHED_STREAM
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let o = observe_all(AnthropicUsage::streaming(), &[stream.as_bytes()]);
        let named = observe_all(AnthropicUsage::streaming(), &[CACHED_STREAM.as_bytes()]);
        assert_eq!(o.usage(), named.usage());
        assert_eq!(o.model(), named.model());
        // Not even the delta whose text mentions "message_delta" is parsed.
        assert_eq!(parses(&o), 2);
    }

    #[test]
    fn cut_stream_bills_what_was_reported() {
        let raw = fixture("anthropic_stream.txt");
        let text = std::str::from_utf8(&raw).unwrap();
        let after_start = text.find("event: ping").unwrap();
        let o = observe_all(AnthropicUsage::streaming(), &[&raw[..after_start]]);
        assert_eq!(o.usage(), io(10, 1));
        assert_eq!(o.model().as_deref(), Some("claude-opus-4-8"));
        // Cut inside message_delta: its event never completed.
        let mid_delta = text.find(r#""output_tokens": 7"#).unwrap();
        let o = observe_all(AnthropicUsage::streaming(), &[&raw[..mid_delta]]);
        assert_eq!(o.usage(), io(10, 1));
        // Cut before message_start completed: nothing.
        let o = observe_all(AnthropicUsage::streaming(), &[&raw[..40]]);
        assert_eq!(o.usage(), TokenUsage::default());
        assert_eq!(o.model(), None::<String>);
        // Usage can be read mid-stream and keeps growing.
        let mut o = AnthropicUsage::streaming();
        o.observe(&raw[..after_start]);
        assert_eq!(o.usage(), io(10, 1));
        o.observe(&raw[after_start..]);
        assert_eq!(o.usage(), io(10, 7));
    }

    #[test]
    fn every_two_chunk_split_gives_the_same_usage() {
        for (name, streaming, want) in [
            ("anthropic_stream.txt", true, io(10, 7)),
            ("anthropic_stream_tool_use.txt", true, io(11, 20)),
            ("anthropic_json.txt", false, io(10, 7)),
        ] {
            let raw = fixture(name);
            for at in 0..=raw.len() {
                let (a, b) = raw.split_at(at);
                let observer = if streaming {
                    AnthropicUsage::streaming()
                } else {
                    AnthropicUsage::json()
                };
                let o = observe_all(observer, &[a, b]);
                assert_eq!(o.usage(), want, "{name} split at {at}");
                assert_eq!(
                    o.model().as_deref(),
                    Some("claude-opus-4-8"),
                    "{name} split at {at}"
                );
            }
        }
    }

    #[test]
    fn errors_are_zero_usage() {
        let stream = concat!(
            "event: error\n",
            r#"data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "\n\n",
        );
        let o = observe_all(AnthropicUsage::streaming(), &[stream.as_bytes()]);
        assert!(o.usage().is_empty());
        assert_eq!(o.model(), None::<String>);

        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"usage":{"input_tokens":3}}"#;
        let o = observe_all(AnthropicUsage::json(), &[body]);
        assert!(o.usage().is_empty());
        assert_eq!(o.model(), None::<String>);

        // An error after message_start keeps what message_start reported.
        let raw = fixture("anthropic_stream.txt");
        let text = std::str::from_utf8(&raw).unwrap();
        let after_start = text.find("event: ping").unwrap();
        let o = observe_all(
            AnthropicUsage::streaming(),
            &[&raw[..after_start], stream.as_bytes()],
        );
        assert_eq!(o.usage(), io(10, 1));

        // Garbage, truncated JSON and a stream observer fed JSON: no usage, no panic.
        for (observer, body) in [
            (AnthropicUsage::json(), &b"not json"[..]),
            (AnthropicUsage::json(), &b""[..]),
            (AnthropicUsage::json(), &fixture("anthropic_json.txt")[..100]),
            (AnthropicUsage::streaming(), &fixture("anthropic_json.txt")[..]),
            (
                AnthropicUsage::streaming(),
                &b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":-1}}}\n\n"[..],
            ),
        ] {
            let o = observe_all(observer, &[body]);
            assert!(o.usage().is_empty());
        }
    }

    #[test]
    fn json_is_reparsed_after_more_bytes() {
        let raw = fixture("anthropic_json.txt");
        let mut o = AnthropicUsage::json();
        o.observe(&raw[..raw.len() / 2]);
        assert!(o.usage().is_empty());
        o.observe(&raw[raw.len() / 2..]);
        assert_eq!(o.usage(), io(10, 7));
        assert_eq!(o.model().as_deref(), Some("claude-opus-4-8"));
    }

    #[test]
    fn a_json_answer_is_read_without_a_copy() {
        let raw = fixture("anthropic_json.txt");
        let o = observe_all(AnthropicUsage::json(), &[&raw[..10], &raw[10..]]);
        assert_eq!(o.usage(), io(10, 7));
        match &o.mode {
            Mode::Json(fields) => {
                let usage: serde_json::Value =
                    serde_json::from_slice(fields.get("usage").unwrap()).unwrap();
                assert_eq!(usage["input_tokens"], 10);
                assert_eq!(fields.get("content"), None, "the answer itself is not kept");
            }
            Mode::Streaming { .. } => panic!("json mode expected"),
        }
    }

    #[test]
    fn split_total_covers_split_counts() {
        // The upstream split without a total: the total is derived.
        let stream = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"usage":{"input_tokens":1,"cache_creation":{"ephemeral_5m_input_tokens":3,"ephemeral_1h_input_tokens":4}}}}"#,
            "\n\n",
        );
        let u = observe_all(AnthropicUsage::streaming(), &[stream.as_bytes()]).usage();
        assert_eq!(u.cache_creation_input_tokens, 7);
        assert_eq!(u.cache_creation_unsplit(), 0);
    }

    #[test]
    fn web_searches_are_counted_in_a_stream_and_in_json() {
        // As Anthropic sends them: the count so far in message_start, the final one in
        // message_delta.
        let stream = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"model":"claude-sonnet-4-5","usage":{"input_tokens":2000,"output_tokens":1,"server_tool_use":{"web_search_requests":0}}}}"#,
            "\n\n",
            "event: message_delta\n",
            r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":9000,"output_tokens":400,"server_tool_use":{"web_search_requests":3,"web_fetch_requests":1}}}"#,
            "\n\n",
        );
        let o = observe_all(AnthropicUsage::streaming(), &[stream.as_bytes()]);
        let want = TokenUsage {
            input_tokens: 9000,
            output_tokens: 400,
            web_search_requests: 3,
            ..TokenUsage::default()
        };
        assert_eq!(o.usage(), want);
        // A message_delta without server_tool_use keeps the count.
        let more = concat!(
            "event: message_delta\n",
            r#"data: {"type":"message_delta","usage":{"output_tokens":401}}"#,
            "\n\n",
        );
        let o = observe_all(
            AnthropicUsage::streaming(),
            &[stream.as_bytes(), more.as_bytes()],
        );
        assert_eq!(o.usage().web_search_requests, 3);

        let json = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":"end_turn","usage":{"input_tokens":9000,"output_tokens":400,"server_tool_use":{"web_search_requests":3}}}"#;
        let o = observe_all(AnthropicUsage::json(), &[json]);
        assert_eq!(o.usage(), want);
        // At $10 per 1,000 searches, on top of the tokens.
        let tokens = TokenUsage {
            web_search_requests: 0,
            ..want
        };
        let price =
            crate::pricing::ModelPrice::with_anthropic_cache_ratios(3_000_000_000, 15_000_000_000);
        assert_eq!(
            price.cost_nanousd(&want) - price.cost_nanousd(&tokens),
            30_000_000
        );
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_gives_the_same_usage(
            cuts in proptest::collection::vec(0usize..4000, 0..16),
            which in 0usize..3,
        ) {
            let (raw, want) = match which {
                0 => (fixture("anthropic_stream.txt"), io(10, 7)),
                1 => (fixture("anthropic_stream_tool_use.txt"), io(11, 20)),
                _ => (CACHED_STREAM.as_bytes().to_vec(), observe_all(
                    AnthropicUsage::streaming(), &[CACHED_STREAM.as_bytes()]).usage()),
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (raw.len() + 1)).collect();
            cuts.sort_unstable();
            let mut o = AnthropicUsage::streaming();
            let mut prev = 0;
            for c in cuts {
                o.observe(&raw[prev..c]);
                prev = c;
            }
            o.observe(&raw[prev..]);
            prop_assert_eq!(o.usage(), want);
        }
    }
}
