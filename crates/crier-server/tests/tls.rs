//! TLS on the listener: the HTTP API, WebSocket and SSE over TLS with a certificate the
//! test makes, the handshake deadline, certificate reload, and startup errors that name
//! the key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use support::sse::SseStream;
use support::tls::{Leaf, TestCa};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A server on 127.0.0.1:0 serving `leaf`, with the files in the server's data folder's
/// parent temp dir.
async fn tls_server(leaf: &Leaf, tweak: impl FnOnce(&mut crier_server::Config)) -> TestServer {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let (cert, key) = leaf.write(dir.path());
    let mut config = base_config(&dir.path().join("data"));
    config.server.tls_cert = cert.display().to_string();
    config.server.tls_key = key.display().to_string();
    tweak(&mut config);
    TestServer::start_in(dir, config).await
}

fn tls_api(server: &TestServer, ca: &TestCa) -> Api {
    Api {
        base: format!("https://{}", server.addr),
        http: ca.http(),
        ..server.api()
    }
}

/// Reads WebSocket frames until one with `event`; skips pings.
async fn recv_event<S>(ws: &mut S, event: &str) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame within the wait")
            .expect("stream open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("JSON frame");
            if v["event"] == event {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn http_api_websocket_and_sse_work_over_tls() {
    let ca = TestCa::new();
    let server = tls_server(&ca.leaf("crier"), |_| {}).await;
    let api = tls_api(&server, &ca);

    // WebSocket (wss): the Pusher handshake and a subscription.
    let tls = ca.connect(server.addr).await.expect("TLS handshake");
    let url = format!(
        "wss://{}/app/{KEY}?protocol=7&client=js&version=8.4.0",
        server.addr
    );
    let (mut ws, response) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("WebSocket upgrade over TLS");
    assert_eq!(response.status(), 101);
    recv_event(&mut ws, "pusher:connection_established").await;
    ws.send(Message::Text(
        json!({"event": "pusher:subscribe", "data": {"channel": "secure"}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    recv_event(&mut ws, "pusher_internal:subscription_succeeded").await;

    // SSE over TLS.
    let res = ca
        .http()
        .get(format!(
            "https://{}/app/{KEY}/sse?channels=secure",
            server.addr
        ))
        .send()
        .await
        .expect("SSE over TLS");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut sse = SseStream::new(res);
    api.wait_subscriptions("secure", 2).await;

    // The HTTP API (signed publish) over TLS reaches both.
    let (status, body) = api.trigger("secure", "greeting", "over tls").await;
    assert_eq!((status, body), (200, json!({})));
    let frame = recv_event(&mut ws, "greeting").await;
    assert_eq!(frame["channel"], "secure");
    assert_eq!(frame["data"], "over tls");
    let event = sse.next().await.expect("an SSE event");
    let envelope = event.json();
    assert_eq!(
        (&envelope["channel"], &envelope["event"], &envelope["data"]),
        (&json!("secure"), &json!("greeting"), &json!("over tls"))
    );
    let (status, info) = api
        .get("/apps/1/channels/secure", &[("info", "subscription_count")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(info["subscription_count"], 2, "{info}");
}

#[tokio::test]
async fn plain_http_on_the_tls_listener_gets_no_http_answer() {
    let ca = TestCa::new();
    let server = tls_server(&ca.leaf("crier"), |_| {}).await;
    let err = reqwest::Client::new()
        .get(format!("http://{}/health", server.addr))
        .timeout(WAIT)
        .send()
        .await
        .expect_err("a TLS listener does not speak plain HTTP");
    assert!(!err.is_timeout(), "{err}");
    // And the same URL over TLS is fine.
    let res = ca
        .http()
        .get(format!("https://{}/health", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok\n");
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_cut_off() {
    let ca = TestCa::new();
    let server = tls_server(&ca.leaf("crier"), |c| c.server.handshake_timeout_secs = 1).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The first bytes of a TLS record header for a ClientHello, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("the server closes the connection within the wait");
    // Closed (0 bytes or a reset), and not before the deadline.
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_replaced_certificate_is_served_after_reload_and_after_the_file_changes() {
    let ca = TestCa::new();
    let first = ca.leaf("first");
    let server = tls_server(&first, |_| {}).await;
    let dir = server.dir.path().to_owned();
    assert_eq!(ca.served_cert(server.addr).await, first.cert_der);
    // A connection made before the change keeps working after it.
    let mut old = ca.connect(server.addr).await.unwrap();

    // Reload on demand (what SIGHUP does in the binary).
    let second = ca.leaf("second");
    second.write(&dir);
    server
        .running
        .as_ref()
        .unwrap()
        .reload_tls()
        .expect("reload");
    assert_eq!(ca.served_cert(server.addr).await, second.cert_der);

    // A broken key is refused, naming the key, and the certificate in use stays.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    let e = server
        .running
        .as_ref()
        .unwrap()
        .reload_tls()
        .expect_err("a broken key");
    assert!(e.to_string().starts_with("server.tls_key: "), "{e}");
    assert_eq!(ca.served_cert(server.addr).await, second.cert_der);

    // Watching: a new pair written to disk is served without any call.
    let third = ca.leaf("third");
    third.write(&dir);
    let deadline = tokio::time::Instant::now() + crier_server::tls::WATCH_INTERVAL * 3 + WAIT;
    while ca.served_cert(server.addr).await != third.cert_der {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changed files were not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    old.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, old.read_to_string(&mut answer))
        .await
        .expect("answer within the wait")
        .ok();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

async fn start_error(cert: &std::path::Path, key: &std::path::Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path());
    config.server.tls_cert = cert.display().to_string();
    config.server.tls_key = key.display().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match crier_server::run(listener, config).await {
        Ok(_) => panic!("the server started with {cert:?} and {key:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn unusable_files_stop_the_start_with_an_error_naming_the_key() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf("a").write(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = ca.leaf("b").write(other.path());
    let missing = dir.path().join("missing.pem");

    let e = start_error(&missing, &key).await;
    assert!(e.starts_with("server.tls_cert: cannot read "), "{e}");
    let e = start_error(&cert, &missing).await;
    assert!(e.starts_with("server.tls_key: cannot read "), "{e}");
    let e = start_error(&cert, &other_key).await;
    assert!(e.starts_with("server.tls_key: the key in "), "{e}");
    assert!(e.contains("does not belong to the certificate"), "{e}");
}
