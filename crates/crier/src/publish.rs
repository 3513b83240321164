//! `crier publish`: one signed `POST /apps/{id}/events` through reqwest, printing the
//! server's answer, or its error message on failure.

use anyhow::{bail, Context};
use clap::Args;
use crier_protocol::signature;
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
    /// App id [apps.id].
    #[arg(long, env = "CRIER_APP_ID", default_value = "1")]
    app_id: String,
    /// App key [apps.key].
    #[arg(long, env = "CRIER_APP_KEY", default_value = "app-key")]
    app_key: String,
    /// App secret [apps.secret].
    #[arg(
        long,
        env = "CRIER_APP_SECRET",
        default_value = "app-secret",
        hide_env_values = true
    )]
    app_secret: String,
}

/// How long the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run(args: &PublishArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(publish(args))
}

async fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/');
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
    let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let response = client
        .post(format!("{base}{path}?{query}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot publish to {base}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("{base} answered {status} and then failed"))?;
    if !status.is_success() {
        // The API answers errors as {"error": "..."}; anything else is shown as it came.
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("server answered {status}: {message}");
    }
    println!("{text}");
    Ok(())
}
