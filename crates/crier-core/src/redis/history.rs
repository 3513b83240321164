//! Channel history kept in Redis: a sorted set of messages per channel, scored by
//! offset, beside a hash with the channel's epoch and last offset. Appending runs the
//! publish script, which also publishes each message on its channel's topic: in Redis,
//! stored and announced are one step.

use super::codec::{self, Item};
use super::scripts;
use super::Shared;
use crate::history::{resume_point, HistoryError, HistoryPage, HistoryStore};
use crate::message::{NewMessage, Published};
use crate::position::{new_epoch, StreamPosition};
use async_trait::async_trait;
use crier_protocol::ChannelName;
use std::sync::Arc;
use std::time::Duration;

/// A channel's meta hash outlives its messages by this much, so that ids keep growing
/// across a quiet spell; after it, the channel starts a new epoch.
const META_GRACE: Duration = Duration::from_secs(7 * 86_400);

/// How long the meta a read creates (a channel never published) lives unless a
/// publish extends it. A cursor from such a read that is used later than this gets a
/// `crier:gap` it did not need; nothing is lost.
const READ_META_TTL: Duration = Duration::from_secs(600);

pub struct RedisHistory {
    shared: Arc<Shared>,
}

/// What the read script returns: epoch, last offset, oldest retained offset (-1 for
/// none) and message payloads.
type ReadReply = (String, u64, i64, Vec<Vec<u8>>);

impl RedisHistory {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn limits(&self, app: &str) -> (usize, u64, u64) {
        let retention = self.shared.retention.as_ref()(app);
        let max_age = retention.max_age.as_millis() as u64;
        let meta_ttl = max_age + META_GRACE.as_millis() as u64;
        (retention.max_messages.max(1), max_age.max(1), meta_ttl)
    }

    fn storage_error(&self, what: &str, e: &redis::RedisError) -> HistoryError {
        self.shared.failed(what, e);
        HistoryError::Storage(format!("redis: {e}"))
    }

    /// Runs the read script; `limit` -1 returns only the newest message.
    async fn run_read(
        &self,
        app: &str,
        channel: &ChannelName,
        after: u64,
        limit: i64,
    ) -> Result<ReadReply, HistoryError> {
        let keys = &self.shared.keys;
        let (_, max_age, _) = self.limits(app);
        let mut conn = self.shared.commands();
        scripts::READ
            .key(keys.meta(app, channel))
            .key(keys.history(app, channel))
            .arg(after)
            .arg(limit)
            .arg(&*new_epoch())
            .arg(max_age)
            .arg(READ_META_TTL.as_millis() as u64)
            .arg(u8::from(channel.is_cache()))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.storage_error("history read", &e))
    }

    /// Appends one group of messages of one app in one script run (on a cluster, one
    /// channel: a script touches one hash slot).
    async fn append_group(
        &self,
        group: Vec<NewMessage>,
        out: &mut Vec<Arc<Published>>,
    ) -> Result<(), HistoryError> {
        let keys = &self.shared.keys;
        let app = group[0].app_id.clone();
        let (max_messages, max_age, meta_ttl) = self.limits(&app);
        let mut channels: Vec<&ChannelName> = Vec::new();
        let mut invocation = scripts::PUBLISH.prepare_invoke();
        let mut pairs = Vec::with_capacity(group.len());
        for message in &group {
            let pair = match channels.iter().position(|c| **c == message.channel) {
                Some(i) => i + 1,
                None => {
                    channels.push(&message.channel);
                    invocation
                        .key(keys.meta(&app, &message.channel))
                        .key(keys.history(&app, &message.channel));
                    channels.len()
                }
            };
            pairs.push(pair);
        }
        invocation
            .arg(self.shared.commands.publish_command())
            .arg(&*new_epoch())
            .arg(max_messages)
            .arg(max_age)
            .arg(meta_ttl)
            .arg(group.len());
        for (message, pair) in group.iter().zip(&pairs) {
            invocation
                .arg(*pair)
                .arg(keys.topic(&app, &message.channel))
                .arg(u8::from(message.channel.is_cache()))
                .arg(codec::message_body(
                    message.exclude_socket.as_deref(),
                    &message.event,
                    &message.data,
                ));
        }
        let mut conn = self.shared.commands();
        let ids: Vec<(u64, String, u64)> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.storage_error("publish", &e))?;
        if ids.len() != group.len() {
            return Err(HistoryError::Storage(
                "redis: publish script answered for another batch".into(),
            ));
        }
        let mut epoch: Option<Arc<str>> = None;
        for (message, (offset, id_epoch, at)) in group.into_iter().zip(ids) {
            let epoch = match &epoch {
                Some(e) if **e == *id_epoch => e.clone(),
                _ => epoch.insert(Arc::from(id_epoch)).clone(),
            };
            out.push(Arc::new(Published::new(
                message,
                StreamPosition::new(epoch, offset),
                at,
            )));
        }
        Ok(())
    }
}

