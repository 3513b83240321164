//! A worker holds a slice of the subscriber connections. It runs inside the
//! coordinator when one process can hold them all, or as a child process (this same
//! binary, `crier-bench worker`) speaking JSON lines on stdin/stdout when the
//! open-file limit calls for several.

use crate::client::{self, ConnResult, Ctx};
use crate::plan::{Finish, FromWorker, ToWorker, WorkerPlan, WorkerReport};
use crate::procfs;
use anyhow::Context;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Distinct error messages kept per worker.
const MAX_ERROR_KINDS: usize = 8;

/// Opens the plan's connections, reports progress and readiness, and once told that
/// publishing is over, waits for the deliveries and sends its report.
///
/// # Errors
/// A bad plan (URL). Connection failures are counted, not returned.
pub(crate) async fn run(
    plan: WorkerPlan,
    mut control: mpsc::UnboundedReceiver<ToWorker>,
    out: mpsc::UnboundedSender<FromWorker>,
    is_child: bool,
) -> anyhow::Result<()> {
    let n = plan.len() as u64;
    let channels = plan.channels;
    let ctx = Arc::new(Ctx::new(plan)?);
    let (finish_tx, finish_rx) = watch::channel(None::<Arc<Finish>>);
    let mut tasks = JoinSet::new();
    for idx in ctx.plan.conn_start..ctx.plan.conn_end {
        tasks.spawn(client::run(ctx.clone(), idx, finish_rx.clone()));
    }
    let progress = |ctx: &Ctx| FromWorker::Progress {
        connected: ctx.connected.load(Ordering::Relaxed),
        failed: ctx.failed.load(Ordering::Relaxed),
        received: ctx.received.load(Ordering::Relaxed),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ready_sent = false;
    let mut last_progress = tokio::time::Instant::now();
    let finish = loop {
        tokio::select! {
            _ = tick.tick() => {
                let connected = ctx.connected.load(Ordering::Relaxed);
                let failed = ctx.failed.load(Ordering::Relaxed);
                if !ready_sent && connected + failed >= n {
                    ready_sent = true;
                    let last_us = ctx.last_admitted_us.load(Ordering::Relaxed);
                    let _ = out.send(FromWorker::Ready { connected, failed, last_us });
                } else if last_progress.elapsed() >= Duration::from_secs(1) {
                    last_progress = tokio::time::Instant::now();
                    let _ = out.send(progress(&ctx));
                }
            }
            cmd = control.recv() => match cmd {
                Some(ToWorker::Finish(f)) => break f,
                Some(ToWorker::Plan(_)) => {}
                // The coordinator is gone: stop at once.
                None => break Finish { published: vec![0; channels], drain_secs: 0.0 },
            },
        }
    };
    let _ = finish_tx.send(Some(Arc::new(finish.clone())));
    let mut report = Aggregate::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(result)) => report.add(&ctx.plan, &result, &finish),
                Some(Err(e)) => report.error(format!("connection task failed: {e}")),
                None => break,
            },
            _ = tick.tick() => { let _ = out.send(progress(&ctx)); }
        }
    }
    let mut report = report.finish();
    report.latency = ctx.latency.buckets();
    report.cpu_secs = is_child.then(procfs::self_cpu_secs);
    let _ = out.send(FromWorker::Report(Box::new(report)));
    Ok(())
}

/// Sums connection results into a worker report.
#[derive(Default)]
struct Aggregate {
    report: WorkerReport,
    errors: HashMap<String, u64>,
}

impl Aggregate {
    fn add(&mut self, plan: &WorkerPlan, r: &ConnResult, finish: &Finish) {
        let w = &mut self.report;
        if let Some(e) = &r.error {
            *self.errors.entry(e.clone()).or_default() += 1;
        }
        if !r.connected {
            w.failed += 1;
            return;
        }
        w.connected += 1;
        let mut complete = true;
        for t in &r.tracks {
            let published = finish
                .published
                .get(t.channel as usize)
                .copied()
                .unwrap_or(0);
            w.expected += published;
            w.received += t.received.min(published);
            if plan.urls.len() > 1 && plan.publisher_of(t.channel) != r.node {
                w.cross_node += t.received.min(published);
            }
            w.missing += t.missing(published);
            w.duplicates += t.duplicates;
            w.out_of_order += t.out_of_order;
            complete &= t.complete(published);
        }
        if r.error.is_some() && !complete {
            w.dropped += 1;
        }
        w.gaps += r.gaps;
        w.unexpected += r.unexpected;
        if r.first_us != 0 && (w.first_delivery_us == 0 || r.first_us < w.first_delivery_us) {
            w.first_delivery_us = r.first_us;
        }
        w.last_delivery_us = w.last_delivery_us.max(r.last_us);
    }

    fn error(&mut self, e: String) {
        *self.errors.entry(e).or_default() += 1;
    }

    fn finish(mut self) -> WorkerReport {
        let mut errors: Vec<(String, u64)> = self.errors.into_iter().collect();
        errors.sort_by_key(|k| std::cmp::Reverse(k.1));
        errors.truncate(MAX_ERROR_KINDS);
        self.report.errors = errors;
        self.report
    }
}

/// `crier-bench worker`: reads the plan and then commands as JSON lines on stdin,
/// writes progress and the report as JSON lines on stdout.
///
/// # Errors
/// When stdin does not start with a plan or stdout is closed.
pub(crate) async fn child_main() -> anyhow::Result<()> {
    crate::limits::raise_nofile();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines.next_line().await?.context("no plan on stdin")?;
    let ToWorker::Plan(plan) =
        serde_json::from_str(&first).context("first stdin line must be a plan")?
    else {
        anyhow::bail!("first stdin line must be a plan");
    };
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(cmd) = serde_json::from_str::<ToWorker>(&line) {
                if control_tx.send(cmd).is_err() {
                    break;
                }
            }
        }
        // stdin closed: dropping control_tx tells the worker to stop.
    });
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(msg) = out_rx.recv().await {
            let mut line = serde_json::to_vec(&msg)?;
            line.push(b'\n');
            stdout.write_all(&line).await?;
            stdout.flush().await?;
        }
        anyhow::Ok(())
    });
    run(plan, control_rx, out_tx, true).await?;
    writer.await??;
    Ok(())
}
