//! Backend ingests besides the HTTP API: UDP datagrams and a Redis list.

use crate::server::AppState;
use std::net::SocketAddr;

/// Starts the configured ingests; returns the UDP address when listening.
///
/// # Errors
/// The UDP address cannot be bound.
pub async fn start(_state: &AppState) -> anyhow::Result<Option<SocketAddr>> {
    Ok(None)
}
