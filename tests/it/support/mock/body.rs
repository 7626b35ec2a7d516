//! The scripted response body and the per-request accounting (served / cancelled / in flight).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::{State, lock};

/// Counts one request: in flight from arrival; served / cancelled at the end.
pub(super) struct Guard {
    shared: Arc<Mutex<State>>,
    pub(super) index: Option<usize>,
    done: bool,
}

impl Guard {
    pub(super) fn new(shared: Arc<Mutex<State>>) -> Guard {
        {
            let mut st = lock(&shared);
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
        }
        Guard {
            shared,
            index: None,
            done: false,
        }
    }

    fn record(&self, data: &[u8]) {
        if let Some(i) = self.index
            && let Some(r) = lock(&self.shared).responses.get_mut(i)
        {
            r.extend_from_slice(data);
        }
    }

    /// The last frame was handed to hyper.
    fn complete(&mut self) {
        if !self.done {
            self.done = true;
            let mut st = lock(&self.shared);
            st.in_flight -= 1;
            st.served += 1;
        }
    }

    /// The body ended with an error on purpose (ResetAfterStart).
    fn fail(&mut self) {
        if !self.done {
            self.done = true;
            lock(&self.shared).in_flight -= 1;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            let mut st = lock(&self.shared);
            st.in_flight -= 1;
            st.cancelled += 1;
        }
    }
}

pub(super) enum Step {
    Sleep(Duration),
    Data(Bytes),
    /// Never produce another frame.
    Hang,
    /// End the body with an error.
    Fail,
}

/// A scripted body: each `Data` step is one frame.
pub(super) struct MockBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Remaining bytes when the body is sent with a Content-Length.
    remaining: Option<u64>,
    guard: Guard,
}

impl MockBody {
    pub(super) fn new(steps: VecDeque<Step>, len: Option<u64>, guard: Guard) -> MockBody {
        MockBody {
            steps,
            sleep: None,
            remaining: len,
            guard,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.steps.pop_front() {
                None => {
                    this.guard.complete();
                    return Poll::Ready(None);
                }
                Some(Step::Sleep(d)) => this.sleep = Some(Box::pin(tokio::time::sleep(d))),
                Some(Step::Data(data)) => {
                    this.guard.record(&data);
                    if let Some(r) = this.remaining.as_mut() {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    if this.steps.is_empty() {
                        this.guard.complete();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Step::Hang) => {
                    this.steps.push_front(Step::Hang);
                    return Poll::Pending;
                }
                Some(Step::Fail) => {
                    this.guard.fail();
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "mock upstream reset the stream",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
