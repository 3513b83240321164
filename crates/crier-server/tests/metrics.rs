//! `/metrics` as Prometheus reads it: every family described and present from start,
//! and the values that known traffic must move. Parsed with `prometheus-parse`, not by
//! string matching, so a malformed exposition fails here.
//!
//! The recorder is global to the process: this file holds one test and one server, and
//! still compares deltas, so it holds if another test is ever added beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use prometheus_parse::{Scrape, Value};
use std::time::Duration;
use support::*;
use tokio::net::UdpSocket;

/// Every family of SPEC §8, with the type Prometheus must see.
const FAMILIES: &[(&str, &str)] = &[
    ("crier_build_info", "gauge"),
    ("crier_connections", "gauge"),
    ("crier_connections_opened_total", "counter"),
    ("crier_connections_closed_total", "counter"),
    ("crier_subscriptions", "gauge"),
    ("crier_channels", "gauge"),
    ("crier_messages_published_total", "counter"),
    ("crier_messages_delivered_total", "counter"),
    ("crier_replayed_messages_total", "counter"),
    ("crier_bytes_received_total", "counter"),
    ("crier_bytes_sent_total", "counter"),
    ("crier_slow_consumer_disconnects_total", "counter"),
    ("crier_rejected_requests_total", "counter"),
    ("crier_limit_hits_total", "counter"),
    ("crier_client_errors_total", "counter"),
    ("crier_ingest_dropped_total", "counter"),
    ("crier_webhooks_sent_total", "counter"),
    ("crier_webhooks_failed_total", "counter"),
    ("crier_webhook_events_dropped_total", "counter"),
    ("crier_history_size_bytes", "gauge"),
    ("crier_history_messages", "gauge"),
    ("crier_history_healthy", "gauge"),
    ("crier_history_write_failures_total", "counter"),
    ("crier_delivery_latency_seconds", "histogram"),
    ("crier_http_request_duration_seconds", "histogram"),
    ("crier_runtime_alive_tasks", "gauge"),
];

struct Metrics {
    text: String,
    scrape: Scrape,
}

impl Metrics {
    async fn scrape(server: &TestServer) -> Self {
        let res = reqwest::get(format!("http://{}/metrics", server.addr))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        Self { text, scrape }
    }

    /// The sum of the samples of `name` whose labels include `labels`; for a
    /// histogram, its count (the `+Inf` bucket).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0.0, |b| b.count),
                Value::Summary(_) => panic!("{name} is a summary"),
            })
            .sum()
    }
}

