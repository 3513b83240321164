//! A multi-channel message stream with a resumable cursor: what SSE and long-poll
//! clients consume. Opening one registers for live messages first, then replays
//! history after the cursor, so nothing published meanwhile is lost; `accept` drops
//! what the replay already carried and advances the cursor.

use crate::app::App;
use crate::history::HistoryError;
use crate::hub::{ConnId, PresenceFull, PresenceJoin, Subscriber};
use crate::message::Published;
use crate::node::Node;
use crate::outbox::Outbox;
use crate::position::{Cursor, StreamPosition};
use bytes::Bytes;
use crier_protocol::{frames, ChannelName};
use std::collections::HashMap;
use std::sync::Arc;

/// One item of a stream, in the order the client must see them.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// History no longer covers the client's cursor for this channel.
    Gap(ChannelName),
    Message(Arc<Published>),
}

impl StreamItem {
    /// The JSON envelope SSE and long-poll clients receive.
    pub fn envelope(&self) -> Bytes {
        match self {
            StreamItem::Message(m) => m.envelope(),
            StreamItem::Gap(channel) => {
                Bytes::from(frames::envelope("", channel.as_str(), "crier:gap", "{}"))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("presence channel {0} is full")]
    PresenceFull(ChannelName),
    #[error("the app is at its connection limit")]
    OverQuota,
}

/// A presence member joining through a stream.
#[derive(Clone, Debug)]
pub struct StreamMember {
    pub user_id: Arc<str>,
    pub user_info: serde_json::Value,
}

/// Live subscriptions of one SSE stream or long-poll request.
pub struct Stream {
    node: Arc<Node>,
    app: Arc<App>,
    conn: ConnId,
    channels: Vec<ChannelName>,
    cursor: Cursor,
    /// Replay high-water marks still to be passed by live messages.
    recovering: HashMap<ChannelName, StreamPosition>,
}

impl Stream {
    /// Subscribes to `channels` and returns the stream with the messages after
    /// `since` (all retained ones, after a gap marker, when `since` is not covered).
    /// Channels `since` does not mention start from their current tip.
    ///
    /// # Errors
    /// History failures, or a full presence channel.
    pub async fn open(
        node: Arc<Node>,
        app: Arc<App>,
        channels: Vec<ChannelName>,
        since: Option<&Cursor>,
        member: Option<&StreamMember>,
        outbox: Outbox,
        replay_limit: usize,
    ) -> Result<(Self, Vec<StreamItem>), StreamError> {
        // A stream holds a connection open like a WebSocket does, so it counts toward
        // the app's `max_connections` until it is dropped.
        if !app.try_add_connection() {
            return Err(StreamError::OverQuota);
        }
        let (conn, socket_id) = node.new_connection();
        let mut stream = Self {
            node: node.clone(),
            app: app.clone(),
            conn,
            channels: Vec::new(),
            cursor: Cursor::default(),
            recovering: HashMap::new(),
        };
        for channel in &channels {
            let presence = match (member, channel.kind()) {
                (Some(m), crier_protocol::ChannelKind::Presence) => Some(PresenceJoin {
                    user_id: m.user_id.clone(),
                    user_info: m.user_info.clone(),
                    max_members: app.limits.max_presence_members,
                }),
                _ => None,
            };
            let sub = Subscriber {
                conn,
                socket_id: socket_id.clone(),
                outbox: outbox.clone(),
            };
            node.hub
                .subscribe(&app.id, channel, sub, presence)
                .map_err(|PresenceFull| StreamError::PresenceFull(channel.clone()))?;
            stream.channels.push(channel.clone());
        }
        let history = node.broker.history().clone();
        let mut items = Vec::new();
        for channel in &channels {
            let Some(after) = since.and_then(|c| c.get(channel)).cloned() else {
                let tip = history.tip(&app.id, channel).await?;
                stream.recovering.insert(channel.clone(), tip.clone());
                stream.cursor.set(channel.clone(), tip);
                continue;
            };
            let mut after = after;
            let mut sent = 0;
            let mut first = true;
            loop {
                let page = history
                    .read(
                        &app.id,
                        channel,
                        Some(&after),
                        (replay_limit - sent).clamp(1, 500),
                    )
                    .await?;
                if first && page.gap {
                    items.push(StreamItem::Gap(channel.clone()));
                }
                first = false;
                sent += page.messages.len();
                items.extend(page.messages.into_iter().map(StreamItem::Message));
                after = page.position;
                if !page.more || sent >= replay_limit {
                    break;
                }
            }
            stream.recovering.insert(channel.clone(), after.clone());
            stream.cursor.set(channel.clone(), after);
        }
        Ok((stream, items))
    }

    /// Whether a live message is new to this stream; advances the cursor if so.
    pub fn accept(&mut self, message: &Published) -> bool {
        if let Some(done) = self.recovering.get(&message.channel) {
            if done.epoch == message.position.epoch && message.position.offset <= done.offset {
                return false;
            }
            self.recovering.remove(&message.channel);
        }
        if !self.channels.contains(&message.channel) {
            return false;
        }
        self.cursor
            .set(message.channel.clone(), message.position.clone());
        true
    }

    /// Records replayed items in the cursor (they are sent by the caller).
    pub fn advance(&mut self, item: &StreamItem) {
        if let StreamItem::Message(m) = item {
            self.cursor.set(m.channel.clone(), m.position.clone());
        }
    }

    /// The resume point covering every channel of the stream.
    pub fn cursor(&self) -> String {
        self.cursor.encode()
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        for channel in &self.channels {
            self.node.hub.unsubscribe(&self.app.id, channel, self.conn);
        }
        self.app.remove_connection();
    }
}
