//! Server-Sent Events: `GET /app/{key}/sse?channels=a,b`. Each message is one
//! `message` event whose data is the JSON envelope and whose `id:` is a cursor over
//! every channel of the stream, so a browser `EventSource` resumes exactly where it
//! stopped (it sends `Last-Event-ID`).

use super::stream_request::{add_cors, admit, StreamQuery};
use crate::metrics::{self as m, CloseReason, OpenConnection, Transport};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use crier_core::outbox::{outbox, Disconnect, Next, OutboxReceiver, Outgoing};
use crier_core::stream::{Stream, StreamItem};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reconnect delay suggested to `EventSource`, in milliseconds.
const RETRY_MS: u32 = 1000;
/// Most events written in one chunk.
const MAX_BATCH: usize = 64;

fn push_event(buf: &mut BytesMut, cursor: &str, envelope: &[u8]) {
    buf.put_slice(b"id: ");
    buf.put_slice(cursor.as_bytes());
    buf.put_slice(b"\nevent: message\ndata: ");
    buf.put_slice(envelope);
    buf.put_slice(b"\n\n");
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    client: Option<axum::Extension<crate::limits::ClientAddr>>,
) -> Response {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.last_event_id.clone());
    let admitted = match admit(&state, &key, &query, &headers, last_id.as_deref()).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let per_ip =
        match super::stream_request::per_ip(&state, &admitted.app, client, admitted.cors.clone()) {
            Ok(slot) => slot,
            Err(e) => return e.into_response(),
        };
    let (tx, rx) = outbox(state.node.settings().outbox_capacity);
    let opened = Stream::open(
        state.node.clone(),
        admitted.app.clone(),
        admitted.channels,
        admitted.cursor.as_ref(),
        admitted.member.as_ref(),
        tx,
    )
    .await;
    let stream = match opened {
        Ok(o) => o,
        Err(e) => return super::stream_request::open_failed(&e, admitted.cors).into_response(),
    };
    let first = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    let body = SseBody {
        _per_ip: per_ip,
        metric: OpenConnection::new(Transport::Sse, &admitted.app.id, CloseReason::Client),
        chunk: Chunk::default(),
        stream,
        rx,
        shutdown: state.shutdown.clone(),
        pending: Some(first),
        heartbeat: Duration::from_secs(state.config.server.sse_heartbeat_secs),
    };
    let mut res = Response::new(Body::from_stream(futures_util::stream::unfold(
        body,
        SseBody::next_chunk,
    )));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(origin) = admitted.cors {
        add_cors(h, origin);
    }
    res
}

struct SseBody {
    /// Counts the stream against its client address while it lives.
    _per_ip: Option<crate::limits::IpSlot>,
    /// Counts the stream open until the body is dropped (the client went away, unless
    /// the reason says otherwise).
    metric: OpenConnection,
    /// What the chunk being built carries, for the metrics.
    chunk: Chunk,
    stream: Stream,
    rx: OutboxReceiver,
    shutdown: CancellationToken,
    pending: Option<Bytes>,
    /// Silence after which a comment line keeps proxies from closing the stream
    /// (`[server] sse_heartbeat_secs`).
    heartbeat: Duration,
}

/// Live messages in the chunk being built.
#[derive(Default)]
struct Chunk {
    messages: u64,
    oldest: Option<std::time::Instant>,
}

impl SseBody {
    fn add(&mut self, buf: &mut BytesMut, item: Outgoing) {
        // Presence and client-event frames are Pusher-protocol only.
        if let Outgoing::Message(m) = item {
            if self.stream.accept(&m) {
                self.chunk.messages += 1;
                self.chunk.oldest = self.chunk.oldest.or(Some(m.accepted_at));
                push_event(
                    buf,
                    &self.stream.cursor(),
                    &StreamItem::Message(m).envelope(),
                );
            }
        }
    }

    /// Hands a chunk to the HTTP layer, counting it.
    fn emit(mut self, buf: BytesMut) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        let hot = m::transport(Transport::Sse);
        hot.bytes_sent.increment(buf.len() as u64);
        let chunk = std::mem::take(&mut self.chunk);
        hot.delivered.increment(chunk.messages);
        if let Some(accepted_at) = chunk.oldest {
            hot.delivered_after(accepted_at);
        }
        Some((Ok(buf.freeze()), self))
    }

    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if let Some(first) = self.pending.take() {
            return self.emit(BytesMut::from(first));
        }
        loop {
            let mut buf = BytesMut::new();
            if self.stream.replaying() {
                // Missed messages go out a page per chunk, each read only once the
                // previous chunk was taken, so a client that reads slowly (or not at
                // all) holds one page. Live messages of channels already caught up
                // are drained first: a long replay must not overflow the outbox.
                for _ in 0..MAX_BATCH {
                    let Some(item) = self.rx.try_next() else {
                        break;
                    };
                    self.add(&mut buf, item);
                }
                match self.stream.replay_page(MAX_BATCH).await {
                    Ok(page) => {
                        for item in &page {
                            self.stream.advance(item);
                            push_event(&mut buf, &self.stream.cursor(), &item.envelope());
                        }
                    }
                    Err(e) => {
                        // The browser reconnects with its cursor and resumes.
                        tracing::warn!(error = %e, "history read failed during an SSE resume");
                        return None;
                    }
                }
                if !buf.is_empty() {
                    return self.emit(buf);
                }
                continue;
            }
            tokio::select! {
                next = self.rx.next() => match next {
                    Next::Send(item) => {
                        self.add(&mut buf, item);
                        for _ in 1..MAX_BATCH {
                            let Some(item) = self.rx.try_next() else { break };
                            self.add(&mut buf, item);
                        }
                    }
                    // Slow consumer: drop the connection rather than end the response.
                    // Ending it gracefully would leave hyper flushing what the client
                    // does not read until the write deadline (and count the client a
                    // second time there). The browser resumes from its cursor either way.
                    Next::Close(reason) if reason == Disconnect::slow_consumer() => {
                        self.metric.set_reason(CloseReason::SlowConsumer);
                        let e = std::io::Error::other("slow consumer");
                        return Some((Err(e), self));
                    }
                    Next::Close(reason) => {
                        self.metric.closed_by(&reason);
                        return None;
                    }
                },
                () = tokio::time::sleep(self.heartbeat) => buf.put_slice(b": heartbeat\n\n"),
                () = self.shutdown.cancelled() => {
                    self.metric.set_reason(CloseReason::Server);
                    return None;
                }
            }
            if !buf.is_empty() {
                return self.emit(buf);
            }
        }
    }
}
