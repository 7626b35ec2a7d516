//! Response bodies on their way to the client: SSE framing, per-protocol usage extraction, and
//! the tap that shows every chunk to a usage observer and passes it on unchanged.
pub mod anthropic;
mod fields;
pub mod gemini;
pub mod openai;
pub mod sse;
pub mod tap;
pub mod usage;
