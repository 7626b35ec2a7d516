//! Incremental SSE framing.
