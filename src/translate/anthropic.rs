//! OpenAI Chat Completions on Claude models.
//!
//! The relay calls [`request`] on the client's body and sends the Messages request it returns to
//! `/v1/messages`. A successful answer is wrapped in `Translated` with [`ToChatJson`] or
//! [`ToChatStream`]; an error answer's body is replaced by [`error_body`], keeping its status.
//! Usage is read from the Anthropic bytes before they reach these translators.
//!
//! - `request`: chat request → Messages request.
//! - `response`: Messages JSON → `chat.completion`, Messages SSE → `chat.completion.chunk`s, and
//!   error bodies.

mod request;
mod response;

pub use request::{MessagesRequest, request};
pub use response::{ToChatJson, ToChatStream, error_body};
