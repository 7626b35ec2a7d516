//! Usage of Gemini answers: `generateContent` JSON, `streamGenerateContent` as SSE (`alt=sse`)
//! or as a streamed JSON array.
//!
//! Every chunk of a stream carries the usage so far (`usageMetadata`); the last one counts.
//! `promptTokenCount` *includes* `cachedContentTokenCount`, so `input = prompt − cached (+ tool
//! use prompt)` and `cache_read = cached`; thinking tokens (`thoughtsTokenCount`) are billed as
//! output beside `candidatesTokenCount`. Images in the answer (`inlineData` parts) are counted.

use serde::Deserialize;

use super::Collected;
use super::sse::SseFramer;
use crate::usage::TokenUsage;

/// A JSON answer (or array stream) larger than this is passed on but not read for usage.
const MAX_JSON_BODY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug)]
pub struct GeminiUsage {
    /// `Some` for an SSE answer.
    framer: Option<SseFramer>,
    json: Collected,
    last: Option<Metadata>,
    /// Image parts seen in an SSE answer.
    images: u64,
}

impl GeminiUsage {
    pub fn new(streaming: bool) -> GeminiUsage {
        GeminiUsage {
            framer: streaming.then(SseFramer::new),
            json: Collected::new(MAX_JSON_BODY_BYTES, "Gemini answer"),
            last: None,
            images: 0,
        }
    }

    pub fn observe(&mut self, chunk: &[u8]) {
        let (last, images) = (&mut self.last, &mut self.images);
        match &mut self.framer {
            Some(framer) => framer.feed(chunk, |ev| {
                if !ev.data.contains("usageMetadata") && !ev.data.contains("inlineData") {
                    return;
                }
                if let Ok(c) = serde_json::from_str::<Chunk>(ev.data) {
                    *images += c.images();
                    if c.usage_metadata.is_some() {
                        *last = c.usage_metadata;
                    }
                }
            }),
            None => self.json.push(chunk),
        }
    }

    /// The usage reported so far (zero when none was).
    pub fn usage(&self) -> TokenUsage {
        let (metadata, images) = match &self.framer {
            Some(_) => (self.last, self.images),
            None => self.parse_json(),
        };
        let mut usage = metadata.map(|m| m.normalised()).unwrap_or_default();
        usage.images = images;
        usage
    }

    /// A JSON object, or the array a stream without `alt=sse` is.
    fn parse_json(&self) -> (Option<Metadata>, u64) {
        let body = self.json.bytes();
        let trimmed = body.trim_ascii_start();
        if trimmed.starts_with(b"[") {
            let Ok(chunks) = serde_json::from_slice::<Vec<Chunk>>(trimmed) else {
                return (None, 0);
            };
            let last = chunks.iter().rev().find_map(|c| c.usage_metadata);
            (last, chunks.iter().map(Chunk::images).sum())
        } else {
            match serde_json::from_slice::<Chunk>(trimmed) {
                Ok(c) => (c.usage_metadata, c.images()),
                Err(_) => (None, 0),
            }
        }
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Option<Metadata>,
    #[serde(default)]
    candidates: Vec<Candidate>,
}

impl Chunk {
    fn images(&self) -> u64 {
        let parts = self
            .candidates
            .iter()
            .filter_map(|c| c.content.as_ref())
            .flat_map(|c| &c.parts);
        parts
            .filter(|p| {
                p.inline_data
                    .as_ref()
                    .is_some_and(|d| d.mime_type.starts_with("image/"))
            })
            .count() as u64
    }
}

#[derive(Deserialize)]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default, rename = "inlineData")]
    inline_data: Option<InlineData>,
}

#[derive(Deserialize)]
struct InlineData {
    #[serde(default, rename = "mimeType")]
    mime_type: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
}

impl Metadata {
    fn normalised(&self) -> TokenUsage {
        let cached = self.cached_content_token_count.min(self.prompt_token_count);
        TokenUsage {
            input_tokens: (self.prompt_token_count - cached)
                .saturating_add(self.tool_use_prompt_token_count),
            output_tokens: self
                .candidates_token_count
                .saturating_add(self.thoughts_token_count),
            cache_read_input_tokens: cached,
            ..TokenUsage::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    fn read(streaming: bool, body: &[u8], split: usize) -> TokenUsage {
        let mut u = GeminiUsage::new(streaming);
        for part in body.chunks(split.max(1)) {
            u.observe(part);
        }
        u.usage()
    }

    #[test]
    fn the_fixtures_read_the_same_at_any_chunking() {
        let sse = fixture("gemini_stream_sse.txt");
        let whole = read(true, &sse, sse.len());
        assert!(
            whole.input_tokens > 0 && whole.output_tokens > 0,
            "{whole:?}"
        );
        for split in [1, 5, 100] {
            assert_eq!(read(true, &sse, split), whole);
        }
        let json = fixture("gemini_json.txt");
        assert!(read(false, &json, 3).input_tokens > 0);
    }

    #[test]
    fn cached_and_thought_tokens_are_normalised() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"x"},{"inlineData":{"mimeType":"image/png","data":"AA=="}}]}}],"usageMetadata":{"promptTokenCount":60,"candidatesTokenCount":7,"thoughtsTokenCount":5,"cachedContentTokenCount":10,"toolUsePromptTokenCount":2}}"#;
        let u = read(false, body, 7);
        assert_eq!(
            (
                u.input_tokens,
                u.cache_read_input_tokens,
                u.output_tokens,
                u.images
            ),
            (52, 10, 12, 1)
        );
        // The array form of a stream: the last metadata counts.
        let array = br#"[{"usageMetadata":{"promptTokenCount":5}},
{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3}}]"#;
        let u = read(false, array, 4);
        assert_eq!((u.input_tokens, u.output_tokens), (5, 3));
        assert_eq!(
            read(false, br#"{"error":{"code":400}}"#, 2),
            TokenUsage::default()
        );
    }
}
