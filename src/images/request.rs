//! What an image request asks for, read from its JSON body (generations) or its
//! `multipart/form-data` body (edits). The body itself goes upstream as the client sent it (a
//! JSON body may get its `response_format` changed); only the fields below are read.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The answer's form: the images inline or as links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    B64Json,
    Url,
}

impl Format {
    fn parse(s: &str) -> Result<Format, ApiError> {
        match s {
            "b64_json" => Ok(Format::B64Json),
            "url" => Ok(Format::Url),
            other => Err(ApiError::invalid(format!(
                "response_format: {other:?} is not one of \"url\", \"b64_json\""
            ))),
        }
    }
}

/// The fields of an image request that Switchyard acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    pub model: String,
    pub prompt: String,
    /// Images asked for (1 to 10).
    pub n: u64,
    pub size: Option<String>,
    pub quality: Option<String>,
    pub response_format: Option<Format>,
    /// gpt-image's `output_format` (`png`, `jpeg`, `webp`).
    pub output_format: Option<String>,
    /// A digest of everything that shapes the images (every field but `response_format` and
    /// `user`, and for edits every file), for the result cache.
    pub fingerprint: [u8; 32],
    /// An edit's image files (`image`, `image[]`, `mask`): 0 for a JSON request.
    pub input_images: u64,
    /// An edit's bytes of text fields (what its files are not).
    pub text_len: usize,
}

/// Most images one request may ask for (OpenAI's limit).
const MAX_N: u64 = 10;

/// Fields that change the answer's form or bookkeeping, not its images.
const NOT_IN_FINGERPRINT: &[&str] = &["response_format", "user", "stream"];

/// A streamed image answer (gpt-image's `stream`, with `partial_images`) is SSE, which the relay,
/// reading the answer whole to bill and store its images, cannot read: the vendor would bill
/// images the relay never could.
fn refuse_stream() -> ApiError {
    ApiError::invalid("stream: image answers are relayed whole; leave `stream` out or false")
}

/// Reads a JSON generations body.
pub fn parse_json(body: &[u8]) -> Result<ImageRequest, ApiError> {
    let fields: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not a JSON object: {e}")))?;
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(format!("{name}: expected a string"))),
        }
    };
    if fields
        .get("stream")
        .is_some_and(|s| s != &Value::Bool(false) && !s.is_null())
    {
        return Err(refuse_stream());
    }
    let n = match fields.get("n") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| ApiError::invalid("n: expected an integer"))?,
        ),
    };
    let mut sorted: Vec<(&String, &Value)> = fields
        .iter()
        .filter(|(k, _)| !NOT_IN_FINGERPRINT.contains(&k.as_str()))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut digest = Sha256::new();
    digest.update(b"json\0");
    for (k, v) in sorted {
        frame(&mut digest, k.as_bytes());
        frame(&mut digest, v.to_string().as_bytes());
    }
    finish(
        text("model")?,
        text("prompt")?,
        n,
        text("size")?,
        text("quality")?,
        text("response_format")?,
        text("output_format")?,
        digest.finalize().into(),
    )
}

