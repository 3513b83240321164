//! What SSE and long-poll requests share: finding the app, reading `channels`,
//! checking the JWT for private and presence channels, the cursor, CORS, and the
//! JSON errors of SPEC §4.

use crate::state::AppState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_core::position::Cursor;
use crier_core::stream::StreamMember;
use crier_core::App;
use crier_protocol::{token, ChannelKind, ChannelName, ChannelNameError};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub(crate) struct StreamQuery {
    pub channels: Option<String>,
    pub token: Option<String>,
    pub cursor: Option<String>,
    pub last_event_id: Option<String>,
    pub timeout: Option<String>,
}

/// An error before the stream starts: status and JSON body, with CORS headers so a
/// page on another origin can read it.
pub(crate) struct StreamError {
    status: StatusCode,
    message: String,
    origin: Option<HeaderValue>,
}

impl StreamError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            origin: None,
        }
    }

    /// The same error, readable by a page on `origin` (an allowed one).
    pub(crate) fn with_origin(self, origin: Option<HeaderValue>) -> Self {
        Self { origin, ..self }
    }
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        crate::metrics::rejected(crate::metrics::Rejection::Http(self.status.as_u16()));
        let mut res = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(origin) = self.origin {
            add_cors(res.headers_mut(), origin);
        }
        res
    }
}

pub(crate) fn add_cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
}

/// A validated stream request.
pub(crate) struct Admitted {
    pub app: Arc<App>,
    pub channels: Vec<ChannelName>,
    pub member: Option<StreamMember>,
    /// Resume point, if the client gave one.
    pub cursor: Option<Cursor>,
    /// The `Access-Control-Allow-Origin` value to send, if the request had an Origin.
    pub cors: Option<HeaderValue>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The CORS origin to allow for `app`, or an error for an origin it does not allow.
pub(crate) fn cors_origin(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, StreamError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let allowed = origin
        .to_str()
        .map(|o| app.origin_allowed(o))
        .unwrap_or(false);
    if allowed {
        Ok(Some(origin.clone()))
    } else {
        Err(StreamError::new(
            StatusCode::FORBIDDEN,
            "origin not allowed for this app",
        ))
    }
}

/// Why a `channels` list was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChannelsError {
    #[error("channels is required (comma-separated)")]
    Missing,
    #[error("at most {max} channels per stream ({given} given)")]
    TooMany { max: usize, given: usize },
    #[error("invalid channel: {0}")]
    Invalid(ChannelNameError),
    #[error("channel {0} cannot be subscribed to")]
    NotSubscribable(String),
}

/// Parses the comma-separated `channels` parameter (at most `max` names, the app's
/// `max_channels_per_connection`), keeping the first occurrence of each name in order.
///
/// The count is checked before any name is parsed, so a URL listing tens of thousands
/// of names costs one pass over its bytes rather than a parse (and, with the former
/// linear de-duplication, a quadratic search) per name. Names are counted as written,
/// duplicates included: a list over the limit is refused even if it repeats itself.
pub(crate) fn parse_channels(list: &str, max: usize) -> Result<Vec<ChannelName>, ChannelsError> {
    let names = || list.split(',').filter(|n| !n.is_empty());
    let count = names().count();
    if count == 0 {
        return Err(ChannelsError::Missing);
    }
    if count > max {
        return Err(ChannelsError::TooMany { max, given: count });
    }
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut channels = Vec::with_capacity(count);
    for name in names() {
        let channel = ChannelName::parse(name).map_err(ChannelsError::Invalid)?;
        if channel.kind() == ChannelKind::ServerToUser {
            return Err(ChannelsError::NotSubscribable(name.to_owned()));
        }
        if seen.insert(channel.clone()) {
            channels.push(channel);
        }
    }
    Ok(channels)
}

