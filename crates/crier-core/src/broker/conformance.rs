//! The same cases against every broker (see the contract on [`Broker`]): ids in order
//! per channel, delivery exactly once and in order to a node with interest, none
//! without, ephemeral frames that skip their sender and are not stored, occupancy and
//! subscription counts, disconnects, history reads, health and flush. They run on the
//! memory broker (over both history stores) and the Redis broker, on one redis-server
//! and on a three-master Redis Cluster. Delivery through Redis is asynchronous, so the
//! cases wait for what should arrive, and check that something did not arrive by
//! waiting for a later message that must.

use super::{Broker, Deliver, MemoryBroker};
use crate::events::{ChannelEvent, ChannelObserver};
use crate::history::disk::DiskHistory;
use crate::history::memory::MemoryHistory;
use crate::history::{FsyncPolicy, HistoryError, HistoryStore, Retention};
use crate::message::{NewMessage, Published};
use crate::outbox::Disconnect;
use crate::redis::testing;
use bytes::Bytes;
use crier_protocol::ChannelName;
use crier_protocol::ErrorCode;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What reached the node: `(channel, offset)` of messages, `(channel, frame, exclude)`
/// of ephemeral frames.
#[derive(Default)]
struct Node {
    messages: Mutex<Vec<(String, u64)>>,
    frames: Mutex<Vec<(String, Bytes, Option<String>)>>,
    closed: Mutex<Vec<String>>,
}

impl Deliver for Node {
    fn deliver(&self, message: &Arc<Published>) {
        self.messages
            .lock()
            .push((message.channel.to_string(), message.position.offset));
    }

    fn deliver_frame(
        &self,
        _app: &str,
        channel: &ChannelName,
        frame: Bytes,
        exclude: Option<&str>,
    ) {
        self.frames
            .lock()
            .push((channel.to_string(), frame, exclude.map(str::to_owned)));
    }

    fn close(&self, _app: &str, channel: &ChannelName, _reason: &Disconnect) {
        self.closed.lock().push(channel.to_string());
    }
}

/// Occupancy as the broker announced it: `+channel` / `-channel`.
#[derive(Default)]
struct Occupancy(Mutex<Vec<String>>);

impl ChannelObserver for Occupancy {
    fn on_event(&self, _app: &Arc<str>, event: ChannelEvent) {
        match event {
            ChannelEvent::Occupied(c) => self.0.lock().push(format!("+{c}")),
            ChannelEvent::Vacated(c) => self.0.lock().push(format!("-{c}")),
            _ => {}
        }
    }
}

struct Fixture {
    broker: Arc<dyn Broker>,
    node: Arc<Node>,
    occupancy: Arc<Occupancy>,
    _keep: Option<testing::Guard>,
}

const WAIT: Duration = Duration::from_secs(10);

/// Waits until `check` holds, failing the case after [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn retention() -> Retention {
    Retention {
        max_messages: 10_000,
        ..Retention::default()
    }
}

