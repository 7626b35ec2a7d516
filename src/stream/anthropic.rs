//! Usage of Anthropic Messages responses (SSE and JSON).
