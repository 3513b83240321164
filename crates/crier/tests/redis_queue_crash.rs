//! The Redis queue survives `kill -9` of Crier mid-stream: after a restart every item
//! is in history at least once and the processing list is empty.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crier_protocol::signature;
use redis::Commands;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod support;

use crier_testkit::RedisServer;
use support::{crier, Crier};

const ITEMS: usize = 3000;

fn start(config: &Path, data: &Path) -> Crier {
    let mut cmd = crier();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--udp-listen",
        "",
        "--history-max-messages",
        "100000",
    ])
    .arg("--config")
    .arg(config)
    .arg("--data-dir")
    .arg(data);
    Crier::spawn(cmd)
}

/// Data of every message in the channel's history (paging through it).
fn history(addr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut since = String::new();
    loop {
        let path = "/apps/1/channels/jobs/messages";
        let mut params = vec![("limit", "1000")];
        if !since.is_empty() {
            params.push(("since", since.as_str()));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let qs = signature::sign_request("app-key", "app-secret", "GET", path, &params, b"", now);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET {path}?{qs} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let page: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let messages = page["messages"].as_array().unwrap();
        if messages.is_empty() {
            return out;
        }
        out.extend(
            messages
                .iter()
                .map(|m| m["data"].as_str().unwrap().to_owned()),
        );
        since = page["cursor"].as_str().unwrap().to_owned();
    }
}

#[test]
fn kill_9_mid_queue_loses_no_item() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let url = redis.url();
    let config = dir.path().join("crier.toml");
    std::fs::write(
        &config,
        format!("[ingest.redis_queue]\nurl = \"{url}\"\nkey = \"jobs\"\n"),
    )
    .unwrap();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..ITEMS {
        let item = serde_json::json!({"app_id": "1", "name": "e", "channel": "jobs", "data": i.to_string()});
        let _: () = conn.lpush("jobs", item.to_string()).unwrap();
    }
    let data = dir.path().join("data");
    let mut child = start(&config, &data);
    let addr = child.addr.clone();
    // Kill it while it is consuming.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: usize = conn.llen("jobs").unwrap();
        if left < ITEMS * 2 / 3 {
            break;
        }
        assert!(Instant::now() < deadline, "consumer made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = history(&addr);
    child.kill9();

    let mut child = start(&config, &data);
    let addr = child.addr.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: usize = conn.llen("jobs").unwrap();
        let processing: usize = conn.llen("jobs:processing").unwrap();
        if left == 0 && processing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue not drained: {left} queued, {processing} processing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen: HashSet<String> = history(&addr).into_iter().collect();
    let missing: Vec<usize> = (0..ITEMS)
        .filter(|i| !seen.contains(&i.to_string()))
        .collect();
    assert!(missing.is_empty(), "items lost across kill -9: {missing:?}");
    child.kill9();
}
