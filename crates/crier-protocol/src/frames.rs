//! The JSON frames of the Pusher protocol: parsing what clients send and encoding what
//! the server sends. Encoders return the exact text of one WebSocket frame; a channel
//! event is encoded once and the same bytes go to every subscriber.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A message from a client, as far as the protocol layer can tell without app state.
#[derive(Debug, Clone)]
pub enum ClientMessage {
    Ping,
    Pong,
    Subscribe(SubscribeRequest),
    Unsubscribe {
        channel: String,
    },
    Signin {
        auth: String,
        user_data: String,
    },
    /// `client-*` event, forwarded as is (its data is never parsed).
    ClientEvent {
        event: String,
        channel: String,
        data: Box<RawValue>,
    },
    /// Any other `pusher:` event; ignored as Pusher does.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SubscribeRequest {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
    /// Crier extension: resume after this cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

// By hand because `RawValue` has no `PartialEq`: client event data compares as text,
// which is what the server relays.
impl PartialEq for ClientMessage {
    fn eq(&self, other: &Self) -> bool {
        use ClientMessage as M;
        match (self, other) {
            (M::Ping, M::Ping) | (M::Pong, M::Pong) => true,
            (M::Subscribe(a), M::Subscribe(b)) => a == b,
            (M::Unsubscribe { channel: a }, M::Unsubscribe { channel: b }) => a == b,
            (
                M::Signin { auth, user_data },
                M::Signin {
                    auth: auth2,
                    user_data: user_data2,
                },
            ) => auth == auth2 && user_data == user_data2,
            (
                M::ClientEvent {
                    event,
                    channel,
                    data,
                },
                M::ClientEvent {
                    event: event2,
                    channel: channel2,
                    data: data2,
                },
            ) => event == event2 && channel == channel2 && data.get() == data2.get(),
            (M::Other(a), M::Other(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ClientMessage {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("message has no event")]
    MissingEvent,
    #[error("{0} data is invalid: {1}")]
    InvalidData(&'static str, String),
    #[error("client events need a channel")]
    MissingChannel,
}

#[derive(Deserialize)]
struct RawClientMessage<'a> {
    #[serde(borrow, default)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// Data may arrive as an object or, from older clients, as a JSON-encoded string.
fn data_as<T: serde::de::DeserializeOwned>(
    what: &'static str,
    data: Option<&RawValue>,
) -> Result<T, FrameError> {
    let raw = data.map(RawValue::get).unwrap_or("{}");
    let parsed: serde_json::Result<T> = match serde_json::from_str::<String>(raw) {
        Ok(inner) => serde_json::from_str(&inner),
        Err(_) => serde_json::from_str(raw),
    };
    parsed.map_err(|e| FrameError::InvalidData(what, e.to_string()))
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

#[derive(Deserialize)]
struct UnsubscribeData {
    channel: String,
}

impl ClientMessage {
    /// Parses one text frame.
    ///
    /// # Errors
    /// Invalid JSON, no `event`, or a `pusher:` event whose data lacks its fields.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let raw: RawClientMessage<'_> =
            serde_json::from_str(text).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
        let event = raw.event.ok_or(FrameError::MissingEvent)?;
        let data = raw.data.as_deref();
        Ok(match event.as_ref() {
            "pusher:ping" => ClientMessage::Ping,
            "pusher:pong" => ClientMessage::Pong,
            "pusher:subscribe" => ClientMessage::Subscribe(data_as("pusher:subscribe", data)?),
            "pusher:unsubscribe" => {
                let d: UnsubscribeData = data_as("pusher:unsubscribe", data)?;
                ClientMessage::Unsubscribe { channel: d.channel }
            }
            "pusher:signin" => {
                let d: SigninData = data_as("pusher:signin", data)?;
                ClientMessage::Signin {
                    auth: d.auth,
                    user_data: d.user_data,
                }
            }
            e if e.starts_with("client-") => ClientMessage::ClientEvent {
                event: e.to_owned(),
                channel: raw.channel.ok_or(FrameError::MissingChannel)?,
                data: raw
                    .data
                    .unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON")),
            },
            other => ClientMessage::Other(other.to_owned()),
        })
    }

    /// The frame a client sends for this message, as pusher-js writes it. For every
    /// message [`ClientMessage::parse`] returns, parsing the encoding gives it back.
    pub fn encode(&self) -> String {
        let empty = || serde_json::json!({});
        match self {
            ClientMessage::Ping => frame("pusher:ping", None, empty()),
            ClientMessage::Pong => frame("pusher:pong", None, empty()),
            ClientMessage::Subscribe(req) => frame("pusher:subscribe", None, req),
            ClientMessage::Unsubscribe { channel } => frame(
                "pusher:unsubscribe",
                None,
                serde_json::json!({ "channel": channel }),
            ),
            ClientMessage::Signin { auth, user_data } => frame(
                "pusher:signin",
                None,
                serde_json::json!({ "auth": auth, "user_data": user_data }),
            ),
            ClientMessage::ClientEvent {
                event,
                channel,
                data,
            } => frame(event, Some(channel), &**data),
            ClientMessage::Other(event) => frame(event, None, empty()),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("frames serialize to JSON")
}

#[derive(Serialize)]
struct Frame<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: D,
}

fn frame<D: Serialize>(event: &str, channel: Option<&str>, data: D) -> String {
    to_json(&Frame {
        event,
        channel,
        data,
    })
}

/// `pusher:connection_established`; its data is a JSON string, as Pusher sends it.
pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> String {
    let data = to_json(&serde_json::json!({
        "socket_id": socket_id,
        "activity_timeout": activity_timeout_secs,
    }));
    frame("pusher:connection_established", None, data)
}

/// `pusher:error`, sent before a close with the same code or alone when not fatal.
pub fn error(message: &str, code: Option<u16>) -> String {
    frame(
        "pusher:error",
        None,
        serde_json::json!({ "message": message, "code": code }),
    )
}

pub fn ping() -> String {
    frame("pusher:ping", None, serde_json::json!({}))
}

pub fn pong() -> String {
    frame("pusher:pong", None, serde_json::json!({}))
}

pub fn subscription_succeeded(channel: &str) -> String {
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        "{}",
    )
}

/// The member list sent to a new presence subscriber.
#[derive(Serialize)]
pub struct PresenceData<'a> {
    pub ids: Vec<&'a str>,
    pub hash: serde_json::Map<String, serde_json::Value>,
    pub count: usize,
}

pub fn presence_subscription_succeeded(channel: &str, presence: &PresenceData<'_>) -> String {
    let data = to_json(&serde_json::json!({ "presence": presence }));
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        data,
    )
}

/// `pusher:subscription_error` with an HTTP-like status; the connection stays open.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    frame(
        "pusher:subscription_error",
        Some(channel),
        serde_json::json!({ "type": kind, "error": error, "status": status }),
    )
}

pub fn member_added(channel: &str, user_id: &str, user_info: &serde_json::Value) -> String {
    let data = to_json(&serde_json::json!({ "user_id": user_id, "user_info": user_info }));
    frame("pusher_internal:member_added", Some(channel), data)
}

pub fn member_removed(channel: &str, user_id: &str) -> String {
    let data = to_json(&serde_json::json!({ "user_id": user_id }));
    frame("pusher_internal:member_removed", Some(channel), data)
}

pub fn signin_success(user_data: &str) -> String {
    let data = to_json(&serde_json::json!({ "user_data": user_data }));
    frame("pusher:signin_success", None, data)
}

pub fn cache_miss(channel: &str) -> String {
    frame("pusher:cache_miss", Some(channel), "{}")
}

/// Crier extension: the client's cursor is older than the retained history (or from
/// another epoch); what follows is everything still retained.
pub fn gap(channel: &str) -> String {
    frame("crier:gap", Some(channel), "{}")
}

#[derive(Serialize)]
struct ChannelEvent<'a> {
    event: &'a str,
    channel: &'a str,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

/// A published event: `data` is the string the publisher sent, sent as a JSON string.
pub fn channel_event(event: &str, channel: &str, data: &str, id: Option<&str>) -> String {
    to_json(&ChannelEvent {
        event,
        channel,
        data,
        id,
        user_id: None,
    })
}

#[derive(Serialize)]
struct ClientEventFrame<'a> {
    event: &'a str,
    channel: &'a str,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

/// A client event as relayed to the other subscribers: data exactly as the sender
/// wrote it, plus `user_id` on presence channels.
pub fn client_event(event: &str, channel: &str, data: &RawValue, user_id: Option<&str>) -> String {
    to_json(&ClientEventFrame {
        event,
        channel,
        data,
        user_id,
    })
}

/// The envelope SSE and long-poll clients receive for each message.
#[derive(Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    pub channel: &'a str,
    pub event: &'a str,
    pub data: &'a str,
}

pub fn envelope(id: &str, channel: &str, event: &str, data: &str) -> String {
    to_json(&Envelope {
        id,
        channel,
        event,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_pusher_bytes() {
        assert_eq!(
            connection_established("123.456", 120),
            r#"{"event":"pusher:connection_established","data":"{\"activity_timeout\":120,\"socket_id\":\"123.456\"}"}"#
        );
        assert_eq!(
            subscription_succeeded("c"),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}"#
        );
        assert_eq!(
            channel_event("e", "c", "{\"a\":1}", Some("x-1")),
            r#"{"event":"e","channel":"c","data":"{\"a\":1}","id":"x-1"}"#
        );
        assert_eq!(
            error("Unknown app", Some(4001)),
            r#"{"event":"pusher:error","data":{"code":4001,"message":"Unknown app"}}"#
        );
        assert_eq!(
            member_removed("presence-a", "7"),
            r#"{"event":"pusher_internal:member_removed","channel":"presence-a","data":"{\"user_id\":\"7\"}"}"#
        );
    }

    #[test]
    fn parses_subscribe_with_object_or_string_data() {
        let m = ClientMessage::parse(
            r#"{"event":"pusher:subscribe","data":{"channel":"a","auth":"k:s","since":"c1"}}"#,
        )
        .unwrap();
        let ClientMessage::Subscribe(s) = m else {
            panic!("not a subscribe")
        };
        assert_eq!(s.channel, "a");
        assert_eq!(s.auth.as_deref(), Some("k:s"));
        assert_eq!(s.since.as_deref(), Some("c1"));
        let m =
            ClientMessage::parse(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"b\"}"}"#)
                .unwrap();
        assert!(matches!(m, ClientMessage::Subscribe(s) if s.channel == "b"));
    }

    #[test]
    fn client_events_keep_raw_data() {
        let m = ClientMessage::parse(
            r#"{"event":"client-typing","channel":"private-a","data":{"x": [1, 2]}}"#,
        )
        .unwrap();
        let ClientMessage::ClientEvent { data, .. } = m else {
            panic!("not a client event")
        };
        assert_eq!(data.get(), r#"{"x": [1, 2]}"#);
        let frame = client_event("client-typing", "private-a", &data, Some("u"));
        assert_eq!(
            frame,
            r#"{"event":"client-typing","channel":"private-a","data":{"x": [1, 2]},"user_id":"u"}"#
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(
            ClientMessage::parse("{nope"),
            Err(FrameError::InvalidJson(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"data":{}}"#),
            Err(FrameError::MissingEvent)
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"event":"pusher:subscribe","data":{}}"#),
            Err(FrameError::InvalidData(..))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"event":"client-x","data":{}}"#),
            Err(FrameError::MissingChannel)
        ));
    }
}
