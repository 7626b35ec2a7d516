//! Mock Anthropic upstream.
