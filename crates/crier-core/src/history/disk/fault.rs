//! The fault-injection seam: lets tests make the store's disk writes fail on demand,
//! as a full or failing disk would, without root, a tiny filesystem or timing tricks.
//!
//! Compiled only for tests and with the `fault-injection` feature; a release build has
//! no way to reach it. Faults are looked up by the store's directory, so a test that
//! starts a whole server can reach the store that server opened.

use super::HistoryError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

static FAULTS: LazyLock<Mutex<HashMap<PathBuf, Arc<Faults>>>> = LazyLock::new(Mutex::default);

/// Injected failures for the store in one directory.
#[derive(Default, Debug)]
pub struct Faults {
    fail_writes: AtomicBool,
    fail_after_write: AtomicBool,
    injected: AtomicU64,
    syncs: AtomicU64,
}

impl Faults {
    /// While set, every journal write and every reopen of the store fails, as on a
    /// full disk; clearing it is the disk recovering.
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// While set, a batch reaches the journal but its commit is reported as failed,
    /// as when an fsync fails after the data was written (and like bytes of a failed
    /// batch that a poisoned journal flushes when it is dropped). Reopening is not
    /// affected.
    pub fn fail_after_write(&self, fail: bool) {
        self.fail_after_write.store(fail, Ordering::SeqCst);
    }

    /// How many operations failed because of this seam.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// How many times the store has made its journal durable on disk: a batch
    /// committed with `fdatasync` (`fsync = "always"`, and the reopen's probe) or a
    /// background fsync (`grouped`). Counted once the sync has returned.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    pub(super) fn synced(&self) {
        self.syncs.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn check_after_write(&self, what: &str) -> Result<(), HistoryError> {
        if self.fail_after_write.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(HistoryError::Storage(format!(
                "{what}: Input/output error (injected fault)"
            )));
        }
        Ok(())
    }

    pub(super) fn check(&self, what: &str) -> Result<(), HistoryError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(HistoryError::Storage(format!(
                "{what}: No space left on device (injected fault)"
            )));
        }
        Ok(())
    }
}

/// The faults of the store in `dir` (the path given to `DiskHistory::open`), created
/// on first use, by the test or by the store, whichever comes first.
pub fn for_dir(dir: &Path) -> Arc<Faults> {
    FAULTS.lock().entry(dir.to_owned()).or_default().clone()
}
