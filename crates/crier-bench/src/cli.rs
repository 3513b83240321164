//! Command line: the named scenarios, their defaults, and the options they share.

use crate::cluster::ClusterSpec;
use crate::plan::{Target, Transport};
use crate::publish::Via;
use crate::run::{RunSpec, Server};
use crate::spawn::SpawnSpec;
use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Load generator for Crier (and Nchan): holds many WebSocket / SSE / long-poll
/// subscribers, publishes through the signed HTTP API or UDP, and reports connections,
/// memory, CPU, throughput, latency percentiles and loss.
///
/// By default each scenario starts its own server (the `crier` binary next to this one,
/// or --spawn-server PATH); --url targets one already running.
#[derive(Parser, Debug)]
#[command(name = "crier-bench", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Many idle WebSocket connections (one subscription each); reports memory per connection.
    Idle(Opts),
    /// One channel, many WebSocket subscribers.
    Fanout(Opts),
    /// Many channels, a few WebSocket subscribers each.
    Channels(Opts),
    /// Signed HTTP publish throughput with durable history (both fsync policies when spawning).
    Publish(Opts),
    /// Server-Sent Events subscribers.
    Sse(Opts),
    /// Long-poll subscribers.
    Poll(Opts),
    /// Several Crier nodes on one Redis, acting as one server: the tool starts a
    /// redis-server (free loopback port, nothing persisted) and --nodes nodes with the
    /// Redis broker under one key prefix; WebSocket subscribers are spread so every
    /// channel has subscribers on every node, and each channel is published on one
    /// node, so deliveries cross nodes. Reports each node's and Redis's CPU per 1,000
    /// messages beside throughput, latency and loss (which fails the run).
    Cluster(ClusterOpts),
    /// Churns connections and subscriptions (connect, subscribe, receive, close) for
    /// --duration seconds (default 600) or -n cumulative connections (default 1,000,000),
    /// whichever comes first; reports the server's RSS, open files and tasks at the
    /// start, the peak and the end, and fails when they do not return to the baseline.
    /// --concurrency sets the connections churned at once.
    Soak(Opts),
    /// Quick correctness run for CI: WS fan-out, channels, HTTP publish, SSE, long-poll.
    /// Exits non-zero on any loss, duplicate, disorder or missing delivery; never on speed.
    Smoke(Opts),
    /// Runs a scenario against Crier and against Nchan and prints the ratios.
    Compare {
        /// idle, fanout, channels, sse or poll.
        scenario: String,
        /// Nchan's address (start it with bench/nchan/run.sh start).
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        nchan_url: String,
        #[command(flatten)]
        opts: Opts,
    },
    /// Internal: a worker process holding a slice of the connections.
    #[command(hide = true)]
    Worker,
}

/// The `cluster` scenario's own options, before the shared ones.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClusterOpts {
    /// Crier nodes to start on the one redis-server.
    #[arg(long, default_value_t = 2)]
    pub(crate) nodes: usize,
    /// The redis-server binary to start.
    #[arg(long, default_value = "redis-server")]
    pub(crate) redis_server: PathBuf,
    #[command(flatten)]
    pub(crate) opts: Opts,
}

impl ClusterOpts {
    /// The run: the shared options over the cluster defaults, on a cluster of our own.
    ///
    /// # Errors
    /// Options the cluster scenario cannot honour.
    pub(crate) fn spec(&self) -> anyhow::Result<RunSpec> {
        let o = &self.opts;
        if o.target == Target::Nchan {
            bail!("the cluster scenario runs Crier nodes over Redis; Nchan has no such mode");
        }
        if o.url.is_some() || !o.server_pids.is_empty() || o.udp.is_some() {
            bail!("the cluster scenario starts its own redis-server and nodes; --url, --server-pid and --udp do not apply");
        }
        if !(1..=16).contains(&self.nodes) {
            bail!("--nodes must be 1 to 16");
        }
        let mut spec = o.spec("cluster")?;
        let Server::Spawn(node) = o.server(o.fsync.clone()) else {
            unreachable!("no --url, so the server is spawned");
        };
        spec.server = Server::Cluster(ClusterSpec {
            nodes: self.nodes,
            redis_binary: self.redis_server.clone(),
            node,
        });
        Ok(spec)
    }
}

