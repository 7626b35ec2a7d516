//! Incremental SSE framing.
//!
//! The relay never buffers a response (DESIGN principle 1): chunks go to the client as they
//! arrive, and the usage observer sees the same chunks on the side. So the framer must accept
//! bytes split anywhere (inside a line, a UTF-8 character, or a `\r\n`) and keep only the
//! unfinished line and the event being built. Buffers are reused across events so a long stream
//! of small deltas allocates nothing after the first few events, and both are capped so a
//! hostile or broken upstream cannot make the observer grow without bound.
//!
//! Parsing follows the WHATWG "event stream" interpretation: `\n`, `\r\n` and `\r` end lines; a
//! blank line dispatches; `:` starts a comment; one space after the field's colon is dropped;
//! several `data` lines are joined with `\n`; an event with no `data` line is not dispatched;
//! a leading byte-order mark is ignored.

/// Events larger than this are dropped (usage events are a few hundred bytes; nothing we read
/// comes close).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// After an unusually large event, buffers shrink back to this so that many long-lived streams do
/// not each keep their largest event's worth of memory.
const RETAINED_CAPACITY: usize = 64 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event. Borrowed from the framer's buffers, valid during the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, `None` when absent or empty (the spec's default type `message`).
    pub event: Option<&'a str>,
    /// The `data:` lines joined with `\n`.
    pub data: &'a str,
}

#[derive(Debug)]
pub struct SseFramer {
    max_event_bytes: usize,
    /// The unfinished last line of the previous chunk.
    line: Vec<u8>,
    /// The line being received is longer than the cap; its bytes are being discarded.
    line_overflow: bool,
    /// The previous chunk ended in `\r`, so a `\n` at the start of the next one is that line
    /// ending's second half, not an empty line.
    pending_cr: bool,
    /// Whether the first line has been seen (only it may start with a BOM).
    started: bool,
    event: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The current event went over the cap: ignore its lines until the blank line that ends it.
    skipping: bool,
}

impl Default for SseFramer {
    fn default() -> Self {
        SseFramer::new()
    }
}

impl SseFramer {
    pub fn new() -> SseFramer {
        SseFramer::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// `max_event_bytes` bounds both one line and one event's joined data.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> SseFramer {
        SseFramer {
            max_event_bytes,
            line: Vec::new(),
            line_overflow: false,
            pending_cr: false,
            started: false,
            event: Vec::new(),
            data: Vec::new(),
            has_data: false,
            skipping: false,
        }
    }