/// Scrapes until `check` holds (the server counts a write after the client may already
/// have read it), failing after `WAIT`.
async fn eventually(server: &TestServer, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = Metrics::scrape(server).await;
        if check(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never true: {what}\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_family_is_there_from_start_and_moves_with_traffic() {
    let server = TestServer::with(|c| c.ingest.udp.listen = "127.0.0.1:0".into()).await;
    let udp = server.running.as_ref().unwrap().udp_addr.unwrap();

    // At start: described, typed, and with at least one series.
    let start = Metrics::scrape(&server).await;
    for (name, kind) in FAMILIES {
        assert!(
            start.scrape.docs.get(*name).is_some_and(|h| !h.is_empty()),
            "{name} has no HELP\n{}",
            start.text
        );
        assert!(
            start.text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not typed {kind}\n{}",
            start.text
        );
        assert!(
            start.scrape.samples.iter().any(|s| s.metric == *name),
            "{name} has no series at start\n{}",
            start.text
        );
    }
    assert_eq!(
        start.value(
            "crier_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for transport in ["ws", "sse", "poll", "xhr"] {
        let t = [("transport", transport)];
        assert!(start
            .scrape
            .samples
            .iter()
            .any(|s| s.metric == "crier_messages_delivered_total"
                && s.labels.get("transport") == Some(transport)));
        assert_eq!(
            start.value(
                "crier_connections",
                &[("transport", transport), ("app", APP)]
            ),
            0.0
        );
        assert_eq!(start.value("crier_delivery_latency_seconds", &t), 0.0);
    }
    for ingest in ["http", "udp", "redis_queue", "client_event"] {
        assert!(start
            .scrape
            .samples
            .iter()
            .any(|s| s.metric == "crier_messages_published_total"
                && s.labels.get("ingest") == Some(ingest)
                && s.labels.get("app") == Some(APP)));
    }

    // Known traffic: N WebSocket subscribers and one SSE stream on a channel, M HTTP
    // publishes, and one datagram that is not JSON.
    const N: usize = 3;
    const M: usize = 2;
    let mut clients = Vec::new();
    for _ in 0..N {
        let mut c = server.connect().await;
        c.subscribe("metered").await;
        clients.push(c);
    }
    let mut sse = reqwest::get(format!(
        "http://{}/app/{KEY}/sse?channels=metered",
        server.addr
    ))
    .await
    .unwrap();
    assert_eq!(sse.status(), 200);
    server.wait_subscriptions("metered", N as u64 + 1).await;
    let open = Metrics::scrape(&server).await;
    let ws_open = [("transport", "ws"), ("app", APP)];
    assert_eq!(
        open.value("crier_connections", &ws_open) - start.value("crier_connections", &ws_open),
        N as f64
    );
    assert_eq!(
        open.value("crier_connections", &[("transport", "sse"), ("app", APP)])
            - start.value("crier_connections", &[("transport", "sse"), ("app", APP)]),
        1.0
    );
    assert_eq!(
        open.value("crier_connections_opened_total", &[("transport", "ws")])
            - start.value("crier_connections_opened_total", &[("transport", "ws")]),
        N as f64
    );
    assert!(open.value("crier_channels", &[]) >= 1.0);
    assert!(
        open.value("crier_subscriptions", &[]) - start.value("crier_subscriptions", &[])
            >= N as f64 + 1.0
    );

    for i in 0..M {
        let (status, body) = server
            .api()
            .trigger("metered", "tick", &format!("{i}"))
            .await;
        assert_eq!((status, body), (200, serde_json::json!({})));
    }
    for c in &mut clients {
        for i in 0..M {
            assert_eq!(c.recv_event("tick").await["data"], format!("{i}"));
        }
    }
    let mut sse_text = String::new();
    while sse_text.matches("event: message").count() < M {
        let chunk = tokio::time::timeout(WAIT, sse.chunk())
            .await
            .expect("SSE event in time")
            .unwrap()
            .expect("stream open");
        sse_text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(b"this is not json", udp).await.unwrap();
    // A long-poll that does not wait: opened, answered, closed as completed.
    let res = reqwest::get(format!(
        "http://{}/app/{KEY}/poll?channels=metered&timeout=0",
        server.addr
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);

    let delta = |now: &Metrics, name: &str, labels: &[(&str, &str)]| {
        now.value(name, labels) - start.value(name, labels)
    };
    let ws = [("transport", "ws")];
    let sse_t = [("transport", "sse")];
    let dropped = [("ingest", "udp"), ("reason", "invalid_json")];
    let after = eventually(
        &server,
        "deliveries, latency and the bad datagram counted",
        |m| {
            delta(m, "crier_messages_delivered_total", &ws) == (N * M) as f64
                && delta(m, "crier_messages_delivered_total", &sse_t) == M as f64
                && delta(m, "crier_delivery_latency_seconds", &ws) >= 1.0
                && delta(m, "crier_delivery_latency_seconds", &sse_t) >= 1.0
                && delta(m, "crier_ingest_dropped_total", &dropped) == 1.0
        },
    )
    .await;
    assert_eq!(
        delta(
            &after,
            "crier_messages_published_total",
            &[("ingest", "http"), ("app", APP)]
        ),
        M as f64
    );
    // One latency sample per socket write: at most one per delivery.
    assert!(delta(&after, "crier_delivery_latency_seconds", &ws) <= (N * M) as f64);
    assert!(delta(&after, "crier_bytes_sent_total", &ws) > 0.0);
    assert!(delta(&after, "crier_bytes_received_total", &ws) > 0.0);
    assert!(delta(&after, "crier_bytes_sent_total", &sse_t) > 0.0);
    let poll = [("transport", "poll")];
    assert_eq!(delta(&after, "crier_connections_opened_total", &poll), 1.0);
    assert_eq!(
        delta(
            &after,
            "crier_connections_closed_total",
            &[("transport", "poll"), ("reason", "completed")]
        ),
        1.0
    );
    assert!(delta(&after, "crier_bytes_sent_total", &poll) > 0.0);
    assert!(
        delta(
            &after,
            "crier_http_request_duration_seconds",
            &[("endpoint", "events")]
        ) >= M as f64
    );
    assert!(after.value("crier_history_size_bytes", &[]) > 0.0);
    assert!(after.value("crier_history_messages", &[]) >= M as f64);

    // A refused request is counted with its status and reason.
    let (status, _) = server.api().trigger("bad channel!", "e", "x").await;
    assert_eq!(status, 400);
    let rejected = [("status", "400"), ("reason", "bad_request")];
    let m = Metrics::scrape(&server).await;
    assert_eq!(delta(&m, "crier_rejected_requests_total", &rejected), 1.0);

    // Closing: the gauge comes back, the closes are counted with their reason.
    drop(clients);
    drop(sse);
    let ws_closed = [("transport", "ws"), ("reason", "client")];
    let sse_closed = [("transport", "sse"), ("reason", "client")];
    eventually(&server, "connections closed and counted", |m| {
        delta(m, "crier_connections", &ws_open) == 0.0
            && delta(m, "crier_connections_closed_total", &ws_closed) == N as f64
            && delta(m, "crier_connections_closed_total", &sse_closed) == 1.0
            && delta(
                m,
                "crier_connections",
                &[("transport", "sse"), ("app", APP)],
            ) == 0.0
    })
    .await;
}
