//! Validation of publish requests, shared by every ingest (HTTP API, UDP, Redis
//! queue): one place decides what may be published.

use crate::app::App;
use crate::message::NewMessage;
use crier_protocol::ChannelName;
use serde::Deserialize;
use std::sync::Arc;

/// Longest event name accepted.
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// An event as publishers send it (HTTP body, UDP datagram, queue item).
#[derive(Debug, Deserialize)]
pub struct EventRequest {
    pub name: Option<String>,
    /// A string, or any JSON value, which is then sent serialized.
    pub data: Option<serde_json::Value>,
    pub channel: Option<String>,
    pub channels: Option<Vec<String>>,
    pub socket_id: Option<String>,
    /// Attributes to return per channel (`subscription_count`, `user_count`).
    pub info: Option<String>,
}

/// A `batch_events` body: several events published all or nothing.
#[derive(Debug, Deserialize)]
pub struct BatchRequest {
    pub batch: Vec<EventRequest>,
}

impl BatchRequest {
    /// Refuses a batch over the app's limit before any of its events is validated.
    ///
    /// # Errors
    /// More events than `max_batch_size`.
    pub fn check_size(&self, app: &App) -> Result<(), PublishError> {
        let max = app.limits.max_batch_size;
        if self.batch.len() > max {
            return Err(PublishError::BatchTooLarge(self.batch.len(), max));
        }
        Ok(())
    }
}

/// Why a publish was refused; nothing of the request was published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("missing event name")]
    MissingName,
    #[error("event name is longer than {MAX_EVENT_NAME_LEN} characters")]
    NameTooLong,
    #[error("missing data")]
    MissingData,
    #[error("missing channel or channels")]
    MissingChannel,
    #[error("give either channel or channels, not both")]
    ChannelAndChannels,
    #[error("too many channels: {0} (at most {1})")]
    TooManyChannels(usize, usize),
    #[error("invalid channel: {0}")]
    InvalidChannel(String),
    #[error("event data is {0} bytes, more than the limit of {1}")]
    DataTooLarge(usize, usize),
    #[error("invalid socket_id {0:?}")]
    InvalidSocketId(String),
    #[error("batch has {0} events, more than the limit of {1}")]
    BatchTooLarge(usize, usize),
    #[error("app is disabled")]
    AppDisabled,
}

/// Checks `socket_id` has Pusher's `<digits>.<digits>` form.
pub fn valid_socket_id(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

impl EventRequest {
    /// Turns the request into one message per channel.
    ///
    /// # Errors
    /// Any rule of the Pusher HTTP API the request breaks, checked before anything
    /// is published.
    pub fn into_messages(self, app: &App) -> Result<Vec<NewMessage>, PublishError> {
        if !app.enabled {
            return Err(PublishError::AppDisabled);
        }
        let name = self.name.ok_or(PublishError::MissingName)?;
        if name.is_empty() {
            return Err(PublishError::MissingName);
        }
        if name.len() > MAX_EVENT_NAME_LEN {
            return Err(PublishError::NameTooLong);
        }
        let data = match self.data.ok_or(PublishError::MissingData)? {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        if data.len() > app.limits.max_event_size {
            return Err(PublishError::DataTooLarge(
                data.len(),
                app.limits.max_event_size,
            ));
        }
        let names = match (self.channel, self.channels) {
            (Some(_), Some(_)) => return Err(PublishError::ChannelAndChannels),
            (Some(c), None) => vec![c],
            (None, Some(cs)) if !cs.is_empty() => cs,
            _ => return Err(PublishError::MissingChannel),
        };
        let max = app.limits.max_channels_per_event;
        if names.len() > max {
            return Err(PublishError::TooManyChannels(names.len(), max));
        }
        if let Some(s) = &self.socket_id {
            if !valid_socket_id(s) {
                return Err(PublishError::InvalidSocketId(s.clone()));
            }
        }
        let event: Arc<str> = Arc::from(name);
        let data: Arc<str> = Arc::from(data);
        let exclude: Option<Arc<str>> = self.socket_id.map(Arc::from);
        names
            .iter()
            .map(|n| {
                let channel = ChannelName::parse(n)
                    .map_err(|e| PublishError::InvalidChannel(e.to_string()))?;
                Ok(NewMessage {
                    app_id: app.id.clone(),
                    channel,
                    event: event.clone(),
                    data: data.clone(),
                    exclude_socket: exclude.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> EventRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn valid_requests_become_one_message_per_channel() {
        let app = App::new("a", "k", "s");
        let msgs = req(json!({"name": "e", "data": {"x": 1}, "channels": ["a", "b"]}))
            .into_messages(&app)
            .unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(&*msgs[0].data, r#"{"x":1}"#);
    }

    #[test]
    fn invalid_requests_are_refused() {
        let app = App::new("a", "k", "s");
        let e = |v| req(v).into_messages(&app).unwrap_err();
        assert_eq!(
            e(json!({"data": "d", "channel": "c"})),
            PublishError::MissingName
        );
        assert_eq!(
            e(json!({"name": "e", "channel": "c"})),
            PublishError::MissingData
        );
        assert_eq!(
            e(json!({"name": "e", "data": "d"})),
            PublishError::MissingChannel
        );
        assert!(matches!(
            e(json!({"name": "e", "data": "d", "channel": "a b"})),
            PublishError::InvalidChannel(_)
        ));
        assert!(matches!(
            e(json!({"name": "e", "data": "x".repeat(10241), "channel": "c"})),
            PublishError::DataTooLarge(..)
        ));
        let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        assert!(matches!(
            e(json!({"name": "e", "data": "d", "channels": many})),
            PublishError::TooManyChannels(101, 100)
        ));
        assert!(matches!(
            e(json!({"name": "e", "data": "d", "channel": "c", "socket_id": "x"})),
            PublishError::InvalidSocketId(_)
        ));
    }
}
