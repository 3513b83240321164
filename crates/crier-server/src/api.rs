//! The Pusher-compatible HTTP API (SPEC §3): request signing, errors, and routes.

mod channels;
mod events;
mod messages;
mod users;

pub(crate) use events::publish_error;

use crate::state::AppState;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crier_core::App;
use crier_protocol::signature::{self, QueryPairs, RequestAuthError};
use std::sync::Arc;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app_id}/events", post(events::publish))
        .route("/apps/{app_id}/batch_events", post(events::publish_batch))
        .route("/apps/{app_id}/channels", get(channels::list))
        .route("/apps/{app_id}/channels/{channel}", get(channels::show))
        .route(
            "/apps/{app_id}/channels/{channel}/users",
            get(channels::users),
        )
        .route(
            "/apps/{app_id}/channels/{channel}/messages",
            get(messages::list),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(users::terminate_connections),
        )
}

/// An API error: a status and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (a rate limit's 429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::rejected(crate::metrics::Rejection::Http(self.status.as_u16()));
        let mut res = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

/// Times every API request, body reading included, into
/// `crier_http_request_duration_seconds{endpoint}`.
pub(crate) async fn timed(request: Request, next: Next) -> Response {
    let endpoint = endpoint(request.extensions().get::<MatchedPath>());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(crate::metrics::names::API_DURATION, "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The `endpoint` label of a route of [`routes`]: its last fixed segment.
fn endpoint(path: Option<&MatchedPath>) -> &'static str {
    match path.map(MatchedPath::as_str).unwrap_or("") {
        p if p.ends_with("/batch_events") => "batch_events",
        p if p.ends_with("/events") => "events",
        p if p.ends_with("/channels") => "channels",
        p if p.ends_with("/users") => "channel_users",
        p if p.ends_with("/messages") => "channel_messages",
        p if p.ends_with("/terminate_connections") => "terminate_connections",
        p if p.ends_with("/{channel}") => "channel",
        _ => "other",
    }
}

/// Reads the body of every API request before its handler runs, so a body over
/// `max_body_bytes` or one that trickles in gets a JSON error (413, 408) on every
/// endpoint, before anything is authenticated or published.
pub(crate) async fn buffered_body(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let server = &state.config.server;
    let (parts, body) = request.into_parts();
    let deadline = std::time::Duration::from_secs(server.handshake_timeout_secs);
    match crate::request_body::read(&parts.headers, body, server.max_body_bytes, deadline).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            crate::metrics::limit_hit(match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => crate::metrics::limits::MAX_BODY_BYTES,
                _ => crate::metrics::limits::HANDSHAKE_TIMEOUT,
            });
            ApiError::new(e.status(), e.message("server.max_body_bytes")).into_response()
        }
    }
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
}

/// Decodes a query string into pairs (percent-decoding values).
///
/// # Errors
/// A query string that is not `application/x-www-form-urlencoded`.
pub fn query_pairs(uri: &Uri) -> Result<QueryPairs, ApiError> {
    serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

pub(crate) fn query_value<'a>(query: &'a QueryPairs, name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A request whose signature checked out.
pub(crate) struct Signed {
    pub app: Arc<App>,
    pub query: QueryPairs,
}

/// Finds the app and verifies Pusher's request signature.
pub(crate) fn authenticate(
    state: &AppState,
    app_id: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<Signed, ApiError> {
    let app =
        state.node.apps().by_id(app_id).cloned().ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("unknown app {app_id:?}"))
        })?;
    let query = query_pairs(uri)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    signature::verify_request(
        &app.key,
        &app.secret,
        method.as_str(),
        uri.path(),
        &query,
        body,
        now,
    )
    .map_err(|e| {
        let status = match e {
            RequestAuthError::Missing(_)
            | RequestAuthError::BadVersion
            | RequestAuthError::BadTimestamp => StatusCode::UNAUTHORIZED,
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, e.to_string())
    })?;
    if !app.enabled {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "app is disabled"));
    }
    Ok(Signed { app, query })
}