    /// Feeds the next chunk, calling `on_event` for every event that a blank line in it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        let mut pos = 0;
        if self.pending_cr && !chunk.is_empty() {
            self.pending_cr = false;
            if chunk[0] == b'\n' {
                pos = 1;
            }
        }
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            let Some(len) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.buffer_partial_line(rest);
                return;
            };
            let end = pos + len;
            if self.line_overflow {
                self.line_overflow = false;
                self.drop_event();
            } else if self.line.is_empty() {
                // The common case: the whole line is inside this chunk, no copy.
                self.process_line(&chunk[pos..end], &mut on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[pos..end]);
                self.process_line(&line, &mut on_event);
                line.clear();
                self.line = line;
            }
            pos = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(pos) {
                    Some(b'\n') => pos += 1,
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
        }
    }

    fn buffer_partial_line(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > self.max_event_bytes {
            tracing::warn!(
                max_event_bytes = self.max_event_bytes,
                "SSE line over the size cap; dropping its event"
            );
            self.line_overflow = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn process_line(&mut self, mut line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            if self.skipping {
                self.skipping = false;
            } else {
                self.dispatch(on_event);
            }
            return;
        }
        if self.skipping || line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let added = value.len() + usize::from(self.has_data);
                if self.data.len() + added > self.max_event_bytes {
                    tracing::warn!(
                        max_event_bytes = self.max_event_bytes,
                        "SSE event over the size cap; dropping it"
                    );
                    self.drop_event();
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            // `id` and `retry` steer browser reconnection; nothing here reconnects.
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.has_data {
            // Upstreams send UTF-8; a stray invalid byte should cost a replacement character,
            // not the event. Valid input is borrowed, not copied.
            let data = utf8_lossy(&self.data);
            let event = utf8_lossy(&self.event);
            on_event(SseEvent {
                event: (!event.is_empty()).then_some(&*event),
                data: &data,
            });
        }
        self.reset_event();
    }

    /// Forgets the current event and ignores the rest of it.
    fn drop_event(&mut self) {
        self.reset_event();
        self.skipping = true;
    }

    fn reset_event(&mut self) {
        self.event.clear();
        self.data.clear();
        self.has_data = false;
        if self.data.capacity() > RETAINED_CAPACITY {
            self.data.shrink_to(RETAINED_CAPACITY);
        }
        if self.event.capacity() > RETAINED_CAPACITY {
            self.event.shrink_to(RETAINED_CAPACITY);
        }
        if self.line.is_empty() && self.line.capacity() > RETAINED_CAPACITY {
            self.line.shrink_to(RETAINED_CAPACITY);
        }
    }
}

/// `String::from_utf8_lossy`, with valid input (all of it, in practice) checked by `str::from_utf8`
/// first: that check runs through ASCII a word at a time, where the lossy one walks byte by byte
/// (on a small Anthropic stream, about a tenth of the relay's instructions went to it).
fn utf8_lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::fixture;
    use proptest::prelude::*;

    type Owned = (Option<String>, String);

    fn collect(framer: &mut SseFramer, chunks: &[&[u8]]) -> Vec<Owned> {
        let mut out = Vec::new();
        for chunk in chunks {
            framer.feed(chunk, |ev| {
                out.push((ev.event.map(str::to_owned), ev.data.to_owned()))
            });
        }
        out
    }

    fn events(chunks: &[&[u8]]) -> Vec<Owned> {
        collect(&mut SseFramer::new(), chunks)
    }

    fn ev(event: Option<&str>, data: &str) -> Owned {
        (event.map(str::to_owned), data.to_owned())
    }

    fn crlf(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    fn cr(bytes: &[u8]) -> Vec<u8> {
        bytes
            .iter()
            .map(|&b| if b == b'\n' { b'\r' } else { b })
            .collect()
    }

    const FIXTURES: [&str; 3] = [
        "anthropic_stream.txt",
        "anthropic_stream_tool_use.txt",
        "openai_chat_stream.txt",
    ];

    #[test]
    fn fixture_events() {
        let whole = events(&[&fixture("anthropic_stream.txt")]);
        let names: Vec<_> = whole.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(whole[1].1, r#"{"type": "ping"}"#);
        assert_eq!(
            events(&[&fixture("anthropic_stream_tool_use.txt")]).len(),
            15
        );
    }

    #[test]
    fn every_two_chunk_split_matches_whole() {
        for name in FIXTURES {
            let raw = fixture(name);
            for variant in [raw.clone(), crlf(&raw), cr(&raw)] {
                let whole = events(&[&variant]);
                assert!(!whole.is_empty(), "{name}");
                for at in 0..=variant.len() {
                    let (a, b) = variant.split_at(at);
                    assert_eq!(events(&[a, b]), whole, "{name} split at {at}");
                }
            }
        }
    }

    #[test]
    fn byte_by_byte_matches_whole() {
        for name in FIXTURES {
            let raw = crlf(&fixture(name));
            let chunks: Vec<&[u8]> = raw.chunks(1).collect();
            assert_eq!(events(&chunks), events(&[&raw]), "{name}");
        }
    }

    #[test]
    fn line_endings() {
        let want = vec![ev(Some("a"), "1"), ev(Some("b"), "2"), ev(None, "3")];
        assert_eq!(
            events(&[b"event: a\ndata: 1\n\nevent: b\r\ndata: 2\r\n\r\ndata: 3\r\r"]),
            want
        );
        // A `\r` at the end of a chunk followed by `\n`: one line ending, not two.
        assert_eq!(
            events(&[b"data: 1\r", b"\n", b"data: 2\r", b"\ndata: 3\r", b"\r"]),
            vec![ev(None, "1\n2\n3")]
        );
        // Empty chunks in between change nothing.
        assert_eq!(
            events(&[b"data: 1\r", b"", b"\n", b"", b"\r\n"]),
            vec![ev(None, "1")]
        );
    }

    #[test]
    fn multi_line_data_and_fields() {
        let text = b"event: x\ndata: first\ndata:second\ndata:  third\ndata\ndata:\n\n";
        assert_eq!(
            events(&[text]),
            vec![ev(Some("x"), "first\nsecond\n third\n\n")]
        );
        // `id`, `retry` and unknown fields are ignored; the last `event:` wins.
        let text = b"id: 7\nretry: 10\nfoo: bar\nevent: a\nevent: b\ndata: {}\n\n";
        assert_eq!(events(&[text]), vec![ev(Some("b"), "{}")]);
        // An event name resets between events; `event:` with an empty value is no name.
        let text = b"event: a\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n";
        assert_eq!(
            events(&[text]),
            vec![ev(Some("a"), "1"), ev(None, "2"), ev(None, "3")]
        );
    }

    #[test]
    fn comments_and_empty_events() {
        let text = b": keep-alive\n\n:\nevent: ping\n\nevent: x\n: note\ndata: 1\n\n";
        // A blank line after only comments, or after an event without data, dispatches nothing.
        assert_eq!(events(&[text]), vec![ev(Some("x"), "1")]);
    }

    #[test]
    fn bom_and_utf8_split() {
        let text = "\u{FEFF}data: héllo ✓\n\n".as_bytes();
        let whole = events(&[text]);
        assert_eq!(whole, vec![ev(None, "héllo ✓")]);
        for at in 0..=text.len() {
            let (a, b) = text.split_at(at);
            assert_eq!(events(&[a, b]), whole, "split at {at}");
        }
        // Only a BOM at the start of the stream is special.
        assert_eq!(
            events(&["data: 1\n\n\u{FEFF}data: 2\n\n".as_bytes()]),
            vec![ev(None, "1")]
        );
        // Invalid UTF-8 is replaced, not fatal.
        assert_eq!(events(&[b"data: \xff\n\n"]), vec![ev(None, "\u{FFFD}")]);
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        assert_eq!(events(&[b"data: 1\n\ndata: 2\n"]), vec![ev(None, "1")]);
    }

    #[test]
    fn oversized_events_are_dropped() {
        let mut f = SseFramer::with_max_event_bytes(8);
        // Joined data over the cap (each line is under it).
        let got = collect(
            &mut f,
            &[b"data: 12345\ndata: 6789\ndata: x\n\nevent: ok\ndata: fine\n\n"],
        );
        assert_eq!(got, vec![ev(Some("ok"), "fine")]);
        // One line over the cap, arriving in pieces; the rest of its event is ignored too.
        let got = collect(
            &mut f,
            &[
                b"event: big\ndata: 0123",
                b"456789",
                b"abcdef\ndata: tail\n",
                b"\ndata: after\n\n",
            ],
        );
        assert_eq!(got, vec![ev(None, "after")]);
        // Exactly at the cap is fine.
        assert_eq!(
            collect(&mut f, &[b"data: 12345678\n\n"]),
            vec![ev(None, "12345678")]
        );
        assert!(f.line.capacity() <= RETAINED_CAPACITY);
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_matches_whole(
            cuts in proptest::collection::vec(0usize..3000, 0..12),
            variant in 0usize..3,
            which in 0usize..3,
        ) {
            let raw = fixture(FIXTURES[which]);
            let raw = match variant { 0 => raw, 1 => crlf(&raw), _ => cr(&raw) };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (raw.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts {
                chunks.push(&raw[prev..c]);
                prev = c;
            }
            chunks.push(&raw[prev..]);
            prop_assert_eq!(events(&chunks), events(&[&raw]));
        }

        #[test]
        fn never_panics_on_garbage(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)
        ) {
            let mut f = SseFramer::with_max_event_bytes(16);
            for c in &chunks {
                f.feed(c, |ev| assert!(ev.data.len() <= 16 * 3));
            }
        }
    }
}