async fn fixtures() -> Vec<(&'static str, Fixture)> {
    let mut out = Vec::new();
    let node = Arc::new(Node::default());
    let occupancy = Arc::new(Occupancy::default());
    let broker = MemoryBroker::new(node.clone(), Some(occupancy.clone()), |on_commit| {
        Ok::<Arc<dyn HistoryStore>, HistoryError>(Arc::new(MemoryHistory::new(
            Arc::new(|_: &str| retention()),
            on_commit,
        )))
    })
    .unwrap();
    out.push((
        "memory",
        Fixture {
            broker: Arc::new(broker),
            node,
            occupancy,
            _keep: None,
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(Node::default());
    let occupancy = Arc::new(Occupancy::default());
    let broker = MemoryBroker::new(node.clone(), Some(occupancy.clone()), |on_commit| {
        let store = DiskHistory::open(
            dir.path(),
            FsyncPolicy::Grouped,
            Duration::from_millis(5),
            Arc::new(|_: &str| retention()),
            on_commit,
        )?;
        Ok::<Arc<dyn HistoryStore>, HistoryError>(Arc::new(store))
    })
    .unwrap();
    out.push((
        "memory-over-disk",
        Fixture {
            broker: Arc::new(broker),
            node,
            occupancy,
            _keep: Some(Box::new(dir)),
        },
    ));
    for (kind, target, guard) in testing::deployments() {
        let node = Arc::new(Node::default());
        let occupancy = Arc::new(Occupancy::default());
        let (broker, _presence) = testing::node(
            &testing::settings(&target),
            &testing::apps(),
            retention(),
            node.clone(),
            Some(occupancy.clone()),
        )
        .await;
        out.push((
            kind,
            Fixture {
                broker: Arc::new(broker),
                node,
                occupancy,
                _keep: Some(guard),
            },
        ));
    }
    out
}

fn app() -> Arc<str> {
    Arc::from("app")
}

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

fn msg(channel: &str, data: &str) -> NewMessage {
    NewMessage {
        app_id: app(),
        channel: ch(channel),
        event: Arc::from("e"),
        data: Arc::from(data),
        exclude_socket: None,
    }
}

fn offsets(node: &Node, channel: &str) -> Vec<u64> {
    node.messages
        .lock()
        .iter()
        .filter(|(c, _)| c == channel)
        .map(|(_, o)| *o)
        .collect()
}

/// Waits for the `count` messages of `channel` expected so far.
async fn delivered(f: &Fixture, kind: &str, channel: &str, count: usize) -> Vec<u64> {
    eventually(&format!("{kind}: {count} on {channel}"), || {
        offsets(&f.node, channel).len() >= count
    })
    .await;
    offsets(&f.node, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_get_ids_in_order_delivered_once_in_order() {
    for (kind, f) in fixtures().await {
        for channel in ["even", "odd"] {
            f.broker.subscribe(&app(), &ch(channel)).await.unwrap();
        }
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let broker = f.broker.clone();
                tokio::spawn(async move {
                    let mut last = [0u64; 2];
                    for i in 0..50 {
                        let channel = if i % 2 == 0 { "even" } else { "odd" };
                        let out = broker
                            .publish(vec![msg(channel, &format!("{t}:{i}"))])
                            .await
                            .unwrap();
                        let offset = out[0].position.offset;
                        assert!(offset > last[i % 2], "ids grow per channel");
                        last[i % 2] = offset;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        for channel in ["even", "odd"] {
            let expected: Vec<u64> = (1..=200).collect();
            let got = delivered(&f, kind, channel, 200).await;
            assert_eq!(got, expected, "{kind} {channel}");
        }
    }
}

#[tokio::test]
async fn a_batch_is_stored_and_delivered_in_its_order() {
    for (kind, f) in fixtures().await {
        f.broker.subscribe(&app(), &ch("a")).await.unwrap();
        f.broker.subscribe(&app(), &ch("b")).await.unwrap();
        let out = f
            .broker
            .publish(vec![msg("a", "1"), msg("b", "1"), msg("a", "2")])
            .await
            .unwrap();
        let ids: Vec<(String, u64)> = out
            .iter()
            .map(|m| (m.channel.to_string(), m.position.offset))
            .collect();
        let expected = vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)];
        assert_eq!(ids, expected, "{kind}");
        assert_eq!(delivered(&f, kind, "a", 2).await, [1, 2], "{kind}");
        assert_eq!(delivered(&f, kind, "b", 1).await, [1], "{kind}");
        let page = f
            .broker
            .history()
            .read("app", &ch("a"), None, 10)
            .await
            .unwrap();
        let data: Vec<&str> = page.messages.iter().map(|m| &*m.data).collect();
        assert_eq!(data, ["1", "2"], "{kind}: history holds what was delivered");
    }
}

#[tokio::test]
async fn interest_is_counted_and_only_channels_of_interest_arrive() {
    for (kind, f) in fixtures().await {
        let (a, c, s) = (app(), ch("c"), ch("sentinel"));
        f.broker.subscribe(&a, &s).await.unwrap();
        f.broker.publish(vec![msg("c", "nobody")]).await.unwrap();
        f.broker.subscribe(&a, &c).await.unwrap();
        f.broker.subscribe(&a, &c).await.unwrap();
        f.broker.publish(vec![msg("c", "twice")]).await.unwrap();
        f.broker.publish(vec![msg("sentinel", "1")]).await.unwrap();
        delivered(&f, kind, "sentinel", 1).await;
        assert_eq!(
            delivered(&f, kind, "c", 1).await,
            [2],
            "{kind}: not before interest, and once, not per subscribe"
        );
        f.broker.unsubscribe(&a, &c);
        f.broker.publish(vec![msg("c", "still")]).await.unwrap();
        assert_eq!(
            delivered(&f, kind, "c", 2).await,
            [2, 3],
            "{kind}: one subscribe left"
        );
        f.broker.unsubscribe(&a, &c);
        f.broker.unsubscribe(&a, &c);
        f.broker.publish(vec![msg("c", "gone")]).await.unwrap();
        f.broker.publish(vec![msg("sentinel", "2")]).await.unwrap();
        delivered(&f, kind, "sentinel", 2).await;
        assert_eq!(offsets(&f.node, "c"), [2, 3], "{kind}: interest dropped");
        let tip = f.broker.history().tip("app", &c).await.unwrap();
        assert_eq!(tip.offset, 4, "{kind}: stored with or without interest");
    }
}

#[tokio::test]
async fn ephemeral_frames_name_the_excluded_sender_and_are_not_stored() {
    for (kind, f) in fixtures().await {
        let (a, c) = (app(), ch("private-x"));
        f.broker
            .publish_ephemeral(&a, &c, Bytes::from_static(b"early"), None);
        f.broker.subscribe(&a, &c).await.unwrap();
        f.broker
            .publish_ephemeral(&a, &c, Bytes::from_static(b"hi"), Some("1.2"));
        eventually(kind, || !f.node.frames.lock().is_empty()).await;
        let frames = f.node.frames.lock().clone();
        assert_eq!(
            frames,
            [(
                "private-x".to_owned(),
                Bytes::from_static(b"hi"),
                Some("1.2".to_owned())
            )],
            "{kind}: the frame before interest did not arrive"
        );
        let tip = f.broker.history().tip("app", &c).await.unwrap();
        assert_eq!(tip.offset, 0, "{kind}: ephemeral frames have no id");
    }
}

#[tokio::test]
async fn subscribing_before_reading_history_misses_nothing() {
    for (kind, f) in fixtures().await {
        let (a, c) = (app(), ch("r"));
        f.broker.publish(vec![msg("r", "before")]).await.unwrap();
        f.broker.subscribe(&a, &c).await.unwrap();
        let publisher = {
            let broker = f.broker.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    broker
                        .publish(vec![msg("r", &i.to_string())])
                        .await
                        .unwrap();
                }
            })
        };
        let page = f.broker.history().read("app", &c, None, 100).await.unwrap();
        publisher.await.unwrap();
        let read: Vec<u64> = page.messages.iter().map(|m| m.position.offset).collect();
        // Live delivery covers everything after what the read returned.
        let last_read = read.last().copied().unwrap_or(0);
        let live = delivered(&f, kind, "r", usize::try_from(21 - last_read).unwrap()).await;
        let mut seen = read;
        seen.extend(live);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (1..=21).collect::<Vec<_>>(), "{kind}");
    }
}

#[tokio::test]
async fn healthy_and_flushes() {
    for (kind, f) in fixtures().await {
        f.broker.publish(vec![msg("f", "1")]).await.unwrap();
        assert_eq!(f.broker.health(), Ok(()), "{kind}");
        f.broker.flush().await.unwrap();
        let last = f.broker.history().last("app", &ch("f")).await.unwrap();
        assert_eq!(
            last.map(|m| m.data.to_string()).as_deref(),
            Some("1"),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn occupancy_and_counts_are_the_clusters() {
    for (kind, f) in fixtures().await {
        let (a, x, y) = (app(), ch("presence-x"), ch("presence-y"));
        let seen = |n: usize| {
            let occupancy = f.occupancy.clone();
            async move {
                eventually(kind, || occupancy.0.lock().len() >= n).await;
                occupancy.0.lock().clone()
            }
        };
        f.broker.hold(&a, &x);
        assert_eq!(seen(1).await, ["+presence-x"], "{kind}: a member occupies");
        f.broker.subscribe(&a, &x).await.unwrap();
        f.broker.subscribe(&a, &y).await.unwrap();
        f.broker.subscribe(&a, &y).await.unwrap();
        assert_eq!(
            seen(2).await,
            ["+presence-x", "+presence-y"],
            "{kind}: once per occupied channel"
        );
        assert_eq!(
            f.broker.subscription_count("app", &x).await.unwrap(),
            Some(1),
            "{kind}"
        );
        assert_eq!(
            f.broker.subscription_count("app", &ch("z")).await.unwrap(),
            None,
            "{kind}"
        );
        let all = f.broker.channels("app", "presence-").await.unwrap();
        assert_eq!(all, [(x.clone(), 1), (y.clone(), 2)], "{kind}");
        assert!(
            f.broker.channels("other", "").await.unwrap().is_empty(),
            "{kind}"
        );
        f.broker.unsubscribe(&a, &x);
        let deadline = Instant::now() + WAIT;
        while f.broker.subscription_count("app", &x).await.unwrap() != Some(0) {
            assert!(
                Instant::now() < deadline,
                "{kind}: the unsubscribe was not counted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        f.broker
            .publish(vec![msg("presence-x", "held")])
            .await
            .unwrap();
        f.broker.release(&a, &x);
        assert_eq!(
            seen(3).await,
            ["+presence-x", "+presence-y", "-presence-x"],
            "{kind}: vacated when the member left, not when the subscriber did"
        );
        assert_eq!(
            f.broker.channels("app", "").await.unwrap(),
            [(y, 2)],
            "{kind}"
        );
        assert!(
            offsets(&f.node, "presence-x").is_empty(),
            "{kind}: holds receive nothing"
        );
    }
}

#[tokio::test]
async fn disconnect_reaches_the_node() {
    for (kind, f) in fixtures().await {
        let (a, c) = (app(), ch("#server-to-user-u1"));
        f.broker.subscribe(&a, &c).await.unwrap();
        let reason = Disconnect::new(ErrorCode::Unauthorized, "bye");
        f.broker.disconnect("app", &c, &reason);
        eventually(kind, || !f.node.closed.lock().is_empty()).await;
        assert_eq!(*f.node.closed.lock(), ["#server-to-user-u1"], "{kind}");
    }
}

#[tokio::test]
async fn the_connection_quota_counts_every_connection_of_the_app() {
    for (kind, f) in fixtures().await {
        let mut app = crate::App::new("q", "k", "s");
        app.limits.max_connections = 2;
        assert!(f.broker.add_connection(&app), "{kind}");
        assert!(f.broker.add_connection(&app), "{kind}");
        assert!(!f.broker.add_connection(&app), "{kind}: at the limit");
        f.broker.remove_connection(&app);
        assert!(f.broker.add_connection(&app), "{kind}");
        app.limits.max_connections = 0;
        assert!(f.broker.add_connection(&app), "{kind}: 0 means no limit");
    }
}
