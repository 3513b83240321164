//! Message ids, history and recovery over WebSocket and the `messages` endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use support::*;

async fn publish_n(api: &Api, channel: &str, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let (status, _) = api.trigger(channel, "n", &i.to_string()).await;
        assert_eq!(status, 200);
        ids.push(i.to_string());
    }
    ids
}

fn offset(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

#[tokio::test]
async fn ids_grow_per_channel() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe("a").await;
    c.subscribe("b").await;
    let api = server.api();
    api.trigger("a", "e", "1").await;
    api.trigger("b", "e", "1").await;
    api.trigger("a", "e", "2").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = c.recv().await;
        got.push((
            ev["channel"].as_str().unwrap().to_owned(),
            offset(ev["id"].as_str().unwrap()),
        ));
    }
    assert_eq!(got, vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
}

#[tokio::test]
async fn messages_endpoint_pages_through_history() {
    let server = TestServer::start().await;
    let api = server.api();
    let (status, empty) = api.get("/apps/1/channels/log/messages", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(empty["messages"], json!([]));
    assert!(empty["cursor"].is_string());
    publish_n(&api, "log", 0, 25).await;
    let mut cursor = String::new();
    let mut seen = Vec::new();
    loop {
        let mut params = vec![("limit", "10")];
        if !cursor.is_empty() {
            params.push(("since", cursor.as_str()));
        }
        let (status, page) = api.get("/apps/1/channels/log/messages", &params).await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap().clone();
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            assert_eq!(m["channel"], "log");
            assert_eq!(m["event"], "n");
            seen.push(m["data"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen, (0..25).map(|i| i.to_string()).collect::<Vec<_>>());
    let (status, _) = api
        .get("/apps/1/channels/log/messages", &[("since", "garbage")])
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .get("/apps/1/channels/log/messages", &[("limit", "0")])
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn retention_keeps_the_last_n() {
    let server = TestServer::with(|c| c.history.max_messages = 5).await;
    let api = server.api();
    publish_n(&api, "short", 0, 12).await;
    let (_, page) = api.get("/apps/1/channels/short/messages", &[]).await;
    let data: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["7", "8", "9", "10", "11"]);
}

#[tokio::test]
async fn subscribe_with_since_replays_missed_messages() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.connect().await;
    c.subscribe("feed").await;
    publish_n(&api, "feed", 0, 3).await;
    let mut last = String::new();
    for _ in 0..3 {
        last = c.recv().await["id"].as_str().unwrap().to_owned();
    }
    drop(c);
    publish_n(&api, "feed", 3, 4).await;
    let mut back = server.connect().await;
    back.send(json!({"event": "pusher:subscribe", "data": {"channel": "feed", "since": last}}))
        .await;
    assert_eq!(
        back.recv().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    for i in 3..7 {
        assert_eq!(back.recv().await["data"], i.to_string());
    }
    api.trigger("feed", "n", "7").await;
    assert_eq!(back.recv().await["data"], "7");
}

#[tokio::test]
async fn stale_or_foreign_cursors_get_a_gap_first() {
    let server = TestServer::with(|c| c.history.max_messages = 3).await;
    let api = server.api();
    let mut c = server.connect().await;
    c.subscribe("g").await;
    publish_n(&api, "g", 0, 1).await;
    let first = c.recv().await["id"].as_str().unwrap().to_owned();
    publish_n(&api, "g", 1, 9).await;
    for since in [first.clone(), "otherepoch-1".to_owned()] {
        let mut back = server.connect().await;
        back.send(json!({"event": "pusher:subscribe", "data": {"channel": "g", "since": since}}))
            .await;
        assert_eq!(
            back.recv().await["event"],
            "pusher_internal:subscription_succeeded"
        );
        let gap = back.recv().await;
        assert_eq!(gap["event"], "crier:gap", "{gap}");
        assert_eq!(gap["channel"], "g");
        for i in 7..10 {
            assert_eq!(back.recv().await["data"], i.to_string());
        }
    }
}

/// Many publishers while a subscriber resumes again and again: every message exactly
/// once, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_while_publishing_has_no_gap_and_no_duplicate() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 500;
    let server = TestServer::with(|c| c.history.max_messages = 10_000).await;
    let api = std::sync::Arc::new(server.api());
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let (status, _) = api.trigger("race", "n", &format!("{p}:{i}")).await;
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    let mut seen: Vec<u64> = Vec::new();
    let mut per_publisher: HashMap<String, usize> = HashMap::new();
    let mut cursor: Option<String> = None;
    let total = PUBLISHERS * EACH;
    let mut rounds = 0;
    while seen.len() < total {
        rounds += 1;
        let mut c = server.connect().await;
        let mut data = json!({"channel": "race"});
        if let Some(since) = &cursor {
            data["since"] = json!(since);
        } else {
            data["since"] = json!(format!("{}-0", epoch_of(&server).await));
        }
        c.send(json!({"event": "pusher:subscribe", "data": data}))
            .await;
        assert_eq!(
            c.recv().await["event"],
            "pusher_internal:subscription_succeeded"
        );
        // Take a slice of messages, then drop the connection mid-stream.
        let take = 97 + rounds * 13;
        for _ in 0..take {
            if seen.len() == total {
                break;
            }
            let ev: Value = c.recv().await;
            assert_ne!(ev["event"], "crier:gap", "history covers everything here");
            let id = ev["id"].as_str().unwrap();
            let off = offset(id);
            if let Some(&prev) = seen.last() {
                assert_eq!(off, prev + 1, "gap or duplicate after {prev}: got {off}");
            } else {
                assert_eq!(off, 1);
            }
            seen.push(off);
            let (p, i) = ev["data"].as_str().unwrap().split_once(':').unwrap();
            let next = per_publisher.entry(p.to_owned()).or_default();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                *next,
                "publisher {p} out of order"
            );
            *next += 1;
            cursor = Some(id.to_owned());
        }
    }
    for p in publishers {
        p.await.unwrap();
    }
    assert_eq!(seen.len(), total);
    assert!(rounds > 3);
}

async fn epoch_of(server: &TestServer) -> String {
    let (_, page) = server
        .api()
        .get("/apps/1/channels/race/messages", &[("limit", "1")])
        .await;
    let cursor = page["cursor"].as_str().unwrap();
    cursor.rsplit_once('-').unwrap().0.to_owned()
}
