//! `POST /apps/{id}/events` and `batch_events`: publish, then answer with the
//! requested channel info.

use super::{authenticate, ApiError};
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::Json;
use crier_core::node::NodePublishError;
use crier_core::publish::{BatchRequest, EventRequest, PublishError};
use crier_core::App;
use crier_protocol::{ChannelKind, ChannelName};
use serde_json::{json, Map, Value};

fn publish_error(e: NodePublishError) -> ApiError {
    match e {
        NodePublishError::Invalid(PublishError::DataTooLarge(..)) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        NodePublishError::Invalid(PublishError::AppDisabled) => {
            ApiError::new(StatusCode::FORBIDDEN, e.to_string())
        }
        NodePublishError::Invalid(_) => ApiError::bad_request(e.to_string()),
        NodePublishError::Broker(_) => {
            tracing::error!(error = %e, "publish failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The `info` attributes for the channels of one event.
fn channel_info(
    state: &AppState,
    app: &App,
    req_info: Option<&str>,
    channels: &[String],
) -> Result<Option<Value>, ApiError> {
    let Some(info) = req_info.filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    let attrs: Vec<&str> = info.split(',').map(str::trim).collect();
    let mut out = Map::new();
    for name in channels {
        let channel = ChannelName::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let stats = state.node.hub.channel_stats(&app.id, &channel);
        let mut entry = Map::new();
        for attr in &attrs {
            match *attr {
                "subscription_count" => {
                    entry.insert(
                        attr.to_string(),
                        json!(stats.as_ref().map_or(0, |s| s.subscription_count)),
                    );
                }
                "user_count" if channel.kind() == ChannelKind::Presence => {
                    entry.insert(
                        attr.to_string(),
                        json!(stats.as_ref().map_or(0, |s| s.user_count)),
                    );
                }
                "user_count" => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown info attribute {other:?}"
                    )))
                }
            }
        }
        out.insert(name.clone(), Value::Object(entry));
    }
    Ok(Some(Value::Object(out)))
}

fn channels_of(req: &EventRequest) -> Vec<String> {
    req.channels
        .clone()
        .or_else(|| req.channel.clone().map(|c| vec![c]))
        .unwrap_or_default()
}

pub(super) async fn publish(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(&state, &app_id, &method, &uri, &body)?;
    let req: EventRequest = parse_json(&body)?;
    let info = req.info.clone();
    let channels = channels_of(&req);
    state
        .node
        .publish(&signed.app, vec![req])
        .await
        .map_err(publish_error)?;
    let body = match channel_info(&state, &signed.app, info.as_deref(), &channels)? {
        Some(info) => json!({ "channels": info }),
        None => json!({}),
    };
    Ok(Json(body))
}

pub(super) async fn publish_batch(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(&state, &app_id, &method, &uri, &body)?;
    let batch: BatchRequest = parse_json(&body)?;
    batch
        .check_size(&signed.app)
        .map_err(|e| publish_error(NodePublishError::Invalid(e)))?;
    let infos: Vec<(Option<String>, Vec<String>)> = batch
        .batch
        .iter()
        .map(|r| (r.info.clone(), channels_of(r)))
        .collect();
    state
        .node
        .publish(&signed.app, batch.batch)
        .await
        .map_err(publish_error)?;
    if infos
        .iter()
        .all(|(i, _)| i.as_deref().unwrap_or("").is_empty())
    {
        return Ok(Json(json!({})));
    }
    let mut out = Vec::new();
    for (info, channels) in infos {
        let attrs = channel_info(&state, &signed.app, info.as_deref(), &channels)?;
        // Pusher answers one object per event, holding the single channel's attributes.
        let entry = attrs
            .and_then(|v| v.as_object().and_then(|m| m.values().next().cloned()))
            .unwrap_or_else(|| json!({}));
        out.push(entry);
    }
    Ok(Json(json!({ "batch": out })))
}
