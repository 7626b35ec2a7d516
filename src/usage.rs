//! Token counts of one response, normalised across vendors.
//!
//! Anthropic reports `input_tokens` *excluding* cache reads and writes; OpenAI's `prompt_tokens`
//! *includes* cached tokens. Everything in Switchyard works on the Anthropic convention: the four
//! input kinds below are disjoint, so their sum is what the upstream processed and each kind can
//! be priced on its own. Vendor extractors convert into this shape and nowhere else.

use serde::{Deserialize, Serialize};

/// Tokens of one request, every kind disjoint from the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// All cache writes; equals `cache_creation_5m + cache_creation_1h` when the upstream split them,
    /// else the split fields are zero and everything is priced as a 5-minute write.
    pub cache_creation_input_tokens: u64,
    pub cache_creation_5m_input_tokens: u64,
    pub cache_creation_1h_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// Images generated (image endpoints); priced per image where the price table says so.
    #[serde(default)]
    pub images: u64,
    /// Web searches Anthropic ran for the answer (`usage.server_tool_use.web_search_requests`),
    /// billed per search on top of the tokens. Written only when there were some, so request
    /// log entries without any keep their size.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_search_requests: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The most tokens of one kind one request is billed: a trillion, far past any real answer. An
/// upstream reporting more (broken, or not the vendor it claims to be) would otherwise push the
/// usage counters past what Redis counts (i64), and the batch holding them could never be
/// written.
pub const MAX_TOKENS_PER_REQUEST: u64 = 1 << 40;

impl TokenUsage {
    /// Cache-write tokens that the upstream did not attribute to either TTL; priced as 5-minute writes.
    pub fn cache_creation_unsplit(&self) -> u64 {
        self.cache_creation_input_tokens.saturating_sub(
            self.cache_creation_5m_input_tokens
                .saturating_add(self.cache_creation_1h_input_tokens),
        )
    }

    /// Every count at most `MAX_TOKENS_PER_REQUEST`.
    pub fn capped(self) -> TokenUsage {
        let cap = |n: u64| n.min(MAX_TOKENS_PER_REQUEST);
        TokenUsage {
            input_tokens: cap(self.input_tokens),
            output_tokens: cap(self.output_tokens),
            cache_creation_input_tokens: cap(self.cache_creation_input_tokens),
            cache_creation_5m_input_tokens: cap(self.cache_creation_5m_input_tokens),
            cache_creation_1h_input_tokens: cap(self.cache_creation_1h_input_tokens),
            cache_read_input_tokens: cap(self.cache_read_input_tokens),
            images: cap(self.images),
            web_search_requests: cap(self.web_search_requests),
        }
    }

    /// The prompt as vendors measure it for their long-context prices: every input kind, cached
    /// or not (Anthropic: input + cache reads + cache writes; Gemini: `promptTokenCount`, plus
    /// tool-use prompt tokens, which the reader counts as input).
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    pub fn is_empty(&self) -> bool {
        *self == TokenUsage::default()
    }
}
