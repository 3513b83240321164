//! The same cases against every broker (see the contract on [`Broker`]): ids in order
//! per channel, delivery exactly once and in order to a node with interest, none
//! without, ephemeral frames that skip their sender and are not stored, occupancy and
//! subscription counts, disconnects, history reads, health and flush. A Redis broker joins the fixture list when it exists.

use super::{Broker, Deliver, MemoryBroker};
use crate::history::disk::DiskHistory;
use crate::history::memory::MemoryHistory;
use crate::history::{FsyncPolicy, HistoryError, HistoryStore, Retention};
use crate::message::{NewMessage, Published};
use crate::outbox::Disconnect;
use bytes::Bytes;
use crier_protocol::ChannelName;
use crier_protocol::ErrorCode;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

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

struct Fixture {
    broker: Arc<dyn Broker>,
    node: Arc<Node>,
    _dir: Option<tempfile::TempDir>,
}

fn fixtures() -> Vec<(&'static str, Fixture)> {
    let retention = || {
        Arc::new(|_: &str| Retention {
            max_messages: 10_000,
            ..Retention::default()
        })
    };
    let mut out = Vec::new();
    let node = Arc::new(Node::default());
    let broker = MemoryBroker::new(node.clone(), |on_commit| {
        Ok::<Arc<dyn HistoryStore>, HistoryError>(Arc::new(MemoryHistory::new(
            retention(),
            on_commit,
        )))
    })
    .unwrap();
    out.push((
        "memory",
        Fixture {
            broker: Arc::new(broker),
            node,
            _dir: None,
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(Node::default());
    let broker = MemoryBroker::new(node.clone(), |on_commit| {
        let store = DiskHistory::open(
            dir.path(),
            FsyncPolicy::Grouped,
            Duration::from_millis(5),
            retention(),
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
            _dir: Some(dir),
        },
    ));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_get_ids_in_order_delivered_once_in_order() {
    for (kind, f) in fixtures() {
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
            assert_eq!(offsets(&f.node, channel), expected, "{kind} {channel}");
        }
    }
}

#[tokio::test]
async fn a_batch_is_stored_and_delivered_in_its_order() {
    for (kind, f) in fixtures() {
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
        assert_eq!(*f.node.messages.lock(), expected, "{kind}");
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
    for (kind, f) in fixtures() {
        let (a, c) = (app(), ch("c"));
        f.broker.publish(vec![msg("c", "nobody")]).await.unwrap();
        assert!(f.node.messages.lock().is_empty(), "{kind}: no interest yet");
        assert!(
            f.broker.subscribe(&a, &c).await.unwrap(),
            "{kind}: occupied"
        );
        assert!(!f.broker.subscribe(&a, &c).await.unwrap(), "{kind}");
        f.broker.publish(vec![msg("c", "twice")]).await.unwrap();
        assert_eq!(
            offsets(&f.node, "c"),
            [2],
            "{kind}: once, not per subscribe"
        );
        assert!(!f.broker.unsubscribe(&a, &c), "{kind}");
        f.broker.publish(vec![msg("c", "still")]).await.unwrap();
        assert_eq!(offsets(&f.node, "c"), [2, 3], "{kind}: one subscribe left");
        assert!(f.broker.unsubscribe(&a, &c), "{kind}: vacated");
        assert!(
            !f.broker.unsubscribe(&a, &c),
            "{kind}: nothing left to drop"
        );
        f.broker.publish(vec![msg("c", "gone")]).await.unwrap();
        assert_eq!(offsets(&f.node, "c"), [2, 3], "{kind}: interest dropped");
        let tip = f.broker.history().tip("app", &c).await.unwrap();
        assert_eq!(tip.offset, 4, "{kind}: stored with or without interest");
    }
}

#[tokio::test]
async fn ephemeral_frames_name_the_excluded_sender_and_are_not_stored() {
    for (kind, f) in fixtures() {
        let (a, c) = (app(), ch("private-x"));
        f.broker
            .publish_ephemeral(&a, &c, Bytes::from_static(b"early"), None);
        assert!(f.node.frames.lock().is_empty(), "{kind}: no interest yet");
        f.broker.subscribe(&a, &c).await.unwrap();
        f.broker
            .publish_ephemeral(&a, &c, Bytes::from_static(b"hi"), Some("1.2"));
        let frames = f.node.frames.lock().clone();
        assert_eq!(
            frames,
            [(
                "private-x".to_owned(),
                Bytes::from_static(b"hi"),
                Some("1.2".to_owned())
            )],
            "{kind}"
        );
        let tip = f.broker.history().tip("app", &c).await.unwrap();
        assert_eq!(tip.offset, 0, "{kind}: ephemeral frames have no id");
    }
}

#[tokio::test]
async fn subscribing_before_reading_history_misses_nothing() {
    for (kind, f) in fixtures() {
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
        let mut seen: Vec<u64> = page.messages.iter().map(|m| m.position.offset).collect();
        seen.extend(offsets(&f.node, "r"));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (1..=21).collect::<Vec<_>>(), "{kind}");
    }
}

#[tokio::test]
async fn healthy_and_flushes() {
    for (kind, f) in fixtures() {
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
    for (kind, f) in fixtures() {
        let (a, x, y) = (app(), ch("presence-x"), ch("presence-y"));
        assert!(f.broker.hold(&a, &x), "{kind}: a member occupies");
        assert!(!f.broker.subscribe(&a, &x).await.unwrap(), "{kind}");
        assert!(f.broker.subscribe(&a, &y).await.unwrap(), "{kind}");
        assert!(!f.broker.subscribe(&a, &y).await.unwrap(), "{kind}");
        assert_eq!(f.broker.subscription_count("app", &x), Some(1), "{kind}");
        assert_eq!(f.broker.subscription_count("app", &ch("z")), None, "{kind}");
        let all = f.broker.channels("app", "presence-");
        assert_eq!(all, [(x.clone(), 1), (y.clone(), 2)], "{kind}");
        assert!(f.broker.channels("other", "").is_empty(), "{kind}");
        assert!(
            !f.broker.unsubscribe(&a, &x),
            "{kind}: the member still holds it"
        );
        assert_eq!(f.broker.subscription_count("app", &x), Some(0), "{kind}");
        f.broker
            .publish(vec![msg("presence-x", "held")])
            .await
            .unwrap();
        assert!(
            offsets(&f.node, "presence-x").is_empty(),
            "{kind}: holds receive nothing"
        );
        assert!(f.broker.release(&a, &x), "{kind}: vacated");
        assert!(!f.broker.release(&a, &x), "{kind}");
        assert_eq!(f.broker.channels("app", ""), [(y, 2)], "{kind}");
    }
}

#[tokio::test]
async fn disconnect_reaches_the_node() {
    for (kind, f) in fixtures() {
        let reason = Disconnect::new(ErrorCode::Unauthorized, "bye");
        f.broker
            .disconnect("app", &ch("#server-to-user-u1"), &reason);
        assert_eq!(*f.node.closed.lock(), ["#server-to-user-u1"], "{kind}");
    }
}

#[tokio::test]
async fn the_connection_quota_counts_every_connection_of_the_app() {
    for (kind, f) in fixtures() {
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
