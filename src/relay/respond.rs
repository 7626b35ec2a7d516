//! The upstream answer on its way to the client: passed through, or translated into the
//! client's protocol.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use super::call::{Call, Respond, Target, UsageKind};
use crate::body::{Body, BoxError};
use crate::providers::{anthropic, gemini, openai};
use crate::stream::openai::HideUsageChunk;
use crate::translate::{self, Translate, Translated};

/// The error event of the upstream protocol, to end a streamed answer that was cut.
pub fn error_event(call: &Call) -> fn(&str) -> Bytes {
    match (&call.target, call.usage) {
        (Target::Anthropic { .. }, _) => anthropic::error_event,
        (Target::OpenAi { .. }, Some(UsageKind::OpenAiResponses { .. })) => {
            openai::responses_error_event
        }
        (Target::OpenAi { .. }, _) => openai::chat_error_event,
        (Target::Gemini { .. }, _) => gemini::error_event,
    }
}

/// Wraps the tapped upstream body for the client, fixing the headers that translation changes.
/// `event_stream`: the answer's head says it is an event stream (`providers::is_event_stream`).
pub fn body<B>(
    respond: &Respond,
    status: StatusCode,
    event_stream: bool,
    headers: &mut HeaderMap,
    tapped: B,
) -> Body
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static,
{
    let (model, stream, include_usage, created, from_gemini, functions) = match respond {
        Respond::Passthrough => return tapped.boxed(),
        Respond::HideUsageChunk => {
            headers.remove(header::CONTENT_LENGTH);
            return Translated::new(tapped, HideUsageChunk::default()).boxed();
        }
        Respond::ChatFromAnthropic {
            model,
            stream,
            include_usage,
            created,
            functions,
        } => (model, *stream, *include_usage, *created, false, *functions),
        Respond::ChatFromGemini {
            model,
            stream,
            include_usage,
            created,
        } => (model, *stream, *include_usage, *created, true, false),
    };
    if !status.is_success()
        && let Some(convert) = error_converter(respond)
    {
        fix_translated_headers(headers, false);
        return Translated::new(tapped, WholeBody::new(status, convert)).boxed();
    }
    if !(stream && event_stream) {
        // Not reached from the relay, which reads these whole (`whole_json`).
        return match whole_json(respond, status, event_stream, headers) {
            Some(translate) => Translated::new(tapped, translate).boxed(),
            None => tapped.boxed(),
        };
    }
    fix_translated_headers(headers, true);
    if from_gemini {
        Translated::new(
            tapped,
            translate::gemini::ToChatStream::new(model, include_usage, created),
        )
        .boxed()
    } else {
        Translated::new(
            tapped,
            translate::anthropic::ToChatStream::new(model, include_usage, created)
                .with_functions(functions),
        )
        .boxed()
    }
}

/// A translated body has a length of its own, and the content type of what the client asked for.
fn fix_translated_headers(headers: &mut HeaderMap, sse: bool) {
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if sse {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
}

/// For a successful answer that the client gets as one JSON body translated from the upstream's
/// (not as a stream): its translator, the headers fixed for it. `None` for every other answer.
pub fn whole_json(
    respond: &Respond,
    status: StatusCode,
    event_stream: bool,
    headers: &mut HeaderMap,
) -> Option<Box<dyn Translate + Sync>> {
    if !status.is_success() {
        return None;
    }
    let translate: Box<dyn Translate + Sync> = match respond {
        Respond::ChatFromAnthropic {
            model,
            stream,
            functions,
            ..
        } if !(*stream && event_stream) => {
            Box::new(translate::anthropic::ToChatJson::new(model).with_functions(*functions))
        }
        Respond::ChatFromGemini {
            model,
            stream,
            created,
            ..
        } if !(*stream && event_stream) => {
            Box::new(translate::gemini::ToChatJson::new(model, *created))
        }
        _ => return None,
    };
    fix_translated_headers(headers, false);
    Some(translate)
}

/// An upstream error answer (read whole) for the client: as it was, or translated.
pub fn error_body(
    respond: &Respond,
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
) -> (HeaderMap, Bytes) {
    let Some(convert) = error_converter(respond) else {
        return (headers, body);
    };
    fix_translated_headers(&mut headers, false);
    (headers, convert(status.as_u16(), &body))
}

/// The conversion of an upstream error body into the client's protocol; `None` when the client
/// speaks the upstream's.
fn error_converter(respond: &Respond) -> Option<fn(u16, &[u8]) -> Bytes> {
    match respond {
        Respond::Passthrough | Respond::HideUsageChunk => None,
        Respond::ChatFromAnthropic { .. } => Some(translate::anthropic::error_body),
        Respond::ChatFromGemini { .. } => Some(translate::gemini::error_body),
    }
}

/// Collects a whole (error) body and converts it at its end. Error bodies are small; past
/// `MAX` bytes the rest is dropped before conversion.
struct WholeBody {
    status: u16,
    body: Vec<u8>,
    convert: fn(u16, &[u8]) -> Bytes,
}

impl WholeBody {
    const MAX: usize = 64 * 1024;

    fn new(status: StatusCode, convert: fn(u16, &[u8]) -> Bytes) -> WholeBody {
        WholeBody {
            status: status.as_u16(),
            body: Vec::new(),
            convert,
        }
    }
}

impl Translate for WholeBody {
    fn feed(&mut self, chunk: &[u8], _out: &mut BytesMut) {
        let room = Self::MAX.saturating_sub(self.body.len());
        self.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&(self.convert)(self.status, &self.body));
    }
}
