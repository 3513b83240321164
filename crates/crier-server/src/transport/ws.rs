//! The Pusher protocol over WebSocket. One task per connection reads client frames
//! into the session, drains the session's outbox into the socket (several queued
//! frames per flush), pings on silence and closes with Pusher's codes.

use crate::server::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use crier_core::outbox::{outbox, Disconnect, Next};
use crier_core::session::{Delivery, Session};
use crier_core::App;
use crier_protocol::{frames, ErrorCode};
use futures_util::SinkExt;
use serde::Deserialize;
use std::sync::Arc;
use tokio::time::{sleep_until, Instant};

/// Most frames written between two flushes.
const MAX_BATCH: usize = 64;

#[derive(Deserialize)]
pub(crate) struct ConnectQuery {
    protocol: Option<String>,
}

pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    Path(key): Path<String>,
    Query(query): Query<ConnectQuery>,
    State(state): State<AppState>,
) -> Response {
    let max = state.config.server.max_frame_bytes;
    // tungstenite preallocates a 128 KiB read buffer per connection by default; a
    // small one keeps idle connections cheap and grows only for large frames. Writes
    // gather up to 8 KiB of queued frames before a syscall (flushed after each batch).
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| {
            let tasks = state.tasks.clone();
            tasks.track_future(connection(socket, state, key, query.protocol))
        })
}

/// Why the connection may not start, checked before a session exists.
fn admission(state: &AppState, key: &str, protocol: Option<&str>) -> Result<Arc<App>, Disconnect> {
    if state.draining() {
        return Err(Disconnect::new(
            ErrorCode::GenericReconnect,
            "Server is shutting down",
        ));
    }
    let version = protocol.ok_or_else(|| {
        Disconnect::new(ErrorCode::NoProtocolVersion, "No protocol version supplied")
    })?;
    let version: u32 = version.parse().map_err(|_| {
        Disconnect::new(
            ErrorCode::InvalidVersionFormat,
            "Invalid version string format",
        )
    })?;
    if !(5..=7).contains(&version) {
        return Err(Disconnect::new(
            ErrorCode::UnsupportedProtocolVersion,
            format!("Unsupported protocol version {version}"),
        ));
    }
    state.node.apps.by_key(key).cloned().ok_or_else(|| {
        Disconnect::new(
            ErrorCode::AppNotFound,
            format!("Could not find app by key {key}"),
        )
    })
}

fn text(bytes: Bytes) -> Message {
    // Frames are built from Rust strings, so they are always UTF-8.
    Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from_static("{}")))
}

async fn close(socket: &mut WebSocket, reason: &Disconnect) {
    let _ = socket
        .feed(text(Bytes::from(frames::error(
            &reason.message,
            Some(reason.code.code()),
        ))))
        .await;
    let frame = CloseFrame {
        code: reason.code.code(),
        reason: Utf8Bytes::from(reason.message.as_ref()),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // Wait briefly for the client's close reply, reading what it still sends: closing
    // with unread data makes the kernel reset the connection, and the client would see
    // 1006 instead of our code.
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, socket.recv()).await {
        if matches!(message, Message::Close(_)) {
            break;
        }
    }
}

/// What ended a wait in the connection loop.
enum Wake {
    Frame(Option<Result<Message, axum::Error>>),
    Outbox(Next),
    Silence,
    Shutdown,
}

