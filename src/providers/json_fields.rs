//! Setting a few top-level fields of a JSON request body on its way upstream (a model's name
//! as the account's vendor knows it, `store: false`, `stream: true`), without building the
//! body's tree: every other field is copied as the client wrote it, in its order.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// `body` (a JSON object) with each of `fields` set: in its place when the body has it (its
/// later repeats dropped), after the others when not. `None` when the body is not an object.
pub fn with_fields(body: &[u8], fields: &[(&str, Value)]) -> Option<Bytes> {
    let entries = entries(body)?;
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut written = vec![false; fields.len()];
    out.push(b'{');
    let mut first = true;
    let mut separate = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for (name, value) in &entries {
        let set = fields.iter().position(|(field, _)| field == name);
        if let Some(i) = set
            && std::mem::replace(&mut written[i], true)
        {
            continue;
        }
        separate(&mut out);
        serde_json::to_writer(&mut out, name.as_ref()).ok()?;
        out.push(b':');
        match set {
            Some(i) => serde_json::to_writer(&mut out, &fields[i].1).ok()?,
            None => out.extend_from_slice(value.get().as_bytes()),
        }
    }
    for ((name, value), done) in fields.iter().zip(&written) {
        if !done {
            separate(&mut out);
            serde_json::to_writer(&mut out, name).ok()?;
            out.push(b':');
            serde_json::to_writer(&mut out, value).ok()?;
        }
    }
    out.push(b'}');
    Some(Bytes::from(out))
}

/// The object's entries in their order, values as written.
fn entries(body: &[u8]) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> serde::Deserialize<'de> for Entries<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> Visitor<'de> for Visit {
                type Value = Entries<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Entries<'de>, A::Error> {
                    let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                    while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                        entries.push(entry);
                    }
                    Ok(Entries(entries))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_slice::<Entries<'_>>(body)
        .ok()
        .map(|e| e.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(body: &str, fields: &[(&str, Value)]) -> Option<String> {
        with_fields(body.as_bytes(), fields).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn a_field_is_replaced_in_place_and_the_rest_kept_as_written() {
        let body = r#"{"z": 1, "model" : "claude-sonnet-4-5", "messages":[{"role":"user","content":"h\u00e9"}],"n":1.50}"#;
        assert_eq!(
            set(body, &[("model", json!("glm-4.6"))]).unwrap(),
            r#"{"z":1,"model":"glm-4.6","messages":[{"role":"user","content":"h\u00e9"}],"n":1.50}"#
        );
    }

    #[test]
    fn a_missing_field_is_added_and_repeats_are_dropped() {
        let body = r#"{"stream":false,"input":"hi","stream":false}"#;
        let out = set(body, &[("stream", json!(true)), ("store", json!(false))]).unwrap();
        assert_eq!(out, r#"{"stream":true,"input":"hi","store":false}"#);
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            parsed,
            json!({ "stream": true, "input": "hi", "store": false })
        );
    }

    #[test]
    fn escaped_names_are_read_and_written_escaped() {
        let body = r#"{"mod\u0065l":"a","q\"uote":2}"#;
        assert_eq!(
            set(body, &[("model", json!("b"))]).unwrap(),
            r#"{"model":"b","q\"uote":2}"#
        );
    }

    #[test]
    fn what_is_not_an_object_is_left() {
        for body in ["[1]", "\"x\"", "{\"a\":", "", "{} {}"] {
            assert_eq!(set(body, &[("model", json!("m"))]), None, "{body:?}");
        }
        assert_eq!(
            set("{}", &[("model", json!("m"))]).unwrap(),
            r#"{"model":"m"}"#
        );
    }
}
