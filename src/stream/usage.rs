//! One usage reader for every kind of upstream answer, chosen by what was asked.

use crate::relay::call::UsageKind;
use crate::stream::anthropic::AnthropicUsage;
use crate::stream::gemini::GeminiUsage;
use crate::stream::openai::{OpenAiUsage, Operation};
use crate::usage::TokenUsage;

/// Reads the usage of one upstream answer as its chunks pass.
pub enum UsageReader {
    Anthropic(AnthropicUsage),
    OpenAi(OpenAiUsage),
    Gemini(GeminiUsage),
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
                UsageReader::OpenAi(OpenAiUsage::new(Operation::Chat, streaming))
            }
            UsageKind::OpenAiResponses => {
                UsageReader::OpenAi(OpenAiUsage::new(Operation::Responses, streaming))
            }
            UsageKind::OpenAiEmbeddings => {
                UsageReader::OpenAi(OpenAiUsage::new(Operation::Embeddings, streaming))
            }
            UsageKind::GeminiGenerate => UsageReader::Gemini(GeminiUsage::new(streaming)),
        }
    }

    pub fn observe(&mut self, chunk: &[u8]) {
        match self {
            UsageReader::Anthropic(u) => u.observe(chunk),
            UsageReader::OpenAi(u) => u.observe(chunk),
            UsageReader::Gemini(u) => u.observe(chunk),
        }
    }

    pub fn usage(&self) -> TokenUsage {
        match self {
            UsageReader::Anthropic(u) => u.usage(),
            UsageReader::OpenAi(u) => u.usage(),
            UsageReader::Gemini(u) => u.usage(),
        }
    }
}