/// The 404 for an unknown app key, readable by the page that asked: which origins an
/// unknown app would allow cannot be known, so it carries the request's own Origin
/// (the body says no more than that the key is unknown).
pub(crate) fn unknown_key(key: &str, headers: &HeaderMap) -> StreamError {
    StreamError {
        origin: headers.get(header::ORIGIN).cloned(),
        ..StreamError::new(StatusCode::NOT_FOUND, format!("unknown app key {key:?}"))
    }
}

/// Checks everything SPEC §4 requires before a stream starts.
pub(crate) async fn admit(
    state: &AppState,
    key: &str,
    query: &StreamQuery,
    headers: &HeaderMap,
    cursor_text: Option<&str>,
) -> Result<Admitted, StreamError> {
    let app = state
        .node
        .apps()
        .by_key(key)
        .cloned()
        .ok_or_else(|| unknown_key(key, headers))?;
    let cors = cors_origin(&app, headers)?;
    let with_cors = |mut e: StreamError| {
        e.origin = cors.clone();
        e
    };
    if !app.enabled {
        return Err(with_cors(StreamError::new(
            StatusCode::FORBIDDEN,
            "app is disabled",
        )));
    }
    if state.draining() {
        return Err(with_cors(StreamError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down",
        )));
    }
    let max = app.limits.max_channels_per_connection;
    let channels = parse_channels(query.channels.as_deref().unwrap_or(""), max).map_err(|e| {
        let status = match e {
            ChannelsError::NotSubscribable(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        with_cors(StreamError::new(status, e.to_string()))
    })?;
    let mut member = None;
    if channels.iter().any(|c| c.kind().requires_auth()) {
        let raw = query
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                with_cors(StreamError::new(
                    StatusCode::UNAUTHORIZED,
                    "token is required for private and presence channels",
                ))
            })?;
        let claims = token::verify(raw, &app.secret, now_secs())
            .map_err(|e| with_cors(StreamError::new(StatusCode::UNAUTHORIZED, e.to_string())))?;
        for channel in channels.iter().filter(|c| c.kind().requires_auth()) {
            if !claims.allows(channel.as_str()) {
                return Err(with_cors(StreamError::new(
                    StatusCode::FORBIDDEN,
                    format!("token does not allow channel {channel}"),
                )));
            }
        }
        if channels.iter().any(|c| c.kind() == ChannelKind::Presence) {
            let sub = claims
                .sub
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    with_cors(StreamError::new(
                        StatusCode::UNAUTHORIZED,
                        "presence channels need a token with sub",
                    ))
                })?;
            // Every presence channel is checked before the stream joins any of them:
            // joining the first and then being refused by the second would announce
            // a member to the first channel's subscribers and webhooks for a request
            // that was rejected.
            let max = app.limits.max_presence_members;
            for channel in channels
                .iter()
                .filter(|c| c.kind() == ChannelKind::Presence)
            {
                if !state
                    .node
                    .presence_has_room(&app.id, channel, &sub, max)
                    .await
                {
                    return Err(with_cors(StreamError::new(
                        StatusCode::FORBIDDEN,
                        format!("presence channel {channel} is full"),
                    )));
                }
            }
            member = Some(StreamMember {
                user_id: Arc::from(sub),
                user_info: claims.user_info.clone().unwrap_or(serde_json::Value::Null),
            });
        }
    }
    let cursor =
        match cursor_text.filter(|c| !c.is_empty()) {
            Some(text) => {
                let single = (channels.len() == 1).then(|| &channels[0]);
                Some(Cursor::decode(text, single).map_err(|e| {
                    with_cors(StreamError::new(StatusCode::BAD_REQUEST, e.to_string()))
                })?)
            }
            None => None,
        };
    Ok(Admitted {
        app,
        channels,
        member,
        cursor,
        cors,
    })
}

