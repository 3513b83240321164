//! One benchmark run, start to finish: check the limits, start or find the server,
//! open and subscribe the connections (in workers), measure memory, publish, wait for
//! the deliveries, collect the workers' reports and the server's CPU time.

use crate::cluster::{self, ClusterSpec};
use crate::hist::{self, Summary};
use crate::limits;
use crate::net::Endpoint;
use crate::plan::{Finish, FromWorker, Target, ToWorker, Transport, WorkerPlan, WorkerReport};
use crate::pool::Pool;
use crate::procfs;
use crate::publish::{self, PubPlan, Via};
use crate::report::{ClusterUse, Connections, Delivery, ProcessUse, Publishing, Report, ServerUse};
use crate::spawn::{self, SpawnSpec};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where the server comes from.
#[derive(Debug, Clone)]
pub(crate) enum Server {
    Spawn(SpawnSpec),
    Existing {
        url: String,
        /// Empty: found from the listening port.
        pids: Vec<u32>,
        udp: Option<SocketAddr>,
    },
    /// A redis-server and N Crier nodes on it, started for the run.
    Cluster(ClusterSpec),
}

/// The servers a run measures: one, or every node of a cluster.
struct Servers {
    urls: Vec<String>,
    /// Per node, its processes (nginx: master and workers; may be empty when unknown).
    pids: Vec<Vec<u32>>,
    /// Each node's UDP ingest, where it has one.
    udp: Vec<SocketAddr>,
    /// The cluster's redis-server.
    redis_pid: Option<u32>,
}

impl Servers {
    fn one(url: String, pids: Vec<u32>, udp: Option<SocketAddr>) -> Self {
        Self {
            urls: vec![url],
            pids: vec![pids],
            udp: udp.into_iter().collect(),
            redis_pid: None,
        }
    }

