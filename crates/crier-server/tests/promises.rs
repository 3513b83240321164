//! README promises that had no test of their own (issue 13): the activity timer, the
//! replay cap, retention by age and the per-app history overrides, presence limits,
//! the client-event rate window, JWT errors, `max_body_bytes`, `/ready` while draining
//! and UDP signatures on a non-loopback address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use crier_core::publish::EventRequest;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// The next text frame, pings included; fails on a close or after [`WAIT`].
async fn next_frame(c: &mut Client) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("a frame within the wait")
            .expect("stream open")
            .expect("frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// README (configuration): `activity_timeout_secs` of silence before a ping, then
/// 4201 without a pong. A pong, or any client frame, is activity: only real silence
/// ends the connection.
#[tokio::test]
async fn pongs_and_client_frames_reset_the_activity_timer() {
    let server = TestServer::with(|c| {
        c.server.activity_timeout_secs = 1;
        c.server.pong_timeout_secs = 1;
    })
    .await;
    let mut c = server.connect().await;

    // Answering each ping keeps the connection: three rounds span three times
    // activity + pong, where a pong that did not count would have ended it.
    for _ in 0..3 {
        assert_eq!(
            next_frame(&mut c).await,
            json!({"event": "pusher:ping", "data": {}})
        );
        c.send(json!({"event": "pusher:pong", "data": {}})).await;
    }

    // Client frames every 400 ms for 3 s: the server never needs to ping, so every
    // frame it sends is the answer to ours.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.send(json!({"event": "pusher:ping", "data": {}})).await;
        assert_eq!(
            next_frame(&mut c).await,
            json!({"event": "pusher:pong", "data": {}})
        );
    }

    // Then silence: a ping after the activity timeout, and 4201 after the pong timeout.
    let quiet = Instant::now();
    assert_eq!(next_frame(&mut c).await["event"], "pusher:ping");
    let pinged = quiet.elapsed();
    assert!(
        pinged >= Duration::from_millis(900),
        "pinged after {pinged:?}"
    );
    let (_, code) = c.recv_close().await;
    assert_eq!(code, 4201);
    let closed = quiet.elapsed();
    assert!(
        closed >= Duration::from_millis(1800),
        "closed after {closed:?}"
    );
}