/// Counts a stream or held poll against its client address, or refuses it with 429
/// when the address is at the app's `max_connections_per_ip`.
pub(crate) fn per_ip(
    state: &AppState,
    app: &App,
    client: Option<axum::Extension<crate::limits::ClientAddr>>,
    origin: Option<HeaderValue>,
) -> Result<Option<crate::limits::IpSlot>, StreamError> {
    let Some(axum::Extension(crate::limits::ClientAddr(ip))) = client else {
        return Ok(None);
    };
    state
        .ip_connections
        .try_acquire(app, ip)
        .map_err(|max| StreamError {
            origin,
            ..StreamError::new(
                StatusCode::TOO_MANY_REQUESTS,
                crate::limits::too_many_from_address(max),
            )
        })
}

/// Answers a CORS preflight for the SSE and long-poll endpoints.
pub(crate) async fn preflight(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(key): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(app) = state.node.apps().by_key(&key).cloned() else {
        return StreamError::new(StatusCode::NOT_FOUND, "unknown app key").into_response();
    };
    match cors_origin(&app, &headers) {
        Ok(origin) => {
            let mut res = StatusCode::NO_CONTENT.into_response();
            if let Some(origin) = origin {
                let h = res.headers_mut();
                add_cors(h, origin);
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, OPTIONS"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("Last-Event-ID, Content-Type, Cache-Control"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
            }
            res
        }
        Err(e) => e.into_response(),
    }
}

/// The error response for a stream that could not be opened, readable cross-origin.
pub(crate) fn open_failed(
    e: &crier_core::stream::StreamError,
    origin: Option<HeaderValue>,
) -> StreamError {
    use crier_core::stream::StreamError as E;
    let status = match e {
        E::PresenceFull(_) => {
            crate::metrics::limit_hit(crate::metrics::limits::MAX_PRESENCE_MEMBERS);
            StatusCode::FORBIDDEN
        }
        E::OverQuota => {
            crate::metrics::limit_hit(crate::metrics::limits::MAX_CONNECTIONS);
            StatusCode::TOO_MANY_REQUESTS
        }
        E::History(_) | E::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    StreamError {
        origin,
        ..StreamError::new(status, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default `max_channels_per_connection`.
    const MAX: usize = 100;

    fn names(channels: &[ChannelName]) -> Vec<&str> {
        channels.iter().map(ChannelName::as_str).collect()
    }

    #[test]
    fn keeps_first_occurrence_in_order() {
        let channels = parse_channels("b,a,,b,c,a", MAX).unwrap();
        assert_eq!(names(&channels), ["b", "a", "c"]);
    }

    #[test]
    fn the_limit_is_checked_before_names_are_parsed() {
        // Every name here is invalid: only a count taken before parsing answers TooMany.
        let list = vec!["bad name!"; MAX + 1].join(",");
        assert_eq!(
            parse_channels(&list, MAX),
            Err(ChannelsError::TooMany {
                max: MAX,
                given: MAX + 1
            })
        );
    }

    #[test]
    fn exactly_the_limit_is_allowed() {
        let list: Vec<String> = (0..MAX).map(|i| format!("c{i}")).collect();
        assert_eq!(parse_channels(&list.join(","), MAX).unwrap().len(), MAX);
    }

    #[test]
    fn a_huge_list_is_refused_quickly() {
        let list: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
        let err = parse_channels(&list.join(","), MAX).unwrap_err();
        assert_eq!(
            err,
            ChannelsError::TooMany {
                max: MAX,
                given: 20_000
            }
        );
        assert!(err.to_string().contains("at most 100 channels"), "{err}");
    }

    #[test]
    fn empty_invalid_and_server_to_user_lists_are_refused() {
        assert_eq!(parse_channels(",,", MAX), Err(ChannelsError::Missing));
        assert!(matches!(
            parse_channels("ok,bad name!", MAX),
            Err(ChannelsError::Invalid(_))
        ));
        assert_eq!(
            parse_channels("#server-to-user-1", MAX),
            Err(ChannelsError::NotSubscribable("#server-to-user-1".into()))
        );
    }
}
