//! `POST /apps/{id}/events` and `batch_events`: validate the whole request, publish,
//! then answer with the requested channel info.

use super::{authenticate, ApiError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::Json;
use crier_core::node::NodePublishError;
use crier_core::publish::{BatchRequest, EventRequest, PublishError};
use crier_core::App;
use crier_protocol::{ChannelKind, ChannelName};
use serde_json::{json, Map, Value};

pub(crate) fn publish_error(e: NodePublishError) -> ApiError {
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

/// A channel attribute a publish may ask for with `info`.
#[derive(Clone, Copy)]
enum InfoAttr {
    SubscriptionCount,
    UserCount,
}

/// Parses `info`. Called before publishing: a request refused for its `info` must not
/// have published anything (SPEC §3).
fn parse_info(info: Option<&str>) -> Result<Vec<InfoAttr>, ApiError> {
    let Some(info) = info.filter(|i| !i.is_empty()) else {
        return Ok(Vec::new());
    };
    info.split(',')
        .map(str::trim)
        .map(|attr| match attr {
            "subscription_count" => Ok(InfoAttr::SubscriptionCount),
            "user_count" => Ok(InfoAttr::UserCount),
            other => Err(ApiError::bad_request(format!(
                "unknown info attribute {other:?} (info accepts subscription_count, user_count)"
            ))),
        })
        .collect()
}

/// The requested attributes of each channel of one published event (`None` when
/// nothing was requested). The channels were validated by the publish.
async fn channel_info(
    state: &AppState,
    app: &App,
    attrs: &[InfoAttr],
    channels: &[String],
) -> Option<Value> {
    if attrs.is_empty() {
        return None;
    }
    let mut out = Map::new();
    for name in channels {
        let Ok(channel) = ChannelName::parse(name) else {
            continue;
        };
        // The publish is done: counts that cannot be read are reported as none
        // rather than failing it.
        let stats = state
            .node
            .channel_stats(&app.id, &channel)
            .await
            .unwrap_or_default();
        let mut entry = Map::new();
        for attr in attrs {
            match attr {
                InfoAttr::SubscriptionCount => {
                    entry.insert(
                        "subscription_count".into(),
                        json!(stats.as_ref().map_or(0, |s| s.subscription_count)),
                    );
                }
                InfoAttr::UserCount if channel.kind() == ChannelKind::Presence => {
                    entry.insert(
                        "user_count".into(),
                        json!(stats.as_ref().map_or(0, |s| s.user_count)),
                    );
                }
                InfoAttr::UserCount => {}
            }
        }
        out.insert(name.clone(), Value::Object(entry));
    }
    Some(Value::Object(out))
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
    // After authentication: requests that are not the app's do not use its budget.
    state.publish_rates.admit(&signed.app)?;
    let req: EventRequest = parse_json(&body)?;
    let attrs = parse_info(req.info.as_deref())?;
    let channels = channels_of(&req);
    let published = state
        .node
        .publish(&signed.app, vec![req])
        .await
        .map_err(publish_error)?;
    crate::metrics::published("http", &signed.app.id, published.len() as u64);
    let body = match channel_info(&state, &signed.app, &attrs, &channels).await {
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
    // After authentication: requests that are not the app's do not use its budget.
    state.publish_rates.admit(&signed.app)?;
    let batch: BatchRequest = parse_json(&body)?;
    batch
        .check_size(&signed.app)
        .map_err(|e| publish_error(NodePublishError::Invalid(e)))?;
    let infos = batch
        .batch
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let attrs = parse_info(r.info.as_deref())
                .map_err(|e| ApiError::bad_request(format!("batch[{i}]: {}", e.message)))?;
            Ok((attrs, channels_of(r)))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let published = state
        .node
        .publish(&signed.app, batch.batch)
        .await
        .map_err(publish_error)?;
    crate::metrics::published("http", &signed.app.id, published.len() as u64);
    if infos.iter().all(|(attrs, _)| attrs.is_empty()) {
        return Ok(Json(json!({})));
    }
    let mut out = Vec::new();
    for (attrs, channels) in infos {
        let attrs = channel_info(&state, &signed.app, &attrs, &channels).await;
        // Pusher answers one object per event, holding the single channel's attributes.
        let entry = attrs
            .and_then(|v| v.as_object().and_then(|m| m.values().next().cloned()))
            .unwrap_or_else(|| json!({}));
        out.push(entry);
    }
    Ok(Json(json!({ "batch": out })))
}
