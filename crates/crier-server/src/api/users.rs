//! `POST /apps/{id}/users/{user_id}/terminate_connections`.

use super::{authenticate, ApiError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::Json;
use serde_json::{json, Value};

pub(super) async fn terminate_connections(
    State(state): State<AppState>,
    Path((app_id, user_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(&state, &app_id, &method, &uri, &body)?;
    state.node.terminate_user(&signed.app, &user_id);
    tracing::info!(app = %signed.app.id, user = %user_id, "terminated user connections");
    Ok(Json(json!({})))
}
