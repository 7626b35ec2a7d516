//! `/v1/images/generations` for Google's image models, translated: Imagen (`imagen-*`) through
//! `models/{model}:predict`, Gemini image models (`gemini-*-image*`) through
//! `models/{model}:generateContent` with the IMAGE response modality; and their answers read back
//! into the common shape (`answer::Generated`).

use bytes::Bytes;
use serde_json::{Value, json};

use super::answer::{Data, Generated, Image, decode_b64, sniff, unreadable};
use super::request::ImageRequest;
use crate::error::ApiError;
use crate::usage::TokenUsage;

/// Models served by Gemini accounts.
pub fn serves(model: &str) -> bool {
    model.starts_with("imagen-") || model.starts_with("gemini-")
}

pub fn is_imagen(model: &str) -> bool {
    model.starts_with("imagen-")
}

/// The aspect ratio Google's models take nearest to an OpenAI size (`1792x1024` → `16:9`).
pub fn aspect_ratio(size: &str) -> Option<&'static str> {
    let (w, h) = size.split_once('x')?;
    let (w, h): (f64, f64) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    if w <= 0.0 || h <= 0.0 {
        return None;
    }
    let ratio = w / h;
    const RATIOS: [(&str, f64); 5] = [
        ("1:1", 1.0),
        ("3:4", 0.75),
        ("4:3", 4.0 / 3.0),
        ("9:16", 9.0 / 16.0),
        ("16:9", 16.0 / 9.0),
    ];
    RATIOS
        .iter()
        .min_by(|a, b| {
            (a.1 - ratio)
                .abs()
                .partial_cmp(&(b.1 - ratio).abs())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|(name, _)| *name)
}

/// Most images one Imagen request makes (`sampleCount`): four, one for the Ultra models; also
/// how many it makes when the request does not say.
pub fn imagen_max_n(model: &str) -> u64 {
    if model.contains("-ultra") { 1 } else { 4 }
}

/// Refuses what Google's image models refuse, in the client's words: Gemini image models make
/// one candidate a request ("Multiple candidates is not enabled"), Imagen at most four (Imagen
/// Ultra one).
pub fn check(req: &ImageRequest) -> Result<(), ApiError> {
    let most = imagen_max_n(&req.model);
    if is_imagen(&req.model) && req.n > most {
        return Err(ApiError::invalid(format!(
            "n: {} makes at most {most} image{} a request",
            req.model,
            if most == 1 { "" } else { "s" }
        )));
    }
    if !is_imagen(&req.model) && req.n > 1 {
        return Err(ApiError::invalid(format!(
            "n: {} makes one image a request; send {} requests",
            req.model, req.n
        )));
    }
    Ok(())
}

/// The upstream method path and body for `req` (checked by [`check`]).
pub fn request(req: &ImageRequest) -> (String, Bytes) {
    let ratio = req.size.as_deref().and_then(aspect_ratio);
    if is_imagen(&req.model) {
        let mut parameters = json!({ "sampleCount": req.n });
        if let Some(r) = ratio {
            parameters["aspectRatio"] = json!(r);
        }
        let body = json!({ "instances": [{ "prompt": req.prompt }], "parameters": parameters });
        (
            format!("models/{}:predict", req.model),
            Bytes::from(body.to_string()),
        )
    } else {
        let mut config = json!({ "responseModalities": ["TEXT", "IMAGE"] });
        if let Some(r) = ratio {
            config["imageConfig"] = json!({ "aspectRatio": r });
        }
        let body = json!({
            "contents": [{ "role": "user", "parts": [{ "text": req.prompt }] }],
            "generationConfig": config,
        });
        (
            format!("models/{}:generateContent", req.model),
            Bytes::from(body.to_string()),
        )
    }
}

/// An image's media type by its bytes, as for OpenAI's answers; the upstream's word only when
/// they say nothing known, and only an `image/` type: a stored image is served from the relay's
/// own origin with this type, which must never be `text/html`.
fn media_type(bytes: &[u8], declared: Option<&str>) -> String {
    let fallback = declared
        .filter(|m| {
            m.strip_prefix("image/").is_some_and(|sub| {
                !sub.is_empty()
                    && sub
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
            })
        })
        .unwrap_or("image/png");
    sniff(bytes, fallback)
}

/// Imagen's `:predict` answer: `predictions[]` of `bytesBase64Encoded` and `mimeType` (filtered
/// ones carry neither and are skipped).
pub fn from_predict(body: &[u8]) -> Result<Generated, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| unreadable("not JSON"))?;
    let predictions = v["predictions"].as_array().map_or(&[][..], Vec::as_slice);
    let mut images = Vec::new();
    for p in predictions {
        let Some(b64) = p["bytesBase64Encoded"].as_str() else {
            continue;
        };
        let bytes = decode_b64(b64)?;
        let mime = media_type(&bytes, p["mimeType"].as_str());
        images.push(Image {
            data: Data::Bytes { bytes, mime },
            revised_prompt: p["prompt"].as_str().map(str::to_owned),
        });
    }
    Ok(Generated {
        usage: TokenUsage {
            images: images.len() as u64,
            ..TokenUsage::default()
        },
        images,
        ..Generated::default()
    })
}

