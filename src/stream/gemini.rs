//! Usage of Gemini answers: `generateContent` JSON, `streamGenerateContent` as SSE (`alt=sse`)
//! or as a streamed JSON array.
//!
//! Every chunk of a stream carries the usage so far (`usageMetadata`); the last one counts.
//! `promptTokenCount` *includes* `cachedContentTokenCount`, so `input = prompt − cached (+ tool
//! use prompt)` and `cache_read = cached`; thinking tokens (`thoughtsTokenCount`) are billed as
//! output beside `candidatesTokenCount`. Images in the answer (`inlineData` parts) are counted.

use serde::Deserialize;

use super::fields::TopFields;
use super::sse::SseFramer;
use crate::usage::TokenUsage;

/// Strings longer than this inside a JSON answer's `candidates` (text, an image's base64) are not
/// kept: only the parts' shape and `mimeType` count.
const MAX_CANDIDATE_STRING_BYTES: usize = 256;

#[derive(Debug)]
pub struct GeminiUsage {
    /// `Some` for an SSE answer.
    framer: Option<SseFramer>,
    /// A JSON answer: an object (its `candidates` and `usageMetadata` read as they pass), or an
    /// array (a stream without `alt=sse`) whose elements are read the same way one by one, so
    /// that a cut stream is billed for what it reported.
    json: Json,
    last: Option<Metadata>,
    /// Image parts seen in streamed chunks.
    images: u64,
    /// Streamed chunks with parts of the answer: a few tokens each.
    chunks: u64,
    /// A streamed chunk said why the answer ended (`finishReason`) with the output count: the
    /// last one, whose usage counts the whole answer.
    finished: bool,
    /// A streamed chunk said why an answer ended, with usage but perhaps without the output
    /// count: the last chunk of an answer stopped with no output (a `SAFETY` stop), or, with
    /// several candidates, one that ended before the others.
    ended: bool,
    /// An embeddings answer (`UsageKind::GeminiEmbed`): it reports no usage.
    embedding: bool,
}

#[derive(Debug)]
enum Json {
    /// Nothing but whitespace yet.
    Undecided,
    Object(TopFields<2>),
    Array(ArraySplitter),
}

impl GeminiUsage {
    pub fn new(streaming: bool) -> GeminiUsage {
        GeminiUsage {
            framer: streaming.then(SseFramer::new),
            json: Json::Undecided,
            last: None,
            images: 0,
            chunks: 0,
            finished: false,
            ended: false,
            embedding: false,
        }
    }

    /// For an embeddings answer (JSON, without usage).
    pub fn embedding() -> GeminiUsage {
        GeminiUsage {
            embedding: true,
            ..GeminiUsage::new(false)
        }
    }

    pub fn is_embedding(&self) -> bool {
        self.embedding
    }

