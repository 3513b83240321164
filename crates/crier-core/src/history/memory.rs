//! History kept in RAM: the same contract as the disk store, lost on restart (every
//! start is a new epoch). Used by tests and by nodes that need no durability.

use super::{CommitObserver, HistoryError, HistoryPage, HistoryStore, RetentionLookup};
use crate::message::{now_ms, NewMessage, Published};
use crate::position::{new_epoch, StreamPosition};
use async_trait::async_trait;
use crier_protocol::ChannelName;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Default)]
struct ChannelLog {
    last_offset: u64,
    messages: VecDeque<Arc<Published>>,
}

pub struct MemoryHistory {
    epoch: Arc<str>,
    channels: Mutex<HashMap<(Arc<str>, ChannelName), ChannelLog>>,
    retention: RetentionLookup,
    on_commit: Arc<dyn CommitObserver>,
    clock: Clock,
}

impl MemoryHistory {
    pub fn new(retention: RetentionLookup, on_commit: Arc<dyn CommitObserver>) -> Self {
        Self {
            epoch: new_epoch(),
            channels: Mutex::new(HashMap::new()),
            retention,
            on_commit,
            clock: Arc::new(now_ms),
        }
    }

    /// Replaces the clock (Unix ms), so tests can age messages without sleeping.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Messages of `log` still within the age limit (a cache channel keeps its last).
    fn live<'a>(
        &self,
        app: &str,
        channel: &ChannelName,
        log: &'a ChannelLog,
    ) -> impl Iterator<Item = &'a Arc<Published>> {
        let max_age = self.retention.as_ref()(app).max_age.as_millis() as u64;
        let cutoff = (self.clock)().saturating_sub(max_age);
        let keep_last = channel.is_cache();
        let last = log.last_offset;
        log.messages.iter().filter(move |m| {
            m.published_at_ms >= cutoff || (keep_last && m.position.offset == last)
        })
    }
}

#[async_trait]
impl HistoryStore for MemoryHistory {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, HistoryError> {
        let now = (self.clock)();
        let mut channels = self.channels.lock();
        let mut out = Vec::with_capacity(batch.len());
        for message in batch {
            let max = self.retention.as_ref()(&message.app_id).max_messages.max(1);
            let log = channels
                .entry((message.app_id.clone(), message.channel.clone()))
                .or_default();
            log.last_offset += 1;
            let published = Arc::new(Published::new(
                message,
                StreamPosition::new(self.epoch.clone(), log.last_offset),
                now,
            ));
            log.messages.push_back(published.clone());
            while log.messages.len() > max {
                log.messages.pop_front();
            }
            out.push(published);
        }
        // Observed under the lock so that concurrent appends are seen in offset order.
        self.on_commit.committed(&out);
        Ok(out)
    }

    async fn read(
        &self,
        app_id: &str,
        channel: &ChannelName,
        after: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let channels = self.channels.lock();
        let key = (Arc::from(app_id), channel.clone());
        let empty = ChannelLog::default();
        let log = channels.get(&key).unwrap_or(&empty);
        let tip = StreamPosition::new(self.epoch.clone(), log.last_offset);
        let live: Vec<&Arc<Published>> = self.live(app_id, channel, log).collect();
        let first_offset = live
            .first()
            .map_or(log.last_offset + 1, |m| m.position.offset);
        let (gap, from) = super::resume_point(after, &self.epoch, log.last_offset, first_offset);
        let mut rest = live.into_iter().filter(|m| m.position.offset > from);
        let messages: Vec<Arc<Published>> = rest.by_ref().take(limit.max(1)).cloned().collect();
        let more = rest.next().is_some();
        let position = messages.last().map_or(tip, |m| m.position.clone());
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
        let channels = self.channels.lock();
        Ok(channels
            .get(&(Arc::from(app_id), channel.clone()))
            .and_then(|log| self.live(app_id, channel, log).last().cloned()))
    }

    async fn tip(
        &self,
        app_id: &str,
        channel: &ChannelName,
    ) -> Result<StreamPosition, HistoryError> {
        let channels = self.channels.lock();
        let last = channels
            .get(&(Arc::from(app_id), channel.clone()))
            .map_or(0, |l| l.last_offset);
        Ok(StreamPosition::new(self.epoch.clone(), last))
    }

    async fn flush(&self) -> Result<(), HistoryError> {
        Ok(())
    }
}
