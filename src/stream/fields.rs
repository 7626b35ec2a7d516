//! The few top-level fields of a JSON answer that say what it cost (`usage`, `model`, `type`),
//! read as the answer's bytes pass. Everything else is stepped over without being kept, so an
//! answer of any size (a batch of embeddings runs to tens of megabytes) is read holding only
//! those fields, and a copy of the answer is never made.
//!
//! The reader follows the object's structure (strings, escapes, nesting) closely enough to know
//! where each top-level member begins and ends; the values it keeps are then parsed by serde,
//! which checks them. The rest of the answer is not validated: a field is reported once the
//! top-level object has closed, and a body whose structure breaks (not an object, a stray byte
//! between members, text after the end) reports nothing.
//!
//! A reader can also be told to keep the long strings inside the values it keeps as `""`:
//! Gemini's `candidates` say how many images an answer holds by their `mimeType`, beside
//! megabytes of base64 per image that nothing here needs.

use memchr::memchr2;

/// A wanted field's value longer than this is dropped: that field reads as absent. Usage objects
/// and model names are a few hundred bytes.
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Key bytes kept for the comparison with the wanted names (longer keys are not wanted).
const MAX_KEY_BYTES: usize = 32;

/// Reads the top-level fields named in `wanted` from a JSON object fed in pieces.
#[derive(Debug)]
pub(crate) struct TopFields<const N: usize> {
    wanted: [&'static str; N],
    /// The last value of each wanted field, as raw JSON.
    values: [Option<Vec<u8>>; N],
    state: State,
    /// The key being read; `key_len` past `MAX_KEY_BYTES` means too long to be wanted.
    key: [u8; MAX_KEY_BYTES],
    key_len: usize,
    /// The member value being read: open `{` and `[` inside it, whether inside a string and
    /// right after a backslash there.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The wanted field whose value is being read, with its bytes so far.
    capture: Option<(usize, Vec<u8>)>,
    /// Strings (keys too) inside kept values longer than this, in bytes of JSON text, are kept
    /// as `""`.
    max_string: usize,
    /// Where the kept value's current string begins (after its opening quote), while eliding.
    string_at: usize,
    /// The current string is too long: nothing more of it is kept.
    elided: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `{`.
    Start,
    /// After `{` or `,`: a key (or, right after `{`, the closing `}`).
    Key,
    /// Inside a key's string.
    InKey,
    /// After a key: the `:`.
    Colon,
    /// After the `:`: the value's first byte.
    Value,
    /// Inside a member's value.
    InValue,
    /// After a value: `,` or the closing `}`.
    Next,
    /// The object closed.
    End,
    /// Not a JSON object: nothing is reported.
    Broken,
}

impl<const N: usize> TopFields<N> {
    pub(crate) fn new(wanted: [&'static str; N]) -> TopFields<N> {
        debug_assert!(wanted.iter().all(|w| w.len() <= MAX_KEY_BYTES));
        TopFields {
            wanted,
            values: std::array::from_fn(|_| None),
            state: State::Start,
            key: [0; MAX_KEY_BYTES],
            key_len: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            capture: None,
            max_string: usize::MAX,
            string_at: 0,
            elided: false,
        }
    }

    /// Keeps strings longer than `max` bytes, inside the wanted values, as `""`.
    pub(crate) fn eliding_strings_over(mut self, max: usize) -> TopFields<N> {
        self.max_string = max;
        self
    }

    /// The raw JSON of a wanted field (its last occurrence), once the object is complete.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        if self.state != State::End {
            return None;
        }
        let at = self.wanted.iter().position(|w| *w == name)?;
        self.values[at].as_deref()
    }

    /// Whether the whole object has passed and was well formed as far as it was followed.
    pub(crate) fn complete(&self) -> bool {
        self.state == State::End
    }