    pub fn observe(&mut self, chunk: &[u8]) {
        let (last, images, chunks, finished, ended) = (
            &mut self.last,
            &mut self.images,
            &mut self.chunks,
            &mut self.finished,
            &mut self.ended,
        );
        // What one chunk of a stream reported: whether it carried parts of the answer, whether
        // it ended it, its usage so far, the images in it.
        let mut record = |parts: bool, ends: bool, metadata: Option<Metadata>, found: u64| {
            *chunks += u64::from(parts);
            // The last chunk: an end, with the output count (with several candidates, one may
            // end before the others, whose chunks carry no output count yet).
            *finished |= ends && metadata.is_some_and(|m| m.candidates_token_count > 0);
            // Of the last chunk only: with several candidates, one may end before the others.
            *ended = ends && metadata.is_some();
            *images += found;
            if metadata.is_some() {
                *last = metadata;
            }
        };
        if let Some(framer) = &mut self.framer {
            framer.feed(chunk, |ev| {
                let data = ev.data;
                // Only a chunk that reports usage or carries an image is parsed.
                let parsed = (data.contains("usageMetadata") || data.contains("inlineData"))
                    .then(|| serde_json::from_str::<Chunk>(data).ok())
                    .flatten();
                let (metadata, found) = parsed.map_or((None, 0), |c| {
                    let found = c.images();
                    (c.usage_metadata, found)
                });
                record(
                    data.contains("\"parts\""),
                    data.contains("\"finishReason\""),
                    metadata,
                    found,
                );
            });
            return;
        }
        let mut on_element = |element: &TopFields<2>| {
            let candidates = element.get("candidates").unwrap_or_default();
            let (metadata, found) = read_object(element);
            record(
                memchr::memmem::find(candidates, b"\"parts\"").is_some(),
                memchr::memmem::find(candidates, b"\"finishReason\"").is_some(),
                metadata,
                found,
            );
        };
        if let Json::Undecided = self.json {
            self.json = match chunk.trim_ascii_start().first() {
                None => return,
                Some(b'[') => Json::Array(ArraySplitter::default()),
                Some(_) => Json::Object(reader()),
            };
        }
        match &mut self.json {
            Json::Array(array) => array.feed(chunk, &mut on_element),
            Json::Object(fields) => fields.feed(chunk),
            Json::Undecided => {}
        }
    }

    /// For a stream cut before its last chunk: the chunks that carried parts of the answer
    /// (Gemini reports the output count only in the last chunk). `None` once the last chunk
    /// came (its count is the vendor's; a final chunk with an empty part, as a thought
    /// signature comes, may make more chunks than tokens), for a `complete` stream (one that
    /// ran to its end) that ended with a reason and usage but no output count (a `SAFETY` stop
    /// reports none: the vendor's usage counts), and for a JSON answer.
    pub fn answer_chunks(&self, complete: bool) -> Option<u64> {
        let stream = self.framer.is_some() || matches!(self.json, Json::Array(_));
        let counted = self.finished || (complete && self.ended);
        (stream && !counted).then_some(self.chunks)
    }

    /// The usage reported so far (zero when none was).
    pub fn usage(&self) -> TokenUsage {
        let (metadata, images) = match &self.json {
            Json::Object(fields) if self.framer.is_none() => read_object(fields),
            _ => (self.last, self.images),
        };
        let mut usage = metadata.map(|m| m.normalised()).unwrap_or_default();
        usage.images = images;
        usage
    }
}

/// Reads a JSON answer's (or an array stream element's) `candidates` and `usageMetadata`.
fn reader() -> TopFields<2> {
    TopFields::new(["candidates", "usageMetadata"]).eliding_strings_over(MAX_CANDIDATE_STRING_BYTES)
}

/// A JSON answer's usage and image count (none unless the answer is whole and readable).
fn read_object(fields: &TopFields<2>) -> (Option<Metadata>, u64) {
    let chunk = Chunk {
        usage_metadata: fields
            .get("usageMetadata")
            .and_then(|m| serde_json::from_slice(m).ok()),
        candidates: fields
            .get("candidates")
            .and_then(|c| serde_json::from_slice(c).ok())
            .unwrap_or_default(),
    };
    (chunk.usage_metadata, chunk.images())
}

/// Cuts a streamed JSON array into its elements as they complete, each read by its own
/// [`reader`]: only the fields that bill it are held, whatever its size. Only object elements
/// are reported.
#[derive(Debug, Default)]
struct ArraySplitter {
    /// Open `[` and `{` outside strings; the array itself is depth 1.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The object element being read.
    element: Option<TopFields<2>>,
}

