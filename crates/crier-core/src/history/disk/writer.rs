//! The writer thread: the one place offsets are assigned, and the one that takes the
//! database down and opens it again when the disk fails (see the module docs above).

use super::{codec, open_shared, storage, Command, Reply, Shared, Slot, Span, MAX_BATCH};
use crate::history::{CommitObserver, FsyncPolicy, HistoryError};
use crate::message::{NewMessage, Published};
use crate::position::StreamPosition;
use crier_protocol::ChannelName;
use fjall::PersistMode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First wait between reopen attempts; doubles up to [`MAX_RETRY`]. Short, because a
/// transient failure (a full disk someone just cleaned) should cost little downtime.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);

type Spans = HashMap<(Arc<str>, ChannelName), Span>;

pub(super) struct Writer {
    slot: Arc<Slot>,
    /// The open database; `None` from a failure until a reopen succeeds.
    shared: Option<Arc<Shared>>,
    on_commit: Arc<dyn CommitObserver>,
    policy: FsyncPolicy,
    spans: Spans,
    dirty: Arc<AtomicBool>,
    retry: Duration,
    next_attempt: Instant,
}

impl Writer {
    pub(super) fn new(
        slot: Arc<Slot>,
        shared: Arc<Shared>,
        on_commit: Arc<dyn CommitObserver>,
        policy: FsyncPolicy,
        dirty: Arc<AtomicBool>,
    ) -> Self {
        Self {
            slot,
            shared: Some(shared),
            on_commit,
            policy,
            spans: HashMap::new(),
            dirty,
            retry: FIRST_RETRY,
            next_attempt: Instant::now(),
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        if let Some(shared) = self.shared.clone() {
            match spans_on_disk(&shared) {
                Ok(spans) => {
                    self.adopt(spans);
                    self.slot.tips.complete.store(true, Ordering::Release);
                }
                Err(e) => tracing::error!(error = %e, "history: listing channels failed"),
            }
        }
        loop {
            let first = if self.shared.is_some() {
                match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => return,
                }
            } else {
                let wait = self.next_attempt.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(cmd) => cmd,
                    Err(RecvTimeoutError::Timeout) => {
                        self.try_reopen();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
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
                    Command::Failed(why) => self.fail(&format!("fsync: {why}")),
                }
                if count < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if self.shared.is_none() {
                self.try_reopen();
            }
            let Some(shared) = self.shared.clone() else {
                let e = self.slot.get().err();
                for (_, reply) in requests {
                    let why = e.as_ref().map_or_else(String::new, ToString::to_string);
                    let _ = reply.send(Err(HistoryError::Storage(why)));
                }
                continue;
            };
            if !requests.is_empty() {
                self.append(&shared, requests);
            }
            if sweep && self.shared.is_some() {
                if let Err(e) = self.sweep(&shared) {
                    self.fail(&format!("retention sweep: {e}"));
                }
            }
        }
    }

    /// Takes the database down after a failed write: `fjall` has poisoned it, so every
    /// later write would fail until it is reopened.
    fn fail(&mut self, why: &str) {
        if self.shared.is_none() {
            return;
        }
        tracing::error!(
            error = why,
            "history write failed; publishes refused until the store is reopened"
        );
        metrics::counter!("crier_history_write_failures_total").increment(1);
        metrics::gauge!("crier_history_healthy").set(0.0);
        // Unhealthy before anyone hears of the failure: a publisher answered 503 and
        // then asking `/ready` must not be told all is well.
        *self.slot.failure.lock() = Some(why.to_owned());
        *self.slot.current.write() = None;
        self.shared = None;
        self.spans.clear();
        self.retry = FIRST_RETRY;
        self.next_attempt = Instant::now();
    }

    fn try_reopen(&mut self) {
        if Instant::now() < self.next_attempt {
            return;
        }
        match self.reopen() {
            Ok(shared) => {
                tracing::info!(dir = %self.slot.dir.display(), "history store reopened; publishes accepted again");
                self.shared = Some(shared.clone());
                *self.slot.current.write() = Some(shared);
                *self.slot.failure.lock() = None;
                metrics::gauge!("crier_history_healthy").set(1.0);
                self.retry = FIRST_RETRY;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?self.retry, "history store reopen failed");
                *self.slot.failure.lock() = Some(e.to_string());
                self.next_attempt = Instant::now() + self.retry;
                self.retry = (self.retry * 2).min(MAX_RETRY);
            }
        }
    }

