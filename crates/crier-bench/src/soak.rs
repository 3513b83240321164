//! `crier-bench soak`: churns WebSocket connections and subscriptions for a bounded
//! time (connect, subscribe, receive, subscribe and unsubscribe again, close) while a
//! publisher keeps the channels moving, and samples the server's memory, open
//! files and runtime tasks at the start, at the peak and after the churn. A server
//! that leaks per connection or per subscription ends visibly above its baseline.

use crate::net::{self, Endpoint, HttpConn};
use crate::procfs;
use crate::publish::{self, PubPlan};
use crate::run::{RunSpec, Server};
use crate::spawn;
use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Channel names of the soak: `cache-soak-0` .. `cache-soak-{m-1}`. Cache channels
/// hand each new subscriber their last message, so a cycle receives at once while the
/// publisher stays slow: every publish adds to history's memory (fjall's memtable, up
/// to 64 MiB before a flush), which would hide what connections leave behind.
const PREFIX: &str = "cache-soak-";
/// Connections churned before the baseline is taken, so that what the server
/// allocates once (per-thread caches, channel entries, history tips) is in it.
const WARMUP_CONNECTIONS: u64 = 5_000;
/// How long the server gets after the churn to close, free and return memory
/// (jemalloc returns dirty pages to the OS after about 10 s).
const SETTLE: Duration = Duration::from_secs(45);
/// RSS the server may keep above its baseline at the end.
const RSS_TOLERANCE_KIB: u64 = 8 * 1024;

/// One sample of the server.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Sample {
    pub(crate) rss_kib: u64,
    pub(crate) open_files: u64,
    /// Tasks alive in the server's runtime (`crier_runtime_alive_tasks`).
    pub(crate) tasks: u64,
    /// Open client connections (`crier_connections`).
    pub(crate) connections: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct SoakReport {
    pub(crate) churners: usize,
    pub(crate) channels: usize,
    pub(crate) publish_rate: f64,
    pub(crate) secs: f64,
    /// Connections that went through the whole cycle.
    pub(crate) cycles: u64,
    pub(crate) cycles_per_sec: f64,
    pub(crate) failed: u64,
    pub(crate) first_errors: Vec<String>,
    pub(crate) messages_published: u64,
    /// Server before any connection.
    pub(crate) start: Sample,
    /// Server after the warm-up churn had settled: what the end is judged against.
    pub(crate) baseline: Sample,
    /// Highest value of each figure during the churn (not necessarily one moment).
    pub(crate) peak: Sample,
    pub(crate) end: Sample,
    pub(crate) ok: bool,
    pub(crate) problems: Vec<String>,
}

/// Counters shared by the churning tasks.
#[derive(Default)]
struct Churn {
    started: AtomicU64,
    cycles: AtomicU64,
    failed: AtomicU64,
    /// The first few distinct failure reasons.
    errors: Mutex<Vec<String>>,
}

impl Churn {
    fn note(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 5 && !v.contains(&e) {
                v.push(e);
            }
        }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Runs the soak and prints its report; true when the server came back to baseline.
///
/// # Errors
/// The server cannot be started or measured.
pub(crate) async fn run(spec: &RunSpec, json: bool) -> anyhow::Result<bool> {
    crate::limits::raise_nofile();
    let (url, pid, spawned) = match &spec.server {
        Server::Spawn(s) => {
            let started = spawn::start(s).await?;
            (
                format!("http://{}", started.addr),
                started.pid,
                Some(started),
            )
        }
        Server::Existing { url, pids, .. } => {
            let pid = match pids.first() {
                Some(p) => *p,
                None => *procfs::pids_listening_on(Endpoint::parse(url)?.addr.port())?
                    .first()
                    .context("no server process found")?,
            };
            (url.clone(), pid, None)
        }
        Server::Cluster(_) => bail!("the soak runs against one server"),
    };
    let result = soak(spec, &url, pid).await;
    if let Some(mut s) = spawned {
        let alive = s.alive();
        if !alive || result.as_ref().map_or(true, |r| !r.ok) {
            eprintln!("crier-bench: end of the server log:\n{}", s.log_tail());
        }
        s.stop().await;
        if !alive {
            bail!("the server exited during the soak");
        }
    }
    let report = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", human(&report));
    }
    Ok(report.ok)
}

