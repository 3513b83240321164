//! The result of one run: every figure the tool measures, printed for people or as
//! JSON, and the Crier/Nchan ratio table of `compare`.

use crate::hist::Summary;
use serde::Serialize;

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) target: String,
    pub(crate) transport: String,
    pub(crate) publisher: String,
    /// The fsync policy the spawned server ran with, if we chose it.
    pub(crate) fsync: Option<String>,
    pub(crate) server_pids: Vec<u32>,
    pub(crate) workers: usize,
    pub(crate) connections: Connections,
    pub(crate) server: ServerUse,
    pub(crate) tool_cpu_secs: f64,
    pub(crate) publish: Publishing,
    pub(crate) delivery: Delivery,
    pub(crate) errors: Vec<(String, u64)>,
    /// Each node's and Redis's share (the `cluster` scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<ClusterUse>,
    /// Every connection held, every expected message arrived once and in order.
    pub(crate) ok: bool,
    pub(crate) problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Connections {
    pub(crate) requested: u64,
    pub(crate) held: u64,
    pub(crate) failed: u64,
    /// Broken (closed by the server or reset) before their messages arrived.
    pub(crate) dropped: u64,
    pub(crate) channels: u64,
    pub(crate) subscriptions_per_connection: u64,
    pub(crate) source_addresses: u64,
    pub(crate) connect_secs: f64,
    pub(crate) connects_per_sec: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ServerUse {
    /// Memory before any benchmark connection, after they were all held (and the hold
    /// time passed), and at the end. VmRSS, or the sum of PSS for several processes.
    pub(crate) rss_idle_kib: Option<u64>,
    pub(crate) rss_connected_kib: Option<u64>,
    pub(crate) rss_end_kib: Option<u64>,
    pub(crate) rss_per_connection_bytes: Option<f64>,
    pub(crate) cpu_total_secs: Option<f64>,
    /// CPU seconds while publishing and delivering.
    pub(crate) cpu_publish_secs: Option<f64>,
}

/// The nodes of a cluster run and their redis-server.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ClusterUse {
    pub(crate) nodes: Vec<ProcessUse>,
    pub(crate) redis: Option<ProcessUse>,
    /// The Redis key prefix the nodes shared.
    pub(crate) prefix: String,
}

/// One process of a cluster run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ProcessUse {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) rss_end_kib: Option<u64>,
    pub(crate) cpu_total_secs: Option<f64>,
    /// CPU seconds while publishing and delivering.
    pub(crate) cpu_publish_secs: Option<f64>,
    /// `cpu_publish_secs` per 1,000 messages published (to the whole cluster).
    pub(crate) cpu_per_1000_messages: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Publishing {
    pub(crate) messages: u64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) secs: f64,
    pub(crate) per_sec: f64,
    /// Round trip of successful HTTP publishes.
    pub(crate) latency: Summary,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Delivery {
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    /// From the first publish to the last delivery.
    pub(crate) secs: f64,
    pub(crate) per_sec: f64,
    /// Publish (time in the payload) to delivery.
    pub(crate) latency: Summary,
    pub(crate) missing: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    pub(crate) gaps: u64,
    pub(crate) unexpected: u64,
    /// Of `delivered`, those made by another node than the one the message was
    /// published on (cluster runs).
    pub(crate) cross_node: u64,
    pub(crate) cross_node_per_sec: f64,
}

impl Report {
    /// Fills `ok` and `problems` from the counts.
    pub(crate) fn judge(&mut self) {
        let c = &self.connections;
        let d = &self.delivery;
        let mut p = Vec::new();
        if c.held < c.requested {
            p.push(format!(
                "{} of {} connections not held",
                c.requested - c.held,
                c.requested
            ));
        }
        if c.dropped > 0 {
            p.push(format!(
                "{} connections broke before their messages arrived",
                c.dropped
            ));
        }
        for (n, what) in [
            (d.missing, "missing"),
            (d.duplicates, "duplicate"),
            (d.out_of_order, "out-of-order"),
            (d.gaps, "gap notices"),
            (d.unexpected, "unexpected-channel"),
        ] {
            if n > 0 {
                p.push(format!("{n} {what} deliveries"));
            }
        }
        if d.delivered < d.expected {
            p.push(format!(
                "{} of {} expected deliveries arrived",
                d.delivered, d.expected
            ));
        }
        if self.publish.errors > 0 {
            p.push(format!("{} publish requests failed", self.publish.errors));
        }
        self.ok = p.is_empty();
        self.problems = p;
    }

