//! What both translations write: OpenAI's `chat.completion` and its `usage` object, typed so
//! that fields come out in the order OpenAI sends them (stream chunks stay with each
//! translation: their deltas borrow from different upstream shapes); and how both read a
//! history call's arguments.

use serde::Serialize;
use serde_json::{Value, json};

#[derive(Serialize)]
pub(super) struct Completion<'a> {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: &'a str,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Serialize)]
pub(super) struct Choice {
    pub index: usize,
    pub message: Message,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Serialize)]
pub(super) struct Message {
    pub role: &'static str,
    /// `null` when the answer is only tool calls, as OpenAI sends it.
    pub content: Option<String>,
    /// The model's thinking, where the upstream returns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    pub refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The legacy API's one call, for a request that declared `functions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Function>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct ToolCall {
    /// Stream deltas carry the call's position; a whole message does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: Function,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct Function {
    pub name: String,
    /// The arguments as a JSON string, not an object: OpenAI's wire format.
    pub arguments: String,
}

/// OpenAI's `usage` object.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptDetails,
    /// Where the upstream counts reasoning apart (inside `completion_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PromptDetails {
    pub cached_tokens: u64,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CompletionDetails {
    pub reasoning_tokens: u64,
}

/// A call's `arguments` in the history, as the object Anthropic and Gemini want. A call the
/// model wrote before it was cut (`finish_reason: "length"`) has arguments that are not JSON,
/// or not an object; OpenAI takes them as they are, so they go as they were written, under
/// [`RAW_ARGUMENTS`], rather than refuse the conversation.
pub(super) fn history_arguments(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v) if v.is_object() => v,
        _ => json!({ RAW_ARGUMENTS: arguments }),
    }
}

/// The field that carries a history call's arguments that were not a JSON object.
pub(super) const RAW_ARGUMENTS: &str = "_raw_arguments";