async fn soak(spec: &RunSpec, url: &str, pid: u32) -> anyhow::Result<SoakReport> {
    let endpoint = Endpoint::parse(url)?;
    let mut report = SoakReport {
        churners: spec.concurrency,
        channels: spec.channels,
        publish_rate: spec.rate,
        ..SoakReport::default()
    };
    report.start = sample(&endpoint, pid).await?;

    let published = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish::run(
        Arc::new(PubPlan {
            target: spec.target,
            via: spec.via,
            endpoints: vec![endpoint.clone()],
            udp: Vec::new(),
            app_id: spec.app_id.clone(),
            app_key: spec.app_key.clone(),
            app_secret: spec.app_secret.clone(),
            prefix: PREFIX.into(),
            channels: spec.channels,
            rate: spec.rate,
            concurrency: spec.channels.min(16),
            messages: 0,
            // Outlives the churn; aborted when the churn ends.
            duration: Duration::from_secs_f64(spec.duration_secs + 3600.0),
            batch: 1,
            payload_bytes: spec.payload_bytes,
        }),
        published.clone(),
    ));

    // Warm-up, then the baseline once it has settled.
    let warmup = churn(
        spec,
        &endpoint,
        WARMUP_CONNECTIONS,
        Duration::from_secs(120),
    )
    .await;
    report.failed += warmup.failed.load(Ordering::Relaxed);
    report.baseline = settle(&endpoint, pid, None).await?;
    progress(spec, &format!("baseline {}", line(&report.baseline)));

    let budget = spec.connections as u64;
    let limit = Duration::from_secs_f64(spec.duration_secs);
    let started = Instant::now();
    let churn_state = Arc::new(Churn::default());
    let tasks = spawn_churners(
        spec,
        &endpoint,
        churn_state.clone(),
        budget,
        started + limit,
    );
    let mut peak = report.baseline;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_progress = Instant::now();
    while !tasks.iter().all(|t| t.is_finished()) {
        ticker.tick().await;
        if let Ok(s) = sample(&endpoint, pid).await {
            peak = max(peak, s);
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            let c = churn_state.cycles.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            progress(
                spec,
                &format!(
                    "{secs:.0} s: {c} connections churned ({:.0}/s), {} failed; peak {}",
                    c as f64 / secs.max(0.001),
                    churn_state.failed.load(Ordering::Relaxed),
                    line(&peak)
                ),
            );
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    report.secs = started.elapsed().as_secs_f64();
    report.cycles = churn_state.cycles.load(Ordering::Relaxed);
    report.failed += churn_state.failed.load(Ordering::Relaxed);
    report.cycles_per_sec = report.cycles as f64 / report.secs.max(0.001);
    report.first_errors = warmup.errors();
    for e in churn_state.errors() {
        if !report.first_errors.contains(&e) {
            report.first_errors.push(e);
        }
    }
    report.peak = peak;
    // The publisher runs until the end is sampled: its connections are in the
    // baseline too.
    report.end = settle(&endpoint, pid, Some(&report.baseline)).await?;
    publisher.abort();
    report.messages_published = published.load(Ordering::Relaxed);
    judge(&mut report);
    Ok(report)
}

fn judge(r: &mut SoakReport) {
    let total = r.cycles + r.failed;
    // A busy loopback on 2 cores refuses an odd connect; a leak shows in the figures.
    if r.failed * 1000 > total.max(1) {
        r.problems
            .push(format!("{} of {total} connections failed", r.failed));
    }
    if r.cycles == 0 {
        r.problems.push("no connection completed a cycle".into());
    }
    let b = r.baseline;
    let e = r.end;
    if e.rss_kib > b.rss_kib + RSS_TOLERANCE_KIB {
        r.problems.push(format!(
            "RSS ended {} KiB above its baseline (tolerance {RSS_TOLERANCE_KIB} KiB)",
            e.rss_kib - b.rss_kib
        ));
    }
    if e.open_files > b.open_files {
        r.problems.push(format!(
            "{} more open files than at the baseline",
            e.open_files - b.open_files
        ));
    }
    if e.tasks > b.tasks {
        r.problems.push(format!(
            "{} more runtime tasks than at the baseline",
            e.tasks - b.tasks
        ));
    }
    if e.connections != 0 {
        r.problems
            .push(format!("{} connections still open", e.connections));
    }
    r.ok = r.problems.is_empty();
}

/// Churns `budget` connections (or until `limit`) with the soak's churner count.
async fn churn(spec: &RunSpec, endpoint: &Endpoint, budget: u64, limit: Duration) -> Arc<Churn> {
    let state = Arc::new(Churn::default());
    let tasks = spawn_churners(
        spec,
        endpoint,
        state.clone(),
        budget,
        Instant::now() + limit,
    );
    for t in tasks {
        let _ = t.await;
    }
    state
}

fn spawn_churners(
    spec: &RunSpec,
    endpoint: &Endpoint,
    state: Arc<Churn>,
    budget: u64,
    deadline: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..spec.concurrency.max(1))
        .map(|i| {
            let state = state.clone();
            let endpoint = endpoint.clone();
            let key = spec.app_key.clone();
            let (channels, sources) = (spec.channels.max(2), spec.source_addrs);
            tokio::spawn(async move {
                loop {
                    let n = state.started.fetch_add(1, Ordering::Relaxed);
                    if n >= budget || Instant::now() >= deadline {
                        break;
                    }
                    let src = net::source_ip(i + n as usize, sources);
                    let cycle = tokio::time::timeout(
                        Duration::from_secs(20),
                        cycle(&endpoint, src, &key, n as usize, channels),
                    )
                    .await;
                    match cycle {
                        Ok(Ok(())) => {
                            state.cycles.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            state.failed.fetch_add(1, Ordering::Relaxed);
                            state.note(format!("{e:#}"));
                        }
                        Err(_) => {
                            state.failed.fetch_add(1, Ordering::Relaxed);
                            state.note("a cycle took over 20 s".into());
                        }
                    }
                }
            })
        })
        .collect()
}

