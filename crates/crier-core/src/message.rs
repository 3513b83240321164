//! Messages on their way through Crier: a validated publish request (`NewMessage`) and
//! a message with its id in history (`Published`). A `Published` encodes itself once
//! per wire format, lazily, and every recipient shares those bytes.

use crate::position::StreamPosition;
use bytes::Bytes;
use crier_protocol::{frames, ChannelName};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A message accepted for publishing, not yet in history.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub app_id: Arc<str>,
    pub channel: ChannelName,
    pub event: Arc<str>,
    pub data: Arc<str>,
    /// The publisher's own connection, which does not receive the event.
    pub exclude_socket: Option<Arc<str>>,
}

/// A message with its position in its channel's stream.
#[derive(Debug)]
pub struct Published {
    pub app_id: Arc<str>,
    pub channel: ChannelName,
    pub event: Arc<str>,
    pub data: Arc<str>,
    pub position: StreamPosition,
    /// `position` as an id string, computed once.
    pub id: String,
    /// Unix milliseconds when history accepted it; drives age-based retention.
    pub published_at_ms: u64,
    pub exclude_socket: Option<Arc<str>>,
    /// When this node accepted the message: the start of its publish-to-delivery
    /// latency, which transports measure when they write it.
    pub accepted_at: Instant,
    pusher_frame: OnceLock<Bytes>,
    envelope: OnceLock<Bytes>,
}

impl Published {
    pub fn new(message: NewMessage, position: StreamPosition, published_at_ms: u64) -> Self {
        Self {
            id: position.to_id(),
            app_id: message.app_id,
            channel: message.channel,
            event: message.event,
            data: message.data,
            position,
            published_at_ms,
            exclude_socket: message.exclude_socket,
            accepted_at: Instant::now(),
            pusher_frame: OnceLock::new(),
            envelope: OnceLock::new(),
        }
    }

    /// The Pusher channel-event frame, with the Crier `id` extension.
    pub fn pusher_frame(&self) -> Bytes {
        self.pusher_frame
            .get_or_init(|| {
                Bytes::from(frames::channel_event(
                    &self.event,
                    self.channel.as_str(),
                    &self.data,
                    Some(&self.id),
                ))
            })
            .clone()
    }

    /// The JSON envelope SSE and long-poll clients receive.
    pub fn envelope(&self) -> Bytes {
        self.envelope
            .get_or_init(|| {
                Bytes::from(frames::envelope(
                    &self.id,
                    self.channel.as_str(),
                    &self.event,
                    &self.data,
                ))
            })
            .clone()
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