    /// Every process of every node, for the totals.
    fn all_pids(&self) -> Vec<u32> {
        self.pids.iter().flatten().copied().collect()
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    pub(crate) scenario: String,
    pub(crate) target: Target,
    pub(crate) transport: Transport,
    pub(crate) via: Via,
    pub(crate) server: Server,
    pub(crate) app_id: String,
    pub(crate) app_key: String,
    pub(crate) app_secret: String,
    pub(crate) connections: usize,
    pub(crate) channels: usize,
    pub(crate) subs_per_conn: usize,
    pub(crate) rate: f64,
    pub(crate) messages: u64,
    pub(crate) duration_secs: f64,
    pub(crate) concurrency: usize,
    pub(crate) batch: usize,
    pub(crate) payload_bytes: usize,
    /// How long to keep the connections idle before measuring memory.
    pub(crate) hold_secs: f64,
    pub(crate) drain_secs: f64,
    pub(crate) source_addrs: usize,
    /// 0: one in-process worker if the open-file limit allows, else as many child
    /// processes as it requires. N: N child processes.
    pub(crate) workers: usize,
    pub(crate) connect_concurrency: usize,
    pub(crate) connect_timeout_secs: f64,
    pub(crate) poll_timeout_secs: u64,
    pub(crate) progress: bool,
}

/// Runs one scenario and returns its report.
///
/// # Errors
/// Limits too low, a server that does not start, or a connect phase that never ends.
pub(crate) async fn run(spec: &RunSpec) -> anyhow::Result<Report> {
    let fd_limit = limits::raise_nofile();
    let n = spec.connections as u64;
    let workers = if spec.workers == 0 {
        n.div_ceil(limits::conns_per_process(fd_limit)).max(1) as usize
    } else {
        spec.workers
    };
    let in_process = spec.workers == 0 && workers == 1;
    limits::check_worker_fds(n.div_ceil(workers as u64), fd_limit)?;
    limits::check_ports(n, spec.source_addrs as u64)?;
    match &spec.server {
        Server::Spawn(s) => {
            let mut server = spawn::start(s).await?;
            let url = format!("http://{}", server.addr);
            let pids = vec![server.pid];
            let servers = Servers::one(url, pids.clone(), server.udp);
            let result = match limits::check_server_fds(&pids, n) {
                Ok(()) => measure(spec, &servers, workers, in_process).await,
                Err(e) => Err(e),
            };
            let result = result.map(|mut r| {
                if !server.alive() {
                    r.problems.push("the server exited during the run".into());
                    r.ok = false;
                }
                r.fsync = s.fsync.clone();
                r
            });
            let tail = server.log_tail();
            if result.as_ref().map_or(true, |r| !r.ok) && !tail.trim().is_empty() {
                eprintln!("crier-bench: end of the server log:\n{tail}");
            }
            server.stop().await;
            result
        }
        Server::Existing { url, pids, udp } => {
            let pids = if pids.is_empty() {
                let port = Endpoint::parse(url)?.addr.port();
                procfs::pids_listening_on(port).unwrap_or_else(|e| {
                    eprintln!("crier-bench: {e:#}; server memory and CPU will not be reported");
                    Vec::new()
                })
            } else {
                pids.clone()
            };
            limits::check_server_fds(&pids, n)?;
            let servers = Servers::one(url.clone(), pids, *udp);
            measure(spec, &servers, workers, in_process).await
        }
        Server::Cluster(c) => {
            let mut cluster = cluster::start(c).await?;
            let nodes = cluster.nodes.len() as u64;
            let servers = Servers {
                urls: cluster
                    .nodes
                    .iter()
                    .map(|s| format!("http://{}", s.addr))
                    .collect(),
                pids: cluster.nodes.iter().map(|s| vec![s.pid]).collect(),
                udp: cluster.nodes.iter().filter_map(|s| s.udp).collect(),
                redis_pid: Some(cluster.redis.pid),
            };
            // Each node holds about 1/N of the connections.
            let fds = servers
                .pids
                .iter()
                .try_for_each(|p| limits::check_server_fds(p, n.div_ceil(nodes)));
            let result = match fds {
                Ok(()) => measure(spec, &servers, workers, in_process).await,
                Err(e) => Err(e),
            };
            let result = result.map(|mut r| {
                for (i, node) in cluster.nodes.iter_mut().enumerate() {
                    if !node.alive() {
                        r.problems
                            .push(format!("cluster node {i} exited during the run"));
                        r.ok = false;
                    }
                }
                if !cluster.redis.alive() {
                    r.problems.push("redis-server exited during the run".into());
                    r.ok = false;
                }
                if let Some(u) = &mut r.cluster {
                    u.prefix.clone_from(&cluster.prefix);
                }
                r.fsync = c.node.fsync.clone();
                r
            });
            if result.as_ref().map_or(true, |r| !r.ok) {
                for (i, node) in cluster.nodes.iter().enumerate() {
                    let tail = node.log_tail();
                    if !tail.trim().is_empty() {
                        eprintln!("crier-bench: end of node {i}'s log:\n{tail}");
                    }
                }
                let tail = cluster.redis.log_tail();
                eprintln!("crier-bench: end of redis-server's log:\n{tail}");
            }
            cluster.stop().await;
            result
        }
    }
}

/// What the coordinator knows about its workers as their messages come in.
struct Workers {
    pool: Pool,
    ready: Vec<bool>,
    /// When each worker's last connection finished, Unix micros.
    last_us: Vec<u64>,
    reports: Vec<Option<WorkerReport>>,
    connected: Vec<u64>,
    failed: Vec<u64>,
    received: Vec<u64>,
}

impl Workers {
    fn new(pool: Pool) -> Self {
        let n = pool.len();
        Self {
            pool,
            ready: vec![false; n],
            last_us: vec![0; n],
            reports: vec![None; n],
            connected: vec![0; n],
            failed: vec![0; n],
            received: vec![0; n],
        }
    }

