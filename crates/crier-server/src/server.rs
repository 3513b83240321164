//! Starting and stopping a Crier server: bind, serve, drain. `run` is the one entry
//! point the binary and the tests share.

use crate::config::Config;
use crate::state::AppState;
use crate::tls::Tls;
use crate::{api, build, demo, ingest, ops, scripts, transport};
use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};
use crier_core::Node;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A server started in the background.
pub struct Running {
    pub addr: SocketAddr,
    pub udp_addr: Option<SocketAddr>,
    pub node: Arc<Node>,
    /// The listener's TLS, when `[server] tls_cert` and `tls_key` are set.
    pub tls: Option<Tls>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Begins a graceful shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Reads the TLS certificate and key again (the binary calls this on SIGHUP);
    /// new connections get the new certificate. Without TLS, nothing to do.
    ///
    /// # Errors
    /// The files cannot be used; the certificate in use stays.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        self.tls.as_ref().map_or(Ok(()), Tls::reload)
    }

    /// Waits until the server has stopped.
    ///
    /// # Errors
    /// A failure while serving or draining.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.handle.await?
    }
}

fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    let api = api::routes()
        .layer(middleware::from_fn_with_state(
            state.clone(),
            api::buffered_body,
        ))
        // The middleware above has already enforced the limit (with a JSON 413); this
        // only keeps axum's 2 MiB default from cutting a larger configured limit.
        .layer(DefaultBodyLimit::max(max_body))
        // Outermost, after routing: the duration includes reading the body.
        .route_layer(middleware::from_fn(api::timed));
    let mut router = Router::new()
        .merge(transport::routes())
        .merge(api)
        .merge(ops::routes())
        .merge(crate::landing::routes())
        .merge(crate::dashboard::routes(&state))
        .merge(scripts::routes());
    if state.config.demo.active(&state.config.server.listen) {
        router = router.merge(demo::routes());
    }
    router
        .fallback(api::not_found)
        // Outermost: an over-long URL is refused before any route parses it.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::limits::url_limit,
        ))
        .with_state(state)
}

/// Starts a server on `listener` and returns once it accepts connections.
///
/// # Errors
/// The TLS certificate or key, the history store or an ingest cannot be opened.
pub async fn run(listener: TcpListener, config: Config) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    // First: a bad certificate is a configuration error, found before anything starts.
    let tls = config
        .tls_files()
        .map(|(cert, key)| Tls::load(cert, key))
        .transpose()?;
    // Before the node: the history store reports its health as it opens.
    crate::metrics::register(&config);
    let build::Built {
        node,
        webhooks,
        history,
    } = build::node(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(webhooks.run(shutdown.clone()));
    let config = Arc::new(config);
    let mut state = AppState::new(node.clone(), config.clone(), shutdown.clone());
    state.history = history;
    tokio::spawn(crate::transport::http_fallback::reap(
        state.fallback_sessions.clone(),
        shutdown.clone(),
        Duration::from_secs(config.server.fallback_session_idle_secs),
    ));
    tokio::spawn(
        state
            .poll_leases
            .clone()
            .reap(node.clone(), shutdown.clone()),
    );
    let udp_addr = ingest::start(&state).await?;
    // Built once and shared by every connection. (`axum::serve` given a `Router`
    // rebuilt the route table per connection, `with_state(())` per accept, and an SSE
    // stream or a long-poller kept its copy as long as it lived: 13 KiB each,
    // crier-bench sse.)
    let app = router(state.clone()).with_state(());
    let limits = crate::listener::Limits {
        header_timeout: Duration::from_secs(config.server.handshake_timeout_secs),
        max_header_bytes: config.server.max_header_bytes,
        write_timeout: node.settings().write_timeout,
    };
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(shutdown.clone()));
    }
    if config.dashboard.enabled {
        tokio::spawn(state.dashboard.clone().run(shutdown.clone()));
    }
    let server = tokio::spawn(crate::listener::serve(
        listener,
        app,
        limits,
        tls.clone(),
        shutdown.clone(),
    ));
    let handle = tokio::spawn(drain_on_shutdown(state, server));
    Ok(Running {
        addr,
        udp_addr,
        node,
        tls,
        shutdown,
        handle,
    })
}

async fn drain_on_shutdown(
    state: AppState,
    server: JoinHandle<std::io::Result<()>>,
) -> anyhow::Result<()> {
    state.shutdown.cancelled().await;
    state.start_draining();
    tracing::info!("shutting down: telling clients to reconnect, flushing history");
    let limit = Duration::from_secs(state.config.server.shutdown_timeout_secs);
    // One deadline for both waits: `shutdown_timeout_secs` bounds the whole drain,
    // not each stage of it.
    let deadline = tokio::time::Instant::now() + limit;
    state.tasks.close();
    if tokio::time::timeout_at(deadline, state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {limit:?}; dropping them");
    }
    if tokio::time::timeout_at(deadline, server).await.is_err() {
        tracing::warn!("HTTP requests still running after {limit:?}; dropping them");
    }
    state.node.flush().await?;
    tracing::info!("shutdown complete");
    Ok(())
}