/// Reads a `multipart/form-data` edits body: its text fields, and every part into the fingerprint.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<ImageRequest, ApiError> {
    let boundary = boundary_of(content_type).ok_or_else(|| {
        ApiError::invalid("content-type: expected multipart/form-data with a boundary")
    })?;
    let parts = parts(body, boundary.as_bytes())?;
    let mut digest = Sha256::new();
    digest.update(b"multipart\0");
    // A text field given twice is refused: the relay would read one and the vendor perhaps the
    // other (admitted and priced as one model, run as another).
    let field = |name: &str| -> Result<Option<String>, ApiError> {
        let mut given = parts
            .iter()
            .filter(|p| p.name == name && p.filename.is_none());
        let first = given.next();
        if given.next().is_some() {
            return Err(ApiError::invalid(format!("{name}: given more than once")));
        }
        first
            .map(|p| {
                String::from_utf8(p.data.to_vec())
                    .map_err(|_| ApiError::invalid(format!("{name}: not UTF-8")))
            })
            .transpose()
    };
    if field("stream")?.is_some_and(|s| s.trim() != "false") {
        return Err(refuse_stream());
    }
    let model = field("model")?;
    let prompt = field("prompt")?;
    let n = field("n")?
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::invalid("n: expected an integer"))
        })
        .transpose()?;
    let size = field("size")?;
    let quality = field("quality")?;
    let format = field("response_format")?;
    let output_format = field("output_format")?;
    for p in parts
        .iter()
        .filter(|p| !NOT_IN_FINGERPRINT.contains(&p.name.as_str()))
    {
        frame(&mut digest, p.name.as_bytes());
        frame(&mut digest, p.filename.as_deref().unwrap_or("").as_bytes());
        frame(
            &mut digest,
            p.content_type.as_deref().unwrap_or("").as_bytes(),
        );
        frame(&mut digest, p.data);
    }
    let mut ask = finish(
        model,
        prompt,
        n,
        size,
        quality,
        format,
        output_format,
        digest.finalize().into(),
    )?;
    let (files, texts): (Vec<&Part>, Vec<&Part>) = parts.iter().partition(|p| p.filename.is_some());
    ask.input_images = files.len() as u64;
    ask.text_len = texts.iter().map(|p| p.data.len()).sum();
    Ok(ask)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    model: Option<String>,
    prompt: Option<String>,
    n: Option<u64>,
    size: Option<String>,
    quality: Option<String>,
    response_format: Option<String>,
    output_format: Option<String>,
    fingerprint: [u8; 32],
) -> Result<ImageRequest, ApiError> {
    let model = model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model: field required"))?;
    // The name goes into the upstream URL for Imagen and Gemini (`models/{model}:predict`), and
    // into metrics labels: a space made every Gemini account's request fail as a connect error
    // (and cool the account down), a `#` or `/../` could name another model or method.
    crate::relay::check_model_name(&model)?;
    if !crate::relay::fits_a_path(&model) {
        return Err(ApiError::invalid(format!(
            "model: {model:?} is not a model name (letters, digits, `-`, `_` and `.`)"
        )));
    }
    let prompt = prompt
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("prompt: field required"))?;
    let n = n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::invalid(format!(
            "n: must be between 1 and {MAX_N}"
        )));
    }
    Ok(ImageRequest {
        model,
        prompt,
        n,
        size: size.filter(|s| s != "auto"),
        quality: quality.filter(|q| q != "auto"),
        response_format: response_format.as_deref().map(Format::parse).transpose()?,
        output_format,
        fingerprint,
        input_images: 0,
        text_len: 0,
    })
}

/// Length-prefixed, so that no two different field lists hash alike.
fn frame(digest: &mut Sha256, bytes: &[u8]) {
    digest.update((bytes.len() as u64).to_be_bytes());
    digest.update(bytes);
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let mime = params.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// One part of a multipart body.
#[derive(Debug)]
struct Part<'a> {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: &'a [u8],
}

/// The parts between `--boundary` lines (RFC 7578), up to the closing `--boundary--`.
fn parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<Part<'a>>, ApiError> {
    let bad = |why: &str| ApiError::invalid(format!("multipart body: {why}"));
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let start = find(body, &delimiter).ok_or_else(|| bad("no boundary line"))?;
    let mut rest = &body[start + delimiter.len()..];
    // Every later delimiter follows a line break.
    let mut next = b"\r\n".to_vec();
    next.extend_from_slice(&delimiter);
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("expected a line break after the boundary"))?;
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(|| bad("a part has no headers end"))?;
        let head = std::str::from_utf8(&rest[..head_end])
            .map_err(|_| bad("part headers are not UTF-8"))?;
        let data_start = head_end + 4;
        let data_len =
            find(&rest[data_start..], &next).ok_or_else(|| bad("no closing boundary"))?;
        let data = &rest[data_start..data_start + data_len];
        let (mut name, mut filename, mut content_type) = (None, None, None);
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                (name, filename) = disposition(v).map_err(bad)?;
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_owned());
            }
        }
        out.push(Part {
            name: name.ok_or_else(|| bad("a part has no name"))?,
            filename,
            content_type,
            data,
        });
        rest = &rest[data_start + data_len + next.len()..];
    }
}

