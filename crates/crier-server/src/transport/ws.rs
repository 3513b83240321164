//! The Pusher protocol over WebSocket. One task per connection reads client frames
//! into the session, drains the session's outbox into the socket (several queued
//! frames per flush), pings on silence and closes with Pusher's codes. [`wire`] holds
//! what the WebSocket layer itself decides: upgrade limits and protocol-error closes.

pub mod wire;

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
    wire::configure(ws, state.config.server.max_frame_bytes).on_upgrade(move |socket| {
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

/// How the connection loop ended, which decides what the client is told.
enum End {
    /// The client is gone or stopped reading: nothing can reach it.
    Quiet,
    /// The client sent a close frame; tungstenite's reply still has to be flushed.
    ClosedByClient,
    /// A Pusher-level close: `pusher:error`, then a close frame with its code.
    Pusher(Disconnect),
    /// The client broke the WebSocket protocol (1002, 1007, 1009).
    Failed(CloseFrame),
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
        if socket.send(text(established)).await.is_err() {
            return;
        }
        let activity = settings.activity_timeout;
        let pong_wait = settings.pong_timeout;
        let mut deadline = Instant::now() + activity;
        let mut awaiting_pong = false;
        let write_timeout = settings.write_timeout;
        let end = loop {
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
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => match wire::close_frame_for(error) {
                            Some(frame) => break End::Failed(frame),
                            None => break End::Quiet,
                        },
                        None => break End::Quiet,
                    };
                    deadline = Instant::now() + activity;
                    awaiting_pong = false;
                    match message {
                        // Boxed: the handling future (subscribe, replay) is large and only
                        // lives while a frame is processed; idle connections don't carry it.
                        Message::Text(t) => match Box::pin(session.handle(t.as_str())).await {
                            Ok(replies) => {
                                if Box::pin(write_all(&mut socket, replies)).await.is_err() {
                                    break End::Quiet;
                                }
                            }
                            Err(reason) => break End::Pusher(reason),
                        },
                        Message::Binary(_) => {
                            let e = frames::error("Binary frames are not supported", None);
                            if socket.send(text(Bytes::from(e))).await.is_err() {
                                break End::Quiet;
                            }
                        }
                        Message::Close(_) => break End::ClosedByClient,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                Wake::Outbox(Next::Send(item)) => {
                    let write = write_batch(&mut socket, &mut session, &mut rx, item);
                    match tokio::time::timeout(write_timeout, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break End::Quiet,
                        Err(_) => {
                            // The client stopped reading: its socket is full, so not even
                            // a close frame would get through. Drop it; it can resume.
                            metrics::counter!("crier_slow_consumer_disconnects_total").increment(1);
                            session.close();
                            return;
                        }
                    }
                }
                Wake::Outbox(Next::Close(reason)) => break End::Pusher(reason),
                Wake::Silence => {
                    if awaiting_pong {
                        break End::Pusher(Disconnect::new(
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
                        break End::Quiet;
                    }
                }
                Wake::Shutdown => {
                    break End::Pusher(Disconnect::new(
                        ErrorCode::GenericReconnect,
                        "Server is shutting down; reconnect",
                    ));
                }
            }
        };
        session.close();
        // One boxed future that takes `end` by value: matching here, with an await per
        // arm, would keep `end` in every connection's task for its whole life (48 bytes,
        // and the task's allocation grows in 128-byte steps).
        Box::pin(finish(&mut socket, end, write_timeout)).await;
    }
}

/// Tells the client how the connection ended.
async fn finish(socket: &mut WebSocket, end: End, write_timeout: std::time::Duration) {
    let code = match &end {
        End::Quiet | End::ClosedByClient => None,
        End::Pusher(reason) => Some(reason.code.code()),
        End::Failed(frame) => Some(frame.code),
    };
    if let Some(code) = code {
        metrics::counter!("crier_disconnects_total", "code" => code.to_string()).increment(1);
    }
    match end {
        End::Quiet => {}
        End::ClosedByClient => wire::finish_client_close(socket, write_timeout).await,
        End::Pusher(reason) => close(socket, &reason).await,
        End::Failed(frame) => wire::fail(socket, frame, write_timeout).await,
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
