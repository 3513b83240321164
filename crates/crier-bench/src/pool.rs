//! The coordinator's side of its workers: in-process tasks, or children re-executing
//! this binary as `crier-bench worker` with JSON lines on their stdin and stdout.

use crate::plan::{FromWorker, ToWorker, WorkerPlan, WorkerReport};
use anyhow::Context;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

enum Control {
    InProcess(mpsc::UnboundedSender<ToWorker>),
    Child(ChildStdin),
}

/// Running workers and the merged stream of what they say, tagged with their index.
pub(crate) struct Pool {
    controls: Vec<Control>,
    children: Vec<Child>,
    rx: mpsc::UnboundedReceiver<(usize, FromWorker)>,
}

impl Pool {
    /// Starts one worker per plan: in this process when `in_process`, else as children.
    ///
    /// # Errors
    /// When a child process cannot be started.
    pub(crate) async fn start(plans: Vec<WorkerPlan>, in_process: bool) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut controls = Vec::new();
        let mut children = Vec::new();
        for (i, plan) in plans.into_iter().enumerate() {
            if in_process {
                controls.push(Control::InProcess(spawn_local(i, plan, tx.clone())));
                continue;
            }
            let n = plan.len() as u64;
            let exe =
                std::env::current_exe().context("cannot find this program to start workers")?;
            let mut child = Command::new(exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            write_line(&mut stdin, &ToWorker::Plan(plan)).await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut reported = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<FromWorker>(&line) {
                        Ok(msg) => {
                            reported |= matches!(msg, FromWorker::Report(_));
                            let _ = tx.send((i, msg));
                        }
                        Err(e) => {
                            eprintln!("crier-bench: worker {i} said something unreadable: {e}")
                        }
                    }
                }
                if !reported {
                    let _ = tx.send((i, lost_worker(n)));
                }
            });
            controls.push(Control::Child(stdin));
            children.push(child);
        }
        Ok(Self {
            controls,
            children,
            rx,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.controls.len()
    }

    /// Sends the same command to every worker.
    pub(crate) async fn broadcast(&mut self, cmd: &ToWorker) {
        for c in &mut self.controls {
            match c {
                Control::InProcess(tx) => {
                    let _ = tx.send(cmd.clone());
                }
                Control::Child(stdin) => {
                    let _ = write_line(stdin, cmd).await;
                }
            }
        }
    }

    /// The next message from any worker.
    pub(crate) async fn recv(&mut self) -> Option<(usize, FromWorker)> {
        self.rx.recv().await
    }

    /// Waits for the children to exit (they do after their report).
    pub(crate) async fn shutdown(mut self) {
        self.controls.clear();
        for mut child in self.children.drain(..) {
            if tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

fn spawn_local(
    i: usize,
    plan: WorkerPlan,
    tx: mpsc::UnboundedSender<(usize, FromWorker)>,
) -> mpsc::UnboundedSender<ToWorker> {
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let n = plan.len() as u64;
    tokio::spawn(async move {
        if let Err(e) = crate::worker::run(plan, control_rx, out_tx, false).await {
            eprintln!("crier-bench: worker {i}: {e:#}");
        }
    });
    tokio::spawn(async move {
        let mut reported = false;
        while let Some(msg) = out_rx.recv().await {
            reported |= matches!(msg, FromWorker::Report(_));
            let _ = tx.send((i, msg));
        }
        if !reported {
            let _ = tx.send((i, lost_worker(n)));
        }
    });
    control_tx
}

/// The report of a worker that died: all its connections count as failed.
fn lost_worker(n: u64) -> FromWorker {
    FromWorker::Report(Box::new(WorkerReport {
        failed: n,
        errors: vec![("worker exited without a report".into(), 1)],
        ..WorkerReport::default()
    }))
}

async fn write_line(stdin: &mut ChildStdin, msg: &ToWorker) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(msg)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await?;
    Ok(())
}
