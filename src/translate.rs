//! Translation between API shapes: a client speaking one protocol, an upstream speaking another.
//!
//! The relay translates the request body before it is sent, and wraps the upstream body (after
//! the usage tap, which reads the upstream's own format) in [`Translated`], which turns upstream
//! bytes into the bytes the client's protocol expects. A [`Translate`] is a small state machine
//! fed with upstream chunks as they arrive; a streaming translator emits client events as soon
//! as the upstream events that cause them are complete, a JSON translator collects the body and
//! converts it at the end.

pub mod anthropic;
mod chat;
pub mod gemini;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// Turns an upstream response body into the client's protocol, chunk by chunk.
pub trait Translate: Send + Unpin + 'static {
    /// Feeds one upstream chunk (arbitrary boundaries: an SSE event or a JSON value may be split
    /// across chunks); appends what the client should receive now to `out`.
    fn feed(&mut self, chunk: &[u8], out: &mut BytesMut);
    /// The upstream body ended; appends whatever the client still needs (a final event, the
    /// converted JSON of a collected body, `data: [DONE]`).
    fn finish(&mut self, out: &mut BytesMut);
}

impl<T: Translate + ?Sized> Translate for Box<T> {
    fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        (**self).feed(chunk, out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        (**self).finish(out);
    }
}

/// `inner` with every data frame passed through `T`. Frames that translate to nothing are
/// skipped without yielding an empty frame; the end of `inner` flushes `T::finish`.
pub struct Translated<B, T> {
    inner: B,
    translate: T,
    /// Set once `inner` ended and `finish` ran.
    done: bool,
}

impl<B, T: Translate> Translated<B, T> {
    pub fn new(inner: B, translate: T) -> Translated<B, T> {
        Translated {
            inner,
            translate,
            done: false,
        }
    }
}

impl<B, T> Body for Translated<B, T>
where
    B: Body<Data = Bytes> + Unpin,
    T: Translate,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped: the translated body has none to give.
                    if let Ok(data) = frame.into_data() {
                        let mut out = BytesMut::new();
                        this.translate.feed(&data, &mut out);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let mut out = BytesMut::new();
                    this.translate.finish(&mut out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // The translated length is unknown until the end.
        SizeHint::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    /// Upper-cases every byte and ends with `!`.
    struct Shout;

    impl Translate for Shout {
        fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
            out.extend(chunk.iter().map(u8::to_ascii_uppercase));
        }
        fn finish(&mut self, out: &mut BytesMut) {
            out.extend_from_slice(b"!");
        }
    }

    #[tokio::test]
    async fn translates_each_frame_and_flushes_at_the_end() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::new())),
            Ok(Frame::data(Bytes::from_static(b"c"))),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let out = Translated::new(body, Shout).collect().await.unwrap();
        assert_eq!(out.to_bytes(), Bytes::from_static(b"ABC!"));
    }
}
