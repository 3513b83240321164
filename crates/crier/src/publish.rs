//! `crier publish`: one signed `POST /apps/{id}/events`, over a plain HTTP/1.1
//! connection (the server is local or behind a TLS-terminating proxy).

use anyhow::{bail, Context};
use clap::Args;
use crier_protocol::signature;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// Channel to publish to (repeat for several).
    #[arg(long, short, required = true)]
    channel: Vec<String>,
    /// Event name.
    #[arg(long, short)]
    event: String,
    /// Event data (a string; JSON is passed through as text).
    #[arg(long, short)]
    data: String,
    /// Server address.
    #[arg(long, env = "CRIER_URL", default_value = "http://127.0.0.1:6001")]
    url: String,
    #[arg(long, env = "CRIER_APP_ID", default_value = "1")]
    app_id: String,
    #[arg(long, env = "CRIER_APP_KEY", default_value = "app-key")]
    app_key: String,
    #[arg(
        long,
        env = "CRIER_APP_SECRET",
        default_value = "app-secret",
        hide_env_values = true
    )]
    app_secret: String,
}

pub(crate) fn run(args: &PublishArgs) -> anyhow::Result<()> {
    let host = args
        .url
        .strip_prefix("http://")
        .context("--url must start with http://")?
        .trim_end_matches('/');
    let body = serde_json::json!({
        "name": args.event,
        "channels": args.channel,
        "data": args.data,
    })
    .to_string();
    let path = format!("/apps/{}/events", args.app_id);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let query = signature::sign_request(
        &args.app_key,
        &args.app_secret,
        "POST",
        &path,
        &[],
        body.as_bytes(),
        now,
    );
    let mut stream =
        TcpStream::connect(host).with_context(|| format!("cannot connect to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST {path}?{query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status_line = response.lines().next().unwrap_or_default();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    if !status_line.contains(" 200 ") {
        bail!("server answered {status_line}: {body}");
    }
    println!("{body}");
    Ok(())
}
