use super::*;

#[test]
fn spec_example_parses() {
    let c = Config::from_toml(
        r#"
[server]
listen = "127.0.0.1:6001"
workers = 2
data_dir = "./crier-data"
log_format = "text"
log_file = ""

[[apps]]
id = "app"
key = "app-key"
secret = "app-secret"
enabled = true
client_events = true
max_connections = 0
allowed_origins = ["*"]
webhooks = [{ url = "http://127.0.0.1:3001/hook", events = ["channel_occupied", "channel_vacated"] }]

[history]
max_messages = 1000
max_age_secs = 86400
fsync = "grouped"

[ingest.udp]
listen = "127.0.0.1:6002"

[ingest.redis_queue]
url = "redis://127.0.0.1:6379"
key = "crier:publish"

[broker]
kind = "memory"
url = "redis://127.0.0.1:6379"
"#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.server.workers, 2);
    assert_eq!(c.apps[0].webhooks.len(), 1);
    assert_eq!(c.ingest.redis_queue.unwrap().key, "crier:publish");
}

/// Found while writing fuzz/config's invariant (the fuzzer itself did not reach it):
/// these validated, then every WebSocket connection panicked on
/// `Instant::now() + activity`, or pinged in a loop.
#[test]
fn out_of_range_timings_are_refused() {
    for (key, value) in [
        ("activity_timeout_secs", "0"),
        ("activity_timeout_secs", "9223372036854775807"),
        ("activity_timeout_secs", "2147484"),
        ("pong_timeout_secs", "0"),
        ("write_timeout_secs", "9223372036854775807"),
        ("shutdown_timeout_secs", "86401"),
        ("poll_presence_grace_secs", "9223372036854775807"),
        ("sse_heartbeat_secs", "0"),
        ("fallback_session_idle_secs", "0"),
        ("fallback_session_idle_secs", "86401"),
    ] {
        let c = Config::from_toml(&format!("[server]\n{key} = {value}")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("server.{key}")),
            "{key} = {value}: {e}"
        );
    }
    let c = Config::from_toml("[server]\nactivity_timeout_secs = 86400").unwrap();
    c.validate().unwrap();
}

#[test]
fn errors_name_the_key() {
    let e = Config::from_toml("[server]\nlisen = 1").unwrap_err();
    assert!(e.contains("lisen"), "{e}");
    let e = Config::from_toml("[history]\nfsync = \"sometimes\"").unwrap_err();
    assert!(e.contains("sometimes"), "{e}");
    let mut c = Config::default();
    c.server.listen = "0.0.0.0:6001".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("apps[0].secret"), "{e}");
    c.server.listen = "127.0.0.1:6001".into();
    c.ingest.udp.listen = "0.0.0.0:6002".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("apps[0].secret"), "{e}");
    assert!(e.contains("development secret"), "{e}");
    assert!(e.contains("ingest.udp.listen"), "{e}");
    c.ingest.udp.listen = "[::1]:6002".into();
    c.validate().expect("dev secret with UDP on loopback");
    c.ingest.udp.listen = "0.0.0.0:6002".into();
    c.apps[0].secret = "a-real-secret".into();
    c.validate().expect("a real secret with UDP off loopback");
    c.server.listen = "127.0.0.1:0".into();
    c.server.handshake_timeout_secs = 0;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("server.handshake_timeout_secs"), "{e}");
    c.server.handshake_timeout_secs = 10;
    c.server.max_header_bytes = 100;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("server.max_header_bytes"), "{e}");
    c.server.listen = "nope".into();
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("server.listen"));
}

