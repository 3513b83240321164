//! `/`: a short page naming Crier's endpoints and linking the dashboard, or the same
//! as JSON for a client that asks for JSON (`Accept: application/json`).

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/", get(landing))
}

async fn landing(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let tls = state.config.tls_files().is_some();
    let dashboard = state.config.dashboard.enabled;
    if wants_json(&headers) {
        return Json(describe(tls, dashboard)).into_response();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("HOST");
    Html(page(&escape(host), tls, dashboard)).into_response()
}

/// JSON only when asked for and HTML not preferred: browsers list `text/html`.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

fn describe(tls: bool, dashboard: bool) -> Value {
    let ws = if tls { "wss" } else { "ws" };
    json!({
        "name": "crier",
        "version": env!("CARGO_PKG_VERSION"),
        "tls": tls,
        "endpoints": {
            "websocket": format!("{ws}://HOST/app/{{app_key}}?protocol=7"),
            "sse": "/app/{app_key}/sse?channels={channels}",
            "long_poll": "/app/{app_key}/poll?channels={channels}",
            "http_api": "/apps/{app_id}/events",
            "health": "/health",
            "ready": "/ready",
            "metrics": "/metrics",
            "dashboard": dashboard.then_some("/dashboard"),
        },
    })
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn page(host: &str, tls: bool, dashboard: bool) -> String {
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let version = env!("CARGO_PKG_VERSION");
    let dashboard = if dashboard {
        r#"<p class="dash"><a href="/dashboard">Open the dashboard &rarr;</a></p>"#
    } else {
        "<p>The dashboard is turned off (<code>[dashboard] enabled = false</code>).</p>"
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Crier</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1d2430}}
code{{background:#eef1f5;padding:.1em .3em;border-radius:3px}}td{{padding:.25rem .75rem .25rem 0;vertical-align:top}}
.dash a{{display:inline-block;background:#2b5fd9;color:#fff;padding:.5rem 1rem;border-radius:6px;text-decoration:none}}</style>
</head><body>
<h1>Crier <small>{version}</small></h1>
<p>A real-time push server: the Pusher Channels protocol over WebSocket, Server-Sent Events and long-polling, a Pusher-compatible HTTP API, and history so clients that reconnect get what they missed.</p>
{dashboard}
<h2>Endpoints</h2>
<table>
<tr><td>WebSocket (Pusher protocol 7)</td><td><code>{ws}://{host}/app/{{app_key}}?protocol=7</code></td></tr>
<tr><td>Server-Sent Events</td><td><code>{http}://{host}/app/{{app_key}}/sse?channels=a,b</code></td></tr>
<tr><td>Long-polling</td><td><code>{http}://{host}/app/{{app_key}}/poll?channels=a,b</code></td></tr>
<tr><td>HTTP API (signed as Pusher signs)</td><td><code>POST {http}://{host}/apps/{{app_id}}/events</code></td></tr>
<tr><td>Operations</td><td><a href="/health"><code>/health</code></a> <a href="/ready"><code>/ready</code></a> <a href="/metrics"><code>/metrics</code></a></td></tr>
</table>
<p>Ask for <code>Accept: application/json</code> to get this as JSON.</p>
</body></html>
"#
    )
}
