//! The same cases against every history store: offsets, delivery order, paging, gaps,
//! retention by count and age, cache channels; plus the disk store's restart and
//! space reclamation. Paging, gaps and age also run on the Redis history (one
//! redis-server and a Redis Cluster).

use super::disk::DiskHistory;
use super::memory::MemoryHistory;
use super::{CommitObserver, FsyncPolicy, HistoryStore, Retention, RetentionLookup};
use crate::message::{NewMessage, Published};
use crate::position::StreamPosition;
use crier_protocol::ChannelName;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u64)>>);

impl CommitObserver for Recorder {
    fn committed(&self, batch: &[Arc<Published>]) {
        let mut seen = self.0.lock();
        seen.extend(
            batch
                .iter()
                .map(|m| (m.channel.to_string(), m.position.offset)),
        );
    }
}

struct Fixture {
    store: Arc<dyn HistoryStore>,
    delivered: Arc<Recorder>,
    clock: Arc<AtomicU64>,
    _dir: Option<tempfile::TempDir>,
}

fn retention(max_messages: usize, max_age_secs: u64) -> RetentionLookup {
    Arc::new(move |_| Retention {
        max_messages,
        max_age: Duration::from_secs(max_age_secs),
    })
}

fn fixtures(max_messages: usize, max_age_secs: u64) -> Vec<(&'static str, Fixture)> {
    let mut out = Vec::new();
    for kind in ["memory", "disk-grouped", "disk-always"] {
        let delivered = Arc::new(Recorder::default());
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let c = clock.clone();
        let clock_fn: Arc<dyn Fn() -> u64 + Send + Sync> =
            Arc::new(move || c.load(Ordering::SeqCst));
        let (store, dir): (Arc<dyn HistoryStore>, _) = if kind == "memory" {
            let s = MemoryHistory::new(retention(max_messages, max_age_secs), delivered.clone())
                .with_clock(clock_fn);
            (Arc::new(s), None)
        } else {
            let dir = tempfile::tempdir().unwrap();
            let policy = if kind == "disk-always" {
                FsyncPolicy::Always
            } else {
                FsyncPolicy::Grouped
            };
            let s = DiskHistory::open_with_clock(
                dir.path(),
                policy,
                Duration::from_millis(5),
                retention(max_messages, max_age_secs),
                delivered.clone(),
                clock_fn,
            )
            .unwrap();
            (Arc::new(s), Some(dir))
        };
        out.push((
            kind,
            Fixture {
                store,
                delivered,
                clock,
                _dir: dir,
            },
        ));
    }
    out
}