    /// Opens the database again, removes what a failed batch left in the journal, and
    /// proves with a synced write that the disk takes writes again.
    fn reopen(&mut self) -> Result<Arc<Shared>, HistoryError> {
        let slot = &self.slot;
        slot.injected_fault("reopening the history store")?;
        let (shared, _) = open_shared(&slot.dir, Some(&slot.epoch), &slot.retention, &slot.clock)?;
        let shared = Arc::new(shared);
        if shared.epoch != slot.epoch {
            return Err(HistoryError::Storage(format!(
                "the history in {} was replaced (epoch {} instead of {})",
                slot.dir.display(),
                shared.epoch,
                slot.epoch
            )));
        }
        let spans = self.drop_unacknowledged(&shared, spans_on_disk(&shared)?)?;
        let mut probe = shared.db.batch().durability(Some(PersistMode::SyncData));
        probe.insert(&shared.meta, "probe", (slot.clock)().to_be_bytes().to_vec());
        probe.commit().map_err(storage)?;
        slot.synced();
        self.adopt(spans);
        Ok(shared)
    }

    /// Deletes messages past each channel's last acknowledged offset: they belong to a
    /// batch that was answered with an error, yet reached the journal (a poisoned
    /// journal's buffer is flushed when it is dropped). Returns the spans that remain.
    fn drop_unacknowledged(&self, shared: &Shared, spans: Spans) -> Result<Spans, HistoryError> {
        let mut batch = shared.db.batch().durability(Some(PersistMode::SyncData));
        let mut kept = Spans::with_capacity(spans.len());
        let mut dropped = 0u64;
        for ((app, channel), mut span) in spans {
            // `None`: the channel list was never read, so what was acknowledged is unknown.
            if let Some(acked) = self.slot.tips.get(&app, &channel) {
                let prefix = codec::prefix(&app, &channel);
                while span.last > acked && span.last >= span.first {
                    batch.remove(&shared.messages, codec::key(&prefix, span.last));
                    span.last -= 1;
                    dropped += 1;
                }
            }
            if span.last >= span.first {
                kept.insert((app, channel), span);
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "history: removed messages of a failed write that reached the journal (their publishers got an error)"
            );
            batch.commit().map_err(storage)?;
        }
        Ok(kept)
    }

    fn adopt(&mut self, spans: Spans) {
        for ((app, channel), span) in &spans {
            self.slot.tips.set(app, channel, span.last);
        }
        self.spans = spans;
    }

    fn span(
        &mut self,
        shared: &Shared,
        app: &Arc<str>,
        channel: &ChannelName,
    ) -> Result<Span, HistoryError> {
        let key = (app.clone(), channel.clone());
        if let Some(s) = self.spans.get(&key) {
            return Ok(*s);
        }
        let span = shared
            .span_on_disk(&codec::prefix(app, channel))?
            .unwrap_or(Span { first: 1, last: 0 });
        self.spans.insert(key, span);
        Ok(span)
    }