/// Options shared by every scenario. Unset numbers take the scenario's defaults.
#[derive(Args, Debug, Clone)]
pub(crate) struct Opts {
    /// Server kind to drive.
    #[arg(long, value_enum, default_value_t = Target::Crier)]
    pub(crate) target: Target,
    /// A running server (http://HOST:PORT) instead of starting one.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// Pid(s) of the running server, for memory and CPU (default: found from the port).
    #[arg(long = "server-pid")]
    pub(crate) server_pids: Vec<u32>,
    /// UDP ingest address of a running server (publisher udp).
    #[arg(long)]
    pub(crate) udp: Option<SocketAddr>,
    /// The crier binary to start (default: `crier` next to this program, else target/release/crier).
    #[arg(long)]
    pub(crate) spawn_server: Option<PathBuf>,
    /// fsync policy of the started server: always or grouped (publish: both when unset).
    #[arg(long)]
    pub(crate) fsync: Option<String>,
    /// --workers of the started server (0: its default, the number of cores).
    #[arg(long, default_value_t = 0)]
    pub(crate) server_workers: usize,
    /// RUST_LOG of the started server.
    #[arg(long, default_value = "warn")]
    pub(crate) server_log: String,
    /// Where the started server's temporary data directory goes (default: the system temp dir).
    #[arg(long)]
    pub(crate) data_parent: Option<PathBuf>,
    /// More arguments for `crier serve`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub(crate) server_args: Vec<String>,
    /// Subscriber connections.
    #[arg(short = 'n', long)]
    pub(crate) connections: Option<usize>,
    /// Channels.
    #[arg(short = 'm', long)]
    pub(crate) channels: Option<usize>,
    /// Channels each connection subscribes to.
    #[arg(long)]
    pub(crate) subs_per_conn: Option<usize>,
    /// Subscriber transport (ws, sse, poll).
    #[arg(long, value_enum)]
    pub(crate) transport: Option<Transport>,
    /// How to publish (http, udp).
    #[arg(long, value_enum)]
    pub(crate) publisher: Option<Via>,
    /// Messages per second, all channels together; 0 = as fast as possible.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Stop after this many messages (0 = only --duration bounds it).
    #[arg(long)]
    pub(crate) messages: Option<u64>,
    /// Longest publishing time, seconds.
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// Publish requests in flight (at most one per channel).
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Events per HTTP publish request (batch_events above 1).
    #[arg(long)]
    pub(crate) batch: Option<usize>,
    /// Size of each message's data, bytes.
    #[arg(long)]
    pub(crate) payload_bytes: Option<usize>,
    /// Seconds to hold the connections idle before measuring memory.
    #[arg(long)]
    pub(crate) hold: Option<f64>,
    /// Seconds to wait for late deliveries after publishing.
    #[arg(long)]
    pub(crate) drain: Option<f64>,
    /// Loopback source addresses to spread connections over (127.0.0.1..N).
    #[arg(long, default_value_t = 4)]
    pub(crate) source_addrs: usize,
    /// Worker processes holding connections (0: as the open-file limit requires).
    #[arg(long, default_value_t = 0)]
    pub(crate) workers: usize,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = 200)]
    pub(crate) connect_concurrency: usize,
    /// Seconds one connection may take to connect and subscribe.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) connect_timeout: f64,
    /// Long-poll timeout parameter, seconds.
    #[arg(long)]
    pub(crate) poll_timeout: Option<u64>,
    #[arg(long, default_value = "1")]
    pub(crate) app_id: String,
    #[arg(long, default_value = "app-key")]
    pub(crate) app_key: String,
    #[arg(long, default_value = "app-secret")]
    pub(crate) app_secret: String,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress lines.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// A scenario's defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    pub(crate) connections: usize,
    pub(crate) channels: usize,
    pub(crate) subs_per_conn: usize,
    pub(crate) transport: Transport,
    pub(crate) rate: f64,
    /// 0 with `messages_per_channel` set: one message per channel.
    pub(crate) messages: u64,
    pub(crate) duration: f64,
    pub(crate) concurrency: usize,
    pub(crate) hold: f64,
}