#[test]
fn connection_caps_parse_and_zero_is_refused() {
    let c = Config::from_toml(
        "[server]\nmax_fallback_sessions = 5\n\n[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"s\"\nmax_channels_per_connection = 7\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.server.max_fallback_sessions, 5);
    assert_eq!(c.apps[0].max_channels_per_connection, Some(7));
    assert_eq!(Config::default().server.max_fallback_sessions, 10_000);
    let mut zero = c.clone();
    zero.apps[0].max_channels_per_connection = Some(0);
    let e = zero.validate().unwrap_err().to_string();
    assert!(e.starts_with("apps[0].max_channels_per_connection"), "{e}");
    let mut zero = c;
    zero.server.max_fallback_sessions = 0;
    let e = zero.validate().unwrap_err().to_string();
    assert!(e.starts_with("server.max_fallback_sessions"), "{e}");
}

#[test]
fn the_redis_broker_needs_redis_urls() {
    let mut c = Config::default();
    c.broker.kind = BrokerKind::Redis;
    c.validate().unwrap();
    c.broker.url = "http://127.0.0.1:6379".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("broker.url"), "{e}");
    c.broker.url = "rediss://user:pw@127.0.0.1:6380".into();
    c.validate().unwrap();
    c.broker.cluster = vec!["redis://127.0.0.1:7000".into(), "127.0.0.1:7001".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("broker.cluster"), "{e}");
    c.broker.cluster.pop();
    c.broker.prefix = "a b".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("broker.prefix"), "{e}");
}

#[test]
fn tls_needs_both_cert_and_key() {
    let c = Config::from_toml("[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"").unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.tls_files(),
        Some((Path::new("cert.pem"), Path::new("key.pem")))
    );
    assert_eq!(Config::default().tls_files(), None);
    let c = Config::from_toml("[server]\ntls_cert = \"cert.pem\"").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("server.tls_key: must be set together"), "{e}");
    let c = Config::from_toml("[server]\ntls_key = \"key.pem\"").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("server.tls_cert: must be set together"),
        "{e}"
    );
}

#[test]
fn dashboard_keys_parse_and_a_half_login_is_refused() {
    let c = Config::from_toml(
        "[dashboard]\nenabled = true\nusername = \"ops\"\npassword = \"pw\"\ntoken = \"t\"\nopen_on_loopback = false",
    )
    .unwrap();
    c.validate().unwrap();
    assert!(c.dashboard.has_login());
    assert!(!c.dashboard.open_on_loopback);
    let shown = format!("{:?}", c.dashboard);
    assert!(
        !shown.contains("pw") && shown.contains("<hidden>"),
        "{shown}"
    );
    let d = Config::default().dashboard;
    assert!(d.enabled && d.open_on_loopback && !d.has_login());
    let c = Config::from_toml("[dashboard]\nusername = \"ops\"").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("dashboard.password: "), "{e}");
    let c = Config::from_toml("[dashboard]\npassword = \"pw\"").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("dashboard.username: "), "{e}");
}

#[test]
fn demo_pages_default_to_loopback_only() {
    let unset = DemoConfig::default();
    assert!(unset.active("127.0.0.1:6001"));
    assert!(unset.active("[::1]:6001"));
    assert!(!unset.active("0.0.0.0:6001"));
    assert!(!unset.active("10.0.0.5:6001"));
    let c = Config::from_toml("[demo]\nenabled = false\n").unwrap();
    assert!(!c.demo.active("127.0.0.1:6001"));
    let c = Config::from_toml("[demo]\nenabled = true\n").unwrap();
    assert!(c.demo.active("0.0.0.0:6001"));
}

#[test]
fn the_limit_keys_parse_and_a_tiny_url_limit_is_refused() {
    let c = Config::from_toml(
        "[server]\nmax_url_bytes = 4096\nsubscribe_timeout_secs = 0\n\n[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"s\"\nmax_connections_per_ip = 3\nsubscriptions_per_sec = 4\npublish_per_sec = 5\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.server.max_url_bytes, 4096);
    assert_eq!(c.server.subscribe_timeout_secs, 0);
    let app = &c.apps[0];
    assert_eq!(
        (
            app.max_connections_per_ip,
            app.subscriptions_per_sec,
            app.publish_per_sec
        ),
        (Some(3), Some(4), Some(5))
    );
    let mut tiny = c;
    tiny.server.max_url_bytes = 100;
    let e = tiny.validate().unwrap_err().to_string();
    assert!(e.starts_with("server.max_url_bytes"), "{e}");
}
