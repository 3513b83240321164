//! The Pusher protocol over WebSocket, driven as a client would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn data(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

#[tokio::test]
async fn connection_established_carries_socket_id_and_timeout() {
    let server = TestServer::start().await;
    let c = server.connect().await;
    let (a, b) = c.socket_id.split_once('.').unwrap();
    assert!(a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit()));
}

#[tokio::test]
async fn bad_connections_get_pusher_error_codes() {
    let server = TestServer::start().await;
    let cases = [
        (server.ws_url("nope"), 4001),
        (format!("ws://{}/app/{KEY}", server.addr), 4008),
        (format!("ws://{}/app/{KEY}?protocol=abc", server.addr), 4006),
        (format!("ws://{}/app/{KEY}?protocol=3", server.addr), 4007),
    ];
    for (url, code) in cases {
        let mut c = Client {
            ws: Client::raw(&url).await,
            socket_id: String::new(),
        };
        let (error, closed_with) = c.recv_close().await;
        assert_eq!(closed_with, code, "{url}");
        assert_eq!(error.unwrap()["data"]["code"], code);
    }
}

#[tokio::test]
async fn disabled_app_and_connection_quota() {
    let server = TestServer::with(|c| {
        let mut disabled = app("off", "off-key", "off-secret");
        disabled.enabled = false;
        let mut small = app("small", "small-key", "small-secret");
        small.max_connections = 1;
        c.apps.push(disabled);
        c.apps.push(small);
    })
    .await;
    let mut c = Client {
        ws: Client::raw(&server.ws_url("off-key")).await,
        socket_id: String::new(),
    };
    assert_eq!(c.recv_close().await.1, 4003);
    let _first = Client::connect(&server.ws_url("small-key")).await;
    let mut second = Client {
        ws: Client::raw(&server.ws_url("small-key")).await,
        socket_id: String::new(),
    };
    assert_eq!(second.recv_close().await.1, 4004);
}

#[tokio::test]
async fn public_subscribe_and_receive_with_id() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    let ok = c.subscribe("news").await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(ok["channel"], "news");
    let (status, _) = server.api().trigger("news", "headline", "{\"t\":1}").await;
    assert_eq!(status, 200);
    let ev = c.recv().await;
    assert_eq!(ev["event"], "headline");
    assert_eq!(ev["channel"], "news");
    assert_eq!(ev["data"], "{\"t\":1}");
    assert!(ev["id"].as_str().unwrap().ends_with("-1"), "{ev}");
}

