//! The disk store under failure: a failed write is refused, the store reports itself
//! unhealthy, recovers when the disk does, and loses nothing it acknowledged; and a
//! clean restart is not mistaken for a torn journal.

use super::fault;
use super::DiskHistory;
use crate::history::{CommitObserver, FsyncPolicy, HistoryStore, Retention};
use crate::message::{NewMessage, Published};
use crier_protocol::ChannelName;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u64)>>);

impl CommitObserver for Recorder {
    fn committed(&self, batch: &[Arc<Published>]) {
        let mut seen = self.0.lock();
        seen.extend(
            batch
                .iter()
                .map(|m| (m.data.to_string(), m.position.offset)),
        );
    }
}

fn open(dir: &Path, policy: FsyncPolicy, delivered: Arc<Recorder>) -> DiskHistory {
    DiskHistory::open(
        dir,
        policy,
        Duration::from_millis(5),
        Arc::new(|_| Retention::default()),
        delivered,
    )
    .unwrap()
}

fn msg(data: &str) -> NewMessage {
    NewMessage {
        app_id: Arc::from("app"),
        channel: ChannelName::parse("c").unwrap(),
        event: Arc::from("e"),
        data: Arc::from(data),
        exclude_socket: None,
    }
}

async fn stored(s: &DiskHistory) -> Vec<(String, u64)> {
    let page = s
        .read("app", &ChannelName::parse("c").unwrap(), None, 100)
        .await
        .unwrap();
    page.messages
        .iter()
        .map(|m| (m.data.to_string(), m.position.offset))
        .collect()
}

/// Waits for the writer's reopen (it retries on its own, with backoff up to 1 s).
async fn until_healthy(s: &DiskHistory) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.health().is_err() {
        assert!(
            Instant::now() < deadline,
            "store did not recover: {:?}",
            s.health()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn owned(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(d, o)| (d.to_string(), *o)).collect()
}

async fn failed_write_recovers(policy: FsyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(Recorder::default());
    let s = open(dir.path(), policy, delivered.clone());
    let faults = fault::for_dir(dir.path());
    assert_eq!(
        s.append(vec![msg("1")]).await.unwrap()[0].position.offset,
        1
    );
    assert!(s.health().is_ok());

    faults.fail_writes(true);
    let e = s.append(vec![msg("refused")]).await.unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    let why = s.health().unwrap_err();
    assert!(why.contains("No space left"), "{why}");
    // While the disk stays full, every publish is refused, on any channel.
    assert!(s.append(vec![msg("also refused")]).await.is_err());
    assert!(s.health().is_err());

    faults.fail_writes(false);
    until_healthy(&s).await;
    let next = s.append(vec![msg("2")]).await.unwrap();
    assert_eq!(
        next[0].position.offset, 2,
        "ids continue after the last acknowledged"
    );
    assert_eq!(stored(&s).await, owned(&[("1", 1), ("2", 2)]));
    assert_eq!(*delivered.0.lock(), owned(&[("1", 1), ("2", 2)]));
    drop(s);
    let s = open(dir.path(), policy, Arc::new(Recorder::default()));
    assert_eq!(stored(&s).await, owned(&[("1", 1), ("2", 2)]));
}

#[tokio::test]
async fn a_failed_write_is_refused_and_the_store_recovers_with_always_fsync() {
    failed_write_recovers(FsyncPolicy::Always).await;
}

#[tokio::test]
async fn a_failed_write_is_refused_and_the_store_recovers_with_grouped_fsync() {
    failed_write_recovers(FsyncPolicy::Grouped).await;
}

/// `fsync = "always"`: every append has made its batch durable (the journal
/// `fdatasync`ed) by the time it returns, and there is no background sync.
#[tokio::test]
async fn always_syncs_each_batch_before_append_returns() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(
        dir.path(),
        FsyncPolicy::Always,
        Arc::new(Recorder::default()),
    );
    let faults = fault::for_dir(dir.path());
    for (i, data) in ["1", "2", "3"].into_iter().enumerate() {
        let before = faults.syncs();
        s.append(vec![msg(data)]).await.unwrap();
        assert_eq!(
            faults.syncs(),
            before + 1,
            "append {} returned without its own sync",
            i + 1
        );
    }
    let after = faults.syncs();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(faults.syncs(), after, "`always` has no background sync");
}

