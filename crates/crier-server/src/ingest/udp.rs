//! UDP ingest: one datagram is one JSON event. Datagrams already waiting are read
//! together and published as one batch (one history commit), in arrival order.
//!
//! Format: the JSON event, optionally preceded by its signature and one space:
//! `<hex HMAC-SHA256 of the JSON with the app secret> <JSON>`. The signature is
//! required when the listener is not on a loopback address (or when
//! `ingest.udp.require_signature` is set).

use super::event::{self, RateLimitedLog, Reject, Rejected};
use crate::state::AppState;
use crier_core::message::NewMessage;
use crier_core::AppRegistry;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// Largest datagram accepted (an event's data is at most 10 KiB by default); a larger
/// one fills the buffer and is dropped as oversize/truncated.
pub const MAX_DATAGRAM: usize = 32 * 1024;
/// Datagrams gathered into one publish batch.
const MAX_BATCH: usize = 256;
/// Kernel receive buffer, so bursts wait in the kernel rather than being dropped.
const RECV_BUFFER: usize = 8 * 1024 * 1024;

/// Binds the UDP socket.
///
/// # Errors
/// The address cannot be bound.
pub fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("ingest.udp.listen: cannot bind {addr}: {e}"))?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// Splits `sig JSON` into its parts; a datagram starting with `{` is unsigned.
fn split_signature(datagram: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let trimmed = datagram.trim_ascii_start();
    if trimmed.first() == Some(&b'{') {
        return (None, trimmed);
    }
    match trimmed.iter().position(|b| *b == b' ') {
        Some(i) => (Some(&trimmed[..i]), &trimmed[i + 1..]),
        None => (None, trimmed),
    }
}

/// Checks one datagram (size, signature, event) and turns it into messages.
///
/// # Errors
/// Why the datagram can never be published.
pub fn parse_datagram(
    apps: &AppRegistry,
    datagram: &[u8],
    require_signature: bool,
) -> Result<Vec<NewMessage>, Rejected> {
    if datagram.len() >= MAX_DATAGRAM {
        return Err(Rejected {
            reason: Reject::Oversize,
            detail: format!("datagram of {} bytes or more", datagram.len()),
        });
    }
    let (signature, json) = split_signature(datagram);
    match signature {
        Some(sig) => {
            let app = event::app_of(apps, json)?;
            let sig = std::str::from_utf8(sig).unwrap_or("");
            let body = std::str::from_utf8(json).unwrap_or("");
            if !crier_protocol::signature::verify(&app.secret, body, sig) {
                return Err(Rejected {
                    reason: Reject::BadSignature,
                    detail: "signature does not match".into(),
                });
            }
        }
        None if require_signature => {
            return Err(Rejected {
                reason: Reject::MissingSignature,
                detail: "this listener requires signed datagrams".into(),
            })
        }
        None => {}
    }
    event::parse(apps, json).map(|(_, messages)| messages)
}

/// Receives until shutdown. Never stops on bad input or receive errors.
pub async fn run(socket: UdpSocket, state: AppState, require_signature: bool) {
    let mut log = RateLimitedLog::new("udp");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let first = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            () = state.shutdown.cancelled() => return,
        };
        let mut batch: Vec<NewMessage> = Vec::new();
        let mut accepted = 0u64;
        let mut handle = |n: usize, buf: &[u8], log: &mut RateLimitedLog| match parse_datagram(
            state.node.apps(),
            &buf[..n],
            require_signature,
        ) {
            Ok(messages) => {
                accepted += 1;
                batch.extend(messages);
            }
            Err(r) => log.reject(&r),
        };
        match first {
            Ok((n, _)) => handle(n, &buf, &mut log),
            Err(e) => {
                tracing::warn!(error = %e, "UDP receive failed");
                continue;
            }
        }
        for _ in 1..MAX_BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((n, _)) => handle(n, &buf, &mut log),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        match state.node.publish_messages(batch).await {
            Ok(published) => crate::metrics::published_each("udp", &published),
            Err(e) => {
                // Nobody to tell over UDP; the history or broker failure is logged.
                metrics::counter!("crier_ingest_dropped_total", "ingest" => "udp", "reason" => "publish_failed").increment(accepted);
                tracing::error!(error = %e, "UDP ingest publish failed");
            }
        }
    }
}
