//! A busy channel for the replay tests: many large messages published in process (the
//! HTTP API would take most of a test's time), and the process's own memory figures.

use super::TestServer;
use crier_core::publish::EventRequest;
use serde_json::Value;

/// 2,000 messages of 8 KiB: a 16 MiB replay, far beyond what loopback socket buffers
/// hold, so a client that does not read stalls the server's writes.
pub const BUSY: usize = 2_000;
pub const DATA_BYTES: usize = 8 * 1024;

/// The data of message `i`: its number, then padding to `DATA_BYTES`.
pub fn data_of(i: usize) -> String {
    let mut data = format!("{i:05}:");
    data.extend(std::iter::repeat_n('x', DATA_BYTES - data.len()));
    data
}

/// Publishes `n` messages; returns the cursor just before the first one.
pub async fn publish_busy(server: &TestServer, channel: &str, n: usize) -> String {
    let node = server.node();
    let app = server.dev_app();
    let mut since = None;
    for start in (0..n).step_by(100) {
        let requests = (start..(start + 100).min(n))
            .map(|i| EventRequest {
                name: Some("n".into()),
                data: Some(Value::String(data_of(i))),
                channel: Some(channel.into()),
                channels: None,
                socket_id: None,
                info: None,
            })
            .collect();
        let published = node.publish(&app, requests).await.unwrap();
        since.get_or_insert_with(|| format!("{}-0", published[0].position.epoch));
    }
    since.unwrap()
}

/// A `/proc/self/status` field in KiB (`"VmRSS:"`, `"VmHWM:"`).
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}
