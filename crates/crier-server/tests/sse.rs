//! Server-Sent Events: envelopes, cursors, resume, gaps, tokens, presence, CORS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use crier_protocol::token;
use serde_json::{json, Value};
use support::sse::SseStream;
use support::*;

async fn open(server: &TestServer, query: &str, last_id: Option<&str>) -> reqwest::Response {
    let mut req =
        reqwest::Client::new().get(format!("http://{}/app/{KEY}/sse?{query}", server.addr));
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().await.unwrap()
}

async fn stream(server: &TestServer, query: &str, last_id: Option<&str>) -> SseStream {
    let res = open(server, query, last_id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    SseStream::new(res)
}

fn token_for(claims: Value) -> String {
    token::issue(&claims, SECRET)
}

fn far_future() -> i64 {
    now() + 3600
}

#[tokio::test]
async fn messages_arrive_as_envelopes_with_cursors() {
    let server = TestServer::start().await;
    let mut s = stream(&server, "channels=a,b", None).await;
    server.wait_subscriptions("a", 1).await;
    let api = server.api();
    api.trigger("a", "e1", "1").await;
    api.trigger("b", "e2", "2").await;
    let first = s.next().await.unwrap();
    assert_eq!(s.retry, Some(1000));
    assert_eq!(first.event, "message");
    let env = first.json();
    assert_eq!(
        (
            env["channel"].as_str(),
            env["event"].as_str(),
            env["data"].as_str()
        ),
        (Some("a"), Some("e1"), Some("1"))
    );
    assert!(env["id"].as_str().unwrap().ends_with("-1"));
    let cursor = first.id.unwrap();
    assert!(
        cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)),
        "{cursor}"
    );
    let second = s.next().await.unwrap();
    assert_eq!(second.json()["channel"], "b");
    assert_ne!(second.id.unwrap(), cursor);
}

