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
use std::sync::Arc;
use support::*;
use tokio::sync::mpsc;

struct Receiver {
    tx: mpsc::UnboundedSender<(HeaderMap, Value)>,
    /// Requests to refuse with 500 before accepting.
    refuse: AtomicUsize,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers["x-pusher-signature"].to_str().unwrap();
    assert!(crier_protocol::signature::verify(
        SECRET,
        std::str::from_utf8(&body).unwrap(),
        sig
    ));
    assert_eq!(headers["x-pusher-key"], KEY);
    if r.refuse.load(Ordering::SeqCst) > 0 {
        r.refuse.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.tx.send((headers, serde_json::from_slice(&body).unwrap()))
        .unwrap();
    StatusCode::OK
}

async fn receiver(refuse: usize) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Receiver {
        tx,
        refuse: AtomicUsize::new(refuse),
    });
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
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
