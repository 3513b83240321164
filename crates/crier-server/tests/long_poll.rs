//! HTTP long-polling: immediate answers, holding, timeouts, paging with cursors, gaps,
//! tokens and presence leases.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use crier_protocol::token;
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

async fn poll(server: &TestServer, query: &str) -> (u16, Value) {
    let res = reqwest::get(format!("http://{}/app/{KEY}/poll?{query}", server.addr))
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn data(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn waiting_messages_are_answered_at_once_and_the_cursor_continues() {
    let server = TestServer::start().await;
    let (status, first) = poll(&server, "channels=lp&timeout=1").await;
    assert_eq!(status, 200);
    assert_eq!(first["messages"], json!([]));
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let api = server.api();
    api.trigger("lp", "e", "1").await;
    api.trigger("lp", "e", "2").await;
    let (_, page) = poll(&server, &format!("channels=lp&cursor={cursor}")).await;
    assert_eq!(data(&page), ["1", "2"]);
    let env = &page["messages"][0];
    assert_eq!(
        (env["channel"].as_str(), env["event"].as_str()),
        (Some("lp"), Some("e"))
    );
    assert!(env["id"].is_string());
}

#[tokio::test]
async fn a_poll_holds_until_a_message_arrives() {
    let server = TestServer::start().await;
    let (_, first) = poll(&server, "channels=hold&timeout=1").await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let pending = {
        let url = format!(
            "http://{}/app/{KEY}/poll?channels=hold&cursor={cursor}&timeout=30",
            server.addr
        );
        tokio::spawn(async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    server.wait_subscriptions("hold", 1).await;
    server.api().trigger("hold", "e", "woke").await;
    let page = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert_eq!(data(&page), ["woke"]);
}

#[tokio::test]
async fn timeout_answers_empty_and_no_cursor_starts_from_now() {
    let server = TestServer::start().await;
    server.api().trigger("t", "e", "old").await;
    let started = std::time::Instant::now();
    let (_, page) = poll(&server, "channels=t&timeout=1").await;
    assert_eq!(
        page["messages"],
        json!([]),
        "old messages are not sent without a cursor"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    for bad in ["soon", "-1", "1.5"] {
        assert_eq!(
            poll(&server, &format!("channels=t&timeout={bad}")).await,
            (
                400,
                json!({"error": "timeout must be a whole number of seconds"})
            ),
            "timeout={bad}"
        );
    }
}

#[tokio::test]
async fn a_thousand_messages_between_polls_arrive_in_pages_without_loss() {
    let server = TestServer::with(|c| c.history.max_messages = 5000).await;
    let (_, first) = poll(&server, "channels=many,other&timeout=1").await;
    let mut cursor = first["cursor"].as_str().unwrap().to_owned();
    let api = server.api();
    for b in 0..100 {
        let batch: Vec<Value> = (0..10)
            .map(|i| {
                let n = b * 10 + i;
                let ch = if n % 3 == 0 { "other" } else { "many" };
                json!({"name": "e", "channel": ch, "data": n.to_string()})
            })
            .collect();
        api.post("/apps/1/batch_events", &json!({"batch": batch}))
            .await;
    }
    let mut got: Vec<u64> = Vec::new();
    let mut pages = 0;
    while got.len() < 1000 {
        let (_, page) = poll(
            &server,
            &format!("channels=many,other&cursor={cursor}&timeout=1"),
        )
        .await;
        let d = data(&page);
        assert!(
            !d.is_empty(),
            "messages missing after {} received",
            got.len()
        );
        assert!(
            d.len() <= 100,
            "a page holds at most 100 messages, got {}",
            d.len()
        );
        got.extend(d.iter().map(|s| s.parse::<u64>().unwrap()));
        cursor = page["cursor"].as_str().unwrap().to_owned();
        pages += 1;
    }
    assert!(pages > 5);
    let mut many: Vec<u64> = got.iter().copied().filter(|n| n % 3 != 0).collect();
    let other: Vec<u64> = got.iter().copied().filter(|n| n % 3 == 0).collect();
    assert!(
        many.windows(2).all(|w| w[0] < w[1]) && other.windows(2).all(|w| w[0] < w[1]),
        "per-channel order"
    );
    many.extend(other);
    many.sort_unstable();
    assert_eq!(
        many,
        (0..1000).collect::<Vec<_>>(),
        "every message exactly once"
    );
    let (_, last) = poll(
        &server,
        &format!("channels=many,other&cursor={cursor}&timeout=1"),
    )
    .await;
    assert_eq!(last["messages"], json!([]));
}

#[tokio::test]
async fn gaps_and_token_errors() {
    let server = TestServer::with(|c| c.history.max_messages = 2).await;
    for i in 0..5 {
        server.api().trigger("g", "e", &i.to_string()).await;
    }
    let (_, page) = poll(&server, "channels=g&cursor=someotherepoch-1").await;
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["event"], "crier:gap");
    assert_eq!(msgs[0]["channel"], "g");
    assert_eq!(data(&json!({"messages": msgs[1..].to_vec()})), ["3", "4"]);
    let expired = token::issue(
        &json!({"channels": ["private-p"], "exp": now() - 1}),
        SECRET,
    );
    let wrong = token::issue(
        &json!({"channels": ["private-p"], "exp": now() + 60}),
        "not-the-secret",
    );
    let other = token::issue(
        &json!({"channels": ["private-q"], "exp": now() + 60}),
        SECRET,
    );
    let cases = [
        (
            "channels=private-p".to_owned(),
            401,
            "token is required for private and presence channels",
        ),
        (
            format!("channels=private-p&token={wrong}"),
            401,
            "token signature is invalid",
        ),
        (
            format!("channels=private-p&token={expired}"),
            401,
            "token has expired",
        ),
        (
            format!("channels=private-p&token={other}"),
            403,
            "token does not allow channel private-p",
        ),
        (
            "channels=no%20way".to_owned(),
            400,
            "invalid channel: channel name \"no way\" contains characters other than \
             A-Z a-z 0-9 _ - = @ , . ;",
        ),
        (
            "channels=g&cursor=garbage".to_owned(),
            400,
            "invalid cursor \"garbage\"",
        ),
    ];
    for (query, status, error) in cases {
        assert_eq!(
            poll(&server, &query).await,
            (status, json!({ "error": error })),
            "{query}"
        );
    }
    let res = reqwest::get(format!("http://{}/app/nokey/poll?channels=a", server.addr))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"error": "unknown app key \"nokey\""})
    );
}

#[tokio::test]
async fn presence_members_stay_while_polling_and_leave_when_polls_stop() {
    let server = TestServer::with(|c| c.server.poll_presence_grace_secs = 1).await;
    let mut ws = server.connect().await;
    ws.subscribe_presence("presence-lp", "ws").await;
    let t = token::issue(
        &json!({"channels": ["presence-lp"], "exp": now() + 60, "sub": "poller"}),
        SECRET,
    );
    let (status, _) = poll(
        &server,
        &format!("channels=presence-lp&token={t}&timeout=1"),
    )
    .await;
    assert_eq!(status, 200);
    let added = ws.recv_event("pusher_internal:member_added").await;
    assert!(added["data"].as_str().unwrap().contains("poller"));
    // A second poll renews the lease: no removal, no second member_added.
    poll(
        &server,
        &format!("channels=presence-lp&token={t}&timeout=1"),
    )
    .await;
    let (_, users) = server
        .api()
        .get("/apps/1/channels/presence-lp/users", &[])
        .await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2);
    // Polls stop: after timeout + grace the member leaves.
    let removed = ws.recv_event("pusher_internal:member_removed").await;
    assert!(removed["data"].as_str().unwrap().contains("poller"));
}

#[tokio::test]
async fn a_first_poll_of_a_cache_channel_answers_its_last_message_or_a_cache_miss() {
    let server = TestServer::start().await;
    let (status, page) = poll(&server, "channels=cache-empty&timeout=30").await;
    assert_eq!(status, 200);
    assert_eq!(
        page["messages"],
        json!([{"id": "", "channel": "cache-empty", "event": "pusher:cache_miss", "data": "{}"}])
    );
    let api = server.api();
    api.trigger("cache-prices", "price", "1").await;
    api.trigger("cache-prices", "price", "2").await;
    let (_, page) = poll(&server, "channels=cache-prices&timeout=30").await;
    assert_eq!(data(&page), ["2"]);
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    api.trigger("cache-prices", "price", "3").await;
    let (_, next) = poll(
        &server,
        &format!("channels=cache-prices&cursor={cursor}&timeout=30"),
    )
    .await;
    assert_eq!(data(&next), ["3"]);
}
