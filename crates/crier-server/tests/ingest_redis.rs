//! Redis queue ingest against a real redis-server: order, volume, dead letters, items
//! left in processing by a crash, and Redis going away while Crier runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ::redis::Commands;
use crier_server::config::RedisQueueConfig;
use serde_json::{json, Value};
use support::redis::RedisServer;
use support::*;

const KEY: &str = "crier:publish";

fn item(channel: &str, data: &str) -> String {
    json!({"app_id": "1", "name": "e", "channel": channel, "data": data}).to_string()
}

async fn server_for(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::with(move |c| {
        c.ingest.redis_queue = Some(RedisQueueConfig {
            url,
            key: KEY.into(),
            consumer: None,
        });
        c.history.max_messages = 10_000;
    })
    .await
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_published_in_order_and_removed() {
    let redis = RedisServer::start();
    let server = server_for(&redis).await;
    let mut c = server.connect().await;
    c.subscribe("q").await;
    let mut conn = redis.conn();
    for i in 0..3000 {
        let _: () = conn.lpush(KEY, item("q", &i.to_string())).unwrap();
    }
    for i in 0..3000 {
        assert_eq!(c.recv().await["data"], i.to_string());
    }
    until("empty lists", || {
        let q: usize = conn.llen(KEY).unwrap();
        let p: usize = conn.llen(format!("{KEY}:processing")).unwrap();
        q == 0 && p == 0
    })
    .await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn poison_items_go_to_the_dead_letter_list() {
    let redis = RedisServer::start();
    let server = server_for(&redis).await;
    let mut c = server.connect().await;
    c.subscribe("q").await;
    let mut conn = redis.conn();
    // Each item, and the `reason` and `error` its dead letter must carry.
    let poison = [
        (
            "{nope".to_owned(),
            "invalid_json",
            "key must be a string at line 1 column 2",
        ),
        (
            json!({"app_id": "ghost", "name": "e", "channel": "q", "data": "x"}).to_string(),
            "unknown_app",
            "unknown app \"ghost\"",
        ),
        (
            item("bad name", "x"),
            "invalid_channel",
            "invalid channel: channel name \"bad name\" contains characters other than \
             A-Z a-z 0-9 _ - = @ , . ;",
        ),
        (
            json!({"app_id": "1", "channel": "q", "data": "x"}).to_string(),
            "invalid_event",
            "missing event name",
        ),
    ];
    let before = now_ms();
    for (p, _, _) in &poison {
        let _: () = conn.lpush(KEY, p).unwrap();
    }
    let _: () = conn.lpush(KEY, item("q", "good")).unwrap();
    assert_eq!(c.recv().await["data"], "good");
    let after = now_ms();
    let dead: Vec<String> = conn.lrange(format!("{KEY}:dead"), 0, -1).unwrap();
    assert_eq!(dead.len(), poison.len());
    // LPUSH: the newest letter first.
    for (letter, (p, reason, error)) in dead.iter().rev().zip(&poison) {
        let v: Value = serde_json::from_str(letter).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["at", "error", "item", "reason"], "{letter}");
        assert_eq!(v["item"], p.as_str(), "the item exactly as queued");
        assert_eq!(v["reason"], *reason, "{letter}");
        assert_eq!(v["error"], *error, "{letter}");
        // Unix time in milliseconds: seconds or microseconds fall outside the window.
        let at = v["at"].as_u64().unwrap();
        assert!(
            (before..=after).contains(&at),
            "at {at} is not Unix ms between {before} and {after}"
        );
    }
    let p: usize = conn.llen(format!("{KEY}:processing")).unwrap();
    assert_eq!(p, 0);
}

#[tokio::test]
async fn items_left_in_processing_by_a_crash_are_published_first() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    // What a crash between BLMOVE and LREM leaves: oldest at the right end.
    let _: () = conn
        .lpush(format!("{KEY}:processing"), item("q", "left-1"))
        .unwrap();
    let _: () = conn
        .lpush(format!("{KEY}:processing"), item("q", "left-2"))
        .unwrap();
    let _: () = conn.lpush(KEY, item("q", "queued")).unwrap();
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = base_config(dir.path());
    config.ingest.redis_queue = Some(RedisQueueConfig {
        url: redis.url(),
        key: KEY.into(),
        consumer: None,
    });
    let server = TestServer::start_in(dir, config).await;
    // History has them even though nobody was subscribed.
    let api = server.api();
    let deadline = tokio::time::Instant::now() + WAIT;
    let data = loop {
        let (_, page) = api.get("/apps/1/channels/q/messages", &[]).await;
        let data: Vec<String> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"].as_str().unwrap().to_owned())
            .collect();
        if data.len() == 3 || tokio::time::Instant::now() > deadline {
            break data;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(data, ["left-1", "left-2", "queued"]);
    let p: usize = conn.llen(format!("{KEY}:processing")).unwrap();
    assert_eq!(p, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_while_crier_runs() {
    let mut redis = RedisServer::start();
    let server = server_for(&redis).await;
    let mut c = server.connect().await;
    c.subscribe("q").await;
    let _: () = redis.conn().lpush(KEY, item("q", "before")).unwrap();
    assert_eq!(c.recv().await["data"], "before");
    redis.stop();
    // The server keeps serving while Redis is gone.
    let (status, _) = server.api().trigger("q", "e", "via-api").await;
    assert_eq!(status, 200);
    assert_eq!(c.recv().await["data"], "via-api");
    let health = reqwest::get(format!("http://{}/health", server.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    redis.restart();
    let _: () = redis.conn().lpush(KEY, item("q", "after")).unwrap();
    assert_eq!(c.recv().await["data"], "after");
}
