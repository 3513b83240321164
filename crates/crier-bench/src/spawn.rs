//! Starting a Crier server for a run: `crier serve` on free loopback ports with a
//! fresh data directory, its log in a file, stopped (SIGTERM, then SIGKILL) at the end.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to start the server.
#[derive(Debug, Clone)]
pub(crate) struct SpawnSpec {
    pub(crate) binary: PathBuf,
    /// `always` or `grouped`; `None` leaves the server's default.
    pub(crate) fsync: Option<String>,
    /// `--workers` for the server; 0 leaves its default (number of cores).
    pub(crate) workers: usize,
    /// `RUST_LOG` for the server.
    pub(crate) log_filter: String,
    /// Extra arguments after `serve`.
    pub(crate) extra_args: Vec<String>,
    /// Where the data directory goes (a temporary directory is made inside).
    pub(crate) data_parent: Option<PathBuf>,
}

/// A running server started by us.
pub(crate) struct Spawned {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) udp: Option<SocketAddr>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

/// Starts the server and waits for it to print where it listens.
///
/// # Errors
/// When the binary cannot start or exits (with the end of its log) before listening.
pub(crate) async fn start(spec: &SpawnSpec) -> anyhow::Result<Spawned> {
    if !spec.binary.exists() {
        bail!(
            "{}: no such server binary; build it first (cargo build --release -p crier) or pass --spawn-server PATH / --url",
            spec.binary.display()
        );
    }
    let dir = match &spec.data_parent {
        Some(p) => tempfile::Builder::new()
            .prefix("crier-bench-")
            .tempdir_in(p)?,
        None => tempfile::Builder::new().prefix("crier-bench-").tempdir()?,
    };
    let log = dir.path().join("server.log");
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = Command::new(&spec.binary);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--udp-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    if let Some(f) = &spec.fsync {
        cmd.args(["--fsync", f]);
    }
    if spec.workers > 0 {
        cmd.args(["--workers", &spec.workers.to_string()]);
    }
    cmd.args(&spec.extra_args)
        .env("RUST_LOG", &spec.log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", spec.binary.display()))?;
    let pid = child.id().context("server exited at once")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let mut udp = None;
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                addr = Some(rest.trim().trim_end_matches('/').parse::<SocketAddr>()?);
            } else if let Some(rest) = line.split("UDP ingest:").nth(1) {
                udp = rest.trim().parse::<SocketAddr>().ok();
            }
            // The health line comes after everything we need.
            if addr.is_some() && line.contains("health") {
                break;
            }
        }
        anyhow::Ok(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), read).await;
    let Some(addr) = addr else {
        let _ = child.start_kill();
        bail!(
            "server did not say where it listens ({}); end of its log:\n{}",
            match outcome {
                Err(_) => "timed out after 30 s".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Ok(Ok(())) => "it exited".to_string(),
            },
            tail(&log)
        );
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Spawned {
        child,
        pid,
        addr,
        udp,
        log,
        dir,
    })
}

impl Spawned {
    /// Stops the server: SIGTERM, up to 10 s for a graceful exit, then SIGKILL.
    pub(crate) async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "crier-bench: server pid {} ignored SIGTERM for 10 s; killing it",
                self.pid
            );
            let _ = self.child.kill().await;
        }
        drop(self.dir);
    }

    /// The last lines of the server's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Whether the server process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
