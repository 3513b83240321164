//! The `crier` binary as an operator uses it: help, config errors, the dev-secret
//! guard, serving with defaults, `crier publish`, and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn crier() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crier"));
    c.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("CRIER_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn help_documents_flags_and_env() {
    let out = crier().arg("--help").output().unwrap();
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
        let out = crier()
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key),
            "error for {text:?} does not name {key}: {err}"
        );
    }
    let out = crier()
        .args(["--config", "/no/such/file.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dev_secret_is_refused_on_public_addresses() {
    let out = crier()
        .args(["--listen", "0.0.0.0:0", "--udp-listen", ""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("development secret"));
    let out = crier()
        .env("CRIER_LISTEN", "0.0.0.0:0")
        .args(["--udp-listen", ""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dev_secret_is_refused_with_udp_ingest_on_public_addresses() {
    let out = crier()
        .args(["--listen", "127.0.0.1:0", "--udp-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["apps[0].secret", "development secret", "ingest.udp.listen"] {
        assert!(err.contains(needle), "error does not name {needle}: {err}");
    }
}

struct Server {
    child: Child,
    url: String,
    stdout: Vec<String>,
}

fn start(args: &[&str], dir: &std::path::Path) -> Server {
    let mut child = crier()
        .args(["serve", "--listen", "127.0.0.1:0", "--udp-listen", ""])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines.next().expect("server printed its address").unwrap();
        stdout.push(line.clone());
        if let Some(rest) = line.strip_prefix("crier listening on ") {
            break rest.trim().to_owned();
        }
    };
    // Keep reading the rest of the banner so the pipe never fills.
    for _ in 0..8 {
        match lines.next() {
            Some(Ok(l)) => {
                let done = l.starts_with("WARNING");
                stdout.push(l);
                if done {
                    break;
                }
            }
            _ => break,
        }
    }
    Server { child, url, stdout }
}

fn term(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_prints_endpoints_publishes_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&[], dir.path());
    let banner = server.stdout.join("\n");
    assert!(banner.contains("/app/app-key"), "{banner}");
    assert!(
        banner.contains(
            r#"development credentials in use (app id "1", key "app-key", secret "app-secret")"#
        ),
        "{banner}"
    );
    let out = crier()
        .args([
            "publish",
            "--url",
            &server.url,
            "--channel",
            "news",
            "--event",
            "e",
            "--data",
            "{\"a\":1}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{}");
    let bad = crier()
        .args([
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
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    // The status and the server's own message, not a raw HTTP exchange.
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.starts_with("crier: error: server answered 401 Unauthorized: ")
            && stderr.contains("signature"),
        "{stderr}"
    );
    let unknown = crier()
        .args(["publish", "--url", &server.url, "--app-id", "9"])
        .args(["-c", "news", "-e", "e", "-d", "x"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        "crier: error: server answered 404 Not Found: unknown app \"9\""
    );
    assert!(term(&mut server.child).success());
    let down = crier()
        .args([
            "publish",
            "--url",
            &server.url,
            "-c",
            "news",
            "-e",
            "e",
            "-d",
            "x",
        ])
        .output()
        .unwrap();
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
    let mut server = start(&[], dir.path());
    assert!(term(&mut server.child).success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("crier_core::history::disk"), "{stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    assert!(
        !stderr.contains("fjall") && !stderr.contains("lsm_tree"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut child = crier()
        .env("RUST_LOG", "fjall=info")
        .args(["serve", "--listen", "127.0.0.1:0", "--udp-listen", ""])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a log line").unwrap();
    assert!(first.contains("fjall"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn json_logs_go_to_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("crier.log");
    let mut server = start(
        &["--log-format", "json", "--log-file", log.to_str().unwrap()],
        &dir.path().join("data"),
    );
    assert!(term(&mut server.child).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().expect("log lines");
    let v: serde_json::Value = serde_json::from_str(first).expect("JSON log line");
    assert!(v["level"].is_string());
}
