//! The Pusher-compatible HTTP API: signing, publishing, queries and errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn signed_publish_reaches_subscribers() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe("a").await;
    c.subscribe("b").await;
    let api = server.api();
    let (status, body) = api
        .post(
            "/apps/1/events",
            &json!({"name": "e", "channels": ["a", "b"], "data": "x"}),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let first = c.recv().await;
    let second = c.recv().await;
    assert_eq!([&first["channel"], &second["channel"]], ["a", "b"]);
}

#[tokio::test]
async fn object_data_is_sent_serialized() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe("a").await;
    server
        .api()
        .post(
            "/apps/1/events",
            &json!({"name": "e", "channel": "a", "data": {"k": [1]}}),
        )
        .await;
    assert_eq!(c.recv().await["data"], "{\"k\":[1]}");
}

#[tokio::test]
async fn socket_id_is_excluded() {
    let server = TestServer::start().await;
    let mut me = server.connect().await;
    let mut other = server.connect().await;
    me.subscribe("room").await;
    other.subscribe("room").await;
    server
        .api()
        .post(
            "/apps/1/events",
            &json!({"name": "e", "channel": "room", "data": "1", "socket_id": me.socket_id}),
        )
        .await;
    assert_eq!(other.recv().await["data"], "1");
    // A later message without socket_id is the first thing the sender gets.
    server.api().trigger("room", "e", "2").await;
    assert_eq!(me.recv().await["data"], "2");
}

