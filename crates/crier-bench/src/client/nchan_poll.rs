//! Nchan long-poll subscribers: `GET /sub/CHANNEL`, one message per answer, the
//! position carried in `Last-Modified`/`Etag` and sent back as
//! `If-Modified-Since`/`If-None-Match`. Channels are new for every run and Nchan is
//! configured to start from the oldest buffered message, so a poller that arrives
//! after the first publish still gets it.

use super::sse::stream_path;
use super::ws::clip;
use super::{describe, Admission, ConnResult, Ctx, FinEvent, Finisher, Recv};
use crate::net::{self, HttpConn};
use anyhow::bail;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use std::sync::Arc;

/// Where the next poll continues.
#[derive(Default, Clone)]
struct Position {
    last_modified: Option<String>,
    etag: Option<String>,
}

pub(super) async fn run(
    ctx: Arc<Ctx>,
    idx: usize,
    mut fin: Finisher,
    mut recv: Recv,
) -> ConnResult {
    let mut admission = Admission::new(&ctx);
    let path = stream_path(&ctx, &recv, "poll");
    let opened = {
        let _permit = ctx.connect_permits.acquire().await.ok();
        let src = net::source_ip(idx, ctx.plan.source_addrs);
        tokio::time::timeout(
            ctx.connect_timeout(),
            HttpConn::open(Some(src), ctx.endpoint(idx)),
        )
        .await
    };
    let mut conn = match opened {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return recv.into_result(&ctx, false, Some(describe(&e))),
        Err(_) => return recv.into_result(&ctx, false, Some("long-poll connect timed out".into())),
    };
    admission.subscribed();
    let mut position = Position::default();
    let error = loop {
        let poll = fetch(&mut conn, &path, position.clone());
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
            Some(Ok((next, body))) => {
                if let Some(body) = body {
                    recv.on_text(&ctx, &body);
                }
                position = next;
                if fin.done(&recv) {
                    break None;
                }
            }
            Some(Err(e)) => break (!fin.done(&recv)).then(|| describe(&e)),
        }
    };
    recv.into_result(&ctx, true, error)
}

/// One poll: the next position and the message, if one came before the timeout.
async fn fetch(
    conn: &mut HttpConn,
    path: &str,
    at: Position,
) -> anyhow::Result<(Position, Option<Bytes>)> {
    let mut headers = Vec::new();
    if let Some(v) = &at.last_modified {
        headers.push(("if-modified-since", v.as_str()));
    }
    if let Some(v) = &at.etag {
        headers.push(("if-none-match", v.as_str()));
    }
    let resp = conn.send(Method::GET, path, &headers, Bytes::new()).await?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let next = Position {
        last_modified: header("last-modified").or(at.last_modified.clone()),
        etag: header("etag").or(at.etag.clone()),
    };
    let body = resp.into_body().collect().await?.to_bytes();
    match status {
        200 => Ok((next, Some(body))),
        // Timed out without a message: poll again from the same place.
        304 | 408 => Ok((at, None)),
        _ => bail!(
            "GET {path}: HTTP {status}: {}",
            clip(&String::from_utf8_lossy(&body))
        ),
    }
}
