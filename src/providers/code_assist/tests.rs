use http::StatusCode;
use http_body::Frame;
use http_body_util::{BodyExt, Either, StreamBody};

use super::*;

/// The body sent for `body`, if it may go.
fn request_body(body: &Bytes, model: &str, op: Op, project: &str) -> Option<Bytes> {
    prepare(body, op).map(|prepared| prepared.body(model, project))
}

#[test]
fn the_calls_served_are_gemini_s_generations_and_token_counts() {
    assert_eq!(
        Op::of("models/gemini-2.5-pro:streamGenerateContent"),
        Some(("gemini-2.5-pro", Op::Stream))
    );
    assert_eq!(
        Op::of("models/gemini-2.5-flash:generateContent"),
        Some(("gemini-2.5-flash", Op::Generate))
    );
    assert_eq!(
        Op::of("models/gemini-2.5-flash:countTokens"),
        Some(("gemini-2.5-flash", Op::CountTokens))
    );
    for other in [
        "models/text-embedding-004:embedContent",
        "models/imagen-4.0-generate-001:predict",
        "models",
        "models/gemini-2.5-pro",
        "models/:generateContent",
        "tunedModels/x:generateContent",
    ] {
        assert!(!serves(other), "{other}");
    }
}

#[test]
fn a_generation_is_wrapped_with_its_model_and_project_as_it_came() {
    let body = Bytes::from_static(
        br#"{"contents":[{"role":"user","parts":[{"text":"hi \"there\""}]}],"generationConfig":{"temperature":1}}"#,
    );
    let wrapped = request_body(&body, "gemini-2.5-pro", Op::Stream, "proj-1").unwrap();
    let text = std::str::from_utf8(&wrapped).unwrap();
    assert!(
        text.ends_with(&format!(
            ",\"request\":{}}}",
            std::str::from_utf8(&body).unwrap()
        )),
        "the client's body goes byte for byte: {text}"
    );
    let v: Value = serde_json::from_slice(&wrapped).unwrap();
    assert_eq!(v["model"], "gemini-2.5-pro");
    assert_eq!(v["project"], "proj-1");
    assert_eq!(
        v["request"]["contents"][0]["parts"][0]["text"],
        "hi \"there\""
    );
}

