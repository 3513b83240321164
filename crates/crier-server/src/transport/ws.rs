//! The Pusher protocol over WebSocket. One task per connection reads client frames
//! into the session, drains the session's outbox into the socket (several queued
//! frames per flush), writes resume replays a page at a time, pings on silence and
//! closes with Pusher's codes. Every write is bounded by `write_timeout`: a client
//! that stops reading is dropped (it can resume with `since`) instead of holding the
//! task and whatever it was about to write. [`wire`] holds what the WebSocket layer
//! itself decides: upgrade limits and protocol-error closes.

pub mod wire;

use crate::limits::{too_many_from_address, ClientAddr, IpSlot};
use crate::metrics::{self as m, CloseReason, Rejection, Transport};
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use crier_core::outbox::{outbox, Disconnect, Next, OutboxReceiver, Outgoing};
use crier_core::session::{Delivery, Session};
use crier_core::App;
use crier_protocol::{frames, ErrorCode};
use futures_util::{FutureExt, SinkExt};
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
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
    client: Option<Extension<ClientAddr>>,
) -> Response {
    // Decided here, before the task exists, so that the task carries the answer (two
    // pointers) instead of the key, the protocol and the address: the task's every byte
    // is paid per connection for its whole life, in 128-byte steps. A refused client
    // still gets the upgrade, then the Pusher code (that is what pusher-js acts on).
    let admitted = admission(&state, &key, query.protocol.as_deref())
        .and_then(|app| {
            let per_ip = match client {
                Some(Extension(ClientAddr(ip))) => state
                    .ip_connections
                    .try_acquire(&app, ip)
                    .map_err(|max| {
                        Disconnect::new(ErrorCode::OverCapacity, too_many_from_address(max))
                    })?
                    .map(Box::new),
                None => None,
            };
            Ok(Admitted {
                app,
                _per_ip: per_ip,
            })
        })
        .map_err(Box::new);
    wire::configure(ws, state.config.server.max_frame_bytes).on_upgrade(move |socket| {
        let tasks = state.tasks.clone();
        tasks.track_future(connection(socket, state, admitted))
    })
}