#[tokio::test]
async fn ping_gets_pong_and_bad_frames_get_errors_without_closing() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(c.recv().await["event"], "pusher:pong");
    c.send_text("{not json").await;
    let e = c.recv().await;
    assert_eq!(e["event"], "pusher:error");
    c.send_text(r#"{"event":"pusher:subscribe","data":{}}"#)
        .await;
    assert_eq!(c.recv().await["event"], "pusher:error");
    c.send_text(r#"{"data":1}"#).await;
    assert_eq!(c.recv().await["event"], "pusher:error");
    assert_eq!(
        c.subscribe("still-works").await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

#[tokio::test]
async fn private_channels_need_a_valid_signature() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    assert_eq!(
        c.subscribe_private("private-orders").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    c.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": "app-key:deadbeef"}}))
        .await;
    let err = c.recv().await;
    assert_eq!(err["event"], "pusher:subscription_error");
    assert_eq!(err["channel"], "private-x");
    assert_eq!(err["data"]["status"], 401);
    assert_eq!(err["data"]["type"], "AuthError");
    // No auth at all, and auth for another socket: refused too.
    assert_eq!(c.subscribe("private-y").await["data"]["status"], 401);
    let other = support::Client::connect(&server.ws_url(KEY)).await;
    let stolen = other.auth("private-z", None);
    c.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-z", "auth": stolen}}))
        .await;
    assert_eq!(c.recv().await["data"]["status"], 401);
    // The connection stays usable.
    assert_eq!(
        c.subscribe("news").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    // Encrypted channels use the same signature.
    assert_eq!(
        c.subscribe_private("private-encrypted-x").await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

#[tokio::test]
async fn invalid_channel_names_are_refused() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    let long = "a".repeat(165);
    for name in ["bad name", long.as_str(), "#server-to-user-1"] {
        let err = c.subscribe(name).await;
        assert_eq!(err["event"], "pusher:subscription_error", "{name}");
    }
}

#[tokio::test]
async fn presence_counts_users_not_connections() {
    let server = TestServer::start().await;
    let ch = "presence-room";
    let mut watcher = server.connect().await;
    let first = watcher.subscribe_presence(ch, "w").await;
    assert_eq!(data(&first)["presence"]["count"], 1);

    let mut u1a = server.connect().await;
    let joined = u1a.subscribe_presence(ch, "u1").await;
    let presence = &data(&joined)["presence"];
    assert_eq!(presence["count"], 2);
    assert_eq!(presence["hash"]["u1"]["name"], "u1");
    let added = watcher.recv_event("pusher_internal:member_added").await;
    assert_eq!(data(&added)["user_id"], "u1");

    // A second connection of u1: no new member_added.
    let mut u1b = server.connect().await;
    let again = u1b.subscribe_presence(ch, "u1").await;
    assert_eq!(data(&again)["presence"]["count"], 2);

    let (_, users) = server
        .api()
        .get(&format!("/apps/{APP}/channels/{ch}/users"), &[])
        .await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2);
    let (_, info) = server
        .api()
        .get(
            &format!("/apps/{APP}/channels/{ch}"),
            &[("info", "user_count,subscription_count")],
        )
        .await;
    assert_eq!(info["user_count"], 2);
    assert_eq!(info["subscription_count"], 3);

    // Closing one of u1's connections keeps u1; closing the other removes u1 once.
    drop(u1a);
    drop(u1b);
    let removed = watcher.recv_event("pusher_internal:member_removed").await;
    assert_eq!(data(&removed)["user_id"], "u1");
    let (_, users) = server
        .api()
        .get(&format!("/apps/{APP}/channels/{ch}/users"), &[])
        .await;
    assert_eq!(users["users"], json!([{"id": "w"}]));
}

#[tokio::test]
async fn presence_member_limit() {
    let server = TestServer::with(|c| c.apps[0].max_presence_members = Some(1)).await;
    let mut a = server.connect().await;
    a.subscribe_presence("presence-small", "1").await;
    let mut b = server.connect().await;
    let data = json!({"user_id": "2"}).to_string();
    let auth = b.auth("presence-small", Some(&data));
    b.send(json!({"event": "pusher:subscribe", "data": {"channel": "presence-small", "auth": auth, "channel_data": data}}))
        .await;
    let err = b.recv().await;
    assert_eq!(
        err,
        json!({
            "event": "pusher:subscription_error",
            "channel": "presence-small",
            "data": {"type": "LimitReached", "error": "presence channel is full", "status": 403}
        })
    );
    // The connection stays usable.
    b.subscribe("after").await;
}

#[tokio::test]
async fn client_events_reach_others_only() {
    let server = TestServer::start().await;
    let ch = "presence-chat";
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.subscribe_presence(ch, "alice").await;
    b.subscribe_presence(ch, "bob").await;
    a.recv_event("pusher_internal:member_added").await;
    a.send(json!({"event": "client-typing", "channel": ch, "data": {"on": true}}))
        .await;
    let ev = b.recv_event("client-typing").await;
    assert_eq!(ev["data"], json!({"on": true}));
    assert_eq!(ev["user_id"], "alice");
    // Not echoed to the sender: the next thing it gets is a later published message
    // (both go through the same per-connection queue, in order).
    server.api().trigger(ch, "after", "sentinel").await;
    let next = a.recv().await;
    assert_eq!(
        (&next["event"], &next["data"]),
        (&json!("after"), &json!("sentinel"))
    );

    // Not on public channels, and not on channels one is not subscribed to.
    a.subscribe("public").await;
    a.send(json!({"event": "client-x", "channel": "public", "data": {}}))
        .await;
    assert_eq!(a.recv().await["event"], "pusher:error");
    a.send(json!({"event": "client-x", "channel": "private-other", "data": {}}))
        .await;
    assert_eq!(a.recv().await["event"], "pusher:error");
}

#[tokio::test]
async fn client_events_can_be_disabled_and_are_rate_limited() {
    let server = TestServer::with(|c| {
        let mut off = app("quiet", "quiet-key", "quiet-secret");
        off.client_events = false;
        c.apps.push(off);
        c.apps[0].client_events_per_sec = Some(3);
    })
    .await;
    let mut q = Client::connect(&server.ws_url("quiet-key")).await;
    let auth = crier_protocol::signature::channel_auth(
        "quiet-key",
        "quiet-secret",
        &q.socket_id,
        "private-q",
        None,
    );
    q.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-q", "auth": auth}}))
        .await;
    q.recv().await;
    q.send(json!({"event": "client-x", "channel": "private-q", "data": {}}))
        .await;
    assert_eq!(q.recv().await["event"], "pusher:error");

    let mut c = server.connect().await;
    c.subscribe_private("private-r").await;
    for _ in 0..4 {
        c.send(json!({"event": "client-x", "channel": "private-r", "data": {}}))
            .await;
    }
    let (error, code) = c.recv_close().await;
    assert_eq!(code, 4301);
    assert_eq!(error.unwrap()["data"]["code"], 4301);
}

#[tokio::test]
async fn signin_send_to_user_and_terminate() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    let user_data = json!({"id": "42", "name": "Ada"}).to_string();
    let sig = crier_protocol::signature::sign(
        SECRET,
        &crier_protocol::signature::user_auth_message(&c.socket_id, &user_data),
    );
    c.send(json!({"event": "pusher:signin", "data": {"auth": format!("{KEY}:{sig}"), "user_data": user_data}}))
        .await;
    assert_eq!(c.recv().await["event"], "pusher:signin_success");
    // pusher-js then subscribes to its own user channel: accepted; others' are not.
    assert_eq!(
        c.subscribe("#server-to-user-42").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert_eq!(
        c.subscribe("#server-to-user-43").await["event"],
        "pusher:subscription_error"
    );
    // sendToUser publishes to #server-to-user-<id>.
    server
        .api()
        .trigger("#server-to-user-42", "note", "hi")
        .await;
    let ev = c.recv_event("note").await;
    assert_eq!(ev["data"], "hi");
    let (status, _) = server
        .api()
        .post(
            &format!("/apps/{APP}/users/42/terminate_connections"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, code) = c.recv_close().await;
    assert_eq!(code, 4009);
}

#[tokio::test]
async fn bad_signin_closes_with_4009() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.send(json!({"event": "pusher:signin", "data": {"auth": "app-key:00", "user_data": "{\"id\":\"1\"}"}}))
        .await;
    assert_eq!(c.recv_close().await.1, 4009);
}

#[tokio::test]
async fn idle_connections_are_pinged_and_dead_ones_closed() {
    let server = TestServer::with(|c| {
        c.server.activity_timeout_secs = 1;
        c.server.pong_timeout_secs = 1;
    })
    .await;
    let mut c = server.connect().await;
    // The server pings after a second of silence; we do not answer.
    let ping = loop {
        let msg = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut c.ws))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(ping["event"], "pusher:ping");
    assert_eq!(c.recv_close().await.1, 4201);
}

#[tokio::test]
async fn oversized_client_event_is_refused() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe_private("private-big").await;
    let big = "x".repeat(11 * 1024);
    c.send(json!({"event": "client-big", "channel": "private-big", "data": big}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"event": "pusher:error", "data": {"message": "Client event data is too large", "code": null}})
    );
}

#[tokio::test]
async fn graceful_shutdown_sends_4200() {
    let mut server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe("news").await;
    let stop = tokio::spawn(async move {
        server.stop().await;
        server
    });
    let (_, code) = c.recv_close().await;
    assert_eq!(code, 4200);
    drop(c);
    stop.await.unwrap();
}

#[tokio::test]
async fn cache_channels_send_last_event_or_cache_miss() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe("cache-prices").await;
    assert_eq!(c.recv().await["event"], "pusher:cache_miss");
    server.api().trigger("cache-prices", "price", "1").await;
    server.api().trigger("cache-prices", "price", "2").await;
    let mut late = server.connect().await;
    late.subscribe("cache-prices").await;
    let cached = late.recv().await;
    assert_eq!(cached["event"], "price");
    assert_eq!(cached["data"], "2");
    server.api().trigger("cache-prices", "price", "3").await;
    assert_eq!(late.recv().await["data"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_cut_off_without_holding_back_others() {
    const EVENTS: usize = 2000;
    let server = TestServer::with(|c| {
        c.server.outbox_capacity = 64;
        // Long enough that the close, queued behind what the slow client has not read,
        // still reaches it once it reads again.
        c.server.write_timeout_secs = 30;
        c.history.max_messages = 10;
    })
    .await;
    let mut fast = server.connect().await;
    fast.subscribe("firehose").await;
    let mut slow = server.connect().await;
    slow.subscribe("firehose").await;
    let reader = tokio::spawn(async move {
        for i in 0..EVENTS {
            let ev = fast.recv().await;
            assert_eq!(
                ev["data"].as_str().unwrap().split(':').next().unwrap(),
                i.to_string()
            );
        }
    });
    let api = server.api();
    let pad = "x".repeat(8000);
    for b in 0..EVENTS / 10 {
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({"name": "e", "channel": "firehose", "data": format!("{}:{pad}", b * 10 + i)}))
            .collect();
        let (status, _) = api
            .post("/apps/1/batch_events", &json!({"batch": batch}))
            .await;
        assert_eq!(status, 200);
    }
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    // The slow client was disconnected as a slow consumer (4100) before it got
    // everything: what was queued, then pusher:error 4100, then the close frame.
    let mut got = 0;
    let mut error = None;
    let code = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut slow.ws)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["event"].as_str() {
                    Some("e") => got += 1,
                    Some("pusher:error") => error = Some(v),
                    _ => {}
                }
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame)))) => {
                break frame.map(|f| u16::from(f.code));
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("slow client ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(4100));
    assert_eq!(
        error.expect("pusher:error before the close")["data"]["code"],
        4100
    );
    assert!(got < EVENTS, "slow client got everything ({got})");
}
