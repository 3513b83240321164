//! Graceful shutdown: `shutdown_timeout_secs` bounds the whole drain, even when both
//! long-lived connections and plain HTTP requests outlive it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use support::busy::*;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const LIMIT_SECS: u64 = 3;

#[tokio::test]
async fn one_deadline_bounds_the_whole_shutdown() {
    let mut server = TestServer::with(|c| {
        c.server.shutdown_timeout_secs = LIMIT_SECS;
        // Nothing may end by itself before the shutdown deadline.
        c.server.write_timeout_secs = 60;
        c.server.handshake_timeout_secs = 60;
        c.history.max_messages = BUSY + 10;
        for app in &mut c.apps {
            app.max_event_size = Some(DATA_BYTES + 64);
        }
    })
    .await;

    // A WebSocket client that stops reading while 16 MiB are sent to it: its
    // connection task is stuck in a write that only write_timeout would end.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(KEY), stream)
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap();
    let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": "busy"}});
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    server.wait_subscriptions("busy", 1).await;
    publish_busy(&server, "busy", BUSY).await;

    // An HTTP request whose body never completes: hyper's graceful shutdown waits for
    // it, and only handshake_timeout would end it.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(
        b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"na",
    )
    .await
    .unwrap();

    let started = Instant::now();
    server.stop().await;
    let took = started.elapsed();
    // Two waits of LIMIT_SECS each took twice the setting before.
    assert!(
        took < Duration::from_secs(LIMIT_SECS * 2 - 1),
        "shutdown took {took:?} with shutdown_timeout_secs = {LIMIT_SECS}"
    );
    assert!(
        took >= Duration::from_secs(LIMIT_SECS - 1),
        "shutdown took only {took:?}: the test's connections did not hold it"
    );
    drop((ws, slow));
}
