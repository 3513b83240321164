//! pusher-js's own HTTP fallbacks, `xhr_streaming` and `xhr_polling`, served under
//! its default `httpPath` (`/pusher`), so stock pusher-js keeps working where
//! WebSocket is blocked.
//!
//! Wire format (pusher-js `core/http/http_socket.ts`, SockJS-style): the client picks a
//! session path `<server>/<session>` and POSTs to
//! `/pusher/app/{key}/<server>/<session>/xhr_streaming` (one long response) or `.../xhr`
//! (one response per poll) to receive, and to `.../xhr_send` with a JSON array of
//! Pusher frames (as strings) to send. Responses are lines: `o` (session opened),
//! `a[...]` (an array of Pusher frames as JSON strings), `h` (heartbeat) and
//! `c[code,"reason"]` (closed). A polling client reconnects after each answer.
//!
//! Sessions count toward their app's `max_connections` (a session is a connection) and
//! toward the server's `max_fallback_sessions`; a session refused for either gets
//! `c[4004,...]` or `c[4100,...]`, which pusher-js handles as it does those close codes
//! on a WebSocket.

use super::stream_request::{add_cors, cors_origin};
use crate::metrics::{self as m, CloseReason, OpenConnection, Transport};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::{BufMut, BytesMut};
use crier_core::outbox::{outbox, Disconnect, Next, Outbox, OutboxReceiver};
use crier_core::session::{Delivery, Session};
use crier_core::App;
use crier_protocol::ErrorCode;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A streaming response is kept alive with `h` lines this often.
const HEARTBEAT: Duration = Duration::from_secs(25);
/// A polling request is answered with `h` after this long without messages.
const POLL_WAIT: Duration = Duration::from_secs(25);
/// Frames per `a[...]` line.
const MAX_BATCH: usize = 64;
/// Frames waiting for the client before it counts as a slow consumer.
const MAX_PENDING: usize = 20_000;
/// A resume's next page is read only while fewer frames than this wait for the client:
/// a client that stops polling holds about one page of replay, not the whole replay.
const REPLAY_ROOM: usize = MAX_BATCH;

/// The live fallback sessions of this server.
#[derive(Default)]
pub struct FallbackSessions {
    sessions: Mutex<HashMap<String, Arc<HttpSession>>>,
}

impl FallbackSessions {
    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct HttpSession {
    session: tokio::sync::Mutex<Session>,
    /// Sending side of the session's outbox, to stop the pump on close.
    outbox: Outbox,
    /// Frames ready for the client, in order: replies of `Session::handle` and
    /// filtered outbox items, both appended under the session lock.
    pending: Mutex<Pending>,
    /// How long frames may wait with no request taking them (`write_timeout`).
    write_timeout: Duration,
    closing: Mutex<Option<Disconnect>>,
    wake: Notify,
    /// Tells the pump to look again for replay work: a frame was handled (it may have
    /// started a replay) or the client took frames (there is room for a page).
    pump_wake: Notify,
    /// Each receiving request takes a new generation; an older one still waiting
    /// (a poll the client gave up on) steps aside instead of taking frames.
    generation: AtomicU64,
    last_seen: Mutex<Instant>,
    /// Counts the session open until it is dropped, with the first close's reason.
    metric: Mutex<OpenConnection>,
    /// Counts the session against its client address while it lives.
    _per_ip: Option<crate::limits::IpSlot>,
}

/// Counts frames and bytes handed to a receiving request.
fn count_sent(frames: usize, body: &Bytes) {
    let hot = m::transport(Transport::Xhr);
    hot.delivered.increment(frames as u64);
    hot.bytes_sent.increment(body.len() as u64);
}

#[derive(Default)]
struct Pending {
    frames: VecDeque<Bytes>,
    /// When the oldest frame still waiting was queued, or the last time a request
    /// took frames while more stayed behind.
    since: Option<Instant>,
}

impl HttpSession {
    fn touch(&self) {
        *self.last_seen.lock() = Instant::now();
    }

    fn close(&self, reason: Disconnect) {
        let mut c = self.closing.lock();
        if c.is_none() {
            self.metric.lock().closed_by(&reason);
            *c = Some(reason.clone());
        }
        drop(c);
        self.outbox.close(reason);
        self.wake.notify_waiters();
    }

    /// Whether frames have waited longer than `write_timeout` with nobody taking them.
    fn stalled(&self, pending: &Pending) -> bool {
        pending
            .since
            .is_some_and(|t| t.elapsed() > self.write_timeout)
    }

