//! WebSocket subscribers: the Pusher protocol v7 against Crier (connect, wait for
//! `pusher:connection_established`, subscribe, wait for
//! `pusher_internal:subscription_succeeded`, answer `pusher:ping`), or Nchan's raw
//! messages on `/sub/CHANNEL`.

use super::{describe, Admission, ConnResult, Ctx, FinEvent, Finisher, Recv};
use crate::net;
use crate::plan::Target;
use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// Small buffers: tens of thousands of mostly idle sockets live in one process.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

pub(super) async fn run(
    ctx: Arc<Ctx>,
    idx: usize,
    mut fin: Finisher,
    mut recv: Recv,
) -> ConnResult {
    let mut admission = Admission::new(&ctx);
    let opened = {
        let _permit = ctx.connect_permits.acquire().await.ok();
        tokio::time::timeout(ctx.connect_timeout(), open(&ctx, idx, &mut recv)).await
    };
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return recv.into_result(&ctx, false, Some(describe(&e))),
        Err(_) => {
            let e = "WebSocket connect and subscribe timed out".to_string();
            return recv.into_result(&ctx, false, Some(e));
        }
    };
    admission.subscribed();
    let error = pump(&ctx, &mut ws, &mut fin, &mut recv).await;
    let _ = ws.close(None).await;
    recv.into_result(&ctx, true, error)
}

async fn open(ctx: &Ctx, idx: usize, recv: &mut Recv) -> anyhow::Result<Ws> {
    let plan = &ctx.plan;
    let stream = net::connect(
        Some(net::source_ip(idx, plan.source_addrs)),
        ctx.endpoint(idx).addr,
    )
    .await
    .context("TCP connect")?;
    let host = &ctx.endpoint(idx).host;
    let url = match plan.target {
        Target::Crier => format!(
            "ws://{host}/app/{}?protocol=7&client=crier-bench&version=0.1",
            plan.app_key
        ),
        Target::Nchan => {
            let channel = recv.channels().next().unwrap_or(0);
            format!("ws://{host}/sub/{}", plan.channel_name(channel))
        }
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config()))
        .await
        .context("WebSocket handshake")?;
    if plan.target == Target::Crier {
        subscribe(ctx, &mut ws, recv).await?;
    }
    Ok(ws)
}

/// The Pusher handshake: connection_established, then one subscribe per channel and
/// their subscription_succeeded (messages that arrive meanwhile are counted).
async fn subscribe(ctx: &Ctx, ws: &mut Ws, recv: &mut Recv) -> anyhow::Result<()> {
    let first = next_text(ws).await?;
    let event = event_name(&first)?;
    if event != "pusher:connection_established" {
        bail!(
            "expected pusher:connection_established, got {}",
            clip(&first)
        );
    }
    let mut pending = HashSet::new();
    for channel in recv.channels().collect::<Vec<_>>() {
        let name = ctx.plan.channel_name(channel);
        let frame = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": name}});
        ws.send(Message::text(frame.to_string())).await?;
        pending.insert(name);
    }
    while !pending.is_empty() {
        let text = next_text(ws).await?;
        if crate::payload::find(text.as_bytes()).is_some() {
            recv.on_text(ctx, text.as_bytes());
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&text).context("frame is not JSON")?;
        match value["event"].as_str().unwrap_or("") {
            "pusher_internal:subscription_succeeded" => {
                pending.remove(value["channel"].as_str().unwrap_or(""));
            }
            "pusher:ping" => ws.send(Message::text(PONG)).await?,
            "pusher:error" | "pusher:subscription_error" => bail!("server said {}", clip(&text)),
            _ => {}
        }
    }
    Ok(())
}

/// Reads frames until the run is over; returns why the connection broke, if it did.
async fn pump(ctx: &Ctx, ws: &mut Ws, fin: &mut Finisher, recv: &mut Recv) -> Option<String> {
    let crier = ctx.plan.target == Target::Crier;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let bytes = t.as_bytes();
                    if recv.on_text(ctx, bytes) > 0 || !crier {
                        // A published message (or any Nchan message): counted.
                    } else if contains(bytes, b"\"pusher:ping\"") {
                        if let Err(e) = ws.send(Message::text(PONG)).await {
                            return Some(format!("sending pong: {e}"));
                        }
                    } else if contains(bytes, b"crier:gap") {
                        recv.gaps += 1;
                    } else if contains(bytes, b"\"pusher:error\"") {
                        return Some(format!("server said {}", clip(t.as_str())));
                    }
                    if fin.done(recv) {
                        return None;
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    recv.on_text(ctx, &b);
                }
                Some(Ok(Message::Close(frame))) => {
                    return (!fin.done(recv)).then(|| format!("server closed the WebSocket: {frame:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return (!fin.done(recv)).then(|| format!("WebSocket read: {e}")),
                None => return (!fin.done(recv)).then(|| "WebSocket closed".to_string()),
            },
            ev = fin.next() => match ev {
                FinEvent::Published if fin.done(recv) => return None,
                FinEvent::Published => {}
                FinEvent::Deadline => return None,
            },
        }
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
            Some(Ok(Message::Close(frame))) => bail!("server closed the WebSocket: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(anyhow!(e).context("WebSocket read")),
            None => bail!("WebSocket closed during the handshake"),
        }
    }
}

fn event_name(text: &str) -> anyhow::Result<String> {
    let value: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("frame is not JSON: {}", clip(text)))?;
    Ok(value["event"].as_str().unwrap_or("").to_string())
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}
