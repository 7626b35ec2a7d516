//! One usage reader for every kind of upstream answer, chosen by what was asked.

use crate::relay::call::UsageKind;
use crate::stream::anthropic::AnthropicUsage;
use crate::usage::TokenUsage;

/// Reads the usage of one upstream answer as its chunks pass.
pub enum UsageReader {
    Anthropic(AnthropicUsage),
}

impl UsageReader {
    /// The reader for `kind`, for an SSE answer when `streaming`, else a JSON one.
    pub fn new(kind: UsageKind, streaming: bool) -> Option<UsageReader> {
        match kind {
            UsageKind::AnthropicMessages => Some(UsageReader::Anthropic(if streaming {
                AnthropicUsage::streaming()
            } else {
                AnthropicUsage::json()
            })),
            UsageKind::OpenAiChat
            | UsageKind::OpenAiResponses
            | UsageKind::OpenAiEmbeddings
            | UsageKind::GeminiGenerate => None,
        }
    }

    pub fn observe(&mut self, chunk: &[u8]) {
        match self {
            UsageReader::Anthropic(u) => u.observe(chunk),
        }
    }

    pub fn usage(&self) -> TokenUsage {
        match self {
            UsageReader::Anthropic(u) => u.usage(),
        }
    }
}
