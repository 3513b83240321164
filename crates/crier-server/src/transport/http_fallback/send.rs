//! `xhr_send`: Pusher frames from a fallback client, held to the WebSocket limits.

use super::{add_cors, app_for, session_key, HttpSession};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_protocol::frames;
use std::time::Duration;

/// An `xhr_send` refusal: a JSON error for the HTTP client and, because pusher-js
/// ignores the answer to its sends, a `pusher:error` frame on the session's receiving
/// side so the page's `connection.bind("error")` hears of it. The session stays open,
/// as it does for a client event over `max_event_size`.
async fn refuse_send(
    s: &HttpSession,
    status: StatusCode,
    message: String,
    origin: Option<HeaderValue>,
) -> Response {
    let session = s.session.lock().await;
    s.push(vec![Bytes::from(frames::error(&message, None))]);
    drop(session);
    let mut res = (status, Json(serde_json::json!({ "error": message }))).into_response();
    if let Some(origin) = origin {
        add_cors(res.headers_mut(), origin);
    }
    res
}

pub(super) async fn send(
    State(state): State<AppState>,
    Path((key, server, session)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (_, origin) = match app_for(&state, &key, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let skey = session_key(&key, &server, &session);
    let Some(s) = state.fallback_sessions.sessions.lock().get(&skey).cloned() else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    s.touch();
    let limits = &state.config.server;
    // Each frame arrives JSON-escaped inside a string, which at most about doubles a
    // Pusher frame (its quotes and backslashes); the frames are checked one by one below.
    let limit = limits.max_body_bytes.max(2 * limits.max_frame_bytes);
    let deadline = Duration::from_secs(limits.handshake_timeout_secs);
    let body = match crate::request_body::read(&headers, body, limit, deadline).await {
        Ok(body) => body,
        Err(e) => {
            let key = "server.max_body_bytes, or twice server.max_frame_bytes";
            return refuse_send(&s, e.status(), e.message(key), origin).await;
        }
    };
    crate::metrics::transport(crate::metrics::Transport::Xhr)
        .bytes_received
        .increment(body.len() as u64);
    let Ok(frames) = serde_json::from_slice::<Vec<String>>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body must be a JSON array of strings",
        )
            .into_response();
    };
    // The same limit as a WebSocket message; the whole send is refused, so no frame of
    // it is handled.
    if let Some(big) = frames.iter().find(|f| f.len() > limits.max_frame_bytes) {
        let message = format!(
            "frame of {} bytes is larger than {} bytes (server.max_frame_bytes)",
            big.len(),
            limits.max_frame_bytes
        );
        return refuse_send(&s, StatusCode::PAYLOAD_TOO_LARGE, message, origin).await;
    }
    tracing::debug!(session = %skey, frames = frames.len(), "xhr send");
    for frame in frames {
        // Replies are queued before the lock is released, so no live message that
        // the pump filters after them can overtake them.
        let mut session = s.session.lock().await;
        match session.handle(&frame).await {
            Ok(replies) => {
                s.push(replies);
                // The frame may have started a replay: the pump reads its pages.
                s.pump_wake.notify_one();
            }
            Err(reason) => {
                drop(session);
                s.close(reason);
                break;
            }
        }
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = origin {
        add_cors(res.headers_mut(), origin);
    }
    res
}
