//! Operations endpoints: `/health` (alive), `/ready` (take traffic?), `/metrics`.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn health() -> &'static str {
    "ok\n"
}

/// `{"status": "ready"}`, or 503 with the component that keeps the node from taking
/// traffic, so an operator sees which one without reading the logs.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let unavailable = |component: &str, error: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "component": component, "error": error})),
        )
    };
    if state.draining() {
        unavailable("server", "draining".into())
    } else if let Err(why) = state.node.health() {
        unavailable(why.component, why.error)
    } else {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    use crate::metrics::names;
    // Read at scrape time: a task count that only grows is how a leak of connection
    // tasks shows (crier-bench soak watches it).
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    metrics::gauge!(names::TASKS).set(tasks as f64);
    if let Some(history) = &state.history {
        let (journal, tables) = history.disk_space();
        metrics::gauge!(names::HISTORY_BYTES).set((journal + tables) as f64);
        metrics::gauge!(names::HISTORY_MESSAGES).set(history.approximate_messages() as f64);
    }
    let body = crate::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
