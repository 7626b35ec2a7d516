//! The upstream answer on its way to the client: passed through, or translated into the
//! client's protocol.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use super::call::{Call, Respond, Target, UsageKind};
use crate::body::{Body, BoxError};
use crate::providers::{anthropic, gemini, openai};

/// The error event of the upstream protocol, to end a streamed answer that was cut.
pub fn error_event(call: &Call) -> fn(&str) -> Bytes {
    match (&call.target, call.usage) {
        (Target::Anthropic { .. }, _) => anthropic::error_event,
        (Target::OpenAi { .. }, Some(UsageKind::OpenAiResponses)) => openai::responses_error_event,
        (Target::OpenAi { .. }, _) => openai::chat_error_event,
        (Target::Gemini { .. }, _) => gemini::error_event,
    }
}

/// Wraps the tapped upstream body for the client, fixing the headers that translation changes.
pub fn body<B>(respond: &Respond, status: StatusCode, headers: &mut HeaderMap, tapped: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static,
{
    match respond {
        Respond::Passthrough => tapped.boxed(),
        // Translations and filters change the length.
        _ => {
            headers.remove(header::CONTENT_LENGTH);
            let _ = status;
            tapped.boxed()
        }
    }
}

/// An upstream error answer (read whole) for the client: as it was, or translated.
pub fn error_body(
    respond: &Respond,
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
) -> (HeaderMap, Bytes) {
    match respond {
        Respond::Passthrough | Respond::HideUsageChunk => (headers, body),
        Respond::ChatFromAnthropic { .. } | Respond::ChatFromGemini { .. } => {
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let _ = status;
            (headers, body)
        }
    }
}
