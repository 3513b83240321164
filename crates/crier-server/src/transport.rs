//! Client transports: thin adapters that move bytes between a connection and its
//! `crier-core` session.

pub mod ws;

use crate::server::AppState;
use axum::routing::get;
use axum::Router;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/app/{key}", get(ws::upgrade))
}
