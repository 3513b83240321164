//! A multi-channel message stream with a resumable cursor: what SSE and long-poll
//! clients consume. Opening one registers for live messages first; the messages after
//! the client's cursor are then read from history a page at a time (`replay_page`), as
//! the transport can send them, so one request never makes the server hold more than a
//! page. Live messages of a channel still being replayed are dropped (history stores a
//! message before it is delivered, so the replay carries them); `accept` also drops
//! what the replay already carried, and advances the cursor.

use crate::app::App;
use crate::broker::BrokerError;
use crate::history::HistoryError;
use crate::hub::{ConnId, Subscriber};
use crate::message::Published;
use crate::node::{Node, SubscribeError};
use crate::outbox::Outbox;
use crate::position::{Cursor, StreamPosition};
use crate::presence::PresenceJoin;
use bytes::Bytes;
use crier_protocol::{frames, ChannelName};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// One item of a stream, in the order the client must see them.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// History no longer covers the client's cursor for this channel.
    Gap(ChannelName),
    /// A `cache-` channel has no message to hand a new subscriber.
    CacheMiss(ChannelName),
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
            StreamItem::CacheMiss(channel) => Bytes::from(frames::envelope(
                "",
                channel.as_str(),
                "pusher:cache_miss",
                "{}",
            )),
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
    #[error(transparent)]
    Broker(#[from] BrokerError),
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
    /// Channels whose missed messages are still to be read, in order.
    replays: VecDeque<Replay>,
}

/// A channel being caught up from history.
struct Replay {
    channel: ChannelName,
    after: StreamPosition,
    first_page: bool,
    /// A `cache-` channel opened without a cursor: its last message, or a cache miss.
    cache: bool,
}

impl Stream {
    /// Subscribes to `channels`. Channels `since` mentions are then caught up with
    /// [`Stream::replay_page`] (after a gap marker when `since` is not covered); the
    /// others start from their current tip.
    ///
    /// # Errors
    /// History failures, a full presence channel, or the app at its connection limit.
    pub async fn open(
        node: Arc<Node>,
        app: Arc<App>,
        channels: Vec<ChannelName>,
        since: Option<&Cursor>,
        member: Option<&StreamMember>,
        outbox: Outbox,
    ) -> Result<Self, StreamError> {
        // A stream holds a connection open like a WebSocket does, so it counts toward
        // the app's `max_connections` until it is dropped.
        if !node.add_connection(&app) {
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
            replays: VecDeque::new(),
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
            node.subscribe(&app.id, channel, sub, presence)
                .await
                .map_err(|e| match e {
                    SubscribeError::PresenceFull => StreamError::PresenceFull(channel.clone()),
                    SubscribeError::Broker(e) => StreamError::Broker(e),
                    SubscribeError::Presence(e) => {
                        StreamError::Broker(BrokerError::Unavailable(e.to_string()))
                    }
                })?;
            stream.channels.push(channel.clone());
        }
        for channel in &channels {
            match since.and_then(|c| c.get(channel)).cloned() {
                Some(after) => {
                    stream.cursor.set(channel.clone(), after.clone());
                    stream.replays.push_back(Replay {
                        channel: channel.clone(),
                        after,
                        first_page: true,
                        cache: false,
                    });
                }
                // A new subscriber of a `cache-` channel gets its last message first,
                // read like a replay from just before the tip (so a message published
                // meanwhile is neither lost nor sent twice), or a cache miss.
                None if channel.is_cache() => {
                    let tip = node.tip(&app.id, channel).await?;
                    let after =
                        StreamPosition::new(tip.epoch.clone(), tip.offset.saturating_sub(1));
                    stream.cursor.set(channel.clone(), after.clone());
                    stream.replays.push_back(Replay {
                        channel: channel.clone(),
                        after,
                        first_page: true,
                        cache: true,
                    });
                }
                None => {
                    let tip = node.tip(&app.id, channel).await?;
                    stream.recovering.insert(channel.clone(), tip.clone());
                    stream.cursor.set(channel.clone(), tip);
                }
            }
        }
        Ok(stream)
    }

    /// Whether missed messages are still to be read with [`Stream::replay_page`].
    pub fn replaying(&self) -> bool {
        !self.replays.is_empty()
    }

    /// The next (at most `limit`) missed messages, oldest first, of the first channel
    /// still being caught up; empty once every channel is. The caller sends them and
    /// calls [`Stream::advance`] for each.
    ///
    /// # Errors
    /// History failures.
    pub async fn replay_page(&mut self, limit: usize) -> Result<Vec<StreamItem>, HistoryError> {
        let Some(replay) = self.replays.front_mut() else {
            return Ok(Vec::new());
        };
        let page = self
            .node
            .read_history(
                &self.app.id,
                &replay.channel,
                Some(&replay.after),
                limit.max(1),
            )
            .await?;
        let mut items = Vec::with_capacity(page.messages.len() + 1);
        if replay.first_page {
            if replay.cache {
                if page.messages.is_empty() {
                    items.push(StreamItem::CacheMiss(replay.channel.clone()));
                }
            } else if page.gap {
                items.push(StreamItem::Gap(replay.channel.clone()));
            }
        }
        replay.first_page = false;
        items.extend(page.messages.into_iter().map(StreamItem::Message));
        replay.after = page.position;
        if !page.more {
            if let Some(done) = self.replays.pop_front() {
                self.cursor.set(done.channel.clone(), done.after.clone());
                self.recovering.insert(done.channel, done.after);
            }
        }
        Ok(items)
    }

    /// Whether a live message is new to this stream; advances the cursor if so.
    pub fn accept(&mut self, message: &Published) -> bool {
        if !self.replays.is_empty() && self.replays.iter().any(|r| r.channel == message.channel) {
            return false;
        }
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
            self.node.unsubscribe(&self.app.id, channel, self.conn);
        }
        self.node.remove_connection(&self.app);
    }
}
