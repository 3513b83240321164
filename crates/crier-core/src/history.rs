//! Channel history: the trait every store implements, and what it promises.
//!
//! A store is the one place that assigns offsets. `append` takes a batch in order,
//! gives each message the next offset of its channel, makes the batch durable under
//! the store's fsync policy, and only then returns. A store does not deliver: the
//! broker does (see [`crate::broker`]). So that a broker can deliver in the order the
//! store committed, without a second queue, the stores here tell a [`CommitObserver`]
//! of each committed batch, in offset order, after the write and before `append`
//! returns; a reader that sees a message's offset finds it stored.

pub mod disk;
pub mod memory;

#[cfg(test)]
mod conformance;

use crate::message::{NewMessage, Published};
use crate::position::StreamPosition;
use async_trait::async_trait;
use crier_protocol::ChannelName;
use std::sync::Arc;
use std::time::Duration;

/// How much history one app's channels keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Newest messages kept per channel (at least 1).
    pub max_messages: usize,
    /// Messages older than this are dropped, except the last one of a `cache-` channel.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_age: Duration::from_secs(86_400),
        }
    }
}

/// When a publish counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fsync before acknowledging; batches formed from publishes already waiting.
    Always,
    /// Acknowledge once written to the OS (survives a crash of Crier, not of the
    /// machine); fsync every `interval`.
    #[default]
    Grouped,
}

/// Told of each committed batch, in offset order, on the committing thread, before
/// `append` returns. It runs while the store holds its write order, so it must not
/// block; it is how the memory broker delivers without a hop per message.
pub trait CommitObserver: Send + Sync + 'static {
    fn committed(&self, batch: &[Arc<Published>]);
}

/// One page of a channel's history.
#[derive(Debug)]
pub struct HistoryPage {
    /// Oldest first.
    pub messages: Vec<Arc<Published>>,
    /// The cursor given is older than what is retained, or from another epoch: messages
    /// between it and `messages[0]` are lost.
    pub gap: bool,
    /// Resume point after this page: the last message returned, or the channel's tip
    /// when nothing was returned.
    pub position: StreamPosition,
    /// More retained messages follow this page.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history storage failed: {0}")]
    Storage(String),
    #[error("history store is shut down")]
    Closed,
}

/// A channel history. Implementations: [`disk::DiskHistory`] (embedded, durable) and
/// [`memory::MemoryHistory`] (tests, ephemeral nodes).
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends `batch` in order, assigning each message the next offset of its channel,
    /// and returns once it is durable under the store's policy (see module docs).
    /// All messages of the batch belong to apps known to the store's retention lookup.
    ///
    /// # Errors
    /// Storage failures; then nothing of the batch was stored.
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, HistoryError>;

    /// Up to `limit` retained messages after `after` (`None`: from the oldest).
    async fn read(
        &self,
        app_id: &str,
        channel: &ChannelName,
        after: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError>;

    /// The newest retained message of a channel, for `cache-` channels.
    async fn last(
        &self,
        app_id: &str,
        channel: &ChannelName,
    ) -> Result<Option<Arc<Published>>, HistoryError>;

    /// Position of the channel's newest message (offset 0 if it has none).
    async fn tip(
        &self,
        app_id: &str,
        channel: &ChannelName,
    ) -> Result<StreamPosition, HistoryError>;

    /// Makes everything appended so far durable; called on shutdown.
    async fn flush(&self) -> Result<(), HistoryError>;

    /// `Err` with the reason while the store cannot take writes (for `/ready`).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Where a read after `after` starts, for a channel in `epoch` whose last offset is
/// `last` and whose oldest retained message is `first_retained` (`last + 1` when none
/// is): the offset to read after (0: from the oldest), and whether messages between
/// `after` and what the read returns are lost (another epoch, a position past the end,
/// or older than what is retained). Every store answers resumes by this one rule.
pub(crate) fn resume_point(
    after: Option<&StreamPosition>,
    epoch: &str,
    last: u64,
    first_retained: u64,
) -> (bool, u64) {
    match after {
        None => (false, 0),
        Some(p) if *p.epoch != *epoch || p.offset > last => (true, 0),
        Some(p) if p.offset + 1 < first_retained => (true, 0),
        Some(p) => (false, p.offset),
    }
}

/// Retention per app, looked up by the store on every append and sweep.
pub type RetentionLookup = Arc<dyn Fn(&str) -> Retention + Send + Sync>;
