//! Several Crier nodes sharing one Redis (or a three-master Redis Cluster) act as one
//! server: cross-node delivery with the same ids in one order, resume on another node
//! over every transport, presence, queries and webhooks for the whole cluster, and
//! Redis going away under load without losing an acknowledged message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use crier_server::config::{BrokerKind, WebhookConfig};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use support::redis::{RedisCluster, RedisServer};
use support::sse::SseStream;
use support::*;
use tokio::sync::mpsc;

/// A Redis deployment the nodes of a test share.
enum Deployment {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl Deployment {
    fn name(&self) -> &'static str {
        match self {
            Self::Server(_) => "redis",
            Self::Cluster(_) => "redis-cluster",
        }
    }
}

fn deployments() -> Vec<Deployment> {
    vec![
        Deployment::Server(RedisServer::start()),
        Deployment::Cluster(RedisCluster::start(3)),
    ]
}

/// `n` nodes on `redis`, under one key prefix of their own, each tweaked by `tweak`.
async fn nodes(
    redis: &Deployment,
    n: usize,
    tweak: impl Fn(&mut crier_server::config::Config),
) -> Vec<TestServer> {
    let prefix = format!("t{:08x}", rand::random::<u32>());
    let mut out = Vec::new();
    for _ in 0..n {
        let node = TestServer::with(|c| {
            c.broker.kind = BrokerKind::Redis;
            c.broker.prefix.clone_from(&prefix);
            c.broker.node_timeout_secs = 3;
            match redis {
                Deployment::Server(r) => c.broker.url = r.url(),
                Deployment::Cluster(r) => c.broker.cluster = r.urls(),
            }
            tweak(c);
        })
        .await;
        out.push(node);
    }
    out
}

fn event_data(frame: &Value) -> (String, String) {
    (
        frame["data"].as_str().unwrap().to_owned(),
        frame["id"].as_str().unwrap().to_owned(),
    )
}