/// A stored payload as a message of `app`'s `channel`; `None` for what cannot be read.
pub(crate) fn published(
    app: &Arc<str>,
    channel: &ChannelName,
    epoch: &Arc<str>,
    payload: &[u8],
) -> Option<Published> {
    let Some(Item::Message(m)) = codec::decode(payload) else {
        return None;
    };
    Some(published_from(app, channel, epoch, &m))
}

/// A decoded message of `app`'s `channel`, sharing `epoch` when it is the message's.
pub(crate) fn published_from(
    app: &Arc<str>,
    channel: &ChannelName,
    epoch: &Arc<str>,
    m: &codec::Message<'_>,
) -> Published {
    let epoch = if **epoch == *m.epoch {
        epoch.clone()
    } else {
        Arc::from(m.epoch)
    };
    Published::new(
        NewMessage {
            app_id: app.clone(),
            channel: channel.clone(),
            event: Arc::from(m.event),
            data: Arc::from(m.data),
            exclude_socket: m.exclude.map(Arc::from),
        },
        StreamPosition::new(epoch, m.offset),
        m.published_at_ms,
    )
}

#[async_trait]
impl HistoryStore for RedisHistory {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, HistoryError> {
        let mut out = Vec::with_capacity(batch.len());
        // One script run per app (and, on a cluster, per channel). A batch that spans
        // several runs is stored in order, and a failure stops it where it failed.
        let cluster = self.shared.commands.is_cluster();
        let mut group: Vec<NewMessage> = Vec::new();
        for message in batch {
            let same = group.first().is_none_or(|first| {
                first.app_id == message.app_id && (!cluster || first.channel == message.channel)
            });
            if !same {
                self.append_group(std::mem::take(&mut group), &mut out)
                    .await?;
            }
            group.push(message);
        }
        if !group.is_empty() {
            self.append_group(group, &mut out).await?;
        }
        Ok(out)
    }

    async fn read(
        &self,
        app_id: &str,
        channel: &ChannelName,
        after: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let limit = limit.max(1);
        let want = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let from = after.map_or(0, |p| p.offset);
        let (mut epoch, mut last, oldest, mut items) =
            self.run_read(app_id, channel, from, want).await?;
        let first_retained = u64::try_from(oldest).unwrap_or(last + 1);
        let (gap, start) = resume_point(after, &epoch, last, first_retained);
        if start != from {
            // Read after what the cursor named, before knowing it was lost: read again
            // from the oldest.
            (epoch, last, _, items) = self.run_read(app_id, channel, start, want).await?;
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let app: Arc<str> = Arc::from(app_id);
        let epoch: Arc<str> = Arc::from(epoch);
        let messages: Vec<Arc<Published>> = items
            .iter()
            .filter_map(|payload| published(&app, channel, &epoch, payload).map(Arc::new))
            .collect();
        let position = messages
            .last()
            .map_or_else(|| StreamPosition::new(epoch, last), |m| m.position.clone());
        Ok(HistoryPage {
            messages,
            gap,
            position,
            more,
        })
    }

    async fn last(
        &self,
        app_id: &str,
        channel: &ChannelName,
    ) -> Result<Option<Arc<Published>>, HistoryError> {
        let (epoch, _, _, items) = self.run_read(app_id, channel, 0, -1).await?;
        let (app, epoch): (Arc<str>, Arc<str>) = (Arc::from(app_id), Arc::from(epoch));
        Ok(items
            .first()
            .and_then(|payload| published(&app, channel, &epoch, payload))
            .map(Arc::new))
    }

    async fn tip(
        &self,
        app_id: &str,
        channel: &ChannelName,
    ) -> Result<StreamPosition, HistoryError> {
        let (epoch, last, _, _) = self.run_read(app_id, channel, 0, 0).await?;
        Ok(StreamPosition::new(Arc::from(epoch), last))
    }

    /// Durability is Redis's (its `appendonly`/`appendfsync` settings): there is
    /// nothing of ours to flush.
    async fn flush(&self) -> Result<(), HistoryError> {
        Ok(())
    }

    fn health(&self) -> Result<(), String> {
        if self
            .shared
            .healthy
            .load(std::sync::atomic::Ordering::Acquire)
        {
            Ok(())
        } else {
            Err(self.shared.problem.lock().clone())
        }
    }
}