    /// Appends frames; call with the session lock held so order is kept.
    fn push(&self, frames: Vec<Bytes>) {
        if frames.is_empty() {
            return;
        }
        let mut q = self.pending.lock();
        // A client whose stream was cut (write_timeout) or who stopped polling takes
        // nothing: close it as the WebSocket loop would rather than queue up to
        // MAX_PENDING frames until the session is reaped as abandoned.
        if self.stalled(&q) || q.frames.len() + frames.len() > MAX_PENDING {
            q.frames = VecDeque::new();
            q.since = None;
            drop(q);
            self.close(Disconnect::slow_consumer());
            return;
        }
        if q.frames.is_empty() {
            q.since = Some(Instant::now());
        }
        q.frames.extend(frames);
        drop(q);
        self.wake.notify_waiters();
    }

    /// Moves the session's outbox, and resume replays a page at a time, into
    /// `pending` until the session closes.
    async fn pump(self: Arc<Self>, mut rx: OutboxReceiver) {
        loop {
            let replay_due = self.session.lock().await.replaying()
                && self.pending.lock().frames.len() < REPLAY_ROOM;
            let next = tokio::select! {
                next = rx.next() => next,
                () = std::future::ready(()), if replay_due => {
                    let mut session = self.session.lock().await;
                    let page = session.replay_page().await;
                    self.push(page);
                    continue;
                }
                () = self.pump_wake.notified() => continue,
            };
            match next {
                Next::Send(item) => {
                    let mut session = self.session.lock().await;
                    let mut frames = Vec::new();
                    if let Delivery::Send(f) = session.outgoing(item) {
                        frames.push(f);
                    }
                    while frames.len() < MAX_BATCH {
                        let Some(item) = rx.try_next() else { break };
                        if let Delivery::Send(f) = session.outgoing(item) {
                            frames.push(f);
                        }
                    }
                    self.push(frames);
                }
                Next::Close(reason) => {
                    self.close(reason);
                    return;
                }
            }
        }
    }

