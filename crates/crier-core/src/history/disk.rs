//! The embedded, durable history: an LSM tree (`fjall`) under the data directory.
//!
//! One writer thread is the only place offsets are assigned. It takes every append
//! request already queued, gives each message the next offset of its channel, writes
//! them (and the deletions retention asks for) as one atomic batch, makes the batch
//! durable per the policy, tells the commit observer in offset order, then answers
//! the callers.
//!
//! What each policy can lose:
//! - `Always`: the batch is fsynced (`fdatasync`) before anyone is acknowledged.
//!   Neither a crash of Crier nor a power failure loses an acknowledged message.
//! - `Grouped`: the batch is written to the OS (the journal's user-space buffer is
//!   flushed) before acknowledgement, and fsynced every `fsync_interval`. A crash or
//!   `kill -9` of Crier loses nothing acknowledged; a power failure or kernel crash can
//!   lose what was acknowledged in the last interval (default 5 ms).
//!
//! On start, the journal is replayed; a torn or corrupt tail (a write cut short by a
//! crash or a damaged disk) is detected by its checksums and truncated by `fjall`,
//! logged by us (see `journal`), and the store opens with everything before it.
//!
//! A failed write (disk full, I/O error) poisons the `fjall` database: it refuses every
//! later write until reopened. So the writer answers the failed batch with an error,
//! marks the store unhealthy (`/ready`, `crier_history_healthy`), drops the database
//! and reopens it with backoff, probing with a synced write, until the disk takes
//! writes again. Publishes meanwhile are refused, never acknowledged. What was
//! acknowledged before the failure is in the journal and comes back with the reopen;
//! whatever of the failed batch reached the journal anyway (its bytes can be flushed
//! when the poisoned journal is dropped) is deleted before the store takes traffic,
//! so a refused publish never shows up in history and ids continue from the last
//! acknowledged one.

mod codec;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
mod journal;
#[cfg(test)]
mod tests;
mod writer;

use super::{
    CommitObserver, FsyncPolicy, HistoryError, HistoryPage, HistoryStore, RetentionLookup,
};
use crate::message::{now_ms, NewMessage, Published};
use crate::position::{new_epoch, StreamPosition};
use async_trait::async_trait;
use crier_protocol::ChannelName;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;
use writer::Writer;

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;
type Reply = oneshot::Sender<Result<Vec<Arc<Published>>, HistoryError>>;

/// Upper bound of the journal files on disk.
pub const MAX_JOURNAL_BYTES: u64 = 128 * 1024 * 1024;

/// Most messages the writer puts in one batch.
const MAX_BATCH: usize = 4096;

enum Command {
    Append(Vec<NewMessage>, Reply),
    Sweep,
    /// The background fsync failed: the database is poisoned and must be reopened.
    Failed(String),
}

fn storage(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Storage(e.to_string())
}

/// Offsets the writer knows for one channel: oldest retained and newest.
#[derive(Clone, Copy)]
struct Span {
    first: u64,
    last: u64,
}

/// One open database. Replaced as a whole when the writer reopens it after a failure.
struct Shared {
    db: Database,
    messages: Keyspace,
    meta: Keyspace,
    epoch: Arc<str>,
    retention: RetentionLookup,
    clock: Clock,
}

/// What survives a reopen, and how to reach the database that is open now.
struct Slot {
    dir: PathBuf,
    epoch: Arc<str>,
    retention: RetentionLookup,
    clock: Clock,
    tips: Arc<Tips>,
    /// `None` between a failed write and a successful reopen.
    current: RwLock<Option<Arc<Shared>>>,
    /// Why the store is unhealthy, if it is.
    failure: Mutex<Option<String>>,
    #[cfg(any(test, feature = "fault-injection"))]
    faults: Arc<fault::Faults>,
}

