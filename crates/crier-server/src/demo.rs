//! The demo pages under `/demo` (`[demo] enabled`, on by default): what a PHP shop's
//! push system looks like in the browser, each page showing one Crier feature.
//!
//! - `/demo/orders`: the order board, SSE with a plain `EventSource` on `orders` (where
//!   `examples/php/udp-order.php` publishes); resumes from its cursor after a restart.
//! - `/demo/approvals`: the approval inbox, long-poll with a `fetch` loop on
//!   `private-demo-approvals-{user}` with a JWT from `/demo/token`; its buttons publish
//!   the decision through `/demo/decide`.
//! - `/demo/chat`: team chat with stock pusher-js (the page's own copy,
//!   `/demo/pusher.min.js`): presence on `presence-demo-chat` (signed by `/demo/auth`),
//!   a typing indicator over client events, messages through `/demo/say` and their
//!   history on join from `/demo/history`.
//!
//! Everything acts for the first configured app and only on the channels above: the
//! endpoints sign for and publish to anyone who can reach the server, which is the point
//! of a demo and why it is served only on a loopback listener unless `[demo] enabled =
//! true` (and never with `enabled = false`). The files are compiled into the binary.

use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use crier_core::publish::EventRequest;
use crier_core::App;
use crier_protocol::ChannelName;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The presence channel of the team chat.
pub const CHAT_CHANNEL: &str = "presence-demo-chat";
/// The approval inbox of one user is this prefix plus the user id.
pub const APPROVALS_PREFIX: &str = "private-demo-approvals-";
/// Tokens for the inbox live this long; the page fetches a new one when refused.
const TOKEN_SECS: i64 = 3600;
/// Chat messages sent on join.
const HISTORY_ON_JOIN: usize = 50;
const MAX_TEXT: usize = 500;

const INDEX: &str = include_str!("../assets/demo/index.html");
const ORDERS: &str = include_str!("../assets/demo/orders.html");
const APPROVALS: &str = include_str!("../assets/demo/approvals.html");
const CHAT: &str = include_str!("../assets/demo/chat.html");
const CSS: &str = include_str!("../assets/demo/demo.css");
const PUSHER_JS: &str = include_str!("../assets/demo/pusher.min.js");
const PUSHER_JS_LICENCE: &str = include_str!("../assets/demo/pusher-js.LICENCE");

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo", get(|s: State<AppState>| page(s, INDEX)))
        .route("/demo/orders", get(|s: State<AppState>| page(s, ORDERS)))
        .route(
            "/demo/approvals",
            get(|s: State<AppState>| page(s, APPROVALS)),
        )
        .route("/demo/chat", get(|s: State<AppState>| page(s, CHAT)))
        .route("/demo/demo.css", get(|| async { file("text/css", CSS) }))
        .route(
            "/demo/pusher.min.js",
            get(|| async { file("text/javascript", PUSHER_JS) }),
        )
        .route(
            "/demo/pusher-js.LICENCE",
            get(|| async { file("text/plain", PUSHER_JS_LICENCE) }),
        )
        .route("/demo/token", get(token))
        .route("/demo/auth", post(auth))
        .route("/demo/decide", post(decide))
        .route("/demo/say", post(say))
        .route("/demo/history", get(history))
}

type Answer = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn refuse(status: StatusCode, error: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": error.into() })))
}

fn demo_app(state: &AppState) -> Result<Arc<App>, (StatusCode, Json<Value>)> {
    state
        .node
        .apps()
        .iter()
        .next()
        .cloned()
        .ok_or_else(|| refuse(StatusCode::SERVICE_UNAVAILABLE, "no app configured"))
}