/// The defaults of a named scenario.
///
/// # Errors
/// An unknown name.
pub(crate) fn defaults(scenario: &str) -> anyhow::Result<Defaults> {
    let base = Defaults {
        connections: 10_000,
        channels: 1,
        subs_per_conn: 1,
        transport: Transport::Ws,
        rate: 0.0,
        messages: 0,
        duration: 10.0,
        concurrency: 64,
        hold: 0.0,
    };
    Ok(match scenario {
        // One message per channel at the end proves every connection still works.
        "idle" => Defaults {
            connections: 19_000,
            channels: 1_000,
            messages: 1_000,
            hold: 10.0,
            duration: 30.0,
            ..base
        },
        "fanout" => Defaults { rate: 10.0, ..base },
        "channels" => Defaults {
            channels: 5_000,
            messages: 1_000_000,
            ..base
        },
        "publish" => Defaults {
            connections: 100,
            channels: 100,
            messages: 2_000_000,
            ..base
        },
        "sse" => Defaults {
            connections: 5_000,
            channels: 50,
            transport: Transport::Sse,
            rate: 500.0,
            ..base
        },
        "poll" => Defaults {
            connections: 2_000,
            channels: 50,
            transport: Transport::Poll,
            rate: 200.0,
            ..base
        },
        // 100 subscribers per channel (half on each of 2 nodes), 1,000 messages/s:
        // 100k deliveries/s asked.
        "cluster" => Defaults {
            connections: 1_000,
            channels: 10,
            rate: 1_000.0,
            ..base
        },
        "soak" => Defaults {
            connections: 1_000_000,
            channels: 50,
            rate: 20.0,
            duration: 600.0,
            concurrency: 200,
            ..base
        },
        other => {
            bail!("unknown scenario {other:?}: idle, fanout, channels, publish, sse, poll, cluster, soak")
        }
    })
}

/// The server binary to start when neither --url nor --spawn-server is given.
fn default_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("crier")));
    [
        beside,
        Some("target/release/crier".into()),
        Some("target/debug/crier".into()),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.exists())
    .unwrap_or_else(|| "target/release/crier".into())
}

impl Opts {
    /// Where the server comes from, with `fsync` for a started one.
    pub(crate) fn server(&self, fsync: Option<String>) -> Server {
        match &self.url {
            Some(url) if self.spawn_server.is_none() => Server::Existing {
                url: url.clone(),
                pids: self.server_pids.clone(),
                udp: self.udp,
            },
            _ => Server::Spawn(SpawnSpec {
                binary: self.spawn_server.clone().unwrap_or_else(default_binary),
                fsync,
                workers: self.server_workers,
                log_filter: self.server_log.clone(),
                extra_args: self.server_args.clone(),
                data_parent: self.data_parent.clone(),
            }),
        }
    }

    /// Whether this run starts its own server.
    pub(crate) fn spawns(&self) -> bool {
        self.url.is_none() || self.spawn_server.is_some()
    }

    /// The run for `scenario` with these options over its defaults.
    ///
    /// # Errors
    /// An unknown scenario or options that contradict each other.
    pub(crate) fn spec(&self, scenario: &str) -> anyhow::Result<RunSpec> {
        let d = defaults(scenario)?;
        let channels = self.channels.unwrap_or(d.channels).max(1);
        let transport = self.transport.unwrap_or(d.transport);
        let via = self.publisher.unwrap_or(Via::Http);
        let subs_per_conn = self.subs_per_conn.unwrap_or(d.subs_per_conn).max(1);
        if self.target == Target::Nchan {
            if via == Via::Udp {
                bail!("Nchan has no UDP ingest; use --publisher http");
            }
            if subs_per_conn > 1 {
                bail!("with --target nchan each connection subscribes to one channel (--subs-per-conn 1)");
            }
        }
        let messages = match self.messages {
            Some(m) => m,
            // idle: one message per channel, whatever the channel count.
            None if scenario == "idle" => channels as u64,
            None => d.messages,
        };
        Ok(RunSpec {
            scenario: scenario.to_string(),
            target: self.target,
            transport,
            via,
            server: self.server(self.fsync.clone()),
            app_id: self.app_id.clone(),
            app_key: self.app_key.clone(),
            app_secret: self.app_secret.clone(),
            connections: self.connections.unwrap_or(d.connections),
            channels,
            subs_per_conn,
            rate: self.rate.unwrap_or(d.rate),
            messages,
            duration_secs: self.duration.unwrap_or(d.duration).max(0.1),
            concurrency: self.concurrency.unwrap_or(d.concurrency).max(1),
            batch: self.batch.unwrap_or(1).max(1),
            payload_bytes: self.payload_bytes.unwrap_or(64),
            hold_secs: self.hold.unwrap_or(d.hold),
            drain_secs: self.drain.unwrap_or(10.0),
            source_addrs: self.source_addrs.clamp(1, 254),
            workers: self.workers,
            connect_concurrency: self.connect_concurrency.max(1),
            connect_timeout_secs: self.connect_timeout,
            poll_timeout_secs: self.poll_timeout.unwrap_or(30),
            progress: !self.quiet,
        })
    }
}
