//! Publishers: signed `POST /apps/{id}/events` (or `batch_events`) to Crier over
//! keep-alive HTTP/1.1, UDP datagrams to Crier's ingest, or `POST /pub?id=CHANNEL` to
//! Nchan. Each channel belongs to one publishing task, which keeps at most one publish
//! of it in flight: the server sees every channel's messages in sequence order, so any
//! disorder a subscriber sees is the server's.

use crate::hist;
use crate::net::{Endpoint, HttpConn};
use crate::payload::{self, Stamp};
use crate::plan::Target;
use anyhow::bail;
use bytes::Bytes;
use crier_protocol::signature;
use hdrhistogram::Histogram;
use hyper::Method;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How messages reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    Http,
    Udp,
}

/// What to publish, how fast and for how long.
#[derive(Debug, Clone)]
pub(crate) struct PubPlan {
    pub(crate) target: Target,
    pub(crate) via: Via,
    /// The server, or every node of a cluster: task `t` publishes to node
    /// `t % endpoints.len()` (see [`crate::plan::publishing_node`]).
    pub(crate) endpoints: Vec<Endpoint>,
    /// The UDP ingest of the server or of each node (empty: none).
    pub(crate) udp: Vec<SocketAddr>,
    pub(crate) app_id: String,
    pub(crate) app_key: String,
    pub(crate) app_secret: String,
    pub(crate) prefix: String,
    pub(crate) channels: usize,
    /// Messages per second over all channels; 0 = as fast as the in-flight bound allows.
    pub(crate) rate: f64,
    /// Publishing tasks, so also the bound on requests in flight.
    pub(crate) concurrency: usize,
    /// Total messages; 0 = until `duration`.
    pub(crate) messages: u64,
    pub(crate) duration: Duration,
    /// Events per HTTP request (`batch_events` when above 1; Crier only).
    pub(crate) batch: usize,
    pub(crate) payload_bytes: usize,
}

/// What the publishers did.
#[derive(Debug)]
pub(crate) struct PubResult {
    /// Messages accepted per channel (sequence numbers 1..=n).
    pub(crate) published: Vec<u64>,
    /// Requests (or datagrams) that failed.
    pub(crate) errors: u64,
    pub(crate) error_kinds: Vec<(String, u64)>,
    /// Round trip of each successful request, microseconds (HTTP only).
    pub(crate) latency: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) elapsed: Duration,
}

/// Messages accepted so far, for progress lines.
pub(crate) type Progress = Arc<AtomicU64>;

/// Publishes per `plan` until the message budget or the time is used up.
pub(crate) async fn run(plan: Arc<PubPlan>, progress: Progress) -> PubResult {
    let tasks = plan.concurrency.clamp(1, plan.channels.max(1));
    let budget = Arc::new(AtomicU64::new(if plan.messages == 0 {
        u64::MAX
    } else {
        plan.messages
    }));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let own: Vec<u32> = (t..plan.channels)
            .step_by(tasks)
            .map(|c| c as u32)
            .collect();
        let (plan, budget, progress) = (plan.clone(), budget.clone(), progress.clone());
        set.spawn(async move {
            Task::new(plan, own, tasks, t, start)
                .run(budget, progress)
                .await
        });
    }
    let mut result = PubResult {
        published: vec![0; plan.channels],
        errors: 0,
        error_kinds: Vec::new(),
        latency: hist::new(),
        requests: 0,
        elapsed: Duration::ZERO,
    };
    let mut kinds: HashMap<String, u64> = HashMap::new();
    while let Some(done) = set.join_next().await {
        let Ok(task) = done else {
            result.errors += 1;
            continue;
        };
        for (i, &c) in task.channels.iter().enumerate() {
            result.published[c as usize] = task.seq[i];
        }
        result.errors += task.errors;
        result.requests += task.requests;
        let _ = result.latency.add(&task.latency);
        for (k, v) in task.error_kinds {
            *kinds.entry(k).or_default() += v;
        }
    }
    result.elapsed = start.elapsed();
    let mut kinds: Vec<(String, u64)> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    kinds.truncate(8);
    result.error_kinds = kinds;
    result
}