/// A Gemini `generateContent` answer: every `inlineData` image part of every candidate, and
/// `usageMetadata` (output = candidates + thoughts; cached prompt tokens as cache reads).
pub fn from_generate(body: &[u8]) -> Result<Generated, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| unreadable("not JSON"))?;
    let mut images = Vec::new();
    for candidate in v["candidates"].as_array().map_or(&[][..], Vec::as_slice) {
        for part in candidate["content"]["parts"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
        {
            let inline = if part["inlineData"].is_object() {
                &part["inlineData"]
            } else {
                &part["inline_data"]
            };
            let Some(b64) = inline["data"].as_str() else {
                continue;
            };
            let bytes = decode_b64(b64)?;
            let declared = inline["mimeType"].as_str().or(inline["mime_type"].as_str());
            let mime = media_type(&bytes, declared);
            images.push(Image {
                data: Data::Bytes { bytes, mime },
                revised_prompt: None,
            });
        }
    }
    let u = &v["usageMetadata"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let prompt = n(&u["promptTokenCount"]);
    let cached = n(&u["cachedContentTokenCount"]).min(prompt);
    let image_input = u["promptTokensDetails"].as_array().map_or(0, |details| {
        details
            .iter()
            .filter(|d| d["modality"] == "IMAGE")
            .map(|d| n(&d["tokenCount"]))
            .sum()
    });
    let usage = TokenUsage {
        input_tokens: prompt - cached,
        output_tokens: n(&u["candidatesTokenCount"]).saturating_add(n(&u["thoughtsTokenCount"])),
        cache_read_input_tokens: cached,
        images: images.len() as u64,
        ..TokenUsage::default()
    };
    let mut fields = serde_json::Map::new();
    fields.insert(
        "usage".into(),
        json!({
            "input_tokens": prompt,
            "output_tokens": usage.output_tokens,
            "total_tokens": prompt.saturating_add(usage.output_tokens),
        }),
    );
    Ok(Generated {
        images,
        usage,
        image_input_tokens: image_input.min(usage.input_tokens),
        fields,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    #[test]
    fn the_media_type_comes_from_the_bytes_and_is_always_an_image() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        assert_eq!(media_type(png, Some("text/html")), "image/png");
        assert_eq!(media_type(png, Some("image/jpeg")), "image/png");
        assert_eq!(media_type(b"????", Some("text/html")), "image/png");
        assert_eq!(media_type(b"????", Some("image/avif")), "image/avif");
        assert_eq!(media_type(b"????", Some("image/x;y")), "image/png");
        assert_eq!(media_type(b"????", None), "image/png");
    }

    fn ask(model: &str, n: u64, size: Option<&str>) -> ImageRequest {
        ImageRequest {
            model: model.into(),
            prompt: "a lighthouse".into(),
            n,
            size: size.map(str::to_owned),
            quality: None,
            response_format: None,
            output_format: None,
            fingerprint: [0; 32],
            input_images: 0,
            text_len: 0,
        }
    }

    #[test]
    fn imagen_goes_to_predict_and_gemini_to_generate_content() {
        let (path, body) = request(&ask("imagen-4.0-generate-001", 2, Some("1792x1024")));
        assert_eq!(path, "models/imagen-4.0-generate-001:predict");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["instances"][0]["prompt"], "a lighthouse");
        assert_eq!(v["parameters"]["sampleCount"], 2);
        assert_eq!(v["parameters"]["aspectRatio"], "16:9");
        let (path, body) = request(&ask("gemini-2.5-flash-image", 1, None));
        assert_eq!(path, "models/gemini-2.5-flash-image:generateContent");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["contents"][0]["parts"][0]["text"], "a lighthouse");
        assert_eq!(
            v["generationConfig"]["responseModalities"],
            json!(["TEXT", "IMAGE"])
        );
        assert!(v["generationConfig"].get("candidateCount").is_none());
    }

    #[test]
    fn aspect_ratios_are_the_nearest() {
        assert_eq!(aspect_ratio("1024x1024"), Some("1:1"));
        assert_eq!(aspect_ratio("1024x1792"), Some("9:16"));
        assert_eq!(aspect_ratio("1536x1024"), Some("4:3"));
        assert_eq!(aspect_ratio("big"), None);
    }

    #[test]
    fn reads_predictions_and_inline_images_with_usage() {
        let png = b"\x89PNG\r\n\x1a\nimg";
        let predict = json!({ "predictions": [
            { "bytesBase64Encoded": B64.encode(png), "mimeType": "image/png" },
            { "raiFilteredReason": "filtered" }
        ]});
        let g = from_predict(predict.to_string().as_bytes()).unwrap();
        assert_eq!(g.images.len(), 1);
        assert_eq!(g.usage.images, 1);
        let generate = json!({
            "candidates": [{ "content": { "role": "model", "parts": [
                { "text": "Here it is" },
                { "inlineData": { "mimeType": "image/png", "data": B64.encode(png) } }
            ]}}],
            "usageMetadata": { "promptTokenCount": 12, "candidatesTokenCount": 1290,
                "totalTokenCount": 1302,
                "candidatesTokensDetails": [{ "modality": "IMAGE", "tokenCount": 1290 }] }
        });
        let g = from_generate(generate.to_string().as_bytes()).unwrap();
        assert_eq!(g.images.len(), 1);
        assert_eq!(
            (g.usage.input_tokens, g.usage.output_tokens, g.usage.images),
            (12, 1290, 1)
        );
        assert!(from_generate(b"<html>").is_err());
    }
}
