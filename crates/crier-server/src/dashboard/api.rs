//! The dashboard's JSON: what the node holds now (apps, channels, members) and what
//! its metrics say (connections, message rates, errors), read-only; and the one
//! write, publishing a test event.

use super::stats::{self, Sample};
use crate::api::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use crier_core::publish::EventRequest;
use crier_core::App;
use crier_protocol::{ChannelKind, ChannelName};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Busiest channels listed per app.
const BUSIEST: usize = 10;

/// `GET /dashboard/api/overview`: counts, rates, the chart's points, errors by kind.
pub(super) async fn overview(State(state): State<AppState>) -> Json<Value> {
    let series = stats::current();
    let now = Sample::of(&series, stats::now_ms());
    // Whole sampling intervals only: a last point from the latest sample to now would
    // cover a fraction of an interval, and show a dip that is not there.
    let samples = state.dashboard.snapshot();
    let chart: Vec<Value> = samples
        .windows(2)
        .map(|w| {
            json!({
                "t": w[1].at_ms,
                "in": stats::rate(&w[0], &w[1], |s| s.published),
                "out": stats::rate(&w[0], &w[1], |s| s.delivered),
            })
        })
        .collect();
    // The rate over the last whole sampling interval.
    let last_rate = |field: fn(&Sample) -> f64| match samples.len() {
        n if n >= 2 => stats::rate(&samples[n - 2], &samples[n - 1], field),
        _ => 0.0,
    };
    let oldest = samples.first().unwrap_or(&now);
    let mut errors: Vec<(String, f64, f64)> = now
        .errors
        .iter()
        .map(|(key, total)| {
            let before = oldest.errors.get(key).copied().unwrap_or(0.0);
            (key.clone(), *total, (total - before).max(0.0))
        })
        .collect();
    errors.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.total_cmp(&a.1)));
    let (mut channels, mut subscriptions) = (0, 0);
    for app in state.node.apps().iter() {
        // Counts that cannot be read (the broker is down) show as none.
        let list = state.node.channels(&app.id, "").await.unwrap_or_default();
        channels += list.len();
        subscriptions += list.iter().map(|x| x.subscription_count).sum::<usize>();
    }
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "tls": state.config.tls_files().is_some(),
        "sample_every_secs": stats::SAMPLE_EVERY.as_secs(),
        "connections": connections(&state, &series),
        "channels": channels,
        "subscriptions": subscriptions,
        "messages": {
            "in_per_sec": last_rate(|s| s.published),
            "out_per_sec": last_rate(|s| s.delivered),
            "poll_requests_per_sec": last_rate(|s| s.poll_requests),
            "published_total": now.published,
            "delivered_total": now.delivered,
        },
        "chart": chart,
        "errors": errors
            .into_iter()
            .map(|(series, total, recent)| json!({"series": series, "total": total, "recent": recent}))
            .collect::<Vec<_>>(),
    }))
}

/// Open connections by transport. A `crier_connections` family labelled by
/// `transport` is used as it is; otherwise WebSocket sessions are the gauge less the
/// pusher-js HTTP fallback sessions (which are sessions too), SSE streams their own.
fn connections(state: &AppState, series: &[stats::Series]) -> Value {
    let labelled: Vec<&stats::Series> = series
        .iter()
        .filter(|s| s.name == "crier_connections" && s.labels.iter().any(|(k, _)| k == "transport"))
        .collect();
    if !labelled.is_empty() {
        let mut by = serde_json::Map::new();
        for s in labelled {
            let transport = s
                .labels
                .iter()
                .find(|(k, _)| k == "transport")
                .map_or("", |(_, v)| v.as_str());
            let sum = by.get(transport).and_then(Value::as_f64).unwrap_or(0.0) + s.value;
            by.insert(transport.to_owned(), json!(sum));
        }
        return Value::Object(by);
    }
    let xhr = state.fallback_sessions.len() as f64;
    let sessions = stats::total(series, "crier_connections");
    json!({
        "ws": (sessions - xhr).max(0.0),
        "sse": stats::total(series, "crier_sse_streams"),
        "xhr": xhr,
    })
}

