//! The `cluster` scenario's servers: a `redis-server` of the run's own on a free
//! loopback port (nothing persisted), and N `crier serve` nodes configured with the
//! Redis broker under one key prefix, so that together they act as one server. All
//! are stopped at the end.

use crate::spawn::{self, SpawnSpec, Spawned};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSpec {
    /// Crier nodes, each `crier serve` started per `node`.
    pub(crate) nodes: usize,
    /// The `redis-server` binary.
    pub(crate) redis_binary: PathBuf,
    /// How each node is started; its `extra_args` get `--config` with the broker.
    pub(crate) node: SpawnSpec,
}

/// A running redis-server of ours.
pub(crate) struct Redis {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) port: u16,
    log: PathBuf,
}

/// The running cluster.
pub(crate) struct Cluster {
    pub(crate) redis: Redis,
    pub(crate) nodes: Vec<Spawned>,
    /// The key prefix the nodes share.
    pub(crate) prefix: String,
    /// Holds the nodes' config file and Redis's log and working directory.
    dir: tempfile::TempDir,
}

/// A port nothing listens on now (the kernel's pick; a race with another program is
/// caught by redis-server exiting, and retried).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether the Redis on `port` answers PING.
async fn pings(port: u16) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await?;
        std::io::Result::Ok(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

/// Starts redis-server on a free port with nothing persisted; `None` when it exited
/// before answering (the port was taken meanwhile).
async fn start_redis_on(binary: &Path, dir: &Path, port: u16) -> anyhow::Result<Option<Redis>> {
    let log = dir.join(format!("redis-{port}.log"));
    let log_file = std::fs::File::create(&log)?;
    let mut child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (install redis-server, or pass --redis-server PATH)",
                binary.display()
            )
        })?;
    let pid = child.id().context("redis-server exited at once")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if pings(port).await {
            return Ok(Some(Redis {
                child,
                pid,
                port,
                log,
            }));
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(None);
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            bail!(
                "redis-server on port {port} did not answer PING within 10 s; its log:\n{}",
                tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts Redis, then the nodes one after the other.
///
/// # Errors
/// When redis-server or a node cannot be started.
pub(crate) async fn start(spec: &ClusterSpec) -> anyhow::Result<Cluster> {
    if spec.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let dir = match &spec.node.data_parent {
        Some(p) => tempfile::Builder::new()
            .prefix("crier-bench-cluster-")
            .tempdir_in(p)?,
        None => tempfile::Builder::new()
            .prefix("crier-bench-cluster-")
            .tempdir()?,
    };
    let mut redis = None;
    for _ in 0..5 {
        redis = start_redis_on(&spec.redis_binary, dir.path(), free_port()?).await?;
        if redis.is_some() {
            break;
        }
    }
    let Some(mut redis) = redis else {
        bail!("redis-server exited at start five times (ports taken?)");
    };
    let prefix = format!("crier-bench-{}", std::process::id());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\nprefix = \"{prefix}\"\n",
            redis.port
        ),
    )?;
    let mut node_spec = spec.node.clone();
    node_spec
        .extra_args
        .splice(0..0, ["--config".to_string(), config.display().to_string()]);
    let mut nodes = Vec::with_capacity(spec.nodes);
    for i in 0..spec.nodes {
        match spawn::start(&node_spec).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                for node in nodes {
                    node.stop().await;
                }
                redis.stop().await;
                return Err(e.context(format!("starting cluster node {i}")));
            }
        }
    }
    Ok(Cluster {
        redis,
        nodes,
        prefix,
        dir,
    })
}

impl Redis {
    /// SIGTERM (nothing to save), then SIGKILL after 5 s.
    async fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Cluster {
    /// Stops the nodes, then Redis, and removes the temporary directory.
    pub(crate) async fn stop(mut self) {
        for node in self.nodes {
            node.stop().await;
        }
        self.redis.stop().await;
        drop(self.dir);
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
