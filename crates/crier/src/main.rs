//! The `crier` command: `serve` (the default) and `publish`.

mod publish;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crier_server::config::{Config, Overrides, DEV_APP_ID, DEV_APP_KEY, DEV_APP_SECRET};

// jemalloc rather than glibc malloc: requests, publishes and deliveries allocate small
// short-lived buffers on every worker thread, and glibc's free-list work showed up at
// about a fifth of the server's CPU. Measured (BENCHMARKS.md): 12-24% less server CPU
// per publish, the same 3.4 KiB per idle WebSocket; an SSE stream costs 1.4 KiB more.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Crier: a real-time push server speaking the Pusher protocol, with SSE, long-polling
/// and durable history. Every flag can also be set through the CRIER_* environment
/// variable shown, or in the TOML file given with --config.
#[derive(Parser)]
#[command(name = "crier", version, about, long_about = None, after_help = config_help())]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Overrides,
}

/// Shown after `--help`: the config file, every key with its default.
fn config_help() -> String {
    format!(
        "Config file (--config): every key, with its default; the README describes each.\n\n{}",
        crier_server::config::defaults_toml()
    )
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(Box<Overrides>),
    /// Publish an event through a server's HTTP API, signed with the app's secret.
    Publish(publish::PublishArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Publish(args)) => publish::run(&args),
        Some(Command::Serve(o)) => serve(&o),
        None => serve(&cli.serve),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crier: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn serve(overrides: &Overrides) -> anyhow::Result<()> {
    let config = Config::load(overrides)?;
    crier_server::logging::init(&config)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if config.server.workers > 0 {
        runtime.worker_threads(config.server.workers);
    }
    runtime
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve_until_signal(config))
}

/// Pending connections the kernel may queue before accept. A burst of reconnecting
/// clients (a deploy, a network blip) arrives faster than one accept loop drains it;
/// a short queue turns that burst into SYN drops and second-long retransmit waits.
/// The kernel caps this at net.core.somaxconn.
const ACCEPT_BACKLOG: u32 = 8192;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

async fn serve_until_signal(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let listener = bind(addr).with_context(|| format!("server.listen: cannot bind {addr}"))?;
    let dev = config.uses_dev_credentials();
    let apps: Vec<String> = config.apps.iter().map(|a| a.key.clone()).collect();
    let running = crier_server::run(listener, config).await?;
    // Registered before the banner: a SIGTERM sent as soon as it is printed (a
    // supervisor, a test) must drain the server, not meet the default action.
    let stop = shutdown_signal();
    if let Some(tls) = running.tls.clone() {
        reload_on_sighup(tls);
    }
    let addr = running.addr;
    let (http, ws) = if running.tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    println!("crier listening on {http}://{addr}");
    for key in &apps {
        println!("  WebSocket (Pusher): {ws}://{addr}/app/{key}?protocol=7");
        println!("  SSE:                {http}://{addr}/app/{key}/sse?channels=...");
        println!("  long-poll:          {http}://{addr}/app/{key}/poll?channels=...");
    }
    println!("  HTTP API:           {http}://{addr}/apps/{{app_id}}/events");
    if let Some(udp) = running.udp_addr {
        println!("  UDP ingest:         {udp}");
    }
    println!("  health: /health  ready: /ready  metrics: /metrics");
    if dev {
        println!(
            "WARNING: development credentials in use (app id {DEV_APP_ID:?}, key {DEV_APP_KEY:?}, \
             secret {DEV_APP_SECRET:?}); configure real apps before exposing this server"
        );
    }
    stop.await;
    running.shutdown();
    running.wait().await
}

/// Reads the TLS certificate and key again on every SIGHUP (the files are also
/// watched; the signal is for an operator who does not want to wait).
fn reload_on_sighup(tls: crier_server::tls::Tls) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            tracing::warn!("no SIGHUP handler, TLS files are still watched: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded on SIGHUP"),
                Err(e) => {
                    tracing::warn!("TLS certificate not reloaded, the previous one stays: {e}");
                }
            }
        }
    });
}

/// Installs the SIGTERM and SIGINT handlers now; the future ends at the first signal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers the server can still be stopped by killing it.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
