//! The landing page and the dashboard: who gets in (loopback, login, token, proxies),
//! the JSON bodies of /dashboard/api/*, and the test-event form's endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::*;

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    http()
        .get(format!("http://{}{path}", server.addr))
        .send()
        .await
        .unwrap()
}

async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    let res = get(server, path).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn the_landing_page_names_the_endpoints_and_links_the_dashboard() {
    let server = TestServer::start().await;
    let res = get(&server, "/").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"<a href="/dashboard">"#), "{page}");
    let ws = format!("ws://{}/app/{{app_key}}?protocol=7", server.addr);
    assert!(page.contains(&ws), "{page}");
    assert!(page.contains("/apps/{app_id}/events"), "{page}");

    let res = http()
        .get(format!("http://{}/", server.addr))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "name": "crier",
            "version": env!("CARGO_PKG_VERSION"),
            "tls": false,
            "endpoints": {
                "websocket": "ws://HOST/app/{app_key}?protocol=7",
                "sse": "/app/{app_key}/sse?channels={channels}",
                "long_poll": "/app/{app_key}/poll?channels={channels}",
                "http_api": "/apps/{app_id}/events",
                "health": "/health",
                "ready": "/ready",
                "metrics": "/metrics",
                "dashboard": "/dashboard",
            }
        })
    );
}

