//! Amazon Bedrock's runtime for Claude: `POST /model/{model id}/invoke`,
//! `invoke-with-response-stream` (Anthropic's events, each base64 in a binary event-stream
//! frame) and `count-tokens`; credentials checked as Bedrock checks them (a bearer API key, or
//! a SigV4 signature recomputed with the configured secret), errors as Bedrock sends them
//! (`{"message"}` and the kind in `x-amzn-errortype`).

use std::time::{Duration, UNIX_EPOCH};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue as FrameHeader, Message};
use base64::Engine as _;
use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};

use super::body::Guard;
use super::{
    Behavior, Ctx, EVENTS_BEFORE_STALL, ErrorParts, MockBody, Shape, Vendor, anthropic,
    error_response, play, vendor_json,
};

/// The operation a `/model/{id}/…` path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BedrockOp {
    Invoke,
    Stream,
    CountTokens,
}

/// `/model/{id}/{operation}`: the operation and the model id, percent-decoded.
pub(super) fn route(path: &str) -> Option<(BedrockOp, String)> {
    let (id, op) = path.strip_prefix("/model/")?.rsplit_once('/')?;
    let op = match op {
        "invoke" => BedrockOp::Invoke,
        "invoke-with-response-stream" => BedrockOp::Stream,
        "count-tokens" => BedrockOp::CountTokens,
        _ => return None,
    };
    let id: String = form_urlencoded::parse(format!("x={id}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    (!id.is_empty()).then_some((op, id))
}

fn error(status: u16, kind: &str, message: &str) -> ErrorParts {
    (
        status,
        json!({ "message": message }).to_string(),
        vec![(
            "x-amzn-errortype".to_owned(),
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        )],
    )
}

/// A fault behaviour as Bedrock sends it.
pub(super) fn render_fault(behavior: &Behavior) -> ErrorParts {
    match behavior {
        Behavior::RateLimited { .. } => error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        Behavior::VendorError {
            status,
            kind,
            message,
        } => {
            let kind = match kind.as_str() {
                "rate_limit_error" => "ThrottlingException",
                "overloaded_error" => "ServiceUnavailableException",
                "invalid_request_error" => "ValidationException",
                "authentication_error" => "UnrecognizedClientException",
                "permission_error" => "AccessDeniedException",
                "not_found_error" => "ResourceNotFoundException",
                _ => "InternalServerException",
            };
            error(*status, kind, message)
        }
        _ => error(
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
    }
}

/// The request's credentials, as Bedrock checks them: `Err` is the error to answer.
fn check_credentials(ctx: &Ctx) -> Result<(), ErrorParts> {
    let refused = || {
        error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    };
    let key = ctx.options.api_key.as_deref();
    let auth = ctx
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match auth {
        None => Err(error(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )),
        Some(a) if a.starts_with("Bearer ") => match key {
            Some(k) if a["Bearer ".len()..] != *k => Err(refused()),
            _ => Ok(()),
        },
        Some(a) if a.starts_with("AWS4-HMAC-SHA256 ") => {
            let expected = key.and_then(|secret| signature(ctx, a, secret));
            if expected.as_deref() == Some(a) {
                Ok(())
            } else {
                Err(error(
                    403,
                    "InvalidSignatureException",
                    "The request signature we calculated does not match the signature you provided.",
                ))
            }
        }
        Some(_) => Err(refused()),
    }
}

/// The `authorization` the request should carry, signed again here with `secret` for the
/// access key, region and time it names.
fn signature(ctx: &Ctx, presented: &str, secret: &str) -> Option<String> {
    let credential = presented.split("Credential=").nth(1)?.split(',').next()?;
    let mut scope = credential.split('/');
    let (access_key, _, region) = (scope.next()?, scope.next()?, scope.next()?);
    let date = ctx.headers.get("x-amz-date")?.to_str().ok()?;
    let time = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", date)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(time.as_second()).ok()?);
    let identity =
        aws_credential_types::Credentials::new(access_key, secret, None, None, "mock").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .ok()?
        .into();
    let host = ctx.headers.get("host")?.to_str().ok()?;
    let url = format!("http://{host}{}", ctx.path);
    let headers: Vec<(&str, &str)> = ["accept", "content-type"]
        .iter()
        .filter_map(|n| Some((*n, ctx.headers.get(*n)?.to_str().ok()?)))
        .collect();
    let request = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(&ctx.body),
    )
    .ok()?;
    let (instructions, _) = sign(request, &params).ok()?.into_parts();
    instructions
        .headers()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_owned())
}

fn refuse(parts: ErrorParts, guard: Guard) -> Response<MockBody> {
    let (status, body, headers) = parts;
    error_response(
        Vendor::Bedrock,
        &Behavior::Error {
            status,
            body,
            headers,
        },
        guard,
    )
}

fn invalid(message: &str, guard: Guard) -> Response<MockBody> {
    refuse(error(400, "ValidationException", message), guard)
}

pub(super) async fn handle(
    op: BedrockOp,
    model: &str,
    behavior: Behavior,
    ctx: &Ctx,
    guard: Guard,
) -> Response<MockBody> {
    if let Err(refused) = check_credentials(ctx) {
        return refuse(refused, guard);
    }
    let Some(usage) = behavior.usage() else {
        return error_response(Vendor::Bedrock, &behavior, guard);
    };
    let parsed: Option<Value> = serde_json::from_slice(&ctx.body).ok();
    let body = match (op, &parsed) {
        (BedrockOp::CountTokens, Some(v)) => v["input"]["invokeModel"]["body"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
        _ => parsed,
    };
    // Claude 4 models take no on-demand call by their bare id, only through an inference profile;
    // a count takes the model's own id, not a profile.
    let profile = ["us.", "eu.", "apac.", "global.", "us-gov."]
        .iter()
        .any(|geo| model.starts_with(geo));
    if op != BedrockOp::CountTokens
        && model.starts_with("anthropic.claude-")
        && model.contains("-4")
    {
        return invalid(
            &format!(
                "Invocation of model ID {model} with on-demand throughput isn't supported. Retry your request with the ID or ARN of an inference profile that contains this model."
            ),
            guard,
        );
    }
    if op == BedrockOp::CountTokens && profile {
        return invalid("The provided model doesn't support counting tokens.", guard);
    }
    let Some(Value::Object(obj)) = body else {
        return invalid(
            "Malformed input request, please reformat your input and try again.",
            guard,
        );
    };
    if obj.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
        return invalid(
            "Malformed input request: #: required key [anthropic_version] not found",
            guard,
        );
    }
    for key in ["model", "stream"] {
        if obj.contains_key(key) {
            return invalid(
                &format!("Malformed input request: #: extraneous key [{key}] is not permitted"),
                guard,
            );
        }
    }
    if !obj.get("max_tokens").is_some_and(Value::is_u64) {
        return invalid(
            "Malformed input request: #: required key [max_tokens] not found",
            guard,
        );
    }
    // The betas Bedrock takes; a model of the newest generation takes only the first.
    let known = [
        "interleaved-thinking-2025-05-14",
        "context-1m-2025-08-07",
        "effort-2025-11-24",
        "context-management-2025-06-27",
    ];
    let takes = if model.contains("opus-4-7") {
        &known[..1]
    } else {
        &known[..]
    };
    if let Some(betas) = obj.get("anthropic_beta") {
        let all_taken = betas.as_array().is_some_and(|b| {
            b.iter()
                .all(|b| b.as_str().is_some_and(|b| takes.contains(&b)))
        });
        if !all_taken {
            return invalid("invalid beta flag", guard);
        }
    }
    let betas = obj.get("anthropic_beta").and_then(Value::as_array);
    let named = |beta: &str| betas.is_some_and(|b| b.iter().any(|x| x == beta));
    if obj.contains_key("context_management") && !named("context-management-2025-06-27") {
        return invalid("context_management: Extra inputs are not permitted", guard);
    }
    let thinks = match anthropic::thinking(&obj) {
        Ok(thinks) => thinks,
        Err(message) => return invalid(&message, guard),
    };
    let shape = match op {
        BedrockOp::CountTokens => {
            let body = json!({ "inputTokens": usage.input }).to_string();
            return vendor_json(Vendor::Bedrock, 200, body, guard);
        }
        BedrockOp::Invoke => Shape::Sized {
            content_type: "application/json",
            body: anthropic::answer_json(model, usage, thinks),
        },
        BedrockOp::Stream => Shape::Stream {
            content_type: "application/vnd.amazon.eventstream",
            events: anthropic::answer_events(model, usage, thinks)
                .iter()
                .map(frame_of)
                .collect(),
            before_stall: EVENTS_BEFORE_STALL,
        },
    };
    play(&behavior, shape, guard).await
}

/// The event-stream frame Bedrock sends for one SSE event of Anthropic's: its data, base64.
fn frame_of(sse: &Bytes) -> Bytes {
    let text = std::str::from_utf8(sse).expect("mock events are text");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("an event with data");
    let bytes = base64::engine::general_purpose::STANDARD.encode(data);
    let headers = vec![
        Header::new(":message-type", FrameHeader::String("event".into())),
        Header::new(":event-type", FrameHeader::String("chunk".into())),
        Header::new(
            ":content-type",
            FrameHeader::String("application/json".into()),
        ),
    ];
    let payload = json!({ "bytes": bytes, "p": "abcdefghij" }).to_string();
    let mut out = Vec::new();
    write_message_to(&Message::new_from_parts(headers, payload), &mut out)
        .expect("a frame is written");
    Bytes::from(out)
}
