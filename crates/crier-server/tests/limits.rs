//! The limits against abuse added with issue 12: connections per client address,
//! subscribe/unsubscribe rate, HTTP publish rate, a WebSocket that never subscribes,
//! and URL length. Each test checks the answer (Pusher code or HTTP status and JSON
//! body), that a client not over the limit is unaffected, and the limit's counter.
//! (The older limits have their tests beside their transports: websocket.rs,
//! hardening_http.rs, hardening_replay.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

/// `crier_limit_hits_total{limit}` now. Tests in this file each hit a different limit,
/// so the process-wide recorder's sum is each test's own count.
async fn limit_hits(server: &TestServer, limit: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("crier_limit_hits_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

/// A WebSocket to `server` whose TCP connection comes from `source` (any 127.0.0.x
/// works on Linux loopback), so a test can be two client addresses.
async fn connect_from(server: &TestServer, source: [u8; 4]) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(server.ws_url(KEY), MaybeTlsStream::Plain(stream))
            .await
            .expect("ws handshake");
    Client {
        ws,
        socket_id: String::new(),
    }
}

async fn established(client: &mut Client) {
    let hello = client.recv().await;
    assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
}

fn error_message(error: &Option<Value>) -> &str {
    error.as_ref().expect("a pusher:error before the close")["data"]["message"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn connections_per_ip_are_counted_per_address_and_refused_beyond() {
    let server = TestServer::with(|c| c.apps[0].max_connections_per_ip = Some(2)).await;
    let mut first = connect_from(&server, [127, 0, 0, 1]).await;
    established(&mut first).await;
    first.subscribe("ip").await;
    let mut second = connect_from(&server, [127, 0, 0, 1]).await;
    established(&mut second).await;

    // The third WebSocket from the address: 4100 (reconnect after a pause), with why.
    let mut third = connect_from(&server, [127, 0, 0, 1]).await;
    let (error, code) = third.recv_close().await;
    assert_eq!(code, 4100);
    assert_eq!(
        error_message(&error),
        "Too many connections from this address (max_connections_per_ip is 2)"
    );
    // An SSE stream counts too, and is refused with 429 and a JSON body.
    let res = reqwest::get(format!("http://{}/app/{KEY}/sse?channels=ip", server.addr))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"error": "Too many connections from this address (max_connections_per_ip is 2)"})
    );
    assert_eq!(limit_hits(&server, "max_connections_per_ip").await, 2.0);

    // Another address is not affected, nor are the connections already open.
    let mut elsewhere = connect_from(&server, [127, 0, 0, 2]).await;
    established(&mut elsewhere).await;
    elsewhere.subscribe("ip").await;
    server.wait_subscriptions("ip", 2).await;
    server.api().trigger("ip", "e", "still here").await;
    assert_eq!(first.recv_event("e").await["data"], "still here");
    assert_eq!(elsewhere.recv_event("e").await["data"], "still here");

    // A closed connection frees its place.
    drop(second);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = connect_from(&server, [127, 0, 0, 1]).await;
        let hello = first_frame(&mut again).await;
        if hello["event"] == "pusher:connection_established" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never freed: {hello}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn subscribing_faster_than_subscriptions_per_sec_closes_only_that_connection() {
    let server = TestServer::with(|c| c.apps[0].subscriptions_per_sec = Some(3)).await;
    let mut calm = server.connect().await;
    calm.subscribe("calm").await;

    let mut flood = server.connect().await;
    // Sent at once, so all four land in the same second.
    for channel in ["a", "b"] {
        flood
            .send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
            .await;
    }
    flood
        .send(json!({"event": "pusher:unsubscribe", "data": {"channel": "a"}}))
        .await;
    flood
        .send(json!({"event": "pusher:subscribe", "data": {"channel": "c"}}))
        .await;
    assert_eq!(
        flood.recv().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert_eq!(
        flood.recv().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let (error, code) = flood.recv_close().await;
    assert_eq!(code, 4301);
    assert_eq!(
        error_message(&error),
        "Subscription rate limit exceeded (subscriptions_per_sec is 3)"
    );
    assert_eq!(limit_hits(&server, "subscriptions_per_sec").await, 1.0);

    server.api().trigger("calm", "e", "unaffected").await;
    assert_eq!(calm.recv_event("e").await["data"], "unaffected");
}

#[tokio::test]
async fn publishing_faster_than_publish_per_sec_gets_429_with_retry_after() {
    let server = TestServer::with(|c| {
        c.apps[0].publish_per_sec = Some(2);
        c.apps.push(app("2", "key-2", "secret-2"));
    })
    .await;
    let api = server.api();
    let body = json!({"name": "e", "channel": "rated", "data": "x"}).to_string();
    let mut refused = None;
    for i in 0..5 {
        let url = api.signed_url("POST", "/apps/1/events", &[], body.as_bytes());
        let res = api
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if i < 2 {
            assert_eq!(res.status(), 200, "the first two fit the budget");
        } else if res.status() == 429 {
            refused = Some(res);
            break;
        }
    }
    let res = refused.expect("a publish over the rate is refused");
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"error": "app 1 is over its publish rate (publish_per_sec is 2); retry after 1 s"})
    );
    assert_eq!(limit_hits(&server, "publish_per_sec").await, 1.0);

    // Another app has its own budget (none here).
    let other = Api {
        app: "2".into(),
        key: "key-2".into(),
        secret: "secret-2".into(),
        ..server.api()
    };
    for _ in 0..5 {
        assert_eq!(other.trigger("rated", "e", "x").await, (200, json!({})));
    }
}

