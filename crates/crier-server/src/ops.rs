//! Operations endpoints: `/health` (alive), `/ready` (take traffic?), `/metrics`.

use crate::server::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !state.node.broker.healthy() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: broker unavailable\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics() -> impl IntoResponse {
    // Read at scrape time: a task count that only grows is how a leak of connection
    // tasks shows (crier-bench soak watches it).
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    metrics::gauge!("crier_runtime_alive_tasks").set(tasks as f64);
    let body = crate::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
