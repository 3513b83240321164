//! Session behaviour without sockets: a fake transport drains the outbox and pulls
//! replay pages the way the WebSocket loop does.

use super::*;
use crate::broker::MemoryBroker;
use crate::history::memory::MemoryHistory;
use crate::history::{HistoryStore, Retention};
use crate::outbox::{outbox, OutboxReceiver};
use crate::publish::EventRequest;
use crate::{AppRegistry, NodeSettings};
use serde_json::{json, Value};

fn node(max_channels: usize) -> (Arc<Node>, Arc<App>) {
    let hub = Arc::new(crate::hub::Hub::new());
    let retention = Arc::new(|_: &str| Retention {
        max_messages: 10_000,
        ..Retention::default()
    });
    let broker = Arc::new(
        MemoryBroker::new(hub.clone(), None, |on_commit| {
            Ok::<Arc<dyn HistoryStore>, std::convert::Infallible>(Arc::new(MemoryHistory::new(
                retention, on_commit,
            )))
        })
        .unwrap(),
    );
    let mut app = App::new("a", "k", "s");
    app.limits.max_channels_per_connection = max_channels;
    let node = Arc::new(Node::new(
        AppRegistry::new([app]),
        hub,
        broker,
        NodeSettings::default(),
    ));
    let app = node.apps().by_id("a").unwrap().clone();
    (node, app)
}

async fn publish(node: &Node, app: &App, channel: &str, range: std::ops::Range<usize>) -> String {
    let requests = range
        .map(|i| EventRequest {
            name: Some("n".into()),
            data: Some(Value::String(i.to_string())),
            channel: Some(channel.into()),
            channels: None,
            socket_id: None,
            info: None,
        })
        .collect();
    let published = node.publish(app, requests).await.unwrap();
    published[0].position.epoch.to_string()
}

fn parse(frame: &Bytes) -> Value {
    serde_json::from_slice(frame).unwrap()
}

/// What the transport would write from the outbox right now.
fn drain(session: &mut Session, rx: &mut OutboxReceiver) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(item) = rx.try_next() {
        if let Delivery::Send(frame) = session.outgoing(item) {
            out.push(parse(&frame));
        }
    }
    out
}

#[tokio::test]
async fn replay_comes_in_pages_and_live_messages_wait_for_it() {
    let (node, app) = node(100);
    let epoch = publish(&node, &app, "ch", 0..150).await;
    let (tx, mut rx) = outbox(1024);
    let (mut session, _) = Session::open(node.clone(), app.clone(), tx).unwrap();
    let since = format!("{epoch}-0");
    let replies = session
        .handle(
            &json!({"event": "pusher:subscribe", "data": {"channel": "ch", "since": since}})
                .to_string(),
        )
        .await
        .unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        parse(&replies[0])["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert!(session.replaying());

    let mut replayed = Vec::new();
    let mut pages = 0;
    while session.replaying() {
        let page = session.replay_page().await;
        assert!(
            !page.is_empty() && page.len() <= subscribe::REPLAY_PAGE,
            "{}",
            page.len()
        );
        pages += 1;
        replayed.extend(
            page.iter()
                .map(|f| parse(f)["data"].as_str().unwrap().to_owned()),
        );
        if pages == 1 {
            // Published mid-replay: delivered live, but held back for the replay.
            publish(&node, &app, "ch", 150..155).await;
            assert_eq!(drain(&mut session, &mut rx), Vec::<Value>::new());
        }
    }
    let want: Vec<String> = (0..155).map(|i| i.to_string()).collect();
    assert_eq!(replayed, want);
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(drain(&mut session, &mut rx), Vec::<Value>::new());
    publish(&node, &app, "ch", 155..156).await;
    let live = drain(&mut session, &mut rx);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["data"], "155");
}

#[tokio::test]
async fn the_channel_beyond_the_cap_is_refused() {
    let (node, app) = node(2);
    let (tx, _rx) = outbox(16);
    let (mut session, _) = Session::open(node, app, tx).unwrap();
    for (channel, event) in [
        ("a", "pusher_internal:subscription_succeeded"),
        ("b", "pusher_internal:subscription_succeeded"),
        // A repeated subscribe is not a new channel.
        ("a", "pusher_internal:subscription_succeeded"),
        ("c", "pusher:subscription_error"),
    ] {
        let frame = json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string();
        let replies = session.handle(&frame).await.unwrap();
        assert_eq!(parse(&replies[0])["event"], event, "{channel}");
    }
}