impl Slot {
    fn get(&self) -> Result<Arc<Shared>, HistoryError> {
        if let Some(shared) = self.current.read().clone() {
            return Ok(shared);
        }
        let why = self.failure.lock().clone().unwrap_or_default();
        Err(HistoryError::Storage(format!(
            "history store unavailable, reopening after a write failure: {why}"
        )))
    }

    /// Fails as the disk would while a test has injected a fault.
    fn injected_fault(&self, _what: &str) -> Result<(), HistoryError> {
        #[cfg(any(test, feature = "fault-injection"))]
        self.faults.check(_what)?;
        Ok(())
    }

    /// Counts a journal sync that returned (tests tell the fsync policies apart by it).
    fn synced(&self) {
        #[cfg(any(test, feature = "fault-injection"))]
        self.faults.synced();
    }

    /// Reports a written batch as failed while a test asks for it.
    fn injected_fault_after_write(&self, _what: &str) -> Result<(), HistoryError> {
        #[cfg(any(test, feature = "fault-injection"))]
        self.faults.check_after_write(_what)?;
        Ok(())
    }
}

/// Newest committed offset of each channel, kept by the writer so that a reader whose
/// cursor is already at the tip (a long-poller or SSE client that keeps up, a
/// WebSocket resubscribing) is answered without a blocking-pool round trip and a disk
/// scan. Nested by app so lookups by `&str` need no allocation.
#[derive(Default)]
struct Tips {
    offsets: RwLock<HashMap<Arc<str>, HashMap<ChannelName, u64>>>,
    /// Set once every channel on disk is listed: then a missing channel has no
    /// messages, rather than not being looked up yet.
    complete: AtomicBool,
}

impl Tips {
    fn get(&self, app: &str, channel: &ChannelName) -> Option<u64> {
        let offsets = self.offsets.read();
        match offsets.get(app).and_then(|c| c.get(channel)) {
            Some(offset) => Some(*offset),
            None => self.complete.load(Ordering::Acquire).then_some(0),
        }
    }

    fn set(&self, app: &Arc<str>, channel: &ChannelName, offset: u64) {
        let mut offsets = self.offsets.write();
        let channels = offsets.entry(app.clone()).or_default();
        match channels.get_mut(channel) {
            Some(tip) => *tip = offset,
            None => {
                channels.insert(channel.clone(), offset);
            }
        }
    }
}

impl Shared {
    /// Oldest and newest offsets stored for a channel, from disk.
    fn span_on_disk(&self, prefix: &[u8]) -> Result<Option<Span>, HistoryError> {
        let mut it = self.messages.prefix(prefix);
        let Some(first) = it.next() else {
            return Ok(None);
        };
        let first = codec::offset_of(&first.key().map_err(storage)?).unwrap_or(0);
        let last = match it.next_back() {
            Some(g) => codec::offset_of(&g.key().map_err(storage)?).unwrap_or(first),
            None => first,
        };
        Ok(Some(Span { first, last }))
    }

    fn cutoff(&self, app: &str) -> u64 {
        let max_age = self.retention.as_ref()(app).max_age.as_millis() as u64;
        (self.clock)().saturating_sub(max_age)
    }

    fn published(
        &self,
        app: &str,
        channel: &ChannelName,
        offset: u64,
        value: &[u8],
    ) -> Option<Arc<Published>> {
        let (at, event, data) = codec::decode_value(value)?;
        let message = NewMessage {
            app_id: Arc::from(app),
            channel: channel.clone(),
            event: Arc::from(event),
            data: Arc::from(data),
            exclude_socket: None,
        };
        Some(Arc::new(Published::new(
            message,
            StreamPosition::new(self.epoch.clone(), offset),
            at,
        )))
    }

