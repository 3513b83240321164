//! Crier long-poll subscribers: `GET /app/KEY/poll?channels=..&cursor=..&timeout=..`
//! answering `{"messages": [envelope...], "cursor": "..."}`. A first poll with
//! `timeout=0` fetches the current cursor, so the subscriber is in place before
//! publishing starts and, passing cursors back, loses nothing between polls.

use super::sse::stream_path;
use super::ws::clip;
use super::{describe, Admission, ConnResult, Ctx, FinEvent, Finisher, Recv};
use crate::net::{self, HttpConn};
use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct Batch {
    messages: Vec<Envelope>,
    cursor: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    event: String,
    #[serde(default)]
    data: serde_json::Value,
}

pub(super) async fn run(
    ctx: Arc<Ctx>,
    idx: usize,
    mut fin: Finisher,
    mut recv: Recv,
) -> ConnResult {
    let mut admission = Admission::new(&ctx);
    let base = stream_path(&ctx, &recv, "poll");
    let opened = {
        let _permit = ctx.connect_permits.acquire().await.ok();
        tokio::time::timeout(ctx.connect_timeout(), open(&ctx, idx, &base, &mut recv)).await
    };
    let (mut conn, mut cursor) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return recv.into_result(&ctx, false, Some(describe(&e))),
        Err(_) => {
            let e = "long-poll connect timed out".to_string();
            return recv.into_result(&ctx, false, Some(e));
        }
    };
    admission.subscribed();
    let timeout = ctx.plan.poll_timeout_secs;
    let error = loop {
        let path = format!(
            "{base}&cursor={}&timeout={timeout}",
            net::encode_query(&cursor)
        );
        let poll = fetch(&mut conn, &path);
        tokio::pin!(poll);
        let answer = loop {
            tokio::select! {
                answer = &mut poll => break Some(answer),
                ev = fin.next() => match ev {
                    FinEvent::Published if fin.done(&recv) => break None,
                    FinEvent::Published => {}
                    FinEvent::Deadline => break None,
                },
            }
        };
        match answer {
            None => break None,
            Some(Ok(batch)) => {
                cursor = take(&ctx, &mut recv, batch);
                if fin.done(&recv) {
                    break None;
                }
            }
            Some(Err(e)) => break (!fin.done(&recv)).then(|| describe(&e)),
        }
    };
    recv.into_result(&ctx, true, error)
}

/// Connects and gets the starting cursor.
async fn open(
    ctx: &Ctx,
    idx: usize,
    base: &str,
    recv: &mut Recv,
) -> anyhow::Result<(HttpConn, String)> {
    let src = net::source_ip(idx, ctx.plan.source_addrs);
    let mut conn = HttpConn::open(Some(src), ctx.endpoint(idx)).await?;
    let batch = match fetch(&mut conn, &format!("{base}&timeout=0")).await {
        Ok(batch) => batch,
        // A server that wants a positive timeout: the shortest one.
        Err(_) if !conn.is_closed() => fetch(&mut conn, &format!("{base}&timeout=1")).await?,
        Err(e) => return Err(e),
    };
    let cursor = take(ctx, recv, batch);
    Ok((conn, cursor))
}

async fn fetch(conn: &mut HttpConn, path: &str) -> anyhow::Result<Batch> {
    let (status, body) = conn
        .call(
            Method::GET,
            path,
            &[("accept", "application/json")],
            Bytes::new(),
        )
        .await?;
    if status != 200 {
        bail!(
            "GET {path}: HTTP {status}: {}",
            clip(&String::from_utf8_lossy(&body))
        );
    }
    serde_json::from_slice(&body).with_context(|| {
        format!(
            "GET {path}: not a poll answer: {}",
            clip(&String::from_utf8_lossy(&body))
        )
    })
}

/// Records a batch's messages; returns the cursor to poll from next.
fn take(ctx: &Ctx, recv: &mut Recv, batch: Batch) -> String {
    for m in &batch.messages {
        if m.event == "crier:gap" {
            recv.gaps += 1;
        } else if let Some(data) = m.data.as_str() {
            recv.on_text(ctx, data.as_bytes());
        } else {
            recv.on_text(ctx, m.data.to_string().as_bytes());
        }
    }
    batch.cursor
}