async fn page(State(state): State<AppState>, html: &'static str) -> Response {
    match demo_app(&state) {
        Ok(app) => Html(html.replace("{{APP_KEY}}", &app.key)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let content_type = format!("{content_type}; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A user id or display name as the demo accepts it: short, printable, no markup.
fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.chars().count() <= max
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
}

fn now_secs() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

#[derive(Deserialize)]
struct TokenQuery {
    user: String,
}

/// `GET /demo/token?user=ID`: a JWT for that user's approval inbox (SSE, long-poll).
async fn token(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Answer {
    let app = demo_app(&state)?;
    if !valid_name(&q.user, 32) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "user: 1-32 letters or digits",
        ));
    }
    let exp = now_secs() + TOKEN_SECS;
    let claims = json!({
        "channels": [format!("{APPROVALS_PREFIX}{}", q.user)],
        "exp": exp,
        "sub": q.user,
    });
    let token = crier_protocol::token::issue(&claims, &app.secret);
    Ok(Json(json!({ "token": token, "exp": exp })))
}

#[derive(Deserialize)]
struct AuthForm {
    socket_id: String,
    channel_name: String,
    user_id: String,
    name: String,
}

/// `POST /demo/auth`: pusher-js's channel authorization, for the chat's presence
/// channel only; the member is who the page says it is (a demo has no login).
async fn auth(State(state): State<AppState>, Form(f): Form<AuthForm>) -> Answer {
    let app = demo_app(&state)?;
    if f.channel_name != CHAT_CHANNEL {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the demo signs only its chat",
        ));
    }
    if !valid_name(&f.user_id, 32) || !valid_name(&f.name, 40) {
        return Err(refuse(StatusCode::BAD_REQUEST, "user_id or name invalid"));
    }
    let channel_data = json!({ "user_id": f.user_id, "user_info": { "name": f.name } }).to_string();
    let auth = crier_protocol::signature::channel_auth(
        &app.key,
        &app.secret,
        &f.socket_id,
        &f.channel_name,
        Some(&channel_data),
    );
    Ok(Json(json!({ "auth": auth, "channel_data": channel_data })))
}

async fn publish(state: &AppState, channel: &str, event: &str, data: &Value) -> Answer {
    let app = demo_app(state)?;
    let request: EventRequest = serde_json::from_value(json!({
        "name": event,
        "channel": channel,
        "data": data.to_string(),
    }))
    .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let published = state
        .node
        .publish(&app, vec![request])
        .await
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let id = published.first().map(|p| p.id.clone());
    Ok(Json(json!({ "id": id })))
}

#[derive(Deserialize)]
struct Decision {
    user: String,
    approval: u64,
    decision: String,
}

/// `POST /demo/decide`: the inbox's approve/reject buttons. Publishes
/// `approval-decided` on the user's inbox, as the workflow system would.
async fn decide(State(state): State<AppState>, Json(d): Json<Decision>) -> Answer {
    if !valid_name(&d.user, 32) || !matches!(d.decision.as_str(), "approved" | "rejected") {
        return Err(refuse(StatusCode::BAD_REQUEST, "user or decision invalid"));
    }
    let channel = format!("{APPROVALS_PREFIX}{}", d.user);
    let data = json!({ "approval": d.approval, "decision": d.decision });
    publish(&state, &channel, "approval-decided", &data).await
}

#[derive(Deserialize)]
struct Say {
    user_id: String,
    name: String,
    text: String,
}

/// `POST /demo/say`: a chat message, published (so kept in history) on the chat channel.
async fn say(State(state): State<AppState>, Json(s): Json<Say>) -> Answer {
    let text = s.text.trim();
    if !valid_name(&s.user_id, 32) || !valid_name(&s.name, 40) {
        return Err(refuse(StatusCode::BAD_REQUEST, "user_id or name invalid"));
    }
    if text.is_empty() || text.chars().count() > MAX_TEXT {
        return Err(refuse(StatusCode::BAD_REQUEST, "text: 1-500 characters"));
    }
    // `mid` lets a joining page drop a live message that history already showed
    // (pusher-js does not pass Crier's message id on).
    let mid = format!("{:016x}", rand::random::<u64>());
    let data = json!({ "mid": mid, "user_id": s.user_id, "name": s.name, "text": text });
    publish(&state, CHAT_CHANNEL, "message", &data).await
}

/// `GET /demo/history`: the chat's last messages, oldest first, for a page that joins.
async fn history(State(state): State<AppState>) -> Answer {
    let app = demo_app(&state)?;
    let channel = ChannelName::parse(CHAT_CHANNEL).expect("a valid channel name");
    let retained = state.node.apps().retention(&app.id).max_messages.max(1);
    let page = state
        .node
        .read_history(&app.id, &channel, None, retained)
        .await
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let skip = page.messages.len().saturating_sub(HISTORY_ON_JOIN);
    let messages: Vec<Value> = page.messages[skip..]
        .iter()
        .filter(|m| &*m.event == "message")
        .map(|m| json!({ "id": m.id, "data": &*m.data }))
        .collect();
    Ok(Json(json!({ "messages": messages })))
}
