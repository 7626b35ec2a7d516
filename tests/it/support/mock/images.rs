//! Image generation (issue 8): OpenAI `images/generations` and `images/edits` (also on Azure
//! deployments), Imagen `:predict`, and the files that `response_format: "url"` answers point to.
//! (Gemini's image answers to `generateContent` are in [`super::gemini`].)
//!
//! Every image is the same 1×1 PNG ([`PNG_B64`]). `gpt-image-*` models always answer `b64_json`
//! with a `usage` block: `input_tokens = input + image tokens`, `input_tokens_details:
//! {text_tokens: input, image_tokens}` (image tokens: the mock's `set_image_input_tokens`, edits
//! only), `output_tokens = output`. Other models (`dall-e-*`) answer `url` unless asked for
//! `b64_json`, with no usage. URLs are `{base_url}/mock-files/img-{request:04}-{i}.png`.

use bytes::Bytes;
use http::Response;
use http::header::CONTENT_TYPE;

use super::body::{Guard, Step};
use super::openai::error_json;
use super::wire::{J, base64_decode, o};
use super::{
    Behavior, CREATED, Ctx, MockBody, MockUsage, OpenAiOp, Recorded, Shape, Vendor, lock, play,
    sized_response, vendor_json,
};

/// A 1×1 RGBA PNG, base64: the bytes of every generated image.
pub const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mPQqr/yHwAE0QJ94jqzegAAAABJRU5ErkJggg==";

/// The PNG every image answer carries.
pub fn png_bytes() -> Bytes {
    Bytes::from(base64_decode(PNG_B64).expect("valid base64"))
}

/// One part of a `multipart/form-data` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormPart {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl FormPart {
    /// The value of a text field.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

impl Recorded {
    /// The parts of a `multipart/form-data` body (empty if it is not one): field names, file
    /// names and sizes (`data.len()`).
    pub fn multipart(&self) -> Vec<FormPart> {
        self.header("content-type")
            .and_then(|ct| parse_multipart(ct, &self.body))
            .unwrap_or_default()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a `multipart/form-data` body on its boundary (RFC 7578; enough for test clients).
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Vec<FormPart>> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let first = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    let mut rest = &body[find(body, first.as_bytes())? + first.len()..];
    let mut parts = Vec::new();
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n")?;
        let end = find(rest, delimiter.as_bytes())?;
        let (part, after) = rest.split_at(end);
        rest = &after[delimiter.len()..];
        let split = find(part, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&part[..split]).ok()?;
        let mut form = FormPart {
            name: String::new(),
            filename: None,
            content_type: None,
            data: Bytes::copy_from_slice(&part[split + 4..]),
        };
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(':')?;
            if name.eq_ignore_ascii_case("content-type") {
                form.content_type = Some(value.trim().to_owned());
            } else if name.eq_ignore_ascii_case("content-disposition") {
                for param in value.split(';').skip(1) {
                    let (k, v) = param.trim().split_once('=')?;
                    let v = v.trim_matches('"').to_owned();
                    match k {
                        "name" => form.name = v,
                        "filename" => form.filename = Some(v),
                        _ => {}
                    }
                }
            }
        }
        parts.push(form);
    }
    Some(parts)
}

/// Whether `model` bills images by tokens (and always answers base64).
pub fn token_billed(model: &str) -> bool {
    model.starts_with("gpt-image")
}

/// One image as answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageOut {
    B64,
    Url(String),
}

/// The body of an images answer: `created`, `data`, and for `gpt-image-*` the output settings
/// and `usage`.
pub fn images_json(
    model: &str,
    size: &str,
    images: &[ImageOut],
    usage: MockUsage,
    image_tokens: u64,
) -> String {
    let data: Vec<J> = images
        .iter()
        .map(|img| match img {
            ImageOut::B64 => o! {"b64_json": PNG_B64},
            ImageOut::Url(url) => o! {"url": url},
        })
        .collect();
    let mut fields = vec![("created", J::from(CREATED)), ("data", J::Arr(data))];
    if token_billed(model) {
        let input = usage.input + image_tokens;
        fields.extend([
            ("background", J::from("opaque")),
            ("output_format", J::from("png")),
            ("quality", J::from("medium")),
            ("size", J::from(size)),
            (
                "usage",
                o! {
                    "total_tokens": input + usage.output,
                    "input_tokens": input,
                    "output_tokens": usage.output,
                    "input_tokens_details": o! {"text_tokens": usage.input, "image_tokens": image_tokens},
                },
            ),
        ]);
    }
    J::Obj(fields).render()
}

/// The body of a `b64_json` answer of `n` images (a generation: no image input tokens).
pub fn expected_b64_images_bytes(model: &str, size: &str, n: usize, usage: MockUsage) -> Bytes {
    Bytes::from(images_json(model, size, &vec![ImageOut::B64; n], usage, 0))
}

/// The request fields an images answer depends on.
struct Ask {
    model: String,
    size: String,
    n: usize,
    url: bool,
}

