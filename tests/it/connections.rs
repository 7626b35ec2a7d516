//! What happens on a connection before its first request: choosing HTTP/1.1 or h2c from the first
//! bytes (looked at, not taken), the header timeout for a client that sends nothing, and the stop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::mock::{Behavior, MockUpstream, MockUsage};
use crate::support::relay::{Relay, messages_body, relay_with_account};

/// Bounds every wait below, so that a regression fails instead of hanging.
const BOUND: Duration = Duration::from_secs(15);

/// What the relay sent before it closed the connection. A close with bytes of ours still unread
/// arrives as a reset, which is a close all the same.
async fn read_to_end(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(BOUND, conn.read_to_end(&mut got))
        .await
        .expect("the relay closed the connection in time");
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading failed: {e}"),
    }
    got
}

#[tokio::test]
async fn an_http1_request_whose_first_byte_could_begin_the_h2_preface_is_served() {
    let (relay, mock, key, _) = relay_with_account().await;
    let body = messages_body("claude-sonnet-4-5", false).to_string();
    let head = format!(
        "OST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {key}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(relay.addr).await.unwrap();
    // "P" is also how HTTP/2's preface ("PRI * HTTP/2.0…") starts: the relay must wait for more.
    conn.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let answer = String::from_utf8(read_to_end(&mut conn).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let sent = String::from_utf8(mock.responses()[0].to_vec()).unwrap();
    assert!(
        answer.contains(&sent),
        "the upstream's answer, unchanged: {answer}"
    );
}

#[tokio::test]
async fn an_h2_preface_split_over_two_writes_gets_an_h2_answer() {
    let relay = Relay::start().await;
    let mut conn = TcpStream::connect(relay.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut frame_head = [0u8; 9];
    tokio::time::timeout(BOUND, conn.read_exact(&mut frame_head))
        .await
        .expect("the relay answered in time")
        .unwrap();
    assert_eq!(
        frame_head[3], 4,
        "the server's preface is a SETTINGS frame: {frame_head:?}"
    );
    assert_eq!(&frame_head[5..9], &[0, 0, 0, 0], "on stream 0");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_half_a_preface_is_closed_after_the_header_timeout() {
    let relay = Relay::start_configured(|c| c.server.header_read_timeout_secs = 1).await;
    let mut silent = TcpStream::connect(relay.addr).await.unwrap();
    let mut stalled = TcpStream::connect(relay.addr).await.unwrap();
    stalled.write_all(b"PRI * HTTP").await.unwrap();
    for conn in [&mut silent, &mut stalled] {
        let got = read_to_end(conn).await;
        assert!(got.is_empty(), "closed without an answer: {got:?}");
    }
    // The relay still serves.
    assert_eq!(relay.health().await["status"], "ok");
}

#[tokio::test]
async fn an_h2c_connection_without_requests_is_shut_after_the_idle_time() {
    let relay = Relay::start_configured(|c| c.server.header_read_timeout_secs = 1).await;
    let mut conn = TcpStream::connect(relay.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let started = std::time::Instant::now();
    // Its SETTINGS, then a GOAWAY (type 7) once no request began for a second, then the close.
    let got = read_to_end(&mut conn).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut frames = Vec::new();
    let mut rest = &got[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        frames.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(frames.contains(&7), "a GOAWAY before the close: {frames:?}");
    assert_eq!(relay.health().await["status"], "ok");
}

/// A stream running past the idle time keeps its h2c connection; a request after it still works.
#[tokio::test]
async fn an_h2c_stream_longer_than_the_idle_time_runs_to_its_end() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start_configured(|c| c.server.header_read_timeout_secs = 1).await;
    relay
        .add_account(&mock, "sk-a", serde_json::json!({}))
        .await;
    let (_, key) = relay.create_key("k").await;
    // About 2.5 s of stream.
    mock.set_default(Behavior::Slow {
        usage: MockUsage::new(5, 6),
        delay: Duration::from_millis(500),
    });
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..2 {
        let resp = h2
            .post(relay.url("/v1/messages"))
            .header("x-api-key", &key)
            .json(&messages_body("claude-sonnet-4-5", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        let got = tokio::time::timeout(BOUND, resp.bytes())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, mock.responses().pop().unwrap());
    }
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408_in_the_surface_s_shape() {
    let relay = Relay::start_configured(|c| c.server.body_read_timeout_secs = 1).await;
    let (_, key) = relay.create_key("k").await;
    let mut conn = TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {key}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\nconnection: close\r\n\r\n{{\"model\":"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let answer = String::from_utf8(read_to_end(&mut conn).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#""type":"invalid_request_error""#),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Waits for a request to take the account, then for it to give it back: the relay holds it
/// while it waits on the client, and lets it go after the write timeout (1 s), not before.
async fn held_about_a_second(relay: &Relay, account_id: &str) {
    let started = std::time::Instant::now();
    while relay.account_in_flight(account_id).await == 0 {
        assert!(started.elapsed() < BOUND, "the request never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = std::time::Instant::now();
    while relay.account_in_flight(account_id).await > 0 {
        assert!(
            held.elapsed() < BOUND,
            "the request still holds its account"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        held.elapsed() >= Duration::from_millis(900),
        "{:?}",
        held.elapsed()
    );
}

/// A client that stops reading is disconnected once a write has waited the write timeout; its
/// request settles (leases given back) instead of holding them for as long as it likes.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start_configured(|c| c.server.write_timeout_secs = 1).await;
    let account_id = relay
        .add_account(&mock, "sk-a", serde_json::json!({}))
        .await;
    let (_, key) = relay.create_key("k").await;
    // An answer far larger than the sockets' buffers.
    mock.set_default(Behavior::Error {
        status: 200,
        body: format!("{{\"pad\":\"{}\"}}", "x".repeat(32 << 20)),
        headers: Vec::new(),
    });
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(relay.addr).await.unwrap();
    let body = messages_body("claude-sonnet-4-5", false).to_string();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {key}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // Never read: the request holds its account until a write has waited a second.
    held_about_a_second(&relay, &account_id).await;
    assert_eq!(mock.served(), 1, "the upstream was asked");
    drop(conn);
}

/// An h2c client that gives one stream no window (it goes on reading the connection, so its
/// socket stays writable) is disconnected once a frame has waited the write timeout, as an
/// HTTP/1.1 client that stops reading is; its request settles.
#[tokio::test]
async fn an_h2c_stream_without_window_is_dropped_after_the_write_timeout() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start_configured(|c| c.server.write_timeout_secs = 1).await;
    let account_id = relay
        .add_account(&mock, "sk-a", serde_json::json!({}))
        .await;
    let (_, key) = relay.create_key("k").await;
    mock.set_default(Behavior::Error {
        status: 200,
        body: format!("{{\"pad\":\"{}\"}}", "x".repeat(1 << 20)),
        headers: Vec::new(),
    });
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(16 * 1024)
        .build()
        .unwrap();
    let resp = h2
        .post(relay.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    // The body is never read: the stream's window stays shut.
    held_about_a_second(&relay, &account_id).await;
    drop(resp);
}

#[tokio::test]
async fn a_silent_connection_does_not_hold_up_the_stop() {
    let mut relay = Relay::start_configured(|c| c.server.shutdown_grace_secs = 60).await;
    let mut conn = TcpStream::connect(relay.addr).await.unwrap();
    // The relay has taken the connection and is waiting for its first bytes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let task = relay.begin_stop().unwrap();
    tokio::time::timeout(BOUND, task)
        .await
        .expect("the stop did not wait out the 60 s grace period for a connection with no request")
        .unwrap();
    assert!(read_to_end(&mut conn).await.is_empty());
}
