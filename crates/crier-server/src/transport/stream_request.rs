//! What SSE and long-poll requests share: finding the app, reading `channels`,
//! checking the JWT for private and presence channels, the cursor, CORS, and the
//! JSON errors of SPEC §4.

use crate::server::AppState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_core::position::Cursor;
use crier_core::stream::StreamMember;
use crier_core::App;
use crier_protocol::{token, ChannelKind, ChannelName};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub(crate) struct StreamQuery {
    pub channels: Option<String>,
    pub token: Option<String>,
    pub cursor: Option<String>,
    pub last_event_id: Option<String>,
    pub timeout: Option<String>,
}

/// An error before the stream starts: status and JSON body, with CORS headers so a
/// page on another origin can read it.
pub(crate) struct StreamError {
    status: StatusCode,
    message: String,
    origin: Option<HeaderValue>,
}

impl StreamError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            origin: None,
        }
    }
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        metrics::counter!("crier_stream_errors_total", "status" => self.status.as_u16().to_string())
            .increment(1);
        let mut res = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(origin) = self.origin {
            add_cors(res.headers_mut(), origin);
        }
        res
    }
}

pub(crate) fn add_cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
}

/// A validated stream request.
pub(crate) struct Admitted {
    pub app: Arc<App>,
    pub channels: Vec<ChannelName>,
    pub member: Option<StreamMember>,
    /// Resume point, if the client gave one.
    pub cursor: Option<Cursor>,
    /// The `Access-Control-Allow-Origin` value to send, if the request had an Origin.
    pub cors: Option<HeaderValue>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The CORS origin to allow for `app`, or an error for an origin it does not allow.
pub(crate) fn cors_origin(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, StreamError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let allowed = origin
        .to_str()
        .map(|o| app.origin_allowed(o))
        .unwrap_or(false);
    if allowed {
        Ok(Some(origin.clone()))
    } else {
        Err(StreamError::new(
            StatusCode::FORBIDDEN,
            "origin not allowed for this app",
        ))
    }
}

/// Checks everything SPEC §4 requires before a stream starts.
pub(crate) fn admit(
    state: &AppState,
    key: &str,
    query: &StreamQuery,
    headers: &HeaderMap,
    cursor_text: Option<&str>,
) -> Result<Admitted, StreamError> {
    let app = state.node.apps.by_key(key).cloned().ok_or_else(|| {
        StreamError::new(StatusCode::NOT_FOUND, format!("unknown app key {key:?}"))
    })?;
    let cors = cors_origin(&app, headers)?;
    let with_cors = |mut e: StreamError| {
        e.origin = cors.clone();
        e
    };
    if !app.enabled {
        return Err(with_cors(StreamError::new(
            StatusCode::FORBIDDEN,
            "app is disabled",
        )));
    }
    if state.draining() {
        return Err(with_cors(StreamError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down",
        )));
    }
    let names = query.channels.as_deref().unwrap_or("");
    let mut channels: Vec<ChannelName> = Vec::new();
    for name in names.split(',').filter(|n| !n.is_empty()) {
        let channel = ChannelName::parse(name).map_err(|e| {
            with_cors(StreamError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid channel: {e}"),
            ))
        })?;
        if channel.kind() == ChannelKind::ServerToUser {
            return Err(with_cors(StreamError::new(
                StatusCode::FORBIDDEN,
                format!("channel {name} cannot be subscribed to"),
            )));
        }
        if !channels.contains(&channel) {
            channels.push(channel);
        }
        // Checked as the list grows, so a long list is refused before the
        // de-duplication above does quadratic work on it.
        let max = app.limits.max_channels_per_connection;
        if channels.len() > max {
            return Err(with_cors(StreamError::new(
                StatusCode::BAD_REQUEST,
                format!("at most {max} channels per stream"),
            )));
        }
    }
    if channels.is_empty() {
        return Err(with_cors(StreamError::new(
            StatusCode::BAD_REQUEST,
            "channels is required (comma-separated)",
        )));
    }
    let mut member = None;
    if channels.iter().any(|c| c.kind().requires_auth()) {
        let raw = query
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                with_cors(StreamError::new(
                    StatusCode::UNAUTHORIZED,
                    "token is required for private and presence channels",
                ))
            })?;
        let claims = token::verify(raw, &app.secret, now_secs())
            .map_err(|e| with_cors(StreamError::new(StatusCode::UNAUTHORIZED, e.to_string())))?;
        for channel in channels.iter().filter(|c| c.kind().requires_auth()) {
            if !claims.allows(channel.as_str()) {
                return Err(with_cors(StreamError::new(
                    StatusCode::FORBIDDEN,
                    format!("token does not allow channel {channel}"),
                )));
            }
        }
        if channels.iter().any(|c| c.kind() == ChannelKind::Presence) {
            let sub = claims
                .sub
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    with_cors(StreamError::new(
                        StatusCode::UNAUTHORIZED,
                        "presence channels need a token with sub",
                    ))
                })?;
            member = Some(StreamMember {
                user_id: Arc::from(sub),
                user_info: claims.user_info.clone().unwrap_or(serde_json::Value::Null),
            });
        }
    }
    let cursor =
        match cursor_text.filter(|c| !c.is_empty()) {
            Some(text) => {
                let single = (channels.len() == 1).then(|| &channels[0]);
                Some(Cursor::decode(text, single).map_err(|e| {
                    with_cors(StreamError::new(StatusCode::BAD_REQUEST, e.to_string()))
                })?)
            }
            None => None,
        };
    Ok(Admitted {
        app,
        channels,
        member,
        cursor,
        cors,
    })
}

/// Answers a CORS preflight for the SSE and long-poll endpoints.
pub(crate) async fn preflight(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(key): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(app) = state.node.apps.by_key(&key).cloned() else {
        return StreamError::new(StatusCode::NOT_FOUND, "unknown app key").into_response();
    };
    match cors_origin(&app, &headers) {
        Ok(origin) => {
            let mut res = StatusCode::NO_CONTENT.into_response();
            if let Some(origin) = origin {
                let h = res.headers_mut();
                add_cors(h, origin);
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, OPTIONS"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("Last-Event-ID, Content-Type, Cache-Control"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
            }
            res
        }
        Err(e) => e.into_response(),
    }
}

/// The error response for a stream that could not be opened, readable cross-origin.
pub(crate) fn open_failed(
    e: &crier_core::stream::StreamError,
    origin: Option<HeaderValue>,
) -> StreamError {
    use crier_core::stream::StreamError as E;
    let status = match e {
        E::PresenceFull(_) => StatusCode::FORBIDDEN,
        E::OverQuota => StatusCode::TOO_MANY_REQUESTS,
        E::History(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    StreamError {
        origin,
        ..StreamError::new(status, e.to_string())
    }
}