impl Ask {
    fn new(
        model: Option<String>,
        size: Option<String>,
        n: Option<usize>,
        format: Option<String>,
    ) -> Ask {
        let model = model.unwrap_or_else(|| "dall-e-2".to_owned());
        let url = !token_billed(&model) && format.as_deref() != Some("b64_json");
        Ask {
            model,
            size: size.unwrap_or_else(|| "1024x1024".to_owned()),
            n: n.unwrap_or(1).max(1),
            url,
        }
    }
}

fn missing(param: &str) -> String {
    error_json(
        &format!("Missing required parameter: '{param}'."),
        "invalid_request_error",
        Some(param),
        Some("missing_required_parameter"),
    )
}

pub(super) async fn openai(
    op: OpenAiOp,
    vendor: Vendor,
    behavior: Behavior,
    ctx: &Ctx,
    guard: Guard,
) -> Response<MockBody> {
    let (ask, image_tokens) = if op == OpenAiOp::ImagesEdit {
        let ct = ctx
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(parts) = parse_multipart(ct, &ctx.body) else {
            let body = error_json(
                &format!("Invalid Content-Type header ({ct}), expected multipart/form-data."),
                "invalid_request_error",
                None,
                None,
            );
            return vendor_json(vendor, 400, body, guard);
        };
        let field = |name: &str| parts.iter().find(|p| p.name == name).map(FormPart::text);
        if field("prompt").is_none() {
            return vendor_json(vendor, 400, missing("prompt"), guard);
        }
        if !parts
            .iter()
            .any(|p| p.name == "image" || p.name == "image[]")
        {
            return vendor_json(vendor, 400, missing("image"), guard);
        }
        let n = field("n").and_then(|n| n.trim().parse().ok());
        let ask = Ask::new(field("model"), field("size"), n, field("response_format"));
        (ask, ctx.options.image_input_tokens)
    } else {
        let Some(obj) = ctx.json() else {
            let body = error_json(
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
                None,
            );
            return vendor_json(vendor, 400, body, guard);
        };
        if obj.get("prompt").and_then(|p| p.as_str()).is_none() {
            return vendor_json(vendor, 400, missing("prompt"), guard);
        }
        let text = |name: &str| obj.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let n = obj.get("n").and_then(|n| n.as_u64()).map(|n| n as usize);
        (
            Ask::new(text("model"), text("size"), n, text("response_format")),
            0,
        )
    };
    let images: Vec<ImageOut> = (0..ask.n)
        .map(|i| {
            if !ask.url {
                return ImageOut::B64;
            }
            let id = format!("img-{:04}-{i}.png", ctx.index + 1);
            let mut st = lock(&ctx.shared);
            let url = format!("{}/mock-files/{id}", st.base_url);
            st.files.insert(id, png_bytes());
            ImageOut::Url(url)
        })
        .collect();
    let usage = behavior.usage().unwrap_or_default();
    let body = images_json(&ask.model, &ask.size, &images, usage, image_tokens);
    let shape = Shape::Sized {
        content_type: "application/json",
        body: Bytes::from(body),
    };
    play(&behavior, shape, guard).await
}

/// The body of an Imagen `:predict` answer with `n` images.
pub fn expected_imagen_bytes(n: usize) -> Bytes {
    let predictions: Vec<J> = (0..n)
        .map(|_| o! {"bytesBase64Encoded": PNG_B64, "mimeType": "image/png"})
        .collect();
    Bytes::from(o! {"predictions": predictions}.render())
}

/// Imagen `:predict`: `parameters.sampleCount` images (default 1), no usage (billed per image).
pub(super) async fn imagen(
    obj: &serde_json::Map<String, serde_json::Value>,
    behavior: Behavior,
    guard: Guard,
) -> Response<MockBody> {
    if !obj.get("instances").is_some_and(|i| i.is_array()) {
        let body = super::gemini::error_json(400, "Invalid value at 'instances'", None);
        return vendor_json(Vendor::Gemini, 400, body, guard);
    }
    let n = obj
        .get("parameters")
        .and_then(|p| p.get("sampleCount"))
        .and_then(|n| n.as_u64())
        .map_or(1, |n| n.max(1) as usize);
    let shape = Shape::Sized {
        content_type: "application/json; charset=UTF-8",
        body: expected_imagen_bytes(n),
    };
    play(&behavior, shape, guard).await
}

/// `GET /mock-files/{id}`: an image made by an earlier `url` answer.
pub(super) fn file(id: &str, ctx: &Ctx, guard: Guard) -> Response<MockBody> {
    let found = lock(&ctx.shared).files.get(id).cloned();
    match found {
        Some(png) => {
            let len = png.len() as u64;
            sized_response(200, "image/png", [Step::Data(png)].into(), len, guard)
        }
        None => vendor_json(
            Vendor::OpenAi,
            404,
            error_json("No such file.", "invalid_request_error", None, None),
            guard,
        ),
    }
}
