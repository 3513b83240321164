//! `crier-bench smoke`: a few hundred connections for a few seconds over every path
//! (WebSocket fan-out, many channels with worker processes, HTTP publish, SSE,
//! long-poll) against one server, and, when the tool starts its servers, over two
//! nodes sharing a redis-server of its own (cross-node delivery through the Redis
//! broker). It checks delivery — nothing missing, duplicated or
//! out of order, every expected message in — and never speed.

use crate::cli::Opts;
use crate::cluster::ClusterSpec;
use crate::net::{Endpoint, HttpConn};
use crate::plan::Transport;
use crate::report::Report;
use crate::run::{self, RunSpec, Server};
use crate::spawn;
use bytes::Bytes;
use hyper::Method;
use std::time::Duration;

/// How one part ended.
enum Outcome {
    Ran(Box<Report>),
    Failed(String),
}

/// Runs every part; true when every part ran and passed. A part whose endpoint is
/// missing fails: a transport that answers 404 is broken, not optional.
///
/// # Errors
/// When the server cannot be started.
pub(crate) async fn run(opts: &Opts) -> anyhow::Result<bool> {
    let mut spawned = None;
    let server = match opts.server(opts.fsync.clone()) {
        Server::Spawn(s) => {
            let started = spawn::start(&s).await?;
            let server = Server::Existing {
                url: format!("http://{}", started.addr),
                pids: vec![started.pid],
                udp: started.udp,
            };
            spawned = Some(started);
            server
        }
        existing => existing,
    };
    let Server::Existing { url, .. } = &server else {
        unreachable!("replaced above")
    };
    let url = url.clone();
    let mut outcomes: Vec<(&str, Outcome)> = Vec::new();
    for (name, spec) in parts(opts, &server)? {
        let probe = match spec.transport {
            Transport::Sse => Some(format!("/app/{}/sse?channels=smoke-probe", opts.app_key)),
            Transport::Poll => Some(format!(
                "/app/{}/poll?channels=smoke-probe&timeout=0",
                opts.app_key
            )),
            Transport::Ws => None,
        };
        if let Some(path) = probe {
            if let Ok(404) = status_of(&url, &path).await {
                let why = format!("GET {path} answered 404: the server has no {name} endpoint");
                outcomes.push((name, Outcome::Failed(why)));
                continue;
            }
        }
        let outcome = match run::run(&spec).await {
            Ok(report) => {
                if !opts.json {
                    println!("{}", report.human());
                }
                Outcome::Ran(Box::new(report))
            }
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        outcomes.push((name, outcome));
    }
    if let Some(mut s) = spawned {
        if !s.alive() {
            outcomes.push((
                "server",
                Outcome::Failed(format!("the server exited:\n{}", s.log_tail())),
            ));
        }
        s.stop().await;
    }
    Ok(summarize(&outcomes, opts.json))
}

fn summarize(outcomes: &[(&str, Outcome)], json: bool) -> bool {
    let mut all_ok = true;
    let mut reports = Vec::new();
    println!("== smoke summary");
    for (name, outcome) in outcomes {
        let line = match outcome {
            Outcome::Ran(r) if r.ok => format!(
                "ok       {name}: {} of {} deliveries, {} connections",
                r.delivery.delivered, r.delivery.expected, r.connections.held
            ),
            Outcome::Ran(r) => {
                all_ok = false;
                format!("FAILED   {name}: {}", r.problems.join("; "))
            }
            Outcome::Failed(e) => {
                all_ok = false;
                format!("FAILED   {name}: {e}")
            }
        };
        println!("{line}");
        if let Outcome::Ran(r) = outcome {
            reports.push(r.clone());
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    }
    println!("smoke: {}", if all_ok { "PASSED" } else { "FAILED" });
    all_ok
}

/// The parts: small sizes, bounded by message count, generous drain time.
fn parts(opts: &Opts, server: &Server) -> anyhow::Result<Vec<(&'static str, RunSpec)>> {
    let base = |scenario: &str| -> anyhow::Result<RunSpec> {
        let mut s = opts.spec(scenario)?;
        s.server = server.clone();
        s.duration_secs = 20.0;
        s.drain_secs = 10.0;
        s.hold_secs = 0.0;
        s.scenario = format!("smoke {scenario}");
        Ok(s)
    };
    let mut fanout = base("fanout")?;
    (
        fanout.connections,
        fanout.channels,
        fanout.rate,
        fanout.messages,
    ) = (200, 1, 100.0, 100);
    let mut channels = base("channels")?;
    (
        channels.connections,
        channels.channels,
        channels.subs_per_conn,
    ) = (300, 100, 2);
    (channels.messages, channels.rate, channels.concurrency) = (500, 0.0, 16);
    // Two worker processes: exercises the re-executed workers and their reports.
    channels.workers = 2;
    let mut publish = base("publish")?;
    (
        publish.connections,
        publish.channels,
        publish.messages,
        publish.concurrency,
    ) = (50, 10, 1_000, 10);
    publish.batch = 1;
    let mut sse = base("sse")?;
    (
        sse.connections,
        sse.channels,
        sse.messages,
        sse.rate,
        sse.concurrency,
    ) = (100, 10, 200, 0.0, 10);
    let mut poll = base("poll")?;
    (poll.connections, poll.channels, poll.messages, poll.rate) = (100, 10, 200, 200.0);
    poll.poll_timeout_secs = 5;
    let mut parts = vec![
        ("ws fanout", fanout),
        ("ws channels", channels),
        ("http publish", publish),
        ("sse", sse),
        ("poll", poll),
    ];
    // Two nodes of the same binary on a redis-server of the run's own: every channel
    // has subscribers on both nodes and is published on one of them.
    if let Server::Spawn(node) = opts.server(opts.fsync.clone()) {
        let mut cluster = base("cluster")?;
        cluster.server = Server::Cluster(ClusterSpec {
            nodes: 2,
            redis_binary: "redis-server".into(),
            node,
        });
        (
            cluster.connections,
            cluster.channels,
            cluster.messages,
            cluster.rate,
            cluster.concurrency,
        ) = (200, 10, 1_000, 0.0, 10);
        parts.push(("cluster", cluster));
    }
    Ok(parts)
}

/// The status of a GET, without reading the body (an event stream never ends).
async fn status_of(url: &str, path: &str) -> anyhow::Result<u16> {
    let endpoint = Endpoint::parse(url)?;
    let mut conn = HttpConn::open(None, &endpoint).await?;
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        conn.send(Method::GET, path, &[], Bytes::new()),
    )
    .await??;
    Ok(resp.status().as_u16())
}