    /// Retained messages of a channel with offsets in `from..`, oldest first, skipping
    /// expired ones (a cache channel keeps its newest); at most `limit + 1`.
    fn scan(
        &self,
        app: &str,
        channel: &ChannelName,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<Arc<Published>>, u64), HistoryError> {
        let prefix = codec::prefix(app, channel);
        let tip = self.span_on_disk(&prefix)?.map_or(0, |s| s.last);
        let cutoff = self.cutoff(app);
        let keep_last = channel.is_cache();
        let mut out = Vec::new();
        let range = codec::key(&prefix, from)..codec::prefix_end(&prefix);
        for guard in self.messages.range(range) {
            let (k, v) = guard.into_inner().map_err(storage)?;
            let Some(offset) = codec::offset_of(&k) else {
                continue;
            };
            let expired = codec::published_at(&v).is_none_or(|at| at < cutoff);
            if expired && !(keep_last && offset == tip) {
                continue;
            }
            if let Some(p) = self.published(app, channel, offset, &v) {
                out.push(p);
            }
            if out.len() > limit {
                break;
            }
        }
        Ok((out, tip))
    }
}

/// Opens the database in `dir`. `epoch` is `None` on first open (read from the store,
/// or created), and the epoch already in use on a reopen.
/// Also returns how many bytes of a torn or corrupt journal tail were cut off.
fn open_shared(
    dir: &Path,
    known_epoch: Option<&Arc<str>>,
    retention: &RetentionLookup,
    clock: &Clock,
) -> Result<(Shared, u64), HistoryError> {
    let journal_before = journal::data_ends(dir);
    // The journal is bounded so that deleted messages' journal space is reclaimed
    // too: when it is full, memtables are flushed and old journal files deleted.
    let db = Database::builder(dir)
        .worker_threads(1)
        .max_journaling_size(MAX_JOURNAL_BYTES)
        .open()
        .map_err(storage)?;
    let bytes_cut = journal::bytes_cut(&journal_before);
    if bytes_cut > 0 {
        tracing::warn!(
            dir = %dir.display(),
            bytes_cut,
            "history journal had a torn or corrupt tail (interrupted write); it was cut off and everything before it recovered"
        );
    }
    let messages = db
        .keyspace("messages", KeyspaceCreateOptions::default)
        .map_err(storage)?;
    let meta = db
        .keyspace("meta", KeyspaceCreateOptions::default)
        .map_err(storage)?;
    let epoch: Arc<str> = match (meta.get("epoch").map_err(storage)?, known_epoch) {
        (Some(v), _) => Arc::from(String::from_utf8_lossy(&v).as_ref()),
        (None, Some(e)) => e.clone(),
        (None, None) => {
            let e = new_epoch();
            meta.insert("epoch", e.as_bytes()).map_err(storage)?;
            db.persist(PersistMode::SyncAll).map_err(storage)?;
            tracing::info!(epoch = %e, dir = %dir.display(), "new history epoch");
            e
        }
    };
    let shared = Shared {
        db,
        messages,
        meta,
        epoch,
        retention: retention.clone(),
        clock: clock.clone(),
    };
    Ok((shared, bytes_cut))
}

/// The embedded durable history store.
pub struct DiskHistory {
    slot: Arc<Slot>,
    journal_bytes_cut: u64,
    tx: Option<mpsc::Sender<Command>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DiskHistory {
    /// Opens (or creates) the store in `dir`, recovering the journal.
    ///
    /// # Errors
    /// The directory cannot be opened (permissions, another process holds it, damage
    /// beyond the journal tail).
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        fsync_interval: Duration,
        retention: RetentionLookup,
        on_commit: Arc<dyn CommitObserver>,
    ) -> Result<Self, HistoryError> {
        Self::open_with_clock(
            dir,
            policy,
            fsync_interval,
            retention,
            on_commit,
            Arc::new(now_ms),
        )
    }