/// `GET /dashboard/api/apps`: each app with its busiest channels.
pub(super) async fn apps(State(state): State<AppState>) -> Json<Value> {
    let mut apps: Vec<Value> = Vec::new();
    for app in state.node.apps().iter() {
        apps.push({
            let mut channels = state.node.channels(&app.id, "").await.unwrap_or_default();
            channels.sort_by(|a, b| {
                b.subscription_count
                    .cmp(&a.subscription_count)
                    .then_with(|| a.channel.as_str().cmp(b.channel.as_str()))
            });
            let subscriptions: usize = channels.iter().map(|c| c.subscription_count).sum();
            let busiest: Vec<Value> = channels
                .iter()
                .take(BUSIEST)
                .map(|c| {
                    json!({
                        "channel": c.channel.as_str(),
                        "presence": c.channel.kind() == ChannelKind::Presence,
                        "subscription_count": c.subscription_count,
                        "user_count": c.user_count,
                    })
                })
                .collect();
            json!({
                "id": app.id,
                "key": app.key,
                "enabled": app.enabled,
                "connections": app.connection_count(),
                "channels": channels.len(),
                "subscriptions": subscriptions,
                "busiest": busiest,
            })
        });
    }
    Json(json!({ "apps": apps }))
}

fn find_app(state: &AppState, app_id: &str) -> Result<Arc<App>, ApiError> {
    state
        .node
        .apps()
        .by_id(app_id)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown app {app_id:?}")))
}

fn channel_name(name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(name)
        .map_err(|e| ApiError::bad_request(format!("invalid channel name {name:?}: {e}")))
}

/// `GET /dashboard/api/apps/{id}/channels/{channel}`: its counts and, on a presence
/// channel, its members' user ids.
pub(super) async fn channel(
    State(state): State<AppState>,
    Path((app_id, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = find_app(&state, &app_id)?;
    let channel = channel_name(&name)?;
    let stats = state
        .node
        .channel_stats(&app.id, &channel)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let presence = channel.kind() == ChannelKind::Presence;
    let members = if presence {
        Some(state.node.members(&app.id, &channel).await)
    } else {
        None
    };
    Ok(Json(json!({
        "app": app.id,
        "channel": channel.as_str(),
        "presence": presence,
        "occupied": stats.is_some(),
        "subscription_count": stats.as_ref().map_or(0, |s| s.subscription_count),
        "user_count": stats.as_ref().map_or(0, |s| s.user_count),
        "members": members,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestEvent {
    channel: String,
    event: String,
    data: String,
}

/// `POST /dashboard/api/apps/{id}/events` with `{"channel", "event", "data"}`
/// (JSON only): publishes as the HTTP API would. A JSON body cannot be sent across
/// sites without a CORS preflight that Crier does not grant, and an `Origin` must be
/// this server's own, so another site open in the operator's browser cannot publish.
pub(super) async fn send_test_event(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    same_origin(&headers)?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the test event as application/json",
        ));
    }
    let event: TestEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid test event: {e}")))?;
    let app = find_app(&state, &app_id)?;
    channel_name(&event.channel)?;
    let request: EventRequest = serde_json::from_value(json!({
        "name": event.event,
        "channel": event.channel,
        "data": event.data,
    }))
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    state
        .node
        .publish(&app, vec![request])
        .await
        .map_err(crate::api::publish_error)?;
    Ok(Json(json!({
        "published": true,
        "app": app.id,
        "channel": event.channel,
        "event": event.event,
    })))
}

fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    if host.is_some() && origin_host == host {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "test events are sent from the dashboard page only (Origin is not this server)",
        ))
    }
}