impl ArraySplitter {
    fn feed(&mut self, chunk: &[u8], mut on_element: impl FnMut(&TopFields<2>)) {
        // Start of the part of `chunk` inside the current element, if one is open.
        let mut start = self.element.is_some().then_some(0);
        for (i, &b) in chunk.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth = self.depth.saturating_add(1);
                    if self.depth == 2 && b == b'{' {
                        self.element = Some(reader());
                        start = Some(i);
                    }
                }
                b'}' | b']' => {
                    if self.depth == 2
                        && let Some(from) = start.take()
                        && let Some(mut element) = self.element.take()
                    {
                        element.feed(&chunk[from..=i]);
                        on_element(&element);
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                _ => {}
            }
        }
        if let (Some(from), Some(element)) = (start, &mut self.element) {
            element.feed(&chunk[from..]);
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
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    /// `body` observed in pieces of `split` bytes.
    fn observed(streaming: bool, body: &[u8], split: usize) -> GeminiUsage {
        let mut u = GeminiUsage::new(streaming);
        for part in body.chunks(split.max(1)) {
            u.observe(part);
        }
        u
    }

    fn read(streaming: bool, body: &[u8], split: usize) -> TokenUsage {
        observed(streaming, body, split).usage()
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
        // The array form of a stream: the last metadata counts, also when the stream is cut.
        let array = br#"[{"usageMetadata":{"promptTokenCount":5}},
{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3}}]"#;
        for split in [1, 4, 200] {
            let u = read(false, array, split);
            assert_eq!((u.input_tokens, u.output_tokens), (5, 3), "split {split}");
        }
        let cut = &array[..array.len() - 10];
        let u = read(false, cut, 7);
        assert_eq!(
            (u.input_tokens, u.output_tokens),
            (5, 0),
            "billed up to the last whole chunk"
        );
        // Braces inside strings do not confuse the split.
        let tricky = br#"[{"candidates":[{"content":{"parts":[{"text":"} ] {"}]}}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":1}}]"#;
        assert_eq!(read(false, tricky, 3).output_tokens, 1);
        assert_eq!(
            read(false, br#"{"error":{"code":400}}"#, 2),
            TokenUsage::default()
        );
    }

    #[test]
    fn an_answer_with_images_is_read_without_holding_them() {
        let image = "iVBORw0KGgo".repeat(400_000);
        let body = format!(
            r#"{{"candidates": [{{"content": {{"role": "model", "parts": [{{"text": "Here:"}},
            {{"inlineData": {{"mimeType": "image/png", "data": "{image}"}}}},
            {{"inlineData": {{"mimeType": "image/jpeg", "data": "{image}"}}}},
            {{"inlineData": {{"mimeType": "audio/wav", "data": "AAAA"}}}}]}}}}],
            "usageMetadata": {{"promptTokenCount": 9, "candidatesTokenCount": 2580}},
            "modelVersion": "gemini-2.5-flash-image"}}"#
        );
        for split in [4096, 65536, body.len()] {
            let u = observed(false, body.as_bytes(), split);
            let usage = u.usage();
            assert_eq!(
                (usage.input_tokens, usage.output_tokens, usage.images),
                (9, 2580, 2),
                "split {split}"
            );
            match &u.json {
                Json::Object(fields) => {
                    assert!(fields.get("candidates").unwrap().len() < 512);
                }
                _ => panic!("an object answer"),
            }
        }
        // Cut before its end: nothing is read.
        let mut u = GeminiUsage::new(false);
        u.observe(&body.as_bytes()[..body.len() - 2]);
        assert_eq!(u.usage(), TokenUsage::default());

        // The same answer as the second element of an array stream.
        let array = format!(
            r#"[{{"candidates": [{{"content": {{"parts": [{{"text": "Here"}}]}}}}],
            "usageMetadata": {{"promptTokenCount": 9}}}},
            {body}]"#
        );
        for split in [4096, array.len()] {
            let u = observed(false, array.as_bytes(), split);
            let usage = u.usage();
            assert_eq!(
                (usage.input_tokens, usage.output_tokens, usage.images),
                (9, 2580, 2),
                "split {split}"
            );
            assert_eq!(u.answer_chunks(false), Some(2));
            match &u.json {
                Json::Array(splitter) => assert!(splitter.element.is_none()),
                _ => panic!("an array answer"),
            }
        }
    }
}
