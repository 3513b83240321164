//! Hardening of SSE and long-poll: a resume is read from history a page at a time (one
//! request never makes the server hold the whole replay), long-poll answers are bounded
//! over all their channels, and a rejected request joins no presence channel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use crier_protocol::token;
use serde_json::{json, Value};
use std::time::Duration;
use support::busy::*;
use support::sse::SseStream;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

/// Opens an SSE stream over a socket with a small receive window that resumes from
/// `since` and never reads.
async fn stalled_sse(server: &TestServer, channel: &str, since: &str) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let request = format!(
        "GET /app/{KEY}/sse?channels={channel}&last_event_id={since} HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_stalled_sse_resume_holds_a_page_and_a_reader_gets_every_message() {
    let server = TestServer::with(|c| {
        c.history.max_messages = BUSY + 10;
        c.server.max_frame_bytes = 64 * 1024;
        for app in &mut c.apps {
            app.max_event_size = Some(DATA_BYTES + 64);
        }
    })
    .await;
    let since = publish_busy(&server, "busy", BUSY).await;
    let app = server.dev_app();
    let before = proc_status_kib("VmRSS:");
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(stalled_sse(&server, "busy", &since).await);
    }
    // Every stream is open and has written what the sockets take; the server then
    // waits on them. Reading the whole replay into memory, as before, cost 16 MiB each.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.connection_count() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "streams never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut peak = proc_status_kib("VmRSS:");
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak = peak.max(proc_status_kib("VmRSS:"));
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "8 stalled SSE resumes grew the process by {grown_mib} MiB"
    );

    // A client that reads gets the whole replay in order (no 10,000 cap applies to a
    // stream), then live messages.
    let res = reqwest::Client::new()
        .get(format!(
            "http://{}/app/{KEY}/sse?channels=busy",
            server.addr
        ))
        .header("Last-Event-ID", &since)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut reader = SseStream::new(res);
    for i in 0..BUSY {
        let event = reader.next().await.expect("replayed event");
        let envelope = event.json();
        assert_eq!(envelope["data"], data_of(i), "message {i} in order");
    }
    server.api().trigger("busy", "live", "after").await;
    let live = reader.next().await.expect("live event").json();
    assert_eq!(live["event"], "live");
    assert_eq!(live["data"], "after");
    drop(stalled);
}

async fn poll(server: &TestServer, query: &str) -> (u16, Value) {
    let res = reqwest::get(format!("http://{}/app/{KEY}/poll?{query}", server.addr))
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn a_long_poll_answer_holds_at_most_a_hundred_messages_over_all_its_channels() {
    let server = TestServer::start().await;
    let channels = "pa,pb,pc";
    let (_, first) = poll(&server, &format!("channels={channels}&timeout=0")).await;
    let mut cursor = first["cursor"].as_str().unwrap().to_owned();
    let api = server.api();
    for i in 0..80 {
        for ch in ["pa", "pb", "pc"] {
            api.trigger(ch, "e", &i.to_string()).await;
        }
    }
    let mut sizes = Vec::new();
    let mut got: Vec<(String, u64)> = Vec::new();
    loop {
        let (status, page) = poll(
            &server,
            &format!("channels={channels}&cursor={cursor}&timeout=0"),
        )
        .await;
        assert_eq!(status, 200);
        let messages = page["messages"].as_array().unwrap();
        if messages.is_empty() {
            break;
        }
        sizes.push(messages.len());
        for m in messages {
            got.push((
                m["channel"].as_str().unwrap().to_owned(),
                m["data"].as_str().unwrap().parse().unwrap(),
            ));
        }
        cursor = page["cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(
        sizes,
        [100, 100, 40],
        "pages of at most 100 over all channels"
    );
    for ch in ["pa", "pb", "pc"] {
        let seq: Vec<u64> = got
            .iter()
            .filter(|(c, _)| c == ch)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            seq,
            (0..80).collect::<Vec<_>>(),
            "{ch}: every message once, in order"
        );
    }
}

fn presence_token(channels: &[&str], user: &str) -> String {
    token::issue(
        &json!({"channels": channels, "exp": now() + 3600, "sub": user}),
        SECRET,
    )
}

#[tokio::test]
async fn a_stream_refused_for_a_full_presence_channel_joins_none_of_its_channels() {
    let server = TestServer::with(|c| {
        for app in &mut c.apps {
            app.max_presence_members = Some(2);
        }
    })
    .await;
    // presence-a has room for one more; presence-b is full.
    let mut watcher = server.connect().await;
    watcher.subscribe_presence("presence-a", "watcher").await;
    let mut b1 = server.connect().await;
    b1.subscribe_presence("presence-b", "b1").await;
    let mut b2 = server.connect().await;
    b2.subscribe_presence("presence-b", "b2").await;

    let t = presence_token(&["presence-a", "presence-b"], "late");
    for path in ["sse", "poll"] {
        let res = reqwest::get(format!(
            "http://{}/app/{KEY}/{path}?channels=presence-a,presence-b&token={t}&timeout=0",
            server.addr
        ))
        .await
        .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "presence channel presence-b is full"}),
            "{path}"
        );
    }
    // The watcher's next event is the sentinel: no member_added (or removed) for the
    // refused requests came before it.
    server.api().trigger("presence-a", "sentinel", "s").await;
    let next = watcher.recv().await;
    assert_eq!(next["event"], "sentinel", "got {next}");
    let (_, users) = server
        .api()
        .get("/apps/1/channels/presence-a/users", &[])
        .await;
    assert_eq!(users, json!({"users": [{"id": "watcher"}]}));
}

#[tokio::test]
async fn a_poll_refused_at_the_connection_limit_holds_no_presence_lease() {
    let server = TestServer::with(|c| {
        for app in &mut c.apps {
            app.max_connections = 1;
        }
    })
    .await;
    let holder = reqwest::get(format!(
        "http://{}/app/{KEY}/sse?channels=elsewhere",
        server.addr
    ))
    .await
    .unwrap();
    assert_eq!(holder.status(), 200);
    let t = presence_token(&["presence-q"], "poller");
    let (status, body) = poll(&server, &format!("channels=presence-q&token={t}&timeout=0")).await;
    assert_eq!(status, 429);
    assert_eq!(body, json!({"error": "the app is at its connection limit"}));
    let (_, users) = server
        .api()
        .get("/apps/1/channels/presence-q/users", &[])
        .await;
    assert_eq!(users, json!({"users": []}));
    drop(holder);
}