#[tokio::test]
async fn batch_events_publish_in_order() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe("q").await;
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"name": "e", "channel": "q", "data": i.to_string()}))
        .collect();
    let (status, _) = server
        .api()
        .post("/apps/1/batch_events", &json!({"batch": batch}))
        .await;
    assert_eq!(status, 200);
    for i in 0..5 {
        assert_eq!(c.recv().await["data"], i.to_string());
    }
    let too_many: Vec<Value> = (0..11)
        .map(|_| json!({"name": "e", "channel": "q", "data": "x"}))
        .collect();
    let (status, _) = server
        .api()
        .post("/apps/1/batch_events", &json!({"batch": too_many}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn event_info_reports_counts() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe("counted").await;
    let (status, body) = server
        .api()
        .post(
            "/apps/1/events",
            &json!({"name": "e", "channel": "counted", "data": "1", "info": "subscription_count"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels": {"counted": {"subscription_count": 1}}})
    );
}

/// README: API errors are JSON `{"error": "..."}` naming the problem.
fn assert_error_names(body: Value, needle: &str) {
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error: {body}"));
    assert!(error.contains(needle), "{error:?} does not name {needle:?}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn rejected_requests_publish_nothing() {
    let server = TestServer::with(|c| {
        let mut off = app("off", "off-key", "off-secret");
        off.enabled = false;
        c.apps.push(off);
    })
    .await;
    let mut c = server.connect().await;
    c.subscribe("guarded").await;
    let api = server.api();
    let good = json!({"name": "e", "channel": "guarded", "data": "bad"});
    let body = good.to_string();

    // Bad signature.
    let mut url = api.signed_url("POST", "/apps/1/events", &[], body.as_bytes());
    url = url.replace("auth_signature=", "auth_signature=00");
    let res = api.http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert_error_names(res.json().await.unwrap(), "signature");

    // Stale timestamp.
    let qs = crier_protocol::signature::sign_request(
        KEY,
        SECRET,
        "POST",
        "/apps/1/events",
        &[],
        body.as_bytes(),
        now() - 601,
    );
    let res = api
        .http
        .post(format!("{}/apps/1/events?{qs}", api.base))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let err: Value = res.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("auth_timestamp"),
        "{err}"
    );

    // Body changed after signing (body_md5 mismatch).
    let url = api.signed_url("POST", "/apps/1/events", &[], body.as_bytes());
    let res = api
        .http
        .post(&url)
        .body(body.replace("bad", "evil"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert_error_names(res.json().await.unwrap(), "body_md5");

    // Unknown app, disabled app.
    let (status, err) = server.api().post("/apps/nope/events", &good).await;
    assert_eq!(status, 404);
    assert_error_names(err, "nope");
    let off = Api {
        app: "off".into(),
        key: "off-key".into(),
        secret: "off-secret".into(),
        ..server.api()
    };
    let (status, err) = off.post("/apps/off/events", &good).await;
    assert_eq!(status, 403);
    assert_error_names(err, "disabled");

    // Malformed JSON, missing fields, bad channel, too many channels, too much data.
    let url = api.signed_url("POST", "/apps/1/events", &[], b"{nope");
    let res = api
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_error_names(res.json().await.unwrap(), "JSON");
    for (body, want, named) in [
        (json!({"channel": "guarded", "data": "x"}), 400, "name"),
        (json!({"name": "e", "data": "x"}), 400, "channel"),
        (
            json!({"name": "e", "channel": "bad name", "data": "x"}),
            400,
            "bad name",
        ),
        (
            json!({"name": "e", "channels": (0..101).map(|i| format!("c{i}")).collect::<Vec<_>>(), "data": "x"}),
            400,
            "100",
        ),
        (
            json!({"name": "e", "channel": "guarded", "data": "x".repeat(10 * 1024 + 1)}),
            413,
            "10240",
        ),
        (
            json!({"name": "e", "channels": ["guarded", "bad name"], "data": "x"}),
            400,
            "bad name",
        ),
    ] {
        let (status, err) = api.post("/apps/1/events", &body).await;
        assert_eq!(status, want, "{body} -> {err}");
        assert_error_names(err, named);
    }

    // Oversized body.
    let huge = "x".repeat(300 * 1024);
    let url = api.signed_url("POST", "/apps/1/events", &[], huge.as_bytes());
    let res = api.http.post(&url).body(huge).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 413);
    assert_error_names(res.json().await.unwrap(), "server.max_body_bytes");

    // Nothing above was published: the next event is the first one seen.
    api.trigger("guarded", "e", "good").await;
    assert_eq!(c.recv().await["data"], "good");
}

#[tokio::test]
async fn channel_queries() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.subscribe("news").await;
    c.subscribe_presence("presence-lobby", "7").await;
    let api = server.api();
    let (status, all) = api.get("/apps/1/channels", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(all, json!({"channels": {"news": {}, "presence-lobby": {}}}));
    let (_, presence) = api
        .get(
            "/apps/1/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        )
        .await;
    assert_eq!(
        presence,
        json!({"channels": {"presence-lobby": {"user_count": 1}}})
    );
    let (status, _) = api.get("/apps/1/channels", &[("info", "user_count")]).await;
    assert_eq!(status, 400);
    let (_, one) = api
        .get("/apps/1/channels/news", &[("info", "subscription_count")])
        .await;
    assert_eq!(one, json!({"occupied": true, "subscription_count": 1}));
    let (_, empty) = api.get("/apps/1/channels/nobody", &[]).await;
    assert_eq!(empty, json!({"occupied": false}));
    let (status, _) = api.get("/apps/1/channels/news/users", &[]).await;
    assert_eq!(status, 400);
    let (_, users) = api.get("/apps/1/channels/presence-lobby/users", &[]).await;
    assert_eq!(users, json!({"users": [{"id": "7"}]}));
}

#[tokio::test]
async fn health_ready_metrics() {
    let server = TestServer::start().await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
    // The recorder is the process's: this test checks the increase its publish causes.
    const PUBLISHED: &str = "crier_messages_published_total";
    let before = metrics::value(&server, PUBLISHED, "").await;
    server.api().trigger("m", "e", "1").await;
    metrics::wait_increase(&server, PUBLISHED, "", before, 1.0).await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("crier_messages_published_total"),
        "{metrics}"
    );
    let res = http
        .get(format!("{base}/no/such/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// Found by fuzz/api_signature: `sign_request` sent parameters unescaped, so a value
/// with `+`, `&`, `%` or a space reached the server as something other than what was
/// signed, and `crier publish` or an SDK-less client got 401.
#[tokio::test]
async fn signed_parameters_with_reserved_characters_verify() {
    let server = TestServer::start().await;
    let (status, body) = server
        .api()
        .get("/apps/1/channels", &[("filter_by_prefix", "a+b&c d%")])
        .await;
    assert_eq!((status, body), (200, json!({"channels": {}})));
}

/// Found by fuzz/api_signature: a timestamp near i64::MIN overflowed the skew check,
/// which panicked the handler in debug builds.
#[tokio::test]
async fn extreme_timestamps_are_refused_as_stale() {
    let server = TestServer::start().await;
    let api = server.api();
    let path = "/apps/1/channels";
    let qs = crier_protocol::signature::sign_request(KEY, SECRET, "GET", path, &[], b"", i64::MIN);
    let res = api
        .http
        .get(format!("{}{path}?{qs}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let err: Value = res.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("auth_timestamp"),
        "{err}"
    );
}