    fn append(&mut self, shared: &Shared, requests: Vec<(Vec<NewMessage>, Reply)>) {
        match self.write(shared, &requests) {
            Ok(published) => {
                // Before the observer (the broker's delivery): a reader that sees a tip
                // must find that message in the store, and one that subscribed first
                // gets everything after it live.
                for m in &published {
                    self.slot.tips.set(&m.app_id, &m.channel, m.position.offset);
                }
                self.on_commit.committed(&published);
                let mut it = published.into_iter();
                for (batch, reply) in requests {
                    let mine: Vec<_> = it.by_ref().take(batch.len()).collect();
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                // Spans were advanced for a batch that never reached the disk; `fail`
                // forgets them all and the reopen reads the true ones back.
                self.fail(&e.to_string());
                for (_, reply) in requests {
                    let _ = reply.send(Err(HistoryError::Storage(e.to_string())));
                }
            }
        }
    }

    fn write(
        &mut self,
        shared: &Shared,
        requests: &[(Vec<NewMessage>, Reply)],
    ) -> Result<Vec<Arc<Published>>, HistoryError> {
        let now = (shared.clock)();
        let mode = match self.policy {
            FsyncPolicy::Always => PersistMode::SyncData,
            FsyncPolicy::Grouped => PersistMode::Buffer,
        };
        let mut batch = shared.db.batch().durability(Some(mode));
        let mut out = Vec::with_capacity(requests.iter().map(|r| r.0.len()).sum());
        for message in requests.iter().flat_map(|(b, _)| b.iter()) {
            let mut span = self.span(shared, &message.app_id, &message.channel)?;
            span.last += 1;
            let prefix = codec::prefix(&message.app_id, &message.channel);
            batch.insert(
                &shared.messages,
                codec::key(&prefix, span.last),
                codec::encode_value(message, now),
            );
            let max = shared.retention.as_ref()(&message.app_id)
                .max_messages
                .max(1) as u64;
            while span.last - span.first + 1 > max {
                batch.remove(&shared.messages, codec::key(&prefix, span.first));
                span.first += 1;
            }
            self.spans
                .insert((message.app_id.clone(), message.channel.clone()), span);
            out.push(Arc::new(Published::new(
                message.clone(),
                StreamPosition::new(shared.epoch.clone(), span.last),
                now,
            )));
        }
        self.slot.injected_fault("writing the history journal")?;
        // With `SyncData`, fjall writes the batch to the journal and `fdatasync`s it
        // before `commit` returns; with `Buffer` it only hands it to the OS.
        batch.commit().map_err(storage)?;
        self.dirty.store(true, Ordering::Release);
        if mode == PersistMode::SyncData {
            self.slot.synced();
        }
        self.slot
            .injected_fault_after_write("syncing the history journal")?;
        Ok(out)
    }

    /// Deletes messages past their app's age limit (a cache channel keeps its last).
    fn sweep(&mut self, shared: &Shared) -> Result<(), HistoryError> {
        let mut batch = shared.db.batch().durability(Some(PersistMode::Buffer));
        let keys: Vec<(Arc<str>, ChannelName)> = self.spans.keys().cloned().collect();
        for (app, channel) in keys {
            let Some(mut span) = self.spans.get(&(app.clone(), channel.clone())).copied() else {
                continue;
            };
            let cutoff = shared.cutoff(&app);
            let prefix = codec::prefix(&app, &channel);
            // The newest message always stays on disk, even expired (reads skip it
            // unless it is a cache channel's): it anchors the channel's offset so ids
            // keep growing across restarts.
            while span.first < span.last {
                let k = codec::key(&prefix, span.first);
                match shared.messages.get(&k).map_err(storage)? {
                    Some(v) if codec::published_at(&v).is_some_and(|at| at >= cutoff) => break,
                    Some(_) => batch.remove(&shared.messages, k),
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

/// Every stored channel and its span, with one seek per channel.
fn spans_on_disk(shared: &Shared) -> Result<Spans, HistoryError> {
    let mut spans = Spans::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let Some(guard) = shared.messages.range(from.clone()..).next() else {
            return Ok(spans);
        };
        let key = guard.key().map_err(storage)?;
        let Some((app, channel, _)) = codec::split_key(&key) else {
            return Ok(spans);
        };
        let prefix = codec::prefix(&app, &channel);
        if let Some(span) = shared.span_on_disk(&prefix)? {
            spans.insert((app, channel), span);
        }
        from = codec::prefix_end(&prefix);
    }
}
