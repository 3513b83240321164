//! What the benchmark reads from `/proc`: memory and CPU time of the server's
//! processes and of this tool, and which processes listen on a TCP port.

use anyhow::{bail, Context};
use std::collections::HashSet;
use std::fs;

/// Linux reports process times in USER_HZ ticks, fixed at 100 by its ABI.
const TICKS_PER_SEC: f64 = 100.0;

/// Resident memory of one process in KiB (`VmRSS`), or `None` if it is gone.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Proportional set size in KiB (`Pss` of `smaps_rollup`): memory shared between
/// processes (nginx's shared zone, libraries) is split between them, so the sum over
/// a master and its workers does not count it twice.
pub(crate) fn pss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&text, "Pss:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&text, name)
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Memory of a server made of `pids`: VmRSS for one process, the sum of PSS for
/// several (nginx master and workers).
pub(crate) fn server_memory_kib(pids: &[u32]) -> Option<u64> {
    match pids {
        [] => None,
        [one] => rss_kib(*one),
        many => many.iter().map(|&p| pss_kib(p)).sum(),
    }
}

/// User plus system CPU seconds of a process (`utime + stime` of `/proc/PID/stat`).
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of this process (all threads). Children are not included: workers
/// report their own, and a spawned server is measured as the server.
pub(crate) fn self_cpu_secs() -> f64 {
    stat_cpu("/proc/self/stat").unwrap_or(0.0)
}

/// Sum of [`cpu_secs`] over several processes.
pub(crate) fn server_cpu_secs(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

fn stat_cpu(path: &str) -> Option<f64> {
    let text = fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may contain spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((field(14)? + field(15)?) as f64 / TICKS_PER_SEC)
}

/// The soft limit on open files of a running process, from `/proc/PID/limits`.
pub(crate) fn max_open_files(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The processes holding a socket that listens on TCP `port` (all of nginx's workers
/// share the master's listening socket, so several may answer).
///
/// # Errors
/// When no listening socket or no process holding it is found.
pub(crate) fn pids_listening_on(port: u16) -> anyhow::Result<Vec<u32>> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXIP:HEXPORT"; state 0A is LISTEN; inode is field 9.
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let listening_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && listening_port == Some(port) {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        bail!("nothing listens on TCP port {port}");
    }
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("cannot read /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .map(|t| inodes.contains(t.to_string_lossy().as_ref()))
                .unwrap_or(false)
        });
        if holds {
            pids.push(pid);
        }
    }
    if pids.is_empty() {
        bail!(
            "no process visible here holds the socket listening on port {port}; pass --server-pid"
        );
    }
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        let me = std::process::id();
        assert!(rss_kib(me).expect("own VmRSS") > 0);
        assert!(cpu_secs(me).is_some());
        assert!(max_open_files(me).expect("own limits") > 0);
    }

    #[test]
    fn finds_the_process_listening_on_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let pids = pids_listening_on(port).expect("found");
        assert!(pids.contains(&std::process::id()), "{pids:?}");
    }
}
