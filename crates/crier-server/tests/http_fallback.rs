//! pusher-js's HTTP fallbacks (`xhr_polling`, `xhr_streaming`) at the wire level:
//! SockJS-style `o` / `a[...]` / `h` / `c[...]` lines, sends through `xhr_send`,
//! errors, CORS and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::*;

fn url(server: &TestServer, session: &str, what: &str) -> String {
    format!(
        "http://{}/pusher/app/{KEY}/123/{session}/{what}",
        server.addr
    )
}

async fn post(url: &str, body: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The Pusher frames of an `a[...]` line (each one a JSON string in the array).
fn frames(line: &str) -> Vec<Value> {
    let array = line
        .strip_prefix('a')
        .unwrap_or_else(|| panic!("not an a-line: {line:?}"));
    let strings: Vec<String> = serde_json::from_str(array.trim_end()).unwrap();
    strings
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect()
}

async fn send(server: &TestServer, session: &str, frame: Value) {
    let body = json!([frame.to_string()]).to_string();
    let (status, _) = post(&url(server, session, "xhr_send"), &body).await;
    assert_eq!(status, 204);
}

/// Polls until a frame with `event` arrives; returns it.
async fn poll_for(server: &TestServer, session: &str, event: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no {event}");
        let (status, body) = post(&url(server, session, "xhr"), "").await;
        assert_eq!(status, 200);
        if body.starts_with('a') {
            if let Some(f) = frames(&body).into_iter().find(|f| f["event"] == event) {
                return f;
            }
        }
    }
}

#[tokio::test]
async fn polling_session_subscribes_and_receives() {
    let server = TestServer::start().await;
    let (status, opened) = post(&url(&server, "s1", "xhr"), "").await;
    assert_eq!(status, 200);
    assert_eq!(opened, "o\n");
    let established = poll_for(&server, "s1", "pusher:connection_established").await;
    let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
    assert!(data["socket_id"].as_str().unwrap().contains('.'));

    send(
        &server,
        "s1",
        json!({"event": "pusher:subscribe", "data": {"channel": "news"}}),
    )
    .await;
    poll_for(&server, "s1", "pusher_internal:subscription_succeeded").await;
    let (status, _) = server.api().trigger("news", "headline", "hello").await;
    assert_eq!(status, 200);
    let event = poll_for(&server, "s1", "headline").await;
    assert_eq!(event["channel"], "news");
    assert_eq!(event["data"], "hello");

    // A WebSocket client and the fallback session see each other's presence.
    let mut ws = server.connect().await;
    ws.subscribe_presence("presence-room", "ws-user").await;
    let socket_id = data["socket_id"].as_str().unwrap();
    let channel_data = json!({"user_id": "xhr-user"}).to_string();
    let auth = ws_auth(socket_id, "presence-room", &channel_data);
    send(
        &server,
        "s1",
        json!({"event": "pusher:subscribe", "data": {
            "channel": "presence-room", "auth": auth, "channel_data": channel_data}}),
    )
    .await;
    let ok = poll_for(&server, "s1", "pusher_internal:subscription_succeeded").await;
    assert_eq!(ok["channel"], "presence-room");
    let added = ws.recv_event("pusher_internal:member_added").await;
    assert!(added["data"].as_str().unwrap().contains("xhr-user"));
}

fn ws_auth(socket_id: &str, channel: &str, channel_data: &str) -> String {
    crier_protocol::signature::channel_auth(KEY, SECRET, socket_id, channel, Some(channel_data))
}

/// Reads an `xhr_streaming` response line by line.
struct LineReader {
    res: reqwest::Response,
    buffer: String,
}

impl LineReader {
    async fn open(url: String) -> Self {
        let res = reqwest::Client::new().post(url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        Self {
            res,
            buffer: String::new(),
        }
    }

    /// The next line, or None when the response ended.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buffer.find('\n') {
                return Some(self.buffer.drain(..=i).collect());
            }
            let chunk = tokio::time::timeout(WAIT, self.res.chunk())
                .await
                .expect("a chunk in time")
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn line(&mut self) -> String {
        self.next().await.expect("stream still open")
    }