    /// [`DiskHistory::open`] with a clock (Unix ms), so tests can age messages.
    ///
    /// # Errors
    /// As [`DiskHistory::open`].
    pub fn open_with_clock(
        dir: &Path,
        policy: FsyncPolicy,
        fsync_interval: Duration,
        retention: RetentionLookup,
        on_commit: Arc<dyn CommitObserver>,
        clock: Clock,
    ) -> Result<Self, HistoryError> {
        let tips = Arc::new(Tips::default());
        let (shared, journal_bytes_cut) = open_shared(dir, None, &retention, &clock)?;
        let shared = Arc::new(shared);
        let slot = Arc::new(Slot {
            dir: dir.to_owned(),
            epoch: shared.epoch.clone(),
            retention,
            clock,
            tips,
            current: RwLock::new(Some(shared.clone())),
            failure: Mutex::new(None),
            #[cfg(any(test, feature = "fault-injection"))]
            faults: fault::for_dir(dir),
        });
        metrics::gauge!("crier_history_healthy").set(1.0);
        metrics::counter!("crier_history_write_failures_total").increment(0);
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let dirty = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let writer = Writer::new(slot.clone(), shared, on_commit, policy, dirty.clone());
        threads.push(
            std::thread::Builder::new()
                .name("crier-history-writer".into())
                .spawn(move || writer.run(rx))
                .map_err(storage)?,
        );
        if policy == FsyncPolicy::Grouped {
            let (slot, stop, dirty, tx) = (slot.clone(), stop.clone(), dirty.clone(), tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("crier-history-fsync".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Acquire) {
                            std::thread::sleep(fsync_interval);
                            if !dirty.swap(false, Ordering::AcqRel) {
                                continue;
                            }
                            // While the writer reopens there is nothing to sync; the
                            // reopened journal was synced by the reopen's probe.
                            let Ok(shared) = slot.get() else { continue };
                            match shared.db.persist(PersistMode::SyncAll) {
                                Ok(()) => slot.synced(),
                                Err(e) => {
                                    tracing::error!(error = %e, "history fsync failed");
                                    let _ = tx.send(Command::Failed(e.to_string()));
                                }
                            }
                        }
                    })
                    .map_err(storage)?,
            );
        }
        {
            let (tx, stop) = (tx.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("crier-history-sweep".into())
                    .spawn(move || {
                        // Sweep once a second: cheap when nothing has expired, and keeps
                        // expired data from lingering on disk much past its age limit.
                        let mut ticks = 0u32;
                        while !stop.load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(100));
                            ticks += 1;
                            if ticks.is_multiple_of(10) && tx.send(Command::Sweep).is_err() {
                                return;
                            }
                        }
                    })
                    .map_err(storage)?,
            );
        }
        Ok(Self {
            slot,
            journal_bytes_cut,
            tx: Some(tx),
            stop,
            threads,
        })
    }

    pub fn epoch(&self) -> &Arc<str> {
        &self.slot.epoch
    }

    /// Bytes of a torn or corrupt journal tail cut off when the store opened (0 after
    /// a clean shutdown).
    pub fn journal_bytes_cut(&self) -> u64 {
        self.journal_bytes_cut
    }

    /// Bytes the store occupies on disk: (journal, tables); zeros while reopening.
    pub fn disk_space(&self) -> (u64, u64) {
        let Ok(shared) = self.slot.get() else {
            return (0, 0);
        };
        let journal = shared.db.journal_disk_space().unwrap_or(0);
        (journal, shared.messages.disk_space())
    }

    /// Messages the store holds, approximately: a message deleted by retention still
    /// counts until the LSM tree compacts it away (zero while reopening).
    pub fn approximate_messages(&self) -> u64 {
        self.slot
            .get()
            .map_or(0, |shared| shared.messages.approximate_len() as u64)
    }

    /// Asks the writer to drop expired messages now (tests; normally once a second).
    pub fn sweep(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Command::Sweep);
        }
    }

    /// Forces the LSM tree to merge, reclaiming deleted entries (tests, maintenance).
    ///
    /// # Errors
    /// Storage failures.
    pub fn compact(&self) -> Result<(), HistoryError> {
        let shared = self.slot.get()?;
        shared
            .messages
            .rotate_memtable_and_wait()
            .map_err(storage)?;
        shared.messages.major_compact().map_err(storage)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let shared = self.slot.get()?;
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| HistoryError::Storage(format!("history task failed: {e}")))?
    }
}