#[tokio::test]
async fn resume_gets_exactly_the_missed_messages() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut s = stream(&server, "channels=news,sport", None).await;
    server.wait_subscriptions("news", 1).await;
    api.trigger("news", "e", "n1").await;
    api.trigger("sport", "e", "s1").await;
    s.next().await.unwrap();
    let last = s.next().await.unwrap().id.unwrap();
    drop(s);
    server.wait_subscriptions("news", 0).await;
    for i in 2..5 {
        api.trigger("news", "e", &format!("n{i}")).await;
        api.trigger("sport", "e", &format!("s{i}")).await;
    }
    // Header and query parameter both resume.
    let mut want_news = vec!["n2", "n3", "n4"];
    for via_header in [true, false] {
        let mut s = if via_header {
            stream(&server, "channels=news,sport", Some(&last)).await
        } else {
            stream(
                &server,
                &format!("channels=news,sport&last_event_id={last}"),
                None,
            )
            .await
        };
        let mut got = Vec::new();
        for _ in 0..want_news.len() + 3 {
            got.push(
                s.next().await.unwrap().json()["data"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let news: Vec<_> = got
            .iter()
            .filter(|d| !d.starts_with('s'))
            .cloned()
            .collect();
        let sport: Vec<_> = got.iter().filter(|d| d.starts_with('s')).cloned().collect();
        assert_eq!(news, want_news);
        assert_eq!(sport, ["s2", "s3", "s4"]);
        api.trigger("news", "e", "live").await;
        assert_eq!(s.next().await.unwrap().json()["data"], "live");
        want_news.push("live");
    }
}

#[tokio::test]
async fn a_message_id_resumes_a_single_channel_stream() {
    let server = TestServer::start().await;
    let api = server.api();
    api.trigger("solo", "e", "1").await;
    let (_, page) = api.get("/apps/1/channels/solo/messages", &[]).await;
    let id = page["messages"][0]["id"].as_str().unwrap().to_owned();
    api.trigger("solo", "e", "2").await;
    let mut s = stream(&server, "channels=solo", Some(&id)).await;
    assert_eq!(s.next().await.unwrap().json()["data"], "2");
}

#[tokio::test]
async fn stale_and_foreign_cursors_get_a_gap_first() {
    let server = TestServer::with(|c| c.history.max_messages = 3).await;
    let api = server.api();
    for i in 0..10 {
        api.trigger("g", "e", &i.to_string()).await;
    }
    let (_, page) = api.get("/apps/1/channels/g/messages", &[]).await;
    let epoch = page["cursor"]
        .as_str()
        .unwrap()
        .rsplit_once('-')
        .unwrap()
        .0
        .to_owned();
    for since in [format!("{epoch}-1"), "someotherepoch-5".to_owned()] {
        let mut s = stream(&server, "channels=g", Some(&since)).await;
        let gap = s.next().await.unwrap().json();
        assert_eq!(
            (gap["event"].as_str(), gap["channel"].as_str()),
            (Some("crier:gap"), Some("g"))
        );
        let data: Vec<String> = [s.next().await, s.next().await, s.next().await]
            .into_iter()
            .map(|e| e.unwrap().json()["data"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(data, ["7", "8", "9"]);
    }
}

#[tokio::test]
async fn errors_before_the_stream_are_json_statuses() {
    let server = TestServer::start().await;
    let expired = token_for(json!({"channels": ["private-x"], "exp": now() - 10}));
    let wrong = token::issue(
        &json!({"channels": ["private-x"], "exp": far_future()}),
        "not-the-secret",
    );
    let other = token_for(json!({"channels": ["private-y"], "exp": far_future()}));
    let cases = [
        (
            "channels=private-x".to_owned(),
            401,
            "token is required for private and presence channels",
        ),
        (
            format!("channels=private-x&token={wrong}"),
            401,
            "token signature is invalid",
        ),
        (
            format!("channels=private-x&token={expired}"),
            401,
            "token has expired",
        ),
        (
            format!("channels=private-x&token={other}"),
            403,
            "token does not allow channel private-x",
        ),
        (
            "channels=bad%20name".to_owned(),
            400,
            "invalid channel: channel name \"bad name\" contains characters other than \
             A-Z a-z 0-9 _ - = @ , . ;",
        ),
        (
            "channels=".to_owned(),
            400,
            "channels is required (comma-separated)",
        ),
        (
            "channels=a&last_event_id=garbage".to_owned(),
            400,
            "invalid cursor \"garbage\"",
        ),
    ];
    for (query, status, error) in cases {
        let res = open(&server, &query, None).await;
        assert_eq!(res.status().as_u16(), status, "{query}");
        assert_eq!(res.headers()["content-type"], "application/json", "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body, json!({ "error": error }), "{query}");
    }
    // An unknown key's 404 is readable by the page that asked: CORS with its origin.
    let res = reqwest::Client::new()
        .get(format!("http://{}/app/nokey/sse?channels=a", server.addr))
        .header("Origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"error": "unknown app key \"nokey\""}));
    let ok = token_for(json!({"channels": ["private-x"], "exp": far_future()}));
    assert_eq!(
        open(&server, &format!("channels=private-x&token={ok}"), None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn presence_over_sse_is_seen_by_websocket_members() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    ws.subscribe_presence("presence-room", "ws-user").await;
    let t = token_for(
        json!({"channels": ["presence-room"], "exp": far_future(), "sub": "sse-user", "user_info": {"name": "S"}}),
    );
    let s = stream(&server, &format!("channels=presence-room&token={t}"), None).await;
    let added = ws.recv_event("pusher_internal:member_added").await;
    let data: Value = serde_json::from_str(added["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        data,
        json!({"user_id": "sse-user", "user_info": {"name": "S"}})
    );
    let (_, users) = server
        .api()
        .get("/apps/1/channels/presence-room/users", &[])
        .await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2);
    drop(s);
    let removed = ws.recv_event("pusher_internal:member_removed").await;
    assert!(removed["data"].as_str().unwrap().contains("sse-user"));
}

#[tokio::test]
async fn cors_preflight_and_origins() {
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
            format!("http://{}/app/{KEY}/sse", server.addr),
        )
        .header("Origin", "https://any.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "last-event-id")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://any.example"
    );
    assert!(pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Last-Event-ID"));
    let good = http
        .get(format!(
            "http://{}/app/strict-key/sse?channels=a",
            server.addr
        ))
        .header("Origin", "https://good.example")
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    let bad = http
        .get(format!(
            "http://{}/app/strict-key/sse?channels=a",
            server.addr
        ))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
}

#[tokio::test]
async fn streams_end_on_shutdown() {
    let mut server = TestServer::start().await;
    let mut s = stream(&server, "channels=a", None).await;
    server.wait_subscriptions("a", 1).await;
    let stop = tokio::spawn(async move {
        server.stop().await;
    });
    assert!(s.next().await.is_none());
    stop.await.unwrap();
}

#[tokio::test]
async fn streams_count_toward_the_app_connection_limit() {
    let server = TestServer::with(|c| {
        let mut small = app("small", "small-key", "small-secret");
        small.max_connections = 1;
        c.apps.push(small);
    })
    .await;
    let url = |path: &str| format!("http://{}/app/small-key/{path}", server.addr);
    let first = reqwest::get(url("sse?channels=a")).await.unwrap();
    assert_eq!(first.status(), 200);
    // The one slot is taken: another stream, a poll and a WebSocket are all refused.
    let second = reqwest::get(url("sse?channels=a")).await.unwrap();
    assert_eq!(second.status(), 429);
    let body: Value = second.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("connection limit"));
    let poll = reqwest::get(url("poll?channels=a&timeout=0"))
        .await
        .unwrap();
    assert_eq!(poll.status(), 429);
    let mut ws = Client {
        ws: Client::raw(&server.ws_url("small-key")).await,
        socket_id: String::new(),
    };
    assert_eq!(ws.recv_close().await.1, 4004);
    // Closing the stream gives the slot back; a finished poll does not keep it.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let res = reqwest::get(url("poll?channels=a&timeout=0"))
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert_eq!(res.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream never gave its slot back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let res = reqwest::get(url("poll?channels=a&timeout=0"))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test]
async fn cache_channels_send_their_last_message_or_a_cache_miss_first() {
    let server = TestServer::start().await;
    let api = server.api();
    // Nothing published yet: a cache miss envelope first, then live messages.
    let mut empty = stream(&server, "channels=cache-empty", None).await;
    let miss = empty.next().await.unwrap().json();
    assert_eq!(
        miss,
        json!({"id": "", "channel": "cache-empty", "event": "pusher:cache_miss", "data": "{}"})
    );
    api.trigger("cache-empty", "price", "1").await;
    assert_eq!(empty.next().await.unwrap().json()["data"], "1");

    api.trigger("cache-prices", "price", "1").await;
    api.trigger("cache-prices", "price", "2").await;
    let mut s = stream(&server, "channels=cache-prices", None).await;
    let cached = s.next().await.unwrap();
    let env = cached.json();
    assert_eq!(
        (env["event"].as_str(), env["data"].as_str()),
        (Some("price"), Some("2"))
    );
    assert!(env["id"].as_str().unwrap().ends_with("-2"));
    api.trigger("cache-prices", "price", "3").await;
    let live = s.next().await.unwrap().json();
    assert_eq!(live["data"], "3", "the cached message once, then live ones");
    // Resuming with a cursor replays what followed it, not the cached message again.
    drop(s);
    let mut resumed = stream(&server, "channels=cache-prices", cached.id.as_deref()).await;
    assert_eq!(resumed.next().await.unwrap().json()["data"], "3");
}

#[tokio::test]
async fn a_silent_stream_gets_heartbeat_comments_every_sse_heartbeat_secs() {
    let server = TestServer::with(|c| c.server.sse_heartbeat_secs = 1).await;
    let mut res = open(&server, "channels=silent", None).await;
    assert_eq!(res.status(), 200);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    // Two heartbeats: the setting paces them, not a single timer at the start.
    while seen.matches(": heartbeat\n\n").count() < 2 {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("heartbeats within WAIT (the default, 15 s, would not come in time)")
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.starts_with("retry: 1000\n\n"), "{seen:?}");
    assert!(
        !seen.contains("event:"),
        "only comments on a silent stream: {seen:?}"
    );
}
