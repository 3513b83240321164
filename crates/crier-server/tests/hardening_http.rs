//! Hardening of the HTTP side: deadlines before a request is complete (slowloris),
//! header and body limits with JSON errors, and streams whose client stopped reading.
//! Raw sockets where a well-behaved client library would hide the misbehaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::sse::SseStream;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// `handshake_timeout_secs` and `write_timeout_secs` in these tests.
const DEADLINE: Duration = Duration::from_secs(1);
/// Slack for a loaded machine on top of a deadline; far below the 10 s default, so a
/// server without the deadline fails.
const SLACK: Duration = Duration::from_millis(2500);

async fn strict_server() -> TestServer {
    TestServer::with(|c| {
        c.server.handshake_timeout_secs = DEADLINE.as_secs();
        c.server.write_timeout_secs = DEADLINE.as_secs();
    })
    .await
}

/// Reads until the server closes; returns what arrived. Panics if it stays open for
/// `within`. A reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {within:?}; got {} bytes: {:?}...",
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(300)])
            ),
        }
    }
}

/// A counter or gauge from `/metrics` (0 when not yet present).
async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_for_metric(server: &TestServer, name: &str, at_least: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(server, name).await;
        if v >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {v}, never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_without_a_complete_request_are_closed_at_the_deadline() {
    let server = strict_server().await;
    let started = Instant::now();
    let mut idle = Vec::new();
    // Silent after connecting, half a request line, half a header block, half a
    // WebSocket upgrade.
    for i in 0..32 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let partial = match i % 4 {
            0 => String::new(),
            1 => "GET /health HT".to_owned(),
            2 => format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
                "p".repeat(3000)
            ),
            _ => format!(
                "GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            ),
        };
        s.write_all(partial.as_bytes()).await.unwrap();
        idle.push(s);
    }
    // One that keeps sending header lines, never the blank line that ends them.
    let mut endless = TcpStream::connect(server.addr).await.unwrap();
    let trickle = tokio::spawn(async move {
        endless
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        for i in 0u64.. {
            let line = format!("X-More-{i}: 1\r\n");
            if endless.write_all(line.as_bytes()).await.is_err() {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        unreachable!()
    });
    for mut s in idle {
        let got = read_until_closed(&mut s, DEADLINE + SLACK).await;
        assert!(
            got.is_empty(),
            "unexpected answer {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let lines = tokio::time::timeout(DEADLINE + SLACK, trickle)
        .await
        .expect("the endless header was cut off")
        .unwrap();
    assert!(lines > 0);
    assert!(started.elapsed() < DEADLINE + SLACK);
    // Nothing else was held up.
    let res = reqwest::get(format!("http://{}/health", server.addr))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_too() {
    let server = strict_server().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let started = Instant::now();
    read_until_closed(&mut s, DEADLINE + SLACK).await;
    assert!(started.elapsed() >= DEADLINE - Duration::from_millis(100));
}

#[tokio::test]
async fn responses_longer_than_the_deadline_are_not_cut() {
    let server = strict_server().await;
    let res = reqwest::get(format!(
        "http://{}/app/{KEY}/sse?channels=long",
        server.addr
    ))
    .await
    .unwrap();
    let mut sse = SseStream::new(res);
    server.wait_subscriptions("long", 1).await;
    // The deadline covers reading a request, not the response that follows.
    let poll = reqwest::get(format!(
        "http://{}/app/{KEY}/poll?channels=other&timeout=2",
        server.addr
    ));
    let (poll, ()) = tokio::join!(poll, tokio::time::sleep(DEADLINE * 2));
    let poll = poll.unwrap();
    assert_eq!(poll.status(), 200);
    let body: Value = poll.json().await.unwrap();
    assert_eq!(body["messages"], json!([]), "{body}");
    let (status, _) = server.api().trigger("long", "e", "still here").await;
    assert_eq!(status, 200);
    let ev = sse.next().await.expect("stream open");
    assert_eq!(ev.json()["data"], "still here");
}

#[tokio::test]
async fn headers_over_max_header_bytes_get_431() {
    let server = TestServer::with(|c| c.server.max_header_bytes = 8 * 1024).await;
    let request = |pad: usize| {
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "p".repeat(pad)
        )
    };
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(request(6 * 1024).as_bytes()).await.unwrap();
    let got = read_until_closed(&mut s, WAIT).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // The server may close before taking all of it.
    let _ = s.write_all(request(9 * 1024).as_bytes()).await;
    let got = read_until_closed(&mut s, WAIT).await;
    assert!(
        got.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// The request target (path and signed query) of a signed POST of `body`.
fn signed_post(server: &TestServer, path: &str, body: &[u8]) -> String {
    let url = server.api().signed_url("POST", path, &[], body);
    url.split_once(&server.addr.to_string())
        .unwrap()
        .1
        .to_owned()
}

#[tokio::test]
async fn oversized_api_bodies_get_a_json_413_and_publish_nothing() {
    let server = TestServer::with(|c| c.server.max_body_bytes = 1024).await;
    let api = server.api();
    let http = reqwest::Client::new();
    let big = json!({"name": "e", "channel": "big", "data": "x".repeat(2000)}).to_string();
    let batch =
        json!({"batch": [{"name": "e", "channel": "big", "data": "x".repeat(2000)}]}).to_string();
    for (method, path, body) in [
        ("POST", "/apps/1/events", big.clone()),
        ("POST", "/apps/1/batch_events", batch),
        (
            "POST",
            "/apps/1/users/u1/terminate_connections",
            big.clone(),
        ),
        ("GET", "/apps/1/channels", big.clone()),
    ] {
        let url = api.signed_url(method, path, &[], body.as_bytes());
        let res = http
            .request(method.parse().unwrap(), url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 413, "{method} {path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let err: Value = res.json().await.unwrap();
        let message = err["error"].as_str().unwrap();
        assert!(
            message.contains("1024") && message.contains("server.max_body_bytes"),
            "{err}"
        );
    }

    // Chunked, so the size is only known as it arrives.
    let target = signed_post(&server, "/apps/1/events", big.as_bytes());
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in big.as_bytes().chunks(500) {
        let _ = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = s.write_all(chunk).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let got = String::from_utf8(read_until_closed(&mut s, WAIT).await).unwrap();
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(got.contains("content-type: application/json"), "{got}");
    assert!(
        got.contains(
            r#"{"error":"request body is larger than 1024 bytes (server.max_body_bytes)"}"#
        ),
        "{got}"
    );

    let (status, history) = api.get("/apps/1/channels/big/messages", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"], json!([]), "{history}");
    // A body within the limit still publishes.
    let (status, _) = api.trigger("big", "e", "small").await;
    assert_eq!(status, 200);
    let (_, history) = api.get("/apps/1/channels/big/messages", &[]).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_body_that_never_completes_gets_408_at_the_deadline() {
    let server = strict_server().await;
    let body = json!({"name": "e", "channel": "slow", "data": "x"}).to_string();
    let target = signed_post(&server, "/apps/1/events", body.as_bytes());
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..10]).await.unwrap();
    let started = Instant::now();
    let got = String::from_utf8(read_until_closed(&mut s, DEADLINE + SLACK).await).unwrap();
    assert!(started.elapsed() >= DEADLINE - Duration::from_millis(100));
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("server.handshake_timeout_secs"), "{got}");
    let (_, history) = server
        .api()
        .get("/apps/1/channels/slow/messages", &[])
        .await;
    assert_eq!(history["messages"], json!([]));
}

fn fallback_url(server: &TestServer, session: &str, what: &str) -> String {
    format!("http://{}/pusher/app/{KEY}/1/{session}/{what}", server.addr)
}

async fn fallback_post(url: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The Pusher frames of an `a[...]` line.
fn frames(line: &str) -> Vec<Value> {
    let strings: Vec<String> = serde_json::from_str(line.strip_prefix('a').unwrap()).unwrap();
    strings
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect()
}

/// Polls an `xhr` session until a frame with `event` arrives.
async fn poll_for(server: &TestServer, session: &str, event: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no {event}");
        let res = fallback_post(&fallback_url(server, session, "xhr"), String::new()).await;
        let body = res.text().await.unwrap();
        if let Some(f) = body
            .lines()
            .filter(|l| l.starts_with('a'))
            .flat_map(frames)
            .find(|f| f["event"] == event)
        {
            return f;
        }
    }
}

#[tokio::test]
async fn xhr_send_frames_over_max_frame_bytes_are_refused() {
    let server = TestServer::with(|c| c.server.max_frame_bytes = 1024).await;
    let res = fallback_post(&fallback_url(&server, "s", "xhr"), String::new()).await;
    assert_eq!(res.text().await.unwrap(), "o\n");
    poll_for(&server, "s", "pusher:connection_established").await;
    let send_url = fallback_url(&server, "s", "xhr_send");
    let send = |frames: Vec<Value>| {
        let body = Value::from(frames.iter().map(Value::to_string).collect::<Vec<_>>());
        fallback_post(&send_url, body.to_string())
    };

    // A small subscribe and an oversized one in the same send: neither is handled.
    let small = json!({"event": "pusher:subscribe", "data": {"channel": "a"}});
    let big =
        json!({"event": "pusher:subscribe", "data": {"channel": "b", "pad": "x".repeat(1100)}});
    let res = send(vec![small.clone(), big]).await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/json");
    let err: Value = res.json().await.unwrap();
    let message = err["error"].as_str().unwrap();
    assert!(
        message.contains("server.max_frame_bytes") && message.contains("1024"),
        "{err}"
    );
    // pusher-js ignores the answer to a send; the page hears of it on the stream.
    let error = poll_for(&server, "s", "pusher:error").await;
    assert_eq!(error["data"]["message"], message);
    let (_, info) = server
        .api()
        .get("/apps/1/channels/a", &[("info", "subscription_count")])
        .await;
    assert_eq!(info["subscription_count"], 0, "{info}");

    // A body far over any frame limit is refused before it is read.
    let res = fallback_post(
        &fallback_url(&server, "s", "xhr_send"),
        "x".repeat(300 * 1024),
    )
    .await;
    assert_eq!(res.status(), 413);
    let err: Value = res.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("server.max_body_bytes"),
        "{err}"
    );

    // The session is still usable.
    let res = send(vec![small]).await;
    assert_eq!(res.status(), 204);
    let ok = poll_for(&server, "s", "pusher_internal:subscription_succeeded").await;
    assert_eq!(ok["channel"], "a");
}

/// A client socket with a small receive buffer that sends `request` and never reads.
async fn stalled_client(server: &TestServer, request: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(server.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    s
}

const EVENTS: usize = 1000;

/// Enough data to fill the stalled client's socket buffers many times over.
async fn publish_firehose(server: &TestServer, channel: &str) {
    let pad = "x".repeat(8000);
    for b in 0..EVENTS / 10 {
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({"name": "e", "channel": channel, "data": format!("{}:{pad}", b * 10 + i)}))
            .collect();
        let (status, _) = server
            .api()
            .post("/apps/1/batch_events", &json!({"batch": batch}))
            .await;
        assert_eq!(status, 200);
    }
}

fn index(data: &str) -> usize {
    data.split(':').next().unwrap().parse().unwrap()
}

/// Publishes the firehose and checks that the stalled client is dropped within the
/// write deadline, counted once as a slow consumer, without having got everything.
async fn stalled_client_is_dropped(server: &TestServer, channel: &str, stalled: &mut TcpStream) {
    const SLOW: &str = "crier_slow_consumer_disconnects_total";
    let before = metric(server, SLOW).await;
    publish_firehose(server, channel).await;
    let write_timeout = Duration::from_secs(server.config.server.write_timeout_secs);
    wait_for_metric(server, SLOW, before + 1.0, write_timeout + SLACK).await;
    // Whatever the kernel still held is delivered, then the end: the server is done.
    let got = read_until_closed(stalled, WAIT).await;
    let text = String::from_utf8_lossy(&got);
    let seen = text.matches(":xxxxxxxx").count();
    assert!(seen < EVENTS, "the stalled client got everything ({seen})");
    assert_eq!(metric(server, SLOW).await, before + 1.0, "counted once");
}

// All stalls in one test: the slow-consumer counter is process-wide, so they must not
// run at the same time for each to see its own increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_whose_client_stopped_reading_are_dropped_after_write_timeout() {
    let server = TestServer::with(|c| {
        c.server.write_timeout_secs = DEADLINE.as_secs();
        // Big enough that the queue does not overflow first: the write deadline is
        // what is under test.
        c.server.outbox_capacity = 4 * EVENTS;
        c.history.max_messages = 10;
    })
    .await;

    // SSE.
    let mut stalled = stalled_client(
        &server,
        &format!("GET /app/{KEY}/sse?channels=sse-hose HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    let res = reqwest::get(format!(
        "http://{}/app/{KEY}/sse?channels=sse-hose",
        server.addr
    ))
    .await
    .unwrap();
    let mut normal = SseStream::new(res);
    server.wait_subscriptions("sse-hose", 2).await;
    let reader = tokio::spawn(async move {
        for i in 0..EVENTS {
            let ev = normal.next().await.expect("stream open");
            assert_eq!(index(ev.json()["data"].as_str().unwrap()), i);
        }
        normal
    });
    stalled_client_is_dropped(&server, "sse-hose", &mut stalled).await;
    let normal = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    // The stalled stream is gone from the hub; the reader's is still there.
    server.wait_subscriptions("sse-hose", 1).await;
    drop(normal);

    // pusher-js xhr_streaming.
    let mut stalled = stalled_client(
        &server,
        &format!(
            "POST /pusher/app/{KEY}/1/stalled/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        ),
    )
    .await;
    let subscribe = |session: &'static str| {
        let frame = json!({"event": "pusher:subscribe", "data": {"channel": "xhr-hose"}});
        let url = fallback_url(&server, session, "xhr_send");
        async move {
            let deadline = Instant::now() + WAIT;
            // The send needs the session, which the stream request opens.
            loop {
                let res = fallback_post(&url, json!([frame.to_string()]).to_string()).await;
                if res.status() == 204 {
                    return;
                }
                assert!(Instant::now() < deadline, "no session {session}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    subscribe("stalled").await;
    let mut normal = reqwest::Client::new()
        .post(fallback_url(&server, "normal", "xhr_streaming"))
        .send()
        .await
        .unwrap();
    subscribe("normal").await;
    server.wait_subscriptions("xhr-hose", 2).await;
    let reader = tokio::spawn(async move {
        let mut buffer = String::new();
        let mut next = 0;
        while next < EVENTS {
            let chunk = tokio::time::timeout(WAIT, normal.chunk())
                .await
                .expect("a chunk in time")
                .unwrap()
                .expect("stream open");
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                if !line.starts_with('a') {
                    continue;
                }
                for f in frames(line.trim_end())
                    .into_iter()
                    .filter(|f| f["event"] == "e")
                {
                    assert_eq!(index(f["data"].as_str().unwrap()), next);
                    next += 1;
                }
            }
        }
        normal
    });
    stalled_client_is_dropped(&server, "xhr-hose", &mut stalled).await;
    let normal = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    // The stalled session is reaped (its frames waited past write_timeout).
    server.wait_subscriptions("xhr-hose", 1).await;
    drop(normal);

    // A stalled SSE stream whose queue overflows too: one disconnect, counted once.
    // The socket stalls after a few MB; the queue behind it overflows within the
    // longer write deadline here, which used to count twice (at the overflow nobody
    // acted on, and at the write deadline that dropped the connection). Should the
    // queue overflow first, the stream ends and the idle keep-alive connection is
    // closed at the handshake deadline: counted once as well.
    let server = TestServer::with(|c| {
        c.server.write_timeout_secs = 3;
        c.server.handshake_timeout_secs = DEADLINE.as_secs();
        c.server.outbox_capacity = 300;
        c.history.max_messages = 10;
    })
    .await;
    let mut stalled = stalled_client(
        &server,
        &format!("GET /app/{KEY}/sse?channels=overflow HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    server.wait_subscriptions("overflow", 1).await;
    stalled_client_is_dropped(&server, "overflow", &mut stalled).await;
    server.wait_subscriptions("overflow", 0).await;
}