fn msg(channel: &str, data: &str) -> NewMessage {
    NewMessage {
        app_id: Arc::from("app"),
        channel: ChannelName::parse(channel).unwrap(),
        event: Arc::from("e"),
        data: Arc::from(data),
        exclude_socket: None,
    }
}

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_growing_offsets_delivered_in_order() {
    for (kind, f) in fixtures(10_000, 3600) {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let store = f.store.clone();
                tokio::spawn(async move {
                    for i in 0..100 {
                        let channel = if i % 2 == 0 { "even" } else { "odd" };
                        let out = store
                            .append(vec![msg(channel, &format!("{t}:{i}"))])
                            .await
                            .unwrap();
                        assert_eq!(out.len(), 1);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let seen = f.delivered.0.lock().clone();
        assert_eq!(seen.len(), 800, "{kind}");
        for name in ["even", "odd"] {
            let offsets: Vec<u64> = seen
                .iter()
                .filter(|(c, _)| c == name)
                .map(|(_, o)| *o)
                .collect();
            assert_eq!(offsets, (1..=400).collect::<Vec<_>>(), "{kind} {name}");
        }
    }
}

/// A store's name, the store, and what keeps it running.
type Store = (
    &'static str,
    Arc<dyn HistoryStore>,
    Box<dyn std::any::Any + Send>,
);

/// Stores with their keep-alive: the fixtures above plus the Redis history on one
/// redis-server and on a Redis Cluster. For the cases that need neither the commit
/// observer (Redis announces on pub/sub, which the broker's suite covers) nor a clock
/// of the test's own (Redis keeps time with its own `TIME`).
async fn all_stores(max_messages: usize, max_age_secs: u64) -> Vec<Store> {
    let mut out: Vec<Store> = fixtures(max_messages, max_age_secs)
        .into_iter()
        .map(|(kind, f)| {
            let store = f.store.clone();
            (kind, store, Box::new(f) as Box<dyn std::any::Any + Send>)
        })
        .collect();
    for (kind, target, guard) in crate::redis::testing::deployments() {
        let (broker, _presence) = crate::redis::testing::node(
            &crate::redis::testing::settings(&target),
            &crate::redis::testing::apps(),
            Retention {
                max_messages,
                max_age: Duration::from_secs(max_age_secs),
            },
            Arc::new(crate::hub::Hub::new()),
            None,
        )
        .await;
        use crate::broker::Broker;
        let store = broker.history().clone();
        out.push((kind, store, Box::new((broker, guard))));
    }
    out
}

#[tokio::test]
async fn reads_page_and_report_gaps() {
    for (kind, s, _keep) in all_stores(5, 3600).await {
        let s = &s;
        let empty = s.read("app", &ch("a"), None, 10).await.unwrap();
        assert!(empty.messages.is_empty() && !empty.gap, "{kind}");
        assert_eq!(empty.position.offset, 0);
        let batch: Vec<_> = (0..8).map(|i| msg("a", &i.to_string())).collect();
        let out = s.append(batch).await.unwrap();
        let epoch = out[0].position.epoch.clone();
        // Only the last 5 (offsets 4..=8) are retained.
        let all = s.read("app", &ch("a"), None, 2).await.unwrap();
        assert_eq!(
            all.messages
                .iter()
                .map(|m| m.position.offset)
                .collect::<Vec<_>>(),
            [4, 5],
            "{kind}"
        );
        assert!(all.more && !all.gap);
        let next = s
            .read("app", &ch("a"), Some(&all.position), 10)
            .await
            .unwrap();
        assert_eq!(next.messages.len(), 3);
        assert!(!next.more && !next.gap);
        assert_eq!(next.position.offset, 8);
        let at_tip = s
            .read("app", &ch("a"), Some(&next.position), 10)
            .await
            .unwrap();
        assert!(at_tip.messages.is_empty() && !at_tip.gap && at_tip.position.offset == 8);
        // Offset 3 is exactly covered (next is 4); offset 2 is not.
        let covered = s
            .read(
                "app",
                &ch("a"),
                Some(&StreamPosition::new(epoch.clone(), 3)),
                10,
            )
            .await
            .unwrap();
        assert!(!covered.gap && covered.messages.len() == 5, "{kind}");
        let stale = s
            .read(
                "app",
                &ch("a"),
                Some(&StreamPosition::new(epoch.clone(), 2)),
                10,
            )
            .await
            .unwrap();
        assert!(stale.gap && stale.messages.len() == 5, "{kind}");
        let foreign = s
            .read(
                "app",
                &ch("a"),
                Some(&StreamPosition::new(Arc::from("other"), 7)),
                10,
            )
            .await
            .unwrap();
        assert!(foreign.gap && foreign.messages.len() == 5, "{kind}");
        let future = s
            .read("app", &ch("a"), Some(&StreamPosition::new(epoch, 99)), 10)
            .await
            .unwrap();
        assert!(future.gap, "{kind}");
        assert_eq!(s.tip("app", &ch("a")).await.unwrap().offset, 8);
        assert_eq!(
            s.last("app", &ch("a"))
                .await
                .unwrap()
                .unwrap()
                .data
                .as_ref(),
            "7"
        );
    }
}

#[tokio::test]
async fn redis_history_expires_by_age_but_cache_channels_keep_their_last() {
    for (kind, s, _keep) in all_stores(100, 1).await {
        if !kind.starts_with("redis") {
            continue;
        }
        s.append(vec![
            msg("old", "1"),
            msg("cache-old", "1"),
            msg("cache-old", "2"),
        ])
        .await
        .unwrap();
        // Redis's clock, not ours: wait (bounded) for the second to pass.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let page = s.read("app", &ch("old"), None, 10).await.unwrap();
            if page.messages.is_empty() {
                assert_eq!(page.position.offset, 1, "{kind}: ids go on");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{kind}: never expired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cached = s.read("app", &ch("cache-old"), None, 10).await.unwrap();
        let data: Vec<&str> = cached.messages.iter().map(|m| &*m.data).collect();
        assert_eq!(data, ["2"], "{kind}: a cache channel keeps its last");
        let next = s.append(vec![msg("old", "2")]).await.unwrap();
        assert_eq!(
            next[0].position.offset, 2,
            "{kind}: no reused id after expiry"
        );
    }
}

#[tokio::test]
async fn messages_expire_by_age_but_cache_channels_keep_their_last() {
    for (kind, f) in fixtures(100, 10) {
        let s = &f.store;
        s.append(vec![
            msg("old", "1"),
            msg("cache-c", "1"),
            msg("cache-c", "2"),
        ])
        .await
        .unwrap();
        f.clock.fetch_add(11_000, Ordering::SeqCst);
        s.append(vec![msg("old", "2")]).await.unwrap();
        let page = s.read("app", &ch("old"), None, 10).await.unwrap();
        assert_eq!(
            page.messages.iter().map(|m| &*m.data).collect::<Vec<_>>(),
            ["2"],
            "{kind}"
        );
        let cached = s.read("app", &ch("cache-c"), None, 10).await.unwrap();
        assert_eq!(
            cached.messages.iter().map(|m| &*m.data).collect::<Vec<_>>(),
            ["2"],
            "{kind}"
        );
        assert_eq!(
            s.last("app", &ch("cache-c"))
                .await
                .unwrap()
                .unwrap()
                .data
                .as_ref(),
            "2"
        );
        f.clock.fetch_add(11_000, Ordering::SeqCst);
        assert!(s.last("app", &ch("old")).await.unwrap().is_none(), "{kind}");
        assert!(s
            .read("app", &ch("old"), None, 10)
            .await
            .unwrap()
            .messages
            .is_empty());
        // Ids keep growing after everything expired.
        let again = s.append(vec![msg("old", "3")]).await.unwrap();
        assert_eq!(again[0].position.offset, 3, "{kind}");
    }
}

fn open_disk(dir: &std::path::Path, max: usize) -> DiskHistory {
    DiskHistory::open(
        dir,
        FsyncPolicy::Grouped,
        Duration::from_millis(5),
        retention(max, 3600),
        Arc::new(Recorder::default()),
    )
    .unwrap()
}

#[tokio::test]
async fn disk_store_survives_reopen_with_same_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let s = open_disk(dir.path(), 100);
        let out = s.append(vec![msg("a", "1"), msg("a", "2")]).await.unwrap();
        out[1].position.clone()
    };
    let s = open_disk(dir.path(), 100);
    assert_eq!(s.epoch(), &first.epoch);
    let page = s.read("app", &ch("a"), None, 10).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    // Tips answered from memory must agree with the disk, before and after a write.
    assert_eq!(s.tip("app", &ch("a")).await.unwrap(), first);
    assert_eq!(s.tip("app", &ch("never")).await.unwrap().offset, 0);
    let at_tip = s.read("app", &ch("a"), Some(&first), 10).await.unwrap();
    assert!(at_tip.messages.is_empty() && !at_tip.gap && at_tip.position == first);
    let out = s.append(vec![msg("a", "3")]).await.unwrap();
    assert_eq!(out[0].position.offset, 3);
    assert_eq!(s.tip("app", &ch("a")).await.unwrap().offset, 3);
    let behind = s.read("app", &ch("a"), Some(&first), 10).await.unwrap();
    assert_eq!(behind.messages.len(), 1);
    assert_eq!(behind.messages[0].data.as_ref(), "3");
    drop(s);
    let other = tempfile::tempdir().unwrap();
    assert_ne!(open_disk(other.path(), 100).epoch(), &first.epoch);
}

#[tokio::test]
async fn disk_store_reclaims_space_of_dropped_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_disk(dir.path(), 10);
    let data = "x".repeat(4096);
    for _ in 0..50 {
        let batch: Vec<_> = (0..100).map(|_| msg("big", &data)).collect();
        s.append(batch).await.unwrap();
    }
    // 5000 messages of 4 KiB were written (20 MB); only 10 are retained.
    s.compact().unwrap();
    let (journal, tables) = s.disk_space();
    assert!(
        journal <= super::disk::MAX_JOURNAL_BYTES,
        "journal {journal} bytes"
    );
    assert!(
        tables < 1_000_000,
        "disk space not reclaimed: {tables} bytes of tables"
    );
    assert_eq!(
        s.read("app", &ch("big"), None, 100)
            .await
            .unwrap()
            .messages
            .len(),
        10
    );
}
