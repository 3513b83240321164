//! Server-Sent Events subscribers: Crier's `GET /app/KEY/sse?channels=a,b` (events of
//! type `message` whose data is the JSON envelope) or Nchan's EventSource on
//! `/sub/CHANNEL` (data is the raw message).

use super::ws::{clip, contains};
use super::{describe, Admission, ConnResult, Ctx, FinEvent, Finisher, Recv};
use crate::net::{self, HttpConn};
use crate::plan::Target;
use anyhow::bail;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Method;
use std::sync::Arc;

pub(super) async fn run(
    ctx: Arc<Ctx>,
    idx: usize,
    mut fin: Finisher,
    mut recv: Recv,
) -> ConnResult {
    let mut admission = Admission::new(&ctx);
    let opened = {
        let _permit = ctx.connect_permits.acquire().await.ok();
        tokio::time::timeout(ctx.connect_timeout(), open(&ctx, idx, &recv)).await
    };
    let (_conn, mut body) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return recv.into_result(&ctx, false, Some(describe(&e))),
        Err(_) => {
            let e = "SSE connect timed out".to_string();
            return recv.into_result(&ctx, false, Some(e));
        }
    };
    admission.subscribed();
    let error = pump(&ctx, &mut body, &mut fin, &mut recv).await;
    recv.into_result(&ctx, true, error)
}

/// The path of the event stream for this connection's channels.
pub(super) fn stream_path(ctx: &Ctx, recv: &Recv, kind: &str) -> String {
    let plan = &ctx.plan;
    match plan.target {
        Target::Crier => {
            let names: Vec<String> = recv.channels().map(|c| plan.channel_name(c)).collect();
            format!(
                "/app/{}/{kind}?channels={}",
                plan.app_key,
                net::encode_query(&names.join(","))
            )
        }
        Target::Nchan => {
            let channel = recv.channels().next().unwrap_or(0);
            format!("/sub/{}", plan.channel_name(channel))
        }
    }
}

async fn open(ctx: &Ctx, idx: usize, recv: &Recv) -> anyhow::Result<(HttpConn, Incoming)> {
    let src = net::source_ip(idx, ctx.plan.source_addrs);
    let mut conn = HttpConn::open(Some(src), ctx.endpoint(idx)).await?;
    let path = stream_path(ctx, recv, "sse");
    let headers = [
        ("accept", "text/event-stream"),
        ("cache-control", "no-cache"),
    ];
    let resp = conn
        .send(Method::GET, &path, &headers, Bytes::new())
        .await?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "GET {path}: HTTP {status}: {}",
            clip(&String::from_utf8_lossy(&body))
        );
    }
    Ok((conn, resp.into_body()))
}

async fn pump(
    ctx: &Ctx,
    body: &mut Incoming,
    fin: &mut Finisher,
    recv: &mut Recv,
) -> Option<String> {
    let crier = ctx.plan.target == Target::Crier;
    // Bytes after the last complete line.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    partial.extend_from_slice(&data);
                    let Some(end) = partial.iter().rposition(|&b| b == b'\n') else { continue };
                    let lines = &partial[..=end];
                    // Payloads never span lines, so scanning whole lines at once is exact.
                    recv.on_text(ctx, lines);
                    if crier && contains(lines, b"crier:gap") {
                        recv.gaps += count(lines, b"crier:gap");
                    }
                    partial.drain(..=end);
                    if fin.done(recv) {
                        return None;
                    }
                }
                Some(Err(e)) => return (!fin.done(recv)).then(|| format!("SSE read: {e}")),
                None => return (!fin.done(recv)).then(|| "SSE stream ended".to_string()),
            },
            ev = fin.next() => match ev {
                FinEvent::Published if fin.done(recv) => return None,
                FinEvent::Published => {}
                FinEvent::Deadline => return None,
            },
        }
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count() as u64
}