    /// Handles messages until `until` holds or `deadline` passes; false on timeout.
    async fn pump(
        &mut self,
        deadline: Instant,
        until: impl Fn(&Self) -> bool,
        mut tick: impl FnMut(&Self),
    ) -> bool {
        let mut ticker = tokio::time::interval(Duration::from_secs(2));
        ticker.tick().await;
        while !until(self) {
            tokio::select! {
                msg = self.pool.recv() => match msg {
                    Some((i, m)) => self.take(i, m),
                    None => return until(self),
                },
                _ = ticker.tick() => tick(self),
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
        true
    }

    fn take(&mut self, i: usize, msg: FromWorker) {
        match msg {
            FromWorker::Progress {
                connected,
                failed,
                received,
            } => {
                self.connected[i] = connected;
                self.failed[i] = failed;
                self.received[i] = received;
            }
            FromWorker::Ready {
                connected,
                failed,
                last_us,
            } => {
                self.ready[i] = true;
                self.last_us[i] = last_us;
                self.connected[i] = connected;
                self.failed[i] = failed;
            }
            FromWorker::Report(r) => {
                self.ready[i] = true;
                self.reports[i] = Some(*r);
            }
        }
    }

    fn all_ready(&self) -> bool {
        self.ready.iter().all(|&r| r)
    }

    fn all_reported(&self) -> bool {
        self.reports.iter().all(Option::is_some)
    }
}

fn split(spec: &RunSpec, urls: &[String], prefix: &str, workers: usize) -> Vec<WorkerPlan> {
    let n = spec.connections;
    (0..workers)
        .map(|w| WorkerPlan {
            target: spec.target,
            transport: spec.transport,
            urls: urls.to_vec(),
            publishers: spec.concurrency,
            app_key: spec.app_key.clone(),
            prefix: prefix.to_string(),
            conn_start: n * w / workers,
            conn_end: n * (w + 1) / workers,
            channels: spec.channels,
            subs_per_conn: spec.subs_per_conn,
            source_addrs: spec.source_addrs,
            connect_concurrency: spec.connect_concurrency.div_ceil(workers).max(1),
            connect_timeout_secs: spec.connect_timeout_secs,
            poll_timeout_secs: spec.poll_timeout_secs,
        })
        .collect()
}

async fn measure(
    spec: &RunSpec,
    servers: &Servers,
    workers: usize,
    in_process: bool,
) -> anyhow::Result<Report> {
    let pids = &servers.all_pids()[..];
    let url = servers.urls.join(", ");
    let start = Instant::now();
    let log = |what: String| {
        if spec.progress {
            eprintln!("[{:>7.1}s] {what}", start.elapsed().as_secs_f64());
        }
    };
    if spec.via == Via::Udp && servers.udp.len() < servers.urls.len() {
        bail!(
            "--publisher udp needs the server's UDP ingest address: pass --udp ADDR, or spawn a server \
             that prints a \"UDP ingest: ADDR\" line (this one printed none: UDP ingest off or not built)"
        );
    }
    let tool_cpu0 = procfs::self_cpu_secs();
    let start_us = crate::payload::now_micros();
    let server_cpu0 = procfs::server_cpu_secs(pids);
    let node_cpu0 = cpu_of_nodes(servers);
    let rss_idle = procfs::server_memory_kib(pids);
    let prefix = format!("bench{}-", crate::payload::now_micros() % 1_000_000_000);
    log(format!(
        "{}: {} {:?} connections to {url} ({} worker process(es){})",
        spec.scenario,
        spec.connections,
        spec.transport,
        workers,
        if in_process { ", in-process" } else { "" }
    ));
    let pool = Pool::start(split(spec, &servers.urls, &prefix, workers), in_process).await?;
    let mut w = Workers::new(pool);
    let n = spec.connections as f64;
    let phase = Duration::from_secs_f64(spec.connect_timeout_secs + n / 100.0 + 10.0);
    let connected = w
        .pump(start + phase, Workers::all_ready, |w| {
            log(format!(
                "connecting: {} subscribed, {} failed of {}",
                w.connected.iter().sum::<u64>(),
                w.failed.iter().sum::<u64>(),
                spec.connections
            ))
        })
        .await;
    if !connected {
        bail!(
            "the connect phase did not finish within {} s",
            phase.as_secs()
        );
    }
    // From the start to the last connection done, as the workers timed it.
    let last_us = w.last_us.iter().copied().max().unwrap_or(0);
    let connect_secs = if last_us > start_us {
        (last_us - start_us) as f64 / 1e6
    } else {
        start.elapsed().as_secs_f64()
    };
    let held: u64 = w.connected.iter().sum();
    log(format!(
        "{held} connections subscribed in {connect_secs:.1} s"
    ));
    if spec.hold_secs > 0.0 {
        log(format!("holding them idle for {} s", spec.hold_secs));
        let until = Instant::now() + Duration::from_secs_f64(spec.hold_secs);
        w.pump(until, |_| false, |_| {}).await;
    }
    let rss_connected = procfs::server_memory_kib(pids);
    let server_cpu_pub0 = procfs::server_cpu_secs(pids);
    let node_cpu_pub0 = cpu_of_nodes(servers);
    let pub_plan = Arc::new(PubPlan {
        target: spec.target,
        via: spec.via,
        endpoints: servers
            .urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<anyhow::Result<_>>()?,
        udp: servers.udp.clone(),
        app_id: spec.app_id.clone(),
        app_key: spec.app_key.clone(),
        app_secret: spec.app_secret.clone(),
        prefix: prefix.clone(),
        channels: spec.channels,
        rate: spec.rate,
        concurrency: spec.concurrency,
        messages: spec.messages,
        duration: Duration::from_secs_f64(spec.duration_secs),
        batch: spec.batch,
        payload_bytes: spec.payload_bytes,
    });
    let pub_start_us = crate::payload::now_micros();
    let published = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish::run(pub_plan, published.clone()));
    let pub_deadline = Instant::now() + Duration::from_secs_f64(spec.duration_secs + 30.0);
    w.pump(
        pub_deadline,
        |_| publisher.is_finished(),
        |w| {
            log(format!(
                "publishing: {} accepted, {} delivered",
                published.load(Ordering::Relaxed),
                w.received.iter().sum::<u64>()
            ))
        },
    )
    .await;
    let pub_result = publisher.await.context("publisher task")?;
    log(format!(
        "published {} messages in {:.1} s; waiting for deliveries",
        pub_result.published.iter().sum::<u64>(),
        pub_result.elapsed.as_secs_f64()
    ));
    let finish = Finish {
        published: pub_result.published.clone(),
        drain_secs: spec.drain_secs,
    };
    w.pool.broadcast(&ToWorker::Finish(finish)).await;
    let report_deadline = Instant::now() + Duration::from_secs_f64(spec.drain_secs + 60.0);
    let reported = w
        .pump(report_deadline, Workers::all_reported, |w| {
            log(format!(
                "draining: {} delivered",
                w.received.iter().sum::<u64>()
            ))
        })
        .await;
    let server_cpu_end = procfs::server_cpu_secs(pids);
    let node_cpu_end = cpu_of_nodes(servers);
    let rss_end = procfs::server_memory_kib(pids);
    let reports: Vec<WorkerReport> = w.reports.iter().flatten().cloned().collect();
    w.pool.shutdown().await;
    if !reported {
        bail!(
            "workers did not report within {} s of the end of publishing",
            spec.drain_secs + 60.0
        );
    }
    let child_cpu: f64 = reports.iter().filter_map(|r| r.cpu_secs).sum();
    let mut report = Report {
        scenario: spec.scenario.clone(),
        target: format!("{:?}", spec.target).to_lowercase(),
        transport: format!("{:?}", spec.transport).to_lowercase(),
        publisher: format!("{:?}", spec.via).to_lowercase(),
        fsync: None,
        server_pids: pids.to_vec(),
        workers,
        tool_cpu_secs: procfs::self_cpu_secs() - tool_cpu0 + child_cpu,
        ..Report::default()
    };
    report.connections = Connections {
        requested: spec.connections as u64,
        held,
        failed: reports.iter().map(|r| r.failed).sum(),
        dropped: reports.iter().map(|r| r.dropped).sum(),
        channels: spec.channels as u64,
        subscriptions_per_connection: spec.subs_per_conn.min(spec.channels) as u64,
        source_addresses: spec.source_addrs as u64,
        connect_secs,
        connects_per_sec: held as f64 / connect_secs.max(1e-9),
    };
    report.server = ServerUse {
        rss_idle_kib: rss_idle,
        rss_connected_kib: rss_connected,
        rss_end_kib: rss_end,
        rss_per_connection_bytes: match (rss_idle, rss_connected) {
            (Some(a), Some(b)) if held > 0 => Some((b as f64 - a as f64) * 1024.0 / held as f64),
            _ => None,
        },
        cpu_total_secs: server_cpu_end.zip(server_cpu0).map(|(b, a)| b - a),
        cpu_publish_secs: server_cpu_end.zip(server_cpu_pub0).map(|(b, a)| b - a),
    };
    let pub_secs = pub_result.elapsed.as_secs_f64().max(1e-9);
    let messages: u64 = pub_result.published.iter().sum();
    report.publish = Publishing {
        messages,
        requests: pub_result.requests,
        errors: pub_result.errors,
        secs: pub_secs,
        per_sec: messages as f64 / pub_secs,
        latency: Summary::of(&pub_result.latency),
    };
    report.delivery = delivery(&reports, pub_start_us);
    if servers.redis_pid.is_some() {
        report.cluster = Some(cluster_use(
            servers,
            [&node_cpu0, &node_cpu_pub0, &node_cpu_end],
            messages,
        ));
    }
    report.errors = merge_errors(&reports, &pub_result.error_kinds);
    report.judge();
    Ok(report)
}

fn delivery(reports: &[WorkerReport], pub_start_us: u64) -> Delivery {
    let mut latency = hist::new();
    for r in reports {
        r.latency.add_to(&mut latency);
    }
    let last = reports
        .iter()
        .map(|r| r.last_delivery_us)
        .max()
        .unwrap_or(0);
    let secs = last.saturating_sub(pub_start_us) as f64 / 1e6;
    let delivered: u64 = reports.iter().map(|r| r.received).sum();
    Delivery {
        expected: reports.iter().map(|r| r.expected).sum(),
        delivered,
        secs,
        per_sec: if secs > 0.0 {
            delivered as f64 / secs
        } else {
            0.0
        },
        latency: Summary::of(&latency),
        missing: reports.iter().map(|r| r.missing).sum(),
        duplicates: reports.iter().map(|r| r.duplicates).sum(),
        out_of_order: reports.iter().map(|r| r.out_of_order).sum(),
        gaps: reports.iter().map(|r| r.gaps).sum(),
        unexpected: reports.iter().map(|r| r.unexpected).sum(),
        cross_node: reports.iter().map(|r| r.cross_node).sum(),
        cross_node_per_sec: if secs > 0.0 {
            reports.iter().map(|r| r.cross_node).sum::<u64>() as f64 / secs
        } else {
            0.0
        },
    }
}

/// CPU seconds of each node, then of the redis-server (last, when there is one).
fn cpu_of_nodes(servers: &Servers) -> Vec<Option<f64>> {
    servers
        .pids
        .iter()
        .map(|p| procfs::server_cpu_secs(p))
        .chain(servers.redis_pid.map(procfs::cpu_secs))
        .collect()
}

/// Each node's and Redis's CPU over the run (`[start, publishing start, end]`
/// readings from [`cpu_of_nodes`]), and per 1,000 messages published.
fn cluster_use(servers: &Servers, cpu: [&[Option<f64>]; 3], messages: u64) -> ClusterUse {
    let [start, publish, end] = cpu;
    let one = |i: usize, name: String, pid: u32| {
        let delta = |a: &[Option<f64>]| end[i].zip(a[i]).map(|(b, a)| b - a);
        let cpu_publish_secs = delta(publish);
        ProcessUse {
            name,
            pid,
            rss_end_kib: procfs::rss_kib(pid),
            cpu_total_secs: delta(start),
            cpu_publish_secs,
            cpu_per_1000_messages: cpu_publish_secs
                .filter(|_| messages > 0)
                .map(|s| s * 1000.0 / messages as f64),
        }
    };
    let nodes = servers
        .pids
        .iter()
        .enumerate()
        .map(|(i, p)| {
            one(
                i,
                format!("node {i} ({})", servers.urls[i]),
                p.first().copied().unwrap_or(0),
            )
        })
        .collect();
    let redis = servers
        .redis_pid
        .map(|pid| one(servers.pids.len(), "redis-server".into(), pid));
    ClusterUse {
        nodes,
        redis,
        prefix: String::new(),
    }
}

fn merge_errors(reports: &[WorkerReport], publish: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut all: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (e, n) in reports.iter().flat_map(|r| r.errors.iter()) {
        *all.entry(e.clone()).or_default() += n;
    }
    for (e, n) in publish {
        *all.entry(format!("publish: {e}")).or_default() += n;
    }
    let mut all: Vec<(String, u64)> = all.into_iter().collect();
    all.sort_by_key(|k| std::cmp::Reverse(k.1));
    all.truncate(10);
    all
}
