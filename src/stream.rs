//! Response bodies on their way to the client: SSE framing, per-protocol usage extraction, and
//! the tap that shows every chunk to a usage observer and passes it on unchanged.
pub mod anthropic;
mod fields;
pub mod gemini;
pub mod openai;
pub mod sse;
pub mod tap;
pub mod usage;

/// A JSON answer collected whole to read its usage, up to a cap: past it nothing is kept (the
/// answer still goes to the client; it is just not billed, and a warning says so).
#[derive(Debug)]
pub(crate) struct Collected {
    body: Vec<u8>,
    max: usize,
    gave_up: bool,
    /// Names the answer in the warning.
    what: &'static str,
}

impl Collected {
    pub(crate) fn new(max: usize, what: &'static str) -> Collected {
        Collected {
            body: Vec::new(),
            max,
            gave_up: false,
            what,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.gave_up {
            return;
        }
        if self.body.len() + chunk.len() > self.max {
            tracing::warn!(
                max_bytes = self.max,
                "{} too large to read usage from; it is not billed",
                self.what
            );
            self.gave_up = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.body
    }
}
