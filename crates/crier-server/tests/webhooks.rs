//! Webhooks: Pusher's events, format and signature, and retries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use crier_server::config::WebhookConfig;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::mpsc;

struct Receiver {
    tx: mpsc::UnboundedSender<(HeaderMap, Value)>,
    /// Requests to refuse with 500 before accepting.
    refuse: AtomicUsize,
    /// Every request, refused or accepted: when it arrived and its body.
    log: Mutex<Vec<(Instant, String)>>,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers["x-pusher-signature"].to_str().unwrap();
    assert!(crier_protocol::signature::verify(
        SECRET,
        std::str::from_utf8(&body).unwrap(),
        sig
    ));
    assert_eq!(headers["x-pusher-key"], KEY);
    r.log
        .lock()
        .unwrap()
        .push((Instant::now(), String::from_utf8(body.to_vec()).unwrap()));
    if r.refuse.load(Ordering::SeqCst) > 0 {
        r.refuse.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.tx.send((headers, serde_json::from_slice(&body).unwrap()))
        .unwrap();
    StatusCode::OK
}

async fn receiver(refuse: usize) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Value)>) {
    let (url, rx, _) = logged_receiver(refuse).await;
    (url, rx)
}

/// A receiver that refuses the first `refuse` requests with 500, and its log.
async fn logged_receiver(
    refuse: usize,
) -> (
    String,
    mpsc::UnboundedReceiver<(HeaderMap, Value)>,
    Arc<Receiver>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Receiver {
        tx,
        refuse: AtomicUsize::new(refuse),
        log: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx, state)
}

/// Collects webhook events until `want` names have been seen.
async fn events(rx: &mut mpsc::UnboundedReceiver<(HeaderMap, Value)>, want: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < want {
        let (_, body) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("webhook in time")
            .unwrap();
        assert!(body["time_ms"].as_u64().unwrap() > 0);
        out.extend(body["events"].as_array().unwrap().iter().cloned());
    }
    out
}

#[tokio::test]
async fn channel_and_presence_events_are_posted_signed() {
    let (url, mut rx) = receiver(0).await;
    let server = TestServer::with(|c| {
        c.apps[0].webhooks = vec![WebhookConfig {
            url,
            events: vec![],
        }];
    })
    .await;
    let mut a = server.connect().await;
    a.subscribe_presence("presence-w", "u1").await;
    let got = events(&mut rx, 2).await;
    assert!(
        got.contains(&json!({"name": "channel_occupied", "channel": "presence-w"})),
        "{got:?}"
    );
    assert!(
        got.contains(&json!({"name": "member_added", "channel": "presence-w", "user_id": "u1"}))
    );

    let mut b = server.connect().await;
    b.subscribe_presence("presence-w", "u2").await;
    a.send(json!({"event": "client-hi", "channel": "presence-w", "data": {"x": 1}}))
        .await;
    let got = events(&mut rx, 2).await;
    let client = got
        .iter()
        .find(|e| e["name"] == "client_event")
        .expect("client_event");
    assert_eq!(client["event"], "client-hi");
    assert_eq!(client["user_id"], "u1");
    assert_eq!(client["socket_id"], a.socket_id.as_str());

    drop(a);
    drop(b);
    let got = events(&mut rx, 3).await;
    assert!(
        got.contains(&json!({"name": "channel_vacated", "channel": "presence-w"})),
        "{got:?}"
    );
}

#[tokio::test]
async fn only_selected_events_are_sent_and_failures_retried() {
    let (url, mut rx) = receiver(2).await;
    let server = TestServer::with(|c| {
        c.apps[0].webhooks = vec![WebhookConfig {
            url,
            events: vec!["channel_vacated".into()],
        }];
    })
    .await;
    let mut a = server.connect().await;
    a.subscribe("plain").await;
    drop(a);
    // Refused twice with 500, then accepted: only channel_vacated, never occupied.
    let got = events(&mut rx, 1).await;
    assert_eq!(
        got,
        vec![json!({"name": "channel_vacated", "channel": "plain"})]
    );
}

/// The waits README (Webhooks) promises between attempts: 200 ms, then doubling.
const BACKOFF_MS: [u64; 4] = [200, 400, 800, 1600];

/// Checks one target's log: 5 attempts at most, the same request each time, spaced by
/// the documented waits (plus what a loaded machine adds, but never the next wait).
fn assert_backoff(log: &[(Instant, String)], attempts: usize) {
    assert_eq!(log.len(), attempts, "attempts made");
    assert!(
        log.iter().all(|(_, body)| *body == log[0].1),
        "every attempt sends the same request"
    );
    for (i, (pair, want)) in log.windows(2).zip(BACKOFF_MS).enumerate() {
        let gap = pair[1].0 - pair[0].0;
        let want = Duration::from_millis(want);
        assert!(
            gap >= want && gap < want * 3 / 2 + Duration::from_millis(250),
            "wait before attempt {} was {gap:?}, not {want:?}",
            i + 2
        );
    }
}

/// README (Webhooks): a refused request is sent again after 200, 400, 800 and 1,600 ms,
/// 5 attempts in all; after the fifth failure it is dropped and counted in
/// `crier_webhooks_failed_total`. Each URL retries on its own.
#[tokio::test]
async fn refused_requests_are_retried_with_backoff_and_dropped_after_five_attempts() {
    let only = vec!["channel_occupied".to_owned()];
    let (late_url, mut late_rx, late) = logged_receiver(4).await;
    let (never_url, _never_rx, never) = logged_receiver(usize::MAX).await;
    let server = TestServer::with(|c| {
        c.apps[0].webhooks = vec![
            WebhookConfig {
                url: late_url,
                events: only.clone(),
            },
            WebhookConfig {
                url: never_url,
                events: only,
            },
        ];
    })
    .await;
    // No other test in this binary drops a webhook: the increase is this test's.
    let failed = metrics::value(&server, "crier_webhooks_failed_total", "").await;
    let mut a = server.connect().await;
    a.subscribe("retried").await;
    // Refused four times, the fifth attempt is accepted.
    let got = events(&mut late_rx, 1).await;
    assert_eq!(
        got,
        vec![json!({"name": "channel_occupied", "channel": "retried"})]
    );
    assert_backoff(&late.log.lock().unwrap(), 5);
    // Refused every time: given up after the fifth, counted once, no sixth attempt
    // (the sender counts only once its loop has ended).
    let reached =
        metrics::wait_increase(&server, "crier_webhooks_failed_total", "", failed, 1.0).await;
    assert_eq!(reached, failed + 1.0);
    let log = never.log.lock().unwrap().clone();
    assert_backoff(&log, 5);
    let events_of = |body: &str| serde_json::from_str::<Value>(body).unwrap()["events"].clone();
    assert_eq!(
        events_of(&log[0].1),
        events_of(&late.log.lock().unwrap()[0].1),
        "the same batch"
    );
    drop(a);
}
