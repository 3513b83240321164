//! Runs `crier-bench smoke` against the workspace's `crier` binary: a few hundred
//! connections over WebSocket, SSE and long-poll, HTTP publishes, two nodes sharing a
//! redis-server (cross-node delivery; needs `redis-server` on PATH, as the Redis tests
//! do), and no message may be missing, duplicated or out of order. It never asserts
//! speed.
//!
//! The server binary must be built first; `.ci/run` (through `scripts/test`) runs
//! `cargo build --workspace --all-targets` before `cargo test`, which builds it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// `crier` in the same target directory and profile as this test's `crier-bench`.
fn crier_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_crier-bench"));
    let beside = bench.parent().map(|d| d.join("crier"));
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/crier");
    beside.filter(|p| p.exists()).unwrap_or(fallback)
}

#[test]
fn smoke_run_delivers_everything_in_order() {
    let crier = crier_binary();
    assert!(
        crier.exists(),
        "{} is missing: build the server first with `cargo build -p crier` \
         (.ci/run does `cargo build --workspace --all-targets` before the tests)",
        crier.display()
    );
    let output = Command::new(env!("CARGO_BIN_EXE_crier-bench"))
        .args(["smoke", "--quiet", "--spawn-server"])
        .arg(&crier)
        .output()
        .expect("crier-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "smoke failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("smoke: PASSED"), "{stdout}");
    // Every part ran and passed: a part that was skipped or failed would have no line
    // of its own starting with "ok".
    for part in [
        "ws fanout",
        "ws channels",
        "http publish",
        "sse",
        "poll",
        "cluster",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(&format!(" {part}: "))),
            "no passing line for {part}:\n{stdout}"
        );
    }
}