/// The `name` and `filename` of a `Content-Disposition: form-data; …` value. A quoted value is
/// read whole, as the vendor's parser reads it: a `;` or `name=` inside the quotes is the
/// value's (split at every `;`, `name="x; name=model"` read as the field `model` here, and
/// was admitted and priced as a model the vendor never saw named). Either given twice is
/// refused.
fn disposition(value: &str) -> Result<(Option<String>, Option<String>), &'static str> {
    let (mut name, mut filename) = (None, None);
    let mut rest = value.split_once(';').map_or("", |(_, params)| params);
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some(at) = rest.find(['=', ';']) else {
            return Ok((name, filename));
        };
        if rest[at..].starts_with(';') {
            // A parameter without a value: nothing of ours.
            rest = &rest[at..];
            continue;
        }
        let (key, after) = (&rest[..at], rest[at + 1..].trim_start());
        let (text, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut text = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => text.extend(chars.next().map(|(_, c)| c)),
                        Some((i, '"')) => break i + 1,
                        Some((_, c)) => text.push(c),
                        None => return Err("a quoted parameter is not closed"),
                    }
                };
                (text, &quoted[end..])
            }
            None => {
                let end = after.find(';').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            }
        };
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "name" => Some(&mut name),
            "filename" => Some(&mut filename),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                return Err("a part names its `name` or `filename` twice");
            }
            *slot = Some(text);
        }
        rest = next;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A multipart body as an SDK sends it.
    pub fn multipart(boundary: &str, fields: &[(&str, &str)], image: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
        body.extend_from_slice(image);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    }

    #[test]
    fn json_fields_and_defaults() {
        let r = parse_json(br#"{"model":"dall-e-3","prompt":"a fox","size":"1024x1024","quality":"hd","response_format":"url"}"#).unwrap();
        assert_eq!(r.model, "dall-e-3");
        assert_eq!(r.n, 1);
        assert_eq!(r.size.as_deref(), Some("1024x1024"));
        assert_eq!(r.quality.as_deref(), Some("hd"));
        assert_eq!(r.response_format, Some(Format::Url));
        let e = parse_json(br#"{"model":"dall-e-3"}"#).unwrap_err();
        assert!(e.message.contains("prompt"), "{}", e.message);
        let e = parse_json(br#"{"model":"m","prompt":"p","n":11}"#).unwrap_err();
        assert!(e.message.contains("n:"), "{}", e.message);
        let e = parse_json(br#"{"model":"m","prompt":"p","response_format":"png"}"#).unwrap_err();
        assert!(e.message.contains("response_format"), "{}", e.message);
        assert!(parse_json(b"[1]").is_err());
        // A name that would change the upstream URL, or a streamed answer, is refused.
        let long = "m".repeat(300);
        for model in [
            long.as_str(),
            "imagen- x",
            "imagen-4.0:predict#",
            "imagen/../veo-3",
            "a%2fb",
            "",
        ] {
            let body = serde_json::json!({ "model": model, "prompt": "p" }).to_string();
            let e = parse_json(body.as_bytes()).unwrap_err();
            assert!(e.message.contains("model"), "{model}: {}", e.message);
        }
        let e = parse_json(br#"{"model":"gpt-image-1","prompt":"p","stream":true}"#).unwrap_err();
        assert!(e.message.contains("stream"), "{}", e.message);
        assert!(parse_json(br#"{"model":"gpt-image-1","prompt":"p","stream":false}"#).is_ok());
    }

    #[test]
    fn the_fingerprint_ignores_form_and_order_but_not_parameters() {
        let a =
            parse_json(br#"{"model":"m","prompt":"p","size":"1024x1024","response_format":"url"}"#)
                .unwrap();
        let b = parse_json(br#"{"size":"1024x1024","prompt":"p","model":"m","user":"u"}"#).unwrap();
        let c = parse_json(br#"{"model":"m","prompt":"p","size":"512x512"}"#).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn multipart_fields_files_and_fingerprint() {
        let body = multipart(
            "xyz123",
            &[
                ("model", "gpt-image-1"),
                ("prompt", "add a hat"),
                ("n", "2"),
                ("size", "1024x1024"),
            ],
            b"\x89PNG\r\n--not-a-boundary\r\n",
        );
        let r = parse_multipart("multipart/form-data; boundary=xyz123", &body).unwrap();
        assert_eq!(r.model, "gpt-image-1");
        assert_eq!(r.prompt, "add a hat");
        assert_eq!(r.n, 2);
        // Another boundary, same content: same fingerprint; another image: another.
        let same = multipart(
            "other",
            &[
                ("model", "gpt-image-1"),
                ("prompt", "add a hat"),
                ("n", "2"),
                ("size", "1024x1024"),
            ],
            b"\x89PNG\r\n--not-a-boundary\r\n",
        );
        let same = parse_multipart("multipart/form-data; boundary=\"other\"", &same).unwrap();
        assert_eq!(r.fingerprint, same.fingerprint);
        let other = multipart(
            "xyz123",
            &[
                ("model", "gpt-image-1"),
                ("prompt", "add a hat"),
                ("n", "2"),
                ("size", "1024x1024"),
            ],
            b"GIF89a",
        );
        let other = parse_multipart("multipart/form-data; boundary=xyz123", &other).unwrap();
        assert_ne!(r.fingerprint, other.fingerprint);
        // One file; its bytes are not the text's.
        assert_eq!(r.input_images, 1);
        assert_eq!(
            r.text_len,
            "gpt-image-1".len() + "add a hat".len() + "2".len() + "1024x1024".len()
        );
    }

    /// A part's name is read as the vendor reads it: a quoted value whole, `;` and `name=`
    /// inside it included; escapes undone; a name given twice refused.
    #[test]
    fn content_disposition_is_read_with_its_quotes() {
        let read = |v: &str| disposition(v);
        assert_eq!(
            read(r#"form-data; name="image"; filename="in.png""#),
            Ok((Some("image".into()), Some("in.png".into())))
        );
        assert_eq!(
            read(r#"form-data; name="x; name=model""#),
            Ok((Some("x; name=model".into()), None))
        );
        assert_eq!(
            read(r#"form-data; filename="a\"b.png"; name=prompt"#),
            Ok((Some("prompt".into()), Some(r#"a"b.png"#.into())))
        );
        assert_eq!(
            read("form-data; flag; NAME=n"),
            Ok((Some("n".into()), None))
        );
        assert!(read(r#"form-data; name="a"; name="b""#).is_err());
        assert!(read(r#"form-data; name="open"#).is_err());
        // The relay then sees a field named `x; name=model`, not `model`: no model is given.
        let body = "--b\r\nContent-Disposition: form-data; name=\"x; name=model\"\r\n\r\ndall-e-2\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\np\r\n--b--\r\n";
        let e = parse_multipart("multipart/form-data; boundary=b", body.as_bytes()).unwrap_err();
        assert!(e.message.contains("model"), "{}", e.message);
    }

    #[test]
    fn broken_multipart_is_a_client_error() {
        assert!(parse_multipart("application/json", b"{}").is_err());
        assert!(parse_multipart("multipart/form-data; boundary=b", b"--b\r\nno end").is_err());
        let e = parse_multipart("multipart/form-data; boundary=b", b"--b--\r\n").unwrap_err();
        assert!(e.message.contains("model"), "{}", e.message);
        // A field given twice (read as one model here, perhaps as the other upstream).
        let twice = multipart(
            "b",
            &[
                ("model", "dall-e-2"),
                ("model", "gpt-image-1"),
                ("prompt", "p"),
            ],
            b"\x89PNG",
        );
        let e = parse_multipart("multipart/form-data; boundary=b", &twice).unwrap_err();
        assert!(e.message.contains("more than once"), "{}", e.message);
        let streamed = multipart(
            "b",
            &[
                ("model", "gpt-image-1"),
                ("prompt", "p"),
                ("stream", "true"),
            ],
            b"\x89PNG",
        );
        let e = parse_multipart("multipart/form-data; boundary=b", &streamed).unwrap_err();
        assert!(e.message.contains("stream"), "{}", e.message);
    }
}
