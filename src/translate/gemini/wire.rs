//! The Gemini response shapes read, and their mappings to the OpenAI shapes written
//! (`translate::chat`) that the JSON and the stream translator share.
//!
//! Gemini fields are all optional and unknown ones ignored: a new field upstream must not break
//! a translation.

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use super::GeminiError;
use crate::translate::chat::{CompletionDetails, Function, PromptDetails, ToolCall, Usage};

/// One `GenerateContentResponse` (a whole JSON answer, or one stream event).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct GenResponse {
    pub candidates: Vec<Candidate>,
    pub usage_metadata: Option<UsageMetadata>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub response_id: Option<String>,
    /// Present instead of the rest when the upstream failed.
    pub error: Option<GeminiError>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Candidate {
    pub content: Option<Content>,
    pub finish_reason: Option<String>,
    pub index: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Content {
    pub parts: Vec<Part>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Part {
    pub text: Option<String>,
    /// A thought summary: reasoning, not answer text.
    pub thought: bool,
    pub function_call: Option<FunctionCall>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct FunctionCall {
    pub id: Option<String>,
    pub name: String,
    pub args: Option<serde_json::Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct UsageMetadata {
    pub prompt_token_count: u64,
    pub candidates_token_count: u64,
    pub thoughts_token_count: u64,
    pub cached_content_token_count: u64,
    /// What the results of Gemini's own tools (search, code execution) added to the prompt.
    pub tool_use_prompt_token_count: u64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct PromptFeedback {
    pub block_reason: Option<String>,
}

impl Candidate {
    /// The position this candidate answers for; Gemini leaves `index` out for the first.
    pub fn choice_index(&self, position: usize) -> usize {
        self.index.unwrap_or(position)
    }

    pub fn parts(&self) -> &[Part] {
        self.content.as_ref().map_or(&[], |c| &c.parts)
    }
}

impl Part {
    /// Answer text: thought parts are the model's reasoning and are not shown as content.
    pub fn answer_text(&self) -> Option<&str> {
        self.text
            .as_deref()
            .filter(|t| !t.is_empty() && !self.thought)
    }
}

impl GenResponse {
    /// A prompt Gemini refused to answer at all: no candidates, a block reason.
    pub fn prompt_blocked(&self) -> bool {
        self.candidates.is_empty()
            && self
                .prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
    }
}

/// Finish reasons that say the model's answer failed (a function call it could not form, or
/// one it may not make): OpenAI has no such finish reason, and `stop` with whatever came would
/// end a client's tool loop as if the model were done, so the client gets an error instead.
pub(super) fn failed_finish(gemini: &str) -> bool {
    matches!(
        gemini,
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS"
    )
}

/// OpenAI's `finish_reason` for a Gemini one. A stop that produced function calls is
/// `tool_calls`, which is what OpenAI clients check before running tools.
pub(super) fn finish_reason(gemini: &str, has_tool_calls: bool) -> &'static str {
    match gemini {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

impl Usage {
    /// Gemini's `promptTokenCount` already includes cached tokens, as OpenAI's `prompt_tokens`
    /// does, but not what its own tools added to the prompt, which is billed as input too (as
    /// the relay bills it); thinking tokens are billed as output, so they belong to
    /// `completion_tokens`.
    pub(super) fn from_gemini(u: &UsageMetadata) -> Usage {
        let prompt = u
            .prompt_token_count
            .saturating_add(u.tool_use_prompt_token_count);
        let completion = u
            .candidates_token_count
            .saturating_add(u.thoughts_token_count);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: PromptDetails {
                cached_tokens: u.cached_content_token_count,
            },
            completion_tokens_details: Some(CompletionDetails {
                reasoning_tokens: u.thoughts_token_count,
            }),
        }
    }
}

impl ToolCall {
    pub(super) fn from_gemini(call: &FunctionCall, index: Option<usize>) -> ToolCall {
        let arguments = match &call.args {
            Some(args) if !args.is_null() => args.to_string(),
            _ => "{}".to_owned(),
        };
        ToolCall {
            index,
            id: call
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(super::new_call_id),
            kind: "function",
            function: Function {
                name: call.name.clone(),
                arguments,
            },
        }
    }
}

/// Appends `value` as JSON. The types written here always serialize; a failure would be a bug,
/// logged rather than allowed to take the response down.
pub(super) fn write_json(out: &mut BytesMut, value: &impl Serialize) {
    if let Err(e) = serde_json::to_writer(out.writer(), value) {
        tracing::error!(error = %e, "encoding a translated OpenAI response");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason("STOP", false), "stop");
        assert_eq!(finish_reason("STOP", true), "tool_calls");
        assert_eq!(finish_reason("MAX_TOKENS", true), "length");
        for r in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(finish_reason(r, false), "content_filter");
        }
        assert_eq!(finish_reason("OTHER", false), "stop");
    }

    #[test]
    fn usage_counts_thoughts_as_completion() {
        let meta: UsageMetadata = serde_json::from_str(
            r#"{"promptTokenCount":100,"candidatesTokenCount":7,"thoughtsTokenCount":30,
                "cachedContentTokenCount":64,"totalTokenCount":137}"#,
        )
        .unwrap();
        let usage = Usage::from_gemini(&meta);
        assert_eq!(
            serde_json::to_value(usage).unwrap(),
            serde_json::json!({
                "prompt_tokens": 100, "completion_tokens": 37, "total_tokens": 137,
                "prompt_tokens_details": { "cached_tokens": 64 },
                "completion_tokens_details": { "reasoning_tokens": 30 },
            })
        );
        // What Gemini's own tools added to the prompt is input, as the relay bills it.
        let meta: UsageMetadata = serde_json::from_str(
            r#"{"promptTokenCount":100,"candidatesTokenCount":7,"toolUsePromptTokenCount":40}"#,
        )
        .unwrap();
        let usage = serde_json::to_value(Usage::from_gemini(&meta)).unwrap();
        assert_eq!(
            (&usage["prompt_tokens"], &usage["total_tokens"]),
            (&serde_json::json!(140), &serde_json::json!(147))
        );
    }

    #[test]
    fn thought_and_empty_parts_are_not_text() {
        let parts: Vec<Part> = serde_json::from_str(
            r#"[{"text":"hm","thought":true},{"text":""},{"text":"yes","thoughtSignature":"x"}]"#,
        )
        .unwrap();
        let texts: Vec<_> = parts.iter().filter_map(Part::answer_text).collect();
        assert_eq!(texts, ["yes"]);
    }
}