#[tokio::test]
async fn a_disabled_dashboard_is_not_found_and_not_linked() {
    let server = TestServer::with(|c| c.dashboard.enabled = false).await;
    let (status, body) = get_json(&server, "/dashboard").await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "no route for /dashboard"}))
    );
    let (status, _) = get_json(&server, "/dashboard/api/overview").await;
    assert_eq!(status, 404);
    let page = get(&server, "/").await.text().await.unwrap();
    assert!(!page.contains(r#"href="/dashboard""#), "{page}");
    assert!(page.contains("dashboard is turned off"), "{page}");
}

#[tokio::test]
async fn loopback_clients_get_the_page_and_its_assets_without_a_login() {
    let server = TestServer::start().await;
    let res = get(&server, "/dashboard").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"<script src="/dashboard/dashboard.js" defer>"#));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN"
    );
    for (path, kind) in [
        ("/dashboard/dashboard.js", "text/javascript; charset=utf-8"),
        ("/dashboard/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let res = get(&server, path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], kind, "{path}");
    }
}

/// A server that asks every client for the login, as it does off loopback.
async fn with_login() -> TestServer {
    TestServer::with(|c| {
        c.dashboard.open_on_loopback = false;
        c.dashboard.username = "ops".into();
        c.dashboard.password = "correct horse".into();
        c.dashboard.token = "t0ken".into();
    })
    .await
}

async fn status_with(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = http().get(format!("http://{}{path}", server.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status == 401 {
        assert_eq!(
            www.as_deref(),
            Some("Basic realm=\"Crier dashboard\", charset=\"UTF-8\"")
        );
    }
    (status, body)
}

#[tokio::test]
async fn without_loopback_trust_every_dashboard_route_needs_the_login_or_the_token() {
    let server = with_login().await;
    let refused = json!({"error": "the dashboard needs a login: [dashboard] username and password, or token"});
    for path in [
        "/dashboard",
        "/dashboard/dashboard.js",
        "/dashboard/api/overview",
        "/dashboard/api/apps",
        "/dashboard/api/apps/1/channels/news",
    ] {
        assert_eq!(
            status_with(&server, path, &[]).await,
            (401, refused.clone()),
            "{path}"
        );
        // "ops:wrong" and "ops:correct horse"
        let wrong = [("authorization", "Basic b3BzOndyb25n")];
        assert_eq!(status_with(&server, path, &wrong).await.0, 401, "{path}");
        let right = [("authorization", "Basic b3BzOmNvcnJlY3QgaG9yc2U=")];
        assert_eq!(status_with(&server, path, &right).await.0, 200, "{path}");
        let bearer = [("authorization", "Bearer t0ken")];
        assert_eq!(status_with(&server, path, &bearer).await.0, 200, "{path}");
        let bad_bearer = [("authorization", "Bearer t0ke")];
        assert_eq!(
            status_with(&server, path, &bad_bearer).await.0,
            401,
            "{path}"
        );
    }
    // The rest of the server is not behind the dashboard's login.
    assert_eq!(get(&server, "/").await.status(), 200);
    assert_eq!(get(&server, "/health").await.status(), 200);
}

#[tokio::test]
async fn without_a_configured_login_only_loopback_gets_in() {
    let server = TestServer::with(|c| c.dashboard.open_on_loopback = false).await;
    let (status, body) = status_with(&server, "/dashboard/api/overview", &[]).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error"],
        "the dashboard is open to loopback clients only; set [dashboard] username and password, or token, to use it from elsewhere"
    );
}

#[tokio::test]
async fn loopback_requests_through_a_proxy_or_for_a_foreign_host_need_the_login() {
    let server = TestServer::with(|c| {
        c.dashboard.username = "ops".into();
        c.dashboard.password = "pw".into();
    })
    .await;
    assert_eq!(status_with(&server, "/dashboard", &[]).await.0, 200);
    for headers in [
        [("x-forwarded-for", "192.0.2.1")],
        [("forwarded", "for=192.0.2.1")],
        [("host", "rebound.example:6001")],
    ] {
        assert_eq!(
            status_with(&server, "/dashboard", &headers).await.0,
            401,
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn the_json_endpoints_describe_apps_channels_members_and_counts() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    alice.subscribe_presence("presence-room", "alice").await;
    bob.subscribe_presence("presence-room", "bob").await;
    alice.subscribe("news").await;
    bob.subscribe("news").await;
    // The recorder is the process's: what is checked below is this test's increase.
    const REFUSED: &str = "crier_client_errors_total";
    const KIND: &str = "kind=\"subscription_error\"";
    let refused_before = metrics::value(&server, REFUSED, KIND).await;
    // A refused subscription, counted among the errors.
    alice
        .send(json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": "app-key:bad"}}))
        .await;
    alice.recv_event("pusher:subscription_error").await;
    metrics::wait_increase(&server, REFUSED, KIND, refused_before, 1.0).await;

    let (status, body) = get_json(&server, "/dashboard/api/apps").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"apps": [{
            "id": "1",
            "key": "app-key",
            "enabled": true,
            "connections": 2,
            "channels": 2,
            "subscriptions": 4,
            "busiest": [
                {"channel": "news", "presence": false, "subscription_count": 2, "user_count": 0},
                {"channel": "presence-room", "presence": true, "subscription_count": 2, "user_count": 2},
            ],
        }]})
    );

    let (status, body) = get_json(&server, "/dashboard/api/apps/1/channels/presence-room").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "app": "1", "channel": "presence-room", "presence": true, "occupied": true,
            "subscription_count": 2, "user_count": 2, "members": ["alice", "bob"],
        })
    );
    let (_, body) = get_json(&server, "/dashboard/api/apps/1/channels/news").await;
    assert_eq!(
        body,
        json!({
            "app": "1", "channel": "news", "presence": false, "occupied": true,
            "subscription_count": 2, "user_count": 0, "members": null,
        })
    );
    let (_, body) = get_json(&server, "/dashboard/api/apps/1/channels/presence-empty").await;
    assert_eq!(
        body,
        json!({
            "app": "1", "channel": "presence-empty", "presence": true, "occupied": false,
            "subscription_count": 0, "user_count": 0, "members": [],
        })
    );
    let (status, body) = get_json(&server, "/dashboard/api/apps/9/channels/news").await;
    assert_eq!((status, body), (404, json!({"error": "unknown app \"9\""})));
    let (status, body) = get_json(&server, "/dashboard/api/apps/1/channels/bad%20name").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid channel name \"bad name\""),
        "{body}"
    );

    let (status, o) = get_json(&server, "/dashboard/api/overview").await;
    assert_eq!(status, 200);
    assert_eq!(o["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(o["tls"], false);
    assert_eq!(o["sample_every_secs"], 2);
    assert_eq!(
        (o["channels"].as_u64(), o["subscriptions"].as_u64()),
        (Some(2), Some(4))
    );
    // The metrics are the process's: other tests' servers in this binary add to them.
    assert!(o["connections"]["ws"].as_f64().unwrap() >= 2.0, "{o}");
    assert!(o["connections"]["sse"].as_f64().is_some(), "{o}");
    assert!(o["connections"]["xhr"].as_f64().is_some(), "{o}");
    for key in [
        "in_per_sec",
        "out_per_sec",
        "poll_requests_per_sec",
        "published_total",
        "delivered_total",
    ] {
        assert!(o["messages"][key].as_f64().is_some(), "{key}: {o}");
    }
    assert!(o["chart"].is_array(), "{o}");
    let errors = o["errors"].as_array().unwrap();
    let refused = errors
        .iter()
        .find(|e| e["series"] == r#"crier_client_errors_total{kind="subscription_error"}"#)
        .unwrap_or_else(|| panic!("no subscription_error series in {o}"));
    assert!(
        refused["total"].as_f64().unwrap() >= refused_before + 1.0,
        "{refused}"
    );
    assert!(refused["recent"].as_f64().unwrap() >= 1.0, "{refused}");
}

async fn send_event(server: &TestServer, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut req = http()
        .post(format!(
            "http://{}/dashboard/api/apps/1/events",
            server.addr
        ))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_test_event_form_publishes_and_refuses_other_sites() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.subscribe("dashboard-test").await;
    let body = json!({"channel": "dashboard-test", "event": "test-event", "data": "{\"n\":1}"})
        .to_string();
    let own_origin = format!("http://{}", server.addr);
    let json_type = ("content-type", "application/json");

    let (status, answer) = send_event(&server, &[json_type, ("origin", &own_origin)], &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"published": true, "app": "1", "channel": "dashboard-test", "event": "test-event"})
    );
    let frame = client.recv_event("test-event").await;
    assert_eq!(frame["channel"], "dashboard-test");
    assert_eq!(frame["data"], "{\"n\":1}");

    let (status, answer) = send_event(
        &server,
        &[json_type, ("origin", "http://evil.example")],
        &body,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = send_event(&server, &[("content-type", "text/plain")], &body).await;
    assert_eq!(
        (status, answer),
        (
            415,
            json!({"error": "send the test event as application/json"})
        )
    );
    let (status, answer) = send_event(&server, &[json_type], r#"{"channel": "x"}"#).await;
    assert_eq!(status, 400, "{answer}");
    let bad_channel = json!({"channel": "no spaces", "event": "e", "data": ""}).to_string();
    let (status, _) = send_event(&server, &[json_type], &bad_channel).await;
    assert_eq!(status, 400);
    // Nothing but the one good event arrived.
    server.api().trigger("dashboard-test", "marker", "m").await;
    assert_eq!(client.recv().await["event"], "marker");
}