    /// Reads the next piece of the body.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match self.state {
                State::InValue => {
                    match self.value_end(chunk, i) {
                        Some(end) => {
                            self.finish_value();
                            self.state = State::Next;
                            i = end;
                        }
                        None => i = chunk.len(),
                    }
                    continue;
                }
                State::InKey => {
                    if self.escaped {
                        self.escaped = false;
                        self.push_key(b);
                    } else if b == b'\\' {
                        self.escaped = true;
                        self.push_key(b);
                    } else if b == b'"' {
                        self.state = State::Colon;
                    } else {
                        self.push_key(b);
                    }
                }
                _ if b.is_ascii_whitespace() => {}
                State::Start if b == b'{' => self.state = State::Key,
                State::Key if b == b'"' => {
                    self.key_len = 0;
                    self.state = State::InKey;
                }
                State::Colon if b == b':' => {
                    let key = &self.key[..self.key_len.min(MAX_KEY_BYTES)];
                    let wanted = (self.key_len <= MAX_KEY_BYTES)
                        .then(|| self.wanted.iter().position(|w| w.as_bytes() == key))
                        .flatten();
                    self.capture = wanted.map(|at| (at, Vec::new()));
                    self.state = State::Value;
                }
                State::Value => {
                    self.depth = 0;
                    self.in_string = false;
                    self.escaped = false;
                    self.elided = false;
                    self.state = State::InValue;
                    continue;
                }
                State::Next if b == b',' => self.state = State::Key,
                // `}` right after `{` closes an empty object.
                State::Next | State::Key if b == b'}' => self.state = State::End,
                State::Broken => return,
                _ => {
                    self.state = State::Broken;
                    self.capture = None;
                    return;
                }
            }
            i += 1;
        }
    }

    /// Scans a member's value from `chunk[from]` for its end, keeping its bytes when it is
    /// wanted: the index just past the value, or `None` when it goes on past this chunk.
    fn value_end(&mut self, chunk: &[u8], from: usize) -> Option<usize> {
        let eliding = self.max_string != usize::MAX;
        // Where the part of `chunk` still to keep begins.
        let mut kept = (self.capture.is_some() && !self.elided).then_some(from);
        let mut i = from;
        let end = loop {
            if i >= chunk.len() {
                break None;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                // Strings are most of an answer: jump to the next quote or backslash.
                let Some(found) = memchr2(b'"', b'\\', &chunk[i..]) else {
                    i = chunk.len();
                    continue;
                };
                let at = i + found;
                i = at + 1;
                if chunk[at] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                    let too_long = kept.is_some_and(|from| self.string_too_long(at - from));
                    if self.elided || too_long {
                        // Keep the closing quote only: the string reads `""`.
                        self.cut_string();
                        self.elided = false;
                        kept = self.capture.is_some().then_some(at);
                    }
                    if self.depth == 0 {
                        break Some(i);
                    }
                }
                continue;
            }
            match chunk[i] {
                b'"' => {
                    self.in_string = true;
                    if eliding && let Some(from) = kept {
                        self.keep(&chunk[from..=i]);
                        self.string_at = self.capture.as_ref().map_or(0, |(_, v)| v.len());
                        kept = self.capture.is_some().then_some(i + 1);
                    }
                }
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        break Some(i + 1);
                    }
                }
                // A number, `true`, `false` or `null` ends at what follows it.
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' if self.depth == 0 => {
                    break Some(i);
                }
                _ => {}
            }
            i += 1;
        };
        if let Some(from) = kept {
            if end.is_none() && self.in_string && self.string_too_long(chunk.len() - from) {
                // Nothing more of this string is kept, up to its closing quote.
                self.cut_string();
                self.elided = true;
            } else {
                self.keep(&chunk[from..end.unwrap_or(chunk.len())]);
            }
        }
        end
    }

    /// Whether the kept value's current string, with `more` bytes of it, is over the limit.
    fn string_too_long(&self, more: usize) -> bool {
        self.max_string != usize::MAX
            && self.capture.as_ref().is_some_and(|(_, v)| {
                (v.len() - self.string_at).saturating_add(more) > self.max_string
            })
    }

    /// Cuts the kept value back to its current string's opening quote.
    fn cut_string(&mut self) {
        if let Some((_, value)) = &mut self.capture {
            value.truncate(self.string_at);
        }
    }

    fn push_key(&mut self, b: u8) {
        if self.key_len < MAX_KEY_BYTES {
            self.key[self.key_len] = b;
        }
        self.key_len = self.key_len.saturating_add(1);
    }

    fn keep(&mut self, bytes: &[u8]) {
        let Some((at, value)) = &mut self.capture else {
            return;
        };
        if value.len() + bytes.len() > MAX_VALUE_BYTES {
            tracing::warn!(
                field = self.wanted[*at],
                max_bytes = MAX_VALUE_BYTES,
                "an answer's field is too large to read; it is ignored"
            );
            self.values[*at] = None;
            self.capture = None;
        } else {
            value.extend_from_slice(bytes);
        }
    }

    fn finish_value(&mut self) {
        if let Some((at, value)) = self.capture.take() {
            self.values[at] = Some(value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn read<const N: usize>(wanted: [&'static str; N], chunks: &[&[u8]]) -> TopFields<N> {
        let mut fields = TopFields::new(wanted);
        for chunk in chunks {
            fields.feed(chunk);
        }
        fields
    }

    fn value(fields: &TopFields<2>, name: &str) -> Option<Value> {
        fields.get(name).map(|v| serde_json::from_slice(v).unwrap())
    }

    #[test]
    fn reads_the_wanted_fields_and_nothing_else() {
        let body = br#" { "id": "x\"usage\": 1", "content": [{"text": "}{]["}, [1, 2.5e3, null]],
            "usage": {"input_tokens": 10, "nested": {"a": [true, false]}}, "n": -3,
            "model" : "m\\" , "last": {} }
"#;
        let f = read(["usage", "model"], &[body]);
        assert!(f.complete());
        assert_eq!(
            value(&f, "usage"),
            Some(serde_json::json!({"input_tokens": 10, "nested": {"a": [true, false]}}))
        );
        assert_eq!(value(&f, "model"), Some(Value::from("m\\")));
        assert_eq!(f.get("id"), None, "not wanted");
    }

    #[test]
    fn scalars_end_at_what_follows_them() {
        for body in [
            &br#"{"usage":12,"model":null}"#[..],
            br#"{"usage":12 ,"model":null }"#,
            b"{\"usage\":12\n,\n\"model\":null\n}",
        ] {
            let f = read(["usage", "model"], &[body]);
            assert_eq!(value(&f, "usage"), Some(Value::from(12)));
            assert_eq!(value(&f, "model"), Some(Value::Null));
        }
    }

    #[test]
    fn nothing_is_reported_before_the_object_closes_or_when_it_breaks() {
        let body = br#"{"usage": {"input_tokens": 1}, "model": "m"}"#;
        assert_eq!(
            read(["usage"], &[&body[..body.len() - 1]]).get("usage"),
            None
        );
        for broken in [
            &br#"[{"usage": 1}]"#[..],
            br#"{"usage": 1} x"#,
            br#"{"usage" 1}"#,
            br#"{"usage": 1 "model": 2}"#,
            br#"{"usage": 1}}"#,
            b"",
            b"not json",
        ] {
            let f = read(["usage"], &[broken]);
            assert!(!f.complete(), "{}", String::from_utf8_lossy(broken));
            assert_eq!(f.get("usage"), None);
        }
        assert!(read(["usage"], &[b" {} "]).complete());
    }

    #[test]
    fn the_last_occurrence_counts_and_long_keys_are_not_wanted() {
        let long = "u".repeat(40);
        let body = format!(r#"{{"usage": 1, "{long}": 2, "usage": 3, "us\"age": 4}}"#);
        let f = read(["usage"], &[body.as_bytes()]);
        assert_eq!(f.get("usage"), Some(&b"3"[..]));
    }

    #[test]
    fn an_answer_far_larger_than_its_fields_is_read_holding_only_them() {
        let mut body = br#"{"object":"list","data":["#.to_vec();
        let item = br#"{"object":"embedding","index":0,"embedding":"AACAPAAAAL0AAIA9AAAAvg=="},"#;
        let mut f = TopFields::new(["usage", "model"]);
        f.feed(&body);
        let mut fed = body.len();
        // 17 MiB of embeddings (past the 16 MiB a copy of the answer was once capped at), in
        // 1 MiB pieces.
        let piece: Vec<u8> = item
            .iter()
            .copied()
            .cycle()
            .take(item.len() * 13_000)
            .collect();
        while fed < 17 << 20 {
            f.feed(&piece);
            fed += piece.len();
        }
        body.clear();
        body.extend_from_slice(br#"{"x":1}],"model":"text-embedding-3-small","usage":{"prompt_tokens":7,"total_tokens":7}}"#);
        f.feed(&body);
        let usage = f.get("usage").unwrap();
        assert_eq!(usage, br#"{"prompt_tokens":7,"total_tokens":7}"#);
        assert!(f.values.iter().flatten().all(|v| v.capacity() < 1024));
        // A wanted value over the cap is dropped, the rest still read.
        let huge = format!(
            r#"{{"model": "{}", "usage": 1}}"#,
            "m".repeat(MAX_VALUE_BYTES)
        );
        let f = read(["usage", "model"], &[huge.as_bytes()]);
        assert_eq!((f.get("model"), f.get("usage")), (None, Some(&b"1"[..])));
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z\"\\\\{}\\[\\],: \u{e9}\n]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn long_strings_in_kept_values_can_be_left_out() {
        let image = "QUJD".repeat(1 << 20);
        let body = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"text": "{}"}}, {{"inlineData":
            {{"mimeType": "image/png", "data": "{image}"}}}}, {{"text": "a\"b"}}]}}}}],
            "usageMetadata": {{"promptTokenCount": 3}}}}"#,
            "x".repeat(300)
        );
        let want = serde_json::json!([{"content": {"parts": [{"text": ""}, {"inlineData":
            {"mimeType": "image/png", "data": ""}}, {"text": "a\"b"}]}}]);
        for piece in [7, 300, 65536, body.len()] {
            let mut f = TopFields::new(["candidates", "usageMetadata"]).eliding_strings_over(256);
            for chunk in body.as_bytes().chunks(piece) {
                f.feed(chunk);
            }
            let got: Value = serde_json::from_slice(f.get("candidates").unwrap()).unwrap();
            assert_eq!(got, want, "pieces of {piece}");
            assert!(f.values.iter().flatten().all(|v| v.capacity() < 64 << 10));
            assert_eq!(
                f.get("usageMetadata"),
                Some(&br#"{"promptTokenCount": 3}"#[..])
            );
        }
        // A string of exactly the limit is kept; a wanted value that is itself a string is
        // left out like any other.
        let mut f = TopFields::new(["model", "n"]).eliding_strings_over(4);
        f.feed(br#"{"model": "abcd", "n": ["abcde", "ab"]}"#);
        assert_eq!(f.get("model"), Some(&br#""abcd""#[..]));
        assert_eq!(f.get("n"), Some(&br#"["", "ab"]"#[..]));
        let mut f = TopFields::new(["model"]).eliding_strings_over(3);
        f.feed(br#"{"model": "abcd"}"#);
        assert_eq!(f.get("model"), Some(&br#""""#[..]));
    }

    /// `value` as read with strings (keys too) over `max` bytes of JSON text left out.
    fn elided(value: &Value, max: usize) -> Value {
        let long = |s: &str| serde_json::to_string(s).unwrap().len() - 2 > max;
        match value {
            Value::String(s) if long(s) => Value::from(""),
            Value::Array(items) => items.iter().map(|v| elided(v, max)).collect(),
            Value::Object(members) => {
                let mut out = serde_json::Map::new();
                for (k, v) in members {
                    let k = if long(k) { String::new() } else { k.clone() };
                    out.insert(k, elided(v, max));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    proptest! {
        /// Any object, pretty or compact, cut anywhere: each wanted field reads as serde reads it
        /// (with long strings left out when asked).
        #[test]
        fn every_object_reads_as_serde_reads_it(
            members in proptest::collection::btree_map("[a-z]{1,3}|usage|model", json(), 0..8),
            pretty in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in prop_oneof![Just(usize::MAX), 0usize..8],
        ) {
            let object = Value::Object(members.into_iter().collect());
            let text = if pretty {
                serde_json::to_vec_pretty(&object).unwrap()
            } else {
                serde_json::to_vec(&object).unwrap()
            };
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
            cuts.sort_unstable();
            let mut f = TopFields::new(["usage", "model"]).eliding_strings_over(max);
            let mut prev = 0;
            for c in cuts {
                f.feed(&text[prev..c]);
                prev = c;
            }
            f.feed(&text[prev..]);
            prop_assert!(f.complete());
            // Compared with serde's reading of the same text (floats may not round-trip).
            let whole: Value = serde_json::from_slice(&text).unwrap();
            for name in ["usage", "model"] {
                let got = f.get(name).map(|v| serde_json::from_slice::<Value>(v).unwrap());
                prop_assert_eq!(got, whole.get(name).map(|v| elided(v, max)));
            }
        }
    }
}
