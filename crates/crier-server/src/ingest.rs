//! Backend ingests besides the HTTP API: UDP datagrams and a Redis list. Both hand
//! their events to the same validation (`EventRequest`) and publish path as the API.

pub mod event;
pub mod redis_queue;
pub mod udp;

use crate::state::AppState;
use std::net::SocketAddr;

/// Starts the configured ingests; returns the UDP address when listening.
///
/// # Errors
/// The UDP address cannot be bound, or is off loopback while an app has the
/// development secret.
pub async fn start(state: &AppState) -> anyhow::Result<Option<SocketAddr>> {
    let mut udp_addr = None;
    let udp = &state.config.ingest.udp;
    if !udp.listen.is_empty() {
        let addr: SocketAddr = udp.listen.parse().map_err(|_| {
            anyhow::anyhow!("ingest.udp.listen: {:?} is not an address", udp.listen)
        })?;
        // Also checked by `Config::validate`; repeated here because `run` may be handed
        // a config that never went through it, and this guard must not depend on that.
        if !addr.ip().is_loopback() {
            if let Some(i) = state
                .config
                .apps
                .iter()
                .position(|a| a.secret == crate::config::DEV_APP_SECRET)
            {
                anyhow::bail!(
                    "apps[{i}].secret: the built-in development secret is refused with UDP ingest on the non-loopback address {addr} (ingest.udp.listen)"
                );
            }
        }
        let socket = udp::bind(addr)?;
        udp_addr = Some(socket.local_addr()?);
        let require = udp.require_signature || !addr.ip().is_loopback();
        state.tasks.spawn(udp::run(socket, state.clone(), require));
    }
    if let Some(queue) = state.config.ingest.redis_queue.clone() {
        state.tasks.spawn(redis_queue::run(queue, state.clone()));
    }
    Ok(udp_addr)
}
