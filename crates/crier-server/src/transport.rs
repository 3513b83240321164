//! Client transports: thin adapters that move bytes between a connection and its
//! `crier-core` session.

pub mod http_fallback;
pub mod poll;
pub mod sse;
pub(crate) mod stream_request;
pub mod ws;

use crate::state::AppState;
use axum::routing::get;
use axum::Router;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/{key}", get(ws::upgrade))
        .route(
            "/app/{key}/sse",
            get(sse::handle).options(stream_request::preflight),
        )
        .route(
            "/app/{key}/poll",
            get(poll::handle).options(stream_request::preflight),
        )
        .merge(http_fallback::routes())
}
