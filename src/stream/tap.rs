//! A response body that shows every chunk to an observer and passes it on unchanged.
//!
//! Nothing is buffered or reordered: each frame the upstream yields is handed to the client in
//! the same poll. The observer hears how the body ended exactly once: when the upstream body
//! finished, when it failed, or when the tap was dropped first (the client went away; dropping
//! the inner body cancels the upstream request).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// How a tapped body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte the upstream sent was handed on.
    Complete,
    /// The upstream body failed (reset, idle timeout) after this error.
    Failed(String),
    /// The body was dropped before its end: the client disconnected.
    Dropped,
}

pub trait Observer: Send + 'static {
    fn on_data(&mut self, data: &Bytes);
    /// Called exactly once.
    fn on_end(&mut self, end: End);
}

pub struct Tap<B, O: Observer> {
    inner: B,
    /// `None` once the end was reported.
    observer: Option<O>,
}

impl<B, O: Observer> Tap<B, O> {
    pub fn new(inner: B, observer: O) -> Tap<B, O> {
        Tap {
            inner,
            observer: Some(observer),
        }
    }

    fn end(&mut self, end: End) {
        if let Some(mut observer) = self.observer.take() {
            observer.on_end(end);
        }
    }
}

impl<B, O> Body for Tap<B, O>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    O: Observer + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(observer)) = (frame.data_ref(), this.observer.as_mut()) {
                    observer.on_data(data);
                }
                // Report the end before handing on the last bytes, so that whoever reads the
                // whole response can rely on it having been accounted.
                if this.inner.is_end_stream() {
                    this.end(End::Complete);
                }
            }
            Poll::Ready(Some(Err(e))) => this.end(End::Failed(e.to_string())),
            Poll::Ready(None) => this.end(End::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, O: Observer> Drop for Tap<B, O> {
    fn drop(&mut self) {
        self.end(End::Dropped);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(Vec<u8>, Vec<End>)>>);

    impl Observer for Seen {
        fn on_data(&mut self, data: &Bytes) {
            self.0.lock().unwrap().0.extend_from_slice(data);
        }
        fn on_end(&mut self, end: End) {
            self.0.lock().unwrap().1.push(end);
        }
    }

    fn body_of(
        chunks: Vec<Result<&'static str, &'static str>>,
    ) -> impl Body<Data = Bytes, Error = String> + Unpin {
        let frames = chunks.into_iter().map(|c| {
            c.map(|s| Frame::data(Bytes::from(s)))
                .map_err(str::to_owned)
        });
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn passes_every_byte_and_reports_completion_once() {
        let seen = Seen::default();
        let tap = Tap::new(body_of(vec![Ok("ab"), Ok("cd")]), seen.clone());
        let out = tap.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"abcd");
        let s = seen.0.lock().unwrap();
        assert_eq!(s.0, b"abcd");
        assert_eq!(s.1, vec![End::Complete]);
    }

    #[tokio::test]
    async fn reports_failure_and_drop() {
        let seen = Seen::default();
        let tap = Tap::new(body_of(vec![Ok("ab"), Err("reset")]), seen.clone());
        assert!(tap.collect().await.is_err());
        assert_eq!(seen.0.lock().unwrap().1, vec![End::Failed("reset".into())]);

        let seen = Seen::default();
        let mut tap = Tap::new(body_of(vec![Ok("ab"), Ok("cd")]), seen.clone());
        let first = tap.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        drop(tap);
        let s = seen.0.lock().unwrap();
        assert_eq!(s.0, b"ab");
        assert_eq!(s.1, vec![End::Dropped]);
    }
}
