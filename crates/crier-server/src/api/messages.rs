//! `GET /apps/{id}/channels/{name}/messages?since=&limit=`: page through history.

use super::{authenticate, query_value, ApiError};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::Json;
use crier_core::position::Cursor;
use crier_protocol::ChannelName;
use serde_json::{json, Value};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) async fn list(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(&state, &app_id, &method, &uri, &[])?;
    let channel = ChannelName::parse(&channel)
        .map_err(|e| ApiError::bad_request(format!("invalid channel: {e}")))?;
    let limit = match query_value(&signed.query, "limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")))?,
        None => DEFAULT_LIMIT,
    };
    let after = match query_value(&signed.query, "since").filter(|s| !s.is_empty()) {
        Some(since) => {
            let cursor = Cursor::decode(since, Some(&channel))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Some(
                cursor
                    .get(&channel)
                    .cloned()
                    .ok_or_else(|| ApiError::bad_request("since does not cover this channel"))?,
            )
        }
        None => None,
    };
    let page = state
        .node
        .read_history(&signed.app.id, &channel, after.as_ref(), limit)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let messages: Vec<Value> = page
        .messages
        .iter()
        .map(|m| json!({ "id": m.id, "channel": m.channel.as_str(), "event": &*m.event, "data": &*m.data }))
        .collect();
    Ok(Json(json!({
        "messages": messages,
        "cursor": page.position.to_id(),
        "gap": page.gap,
        "more": page.more,
    })))
}