    /// Up to a batch of frames, waiting at most `wait`; empty when the wait ends or a
    /// newer request took over; `Err` when the session is closed.
    async fn next_batch(&self, wait: Duration) -> Result<Vec<Bytes>, Disconnect> {
        let me = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_waiters();
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.closing.lock().clone() {
                return Err(reason);
            }
            if self.generation.load(Ordering::Acquire) != me {
                return Ok(Vec::new());
            }
            {
                let mut q = self.pending.lock();
                if !q.frames.is_empty() {
                    let n = q.frames.len().min(MAX_BATCH);
                    let batch = q.frames.drain(..n).collect();
                    q.since = (!q.frames.is_empty()).then(Instant::now);
                    drop(q);
                    self.pump_wake.notify_one();
                    return Ok(batch);
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }
}

mod send;

pub(crate) fn routes() -> Router<AppState> {
    let base = "/pusher/app/{key}/{server}/{session}";
    Router::new()
        .route(
            &format!("{base}/xhr_streaming"),
            post(streaming).options(preflight),
        )
        .route(&format!("{base}/xhr"), post(polling).options(preflight))
        .route(
            &format!("{base}/xhr_send"),
            post(send::send).options(preflight),
        )
}

/// Closes sessions whose client went away: no receiving request for `abandoned`
/// (`[server] fallback_session_idle_secs`), checked a few times per period.
pub async fn reap(
    sessions: Arc<FallbackSessions>,
    shutdown: tokio_util::sync::CancellationToken,
    abandoned: Duration,
) {
    let period = (abandoned / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => {
                for s in sessions.sessions.lock().drain().map(|(_, s)| s) {
                    s.close(Disconnect::new(ErrorCode::GenericReconnect, "Server is shutting down; reconnect"));
                }
                return;
            }
        }
        let now = Instant::now();
        let gone: Vec<Arc<HttpSession>> = {
            let mut map = sessions.sessions.lock();
            let keys: Vec<String> = map
                .iter()
                .filter(|(_, s)| {
                    now.duration_since(*s.last_seen.lock()) > abandoned
                        || s.closing.lock().is_some()
                        // Its stream was cut and no new request came for the frames.
                        || s.stalled(&s.pending.lock())
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for s in gone {
            let stalled = s.stalled(&s.pending.lock());
            let abandoned = !stalled && s.closing.lock().is_none();
            let reason = if stalled {
                Disconnect::slow_consumer()
            } else {
                Disconnect::new(ErrorCode::GenericReconnect, "session abandoned")
            };
            s.close(reason);
            if abandoned {
                // The client stopped coming back.
                s.metric.lock().set_reason(CloseReason::Client);
            }
            s.session.lock().await.close();
        }
    }
}

fn session_key(key: &str, server: &str, session: &str) -> String {
    format!("{key}/{server}/{session}")
}

fn line(prefix: &str, frames: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(prefix.as_bytes());
    if prefix == "a" {
        // Each frame is sent as a JSON string inside the array.
        let strings: Vec<&str> = frames
            .iter()
            .map(|f| std::str::from_utf8(f).unwrap_or("{}"))
            .collect();
        out.put_slice(
            serde_json::to_string(&strings)
                .unwrap_or_else(|_| "[]".into())
                .as_bytes(),
        );
    }
    out.put_u8(b'\n');
    out.freeze()
}

fn close_line(reason: &Disconnect) -> Bytes {
    let v = serde_json::json!([reason.code.code(), reason.message]);
    Bytes::from(format!("c{v}\n"))
}

/// The app and its CORS origin, or the error response (boxed: responses are large).
fn app_for(
    state: &AppState,
    key: &str,
    headers: &HeaderMap,
) -> Result<(Arc<App>, Option<HeaderValue>), Box<Response>> {
    let Some(app) = state.node.apps().by_key(key).cloned() else {
        return Err(Box::new(
            super::stream_request::unknown_key(key, headers).into_response(),
        ));
    };
    let origin = cors_origin(&app, headers).map_err(|e| Box::new(e.into_response()))?;
    Ok((app, origin))
}

fn respond(body: Body, origin: Option<HeaderValue>) -> Response {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=UTF-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(origin) = origin {
        add_cors(h, origin);
    }
    res
}

/// Finds the session, or opens one (the `o` line and `connection_established`).
/// The second value holds `connection_established` for a new session (else None).
fn open_or_find(
    state: &AppState,
    app: Arc<App>,
    key: String,
    client: Option<axum::Extension<crate::limits::ClientAddr>>,
) -> Result<(Arc<HttpSession>, Option<Bytes>), Disconnect> {
    // One lock from lookup to insert: the cap is exact under a burst of new sessions,
    // and two first requests for one session path cannot open two sessions.
    let mut sessions = state.fallback_sessions.sessions.lock();
    if let Some(s) = sessions.get(&key) {
        s.touch();
        return Ok((s.clone(), None));
    }
    if state.draining() {
        return Err(Disconnect::new(
            ErrorCode::GenericReconnect,
            "Server is shutting down",
        ));
    }
    if sessions.len() >= state.config.server.max_fallback_sessions {
        metrics::counter!("crier_client_errors_total", "kind" => "fallback_capacity").increment(1);
        return Err(Disconnect::new(
            ErrorCode::OverCapacity,
            "Over capacity: too many HTTP fallback sessions",
        ));
    }
    let per_ip = match client {
        Some(axum::Extension(crate::limits::ClientAddr(ip))) => {
            state.ip_connections.try_acquire(&app, ip).map_err(|max| {
                m::rejected(m::Rejection::WebSocket(ErrorCode::OverCapacity));
                Disconnect::new(
                    ErrorCode::OverCapacity,
                    crate::limits::too_many_from_address(max),
                )
            })?
        }
        None => None,
    };
    let (tx, rx) = outbox(state.node.settings().outbox_capacity);
    let (session, established) =
        Session::open(state.node.clone(), app, tx.clone()).inspect_err(|reason| {
            metrics::counter!("crier_client_errors_total", "kind" => "fallback_refused")
                .increment(1);
            m::rejected(m::Rejection::WebSocket(reason.code));
            if reason.code == ErrorCode::OverConnectionQuota {
                m::limit_hit(m::limits::MAX_CONNECTIONS);
            }
        })?;
    let metric = OpenConnection::new(Transport::Xhr, &session.app().id, CloseReason::Client);
    let s = Arc::new(HttpSession {
        session: tokio::sync::Mutex::new(session),
        outbox: tx,
        pending: Mutex::default(),
        write_timeout: state.node.settings().write_timeout,
        closing: Mutex::new(None),
        wake: Notify::new(),
        pump_wake: Notify::new(),
        generation: AtomicU64::new(0),
        last_seen: Mutex::new(Instant::now()),
        metric: Mutex::new(metric),
        _per_ip: per_ip,
    });
    tokio::spawn(s.clone().pump(rx));
    sessions.insert(key, s.clone());
    Ok((s, Some(established)))
}

fn forget(state: &AppState, key: &str) {
    state.fallback_sessions.sessions.lock().remove(key);
}

async fn streaming(
    State(state): State<AppState>,
    Path((key, server, session)): Path<(String, String, String)>,
    headers: HeaderMap,
    client: Option<axum::Extension<crate::limits::ClientAddr>>,
) -> Response {
    let (app, origin) = match app_for(&state, &key, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let skey = session_key(&key, &server, &session);
    let (s, first) = match open_or_find(&state, app, skey.clone(), client) {
        Ok(x) => x,
        Err(reason) => return respond(Body::from(close_line(&reason)), origin),
    };
    // A 2 KiB prelude makes some proxies and old browsers start delivering the stream.
    let mut head = BytesMut::new();
    head.put_slice(&[b'h'; 2048]);
    head.put_u8(b'\n');
    if let Some(established) = first {
        head.put_slice(b"o\n");
        head.put_slice(&line("a", &[established]));
    }
    let shutdown = state.shutdown.clone();
    let body = futures_util::stream::unfold(
        (Some(head.freeze()), s, state, skey, false),
        move |(head, s, state, skey, done)| {
            let shutdown = shutdown.clone();
            async move {
                if let Some(h) = head {
                    return Some((Ok::<_, std::io::Error>(h), (None, s, state, skey, false)));
                }
                if done {
                    return None;
                }
                s.touch();
                let next = tokio::select! {
                    b = s.next_batch(HEARTBEAT) => b,
                    () = shutdown.cancelled() => Err(Disconnect::new(ErrorCode::GenericReconnect, "Server is shutting down; reconnect")),
                };
                s.touch();
                match next {
                    Ok(batch) if batch.is_empty() => Some((
                        Ok(Bytes::from_static(b"h\n")),
                        (None, s, state, skey, false),
                    )),
                    Ok(batch) => {
                        let body = line("a", &batch);
                        count_sent(batch.len(), &body);
                        Some((Ok(body), (None, s, state, skey, false)))
                    }
                    Err(reason) => {
                        forget(&state, &skey);
                        s.session.lock().await.close();
                        Some((Ok(close_line(&reason)), (None, s, state, skey, true)))
                    }
                }
            }
        },
    );
    respond(Body::from_stream(body), origin)
}

async fn polling(
    State(state): State<AppState>,
    Path((key, server, session)): Path<(String, String, String)>,
    headers: HeaderMap,
    client: Option<axum::Extension<crate::limits::ClientAddr>>,
) -> Response {
    let (app, origin) = match app_for(&state, &key, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let skey = session_key(&key, &server, &session);
    let (s, first) = match open_or_find(&state, app, skey.clone(), client) {
        Ok(x) => x,
        Err(reason) => return respond(Body::from(close_line(&reason)), origin),
    };
    if let Some(established) = first {
        // pusher-js takes `o` alone, then polls again: the greeting waits for that poll.
        s.push(vec![established]);
        return respond(Body::from(Bytes::from_static(b"o\n")), origin);
    }
    tracing::debug!(session = %skey, "xhr poll waiting");
    let next = tokio::select! {
        b = s.next_batch(POLL_WAIT) => b,
        () = state.shutdown.cancelled() => Err(Disconnect::new(ErrorCode::GenericReconnect, "Server is shutting down; reconnect")),
    };
    s.touch();
    tracing::debug!(session = %skey, frames = next.as_ref().map(|b| b.len()).unwrap_or(0), "xhr poll answered");
    let body = match next {
        Ok(batch) if batch.is_empty() => Bytes::from_static(b"h\n"),
        Ok(batch) => {
            let body = line("a", &batch);
            count_sent(batch.len(), &body);
            body
        }
        Err(reason) => {
            forget(&state, &skey);
            s.session.lock().await.close();
            close_line(&reason)
        }
    };
    respond(Body::from(body), origin)
}

async fn preflight(
    State(state): State<AppState>,
    Path((key, _, _)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (_, origin) = match app_for(&state, &key, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = origin {
        let h = res.headers_mut();
        add_cors(h, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    res
}