/// README: `connection_established` carries the server's `activity_timeout`.
#[tokio::test]
async fn connection_established_announces_the_activity_timeout() {
    for (setting, expected) in [(None, 120), (Some(7), 7)] {
        let server = TestServer::with(|c| {
            if let Some(s) = setting {
                c.server.activity_timeout_secs = s;
            }
        })
        .await;
        let mut ws = Client::raw(&server.ws_url(KEY)).await;
        let hello = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
        assert_eq!(hello["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(hello["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["activity_timeout"], expected, "{data}");
    }
}

/// Publishes `n` small messages in process; returns the cursor before the first.
async fn publish_small(server: &TestServer, channel: &str, n: usize) -> String {
    let node = server.node();
    let app = server.dev_app();
    let mut since = None;
    for start in (0..n).step_by(100) {
        let requests = (start..(start + 100).min(n))
            .map(|i| EventRequest {
                name: Some("n".into()),
                data: Some(Value::String(i.to_string())),
                channel: Some(channel.into()),
                channels: None,
                socket_id: None,
                info: None,
            })
            .collect();
        let published = node.publish(&app, requests).await.unwrap();
        since.get_or_insert_with(|| format!("{}-0", published[0].position.epoch));
    }
    since.unwrap()
}

/// README (protocol extensions): one subscribe replays at most 10,000 messages per
/// channel; then live messages follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscribe_replays_at_most_ten_thousand_messages_then_live_ones() {
    const PUBLISHED: usize = 10_050;
    let server = TestServer::with(|c| c.history.max_messages = 20_000).await;
    let since = publish_small(&server, "deep", PUBLISHED).await;
    let mut c = server.connect().await;
    c.send(json!({"event": "pusher:subscribe", "data": {"channel": "deep", "since": since}}))
        .await;
    assert_eq!(
        c.recv().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    for i in 0..10_000 {
        let m = c.recv().await;
        assert_eq!(m["data"], i.to_string(), "replayed message {i}");
    }
    // The replay stopped at the cap: the next message is the live one.
    assert_eq!(server.api().trigger("deep", "n", "live").await.0, 200);
    let next = c.recv().await;
    assert_eq!(next["data"], "live", "after the cap: {next}");
}

async fn history_of(api: &Api, channel: &str) -> Vec<Value> {
    let (status, page) = api
        .get(
            &format!("/apps/{}/channels/{channel}/messages", api.app),
            &[("limit", "1000")],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["messages"].as_array().unwrap().clone()
}

fn offset(id: &Value) -> u64 {
    id.as_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// README (history): each channel keeps its last `max_messages` and none older than
/// `max_age_secs`, per app with `history_max_messages` and `history_max_age_secs`; the
/// newest message stays on disk, hidden once expired, so offsets keep growing across a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_app_history_overrides_and_age_survive_a_restart() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let config = {
        let mut c = base_config(dir.path());
        c.history.max_messages = 1000;
        c.history.max_age_secs = 86_400;
        c.apps[0].history_max_age_secs = Some(1);
        let mut counted = app("2", "counted-key", "counted-secret");
        counted.history_max_messages = Some(3);
        c.apps.push(counted);
        c
    };
    let mut server = TestServer::start_in(dir.clone(), config.clone()).await;
    let api = server.api();
    let counted = Api {
        app: "2".into(),
        key: "counted-key".into(),
        secret: "counted-secret".into(),
        ..server.api()
    };
    for i in 0..5 {
        assert_eq!(api.trigger("aged", "e", &i.to_string()).await.0, 200);
        assert_eq!(counted.trigger("kept", "e", &i.to_string()).await.0, 200);
    }
    // App 2 keeps its last 3 (the global setting would keep 1000).
    let kept: Vec<Value> = history_of(&counted, "kept")
        .await
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(kept, [json!("2"), json!("3"), json!("4")]);
    // App 1 keeps nothing older than a second (the global setting: a day).
    let newest = history_of(&api, "aged").await.pop().unwrap();
    assert_eq!(newest["data"], "4");
    let deadline = Instant::now() + WAIT;
    while !history_of(&api, "aged").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "messages older than 1 s are still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // App 2's messages are not aged out by app 1's override.
    assert_eq!(history_of(&counted, "kept").await.len(), 3);

    // A restart after the newest message expired: ids go on from where they were.
    server.stop().await;
    let server = TestServer::start_in(dir, config).await;
    let api = server.api();
    assert!(history_of(&api, "aged").await.is_empty());
    assert_eq!(api.trigger("aged", "e", "after").await.0, 200);
    let after = history_of(&api, "aged").await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["data"], "after");
    assert_eq!(offset(&after[0]["id"]), offset(&newest["id"]) + 1);
    let epoch = |m: &Value| {
        m["id"]
            .as_str()
            .unwrap()
            .rsplit_once('-')
            .unwrap()
            .0
            .to_owned()
    };
    assert_eq!(epoch(&after[0]), epoch(&newest), "epoch changed");
}

fn presence_join(c: &Client, channel: &str, user: &str) -> Value {
    let data = json!({"user_id": user}).to_string();
    let auth = c.auth(channel, Some(&data));
    json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": data}})
}

