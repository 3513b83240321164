//! One Pusher connection driven without a network. The input is a script, one step a
//! line, so seeds are readable and the harness can sign what the fuzzer cannot:
//!
//! ```text
//! sub <channel> [signed] [user=<id>] [since=<cursor>|since=last]
//! unsub <channel>
//! event <channel> <name>
//! signin <user> [signed]
//! pub <channel> <data>
//! drain
//! <anything else: sent as a raw text frame>
//! ```
//!
//! Every reply and every delivered frame is a JSON object with an event, and closing the
//! session leaves no subscription or presence member behind in the hub.

#![no_main]

use crier_core::broker::MemoryBroker;
use crier_core::history::memory::MemoryHistory;
use crier_core::history::{HistoryStore, Retention, RetentionLookup};
use crier_core::hub::Hub;
use crier_core::outbox::outbox;
use crier_core::publish::EventRequest;
use crier_core::session::{Delivery, Session};
use crier_core::{App, AppRegistry, Node, NodeSettings};
use crier_protocol::frames::{ClientMessage, SubscribeRequest};
use crier_protocol::signature;
use libfuzzer_sys::{fuzz_target, Corpus};
use std::sync::Arc;

const KEY: &str = "key";
const SECRET: &str = "secret";

fn node(app: App) -> Arc<Node> {
    let hub = Arc::new(Hub::new());
    let retention: RetentionLookup = Arc::new(|_: &str| Retention {
        max_messages: 4,
        ..Retention::default()
    });
    let broker = Arc::new(
        MemoryBroker::new(hub.clone(), |on_commit| {
            Ok::<Arc<dyn HistoryStore>, std::convert::Infallible>(Arc::new(MemoryHistory::new(
                retention, on_commit,
            )))
        })
        .expect("a memory history opens"),
    );
    let settings = NodeSettings {
        outbox_capacity: 8,
        ..NodeSettings::default()
    };
    Arc::new(Node::new(AppRegistry::new([app]), hub, broker, settings))
}

fn assert_frame(bytes: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(bytes).expect("frames are JSON");
    assert!(v["event"].is_string(), "frame without event: {v}");
}

fn subscribe_frame(socket_id: &str, args: &[&str], last_id: Option<&str>) -> String {
    let channel = args.first().copied().unwrap_or("").to_owned();
    let flag = |name: &str| args.contains(&name);
    let option = |name: &str| args.iter().find_map(|a| a.strip_prefix(name));
    let channel_data = channel.starts_with("presence-").then(|| {
        let user = option("user=").unwrap_or("u1");
        serde_json::json!({ "user_id": user, "user_info": { "name": user } }).to_string()
    });
    let auth = flag("signed").then(|| {
        signature::channel_auth(KEY, SECRET, socket_id, &channel, channel_data.as_deref())
    });
    let since = match option("since=") {
        Some("last") => last_id.map(str::to_owned),
        other => other.map(str::to_owned),
    };
    ClientMessage::Subscribe(SubscribeRequest {
        channel,
        auth,
        channel_data,
        since,
    })
    .encode()
}

fn signin_frame(socket_id: &str, user: &str, signed: bool) -> String {
    let user_data = serde_json::json!({ "id": user }).to_string();
    let auth = if signed {
        let message = signature::user_auth_message(socket_id, &user_data);
        format!("{KEY}:{}", signature::sign(SECRET, &message))
    } else {
        format!("{KEY}:00")
    };
    ClientMessage::Signin { auth, user_data }.encode()
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(script) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let mut app = App::new("app", KEY, SECRET);
    app.limits.client_events_per_sec = 3;
    app.limits.max_presence_members = 2;
    app.limits.max_event_size = 256;
    let node = node(app);
    let app = node.apps().by_id("app").expect("the app").clone();
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (tx, mut rx) = outbox(node.settings().outbox_capacity);
            let (mut session, established) =
                Session::open(node.clone(), app.clone(), tx).expect("the app is enabled");
            assert_frame(&established);
            let socket_id = session.socket_id().to_owned();
            let mut last_id: Option<String> = None;
            for line in script.lines().take(64) {
                let words: Vec<&str> = line.split(' ').collect();
                let arg = |i: usize| words.get(i).copied().unwrap_or("");
                let text = match words[0] {
                    "sub" => subscribe_frame(&socket_id, &words[1..], last_id.as_deref()),
                    "unsub" => ClientMessage::Unsubscribe {
                        channel: arg(1).to_owned(),
                    }
                    .encode(),
                    "event" => serde_json::json!({
                        "event": format!("client-{}", arg(2)),
                        "channel": arg(1),
                        "data": { "line": line },
                    })
                    .to_string(),
                    "signin" => signin_frame(&socket_id, arg(1), arg(2) == "signed"),
                    "pub" => {
                        let req = EventRequest {
                            name: Some("e".into()),
                            data: Some(serde_json::Value::String(arg(2).to_owned())),
                            channel: Some(arg(1).to_owned()),
                            channels: None,
                            socket_id: None,
                            info: None,
                        };
                        if let Ok(published) = node.publish(&app, vec![req]).await {
                            last_id = published.last().map(|p| p.id.clone());
                        }
                        continue;
                    }
                    "drain" => {
                        while let Some(item) = rx.try_next() {
                            if let Delivery::Send(frame) = session.outgoing(item) {
                                assert_frame(&frame);
                            }
                        }
                        continue;
                    }
                    _ => line.to_owned(),
                };
                match session.handle(&text).await {
                    Ok(replies) => replies.iter().for_each(|r| assert_frame(r)),
                    // The transport closes the connection here.
                    Err(_) => break,
                }
            }
            drop(session);
            let left = node.channels("app", "");
            assert!(left.is_empty(), "closed session left {left:?}");
            assert_eq!(app.connection_count(), 0);
        });
    });
    Corpus::Keep
});