type Ws = WebSocketStream<TcpStream>;

/// One connection's life: connect, subscribe to a cache channel and receive its last
/// message (served from history), subscribe to and unsubscribe from a second channel,
/// close. Live messages that arrive meanwhile are read and ignored.
async fn cycle(
    endpoint: &Endpoint,
    src: std::net::IpAddr,
    key: &str,
    n: usize,
    channels: usize,
) -> anyhow::Result<()> {
    let stream = net::connect(Some(src), endpoint.addr)
        .await
        .context("TCP connect")?;
    let url = format!(
        "ws://{}/app/{key}?protocol=7&client=crier-bench&version=0.1",
        endpoint.host
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    expect(&mut ws, "pusher:connection_established", None).await?;
    let cached = format!("{PREFIX}{}", n % channels);
    subscribe(&mut ws, &cached).await?;
    // The cache channel's last message comes right after the subscription succeeded
    // (a cache miss only before the publisher's first round).
    loop {
        let text = next_text(&mut ws).await?;
        let value: serde_json::Value = serde_json::from_str(&text).context("frame is not JSON")?;
        if value["channel"].as_str() == Some(cached.as_str()) {
            let event = value["event"].as_str().unwrap_or("");
            if event == "pusher:cache_miss" || !event.starts_with("pusher") {
                break;
            }
        }
    }
    let other = format!("{PREFIX}{}", (n + 1) % channels);
    subscribe(&mut ws, &other).await?;
    let frame = serde_json::json!({"event": "pusher:unsubscribe", "data": {"channel": other}});
    ws.send(Message::text(frame.to_string())).await?;
    ws.close(None).await.context("close")?;
    // Read the server's close reply so the server, not us, ends the TCP connection.
    while let Some(Ok(_)) = ws.next().await {}
    Ok(())
}

async fn subscribe(ws: &mut Ws, channel: &str) -> anyhow::Result<()> {
    let frame = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
    ws.send(Message::text(frame.to_string())).await?;
    expect(ws, "pusher_internal:subscription_succeeded", Some(channel)).await
}

async fn expect(ws: &mut Ws, event: &str, channel: Option<&str>) -> anyhow::Result<()> {
    loop {
        let text = next_text(ws).await?;
        let value: serde_json::Value = serde_json::from_str(&text).context("frame is not JSON")?;
        let got = value["event"].as_str().unwrap_or("");
        if got == event && channel.is_none_or(|c| value["channel"].as_str() == Some(c)) {
            return Ok(());
        }
        if got == "pusher:error" || got == "pusher:subscription_error" {
            bail!("server said {text}");
        }
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(f))) => bail!("closed by the server: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("read"),
            None => bail!("connection ended"),
        }
    }
}