#[tokio::test]
async fn a_websocket_without_subscription_is_closed_after_subscribe_timeout() {
    let server = TestServer::with(|c| c.server.subscribe_timeout_secs = 1).await;
    let mut subscribed = server.connect().await;
    subscribed.subscribe("kept").await;
    let mut idle = server.connect().await;
    // Pings do not count: the client is alive, it just listens to nothing.
    idle.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(idle.recv().await["event"], "pusher:pong");
    let (error, code) = idle.recv_close().await;
    assert_eq!(code, 4202);
    assert_eq!(
        error_message(&error),
        "No subscription within 1 s (server.subscribe_timeout_secs)"
    );
    assert_eq!(limit_hits(&server, "subscribe_timeout_secs").await, 1.0);
    // Past the deadline, the subscribed connection is still there.
    server.api().trigger("kept", "e", "alive").await;
    assert_eq!(subscribed.recv_event("e").await["data"], "alive");
}

#[tokio::test]
async fn a_url_over_max_url_bytes_gets_414_and_json() {
    let server = TestServer::with(|c| c.server.max_url_bytes = 2048).await;
    let channels = vec!["c"; 1500].join(",");
    let url = format!("http://{}/app/{KEY}/sse?channels={channels}", server.addr);
    let len = url.len() - format!("http://{}", server.addr).len();
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 414);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"error": format!("URL of {len} bytes is longer than server.max_url_bytes (2048)")})
    );
    // A WebSocket upgrade is an HTTP request first: refused the same way.
    let ws = tokio_tungstenite::connect_async(format!(
        "ws://{}/app/{KEY}?protocol=7&pad={}",
        server.addr,
        "x".repeat(3000)
    ))
    .await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 414),
        other => panic!("expected 414, got {other:?}"),
    }
    assert_eq!(limit_hits(&server, "max_url_bytes").await, 2.0);
    // Under the limit, the same endpoint works.
    let res = reqwest::get(format!(
        "http://{}/app/{KEY}/poll?channels=c&timeout=0",
        server.addr
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
}

/// The first frame other than `pusher:error`, or `{"event": "closed"}` when the server
/// closed the connection.
async fn first_frame(client: &mut Client) -> Value {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(WAIT, client.ws.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["event"] != "pusher:error" {
                    return v;
                }
            }
            Some(Ok(_)) => {}
            _ => return json!({"event": "closed"}),
        }
    }
}

/// The limits that existed before (tested for their answers in websocket.rs,
/// hardening_http.rs and hardening_replay.rs) are counted in `crier_limit_hits_total`.
#[tokio::test]
async fn the_older_limits_are_counted_by_their_keys() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::with(|c| {
        c.server.handshake_timeout_secs = 1;
        c.server.max_header_bytes = 4096;
        c.server.max_body_bytes = 1024;
        let app = &mut c.apps[0];
        app.max_connections = 1;
        app.max_channels_per_connection = Some(1);
        app.max_event_size = Some(16);
        app.client_events_per_sec = Some(1);
    })
    .await;
    let mut c = server.connect().await;
    let mut over = Client::raw(&server.ws_url(KEY)).await;
    let first = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut over))
        .await
        .unwrap();
    assert!(format!("{first:?}").contains("4004"), "{first:?}");

    c.subscribe_private("private-c").await;
    let refused = c.subscribe("second").await;
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    let event = |data: &str| json!({"event": "client-e", "channel": "private-c", "data": data});
    c.send(event(&"x".repeat(64))).await;
    assert_eq!(c.recv().await["event"], "pusher:error");
    c.send(event("1")).await;
    c.send(event("2")).await;
    assert_eq!(c.recv_close().await.1, 4301);

    let (status, _) = server.api().trigger("c", "e", &"x".repeat(2048)).await;
    assert_eq!(status, 413);

    let mut big = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "GET /health HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(8192)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, big.read_to_end(&mut got)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, slow.read_to_end(&mut rest)).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    for limit in [
        "max_connections",
        "max_channels_per_connection",
        "max_event_size",
        "client_events_per_sec",
        "max_body_bytes",
        "max_header_bytes",
        "handshake_timeout_secs",
    ] {
        while limit_hits(&server, limit).await < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{limit} not counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
