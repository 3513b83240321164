//! HTTP long-polling: `GET /app/{key}/poll?channels=a,b&cursor=C&timeout=S`. Answers
//! at once when messages follow the cursor (in pages), otherwise holds the request
//! until one arrives or the timeout passes. Presence members who poll hold a lease
//! that each poll renews; when polls stop, the lease expires and the member leaves.

use super::stream_request::{add_cors, admit, StreamQuery};
use crate::metrics::{self as m, CloseReason, OpenConnection, Transport};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use crier_core::outbox::{outbox, Next, Outgoing};
use crier_core::presence::PresenceJoin;
use crier_core::stream::{Stream, StreamMember};
use crier_core::{App, Node};
use crier_protocol::{ChannelKind, ChannelName};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const DEFAULT_TIMEOUT_SECS: u64 = 30;
const MAX_TIMEOUT_SECS: u64 = 120;
/// Most messages in one answer, over all its channels; the client polls again with
/// the returned cursor for more.
const PAGE: usize = 100;

type LeaseKey = (Arc<str>, ChannelName, Arc<str>);

/// Presence memberships of long-poll clients, kept between their requests.
#[derive(Default)]
pub struct PollLeases {
    leases: Mutex<HashMap<LeaseKey, (Arc<str>, Instant)>>,
}

impl PollLeases {
    /// Joins or renews `member` on each presence channel until `until`.
    async fn renew(
        &self,
        node: &Node,
        app: &Arc<App>,
        channels: &[ChannelName],
        member: &StreamMember,
        until: Instant,
    ) -> Result<(), ChannelName> {
        for channel in channels
            .iter()
            .filter(|c| c.kind() == ChannelKind::Presence)
        {
            let key = (app.id.clone(), channel.clone(), member.user_id.clone());
            if let Some(lease) = self.leases.lock().get_mut(&key) {
                lease.1 = lease.1.max(until);
                continue;
            }
            let (_, holder) = node.new_connection();
            let join = PresenceJoin {
                user_id: member.user_id.clone(),
                user_info: member.user_info.clone(),
                max_members: app.limits.max_presence_members,
            };
            node.join_member(&app.id, channel, &holder, join)
                .await
                .map_err(|_| channel.clone())?;
            // A concurrent poll of the same member may have joined meanwhile: keep one
            // lease, and end the other's membership.
            let mut leases = self.leases.lock();
            if let Some(lease) = leases.get_mut(&key) {
                lease.1 = lease.1.max(until);
                drop(leases);
                node.leave_member(&app.id, channel, &holder);
            } else {
                leases.insert(key, (holder, until));
            }
        }
        Ok(())
    }

    /// Ends the memberships whose clients stopped polling.
    pub fn expire(&self, node: &Node, now: Instant) {
        let expired: Vec<(LeaseKey, Arc<str>)> = {
            let mut leases = self.leases.lock();
            let keys: Vec<LeaseKey> = leases
                .iter()
                .filter(|(_, (_, until))| *until <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| leases.remove(&k).map(|(holder, _)| (k, holder)))
                .collect()
        };
        for ((app, channel, _), holder) in expired {
            node.leave_member(&app, &channel, &holder);
        }
    }

