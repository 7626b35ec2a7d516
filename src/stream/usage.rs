//! One usage reader for every kind of upstream answer, chosen by what was asked.

use crate::relay::call::UsageKind;
use crate::stream::anthropic::AnthropicUsage;
use crate::stream::gemini::GeminiUsage;
use crate::stream::openai::{OpenAiUsage, Operation};
use crate::usage::TokenUsage;

/// Reads the usage of one upstream answer as its chunks pass.
///
/// The larger readers are boxed: the reader lives in the response body's tap, which is boxed
/// once per request, and glibc serves a box of up to 1,032 bytes from its per-thread cache but a
/// larger one from its shared bins, with a consolidation of the small free chunks first.
#[expect(
    clippy::large_enum_variant,
    reason = "the Anthropic reader, the one most requests use, stays inline: no box of its own"
)]
pub enum UsageReader {
    Anthropic(AnthropicUsage),
    OpenAi(Box<OpenAiUsage>),
    Gemini(Box<GeminiUsage>),
}

impl UsageReader {
    /// The reader for `kind`, for an SSE answer when `streaming`, else a JSON one.
    pub fn new(kind: UsageKind, streaming: bool) -> UsageReader {
        match kind {
            UsageKind::AnthropicMessages => UsageReader::Anthropic(if streaming {
                AnthropicUsage::streaming()
            } else {
                AnthropicUsage::json()
            }),
            UsageKind::OpenAiChat => {
                UsageReader::OpenAi(Box::new(OpenAiUsage::new(Operation::Chat, streaming)))
            }
            UsageKind::OpenAiResponses { stored } => {
                let reader = OpenAiUsage::new(Operation::Responses, streaming);
                UsageReader::OpenAi(Box::new(if stored {
                    reader.reading_response_id()
                } else {
                    reader
                }))
            }
            UsageKind::OpenAiEmbeddings => {
                UsageReader::OpenAi(Box::new(OpenAiUsage::new(Operation::Embeddings, streaming)))
            }
            UsageKind::GeminiGenerate => UsageReader::Gemini(Box::new(GeminiUsage::new(streaming))),
            UsageKind::GeminiEmbed => UsageReader::Gemini(Box::new(GeminiUsage::embedding())),
        }
    }

    pub fn observe(&mut self, chunk: &[u8]) {
        match self {
            UsageReader::Anthropic(u) => u.observe(chunk),
            UsageReader::OpenAi(u) => u.observe(chunk),
            UsageReader::Gemini(u) => u.observe(chunk),
        }
    }

