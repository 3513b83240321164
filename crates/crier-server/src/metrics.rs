//! The Prometheus recorder behind `/metrics`, the names of Crier's metric families and
//! the few handles the hot paths keep. Installed once per process: tests start several
//! servers in one process and share it (and so its values).
//!
//! Every family is described and registered at zero when a server starts
//! ([`register`]), so dashboards and alerts see it before the first event. Labels are
//! small fixed sets (transport, ingest, reason, app id); never a channel or connection.

mod catalog;

pub(crate) use catalog::{limits, names, register};
pub use catalog::{CloseReason, Rejection, Transport};

use crier_core::outbox::Disconnect;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Bucket bounds (seconds) of the latency and duration histograms: from 100 µs, where
/// a local delivery lands, to 10 s, where something is badly wrong.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often histogram samples are folded into their buckets. The recorder keeps every
/// sample until then; without it they would pile up between scrapes (or forever, with
/// nobody scraping).
const UPKEEP_EVERY: Duration = Duration::from_secs(2);

/// The process's recorder, installing it on first use.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|b| b.install_recorder());
    let handle = match builder {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            return None;
        }
    };
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("crier-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; histograms grow until scraped");
    }
    Some(handle)
}

/// The counters and histogram a transport touches for every write, resolved once:
/// `metrics::counter!` looks its key up in the registry on every call.
pub struct TransportMetrics {
    pub delivered: Counter,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    latency: Histogram,
}

impl TransportMetrics {
    /// Records the publish-to-delivery latency of a message accepted at `accepted_at`
    /// whose frame is being written. Transports call it once per batch they write (for
    /// its oldest message), not per message, which keeps its cost off bursts.
    pub fn delivered_after(&self, accepted_at: Instant) {
        self.latency.record(accepted_at.elapsed().as_secs_f64());
    }
}

/// The hot-path handles of `transport`.
pub fn transport(transport: Transport) -> &'static TransportMetrics {
    static HOT: OnceLock<[TransportMetrics; 4]> = OnceLock::new();
    let all = HOT.get_or_init(|| {
        // Handles taken before the recorder exists would stay no-ops forever.
        handle();
        Transport::ALL.map(|t| {
            let label = t.label();
            TransportMetrics {
                delivered: metrics::counter!(names::DELIVERED, "transport" => label),
                bytes_sent: metrics::counter!(names::BYTES_SENT, "transport" => label),
                bytes_received: metrics::counter!(names::BYTES_RECEIVED, "transport" => label),
                latency: metrics::histogram!(names::DELIVERY_LATENCY, "transport" => label),
            }
        })
    });
    &all[transport as usize]
}

/// Counts a connection opened on `transport` for `app`.
pub fn connection_opened(transport: Transport, app: &Arc<str>) {
    let t = transport.label();
    metrics::gauge!(names::CONNECTIONS, "transport" => t, "app" => app.clone()).increment(1.0);
    metrics::counter!(names::OPENED, "transport" => t).increment(1);
}

/// Counts a connection of `transport` for `app` closed for `reason`.
pub fn connection_closed(transport: Transport, app: &Arc<str>, reason: CloseReason) {
    let t = transport.label();
    metrics::gauge!(names::CONNECTIONS, "transport" => t, "app" => app.clone()).decrement(1.0);
    metrics::counter!(names::CLOSED, "transport" => t, "reason" => reason.label()).increment(1);
}

/// A connection counted open until dropped, for transports whose connection is a value
/// (SSE body, long-poll request, fallback session) rather than a task's loop.
pub struct OpenConnection {
    transport: Transport,
    app: Arc<str>,
    reason: CloseReason,
}

impl OpenConnection {
    /// Counts the connection open; it closes with `reason` unless told otherwise.
    pub fn new(transport: Transport, app: &Arc<str>, reason: CloseReason) -> Self {
        connection_opened(transport, app);
        Self {
            transport,
            app: app.clone(),
            reason,
        }
    }

    pub fn set_reason(&mut self, reason: CloseReason) {
        self.reason = reason;
    }

    pub fn closed_by(&mut self, disconnect: &Disconnect) {
        self.reason = CloseReason::of(disconnect);
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        connection_closed(self.transport, &self.app, self.reason);
    }
}

/// Counts messages accepted for publishing through `ingest` for `app`.
pub fn published(ingest: &'static str, app: &Arc<str>, messages: u64) {
    metrics::counter!(names::PUBLISHED, "ingest" => ingest, "app" => app.clone())
        .increment(messages);
}

/// Counts a refused request or connection.
pub fn rejected(rejection: Rejection) {
    let (status, reason) = rejection.labels();
    metrics::counter!(names::REJECTED, "status" => status, "reason" => reason).increment(1);
}

/// Counts a refusal by one of the limits of SPEC §8, named by its config key.
pub fn limit_hit(key: &'static str) {
    metrics::counter!(names::LIMIT_HITS, "limit" => key).increment(1);
}

/// Counts published messages through `ingest`, by their apps (a UDP batch may mix
/// apps; runs of one app are counted at once).
pub fn published_each(ingest: &'static str, messages: &[Arc<crier_core::message::Published>]) {
    let mut rest = messages;
    while let Some(first) = rest.first() {
        let run = rest.iter().take_while(|m| m.app_id == first.app_id).count();
        published(ingest, &first.app_id, run as u64);
        rest = &rest[run..];
    }
}