/// A connection allowed to start.
struct Admitted {
    app: Arc<App>,
    /// Counts the connection against its client address while it lives.
    _per_ip: Option<Box<IpSlot>>,
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
    state.node.apps().by_key(key).cloned().ok_or_else(|| {
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

async fn close(socket: &mut WebSocket, reason: &Disconnect, write_timeout: Duration) {
    let frame = CloseFrame {
        code: reason.code.code(),
        reason: Utf8Bytes::from(reason.message.as_ref()),
    };
    let error = text(Bytes::from(frames::error(
        &reason.message,
        Some(reason.code.code()),
    )));
    let sent = bounded(write_timeout, async {
        socket.feed(error).await?;
        socket.send(Message::Close(Some(frame))).await
    })
    .await;
    if sent.is_err() {
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
    /// A resume has another page to write.
    Replay,
    Silence,
    Shutdown,
}

/// Always ready and stateless: the replay branch of the connection's `select!` then
/// adds nothing to every connection's task (`std::future::ready` adds 8 bytes).
struct Now;

impl Future for Now {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// Why the connection loop ended, which decides what the client is told.
enum End {
    /// Tell the client why (`pusher:error`), then close with that code.
    Close(Disconnect),
    /// The socket failed or ended: nothing can reach the client.
    Gone,
    /// The client sent a close frame; tungstenite's reply still has to be flushed.
    ClosedByClient,
    /// The client broke the WebSocket protocol (1002, 1007, 1009).
    Failed(CloseFrame),
    /// A write did not finish within `write_timeout`: the client stopped reading and
    /// its socket is full, so not even a close frame would get through.
    Stalled,
}

/// Runs a write, giving up after `limit`. Not an `async fn`: that would keep `write`
/// twice (argument and awaited future, see `connection`), and the outbox write sits in
/// every connection's task.
fn bounded(
    limit: Duration,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> impl Future<Output = Result<(), End>> {
    tokio::time::timeout(limit, write).map(|written| match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Stalled),
    })
}

// A plain fn returning an `async move` block, not an `async fn`: an async fn's task keeps
// its arguments twice (as captured arguments and as moved-in locals, rust-lang/rust#62958),
// which was 472 of the 1,760 bytes every connection's task carried.
#[allow(clippy::manual_async_fn)]
fn connection(
    mut socket: WebSocket,
    state: AppState,
    admitted: Result<Admitted, Box<Disconnect>>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Timings are read from the settings where they are used rather than copied
        // into locals: each local would sit in every connection's task.
        let write_timeout = || state.node.settings().write_timeout;
        // Borrowed, not moved out: `admitted` holds the address slot for the
        // connection's life, and moving it would keep a second copy in the task.
        let app = match &admitted {
            Ok(admitted) => admitted.app.clone(),
            Err(reason) => return Box::pin(refuse(&mut socket, reason, write_timeout())).await,
        };
        let (tx, mut rx) = outbox(state.node.settings().outbox_capacity);
        let (mut session, established) = match Session::open(state.node.clone(), app, tx) {
            Ok(opened) => opened,
            Err(reason) => return Box::pin(refuse(&mut socket, &reason, write_timeout())).await,
        };
        m::connection_opened(Transport::Ws, &session.app().id);
        // The last stage of the handshake: a client that cannot take even this frame
        // is gone or hostile, and must not hold the connection until the first ping.
        let handshake = Duration::from_secs(state.config.server.handshake_timeout_secs);
        if Box::pin(bounded(handshake, socket.send(text(established))))
            .await
            .is_err()
        {
            return;
        }
        // A connection must hold a subscription (or a sign-in) by then, or it is
        // closed: an open socket that listens to nothing only costs the server.
        let mut subscribe_by = match state.config.server.subscribe_timeout_secs {
            0 => None,
            secs => Some(Instant::now() + Duration::from_secs(secs)),
        };
        let mut deadline = next_check(state.node.settings().activity_timeout, subscribe_by);
        let mut awaiting_pong = false;
        let end = loop {
            // The select only says what woke us; the work happens after it, once its
            // futures are gone, so the task does not carry them and the work's futures
            // (a batch write with its timeout, a ping) at the same time. That keeps every
            // idle connection's task smaller. Rare work (replies, replay pages, pings) is
            // boxed so that only the hot outbox write sits in the task.
            let replaying = session.replaying();
            let wake = tokio::select! {
                incoming = socket.recv() => Wake::Frame(incoming),
                next = rx.next() => Wake::Outbox(next),
                // Unbiased with the others: live messages of other channels and client
                // frames keep flowing between replay pages.
                () = Now, if replaying => Wake::Replay,
                () = sleep_until(deadline) => Wake::Silence,
                () = state.shutdown.cancelled() => Wake::Shutdown,
            };
            match wake {
                Wake::Frame(incoming) => {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => match wire::close_frame_for(error) {
                            Some(frame) => break End::Failed(frame),
                            None => break End::Gone,
                        },
                        None => break End::Gone,
                    };
                    deadline = next_check(state.node.settings().activity_timeout, subscribe_by);
                    awaiting_pong = false;
                    if let Message::Text(t) = &message {
                        m::transport(Transport::Ws)
                            .bytes_received
                            .increment(t.len() as u64);
                    }
                    let replies = match message {
                        // Boxed: the handling future (subscribe, history reads) is large
                        // and only lives while a frame is processed.
                        Message::Text(t) => match Box::pin(session.handle(t.as_str())).await {
                            Ok(replies) => replies,
                            Err(reason) => break End::Close(reason),
                        },
                        Message::Binary(_) => vec![Bytes::from(frames::error(
                            "Binary frames are not supported",
                            None,
                        ))],
                        Message::Close(_) => break End::ClosedByClient,
                        Message::Ping(_) | Message::Pong(_) => Vec::new(),
                    };
                    if replies.is_empty() {
                        continue;
                    }
                    if let Err(end) =
                        Box::pin(bounded(write_timeout(), write_all(&mut socket, replies))).await
                    {
                        break end;
                    }
                }
                Wake::Outbox(Next::Send(item)) => {
                    let write = write_batch(&mut socket, &mut session, &mut rx, item);
                    if let Err(end) = bounded(write_timeout(), write).await {
                        break end;
                    }
                }
                Wake::Outbox(Next::Close(reason)) => break End::Close(reason),
                Wake::Replay => {
                    // One page read, written, and dropped before the next is read.
                    let page = Box::pin(session.replay_page()).await;
                    if let Err(end) =
                        Box::pin(bounded(write_timeout(), write_all(&mut socket, page))).await
                    {
                        break end;
                    }
                }
                Wake::Silence => {
                    // While a pong is awaited the deadline is the pong's, so a wake-up
                    // then is about the pong even if the subscribe deadline passed too.
                    if subscribe_by.is_some_and(|by| Instant::now() >= by) {
                        if !session.subscribed() {
                            m::limit_hit(m::limits::SUBSCRIBE_TIMEOUT);
                            break End::Close(Disconnect::new(
                                ErrorCode::ClosedAfterInactivity,
                                format!(
                                    "No subscription within {} s (server.subscribe_timeout_secs)",
                                    state.config.server.subscribe_timeout_secs
                                ),
                            ));
                        }
                        subscribe_by = None;
                        if !awaiting_pong {
                            deadline = Instant::now() + state.node.settings().activity_timeout;
                            continue;
                        }
                    }
                    if awaiting_pong {
                        break End::Close(Disconnect::new(
                            ErrorCode::PongNotReceived,
                            "Pong reply not received",
                        ));
                    }
                    awaiting_pong = true;
                    deadline = Instant::now() + state.node.settings().pong_timeout;
                    let ping = socket.send(text(Bytes::from(frames::ping())));
                    if let Err(end) = Box::pin(bounded(write_timeout(), ping)).await {
                        break end;
                    }
                }
                Wake::Shutdown => {
                    break End::Close(Disconnect::new(
                        ErrorCode::GenericReconnect,
                        "Server is shutting down; reconnect",
                    ));
                }
            }
        };
        session.close();
        m::connection_closed(Transport::Ws, &session.app().id, close_reason(&end));
        // One boxed future that takes `end` by value: matching here, with an await per
        // arm, would keep `end` in every connection's task for its whole life (the
        // task's allocation grows in 128-byte steps).
        Box::pin(finish(&mut socket, end, write_timeout())).await;
    }
}

/// When the loop must next look at the clock: the ping after `activity` of silence, or
/// the subscribe deadline if that comes first.
fn next_check(activity: Duration, subscribe_by: Option<Instant>) -> Instant {
    let ping = Instant::now() + activity;
    subscribe_by.map_or(ping, |by| by.min(ping))
}

/// Refuses a connection before its session starts: counted, then closed with the code.
async fn refuse(socket: &mut WebSocket, reason: &Disconnect, write_timeout: Duration) {
    m::rejected(Rejection::WebSocket(reason.code));
    if reason.code == ErrorCode::OverConnectionQuota {
        m::limit_hit(m::limits::MAX_CONNECTIONS);
    }
    close(socket, reason, write_timeout).await;
}

fn close_reason(end: &End) -> CloseReason {
    match end {
        End::Close(reason) => CloseReason::of(reason),
        End::Gone | End::ClosedByClient => CloseReason::Client,
        End::Failed(_) => CloseReason::ProtocolError,
        End::Stalled => CloseReason::SlowConsumer,
    }
}

/// Tells the client how the connection ended, as far as anything can still reach it.
async fn finish(socket: &mut WebSocket, end: End, write_timeout: Duration) {
    match end {
        End::Close(reason) => close(socket, &reason, write_timeout).await,
        End::Failed(frame) => wire::fail(socket, frame, write_timeout).await,
        End::Stalled => {
            metrics::counter!(m::names::SLOW_CONSUMERS).increment(1);
        }
        End::ClosedByClient => wire::finish_client_close(socket, write_timeout).await,
        End::Gone => {}
    }
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes once.
/// Counted once per batch: frames, bytes, and the latency of its oldest message (taken
/// as its frame is handed to the socket, just before the batch's flush).
async fn write_batch(
    socket: &mut WebSocket,
    session: &mut Session,
    rx: &mut OutboxReceiver,
    first: Outgoing,
) -> Result<(), axum::Error> {
    let mut written = Written::default();
    if let Some(frame) = written.filter(session, first) {
        socket.feed(text(frame)).await?;
    }
    for _ in 1..MAX_BATCH {
        let Some(item) = rx.try_next() else { break };
        if let Some(frame) = written.filter(session, item) {
            socket.feed(text(frame)).await?;
        }
    }
    socket.flush().await?;
    let hot = m::transport(Transport::Ws);
    hot.delivered.increment(u64::from(written.frames));
    hot.bytes_sent.increment(u64::from(written.bytes));
    Ok(())
}

/// What one batch wrote, for the metrics. Small: it sits in every connection's task
/// (a batch is at most `MAX_BATCH` frames of at most `max_event_size` plus framing).
#[derive(Default)]
struct Written {
    frames: u32,
    bytes: u32,
    /// The batch's latency sample is taken (from its first published message).
    sampled: bool,
}

impl Written {
    fn filter(&mut self, session: &mut Session, item: Outgoing) -> Option<Bytes> {
        let accepted_at = match &item {
            Outgoing::Message(message) if !self.sampled => Some(message.accepted_at),
            _ => None,
        };
        let Delivery::Send(frame) = session.outgoing(item) else {
            return None;
        };
        self.frames += 1;
        self.bytes = self.bytes.saturating_add(frame.len() as u32);
        if let Some(accepted_at) = accepted_at {
            self.sampled = true;
            m::transport(Transport::Ws).delivered_after(accepted_at);
        }
        Some(frame)
    }
}

async fn write_all(socket: &mut WebSocket, frames: Vec<Bytes>) -> Result<(), axum::Error> {
    if frames.is_empty() {
        return Ok(());
    }
    let mut bytes = 0;
    for frame in frames {
        bytes += frame.len() as u64;
        socket.feed(text(frame)).await?;
    }
    socket.flush().await?;
    m::transport(Transport::Ws).bytes_sent.increment(bytes);
    Ok(())
}
