//! Image answers in one shape whatever the upstream: read from OpenAI's images JSON (or, in
//! `gemini`, from Imagen and Gemini answers), and written back as OpenAI's images JSON with each
//! image inline (`b64_json`) or as a link (`url`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::request::Format;
use crate::error::{ApiError, ErrorKind};
use crate::usage::TokenUsage;

/// One generated image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub data: Data,
    pub revised_prompt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// The image itself.
    Bytes { bytes: Bytes, mime: String },
    /// A link the upstream made (DALL·E with `response_format: url`); passed on as it is.
    Url(String),
}

/// What an upstream answered, read.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub images: Vec<Image>,
    /// Tokens as reported (token-billed models), and `images`.
    pub usage: TokenUsage,
    /// Of `usage.input_tokens`, the image input tokens.
    pub image_input_tokens: u64,
    /// The answer's other top-level fields (`created`, `usage`, `background`, …), kept as sent.
    pub fields: Map<String, Value>,
}

pub fn unreadable(what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::BadGateway,
        format!("the upstream's image answer could not be read: {what}"),
    )
}

/// The image's media type by its first bytes; `fallback` when they say nothing known.
pub fn sniff(bytes: &[u8], fallback: &str) -> String {
    let mime = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else if bytes.starts_with(b"GIF8") {
        "image/gif"
    } else {
        fallback
    };
    mime.to_owned()
}

pub fn decode_b64(s: &str) -> Result<Bytes, ApiError> {
    B64.decode(s.trim())
        .map(Bytes::from)
        .map_err(|_| unreadable("an image is not valid base64"))
}

/// Reads OpenAI's images JSON: `data[]` of `b64_json` or `url` (with `revised_prompt`), and
/// gpt-image's `usage` (`input_tokens` with `input_tokens_details.image_tokens`, `output_tokens`).
pub fn from_openai(body: &[u8]) -> Result<Generated, ApiError> {
    let mut fields: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| unreadable("not a JSON object"))?;
    let data = match fields.remove("data") {
        Some(Value::Array(items)) => items,
        _ => return Err(unreadable("no data array")),
    };
    let mut images = Vec::with_capacity(data.len());
    for item in data {
        let revised_prompt = item["revised_prompt"].as_str().map(str::to_owned);
        let data = if let Some(b64) = item["b64_json"].as_str() {
            let bytes = decode_b64(b64)?;
            let mime = sniff(&bytes, "image/png");
            Data::Bytes { bytes, mime }
        } else if let Some(url) = item["url"].as_str() {
            Data::Url(url.to_owned())
        } else {
            return Err(unreadable("an image has neither b64_json nor url"));
        };
        images.push(Image {
            data,
            revised_prompt,
        });
    }
    let u = &fields.get("usage").cloned().unwrap_or(Value::Null);
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let usage = TokenUsage {
        input_tokens: n(&u["input_tokens"]),
        output_tokens: n(&u["output_tokens"]),
        cache_read_input_tokens: 0,
        images: images.len() as u64,
        ..TokenUsage::default()
    };
    Ok(Generated {
        image_input_tokens: n(&u["input_tokens_details"]["image_tokens"]),
        images,
        usage,
        fields,
    })
}

/// OpenAI's images JSON for the client: each image in `format`, `links[i]` being image i's
/// stored URL when it has one. An image without a stored URL asked for as a link becomes a
/// `data:` URL; an upstream link asked for inline stays a link (there is nothing to inline).
pub fn to_openai(generated: &Generated, format: Format, links: &[Option<String>]) -> Bytes {
    let mut out = generated.fields.clone();
    if !out.contains_key("created") {
        out.insert("created".into(), json!(jiff::Timestamp::now().as_second()));
    }
    let data: Vec<Value> = generated
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let mut item = Map::new();
            let link = links.get(i).cloned().flatten();
            match (&image.data, format, link) {
                (_, Format::Url, Some(url)) => {
                    item.insert("url".into(), json!(url));
                }
                (Data::Url(url), _, _) => {
                    item.insert("url".into(), json!(url));
                }
                (Data::Bytes { bytes, mime }, Format::Url, None) => {
                    let url = format!("data:{mime};base64,{}", B64.encode(bytes));
                    item.insert("url".into(), json!(url));
                }
                (Data::Bytes { bytes, .. }, Format::B64Json, _) => {
                    item.insert("b64_json".into(), json!(B64.encode(bytes)));
                }
            }
            if let Some(p) = &image.revised_prompt {
                item.insert("revised_prompt".into(), json!(p));
            }
            Value::Object(item)
        })
        .collect();
    out.insert("data".into(), Value::Array(data));
    Bytes::from(Value::Object(out).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nrest";

    #[test]
    fn reads_both_formats_and_token_usage() {
        let body = json!({
            "created": 1713833628,
            "data": [
                { "b64_json": B64.encode(PNG), "revised_prompt": "a red fox" },
                { "url": "https://upstream.example/img.png" }
            ],
            "usage": { "input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210,
                       "input_tokens_details": { "text_tokens": 10, "image_tokens": 40 } }
        });
        let g = from_openai(body.to_string().as_bytes()).unwrap();
        assert_eq!(g.images.len(), 2);
        assert_eq!(
            g.images[0].data,
            Data::Bytes {
                bytes: Bytes::from_static(PNG),
                mime: "image/png".into()
            }
        );
        assert_eq!(g.images[0].revised_prompt.as_deref(), Some("a red fox"));
        assert_eq!(g.usage.input_tokens, 50);
        assert_eq!(g.usage.output_tokens, 4160);
        assert_eq!(g.usage.images, 2);
        assert_eq!(g.image_input_tokens, 40);
        assert!(from_openai(br#"{"data":[{"b64_json":"%%%"}]}"#).is_err());
        assert!(from_openai(br#"{"error":{}}"#).is_err());
    }

    #[test]
    fn writes_links_inline_images_and_data_urls() {
        let g = from_openai(
            json!({ "created": 7, "data": [ { "b64_json": B64.encode(PNG) }, { "b64_json": B64.encode(PNG) } ] })
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&to_openai(
            &g,
            Format::Url,
            &[Some("http://relay/files/abc".into()), None],
        ))
        .unwrap();
        assert_eq!(out["created"], 7);
        assert_eq!(out["data"][0]["url"], "http://relay/files/abc");
        assert!(
            out["data"][1]["url"]
                .as_str()
                .unwrap()
                .starts_with("data:image/png;base64,")
        );
        let out: Value = serde_json::from_slice(&to_openai(&g, Format::B64Json, &[])).unwrap();
        assert_eq!(out["data"][0]["b64_json"], B64.encode(PNG));
        assert!(out["data"][0].get("url").is_none());
    }

    #[test]
    fn sniffs_common_types() {
        assert_eq!(sniff(PNG, "x"), "image/png");
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0], "x"), "image/jpeg");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ", "x"), "image/webp");
        assert_eq!(sniff(b"??", "image/png"), "image/png");
    }
}
