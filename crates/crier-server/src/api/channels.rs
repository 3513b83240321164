//! Channel queries: `GET /channels`, `/channels/{name}`, `/channels/{name}/users`.

use super::{authenticate, query_value, ApiError};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::Json;
use crier_protocol::{ChannelKind, ChannelName};
use serde_json::{json, Map, Value};

fn attributes(info: Option<&str>) -> Vec<&str> {
    info.map(|i| {
        i.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

pub(super) async fn list(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(&state, &app_id, &method, &uri, &[])?;
    let prefix = query_value(&signed.query, "filter_by_prefix").unwrap_or("");
    let attrs = attributes(query_value(&signed.query, "info"));
    for attr in &attrs {
        match *attr {
            "user_count" if prefix.starts_with("presence-") => {}
            "user_count" => {
                return Err(ApiError::bad_request(
                    "info=user_count needs filter_by_prefix=presence-",
                ))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown info attribute {other:?}"
                )))
            }
        }
    }
    let mut channels = Map::new();
    let occupied = state
        .node
        .channels(&signed.app.id, prefix)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    for stats in occupied {
        let mut entry = Map::new();
        if attrs.contains(&"user_count") {
            entry.insert("user_count".into(), json!(stats.user_count));
        }
        channels.insert(stats.channel.to_string(), Value::Object(entry));
    }
    Ok(Json(json!({ "channels": channels })))
}

fn parse_channel(name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(name).map_err(|e| ApiError::bad_request(format!("invalid channel: {e}")))
}

pub(super) async fn show(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(&state, &app_id, &method, &uri, &[])?;
    let channel = parse_channel(&channel)?;
    let stats = state
        .node
        .channel_stats(&signed.app.id, &channel)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut out = Map::new();
    out.insert("occupied".into(), json!(stats.is_some()));
    for attr in attributes(query_value(&signed.query, "info")) {
        match attr {
            "subscription_count" => {
                out.insert(
                    attr.into(),
                    json!(stats.as_ref().map_or(0, |s| s.subscription_count)),
                );
            }
            "user_count" if channel.kind() == ChannelKind::Presence => {
                out.insert(
                    attr.into(),
                    json!(stats.as_ref().map_or(0, |s| s.user_count)),
                );
            }
            "user_count" => {
                return Err(ApiError::bad_request(
                    "user_count is only available for presence channels",
                ))
            }
            "cache" if channel.is_cache() => {
                let last = state
                    .node
                    .last_message(&signed.app.id, &channel)
                    .await
                    .map_err(|e| {
                        ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    })?;
                if let Some(m) = last {
                    let age =
                        crier_core::message::now_ms().saturating_sub(m.published_at_ms) / 1000;
                    let ttl = signed.app.retention.max_age.as_secs().saturating_sub(age);
                    out.insert(
                        "cache".into(),
                        json!({ "event": &*m.event, "data": &*m.data, "ttl": ttl }),
                    );
                }
            }
            "cache" => {
                return Err(ApiError::bad_request(
                    "cache is only available for cache channels",
                ))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown info attribute {other:?}"
                )))
            }
        }
    }
    Ok(Json(Value::Object(out)))
}

pub(super) async fn users(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(&state, &app_id, &method, &uri, &[])?;
    let channel = parse_channel(&channel)?;
    if channel.kind() != ChannelKind::Presence {
        return Err(ApiError::bad_request(
            "users are only available for presence channels",
        ));
    }
    let users: Vec<Value> = state
        .node
        .members(&signed.app.id, &channel)
        .await
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(Json(json!({ "users": users })))
}