#[test]
fn a_body_that_is_not_one_json_object_is_not_wrapped() {
    // Closing its object early to name another project after it.
    let smuggled = Bytes::from_static(br#"{"contents":[]},"project":"someone-elses""#);
    assert!(request_body(&smuggled, "gemini-2.5-pro", Op::Generate, "mine").is_none());
    for body in [&b"[1,2]"[..], b"\"text\"", b"{\"contents\":", b""] {
        let body = Bytes::copy_from_slice(body);
        assert!(request_body(&body, "m", Op::Generate, "p").is_none());
    }
}

#[test]
fn a_token_count_names_the_model_and_carries_the_contents() {
    let direct = Bytes::from_static(br#"{"contents":[{"parts":[{"text":"a"}]}]}"#);
    let nested = Bytes::from_static(
        br#"{"generateContentRequest":{"model":"models/gemini-2.5-flash","contents":[{"parts":[{"text":"a"}]}],"tools":[]}}"#,
    );
    // Without contents: nothing to send.
    let empty = Bytes::from_static(br#"{"generateContentRequest":{"model":"m"}}"#);
    assert!(request_body(&empty, "gemini-2.5-flash", Op::CountTokens, "p").is_none());
    for body in [direct, nested] {
        let out = request_body(&body, "gemini-2.5-flash", Op::CountTokens, "p").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"request": {"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "a"}]}]}})
        );
    }
}

#[test]
fn the_answer_inside_is_handed_on_with_the_trace_as_its_id() {
    let inner = r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"usageMetadata":{"promptTokenCount":3}}"#;
    let wrapped = format!(r#"{{"response": {inner}, "traceId": "abc123"}}"#);
    assert_eq!(
        std::str::from_utf8(&unwrapped(wrapped.as_bytes())).unwrap(),
        format!(r#"{{"responseId":"abc123",{}"#, &inner[1..])
    );
    // An id of its own stays; no trace, nothing added.
    let named = r#"{"responseId":"r-1","candidates":[]}"#;
    let wrapped = format!(r#"{{"traceId":"abc","response":{named}}}"#);
    assert_eq!(&unwrapped(wrapped.as_bytes())[..], named.as_bytes());
    let wrapped = format!(r#"{{"response":{inner}}}"#);
    assert_eq!(&unwrapped(wrapped.as_bytes())[..], inner.as_bytes());
    // An empty answer gets the id alone.
    assert_eq!(
        &unwrapped(br#"{"response":{ },"traceId":"t"}"#)[..],
        br#"{"responseId":"t"}"#
    );
    // Not a wrapped answer (an error in the stream): as it came.
    let error = br#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}"#;
    assert_eq!(&unwrapped(error)[..], &error[..]);
}

fn upstream(status: u16, content_type: &str, chunks: Vec<&'static str>) -> UpstreamResponse {
    let frames = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c.as_bytes())))),
    );
    let mut resp = Response::new(Either::Right(StreamBody::new(frames).boxed()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    resp
}

async fn read(resp: UpstreamResponse) -> (StatusCode, HeaderMap, String) {
    let (head, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        head.status,
        head.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// Two events, split across chunks mid-line and mid-line-ending, the last without its blank
/// line.
fn stream_chunks() -> Vec<&'static str> {
    vec![
        "data: {\"response\": {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"He\"}]}}]}, \"tra",
        "ceId\": \"t1\"}\r",
        "\n\r\ndata: {\"response\": {\"responseId\":\"r\",\"usageMetadata\":{\"totalTokenCount\":9}}}\r\n",
    ]
}

#[tokio::test]
async fn a_stream_s_events_become_gemini_s() {
    let resp = upstream(200, "text/event-stream", stream_chunks());
    let (status, headers, body) = read(answer(resp, Op::Stream, true)).await;
    assert_eq!(status, 200);
    assert!(headers.get(header::CONTENT_LENGTH).is_none());
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(
        body,
        "data: {\"responseId\":\"t1\",\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"He\"}]}}]}\r\n\r\n\
         data: {\"responseId\":\"r\",\"usageMetadata\":{\"totalTokenCount\":9}}\r\n\r\n"
    );
}

#[tokio::test]
async fn an_answer_sent_over_several_data_lines_goes_on_one() {
    let resp = upstream(
        200,
        "text/event-stream",
        vec!["data: {\"response\": {\"candidates\": [],\ndata: \"responseId\": \"r\"}}\n\n"],
    );
    let (_, _, body) = read(answer(resp, Op::Stream, true)).await;
    assert_eq!(
        body,
        "data: {\"candidates\": [], \"responseId\": \"r\"}\r\n\r\n"
    );
}

#[tokio::test]
async fn a_stream_asked_without_sse_becomes_gemini_s_json_array() {
    let resp = upstream(200, "text/event-stream", stream_chunks());
    let (_, headers, body) = read(answer(resp, Op::Stream, false)).await;
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/json; charset=UTF-8"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["responseId"], "t1");
    assert_eq!(v[1]["usageMetadata"]["totalTokenCount"], 9);
    assert_eq!(v.as_array().unwrap().len(), 2);
    // No event at all: an empty array.
    let resp = upstream(200, "text/event-stream", vec![": keep-alive\n\n"]);
    let (_, _, body) = read(answer(resp, Op::Stream, false)).await;
    assert_eq!(body, "[]");
}

#[tokio::test]
async fn a_json_answer_is_unwrapped_whole_and_errors_go_as_they_came() {
    let resp = upstream(
        200,
        "application/json",
        vec![
            "{\"response\": {\"candidates\":[]",
            ",\"modelVersion\":\"m\"}, \"traceId\":\"t\"}",
        ],
    );
    let (_, headers, body) = read(answer(resp, Op::Generate, false)).await;
    assert!(headers.get(header::CONTENT_LENGTH).is_none());
    assert_eq!(
        body,
        "{\"responseId\":\"t\",\"candidates\":[],\"modelVersion\":\"m\"}"
    );
    let error = "{\"error\":{\"code\":401,\"message\":\"no\",\"status\":\"UNAUTHENTICATED\"}}";
    let resp = upstream(401, "application/json", vec![error]);
    let (status, headers, body) = read(answer(resp, Op::Stream, true)).await;
    assert_eq!((status.as_u16(), body.as_str()), (401, error));
    assert_eq!(headers[header::CONTENT_LENGTH], "999");
    let count = "{\"totalTokens\":31}";
    let resp = upstream(200, "application/json", vec![count]);
    let (_, _, body) = read(answer(resp, Op::CountTokens, false)).await;
    assert_eq!(body, count);
}

#[test]
fn a_project_is_forgotten_only_if_it_is_still_the_one_refused_and_not_just_learned() {
    let cell = ProjectCell::default();
    let learned = |project: &str, ago: u64| {
        *cell.learned() = Learned::Known {
            project: project.to_owned(),
            at: Instant::now() - Duration::from_secs(ago),
        };
    };
    // Just learned: a 403 is taken to be about something else.
    learned("p1", 1);
    cell.forget("p1");
    assert_eq!(cell.known().as_deref(), Some("p1"));
    // A refusal of a project already replaced leaves the new one.
    learned("p2", 120);
    cell.forget("p1");
    assert_eq!(cell.known().as_deref(), Some("p2"));
    // Learned a while ago and refused: forgotten.
    cell.forget("p2");
    assert_eq!(cell.known(), None);
    assert!(cell.settled().is_none());
    // A failure is answered for a while, then asked again.
    *cell.learned() = Learned::Failed {
        why: "no project".into(),
        at: Instant::now(),
    };
    assert!(matches!(cell.settled(), Some(Err(Setup::Failed(why))) if why == "no project"));
    *cell.learned() = Learned::Failed {
        why: "no project".into(),
        at: Instant::now() - FAILURE_KEPT,
    };
    assert!(cell.settled().is_none());
}
