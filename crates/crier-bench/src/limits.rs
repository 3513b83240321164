//! Operating-system limits that cap how many connections a run can hold: open files
//! per process (ours and the server's) and ephemeral ports per source address. Each
//! check fails with a message saying what to change.

use anyhow::bail;

/// File descriptors a process needs besides its connections (stdio, runtime, logs).
pub(crate) const FD_MARGIN: u64 = 200;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit; returns the limit now
/// in force. Children started afterwards inherit it.
pub(crate) fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024),
    }
}

/// How many connections one worker process may hold under `fd_limit`.
pub(crate) fn conns_per_process(fd_limit: u64) -> u64 {
    fd_limit.saturating_sub(FD_MARGIN).max(1)
}

/// Checks that `per_worker` connections fit one process.
///
/// # Errors
/// When they do not, saying how to raise the limit or spread the load.
pub(crate) fn check_worker_fds(per_worker: u64, fd_limit: u64) -> anyhow::Result<()> {
    if per_worker + FD_MARGIN > fd_limit {
        bail!(
            "each worker process would hold {per_worker} connections but may open only {fd_limit} files \
             (RLIMIT_NOFILE hard limit, already raised to it). Raise it (`ulimit -Hn {}` as root, \
             or LimitNOFILE= / /etc/security/limits.conf), or use more --workers (or leave --workers at 0 \
             so it is chosen from the limit)",
            per_worker + FD_MARGIN,
        );
    }
    Ok(())
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
pub(crate) fn port_range() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// Checks that `conns` connections from `source_addrs` loopback addresses fit in the
/// ephemeral port range (each source address has its own range towards one server).
///
/// # Errors
/// When they do not, saying what to change.
pub(crate) fn check_ports(conns: u64, source_addrs: u64) -> anyhow::Result<()> {
    let Some((lo, hi)) = port_range() else {
        return Ok(());
    };
    let per_addr = u64::from(hi.saturating_sub(lo) + 1);
    let need = conns.div_ceil(source_addrs.max(1));
    // Leave room for sockets in TIME_WAIT from earlier runs and for other programs.
    if need > per_addr * 9 / 10 {
        bail!(
            "{conns} connections over {source_addrs} source address(es) need {need} ephemeral ports per \
             address, but net.ipv4.ip_local_port_range is {lo}-{hi} ({per_addr} ports). Use more \
             --source-addrs (127.0.0.1..127.0.0.N), or widen the range: \
             sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\""
        );
    }
    Ok(())
}

/// Checks that a server process may open enough files for `conns` connections.
///
/// # Errors
/// When its limit (read from `/proc/PID/limits`) is too low.
pub(crate) fn check_server_fds(pids: &[u32], conns: u64) -> anyhow::Result<()> {
    // Several pids: nginx spreads connections over its workers; check the total.
    let total: u64 = pids
        .iter()
        .filter_map(|&p| crate::procfs::max_open_files(p))
        .sum();
    if total == 0 {
        return Ok(());
    }
    if conns + 50 > total {
        bail!(
            "the server (pid {pids:?}) may open only {total} files but {conns} connections need about {}. \
             Start it with a higher limit (`ulimit -n {}` in its shell, LimitNOFILE= for systemd; the hard \
             limit caps it), or request fewer --connections",
            conns + 50,
            conns + 100,
        );
    }
    Ok(())
}