/// README (configuration): `max_presence_members` defaults to 100; a full channel
/// refuses with 403, on SSE and long-poll as JSON; a member leaving makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_channels_hold_a_hundred_members_by_default_and_free_room_on_leave() {
    let server = TestServer::start().await;
    let ch = "presence-hall";
    let mut members = Vec::new();
    for i in 0..100 {
        let mut c = server.connect().await;
        c.subscribe_presence(ch, &format!("u{i}")).await;
        members.push(c);
    }
    let mut late = server.connect().await;
    late.send(presence_join(&late, ch, "late")).await;
    assert_eq!(
        late.recv().await,
        json!({
            "event": "pusher:subscription_error",
            "channel": ch,
            "data": {"type": "LimitReached", "error": "presence channel is full", "status": 403}
        })
    );

    // SSE and long-poll get a JSON 403 naming the channel.
    let token = crier_protocol::token::issue(
        &json!({"channels": [ch], "exp": now() + 600, "sub": "web"}),
        SECRET,
    );
    for path in ["sse", "poll"] {
        let res = reqwest::get(format!(
            "http://{}/app/{KEY}/{path}?channels={ch}&token={token}&timeout=1",
            server.addr
        ))
        .await
        .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": format!("presence channel {ch} is full")}),
            "{path}"
        );
    }

    // One member leaves: the next join succeeds.
    let mut leaving = members.pop().unwrap();
    leaving
        .send(json!({"event": "pusher:unsubscribe", "data": {"channel": ch}}))
        .await;
    members[0]
        .recv_event("pusher_internal:member_removed")
        .await;
    late.send(presence_join(&late, ch, "late")).await;
    assert_eq!(
        late.recv().await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

/// README (configuration): `client_events_per_sec`: the limit is per second, so a
/// client that keeps to it in each second is never cut off.
#[tokio::test]
async fn the_client_event_rate_window_resets_every_second() {
    let server = TestServer::with(|c| c.apps[0].client_events_per_sec = Some(3)).await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.subscribe_private("private-rate").await;
    b.subscribe_private("private-rate").await;
    let mut sent = 0;
    for _window in 0..3 {
        let started = Instant::now();
        for _ in 0..3 {
            a.send(json!({"event": "client-n", "channel": "private-rate", "data": {"n": sent}}))
                .await;
            let got = b.recv_event("client-n").await;
            assert_eq!(got["data"], json!({"n": sent}));
            sent += 1;
        }
        // Into the next second: the window has reset.
        let rest = Duration::from_millis(1100).saturating_sub(started.elapsed());
        tokio::time::sleep(rest).await;
    }
    // Still connected: a ping is answered with a pong, not a 4301 close.
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(a.recv().await["event"], "pusher:pong");
    // And a fourth event within one second is still refused with 4301.
    for _ in 0..4 {
        a.send(json!({"event": "client-n", "channel": "private-rate", "data": {}}))
            .await;
    }
    let (error, code) = a.recv_close().await;
    assert_eq!(code, 4301);
    assert_eq!(error.unwrap()["data"]["code"], 4301);
}

fn jwt(header: &Value, claims: &Value, secret: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{h}.{c}");
    let sig = crier_protocol::signature::sign(secret, &signed);
    let sig = URL_SAFE_NO_PAD.encode(hex::decode(sig).unwrap());
    format!("{signed}.{sig}")
}

/// README (SSE and long-poll): tokens are HS256 JWTs; presence needs `sub`; errors
/// before the stream are JSON 401s naming the problem.
#[tokio::test]
async fn tokens_with_another_alg_without_sub_or_malformed_are_refused_with_json_401() {
    let server = TestServer::start().await;
    let exp = now() + 600;
    let cases = [
        (
            "private-x",
            jwt(
                &json!({"alg": "HS384", "typ": "JWT"}),
                &json!({"channels": ["private-x"], "exp": exp}),
                SECRET,
            ),
            "token algorithm must be HS256",
        ),
        (
            "private-x",
            jwt(
                &json!({"alg": "none", "typ": "JWT"}),
                &json!({"channels": ["private-x"], "exp": exp}),
                SECRET,
            ),
            "token algorithm must be HS256",
        ),
        (
            "presence-x",
            crier_protocol::token::issue(&json!({"channels": ["presence-x"], "exp": exp}), SECRET),
            "presence channels need a token with sub",
        ),
        ("private-x", "not-a-jwt".to_owned(), "token is not a JWT"),
        ("private-x", "a.b.c.d".to_owned(), "token is not a JWT"),
    ];
    for (channel, token, error) in cases {
        for path in ["sse", "poll"] {
            let res = reqwest::get(format!(
                "http://{}/app/{KEY}/{path}?channels={channel}&token={token}&timeout=1",
                server.addr
            ))
            .await
            .unwrap();
            assert_eq!(res.status(), 401, "{path} {token}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body, json!({"error": error}), "{path} {token}");
        }
    }
    // The same token with HS256 is accepted: the refusals above are for what they name.
    let good = jwt(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"channels": ["private-x"], "exp": exp}),
        SECRET,
    );
    let res = reqwest::get(format!(
        "http://{}/app/{KEY}/poll?channels=private-x&token={good}&timeout=1",
        server.addr
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
}

/// README (configuration): `max_body_bytes` is the largest HTTP API body; beyond it a
/// JSON 413 naming the setting, and nothing is published.
#[tokio::test]
async fn a_non_default_max_body_bytes_is_enforced() {
    let server = TestServer::with(|c| c.server.max_body_bytes = 2048).await;
    let api = server.api();
    let mut c = server.connect().await;
    c.subscribe("bodies").await;
    let body = |size: usize| {
        let mut v = json!({"name": "e", "channel": "bodies", "data": ""});
        let overhead = v.to_string().len();
        v["data"] = Value::String("x".repeat(size - overhead));
        assert_eq!(v.to_string().len(), size);
        v
    };
    let (status, reply) = api.post("/apps/1/events", &body(2049)).await;
    assert_eq!(status, 413, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains("server.max_body_bytes"), "{error}");
    let accepted = body(2048);
    let (status, reply) = api.post("/apps/1/events", &accepted).await;
    assert_eq!(status, 200, "{reply}");
    // The first message the subscriber gets is the accepted one.
    assert_eq!(c.recv().await["data"], accepted["data"]);
}

/// `/ready` never says 200 once the server drains: new connections are no longer
/// accepted, so a load balancer's probe fails.
#[tokio::test]
async fn ready_is_not_200_while_draining() {
    let mut server = TestServer::with(|c| c.server.shutdown_timeout_secs = 5).await;
    let ready = format!("http://{}/ready", server.addr);
    let res = reqwest::get(&ready).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
    // A connected client sees the drain begin (4200)...
    let mut c = server.connect().await;
    server.running.as_ref().unwrap().shutdown();
    assert_eq!(c.recv_close().await.1, 4200);
    // ... and from then on the probe gets no 200.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match http.get(&ready).send().await {
        Err(_) => {}
        Ok(res) => {
            assert_eq!(res.status(), 503);
            let body: Value = res.json().await.unwrap();
            assert_eq!(
                body,
                json!({"status": "not_ready", "component": "server", "error": "draining"})
            );
        }
    }
    server.stop().await;
}

/// README (UDP ingest): signatures are required when `[ingest.udp] listen` is not a
/// loopback address, even with `require_signature = false`.
#[tokio::test]
async fn udp_signatures_are_required_on_a_non_loopback_address() {
    const REAL_SECRET: &str = "a-real-secret-not-the-dev-one";
    let server = TestServer::with(|c| {
        c.ingest.udp.listen = "0.0.0.0:0".into();
        c.ingest.udp.require_signature = false;
        c.apps[0].secret = REAL_SECRET.into();
    })
    .await;
    let port = server.running.as_ref().unwrap().udp_addr.unwrap().port();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = server.connect().await;
    c.subscribe("udp-public").await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    const DROPPED: &str = "crier_ingest_dropped_total";
    const MISSING: &str = "reason=\"missing_signature\"";
    let before = metrics::value(&server, DROPPED, MISSING).await;
    let unsigned = json!({"app_id": "1", "name": "e", "channel": "udp-public", "data": "unsigned"})
        .to_string();
    sock.send_to(unsigned.as_bytes(), target).await.unwrap();
    metrics::wait_increase(&server, DROPPED, MISSING, before, 1.0).await;
    let signed =
        json!({"app_id": "1", "name": "e", "channel": "udp-public", "data": "signed"}).to_string();
    let sig = crier_protocol::signature::sign(REAL_SECRET, &signed);
    sock.send_to(format!("{sig} {signed}").as_bytes(), target)
        .await
        .unwrap();
    // The signed one is the first to arrive: the unsigned one was never published.
    assert_eq!(c.recv().await["data"], "signed");
}
