//! UDP ingest: valid and invalid datagrams, signatures, and a burst from several
//! sockets delivered exactly once, in order per socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use support::*;
use tokio::net::UdpSocket;

async fn udp_server(require_signature: bool) -> (TestServer, SocketAddr) {
    let server = TestServer::with(|c| {
        c.ingest.udp.listen = "127.0.0.1:0".into();
        c.ingest.udp.require_signature = require_signature;
        c.history.max_messages = 10_000;
    })
    .await;
    let addr = server
        .running
        .as_ref()
        .unwrap()
        .udp_addr
        .expect("udp listening");
    (server, addr)
}

const DROPPED: &str = "crier_ingest_dropped_total";

fn reason(r: &str) -> String {
    format!("reason=\"{r}\"")
}

#[tokio::test]
async fn datagrams_are_published_and_bad_ones_dropped_and_counted() {
    let (server, addr) = udp_server(false).await;
    let mut c = server.connect().await;
    c.subscribe("udp").await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = |v: Vec<u8>| {
        let sock = &sock;
        async move {
            sock.send_to(&v, addr).await.unwrap();
        }
    };
    send(
        json!({"app_id": "1", "name": "e", "channel": "udp", "data": "plain"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(c.recv().await["data"], "plain");
    // Object data is serialized; several channels at once.
    send(
        json!({"app_id": "1", "name": "e", "channels": ["udp", "other"], "data": {"k": 1}})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(c.recv().await["data"], "{\"k\":1}");

    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "invalid_json"),
        (
            json!({"name": "e", "channel": "udp", "data": "x"})
                .to_string()
                .into_bytes(),
            "missing_app_id",
        ),
        (
            json!({"app_id": "nope", "name": "e", "channel": "udp", "data": "x"})
                .to_string()
                .into_bytes(),
            "unknown_app",
        ),
        (
            json!({"app_id": "1", "name": "e", "channel": "bad name", "data": "x"})
                .to_string()
                .into_bytes(),
            "invalid_channel",
        ),
        (
            json!({"app_id": "1", "channel": "udp", "data": "x"})
                .to_string()
                .into_bytes(),
            "invalid_event",
        ),
        (
            json!({"app_id": "1", "name": "e", "channel": "udp", "data": "x".repeat(20_000)})
                .to_string()
                .into_bytes(),
            "data_too_large",
        ),
        (
            format!(
                "{} {}",
                "00".repeat(32),
                json!({"app_id": "1", "name": "e", "channel": "udp", "data": "x"})
            )
            .into_bytes(),
            "bad_signature",
        ),
        (vec![b'{'; 40_000], "oversize"),
    ];
    // Counters are the process's (support/metrics.rs): each reason is checked by its
    // increase over this test's own starting value.
    let mut before = Vec::new();
    for (_, r) in &bad {
        before.push(metrics::value(&server, DROPPED, &reason(r)).await);
    }
    for (datagram, _) in &bad {
        send(datagram.clone()).await;
    }
    for ((_, r), before) in bad.iter().zip(before) {
        metrics::wait_increase(&server, DROPPED, &reason(r), before, 1.0).await;
    }
    // The listener keeps working, and nothing bad was published.
    let body = json!({"app_id": "1", "name": "e", "channel": "udp", "data": "after"}).to_string();
    let sig = crier_protocol::signature::sign(SECRET, &body);
    send(format!("{sig} {body}").into_bytes()).await;
    assert_eq!(c.recv().await["data"], "after");
}

#[tokio::test]
async fn signatures_can_be_required() {
    let (server, addr) = udp_server(true).await;
    let mut c = server.connect().await;
    c.subscribe("signed").await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let missing = reason("missing_signature");
    let before = metrics::value(&server, DROPPED, &missing).await;
    let body =
        json!({"app_id": "1", "name": "e", "channel": "signed", "data": "unsigned"}).to_string();
    sock.send_to(body.as_bytes(), addr).await.unwrap();
    metrics::wait_increase(&server, DROPPED, &missing, before, 1.0).await;
    let body =
        json!({"app_id": "1", "name": "e", "channel": "signed", "data": "signed"}).to_string();
    let sig = crier_protocol::signature::sign(SECRET, &body);
    sock.send_to(format!("{sig} {body}").as_bytes(), addr)
        .await
        .unwrap();
    assert_eq!(c.recv().await["data"], "signed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_several_sockets_arrives_once_in_order_per_socket() {
    const SOCKETS: usize = 4;
    const EACH: usize = 1500;
    let (server, addr) = udp_server(false).await;
    let mut c = server.connect().await;
    c.subscribe("burst").await;
    let senders: Vec<_> = (0..SOCKETS)
        .map(|s| {
            tokio::spawn(async move {
                let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                for i in 0..EACH {
                    let d = json!({"app_id": "1", "name": "e", "channel": "burst", "data": format!("{s}:{i}")});
                    sock.send_to(d.to_string().as_bytes(), addr).await.unwrap();
                    if i % 100 == 99 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let mut next: HashMap<String, usize> = HashMap::new();
    for _ in 0..SOCKETS * EACH {
        let ev: Value = c.recv().await;
        let (s, i) = ev["data"].as_str().unwrap().split_once(':').unwrap();
        let n = next.entry(s.to_owned()).or_default();
        assert_eq!(
            i.parse::<usize>().unwrap(),
            *n,
            "socket {s} out of order or duplicated"
        );
        *n += 1;
    }
    assert!(next.values().all(|n| *n == EACH));
}
