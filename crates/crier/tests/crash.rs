//! Durability across `kill -9`: every acknowledged message is in history after a
//! restart on the same data directory, ids keep growing, the epoch is unchanged; a
//! damaged journal tail is cut off and the server still starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crier_protocol::signature;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod support;

use support::Crier;

const TORN_TAIL: &str = "torn or corrupt tail";

fn start(dir: &Path, fsync: &str) -> Crier {
    Crier::serve(dir, &["--fsync", fsync])
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One signed request over a fresh connection; returns status and JSON body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let qs = signature::sign_request(
        "app-key",
        "app-secret",
        method,
        path,
        params,
        body.as_bytes(),
        now(),
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path}?{qs} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let json = text.split("\r\n\r\n").nth(1).unwrap_or("null");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

fn publish(addr: &str, i: usize) {
    let body =
        serde_json::json!({"name": "n", "channel": "durable", "data": i.to_string()}).to_string();
    let (status, _) = request(addr, "POST", "/apps/1/events", &[], &body);
    assert_eq!(status, 200);
}

/// All retained (id, data) of the channel.
fn history(addr: &str) -> Vec<(String, String)> {
    let (status, page) = request(
        addr,
        "GET",
        "/apps/1/channels/durable/messages",
        &[("limit", "1000")],
        "",
    );
    assert_eq!(status, 200, "{page}");
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn split(id: &str) -> (String, u64) {
    let (e, o) = id.rsplit_once('-').unwrap();
    (e.to_owned(), o.parse().unwrap())
}

fn crash_and_check(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(dir.path(), fsync);
    let addr = child.addr.clone();
    for i in 0..300 {
        publish(&addr, i);
    }
    let before = history(&addr);
    assert_eq!(before.len(), 300);
    child.kill9();

    let mut child = start(dir.path(), fsync);
    let addr = child.addr.clone();
    let after = history(&addr);
    assert_eq!(
        after, before,
        "acknowledged messages lost or changed after kill -9 ({fsync})"
    );
    publish(&addr, 300);
    let last = history(&addr).pop().unwrap();
    let (epoch, offset) = split(&last.0);
    assert_eq!(epoch, split(&before[0].0).0, "epoch changed");
    assert_eq!(offset, 301);
    child.kill9();
}

/// A publish that reports failure instead of panicking: the server may be gone.
fn try_publish(addr: &str, data: &str) -> bool {
    let body = serde_json::json!({"name": "n", "channel": "durable", "data": data}).to_string();
    let qs = signature::sign_request(
        "app-key",
        "app-secret",
        "POST",
        "/apps/1/events",
        &[],
        body.as_bytes(),
        now(),
    );
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let sent = write!(
        s,
        "POST /apps/1/events?{qs} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut text = String::new();
    sent.is_ok() && s.read_to_string(&mut text).is_ok() && text.starts_with("HTTP/1.1 200")
}

/// Publishers keep going while the server is killed: whatever was acknowledged
/// before the kill, with requests still in flight at that moment, is in history
/// after the restart, in the order each publisher sent it.
fn crash_mid_publish_and_check(fsync: &str) {
    const PUBLISHERS: usize = 4;
    const ACKED_BEFORE_KILL: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(dir.path(), fsync);
    let addr = child.addr.clone();
    let (acks, acked) = std::sync::mpsc::channel::<String>();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (addr, acks) = (addr.clone(), acks.clone());
            std::thread::spawn(move || {
                // Stops at the first failure: the server is gone.
                for i in 0.. {
                    let data = format!("{p}:{i}");
                    if !try_publish(&addr, &data) || acks.send(data).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(acks);
    let mut acknowledged: Vec<String> = acked.iter().take(ACKED_BEFORE_KILL).collect();
    child.kill9();
    for p in publishers {
        p.join().unwrap();
    }
    acknowledged.extend(acked.try_iter());
    assert!(
        acknowledged.len() >= ACKED_BEFORE_KILL,
        "publishing failed early"
    );

    let mut child = start(dir.path(), fsync);
    let addr = child.addr.clone();
    let stored: Vec<String> = history(&addr).into_iter().map(|(_, d)| d).collect();
    for data in &acknowledged {
        assert!(
            stored.contains(data),
            "acknowledged {data} missing after kill -9 ({fsync}); {} stored",
            stored.len()
        );
    }
    for p in 0..PUBLISHERS {
        let seq: Vec<u64> = stored
            .iter()
            .filter_map(|d| d.strip_prefix(&format!("{p}:")))
            .map(|i| i.parse().unwrap())
            .collect();
        assert!(
            seq.windows(2).all(|w| w[1] == w[0] + 1),
            "publisher {p} out of order or with holes: {seq:?}"
        );
    }
    child.kill9();
}

#[test]
fn kill_9_mid_publish_loses_nothing_acknowledged_with_grouped_fsync() {
    crash_mid_publish_and_check("grouped");
}

#[test]
fn kill_9_mid_publish_loses_nothing_acknowledged_with_always_fsync() {
    crash_mid_publish_and_check("always");
}

#[test]
fn kill_9_loses_nothing_acknowledged_with_grouped_fsync() {
    crash_and_check("grouped");
}

#[test]
fn kill_9_loses_nothing_acknowledged_with_always_fsync() {
    crash_and_check("always");
}

fn newest_file(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            let md = e.metadata().ok()?;
            if md.is_dir() {
                stack.push(p);
            } else if md.len() > 16 && p.extension().is_some_and(|x| x == "jnl") {
                let t = md.modified().ok()?;
                if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                    best = Some((t, p));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

#[test]
fn a_truncated_tail_is_cut_off_and_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(dir.path(), "grouped");
    let addr = child.addr.clone();
    for i in 0..50 {
        publish(&addr, i);
    }
    child.kill9();
    let journal = newest_file(&dir.path().join("history")).expect("history files");
    // The journal is preallocated with zeros: cut 7 bytes off the data itself, not
    // off the padding, which a restart drops without losing anything.
    let bytes = std::fs::read(&journal).unwrap();
    let data_end = bytes.iter().rposition(|b| *b != 0).unwrap() as u64 + 1;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    f.set_len(data_end - 7).unwrap();
    drop(f);

    let mut child = start(dir.path(), "grouped");
    let addr = child.addr.clone();
    child
        .stderr
        .wait_for("a warning about the cut tail", support::DEADLINE, |l| {
            l.contains(TORN_TAIL)
        });
    let after = history(&addr);
    // A prefix survives (the torn record and anything after it are gone) ...
    for (i, (_, data)) in after.iter().enumerate() {
        assert_eq!(data, &i.to_string());
    }
    assert!(after.len() >= 40, "too much lost: {}", after.len());
    // ... and new messages get ids after everything that survived.
    publish(&addr, 999);
    let last = history(&addr).pop().unwrap();
    assert_eq!(last.1, "999");
    if let Some(prev) = after.last() {
        assert!(split(&last.0).1 > split(&prev.0).1);
    }
    child.kill9();
}

#[test]
fn a_clean_restart_logs_no_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let child = start(dir.path(), "grouped");
        publish(&child.addr, round);
        let lines = child.stderr_until_exit();
        assert!(
            !lines.iter().any(|l| l.contains(TORN_TAIL)),
            "round {round}: a clean shutdown was reported as a torn journal: {lines:?}"
        );
    }
    let child = start(dir.path(), "grouped");
    assert_eq!(history(&child.addr).len(), 2);
    let lines = child.stderr_until_exit();
    assert!(!lines.iter().any(|l| l.contains(TORN_TAIL)), "{lines:?}");
}