/// Samples until connections are gone and memory stops falling (or `SETTLE` passes).
/// With `baseline`, it also stops early once everything is back to it.
async fn settle(
    endpoint: &Endpoint,
    pid: u32,
    baseline: Option<&Sample>,
) -> anyhow::Result<Sample> {
    let deadline = Instant::now() + SETTLE;
    let mut last = sample(endpoint, pid).await?;
    let mut steady = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = sample(endpoint, pid).await?;
        let back = baseline.is_some_and(|b| {
            s.connections == 0
                && s.open_files <= b.open_files
                && s.tasks <= b.tasks
                && s.rss_kib <= b.rss_kib + RSS_TOLERANCE_KIB / 4
        });
        steady = if s.connections == 0 && s.rss_kib >= last.rss_kib {
            steady + 1
        } else {
            0
        };
        last = s;
        if back || steady >= 12 {
            break;
        }
    }
    Ok(last)
}

async fn sample(endpoint: &Endpoint, pid: u32) -> anyhow::Result<Sample> {
    let rss_kib = procfs::rss_kib(pid).context("server process is gone")?;
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let mut conn = HttpConn::open(None, endpoint).await?;
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        conn.call(Method::GET, "/metrics", &[], Bytes::new()),
    )
    .await
    .context("/metrics timed out")??;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    Ok(Sample {
        rss_kib,
        open_files,
        tasks: gauge(&text, "crier_runtime_alive_tasks"),
        connections: gauge(&text, "crier_connections"),
    })
}

/// The value of a gauge in Prometheus text, summed over its series (`crier_connections`
/// has one per transport and app).
fn gauge(text: &str, name: &str) -> u64 {
    let sum: f64 = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let n = series.split_once('{').map_or(series, |(n, _)| n);
            (n == name).then(|| v.trim().parse::<f64>().ok())?
        })
        .sum();
    sum.max(0.0) as u64
}

fn max(a: Sample, b: Sample) -> Sample {
    Sample {
        rss_kib: a.rss_kib.max(b.rss_kib),
        open_files: a.open_files.max(b.open_files),
        tasks: a.tasks.max(b.tasks),
        connections: a.connections.max(b.connections),
    }
}

fn line(s: &Sample) -> String {
    format!(
        "RSS {:.1} MiB, {} open files, {} tasks, {} connections",
        s.rss_kib as f64 / 1024.0,
        s.open_files,
        s.tasks,
        s.connections
    )
}

fn progress(spec: &RunSpec, text: &str) {
    if spec.progress {
        eprintln!("soak: {text}");
    }
}

fn human(r: &SoakReport) -> String {
    let mut out = format!(
        "== soak: {} connections churned in {:.0} s ({:.0}/s) by {} churners over {} channels, {} failed; {} messages published\n",
        r.cycles, r.secs, r.cycles_per_sec, r.churners, r.channels, r.failed, r.messages_published
    );
    for (name, s) in [
        ("start", &r.start),
        ("baseline", &r.baseline),
        ("peak", &r.peak),
        ("end", &r.end),
    ] {
        out.push_str(&format!("{name:>9}: {}\n", line(s)));
    }
    for e in &r.first_errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    if r.ok {
        out.push_str("soak: PASSED (back to baseline)");
    } else {
        out.push_str(&format!("soak: FAILED: {}", r.problems.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gauges_summed_over_their_series() {
        let text = "# TYPE crier_connections gauge\ncrier_connections{transport=\"ws\",app=\"1\"} 12\ncrier_connections{transport=\"sse\",app=\"1\"} 2\ncrier_connections_x 3\ncrier_runtime_alive_tasks 40.0\n";
        assert_eq!(gauge(text, "crier_connections"), 14);
        assert_eq!(gauge(text, "crier_runtime_alive_tasks"), 40);
        assert_eq!(gauge(text, "missing"), 0);
    }

    #[test]
    fn end_above_baseline_fails() {
        let base = Sample {
            rss_kib: 50_000,
            open_files: 20,
            tasks: 30,
            connections: 0,
        };
        let mut r = SoakReport {
            cycles: 1000,
            baseline: base,
            end: Sample {
                rss_kib: base.rss_kib + RSS_TOLERANCE_KIB + 1,
                open_files: 21,
                ..base
            },
            ..SoakReport::default()
        };
        judge(&mut r);
        assert!(!r.ok);
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        let mut fine = SoakReport {
            cycles: 1000,
            baseline: base,
            end: base,
            ..SoakReport::default()
        };
        judge(&mut fine);
        assert!(fine.ok, "{:?}", fine.problems);
    }
}