    /// Skips lines until a frame with `event` arrives.
    async fn until(&mut self, event: &str) -> Value {
        loop {
            let line = self.line().await;
            if line.starts_with('a') {
                if let Some(f) = frames(&line).into_iter().find(|f| f["event"] == event) {
                    return f;
                }
            }
        }
    }
}

#[tokio::test]
async fn streaming_session_delivers_lines_in_one_response() {
    let server = TestServer::start().await;
    let mut stream = LineReader::open(url(&server, "st", "xhr_streaming")).await;
    // A prelude of 2048 `h` on one line, then `o`, then the greeting.
    assert_eq!(stream.line().await.len(), 2049);
    assert_eq!(stream.line().await, "o\n");
    let greeting = frames(&stream.line().await);
    assert_eq!(greeting[0]["event"], "pusher:connection_established");

    send(
        &server,
        "st",
        json!({"event": "pusher:subscribe", "data": {"channel": "ticker"}}),
    )
    .await;
    stream.until("pusher_internal:subscription_succeeded").await;
    for i in 0..20 {
        server.api().trigger("ticker", "tick", &i.to_string()).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let line = stream.line().await;
        if line.starts_with('a') {
            seen.extend(
                frames(&line)
                    .iter()
                    .filter(|f| f["event"] == "tick")
                    .map(|f| f["data"].as_str().unwrap().to_owned()),
            );
        }
    }
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let server = TestServer::start().await;
    let (status, body) = post(
        &format!("http://{}/pusher/app/nope/1/x/xhr", server.addr),
        "",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body, r#"{"error":"unknown app key \"nope\""}"#);
    let (status, _) = post(&url(&server, "missing", "xhr_send"), "[]").await;
    assert_eq!(status, 404);
    post(&url(&server, "s2", "xhr"), "").await;
    let (status, _) = post(&url(&server, "s2", "xhr_send"), "{not json").await;
    assert_eq!(status, 400);
    // A malformed Pusher frame inside a valid send gets a pusher:error, not a drop.
    let (status, _) = post(&url(&server, "s2", "xhr_send"), r#"["{oops"]"#).await;
    assert_eq!(status, 204);
    let error = poll_for(&server, "s2", "pusher:error").await;
    assert!(error["data"].to_string().len() > 2);
}

#[tokio::test]
async fn cors_preflight_and_origin_check() {
    let server = TestServer::with(|c| {
        let mut strict = app("strict", "strict-key", "strict-secret");
        strict.allowed_origins = vec!["https://good.example".into()];
        c.apps.push(strict);
    })
    .await;
    let http = reqwest::Client::new();
    let pre = http
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/pusher/app/strict-key/1/s/xhr", server.addr),
        )
        .header("Origin", "https://good.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    assert!(pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let bad = http
        .post(format!(
            "http://{}/pusher/app/strict-key/1/s/xhr",
            server.addr
        ))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
}

#[tokio::test]
async fn shutdown_ends_a_stream_with_4200() {
    let mut server = TestServer::start().await;
    let mut stream = LineReader::open(url(&server, "s3", "xhr_streaming")).await;
    stream.until("pusher:connection_established").await;
    server.stop().await;
    let mut last = String::new();
    while let Some(line) = stream.next().await {
        last = line;
    }
    assert!(last.starts_with("c[4200,"), "{last}");
}

#[tokio::test]
async fn a_session_without_requests_is_closed_after_fallback_session_idle_secs() {
    let server = TestServer::with(|c| c.server.fallback_session_idle_secs = 1).await;
    let (status, _) = post(&url(&server, "idle", "xhr"), "").await;
    assert_eq!(status, 200);
    poll_for(&server, "idle", "pusher:connection_established").await;
    send(
        &server,
        "idle",
        json!({"event": "pusher:subscribe", "data": {"channel": "quiet"}}),
    )
    .await;
    server.wait_subscriptions("quiet", 1).await;
    // No request from the client any more: the session and its subscription go well
    // within WAIT (the default, 60 s, would fail this).
    server.wait_subscriptions("quiet", 0).await;
    let (status, _) = post(&url(&server, "idle", "xhr_send"), "[]").await;
    assert_eq!(status, 404, "the session is gone");
}