fn offset(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_on_one_node_reaches_every_node_with_one_id() {
    for redis in deployments() {
        let kind = redis.name();
        let n = nodes(&redis, 2, |_| {}).await;
        let mut on_a = n[0].connect().await;
        let mut on_b = n[1].connect().await;
        for c in [&mut on_a, &mut on_b] {
            let ok = c.subscribe("orders").await;
            assert_eq!(
                ok["event"], "pusher_internal:subscription_succeeded",
                "{kind}"
            );
        }
        let (status, body) = n[1]
            .api()
            .trigger("orders", "new-order", "{\"no\":1}")
            .await;
        assert_eq!((status, body), (200, json!({})), "{kind}");
        let a = on_a.recv_event("new-order").await;
        let b = on_b.recv_event("new-order").await;
        assert_eq!(a, b, "{kind}: the same frame on both nodes");
        assert_eq!(a["channel"], "orders", "{kind}");
        assert_eq!(a["data"], "{\"no\":1}", "{kind}");
        assert_eq!(offset(a["id"].as_str().unwrap()), 1, "{kind}");
        // An SSE stream on B resuming after nothing (an id of another epoch) gets the
        // shared history first, then what A publishes.
        let res = reqwest::get(format!(
            "http://{}/app/{KEY}/sse?channels=orders&last_event_id=other-0",
            n[1].addr
        ))
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{kind}");
        let mut sse = SseStream::new(res);
        assert_eq!(
            sse.next().await.unwrap().json()["event"],
            "crier:gap",
            "{kind}"
        );
        let first = sse.next().await.unwrap();
        assert_eq!(
            first.json()["data"],
            "{\"no\":1}",
            "{kind}: history is shared"
        );
        n[0].api()
            .trigger("orders", "new-order", "{\"no\":2}")
            .await;
        let second = sse.next().await.unwrap();
        assert_eq!(second.json()["data"], "{\"no\":2}", "{kind}");
        assert_eq!(offset(second.json()["id"].as_str().unwrap()), 2, "{kind}");
        let b2 = on_b.recv_event("new-order").await;
        assert_eq!(b2["data"], "{\"no\":2}", "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_on_every_node_give_every_subscriber_one_order() {
    const PER_PUBLISHER: usize = 60;
    for redis in deployments() {
        let kind = redis.name();
        let n = nodes(&redis, 3, |_| {}).await;
        let mut subscribers = Vec::new();
        for node in &n {
            let mut c = node.connect().await;
            c.subscribe("race").await;
            subscribers.push(c);
        }
        let publishers: Vec<_> = (0..4)
            .map(|p| {
                let api = n[p % n.len()].api();
                tokio::spawn(async move {
                    for i in 0..PER_PUBLISHER {
                        let (status, _) = api.trigger("race", "e", &format!("{p}:{i}")).await;
                        assert_eq!(status, 200);
                    }
                })
            })
            .collect();
        for p in publishers {
            p.await.unwrap();
        }
        let mut orders = Vec::new();
        for c in &mut subscribers {
            let mut seen = Vec::new();
            while seen.len() < 4 * PER_PUBLISHER {
                seen.push(event_data(&c.recv_event("e").await));
            }
            let offsets: Vec<u64> = seen.iter().map(|(_, id)| offset(id)).collect();
            let expected: Vec<u64> = (1..=(4 * PER_PUBLISHER) as u64).collect();
            assert_eq!(offsets, expected, "{kind}: no gap, no duplicate");
            for p in 0..4 {
                let mine: Vec<usize> = seen
                    .iter()
                    .filter_map(|(d, _)| d.strip_prefix(&format!("{p}:")))
                    .map(|i| i.parse().unwrap())
                    .collect();
                assert_eq!(mine, (0..PER_PUBLISHER).collect::<Vec<_>>(), "{kind}");
            }
            orders.push(seen);
        }
        assert!(
            orders.windows(2).all(|w| w[0] == w[1]),
            "{kind}: every node delivers the same order with the same ids"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_over_every_transport() {
    let redis = Deployment::Server(RedisServer::start());
    let n = nodes(&redis, 2, |_| {}).await;
    let (a, b) = (&n[0], &n[1]);
    for i in 1..=3 {
        a.api().trigger("resume", "e", &i.to_string()).await;
    }
    // WebSocket: an id A gives out is a `since` on B.
    let (status, history) = a.api().get("/apps/1/channels/resume/messages", &[]).await;
    assert_eq!(status, 200, "{history}");
    let ids: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{history}");
    let mut on_b = b.connect().await;
    on_b.send(json!({"event": "pusher:subscribe", "data": {"channel": "resume", "since": ids[1]}}))
        .await;
    on_b.recv_event("pusher_internal:subscription_succeeded")
        .await;
    assert_eq!(event_data(&on_b.recv_event("e").await).0, "3");
    b.api().trigger("resume", "e", "4").await;
    assert_eq!(event_data(&on_b.recv_event("e").await).0, "4");

    // SSE: Last-Event-ID from a stream on A, resumed on B.
    let res = reqwest::get(format!(
        "http://{}/app/{KEY}/sse?channels=resume&last_event_id={}",
        a.addr, ids[0]
    ))
    .await
    .unwrap();
    let mut sse = SseStream::new(res);
    let mut last_id = String::new();
    for want in ["2"] {
        let e = sse.next().await.unwrap();
        assert_eq!(e.json()["data"], want);
        last_id = e.id.unwrap();
    }
    drop(sse);
    let res = reqwest::Client::new()
        .get(format!("http://{}/app/{KEY}/sse?channels=resume", b.addr))
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    let mut sse = SseStream::new(res);
    for want in ["3", "4"] {
        assert_eq!(sse.next().await.unwrap().json()["data"], want);
    }

    // Long-poll: a cursor from A, polled on B.
    let poll = |node: &TestServer, query: String| {
        let url = format!("http://{}/app/{KEY}/poll?{query}", node.addr);
        async move {
            let res = reqwest::get(url).await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    let page = poll(a, "channels=resume&timeout=1".into()).await;
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    a.api().trigger("resume", "e", "5").await;
    let page = poll(b, format!("channels=resume&timeout=5&cursor={cursor}")).await;
    let data: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["5"], "the cursor from A resumes on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_members_are_users_of_the_whole_cluster() {
    for redis in deployments() {
        let kind = redis.name();
        let n = nodes(&redis, 2, |_| {}).await;
        let channel = "presence-team";
        let mut u1_a = n[0].connect().await;
        let joined = u1_a.subscribe_presence(channel, "u1").await;
        let data: Value = serde_json::from_str(joined["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["presence"]["ids"], json!(["u1"]), "{kind}");
        let mut u2_b = n[1].connect().await;
        let joined = u2_b.subscribe_presence(channel, "u2").await;
        let data: Value = serde_json::from_str(joined["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["presence"]["ids"], json!(["u1", "u2"]), "{kind}");
        assert_eq!(data["presence"]["count"], 2, "{kind}");
        let added = u1_a.recv_event("pusher_internal:member_added").await;
        assert_eq!(
            added["data"],
            json!({"user_id": "u2", "user_info": {"name": "u2"}}).to_string(),
            "{kind}"
        );
        // u1 again, on the other node: not a new member.
        let mut u1_b = n[1].connect().await;
        u1_b.subscribe_presence(channel, "u1").await;
        let (status, users) = n[1]
            .api()
            .get(&format!("/apps/1/channels/{channel}/users"), &[])
            .await;
        assert_eq!(status, 200, "{kind}");
        assert_eq!(
            users,
            json!({"users": [{"id": "u1"}, {"id": "u2"}]}),
            "{kind}"
        );
        // u1 leaves A but is still on B: nobody hears of it. Then from B: removed.
        drop(u1_a);
        n[1].api().trigger(channel, "sentinel", "1").await;
        let next = u2_b.recv().await;
        assert_eq!(
            next["event"], "sentinel",
            "{kind}: no member event before: {next}"
        );
        drop(u1_b);
        let removed = u2_b.recv_event("pusher_internal:member_removed").await;
        assert_eq!(
            removed["data"],
            json!({"user_id": "u1"}).to_string(),
            "{kind}"
        );
        let (_, info) = n[0]
            .api()
            .get(
                &format!("/apps/1/channels/{channel}"),
                &[("info", "user_count,subscription_count")],
            )
            .await;
        assert_eq!(
            info,
            json!({"occupied": true, "user_count": 1, "subscription_count": 1}),
            "{kind}"
        );
    }
}

struct Hooks(mpsc::UnboundedSender<Value>);

async fn hook(State(h): State<Arc<Hooks>>, body: Bytes) -> &'static str {
    let body: Value = serde_json::from_slice(&body).unwrap();
    for e in body["events"].as_array().unwrap() {
        h.0.send(e.clone()).unwrap();
    }
    "ok"
}

async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(Arc::new(Hooks(tx)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_webhooks_are_the_clusters_and_fire_once() {
    let redis = Deployment::Server(RedisServer::start());
    let (url, mut hooks) = webhook_receiver().await;
    let n = nodes(&redis, 2, |c| {
        c.apps[0].webhooks = vec![WebhookConfig {
            url: url.clone(),
            events: vec!["channel_occupied".into(), "channel_vacated".into()],
        }];
    })
    .await;
    let mut on_a = n[0].connect().await;
    on_a.subscribe("room").await;
    let mut on_b = n[1].connect().await;
    on_b.subscribe("room").await;
    let mut on_b2 = n[1].connect().await;
    on_b2.subscribe("room").await;
    for node in &n {
        node.wait_subscriptions("room", 3).await;
        let (_, list) = node
            .api()
            .get("/apps/1/channels", &[("filter_by_prefix", "ro")])
            .await;
        assert_eq!(list, json!({"channels": {"room": {}}}));
    }
    drop(on_a);
    drop(on_b);
    drop(on_b2);
    n[0].wait_subscriptions("room", 0).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(WAIT, hooks.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push((e["name"].clone(), e["channel"].clone()));
    }
    assert_eq!(
        seen,
        [
            (json!("channel_occupied"), json!("room")),
            (json!("channel_vacated"), json!("room"))
        ]
    );
    // A third event would be a second occupied or vacated: send a later one and see
    // it come next.
    let mut again = n[1].connect().await;
    again.subscribe("other").await;
    let e = tokio::time::timeout(WAIT, hooks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e["name"].clone(), e["channel"].clone()),
        (json!("channel_occupied"), json!("other"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_under_load_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = redis.url();
    let prefix = format!("t{:08x}", rand::random::<u32>());
    let mut n = Vec::new();
    for _ in 0..2 {
        n.push(
            TestServer::with(|c| {
                c.broker.kind = BrokerKind::Redis;
                c.broker.url.clone_from(&url);
                c.broker.prefix.clone_from(&prefix);
            })
            .await,
        );
    }
    let mut subscribers = Vec::new();
    for node in &n {
        let mut c = node.connect().await;
        c.subscribe("load").await;
        subscribers.push(c);
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let apis: Vec<Api> = n.iter().map(TestServer::api).collect();
    let publisher = tokio::spawn(async move {
        let (mut acked, mut refused) = (Vec::new(), Vec::new());
        let mut i = 0usize;
        while !*stop_rx.borrow_and_update() {
            let data = format!("m{i}");
            let (status, body) = apis[i % 2].trigger("load", "e", &data).await;
            match status {
                200 => acked.push(data),
                503 => {
                    assert!(
                        body["error"].as_str().is_some_and(|e| !e.is_empty()),
                        "{body}"
                    );
                    refused.push(data);
                }
                other => panic!("unexpected {other}: {body}"),
            }
            i += 1;
            if status == 503 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        (acked, refused)
    });
    let ready = |node: &TestServer| {
        let url = format!("http://{}/ready", node.addr);
        async move {
            let res = reqwest::get(url).await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let health = |node: &TestServer| {
        let url = format!("http://{}/health", node.addr);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    // Let some messages through, then take Redis away.
    let first = event_data(&subscribers[0].recv_event("e").await);
    redis.stop();
    for node in &n {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = ready(node).await;
            if status == 503 {
                assert_eq!(body["component"], "broker", "{body}");
                assert!(body["error"].as_str().unwrap().contains("redis"), "{body}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "/ready stayed 200");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(health(node).await, 200, "/health stays 200");
    }
    redis.restart();
    for node in &n {
        let deadline = tokio::time::Instant::now() + WAIT;
        while ready(node).await.0 != 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready did not come back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Some more after the return, then stop and compare.
    n[1].api().trigger("after", "e", "x").await;
    stop_tx.send(true).unwrap();
    let (acked, refused) = publisher.await.unwrap();
    let (status, _) = n[0].api().trigger("load", "e", "last").await;
    assert_eq!(status, 200);
    assert!(
        !acked.is_empty() && !refused.is_empty(),
        "the outage was seen: {} acked, {} refused",
        acked.len(),
        refused.len()
    );
    let attempted: HashSet<&String> = acked.iter().chain(refused.iter()).collect();
    for (i, c) in subscribers.iter_mut().enumerate() {
        let mut got = Vec::new();
        if i == 0 {
            got.push((first.0.clone(), offset(&first.1)));
        }
        loop {
            let (data, id) = event_data(&c.recv_event("e").await);
            if data == "last" {
                break;
            }
            got.push((data, offset(&id)));
        }
        let offsets: Vec<u64> = got.iter().map(|(_, o)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "every message once, in order, no gap: {offsets:?}"
        );
        let got: HashSet<&String> = got.iter().map(|(d, _)| d).collect();
        for a in &acked {
            assert!(got.contains(a), "acknowledged {a} never arrived");
        }
        for g in &got {
            assert!(attempted.contains(g), "{g} was never published");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_events_cache_channels_users_and_ingest_cross_nodes() {
    let redis = Deployment::Server(RedisServer::start());
    let n = nodes(&redis, 2, |c| c.ingest.udp.listen = "127.0.0.1:0".into()).await;
    let (a, b) = (&n[0], &n[1]);

    // A client event from A reaches B and not its sender.
    let mut on_a = a.connect().await;
    let mut on_b = b.connect().await;
    on_a.subscribe_private("private-chat").await;
    on_b.subscribe_private("private-chat").await;
    on_a.send(json!({"event": "client-typing", "channel": "private-chat", "data": {"on": true}}))
        .await;
    let typing = on_b.recv_event("client-typing").await;
    assert_eq!(typing["data"], json!({"on": true}));
    a.api().trigger("private-chat", "sentinel", "1").await;
    let next = on_a.recv().await;
    assert_eq!(
        next["event"], "sentinel",
        "the sender got its own event: {next}"
    );

    // A cache channel's last message, published on A, is the first thing a new
    // subscriber on B gets.
    a.api().trigger("cache-price", "tick", "41").await;
    a.api().trigger("cache-price", "tick", "42").await;
    let mut late = b.connect().await;
    assert_eq!(
        late.subscribe("cache-price").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let cached = late.recv_event("tick").await;
    assert_eq!(cached["data"], "42");

    // A datagram to B's UDP ingest reaches a subscriber on A.
    let mut orders = a.connect().await;
    orders.subscribe("erp-orders").await;
    let udp = b.running.as_ref().unwrap().udp_addr.expect("udp listening");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let datagram =
        json!({"app_id": "1", "name": "order", "channel": "erp-orders", "data": "{\"no\":7}"});
    sock.send_to(datagram.to_string().as_bytes(), udp)
        .await
        .unwrap();
    assert_eq!(orders.recv_event("order").await["data"], "{\"no\":7}");

    // A user signed in on B is terminated through A's API.
    let mut user = b.connect().await;
    let user_data = json!({"id": "42"}).to_string();
    let sig = crier_protocol::signature::sign(
        SECRET,
        &crier_protocol::signature::user_auth_message(&user.socket_id, &user_data),
    );
    user.send(json!({"event": "pusher:signin", "data": {"auth": format!("{KEY}:{sig}"), "user_data": user_data}}))
        .await;
    assert_eq!(user.recv().await["event"], "pusher:signin_success");
    let (status, _) = a
        .api()
        .post(
            &format!("/apps/{APP}/users/42/terminate_connections"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (error, code) = user.recv_close().await;
    assert_eq!(code, 4009, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_redis_queue_and_recover_only_their_own_leftovers() {
    use ::redis::Commands;
    use crier_server::config::RedisQueueConfig;
    let redis = RedisServer::start();
    let queue = "orders:queue";
    let item = |data: &str| {
        json!({"app_id": "1", "name": "order", "channel": "queued", "data": data}).to_string()
    };
    let mut conn = redis.conn();
    // Left in flight by a node named "gone", which is not coming back here.
    let _: () = conn
        .lpush(format!("{queue}:processing:gone"), item("not-mine"))
        .unwrap();
    let deployment = Deployment::Server(redis);
    let url = match &deployment {
        Deployment::Server(r) => r.url(),
        Deployment::Cluster(_) => unreachable!(),
    };
    let names = std::sync::Mutex::new(vec!["b", "a"]);
    let n = nodes(&deployment, 2, |c| {
        c.ingest.redis_queue = Some(RedisQueueConfig {
            url: url.clone(),
            key: queue.into(),
            consumer: names.lock().unwrap().pop().map(str::to_owned),
        });
    })
    .await;
    let mut sub = n[0].connect().await;
    sub.subscribe("queued").await;
    for i in 0..40 {
        let _: () = conn.lpush(queue, item(&i.to_string())).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 40 {
        got.push(
            sub.recv_event("order").await["data"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    got.sort_by_key(|d| d.parse::<u32>().unwrap());
    assert_eq!(got, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
    let (_, history) = n[1]
        .api()
        .get("/apps/1/channels/queued/messages", &[("limit", "100")])
        .await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        40,
        "each item once, and not the other consumer's leftover: {history}"
    );
    let left: Vec<String> = conn
        .lrange(format!("{queue}:processing:gone"), 0, -1)
        .unwrap();
    assert_eq!(left, [item("not-mine")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_everything_gets_presence_back_and_new_epochs() {
    // No persistence: a restart loses every key.
    let redis = Deployment::Server(RedisServer::start());
    let n = nodes(&redis, 2, |_| {}).await;
    let mut redis = match redis {
        Deployment::Server(r) => r,
        Deployment::Cluster(_) => unreachable!(),
    };
    let mut member = n[0].connect().await;
    member.subscribe_presence("presence-ops", "u1").await;
    let mut watcher = n[1].connect().await;
    watcher.subscribe("feed").await;
    n[0].api().trigger("feed", "e", "before").await;
    let before = watcher.recv_event("e").await;
    let old_id = before["id"].as_str().unwrap().to_owned();

    redis.stop();
    redis.restart();

    // The nodes put their share back: the member is listed again, with no reconnect.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, users) = n[1]
            .api()
            .get("/apps/1/channels/presence-ops/users", &[])
            .await;
        if status == 200 && users == json!({"users": [{"id": "u1"}]}) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence never came back: {users}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New messages reach the subscriber that stayed, in a new epoch.
    let (status, _) = n[0].api().trigger("feed", "e", "after").await;
    assert_eq!(status, 200);
    let after = watcher.recv_event("e").await;
    assert_eq!(after["data"], "after");
    let new_id = after["id"].as_str().unwrap();
    assert_ne!(
        old_id.rsplit_once('-').unwrap().0,
        new_id.rsplit_once('-').unwrap().0,
        "a lost channel starts a new epoch, never reuses ids"
    );
    // A client resuming from before the loss is told of the gap first.
    let mut resumer = n[1].connect().await;
    resumer
        .send(json!({"event": "pusher:subscribe", "data": {"channel": "feed", "since": old_id}}))
        .await;
    resumer
        .recv_event("pusher_internal:subscription_succeeded")
        .await;
    let gap = resumer.recv().await;
    assert_eq!(gap["event"], "crier:gap", "{gap}");
    assert_eq!(resumer.recv_event("e").await["data"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_member_on_one_node_is_present_on_the_other() {
    let redis = Deployment::Server(RedisServer::start());
    let n = nodes(&redis, 2, |c| c.server.poll_presence_grace_secs = 1).await;
    let mut ws = n[1].connect().await;
    ws.subscribe_presence("presence-lp", "ws").await;
    let t = crier_protocol::token::issue(
        &json!({"channels": ["presence-lp"], "exp": now() + 60, "sub": "poller"}),
        SECRET,
    );
    let res = reqwest::get(format!(
        "http://{}/app/{KEY}/poll?channels=presence-lp&token={t}&timeout=1",
        n[0].addr
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let added = ws.recv_event("pusher_internal:member_added").await;
    assert_eq!(
        added["data"],
        json!({"user_id": "poller", "user_info": null}).to_string()
    );
    let (_, users) = n[1]
        .api()
        .get("/apps/1/channels/presence-lp/users", &[])
        .await;
    assert_eq!(users, json!({"users": [{"id": "poller"}, {"id": "ws"}]}));
    // Polls stop: after the lease, the member leaves for the whole cluster.
    let removed = ws.recv_event("pusher_internal:member_removed").await;
    assert_eq!(removed["data"], json!({"user_id": "poller"}).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_leaves_the_cluster_at_once() {
    let redis = Deployment::Server(RedisServer::start());
    // A node timeout far beyond the test's wait: only a clean leave can pass.
    let mut n = nodes(&redis, 2, |c| c.broker.node_timeout_secs = 300).await;
    let mut stays = n[1].connect().await;
    stays.subscribe_presence("presence-desk", "stays").await;
    let mut goes = n[0].connect().await;
    goes.subscribe_presence("presence-desk", "goes").await;
    let mut poller_side = n[0].connect().await;
    poller_side.subscribe("room").await;
    stays.recv_event("pusher_internal:member_added").await;
    n[1].wait_subscriptions("room", 1).await;

    n[0].stop().await;
    let removed = stays.recv_event("pusher_internal:member_removed").await;
    assert_eq!(removed["data"], json!({"user_id": "goes"}).to_string());
    let (_, info) = n[1]
        .api()
        .get("/apps/1/channels/room", &[("info", "subscription_count")])
        .await;
    assert_eq!(info, json!({"occupied": false, "subscription_count": 0}));
}
