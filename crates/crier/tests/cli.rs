//! The `crier` binary as an operator uses it: help, config errors, the dev-secret
//! guard, serving with defaults, `crier publish`, and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{crier, run, Crier};

#[test]
fn help_documents_flags_and_env() {
    let out = run(crier().arg("--help"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--workers",
        "--data-dir",
        "--log-format",
        "--log-file",
        "CRIER_LISTEN",
        "--handshake-timeout-secs",
        "CRIER_HANDSHAKE_TIMEOUT_SECS",
        "--max-header-bytes",
        "CRIER_MAX_HEADER_BYTES",
        "publish",
        "serve",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

/// `--help` speaks of config keys, not of a document users do not have: it ends with
/// the whole config file at its defaults, which must read back as a valid config.
#[test]
fn help_lists_every_config_key_with_its_default() {
    let out = crier().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("SPEC"), "{text}");
    let toml = text
        .split_once("the README describes each.\n")
        .expect("the config section")
        .1;
    for key in [
        "[server]",
        "handshake_timeout_secs = 10",
        "[[apps]]",
        "max_channels_per_connection = 100",
        "client_events_per_sec = 10",
        "[history]",
        "[ingest.udp]",
        "[ingest.redis_queue]",
        "[broker]",
    ] {
        assert!(toml.contains(key), "--help lacks {key}:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("defaults.toml");
    std::fs::write(&path, toml).unwrap();
    let config = crier_server::config::Config::from_file(&path).expect("the defaults parse");
    config.validate().expect("the defaults are valid");
}

#[test]
fn bad_config_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[server]\nlisn = \"127.0.0.1:1\"\n", "lisn"),
        ("[history]\nfsync = \"often\"\n", "often"),
        (
            "[[apps]]\nid = \"a\"\nkey = \"\"\nsecret = \"s\"\n",
            "apps[0].key",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = run(crier().args(["serve", "--config"]).arg(&path));
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key),
            "error for {text:?} does not name {key}: {err}"
        );
    }
    let out = run(crier().args(["--config", "/no/such/file.toml"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dev_secret_is_refused_on_public_addresses() {
    let out = run(crier().args(["--listen", "0.0.0.0:0", "--udp-listen", ""]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("development secret"));
    let out = run(crier()
        .env("CRIER_LISTEN", "0.0.0.0:0")
        .args(["--udp-listen", ""]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dev_secret_is_refused_with_udp_ingest_on_public_addresses() {
    let out = run(crier().args(["--listen", "127.0.0.1:0", "--udp-listen", "0.0.0.0:0"]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["apps[0].secret", "development secret", "ingest.udp.listen"] {
        assert!(err.contains(needle), "error does not name {needle}: {err}");
    }
}

#[test]
fn serves_prints_endpoints_publishes_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Crier::serve(dir.path(), &[]);
    server
        .stdout
        .wait_for("the dev-credentials warning", support::DEADLINE, |l| {
            l.starts_with("WARNING")
        });
    let banner = server.stdout.text();
    assert!(banner.contains("/app/app-key"), "{banner}");
    assert!(
        banner.contains(
            r#"development credentials in use (app id "1", key "app-key", secret "app-secret")"#
        ),
        "{banner}"
    );
    let out = run(crier().args([
        "publish",
        "--url",
        &server.url,
        "--channel",
        "news",
        "--event",
        "e",
        "--data",
        "{\"a\":1}",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{}");
    let bad = run(crier().args([
        "publish",
        "--url",
        &server.url,
        "--app-secret",
        "wrong",
        "-c",
        "news",
        "-e",
        "e",
        "-d",
        "x",
    ]));
    assert!(!bad.status.success());
    // The status and the server's own message, not a raw HTTP exchange.
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.starts_with("crier: error: server answered 401 Unauthorized: ")
            && stderr.contains("signature"),
        "{stderr}"
    );
    let unknown = run(crier()
        .args(["publish", "--url", &server.url, "--app-id", "9"])
        .args(["-c", "news", "-e", "e", "-d", "x"]));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        "crier: error: server answered 404 Not Found: unknown app \"9\""
    );
    assert!(server.term().success());
    let down = run(crier().args([
        "publish",
        "--url",
        &server.url,
        "-c",
        "news",
        "-e",
        "e",
        "-d",
        "x",
    ]));
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.contains(&format!("cannot publish to {}", server.url)),
        "{stderr}"
    );
}

/// Without RUST_LOG: Crier's INFO lines, and nothing under WARN from the storage
/// engine (fjall logs its files at INFO). RUST_LOG still overrides.
#[test]
fn default_log_filter_keeps_crier_info_and_hides_library_info() {
    let dir = tempfile::tempdir().unwrap();
    let server = Crier::serve(dir.path(), &[]);
    let stderr = server.stderr_until_exit().join("\n");
    assert!(stderr.contains("crier_core::history::disk"), "{stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    assert!(
        !stderr.contains("fjall") && !stderr.contains("lsm_tree"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = crier();
    cmd.env("RUST_LOG", "fjall=info")
        .args(["serve", "--listen", "127.0.0.1:0", "--udp-listen", ""])
        .arg("--data-dir")
        .arg(dir.path());
    let server = Crier::spawn(cmd);
    let first = server
        .stderr
        .wait_for("a fjall log line", support::DEADLINE, |l| {
            l.contains("fjall")
        });
    assert!(first.contains("fjall"), "{first}");
}

#[test]
fn json_logs_go_to_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("crier.log");
    let mut server = Crier::serve(
        &dir.path().join("data"),
        &["--log-format", "json", "--log-file", log.to_str().unwrap()],
    );
    assert!(server.term().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().expect("log lines");
    let v: serde_json::Value = serde_json::from_str(first).expect("JSON log line");
    assert!(v["level"].is_string());
}

/// The address a server printed, without the scheme.
fn host_of(server: &Crier) -> &str {
    server.addr.rsplit_once(':').unwrap().0
}

/// README (configuration): settings come from the file (`--config` or `CRIER_CONFIG`),
/// then `CRIER_*` variables, then flags. Each layer is told apart by the loopback
/// address it sets.
#[test]
fn config_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crier.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.2:0\"\ndata_dir = \"{}\"\n[ingest.udp]\nlisten = \"\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let serve = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = crier();
        cmd.arg("serve").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut server = Crier::spawn(cmd);
        let host = host_of(&server).to_owned();
        assert!(server.term().success());
        host
    };
    let path = file.to_str().unwrap();
    assert_eq!(serve(&[], &["--config", path]), "127.0.0.2");
    assert_eq!(serve(&[("CRIER_CONFIG", path)], &[]), "127.0.0.2");
    assert_eq!(
        serve(&[("CRIER_LISTEN", "127.0.0.3:0")], &["--config", path]),
        "127.0.0.3"
    );
    assert_eq!(
        serve(
            &[("CRIER_CONFIG", path), ("CRIER_LISTEN", "127.0.0.3:0")],
            &["--listen", "127.0.0.4:0"]
        ),
        "127.0.0.4"
    );
}

/// README (configuration): `--app-id/--app-key/--app-secret` (or `CRIER_APP_ID`, ...)
/// replace the apps with one app.
#[test]
fn app_id_flags_and_environment_replace_the_apps() {
    let dir = tempfile::tempdir().unwrap();
    let publish = |url: &str, id: &str, key: &str, secret: &str| {
        run(crier().args([
            "publish",
            "--url",
            url,
            "--app-id",
            id,
            "--app-key",
            key,
            "--app-secret",
            secret,
            "-c",
            "news",
            "-e",
            "e",
            "-d",
            "x",
        ]))
    };
    let by_flags = [
        "--app-id",
        "42",
        "--app-key",
        "key-42",
        "--app-secret",
        "secret-42",
    ];
    let mut cmd = crier();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--udp-listen", ""])
        .arg("--data-dir")
        .arg(dir.path().join("a"))
        .args(by_flags);
    let mut server = Crier::spawn(cmd);
    let mut by_env = crier();
    by_env
        .args(["serve", "--listen", "127.0.0.1:0", "--udp-listen", ""])
        .arg("--data-dir")
        .arg(dir.path().join("b"))
        .env("CRIER_APP_ID", "42")
        .env("CRIER_APP_KEY", "key-42")
        .env("CRIER_APP_SECRET", "secret-42");
    let mut server_env = Crier::spawn(by_env);
    for s in [&mut server, &mut server_env] {
        s.stdout
            .wait_for("the health line", support::DEADLINE, |l| {
                l.contains("health: /health")
            });
        let banner = s.stdout.text();
        assert!(banner.contains("/app/key-42?protocol=7"), "{banner}");
        assert!(!banner.contains("/app/app-key"), "{banner}");
        assert!(!banner.contains("development credentials"), "{banner}");
        let ok = publish(&s.url, "42", "key-42", "secret-42");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "{}");
        // The development app is gone.
        let dev = publish(&s.url, "1", "app-key", "app-secret");
        assert!(!dev.status.success());
        assert!(
            String::from_utf8_lossy(&dev.stderr).contains("404"),
            "{}",
            String::from_utf8_lossy(&dev.stderr)
        );
        assert!(s.term().success());
    }
}

/// README (ingest): rejected items are counted and logged at most once per reason
/// every 10 s.
#[test]
fn ingest_rejections_are_logged_once_per_reason() {
    const EACH: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = crier();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--udp-listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(dir.path());
    let server = Crier::spawn(cmd);
    let udp = server
        .stdout
        .wait_for("the UDP address", support::DEADLINE, |l| {
            l.contains("UDP ingest:")
        });
    let udp = udp.rsplit(' ').next().unwrap().to_owned();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let unknown = serde_json::json!({"app_id": "9", "name": "e", "channel": "c", "data": "x"});
    for _ in 0..EACH {
        sock.send_to(b"{not json", &udp).unwrap();
        sock.send_to(unknown.to_string().as_bytes(), &udp).unwrap();
    }
    // This process's counters are the server's own: wait until every datagram is in.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let metrics = http_get(&server.addr, "/metrics");
        let count = |reason: &str| {
            metrics
                .lines()
                .filter(|l| l.starts_with("crier_ingest_dropped_total") && l.contains(reason))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        if count("invalid_json") >= EACH as f64 && count("unknown_app") >= EACH as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "datagrams not all counted: {metrics}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = server.stderr_until_exit();
    let logged = |reason: &str| {
        log.iter()
            .filter(|l| l.contains("dropped") && l.contains(reason))
            .count()
    };
    assert_eq!(logged("invalid_json"), 1, "{log:#?}");
    assert_eq!(logged("unknown_app"), 1, "{log:#?}");
}

/// A plain GET over a fresh connection, with a read deadline; the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(support::DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default()
}
