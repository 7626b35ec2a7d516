use std::collections::BTreeMap;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::Header;
use http_body::Frame;
use http_body_util::{BodyExt, Either, StreamBody};

use std::time::UNIX_EPOCH;

use super::*;
use crate::store::{AccountRecord, Provider};

fn account(access_key_id: Option<&str>, deployments: &[(&str, &str)]) -> Account {
    let record = AccountRecord {
        id: "acct_b".into(),
        name: "bedrock".into(),
        provider: Provider::Bedrock,
        base_url: default_base_url("us-west-2"),
        sealed_api_key: String::new(),
        priority: 0,
        schedulable: true,
        enabled: true,
        models: Vec::new(),
        max_concurrency: None,
        weight: 1,
        group: None,
        api_version: None,
        deployments: deployments
            .iter()
            .map(|(m, id)| ((*m).to_owned(), (*id).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        model_map: BTreeMap::new(),
        region: Some("us-west-2".into()),
        aws_access_key_id: access_key_id.map(str::to_owned),
        project: None,
        sealed_proxy: None,
        oauth: None,
        daily_cost_nanousd: None,
        monthly_cost_nanousd: None,
        revision: 0,
        created_at: 0,
    };
    Account::new(record, "secret-or-api-key", None).unwrap()
}

#[test]
fn models_map_to_bedrock_ids_in_the_url() {
    let a = account(
        None,
        &[(
            "claude-sonnet-4-5",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        )],
    );
    assert_eq!(
        upstream_url(&a, Operation::InvokeStream, "claude-sonnet-4-5"),
        "https://bedrock-runtime.us-west-2.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    );
    assert_eq!(
        upstream_url(&a, Operation::Invoke, "claude-haiku-4-5-20251001"),
        "https://bedrock-runtime.us-west-2.amazonaws.com/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"
    );
    // The region's cross-region profile by default; a count takes the model itself.
    assert_eq!(
        upstream_url(&a, Operation::CountTokens, "claude-sonnet-4-5"),
        "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );
    for (region, geo) in [
        ("eu-central-1", "eu."),
        ("ap-northeast-1", "apac."),
        ("us-gov-west-1", "us-gov."),
        ("sa-east-1", "global."),
    ] {
        assert_eq!(geography(region), geo, "{region}");
    }
    assert_eq!(counted_model("global.anthropic.x-v1:0"), "anthropic.x-v1:0");
    assert_eq!(counted_model("us.meta.llama"), "us.meta.llama");
    // A Bedrock id, or an ARN, as the client named it.
    assert_eq!(
        model_id(&a, "global.anthropic.claude-opus-4-5-20251101-v1:0"),
        "global.anthropic.claude-opus-4-5-20251101-v1:0"
    );
    let arn = "arn:aws:bedrock:us-west-2:123456789012:application-inference-profile/abc";
    assert!(upstream_url(&a, Operation::CountTokens, arn).ends_with(
        "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Aapplication-inference-profile%2Fabc/count-tokens"
    ));
    assert_eq!(
        Operation::of("/v1/messages", true),
        Some(Operation::InvokeStream)
    );
    assert_eq!(
        Operation::of("/v1/messages/count_tokens", false),
        Some(Operation::CountTokens)
    );
    assert_eq!(Operation::of("/v1/models", false), None);
}

/// The invocation body a token count of `body` wraps.
fn counted(body: &[u8]) -> Value {
    let sent: Value = serde_json::from_slice(
        &request_body(body, &HeaderMap::new(), Operation::CountTokens, true).unwrap(),
    )
    .unwrap();
    let inner = sent["input"]["invokeModel"]["body"].as_str().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(inner)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn the_body_loses_model_and_stream_and_carries_version_and_betas() {
    let mut client = HeaderMap::new();
    client.append(
        "anthropic-beta",
        HeaderValue::from_static(
            "interleaved-thinking-2025-05-14, fine-grained-tool-streaming-2025-05-14",
        ),
    );
    client.append(
        "anthropic-beta",
        HeaderValue::from_static("context-1m-2025-08-07"),
    );
    let body = br#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let sent: Value = serde_json::from_slice(
        &request_body(body, &client, Operation::InvokeStream, true).unwrap(),
    )
    .unwrap();
    assert_eq!(
        sent,
        json!({
            "anthropic_version": "bedrock-2023-05-31",
            // Only those Bedrock takes: it refuses the request for any other.
            "anthropic_beta": ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"],
            "max_tokens": 64,
            "messages": [{ "role": "user", "content": "hi" }],
        })
    );
    // A count wraps an invocation's body, which needs a max_tokens.
    let count = br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#;
    let inner = counted(count);
    assert_eq!(inner["max_tokens"], 1);
    assert_eq!(inner["anthropic_version"], ANTHROPIC_VERSION);
    assert!(inner.get("model").is_none() && inner.get("anthropic_beta").is_none());
    assert!(request_body(b"[1]", &HeaderMap::new(), Operation::Invoke, true).is_none());
    // Without betas, also none the client put in the body itself.
    let own = br#"{"model":"m","max_tokens":1,"anthropic_beta":["x"],"messages":[]}"#;
    let sent: Value =
        serde_json::from_slice(&request_body(own, &client, Operation::Invoke, false).unwrap())
            .unwrap();
    assert!(sent.get("anthropic_beta").is_none(), "{sent}");
}

#[test]
fn credentials_are_a_bearer_api_key_or_a_sigv4_signature() {
    let body = br#"{"max_tokens":1}"#;
    let bearer = account(None, &[]);
    let url = upstream_url(&bearer, Operation::Invoke, "claude-haiku-4-5");
    let headers = upstream_headers(&bearer, Operation::Invoke, &url, body).unwrap();
    assert_eq!(headers[AUTHORIZATION], "Bearer secret-or-api-key");
    assert!(headers[AUTHORIZATION].is_sensitive());
    assert_eq!(headers[ACCEPT], "application/json");

    let signed = account(Some("AKIDEXAMPLE12345"), &[]);
    let headers = upstream_headers(&signed, Operation::InvokeStream, &url, body).unwrap();
    assert_eq!(headers[ACCEPT], "application/vnd.amazon.eventstream");
    let date = headers["x-amz-date"].to_str().unwrap();
    assert_eq!(date.len(), 16, "{date}");
    let auth = headers[AUTHORIZATION].to_str().unwrap();
    let scope = format!(
        "Credential=AKIDEXAMPLE12345/{}/us-west-2/bedrock/aws4_request",
        &date[..8]
    );
    assert!(auth.starts_with("AWS4-HMAC-SHA256 "), "{auth}");
    assert!(auth.contains(&scope), "{auth}");
    assert!(
        auth.contains("SignedHeaders=accept;content-type;host;x-amz-date"),
        "{auth}"
    );
    assert!(headers[AUTHORIZATION].is_sensitive());
    // The signature covers the body, the URL and the time, and nothing else varies it.
    let at = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let sign = |url: &str, body: &[u8], at| {
        headers_at(&signed, Operation::Invoke, url, body, at).unwrap()[AUTHORIZATION].clone()
    };
    let first = sign(&url, body, at);
    assert_eq!(sign(&url, body, at), first);
    assert_ne!(sign(&url, br#"{"max_tokens":2}"#, at), first);
    assert_ne!(sign(&format!("{url}x"), body, at), first);
    assert_ne!(sign(&url, body, at + Duration::from_secs(1)), first);
}

const STREAM: &[(&str, &str)] = &[("content-type", "application/vnd.amazon.eventstream")];

fn upstream(status: u16, headers: &[(&str, &str)], chunks: Vec<Bytes>) -> UpstreamResponse {
    let frames = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(c))),
    );
    let mut resp = Response::new(Either::Right(StreamBody::new(frames).boxed()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        resp.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    resp
}

async fn read(resp: UpstreamResponse) -> (StatusCode, HeaderMap, Result<Bytes, String>) {
    let (head, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (head.status, head.headers, body)
}

#[tokio::test]
async fn errors_become_anthropic_s_with_the_status_their_kind_stands_for() {
    for (status, kind, sent, anthropic) in [
        (
            429,
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            429,
            "rate_limit_error",
        ),
        (
            403,
            "UnrecognizedClientException",
            401,
            "authentication_error",
        ),
        (403, "AccessDeniedException", 403, "permission_error"),
        (503, "ServiceUnavailableException", 529, "overloaded_error"),
        (400, "ValidationException", 400, "invalid_request_error"),
        (404, "ResourceNotFoundException", 404, "not_found_error"),
        (500, "InternalServerException", 500, "api_error"),
        (408, "ModelTimeoutException", 504, "timeout_error"),
    ] {
        let resp = upstream(
            status,
            &[
                ("x-amzn-errortype", kind),
                ("content-type", "application/json"),
            ],
            vec![Bytes::from_static(br#"{"message":"it went wrong"}"#)],
        );
        let (resp, message) = answer(resp, Operation::Invoke).await;
        assert_eq!(message.as_deref(), Some("it went wrong"));
        let (got, headers, body) = read(resp).await;
        assert_eq!(got.as_u16(), sent, "{kind}");
        let body: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(
            body,
            json!({ "type": "error", "error": { "type": anthropic, "message": "it went wrong" } }),
            "{kind}"
        );
        assert_eq!(
            headers[CONTENT_LENGTH],
            body.to_string().len().to_string().as_str()
        );
    }
    // A model the account cannot call so is another account's to serve (403), a clock that is
    // off is no refused credential (500).
    for (status, kind, message, sent) in [
        (
            400,
            "ValidationException",
            "Invocation of model ID anthropic.claude-sonnet-4-5-20250929-v1:0 with on-demand throughput isn't supported. Retry your request with the ID or ARN of an inference profile that contains this model.",
            403,
        ),
        (
            400,
            "ValidationException",
            "The provided model identifier is invalid.",
            403,
        ),
        (
            403,
            "InvalidSignatureException",
            "Signature expired: 20261207T120000Z is now earlier than 20261207T121500Z",
            500,
        ),
    ] {
        let body = Bytes::from(json!({ "message": message }).to_string());
        let resp = upstream(status, &[("x-amzn-errortype", kind)], vec![body]);
        let (got, _, _) = read(answer(resp, Operation::Invoke).await.0).await;
        assert_eq!(got.as_u16(), sent, "{message}");
    }
    // Without a kind, by the status; a body that is not JSON is the message.
    let resp = upstream(429, &[], vec![Bytes::from_static(b"slow down")]);
    let (got, _, body) = read(answer(resp, Operation::InvokeStream).await.0).await;
    assert_eq!(got.as_u16(), 429);
    let body: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(body["error"]["message"], "slow down");
}

#[tokio::test]
async fn a_token_count_is_anthropic_s() {
    let resp = upstream(
        200,
        &[],
        vec![Bytes::from_static(br#"{"inputTokens":1234}"#)],
    );
    let (status, _, body) = read(answer(resp, Operation::CountTokens).await.0).await;
    assert_eq!(status, 200);
    assert_eq!(&body.unwrap()[..], br#"{"input_tokens":1234}"#);
    let resp = upstream(200, &[], vec![Bytes::from_static(b"{}")]);
    let (status, _, _) = read(answer(resp, Operation::CountTokens).await.0).await;
    assert_eq!(status, 502);
}

/// An event-stream frame as Bedrock sends one.
fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let headers = headers
        .iter()
        .map(|(n, v)| Header::new((*n).to_owned(), FrameHeader::String((*v).to_owned().into())))
        .collect();
    let mut out = Vec::new();
    write_message_to(
        &Message::new_from_parts(headers, Bytes::copy_from_slice(payload)),
        &mut out,
    )
    .unwrap();
    Bytes::from(out)
}

fn chunk(event: &Value) -> Bytes {
    let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    frame(
        &[
            (":message-type", "event"),
            (":event-type", "chunk"),
            (":content-type", "application/json"),
        ],
        json!({ "bytes": bytes, "p": "abcd" })
            .to_string()
            .as_bytes(),
    )
}

#[tokio::test]
async fn a_stream_s_frames_become_the_sse_events_they_carry() {
    let events = [
        json!({ "type": "message_start", "message": { "id": "msg_bdrk_1", "usage": { "input_tokens": 12, "output_tokens": 1 } } }),
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "Hi" } }),
        json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 3 } }),
        json!({ "type": "message_stop", "amazon-bedrock-invocationMetrics": { "inputTokenCount": 12, "outputTokenCount": 3 } }),
    ];
    let mut whole = Vec::new();
    for event in &events {
        whole.extend_from_slice(&chunk(event));
    }
    let expected: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    // Whole, a byte at a time, and in pieces that cut frames anywhere.
    for split in [whole.len(), 1, 7, 100] {
        let pieces = whole.chunks(split).map(Bytes::copy_from_slice).collect();
        let resp = upstream(
            200,
            &[("content-type", "application/vnd.amazon.eventstream")],
            pieces,
        );
        let (status, headers, body) = read(answer(resp, Operation::InvokeStream).await.0).await;
        assert_eq!(status, 200);
        assert!(crate::providers::is_event_stream(&headers));
        assert_eq!(
            String::from_utf8(body.unwrap().to_vec()).unwrap(),
            expected,
            "split {split}"
        );
    }

    // An exception ends the stream with Anthropic's error event.
    let mut cut = chunk(&events[0]).to_vec();
    cut.extend_from_slice(&frame(
        &[
            (":message-type", "exception"),
            (":exception-type", "throttlingException"),
        ],
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
    ));
    cut.extend_from_slice(&chunk(&events[1]));
    let resp = upstream(200, STREAM, vec![Bytes::from(cut)]);
    let (_, _, body) = read(answer(resp, Operation::InvokeStream).await.0).await;
    let text = String::from_utf8(body.unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.ends_with("event: error\ndata: {\"error\":{\"message\":\"Too many tokens, please wait before trying again.\",\"type\":\"rate_limit_error\"},\"type\":\"error\"}\n\n"), "{text}");
    assert!(!text.contains("content_block_delta"), "{text}");

    // A stream that ends inside a frame is cut, not complete.
    let half = whole[..whole.len() - 3].to_vec();
    let resp = upstream(200, STREAM, vec![Bytes::from(half)]);
    let (_, _, body) = read(answer(resp, Operation::InvokeStream).await.0).await;
    assert!(body.is_err());
}

#[test]
fn a_count_has_room_above_a_thinking_budget() {
    let body = br#"{"model":"m","thinking":{"type":"enabled","budget_tokens":2048},"messages":[]}"#;
    assert_eq!(counted(body)["max_tokens"], 2049);
}

/// What is not a stream of frames is refused before it is buffered: another content type, a
/// prelude whose checksum is wrong or that announces more than a frame may hold.
#[tokio::test]
async fn what_is_not_an_event_stream_is_refused_at_once() {
    let json = upstream(
        200,
        &[("content-type", "application/json")],
        vec![Bytes::from_static(b"{\"type\":\"message\"}")],
    );
    let (resp, message) = answer(json, Operation::InvokeStream).await;
    assert!(message.unwrap().contains("application/json"));
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 502);
    assert!(
        String::from_utf8(body.unwrap().to_vec())
            .unwrap()
            .contains("api_error")
    );

    let mut huge = Vec::new();
    huge.extend_from_slice(&(64u32 * 1024 * 1024).to_be_bytes());
    huge.extend_from_slice(&0u32.to_be_bytes());
    let crc = crc32fast::hash(&huge);
    huge.extend_from_slice(&crc.to_be_bytes());
    let mut garbage = b"{\"type\":\"message_start\"} and more".to_vec();
    garbage.resize(64, b' ');
    for (name, bytes) in [("a frame too large", huge), ("not frames", garbage)] {
        let resp = upstream(200, STREAM, vec![Bytes::from(bytes)]);
        let (_, _, body) = read(answer(resp, Operation::InvokeStream).await.0).await;
        assert!(body.is_err(), "{name}");
    }

    // The events before a bad frame reach the client, then the fault.
    let event = json!({ "type": "ping" });
    let mut bytes = chunk(&event).to_vec();
    bytes.extend_from_slice(&[0u8; 16]);
    let resp = upstream(200, STREAM, vec![Bytes::from(bytes)]);
    let (_, body) = answer(resp, Operation::InvokeStream).await.0.into_parts();
    let mut body = body;
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    assert!(body.frame().await.unwrap().is_err());
    assert!(body.frame().await.is_none());

    // A stream cut right after a frame's prelude is cut, not whole.
    let whole = chunk(&event);
    let resp = upstream(200, STREAM, vec![whole.slice(..12)]);
    let (_, _, body) = read(answer(resp, Operation::InvokeStream).await.0).await;
    assert!(body.is_err());
}

/// Frames other than chunks pass unseen; an `error` frame carries its text in a header.
#[tokio::test]
async fn other_frames_and_error_frames() {
    let mut bytes = frame(
        &[
            (":message-type", "event"),
            (":event-type", "initial-response"),
        ],
        b"{}",
    )
    .to_vec();
    bytes.extend_from_slice(&chunk(&json!({ "type": "ping" })));
    bytes.extend_from_slice(&frame(
        &[
            (":message-type", "error"),
            (":error-code", "ServiceUnavailableException"),
            (":error-message", "Try again."),
        ],
        b"",
    ));
    let resp = upstream(200, STREAM, vec![Bytes::from(bytes)]);
    let (_, _, body) = read(answer(resp, Operation::InvokeStream).await.0).await;
    let text = String::from_utf8(body.unwrap().to_vec()).unwrap();
    assert_eq!(
        text,
        "event: ping\ndata: {\"type\":\"ping\"}\n\nevent: error\ndata: {\"error\":{\"message\":\"Try again.\",\"type\":\"overloaded_error\"},\"type\":\"error\"}\n\n"
    );
}
