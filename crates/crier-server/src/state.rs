//! What every handler shares. Its own module so that the handlers, which all need it,
//! do not import `server`, which imports them to build the router.

use crate::config::Config;
use crier_core::Node;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub config: Arc<Config>,
    /// Cancelled when the server starts draining.
    pub shutdown: CancellationToken,
    /// Long-lived connection tasks (WebSocket, SSE, long-poll) to wait for on shutdown.
    pub tasks: TaskTracker,
    /// Presence memberships of long-poll clients between their requests.
    pub poll_leases: Arc<crate::transport::poll::PollLeases>,
    /// pusher-js HTTP fallback sessions (xhr_streaming, xhr_polling).
    pub fallback_sessions: Arc<crate::transport::http_fallback::FallbackSessions>,
    /// The dashboard's recent samples of the metrics.
    pub(crate) dashboard: Arc<crate::dashboard::stats::History>,
    /// When the server started (uptime on the dashboard).
    pub started: Instant,
    /// Connections by app and client address (`max_connections_per_ip`).
    pub ip_connections: Arc<crate::limits::IpConnections>,
    /// Publish budgets by app (`publish_per_sec`).
    pub publish_rates: Arc<crate::limits::PublishRates>,
    /// The history store, read for its size at scrape time.
    pub history: Option<Arc<crier_core::history::disk::DiskHistory>>,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(node: Arc<Node>, config: Arc<Config>, shutdown: CancellationToken) -> Self {
        Self {
            publish_rates: Arc::new(crate::limits::PublishRates::new(node.apps())),
            node,
            config,
            shutdown,
            tasks: TaskTracker::new(),
            poll_leases: Arc::default(),
            fallback_sessions: Arc::default(),
            dashboard: Arc::default(),
            started: Instant::now(),
            ip_connections: Arc::default(),
            history: None,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// From now on, new connections are refused and `/ready` says `draining`.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