/// One publishing task and the channels it owns.
struct Task {
    plan: Arc<PubPlan>,
    channels: Vec<u32>,
    /// Last accepted sequence number per owned channel.
    seq: Vec<u64>,
    next: usize,
    /// Pace: this task's share of the rate.
    interval: Option<Duration>,
    next_at: Instant,
    latency: Histogram<u64>,
    errors: u64,
    requests: u64,
    error_kinds: HashMap<String, u64>,
    http: Option<HttpConn>,
    udp: Option<UdpSocket>,
    /// The node this task publishes to.
    node: usize,
}

impl Task {
    fn new(plan: Arc<PubPlan>, channels: Vec<u32>, tasks: usize, t: usize, start: Instant) -> Self {
        let interval = (plan.rate > 0.0).then(|| Duration::from_secs_f64(tasks as f64 / plan.rate));
        let offset = interval
            .map(|i| i.mul_f64(t as f64 / tasks as f64))
            .unwrap_or_default();
        Self {
            seq: vec![0; channels.len()],
            channels,
            next: 0,
            interval,
            next_at: start + offset,
            latency: hist::new(),
            errors: 0,
            requests: 0,
            error_kinds: HashMap::new(),
            http: None,
            udp: None,
            node: t,
            plan,
        }
    }

    async fn run(mut self, budget: Arc<AtomicU64>, progress: Progress) -> Self {
        let deadline = Instant::now() + self.plan.duration;
        let per_request = if self.plan.target == Target::Crier && self.plan.via == Via::Http {
            self.plan.batch.max(1) as u64
        } else {
            1
        };
        while Instant::now() < deadline && !self.channels.is_empty() {
            if let Some(interval) = self.interval {
                if self.next_at > deadline {
                    break;
                }
                tokio::time::sleep_until(self.next_at).await;
                self.next_at += interval;
                // Far behind (server stalled): do not burst to catch up.
                let now = Instant::now();
                if self.next_at + Duration::from_secs(1) < now {
                    self.next_at = now;
                }
            }
            let n = take(&budget, per_request);
            if n == 0 {
                break;
            }
            // The next n messages, channel by channel, numbered after what was accepted.
            let mut batch: Vec<(usize, u64)> = Vec::with_capacity(n as usize);
            for k in 0..n as usize {
                let i = (self.next + k) % self.channels.len();
                let earlier = batch.iter().filter(|(j, _)| *j == i).count() as u64;
                batch.push((i, self.seq[i] + 1 + earlier));
            }
            self.requests += 1;
            match self.send(&batch).await {
                Ok(()) => {
                    for &(i, s) in &batch {
                        self.seq[i] = self.seq[i].max(s);
                    }
                    self.next = (self.next + n as usize) % self.channels.len();
                    progress.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    budget.fetch_add(n, Ordering::Relaxed);
                    self.errors += 1;
                    let mut kind = format!("{e:#}");
                    kind.truncate(160);
                    *self.error_kinds.entry(kind).or_default() += 1;
                    // Do not spin against a server that refuses everything.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        self
    }

    async fn send(&mut self, batch: &[(usize, u64)]) -> anyhow::Result<()> {
        let sent = payload::now_micros();
        let events: Vec<(String, String)> = batch
            .iter()
            .map(|&(i, seq)| {
                let channel = self.channels[i];
                let stamp = Stamp {
                    sent_micros: sent,
                    seq,
                    channel,
                };
                (
                    format!("{}{channel}", self.plan.prefix),
                    payload::encode(stamp, self.plan.payload_bytes),
                )
            })
            .collect();
        if self.plan.via == Via::Udp {
            return self.send_udp(&events).await;
        }
        let started = std::time::Instant::now();
        let (status, body) = self.send_http(&events).await?;
        if !(200..300).contains(&status) {
            bail!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(120)
                    .collect::<String>()
            );
        }
        hist::record(&mut self.latency, started.elapsed().as_micros() as u64);
        Ok(())
    }

    async fn send_http(&mut self, events: &[(String, String)]) -> anyhow::Result<(u16, Bytes)> {
        let plan = self.plan.clone();
        let (path, body, content_type) = match plan.target {
            Target::Nchan => {
                let (channel, data) = &events[0];
                (format!("/pub?id={channel}"), data.clone(), "text/plain")
            }
            Target::Crier => crier_request(&plan, events),
        };
        if self.http.as_ref().is_none_or(HttpConn::is_closed) {
            let endpoint = &plan.endpoints[self.node % plan.endpoints.len()];
            self.http = Some(HttpConn::open(None, endpoint).await?);
        }
        let conn = self.http.as_mut().expect("opened above");
        let result = conn
            .call(
                Method::POST,
                &path,
                &[("content-type", content_type)],
                Bytes::from(body),
            )
            .await;
        if result.is_err() {
            // Reconnect for the retry; the message may or may not have been published.
            self.http = None;
        }
        result
    }

    async fn send_udp(&mut self, events: &[(String, String)]) -> anyhow::Result<()> {
        let Some(&target) = self.plan.udp.get(self.node % self.plan.udp.len().max(1)) else {
            bail!("no UDP ingest address (pass --udp, or spawn the server)");
        };
        if self.udp.is_none() {
            self.udp = Some(UdpSocket::bind("127.0.0.1:0").await?);
        }
        let socket = self.udp.as_ref().expect("bound above");
        for (channel, data) in events {
            let datagram = serde_json::json!({
                "app_id": self.plan.app_id, "name": "bench", "channel": channel, "data": data,
            });
            socket
                .send_to(datagram.to_string().as_bytes(), target)
                .await?;
        }
        Ok(())
    }
}

/// The signed path and JSON body of a Crier publish of `events` (channel, data).
fn crier_request(plan: &PubPlan, events: &[(String, String)]) -> (String, String, &'static str) {
    let (path, body) = if let [(channel, data)] = events {
        let body = serde_json::json!({"name": "bench", "channel": channel, "data": data});
        (format!("/apps/{}/events", plan.app_id), body.to_string())
    } else {
        let batch: Vec<serde_json::Value> = events
            .iter()
            .map(|(channel, data)| serde_json::json!({"name": "bench", "channel": channel, "data": data}))
            .collect();
        let body = serde_json::json!({ "batch": batch });
        (
            format!("/apps/{}/batch_events", plan.app_id),
            body.to_string(),
        )
    };
    let now = (payload::now_micros() / 1_000_000) as i64;
    let query = signature::sign_request(
        &plan.app_key,
        &plan.app_secret,
        "POST",
        &path,
        &[],
        body.as_bytes(),
        now,
    );
    (format!("{path}?{query}"), body, "application/json")
}

/// Takes up to `n` messages from the budget; 0 when it is used up.
fn take(budget: &AtomicU64, n: u64) -> u64 {
    let mut current = budget.load(Ordering::Relaxed);
    loop {
        let got = current.min(n);
        if got == 0 {
            return 0;
        }
        match budget.compare_exchange_weak(
            current,
            current - got,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return got,
            Err(actual) => current = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_out_exactly() {
        let b = AtomicU64::new(5);
        assert_eq!(take(&b, 2), 2);
        assert_eq!(take(&b, 2), 2);
        assert_eq!(take(&b, 2), 1);
        assert_eq!(take(&b, 2), 0);
    }

    #[test]
    fn crier_requests_are_signed_for_their_path() {
        let plan = PubPlan {
            target: Target::Crier,
            via: Via::Http,
            endpoints: vec![Endpoint::parse("http://127.0.0.1:6001").expect("endpoint")],
            udp: Vec::new(),
            app_id: "app".into(),
            app_key: "app-key".into(),
            app_secret: "app-secret".into(),
            prefix: "b-".into(),
            channels: 1,
            rate: 0.0,
            concurrency: 1,
            messages: 1,
            duration: Duration::from_secs(1),
            batch: 1,
            payload_bytes: 0,
        };
        let (path, body, _) = crier_request(&plan, &[("b-0".into(), "crb:1:1:0:".into())]);
        assert!(
            path.starts_with("/apps/app/events?auth_key=app-key&"),
            "{path}"
        );
        assert!(path.contains("body_md5=") && path.contains("auth_signature="));
        assert!(body.contains(r#""channel":"b-0""#));
        let (path, _, _) = crier_request(
            &plan,
            &[("b-0".into(), "x".into()), ("b-0".into(), "y".into())],
        );
        assert!(path.starts_with("/apps/app/batch_events?"));
    }
}