    /// Runs `expire` every second until shutdown.
    pub async fn reap(
        self: Arc<Self>,
        node: Arc<Node>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.expire(&node, Instant::now()),
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Why a `timeout` parameter was refused (the 400's `error`).
pub(crate) const BAD_TIMEOUT: &str = "timeout must be a whole number of seconds";

/// How long a poll with this `timeout` parameter waits for a message: absent or empty,
/// [`DEFAULT_TIMEOUT_SECS`]; a whole number of seconds, that many, at most
/// [`MAX_TIMEOUT_SECS`] (however large the number written); anything else (a sign, a
/// fraction, a unit, text) is refused.
pub(crate) fn parse_timeout(param: Option<&str>) -> Result<Duration, &'static str> {
    let secs = match param {
        None | Some("") => DEFAULT_TIMEOUT_SECS,
        Some(t) if t.bytes().all(|b| b.is_ascii_digit()) => {
            // All digits: only overflow can fail, and that is "more than the maximum".
            t.parse::<u64>()
                .unwrap_or(MAX_TIMEOUT_SECS)
                .min(MAX_TIMEOUT_SECS)
        }
        Some(_) => return Err(BAD_TIMEOUT),
    };
    Ok(Duration::from_secs(secs))
}

fn answer(items: &[bytes::Bytes], cursor: &str, cors: Option<HeaderValue>) -> Response {
    let mut body = BytesMut::with_capacity(64 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    body.put_slice(b"{\"messages\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(item);
    }
    body.put_slice(b"],\"cursor\":\"");
    body.put_slice(cursor.as_bytes());
    body.put_slice(b"\"}");
    let mut res = (StatusCode::OK, body.freeze()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(origin) = cors {
        add_cors(h, origin);
    }
    res
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    client: Option<axum::Extension<crate::limits::ClientAddr>>,
) -> Response {
    let admitted = match admit(&state, &key, &query, &headers, query.cursor.as_deref()).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let timeout = match parse_timeout(query.timeout.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            let e = super::stream_request::StreamError::new(StatusCode::BAD_REQUEST, e);
            return e.with_origin(admitted.cors).into_response();
        }
    };
    // Held until the answer: a held poll is a connection like a stream.
    let _per_ip =
        match super::stream_request::per_ip(&state, &admitted.app, client, admitted.cors.clone()) {
            Ok(slot) => slot,
            Err(e) => return e.into_response(),
        };
    let (tx, mut rx) = outbox(state.node.settings().outbox_capacity);
    // The stream first: it checks the app's connection limit, so a refused poll has
    // not joined or renewed a presence membership.
    let opened = Stream::open(
        state.node.clone(),
        admitted.app.clone(),
        admitted.channels.clone(),
        admitted.cursor.as_ref(),
        None,
        tx,
    )
    .await;
    let mut stream = match opened {
        Ok(o) => o,
        Err(e) => return super::stream_request::open_failed(&e, admitted.cors).into_response(),
    };
    let mut metric = OpenConnection::new(Transport::Poll, &admitted.app.id, CloseReason::Completed);
    if let Some(member) = &admitted.member {
        let grace = Duration::from_secs(state.config.server.poll_presence_grace_secs);
        let until = Instant::now() + timeout + grace;
        if let Err(channel) = state
            .poll_leases
            .renew(
                &state.node,
                &admitted.app,
                &admitted.channels,
                member,
                until,
            )
            .await
        {
            let full = crier_core::stream::StreamError::PresenceFull(channel);
            return super::stream_request::open_failed(&full, admitted.cors).into_response();
        }
    }
    let mut items: Vec<bytes::Bytes> = Vec::new();
    while stream.replaying() && items.len() < PAGE {
        let page = match stream.replay_page(PAGE - items.len()).await {
            Ok(page) => page,
            Err(e) => {
                let failed = crier_core::stream::StreamError::History(e);
                return super::stream_request::open_failed(&failed, admitted.cors).into_response();
            }
        };
        for item in &page {
            stream.advance(item);
            items.push(item.envelope());
        }
    }
    let mut live = 0u64;
    let mut oldest = None;
    if items.is_empty() {
        let expired = tokio::time::sleep_until(Instant::now() + timeout);
        tokio::pin!(expired);
        let shutdown = state.shutdown.cancelled();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                next = rx.next() => match next {
                    Next::Send(Outgoing::Message(m)) => {
                        if stream.accept(&m) {
                            oldest = Some(m.accepted_at);
                            items.push(m.envelope());
                            break;
                        }
                    }
                    Next::Send(Outgoing::Frame(_)) => {}
                    Next::Close(reason) => {
                        metric.closed_by(&reason);
                        break;
                    }
                },
                () = &mut expired => break,
                () = &mut shutdown => {
                    metric.set_reason(CloseReason::Server);
                    break;
                }
            }
        }
        live = items.len() as u64;
        while items.len() < PAGE {
            match rx.try_next() {
                Some(Outgoing::Message(m)) => {
                    if stream.accept(&m) {
                        oldest = oldest.or(Some(m.accepted_at));
                        items.push(m.envelope());
                        live += 1;
                    }
                }
                Some(Outgoing::Frame(_)) => {}
                None => break,
            }
        }
    }
    let res = answer(&items, &stream.cursor(), admitted.cors);
    let hot = m::transport(Transport::Poll);
    hot.delivered.increment(live);
    // The body is one chunk: its size is known here.
    let bytes = axum::body::HttpBody::size_hint(res.body()).exact();
    hot.bytes_sent.increment(bytes.unwrap_or(0));
    if let Some(accepted_at) = oldest {
        hot.delivered_after(accepted_at);
    }
    drop(metric);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(param: Option<&str>) -> Result<u64, &'static str> {
        parse_timeout(param).map(|d| d.as_secs())
    }

    #[test]
    fn no_timeout_waits_thirty_seconds() {
        assert_eq!(secs(None), Ok(30));
        assert_eq!(secs(Some("")), Ok(30), "`timeout=` is no timeout");
    }

    #[test]
    fn a_timeout_up_to_the_maximum_is_taken_as_given() {
        assert_eq!(secs(Some("0")), Ok(0), "0 answers at once");
        assert_eq!(secs(Some("1")), Ok(1));
        assert_eq!(secs(Some("45")), Ok(45));
        assert_eq!(secs(Some("0120")), Ok(120));
        assert_eq!(secs(Some("120")), Ok(120));
    }

    #[test]
    fn a_longer_timeout_waits_at_most_a_hundred_and_twenty_seconds() {
        assert_eq!(secs(Some("121")), Ok(120));
        assert_eq!(secs(Some("3600")), Ok(120));
        assert_eq!(
            secs(Some("99999999999999999999999999")),
            Ok(120),
            "too large for a u64 is still just more than the maximum"
        );
    }

    #[test]
    fn a_timeout_that_is_not_a_whole_number_of_seconds_is_refused() {
        for bad in ["soon", "-1", "+5", "1.5", "5s", " 5", "5 ", "1e3", "0x10"] {
            assert_eq!(secs(Some(bad)), Err(BAD_TIMEOUT), "{bad:?}");
        }
    }
}