// A plain fn returning an `async move` block, not an `async fn`: an async fn's task keeps
// its arguments twice (as captured arguments and as moved-in locals, rust-lang/rust#62958),
// which was 472 of the 1,760 bytes every connection's task carried.
#[allow(clippy::manual_async_fn)]
fn connection(
    mut socket: WebSocket,
    state: AppState,
    key: String,
    protocol: Option<String>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let app = match admission(&state, &key, protocol.as_deref()) {
            Ok(app) => app,
            Err(reason) => return Box::pin(close(&mut socket, &reason)).await,
        };
        let settings = &state.node.settings;
        let (tx, mut rx) = outbox(settings.outbox_capacity);
        let (mut session, established) = match Session::open(state.node.clone(), app, tx) {
            Ok(opened) => opened,
            Err(reason) => return Box::pin(close(&mut socket, &reason)).await,
        };
        // The last stage of the handshake: a client that cannot take even this frame
        // is gone or hostile, and must not hold the connection until the first ping.
        // Boxed so the timer is not part of every idle connection's task.
        let handshake = std::time::Duration::from_secs(state.config.server.handshake_timeout_secs);
        if !matches!(
            Box::pin(tokio::time::timeout(
                handshake,
                socket.send(text(established))
            ))
            .await,
            Ok(Ok(()))
        ) {
            return;
        }
        let activity = settings.activity_timeout;
        let pong_wait = settings.pong_timeout;
        let mut deadline = Instant::now() + activity;
        let mut awaiting_pong = false;
        let write_timeout = settings.write_timeout;
        let reason = loop {
            // The select only says what woke us; the work happens after it, once its four
            // futures are gone, so the task does not carry them and the work's futures
            // (a batch write with its timeout, a ping) at the same time. That keeps every
            // idle connection's task smaller.
            let wake = tokio::select! {
                incoming = socket.recv() => Wake::Frame(incoming),
                next = rx.next() => Wake::Outbox(next),
                () = sleep_until(deadline) => Wake::Silence,
                () = state.shutdown.cancelled() => Wake::Shutdown,
            };
            match wake {
                Wake::Frame(incoming) => {
                    let Some(Ok(message)) = incoming else {
                        break None;
                    };
                    deadline = Instant::now() + activity;
                    awaiting_pong = false;
                    match message {
                        // Boxed: the handling future (subscribe, replay) is large and only
                        // lives while a frame is processed; idle connections don't carry it.
                        Message::Text(t) => match Box::pin(session.handle(t.as_str())).await {
                            Ok(replies) => {
                                if Box::pin(write_all(&mut socket, replies)).await.is_err() {
                                    break None;
                                }
                            }
                            Err(reason) => break Some(reason),
                        },
                        Message::Binary(_) => {
                            let e = frames::error("Binary frames are not supported", None);
                            if socket.send(text(Bytes::from(e))).await.is_err() {
                                break None;
                            }
                        }
                        Message::Close(_) => break None,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                Wake::Outbox(Next::Send(item)) => {
                    let write = write_batch(&mut socket, &mut session, &mut rx, item);
                    match tokio::time::timeout(write_timeout, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        Err(_) => {
                            // The client stopped reading: its socket is full, so not even
                            // a close frame would get through. Drop it; it can resume.
                            metrics::counter!("crier_slow_consumer_disconnects_total").increment(1);
                            session.close();
                            return;
                        }
                    }
                }
                Wake::Outbox(Next::Close(reason)) => break Some(reason),
                Wake::Silence => {
                    if awaiting_pong {
                        break Some(Disconnect::new(
                            ErrorCode::PongNotReceived,
                            "Pong reply not received",
                        ));
                    }
                    awaiting_pong = true;
                    deadline = Instant::now() + pong_wait;
                    if socket
                        .send(text(Bytes::from(frames::ping())))
                        .await
                        .is_err()
                    {
                        break None;
                    }
                }
                Wake::Shutdown => {
                    break Some(Disconnect::new(
                        ErrorCode::GenericReconnect,
                        "Server is shutting down; reconnect",
                    ));
                }
            }
        };
        session.close();
        if let Some(reason) = reason {
            metrics::counter!("crier_disconnects_total", "code" => reason.code.code().to_string())
                .increment(1);
            Box::pin(close(&mut socket, &reason)).await;
        }
    }
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    session: &mut Session,
    rx: &mut crier_core::outbox::OutboxReceiver,
    first: crier_core::outbox::Outgoing,
) -> Result<(), axum::Error> {
    if let Delivery::Send(frame) = session.outgoing(first) {
        socket.feed(text(frame)).await?;
    }
    for _ in 1..MAX_BATCH {
        let Some(item) = rx.try_next() else { break };
        if let Delivery::Send(frame) = session.outgoing(item) {
            socket.feed(text(frame)).await?;
        }
    }
    socket.flush().await
}

async fn write_all(socket: &mut WebSocket, frames: Vec<Bytes>) -> Result<(), axum::Error> {
    if frames.is_empty() {
        return Ok(());
    }
    for frame in frames {
        socket.feed(text(frame)).await?;
    }
    socket.flush().await
}
