//! `/dashboard`: a live page served by Crier itself (HTML, JS and CSS compiled into
//! the binary, no build step, nothing from a CDN) and the JSON it reads under
//! `/dashboard/api/`. Read-only, except the form that publishes a test event.
//!
//! Who may see it is decided in [`auth`]; every route here goes through [`guard`].

mod api;
pub(crate) mod auth;
pub(crate) mod stats;

use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;

const PAGE: &str = include_str!("dashboard/assets/index.html");
const SCRIPT: &str = include_str!("dashboard/assets/dashboard.js");
const STYLE: &str = include_str!("dashboard/assets/dashboard.css");

/// The dashboard's routes, or none when `[dashboard] enabled = false` (404).
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    if !state.config.dashboard.enabled {
        return Router::new();
    }
    let send = post(api::send_test_event).layer(middleware::from_fn_with_state(
        state.clone(),
        crate::api::buffered_body,
    ));
    Router::new()
        .route(
            "/dashboard",
            get(|| asset("text/html; charset=utf-8", PAGE)),
        )
        .route(
            "/dashboard/dashboard.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/dashboard/dashboard.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route("/dashboard/api/overview", get(api::overview))
        .route("/dashboard/api/apps", get(api::apps))
        .route(
            "/dashboard/api/apps/{app_id}/channels/{channel}",
            get(api::channel),
        )
        .route("/dashboard/api/apps/{app_id}/events", send)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// Lets a request through when [`auth::check`] does, and marks every answer as not
/// to be cached, framed or sniffed; the page may load only its own script and style.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut response = match auth::check(&state.config.dashboard, peer, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(auth::Denied::Login) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "the dashboard needs a login: [dashboard] username and password, or token",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Crier dashboard\", charset=\"UTF-8\""),
            );
            r
        }
        Err(auth::Denied::NoLoginConfigured) => error(
            StatusCode::FORBIDDEN,
            "the dashboard is open to loopback clients only; set [dashboard] username and \
             password, or token, to use it from elsewhere",
        ),
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