impl Drop for DiskHistory {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Ok(shared) = self.slot.get() {
            if let Err(e) = shared.db.persist(PersistMode::SyncAll) {
                tracing::error!(error = %e, "history fsync on close failed");
            }
        }
    }
}

#[async_trait]
impl HistoryStore for DiskHistory {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, HistoryError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(HistoryError::Closed)?
            .send(Command::Append(batch, reply))
            .map_err(|_| HistoryError::Closed)?;
        answer.await.map_err(|_| HistoryError::Closed)?
    }

    async fn read(
        &self,
        app_id: &str,
        channel: &ChannelName,
        after: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        if let Some(after) = after {
            let at_tip = after.epoch == self.slot.epoch
                && self.slot.tips.get(app_id, channel) == Some(after.offset);
            if at_tip {
                return Ok(HistoryPage {
                    messages: Vec::new(),
                    gap: false,
                    position: after.clone(),
                    more: false,
                });
            }
        }
        let (app, channel, after) = (app_id.to_owned(), channel.clone(), after.cloned());
        let limit = limit.max(1);
        self.blocking(move |s| {
            let (oldest, tip) = s.scan(&app, &channel, 0, 0)?;
            let first_offset = oldest.first().map_or(tip + 1, |m| m.position.offset);
            let (gap, after) = super::resume_point(after.as_ref(), &s.epoch, tip, first_offset);
            // The scan starts at an offset, inclusive.
            let (mut messages, tip) = s.scan(&app, &channel, after + 1, limit)?;
            let more = messages.len() > limit;
            messages.truncate(limit);
            let position = messages.last().map_or_else(
                || StreamPosition::new(s.epoch.clone(), tip),
                |m| m.position.clone(),
            );
            Ok(HistoryPage {
                messages,
                gap,
                position,
                more,
            })
        })
        .await
    }

    async fn last(
        &self,
        app_id: &str,
        channel: &ChannelName,
    ) -> Result<Option<Arc<Published>>, HistoryError> {
        let (app, channel) = (app_id.to_owned(), channel.clone());
        self.blocking(move |s| {
            let prefix = codec::prefix(&app, &channel);
            let Some(guard) = s.messages.prefix(&prefix).next_back() else {
                return Ok(None);
            };
            let (k, v) = guard.into_inner().map_err(storage)?;
            let offset = codec::offset_of(&k).unwrap_or(0);
            let expired = codec::published_at(&v).is_none_or(|at| at < s.cutoff(&app));
            if expired && !channel.is_cache() {
                return Ok(None);
            }
            Ok(s.published(&app, &channel, offset, &v))
        })
        .await
    }

    async fn tip(
        &self,
        app_id: &str,
        channel: &ChannelName,
    ) -> Result<StreamPosition, HistoryError> {
        if let Some(tip) = self.slot.tips.get(app_id, channel) {
            return Ok(StreamPosition::new(self.slot.epoch.clone(), tip));
        }
        let (app, channel) = (app_id.to_owned(), channel.clone());
        self.blocking(move |s| {
            let tip = s
                .span_on_disk(&codec::prefix(&app, &channel))?
                .map_or(0, |sp| sp.last);
            Ok(StreamPosition::new(s.epoch.clone(), tip))
        })
        .await
    }

    async fn flush(&self) -> Result<(), HistoryError> {
        self.blocking(|s| s.db.persist(PersistMode::SyncAll).map_err(storage))
            .await
    }

    fn health(&self) -> Result<(), String> {
        match self.slot.failure.lock().as_ref() {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}
