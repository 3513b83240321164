//! The embedded, durable history: an LSM tree (`fjall`) under the data directory.
//!
//! One writer thread is the only place offsets are assigned. It takes every append
//! request already queued, gives each message the next offset of its channel, writes
//! them (and the deletions retention asks for) as one atomic batch, makes the batch
//! durable per the policy, delivers it in offset order, then answers the callers.
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
//! crash or a damaged disk) is detected by its checksums, truncated and logged by
//! `fjall`, and the store opens with everything before it.

mod codec;

use super::{Deliver, FsyncPolicy, HistoryError, HistoryPage, HistoryStore, RetentionLookup};
use crate::message::{now_ms, NewMessage, Published};
use crate::position::{new_epoch, StreamPosition};
use async_trait::async_trait;
use crier_protocol::ChannelName;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;
type Reply = oneshot::Sender<Result<Vec<Arc<Published>>, HistoryError>>;

/// Upper bound of the journal files on disk.
pub const MAX_JOURNAL_BYTES: u64 = 128 * 1024 * 1024;

/// Most messages the writer puts in one batch.
const MAX_BATCH: usize = 4096;

enum Command {
    Append(Vec<NewMessage>, Reply),
    Sweep,
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

struct Shared {
    db: Database,
    messages: Keyspace,
    epoch: Arc<str>,
    retention: RetentionLookup,
    clock: Clock,
    tips: Tips,
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

/// Total size of the journal files (`*.jnl`) in `dir`.
fn journal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The embedded durable history store.
pub struct DiskHistory {
    shared: Arc<Shared>,
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
        deliver: Arc<dyn Deliver>,
    ) -> Result<Self, HistoryError> {
        Self::open_with_clock(
            dir,
            policy,
            fsync_interval,
            retention,
            deliver,
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
        deliver: Arc<dyn Deliver>,
        clock: Clock,
    ) -> Result<Self, HistoryError> {
        let journal_before = journal_bytes(dir);
        // The journal is bounded so that deleted messages' journal space is reclaimed
        // too: when it is full, memtables are flushed and old journal files deleted.
        let db = Database::builder(dir)
            .worker_threads(1)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()
            .map_err(storage)?;
        let journal_after = journal_bytes(dir);
        if journal_after < journal_before {
            tracing::warn!(
                dir = %dir.display(),
                bytes_cut = journal_before - journal_after,
                "history journal had a torn or corrupt tail (interrupted write); it was cut off and everything before it recovered"
            );
        }
        let messages = db
            .keyspace("messages", KeyspaceCreateOptions::default)
            .map_err(storage)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(storage)?;
        let epoch: Arc<str> = match meta.get("epoch").map_err(storage)? {
            Some(v) => Arc::from(String::from_utf8_lossy(&v).as_ref()),
            None => {
                let e = new_epoch();
                meta.insert("epoch", e.as_bytes()).map_err(storage)?;
                db.persist(PersistMode::SyncAll).map_err(storage)?;
                tracing::info!(epoch = %e, dir = %dir.display(), "new history epoch");
                e
            }
        };
        let shared = Arc::new(Shared {
            db,
            messages,
            epoch,
            retention,
            clock,
            tips: Tips::default(),
        });
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let dirty = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let writer = Writer {
            shared: shared.clone(),
            deliver,
            policy,
            spans: HashMap::new(),
            dirty: dirty.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("crier-history-writer".into())
                .spawn(move || writer.run(rx))
                .map_err(storage)?,
        );
        if policy == FsyncPolicy::Grouped {
            let (shared, stop, dirty) = (shared.clone(), stop.clone(), dirty.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("crier-history-fsync".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Acquire) {
                            std::thread::sleep(fsync_interval);
                            if dirty.swap(false, Ordering::AcqRel) {
                                if let Err(e) = shared.db.persist(PersistMode::SyncAll) {
                                    tracing::error!(error = %e, "history fsync failed");
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
            shared,
            tx: Some(tx),
            stop,
            threads,
        })
    }

    pub fn epoch(&self) -> &Arc<str> {
        &self.shared.epoch
    }

    /// Bytes the store occupies on disk: (journal, tables).
    pub fn disk_space(&self) -> (u64, u64) {
        let journal = self.shared.db.journal_disk_space().unwrap_or(0);
        (journal, self.shared.messages.disk_space())
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
        self.shared
            .messages
            .rotate_memtable_and_wait()
            .map_err(storage)?;
        self.shared.messages.major_compact().map_err(storage)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let shared = self.shared.clone();
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
        if let Err(e) = self.shared.db.persist(PersistMode::SyncAll) {
            tracing::error!(error = %e, "history fsync on close failed");
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    deliver: Arc<dyn Deliver>,
    policy: FsyncPolicy,
    spans: HashMap<(Arc<str>, ChannelName), Span>,
    dirty: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        match self.discover() {
            Ok(()) => self.shared.tips.complete.store(true, Ordering::Release),
            Err(e) => tracing::error!(error = %e, "history: listing channels failed"),
        }
        while let Ok(first) = rx.recv() {
            let mut requests = Vec::new();
            let mut count = 0;
            let mut sweep = false;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(batch, reply) => {
                        count += batch.len();
                        requests.push((batch, reply));
                    }
                    Command::Sweep => sweep = true,
                }
                if count < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !requests.is_empty() {
                self.append(requests);
            }
            if sweep {
                if let Err(e) = self.sweep() {
                    tracing::error!(error = %e, "history retention sweep failed");
                }
            }
        }
    }

    /// Finds every stored channel with one seek per channel, for age sweeps.
    fn discover(&mut self) -> Result<(), HistoryError> {
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some(guard) = self.shared.messages.range(from.clone()..).next() else {
                return Ok(());
            };
            let key = guard.key().map_err(storage)?;
            let Some((app, channel, _)) = codec::split_key(&key) else {
                return Ok(());
            };
            let prefix = codec::prefix(&app, &channel);
            if let Some(span) = self.shared.span_on_disk(&prefix)? {
                self.shared.tips.set(&app, &channel, span.last);
                self.spans.insert((app, channel), span);
            }
            from = codec::prefix_end(&prefix);
        }
    }

    fn span(&mut self, app: &Arc<str>, channel: &ChannelName) -> Result<Span, HistoryError> {
        let key = (app.clone(), channel.clone());
        if let Some(s) = self.spans.get(&key) {
            return Ok(*s);
        }
        let span = self
            .shared
            .span_on_disk(&codec::prefix(app, channel))?
            .unwrap_or(Span { first: 1, last: 0 });
        self.spans.insert(key, span);
        Ok(span)
    }

    fn append(&mut self, requests: Vec<(Vec<NewMessage>, Reply)>) {
        match self.write(&requests) {
            Ok(published) => {
                // Before delivery: a reader that sees a tip must find that message in
                // the store, and one that subscribed first gets everything after it live.
                for m in &published {
                    self.shared
                        .tips
                        .set(&m.app_id, &m.channel, m.position.offset);
                }
                self.deliver.deliver(&published);
                let mut it = published.into_iter();
                for (batch, reply) in requests {
                    let mine: Vec<_> = it.by_ref().take(batch.len()).collect();
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "history write failed; publishes refused");
                // Spans were advanced for a batch that never reached the disk: read the
                // true ones back. (Cloning every span before each batch to undo instead
                // cost O(channels) per publish.)
                for message in requests.iter().flat_map(|(b, _)| b.iter()) {
                    let key = (message.app_id.clone(), message.channel.clone());
                    let prefix = codec::prefix(&message.app_id, &message.channel);
                    match self.shared.span_on_disk(&prefix) {
                        Ok(Some(span)) => self.spans.insert(key, span),
                        _ => self.spans.remove(&key),
                    };
                }
                for (_, reply) in requests {
                    let _ = reply.send(Err(HistoryError::Storage(e.to_string())));
                }
            }
        }
    }

    fn write(
        &mut self,
        requests: &[(Vec<NewMessage>, Reply)],
    ) -> Result<Vec<Arc<Published>>, HistoryError> {
        let now = (self.shared.clock)();
        let mode = match self.policy {
            FsyncPolicy::Always => PersistMode::SyncData,
            FsyncPolicy::Grouped => PersistMode::Buffer,
        };
        let mut batch = self.shared.db.batch().durability(Some(mode));
        let mut out = Vec::with_capacity(requests.iter().map(|r| r.0.len()).sum());
        for message in requests.iter().flat_map(|(b, _)| b.iter()) {
            let mut span = self.span(&message.app_id, &message.channel)?;
            span.last += 1;
            let prefix = codec::prefix(&message.app_id, &message.channel);
            batch.insert(
                &self.shared.messages,
                codec::key(&prefix, span.last),
                codec::encode_value(message, now),
            );
            let max = self.shared.retention.as_ref()(&message.app_id)
                .max_messages
                .max(1) as u64;
            while span.last - span.first + 1 > max {
                batch.remove(&self.shared.messages, codec::key(&prefix, span.first));
                span.first += 1;
            }
            self.spans
                .insert((message.app_id.clone(), message.channel.clone()), span);
            out.push(Arc::new(Published::new(
                message.clone(),
                StreamPosition::new(self.shared.epoch.clone(), span.last),
                now,
            )));
        }
        batch.commit().map_err(storage)?;
        self.dirty.store(true, Ordering::Release);
        Ok(out)
    }

    /// Deletes messages past their app's age limit (a cache channel keeps its last).
    fn sweep(&mut self) -> Result<(), HistoryError> {
        let mut batch = self.shared.db.batch().durability(Some(PersistMode::Buffer));
        let keys: Vec<(Arc<str>, ChannelName)> = self.spans.keys().cloned().collect();
        for (app, channel) in keys {
            let Some(mut span) = self.spans.get(&(app.clone(), channel.clone())).copied() else {
                continue;
            };
            let cutoff = self.shared.cutoff(&app);
            let prefix = codec::prefix(&app, &channel);
            // The newest message always stays on disk, even expired (reads skip it
            // unless it is a cache channel's): it anchors the channel's offset so ids
            // keep growing across restarts.
            while span.first < span.last {
                let k = codec::key(&prefix, span.first);
                match self.shared.messages.get(&k).map_err(storage)? {
                    Some(v) if codec::published_at(&v).is_some_and(|at| at >= cutoff) => break,
                    Some(_) => batch.remove(&self.shared.messages, k),
                    None => {}
                }
                span.first += 1;
            }
            self.spans.insert((app, channel), span);
        }
        if !batch.is_empty() {
            batch.commit().map_err(storage)?;
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
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
            let at_tip = after.epoch == self.shared.epoch
                && self.shared.tips.get(app_id, channel) == Some(after.offset);
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
            let (gap, from) = match &after {
                None => (false, 0),
                Some(p) if p.epoch != s.epoch || p.offset > tip => (true, 0),
                Some(p) if p.offset + 1 < first_offset => (true, 0),
                Some(p) => (false, p.offset + 1),
            };
            let (mut messages, tip) = s.scan(&app, &channel, from, limit)?;
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
        if let Some(tip) = self.shared.tips.get(app_id, channel) {
            return Ok(StreamPosition::new(self.shared.epoch.clone(), tip));
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
}