/// `fsync = "grouped"`: an append returns once its batch is written to the OS, before
/// any sync; the background sync follows within `fsync_interval` and covers every
/// batch written since the last one.
#[tokio::test]
async fn grouped_acknowledges_before_its_sync_and_syncs_within_the_interval() {
    const INTERVAL: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let opened = Instant::now();
    let s = DiskHistory::open(
        dir.path(),
        FsyncPolicy::Grouped,
        INTERVAL,
        Arc::new(|_| Retention::default()),
        Arc::new(Recorder::default()),
    )
    .unwrap();
    let faults = fault::for_dir(dir.path());
    s.append(vec![msg("1")]).await.unwrap();
    s.append(vec![msg("2")]).await.unwrap();
    let unsynced = faults.syncs();
    // The background thread first wakes one interval after the open.
    assert!(
        opened.elapsed() < INTERVAL,
        "the machine stalled for a whole interval; nothing to conclude"
    );
    assert_eq!(unsynced, 0, "grouped acknowledged only after a sync");
    let deadline = Instant::now() + INTERVAL * 2;
    while faults.syncs() == 0 {
        assert!(Instant::now() < deadline, "no sync within the interval");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        opened.elapsed() >= INTERVAL,
        "synced before the interval had passed"
    );
    assert_eq!(faults.syncs(), 1, "one sync for both batches");
    assert_eq!(stored(&s).await, owned(&[("1", 1), ("2", 2)]));
}

#[tokio::test]
async fn a_refused_batch_that_reached_the_journal_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(Recorder::default());
    let s = open(dir.path(), FsyncPolicy::Always, delivered.clone());
    let faults = fault::for_dir(dir.path());
    s.append(vec![msg("1")]).await.unwrap();
    faults.fail_after_write(true);
    assert!(s
        .append(vec![msg("refused"), msg("refused too")])
        .await
        .is_err());
    faults.fail_after_write(false);
    until_healthy(&s).await;
    assert_eq!(stored(&s).await, owned(&[("1", 1)]));
    let next = s.append(vec![msg("2")]).await.unwrap();
    assert_eq!(next[0].position.offset, 2);
    assert_eq!(*delivered.0.lock(), owned(&[("1", 1), ("2", 2)]));
    drop(s);
    let s = open(
        dir.path(),
        FsyncPolicy::Always,
        Arc::new(Recorder::default()),
    );
    assert_eq!(stored(&s).await, owned(&[("1", 1), ("2", 2)]));
}

#[tokio::test]
async fn a_clean_restart_cuts_nothing_and_a_real_cut_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(
        dir.path(),
        FsyncPolicy::Grouped,
        Arc::new(Recorder::default()),
    );
    let batch: Vec<_> = (0..50).map(|i| msg(&i.to_string())).collect();
    s.append(batch).await.unwrap();
    drop(s);
    let s = open(
        dir.path(),
        FsyncPolicy::Grouped,
        Arc::new(Recorder::default()),
    );
    assert_eq!(
        s.journal_bytes_cut(),
        0,
        "a clean restart is not a torn tail"
    );
    assert_eq!(stored(&s).await.len(), 50);
    drop(s);

    // Cut the last record short, as a crash mid-write would.
    let ends = super::journal::data_ends(dir.path());
    let (path, end) = ends.iter().max_by_key(|(_, end)| *end).unwrap();
    assert!(*end > 7);
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(end - 7).unwrap();
    drop(file);
    let s = open(
        dir.path(),
        FsyncPolicy::Grouped,
        Arc::new(Recorder::default()),
    );
    assert!(s.journal_bytes_cut() > 0);
}

/// A tmpfs of a few MiB, mounted for one test and unmounted after it, even on panic.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    /// `None` where mounting is not allowed (not root, a container without
    /// CAP_SYS_ADMIN); the test then says so and checks nothing.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// Fills the disk with a file; returns it so the test can free the space again.
fn fill(disk: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = disk.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

/// The same recovery as above on a real full disk, where fjall itself fails the
/// journal write and poisons the database: proves the reopen is what recovers it.
#[tokio::test]
async fn a_real_full_disk_poisons_nothing_for_good() {
    let Some(disk) = SmallDisk::mount("8m") else {
        eprintln!("SKIPPED a_real_full_disk_poisons_nothing_for_good: cannot mount a tmpfs here");
        return;
    };
    let dir = disk.path().join("history");
    let delivered = Arc::new(Recorder::default());
    let s = open(&dir, FsyncPolicy::Always, delivered.clone());
    s.append(vec![msg("1")]).await.unwrap();
    let filler = fill(disk.path());
    // Random, so the journal's compression cannot shrink it into a page it already has.
    let big: String = {
        use rand::distr::{Alphanumeric, SampleString};
        Alphanumeric.sample_string(&mut rand::rng(), 256 * 1024)
    };
    let refused = s.append(vec![msg(&big)]).await.map(|_| ());
    assert!(refused.is_err(), "a write to a full disk succeeded");
    std::fs::remove_file(filler).unwrap();
    until_healthy(&s).await;
    let next = s.append(vec![msg("2")]).await.unwrap();
    assert_eq!(next[0].position.offset, 2);
    assert_eq!(stored(&s).await, owned(&[("1", 1), ("2", 2)]));
    assert_eq!(*delivered.0.lock(), owned(&[("1", 1), ("2", 2)]));
    drop(s);
    let s = open(&dir, FsyncPolicy::Always, Arc::new(Recorder::default()));
    assert_eq!(stored(&s).await, owned(&[("1", 1), ("2", 2)]));
}