    /// The human-readable summary.
    pub(crate) fn human(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        let fsync = self
            .fsync
            .as_deref()
            .map(|f| format!(", fsync {f}"))
            .unwrap_or_default();
        line(format!(
            "== {} — {} via {}, publish by {}{fsync}",
            self.scenario, self.target, self.transport, self.publisher
        ));
        let c = &self.connections;
        line(format!(
            "connections  {} held of {} ({} failed, {} dropped), {} channels x {} per connection, {} source addr, {} worker process(es)",
            c.held, c.requested, c.failed, c.dropped, c.channels, c.subscriptions_per_connection, c.source_addresses, self.workers
        ));
        line(format!(
            "connect      {:.2} s, {:.0} connections/s",
            c.connect_secs, c.connects_per_sec
        ));
        let s = &self.server;
        let kib =
            |v: Option<u64>| v.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        line(format!(
            "server mem   {} before, {} connected, {} at end; {} per connection",
            kib(s.rss_idle_kib),
            kib(s.rss_connected_kib),
            kib(s.rss_end_kib),
            s.rss_per_connection_bytes
                .map_or("?".into(), |b| format!("{:.2} KiB", b / 1024.0))
        ));
        let secs = |v: Option<f64>| v.map_or("?".into(), |x| format!("{x:.2} s"));
        line(format!(
            "cpu          server {} total, {} while publishing; tool {:.2} s",
            secs(s.cpu_total_secs),
            secs(s.cpu_publish_secs),
            self.tool_cpu_secs
        ));
        let p = &self.publish;
        line(format!(
            "publish      {} messages in {} requests, {:.2} s, {:.0} messages/s, {} errors",
            p.messages, p.requests, p.secs, p.per_sec, p.errors
        ));
        if p.latency.count > 0 {
            line(format!("  round trip {}", p.latency.line()));
        }
        let d = &self.delivery;
        line(format!(
            "deliveries   {} of {} in {:.2} s, {:.0} deliveries/s",
            d.delivered, d.expected, d.secs, d.per_sec
        ));
        if self.cluster.is_some() {
            line(format!(
                "  cross-node {} ({:.0}/s) delivered by another node than the one published to",
                d.cross_node, d.cross_node_per_sec
            ));
        }
        line(format!("  latency    {}", d.latency.line()));
        line(format!(
            "loss         missing {}, duplicates {}, out-of-order {}, gaps {}, unexpected {}",
            d.missing, d.duplicates, d.out_of_order, d.gaps, d.unexpected
        ));
        if let Some(c) = &self.cluster {
            line(format!(
                "cluster      {} node(s) on one redis-server, key prefix {:?}; CPU while publishing:",
                c.nodes.len(),
                c.prefix
            ));
            for p in c.nodes.iter().chain(&c.redis) {
                line(format!(
                    "  {:<28} pid {:>7}: {}, {} per 1000 messages, {} at end",
                    p.name,
                    p.pid,
                    secs(p.cpu_publish_secs),
                    p.cpu_per_1000_messages
                        .map_or("?".into(), |x| format!("{x:.3} s")),
                    kib(p.rss_end_kib)
                ));
            }
        }
        for (e, n) in &self.errors {
            line(format!("  error x{n}: {e}"));
        }
        if self.ok {
            line("result       OK".into());
        } else {
            line(format!("result       FAILED: {}", self.problems.join("; ")));
        }
        out
    }
}

/// The side-by-side table of `compare`: each figure for Crier and Nchan and the ratio.
pub(crate) fn ratio_table(crier: &Report, nchan: &Report) -> String {
    let rows: Vec<(&str, Option<f64>, Option<f64>, bool)> = vec![
        (
            "connections held",
            Some(crier.connections.held as f64),
            Some(nchan.connections.held as f64),
            true,
        ),
        (
            "connects/s",
            Some(crier.connections.connects_per_sec),
            Some(nchan.connections.connects_per_sec),
            true,
        ),
        (
            "server KiB/connection",
            crier.server.rss_per_connection_bytes.map(|b| b / 1024.0),
            nchan.server.rss_per_connection_bytes.map(|b| b / 1024.0),
            false,
        ),
        (
            "publishes/s",
            Some(crier.publish.per_sec),
            Some(nchan.publish.per_sec),
            true,
        ),
        (
            "publish p99 ms",
            Some(crier.publish.latency.p99_ms),
            Some(nchan.publish.latency.p99_ms),
            false,
        ),
        (
            "deliveries/s",
            Some(crier.delivery.per_sec),
            Some(nchan.delivery.per_sec),
            true,
        ),
        (
            "delivery p50 ms",
            Some(crier.delivery.latency.p50_ms),
            Some(nchan.delivery.latency.p50_ms),
            false,
        ),
        (
            "delivery p99 ms",
            Some(crier.delivery.latency.p99_ms),
            Some(nchan.delivery.latency.p99_ms),
            false,
        ),
        (
            "delivery p99.9 ms",
            Some(crier.delivery.latency.p999_ms),
            Some(nchan.delivery.latency.p999_ms),
            false,
        ),
        (
            "delivery max ms",
            Some(crier.delivery.latency.max_ms),
            Some(nchan.delivery.latency.max_ms),
            false,
        ),
        (
            "server CPU s (publish)",
            crier.server.cpu_publish_secs,
            nchan.server.cpu_publish_secs,
            false,
        ),
        (
            "missing+dup+ooo",
            Some(loss(crier)),
            Some(loss(nchan)),
            false,
        ),
    ];
    let mut out = format!(
        "== {}: Crier vs Nchan\n{:<24} {:>14} {:>14} {:>12}\n",
        crier.scenario, "figure", "crier", "nchan", "crier/nchan"
    );
    for (name, a, b, higher_better) in rows {
        let fmt = |v: Option<f64>| v.map_or("?".to_string(), |x| format!("{x:.2}"));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
            _ => "-".to_string(),
        };
        let better = if higher_better {
            "(higher is better)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{name:<24} {:>14} {:>14} {:>12} {better}\n",
            fmt(a),
            fmt(b),
            ratio
        ));
    }
    out
}

fn loss(r: &Report) -> f64 {
    (r.delivery.missing + r.delivery.duplicates + r.delivery.out_of_order) as f64
}
