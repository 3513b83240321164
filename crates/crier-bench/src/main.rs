//! `crier-bench`: the load generator for Crier (and, for comparison, Nchan). See
//! `BENCHMARKS.md` at the top of the repository for the scenarios and results.

mod cli;
mod client;
mod cluster;
mod hist;
mod limits;
mod net;
mod payload;
mod plan;
mod pool;
mod procfs;
mod publish;
mod report;
mod run;
mod smoke;
mod soak;
mod spawn;
mod track;
mod worker;

use anyhow::{bail, Context};
use clap::Parser;
use cli::{Cli, Command, Opts};
use plan::Target;
use report::Report;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crier-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("crier-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; `Ok(false)` when a run completed but found a problem.
async fn dispatch(command: Command) -> anyhow::Result<bool> {
    let (scenario, opts) = match command {
        Command::Worker => {
            worker::child_main().await?;
            return Ok(true);
        }
        Command::Smoke(opts) => return smoke::run(&opts).await,
        Command::Soak(opts) => {
            if opts.target == Target::Nchan {
                bail!("the soak speaks the Pusher protocol; run it against Crier");
            }
            return soak::run(&opts.spec("soak")?, opts.json).await;
        }
        Command::Cluster(c) => {
            let report = run_one(&c.spec()?, &c.opts).await?;
            if c.opts.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            return Ok(report.ok);
        }
        Command::Compare {
            scenario,
            nchan_url,
            opts,
        } => return compare(&scenario, &nchan_url, opts).await,
        Command::Idle(o) => ("idle", o),
        Command::Fanout(o) => ("fanout", o),
        Command::Channels(o) => ("channels", o),
        Command::Publish(o) => ("publish", o),
        Command::Sse(o) => ("sse", o),
        Command::Poll(o) => ("poll", o),
    };
    if scenario == "publish" && opts.target == Target::Nchan {
        bail!("the publish scenario measures durable history, which Nchan does not keep on disk");
    }
    let mut reports = Vec::new();
    if scenario == "publish" && opts.spawns() && opts.fsync.is_none() {
        // One server per fsync policy, so the cost of durability shows.
        for policy in ["always", "grouped"] {
            let mut spec = opts.spec(scenario)?;
            spec.server = opts.server(Some(policy.into()));
            reports.push(run_one(&spec, &opts).await?);
        }
    } else {
        reports.push(run_one(&opts.spec(scenario)?, &opts).await?);
    }
    if opts.json {
        let value = match reports.as_slice() {
            [one] => serde_json::to_value(one)?,
            many => serde_json::to_value(many)?,
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(reports.iter().all(|r| r.ok))
}

async fn run_one(spec: &run::RunSpec, opts: &Opts) -> anyhow::Result<Report> {
    let report = run::run(spec).await?;
    if !opts.json {
        println!("{}", report.human());
    }
    Ok(report)
}

/// `compare SCENARIO`: the same run against Crier and Nchan, then the ratio table.
async fn compare(scenario: &str, nchan_url: &str, opts: Opts) -> anyhow::Result<bool> {
    if !["idle", "fanout", "channels", "sse", "poll"].contains(&scenario) {
        bail!("compare runs idle, fanout, channels, sse or poll (Nchan keeps no durable history to compare publish with)");
    }
    let endpoint = net::Endpoint::parse(nchan_url)?;
    tokio::net::TcpStream::connect(endpoint.addr).await.with_context(|| {
        format!("no Nchan at {nchan_url}: start it with bench/nchan/run.sh start (or pass --nchan-url)")
    })?;
    let mut crier_opts = opts.clone();
    crier_opts.target = Target::Crier;
    let mut nchan_opts = opts;
    nchan_opts.target = Target::Nchan;
    nchan_opts.url = Some(nchan_url.to_string());
    nchan_opts.spawn_server = None;
    nchan_opts.server_pids = Vec::new();
    let crier = run_one(&crier_opts.spec(scenario)?, &crier_opts).await?;
    let nchan = run_one(&nchan_opts.spec(scenario)?, &nchan_opts).await?;
    if crier_opts.json {
        let value = serde_json::json!({"crier": crier, "nchan": nchan});
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", report::ratio_table(&crier, &nchan));
    }
    Ok(crier.ok && nchan.ok)
}