    /// The id of the stored response the answer made (a Responses answer whose kind says
    /// `stored`), once seen.
    pub fn response_id(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            UsageReader::OpenAi(u) => u.response_id(),
            UsageReader::Anthropic(_) | UsageReader::Gemini(_) => None,
        }
    }

    pub fn usage(&self) -> TokenUsage {
        match self {
            UsageReader::Anthropic(u) => u.usage(),
            UsageReader::OpenAi(u) => u.usage(),
            UsageReader::Gemini(u) => u.usage(),
        }
    }

    /// What to bill once the answer is over, and whether a count in it is an estimate. What the
    /// upstream reported, except where its final count never came:
    /// - an OpenAI stream that streamed part of an answer but reported no usage (cut before its
    ///   usage chunk, or an upstream that ignores `include_usage`): `input_estimate` in, one
    ///   token per chunk out;
    /// - an Anthropic stream cut before its final `message_delta`: at least one token per
    ///   `content_block_delta` out (the input came with `message_start`);
    /// - a Gemini stream cut before its last chunk (the only one with the output count): at
    ///   least one token per chunk with parts of the answer (the input came with the first); not
    ///   one that ran to its end on a chunk with a `finishReason` and usage but no output count
    ///   (a `SAFETY` stop), which is billed as reported;
    /// - a Gemini embeddings answer, which reports no usage: `input_estimate` in;
    /// - an answer cut before its input count came (a stream cut before its first event with
    ///   usage, a reasoning model's stream cut while it thought, a JSON answer whose client left
    ///   before its end, where the usage is): `input_estimate` in. The upstream took the prompt
    ///   when it sent its head, and bills it. Not an answer that ended as it meant to (`complete`)
    ///   without one: an error sent as its first event is not billed by the vendor.
    ///
    /// The output counts are lower bounds of what the vendor bills for the answer it started;
    /// the input estimate is the one admission reserved with. Either way a client cannot get
    /// answers unbilled by hanging up before their end.
    pub fn billed(&self, input_estimate: u64, complete: bool) -> (TokenUsage, bool) {
        let mut usage = self.usage();
        let estimated = match self {
            UsageReader::OpenAi(u) => match u.unreported_chunks() {
                Some(chunks) if chunks > 0 => {
                    usage.input_tokens = input_estimate;
                    usage.output_tokens = chunks;
                    true
                }
                _ => false,
            },
            UsageReader::Anthropic(u) => match u.unreported_deltas() {
                Some(deltas) if deltas > usage.output_tokens => {
                    usage.output_tokens = deltas;
                    true
                }
                _ => false,
            },
            UsageReader::Gemini(u) if u.is_embedding() => {
                let unreported = usage.input_tokens == 0;
                if unreported {
                    usage.input_tokens = input_estimate;
                }
                unreported
            }
            UsageReader::Gemini(u) => match u.answer_chunks(complete) {
                Some(chunks) if chunks > usage.output_tokens => {
                    usage.output_tokens = chunks;
                    true
                }
                _ => false,
            },
        };
        if !complete && usage.prompt_tokens() == 0 && input_estimate > 0 {
            usage.input_tokens = input_estimate;
            return (usage, true);
        }
        (usage, estimated)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    fn reader(kind: UsageKind, body: &[u8]) -> UsageReader {
        let mut reader = UsageReader::new(kind, true);
        reader.observe(body);
        reader
    }

    /// The stream up to (not including) the first event that reports usage after its start.
    fn cut_before(body: &[u8], marker: &str) -> Vec<u8> {
        let text = std::str::from_utf8(body).unwrap();
        let at = text.find(marker).unwrap();
        // Back to the start of that event (after a blank line: LF or CRLF).
        let before = &text[..at];
        let start = [("\n\n", 2), ("\r\n\r\n", 4)]
            .iter()
            .filter_map(|(blank, len)| before.rfind(blank).map(|i| i + len))
            .max()
            .unwrap_or(0);
        body[..start].to_vec()
    }

    #[test]
    fn an_openai_stream_cut_before_its_usage_is_billed_by_size_and_chunks() {
        let body = fixture("openai_chat_stream.txt");
        let whole = reader(UsageKind::OpenAiChat, &body);
        let (reported, estimated) = whole.billed(999, true);
        assert!(!estimated);
        assert_eq!(reported, whole.usage());
        assert_ne!(reported.input_tokens, 999);

        let cut = cut_before(&body, "\"usage\": {");
        let chunks = std::str::from_utf8(&cut).unwrap().matches("data: ").count() as u64;
        assert!(chunks > 0);
        let (billed, estimated) = reader(UsageKind::OpenAiChat, &cut).billed(999, false);
        assert!(estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (999, chunks));
        // Nothing streamed yet (a reasoning model still thinking when the client left): the
        // prompt, which the upstream took when it answered.
        let (billed, estimated) = reader(UsageKind::OpenAiChat, b"").billed(999, false);
        assert!(estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (999, 0));
    }

    /// Whatever the vendor, an answer whose input count never came bills the estimate: a
    /// Responses stream cut after `response.created`, JSON answers whose clients left before the
    /// usage at their end.
    #[test]
    fn an_answer_without_its_input_count_is_billed_the_input_estimate() {
        let body = fixture("openai_responses_stream.txt");
        let started = cut_before(&body, ".delta");
        let cases = [
            reader(UsageKind::OpenAiResponses { stored: true }, &started),
            UsageReader::new(UsageKind::OpenAiChat, false),
            UsageReader::new(UsageKind::AnthropicMessages, false),
            UsageReader::new(UsageKind::GeminiGenerate, false),
        ];
        for (i, mut cut) in cases.into_iter().enumerate() {
            cut.observe(br#"{"id":"x","choices":[{"message":{"content":"half an ans"#);
            let (billed, estimated) = cut.billed(77, false);
            assert!(estimated, "case {i}");
            assert_eq!(billed.input_tokens, 77, "case {i}");
        }
        // Nothing to estimate from: nothing billed.
        assert!(
            UsageReader::new(UsageKind::OpenAiChat, false)
                .billed(0, false)
                .0
                .is_empty()
        );
        // An answer that ended as it meant to without a count (an error as its first event):
        // the vendor bills nothing, nor does the relay.
        let error_first =
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
        let (billed, _) = reader(UsageKind::AnthropicMessages, error_first).billed(77, true);
        assert!(billed.is_empty(), "{billed:?}");
    }

    #[test]
    fn a_responses_stream_cut_before_its_end_is_billed_a_token_per_delta() {
        let body = fixture("openai_responses_stream.txt");
        assert!(
            !reader(UsageKind::OpenAiResponses { stored: true }, &body)
                .billed(5, true)
                .1
        );
        let cut = cut_before(&body, "response.completed");
        let deltas = std::str::from_utf8(&cut)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("event: ") && l.ends_with(".delta"))
            .count() as u64;
        assert!(deltas > 0);
        let (billed, estimated) =
            reader(UsageKind::OpenAiResponses { stored: true }, &cut).billed(5, false);
        assert!(estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (5, deltas));
    }

    #[test]
    fn a_gemini_stream_cut_before_its_last_chunk_is_billed_a_token_per_chunk() {
        let body = fixture("gemini_stream_sse.txt");
        let whole = reader(UsageKind::GeminiGenerate, &body);
        assert_eq!(whole.billed(999, true), (whole.usage(), false));
        assert_eq!(whole.usage().output_tokens, 3);
        let cut = cut_before(&body, "candidatesTokenCount");
        let (billed, estimated) = reader(UsageKind::GeminiGenerate, &cut).billed(999, false);
        assert!(estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (13, 1));
        // The same stream as a JSON array (no `alt=sse`).
        let elements: Vec<&str> = std::str::from_utf8(&cut)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        let array = format!("[{}", elements.join(",\n"));
        let mut json = UsageReader::new(UsageKind::GeminiGenerate, false);
        json.observe(array.as_bytes());
        assert_eq!(json.billed(999, false), (billed, true));
    }

    /// A whole Gemini stream is billed its own count, even with more chunks than output tokens:
    /// a one-token answer whose last chunk carries only an empty part (how a thought signature
    /// comes).
    #[test]
    fn a_whole_gemini_stream_is_billed_its_count_whatever_its_chunks() {
        let first = r#"data: {"candidates": [{"content": {"parts": [{"text": "Yes"}], "role": "model"}}], "usageMetadata": {"promptTokenCount": 5}}"#;
        let last = r#"data: {"candidates": [{"content": {"parts": [{"text": "", "thoughtSignature": "c2ln"}], "role": "model"}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6}}"#;
        let body = format!("{first}\r\n\r\n{last}\r\n\r\n");
        let whole = reader(UsageKind::GeminiGenerate, body.as_bytes());
        let (billed, estimated) = whole.billed(999, true);
        assert!(!estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (5, 1));
        // The same answer as an array (no `alt=sse`).
        let array = format!("[{}, {}]", &first[6..], &last[6..]);
        let mut json = UsageReader::new(UsageKind::GeminiGenerate, false);
        json.observe(array.as_bytes());
        assert_eq!(json.billed(999, true), (billed, false));

        // Two candidates, the first ended before the other: a stream cut then is cut before its
        // last chunk (the one with the output count), and billed a token per chunk.
        let ended_one = r#"data: {"candidates": [{"content": {"parts": [{"text": "A"}]}, "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 5}}"#;
        let other = r#"data: {"candidates": [{"content": {"parts": [{"text": "B"}]}, "index": 1}], "usageMetadata": {"promptTokenCount": 5}}"#;
        let cut = format!("{first}\r\n\r\n{ended_one}\r\n\r\n{other}\r\n\r\n");
        let (billed, estimated) =
            reader(UsageKind::GeminiGenerate, cut.as_bytes()).billed(999, false);
        assert!(estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (5, 3));

        // A stream stopped for safety after a part of its answer: its last chunk says why, with
        // usage but no output count. Run to its end, it is billed as reported; cut there (the
        // connection lost before its end), still a token per chunk.
        let safety = r#"data: {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}], "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}"#;
        let body = format!("{first}\r\n\r\n{safety}\r\n\r\n");
        let stopped = reader(UsageKind::GeminiGenerate, body.as_bytes());
        let (billed, estimated) = stopped.billed(999, true);
        assert!(!estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (5, 0));
        let (billed, estimated) = stopped.billed(999, false);
        assert!(estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (5, 1));
        let array = format!("[{}, {}]", &first[6..], &safety[6..]);
        let mut json = UsageReader::new(UsageKind::GeminiGenerate, false);
        json.observe(array.as_bytes());
        assert_eq!(json.billed(999, true).0.output_tokens, 0);
    }

    #[test]
    fn an_anthropic_stream_cut_before_its_final_count_is_billed_a_token_per_delta() {
        let mut body = String::from(concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":40,"output_tokens":1}}}"#,
            "\n\n",
        ));
        for _ in 0..6 {
            body.push_str(concat!(
                "event: content_block_delta\n",
                r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ab"}}"#,
                "\n\n",
            ));
        }
        let (billed, estimated) =
            reader(UsageKind::AnthropicMessages, body.as_bytes()).billed(999, false);
        assert!(estimated);
        assert_eq!((billed.input_tokens, billed.output_tokens), (40, 6));
        // Unnamed events count the same.
        let unnamed: String = body
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            reader(UsageKind::AnthropicMessages, unnamed.as_bytes())
                .billed(999, false)
                .0
                .output_tokens,
            6
        );
        // The final count, once it came, is billed as it is.
        body.push_str(concat!(
            "event: message_delta\n",
            r#"data: {"type":"message_delta","usage":{"output_tokens":4}}"#,
            "\n\n",
        ));
        let (billed, estimated) =
            reader(UsageKind::AnthropicMessages, body.as_bytes()).billed(999, false);
        assert!(!estimated);
        assert_eq!(billed.output_tokens, 4);
    }
}
