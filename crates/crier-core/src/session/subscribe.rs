//! `pusher:subscribe`: authorization, the per-connection channel cap, presence join,
//! and the replay of missed messages (`since`) or of a cache channel's last event.

use super::{Membership, Recovery, Session};
use crate::node::SubscribeError;
use crate::position::{Cursor, StreamPosition};
use crate::presence::PresenceJoin;
use bytes::Bytes;
use crier_protocol::frames::{self, SubscribeRequest};
use crier_protocol::{signature, ChannelKind, ChannelName};
use std::sync::Arc;

/// Messages read from history per replay page. A page is all a replaying connection
/// holds (up to 64 events of at most `max_event_size`, plus their frames), so it stays
/// small; the history store answers each page with one range scan.
pub(super) const REPLAY_PAGE: usize = 64;

/// Where a channel's replay stands between two pages.
#[derive(Debug)]
pub(super) struct ReplayState {
    /// Last position sent; `None` replays from the oldest retained message.
    after: Option<StreamPosition>,
    /// Messages sent so far, against `replay_limit`.
    sent: usize,
}

/// A refused subscription: `pusher:subscription_error` fields.
struct Refusal {
    kind: &'static str,
    error: String,
    status: u16,
    /// `kind` label of `crier_client_errors_total`.
    metric: &'static str,
}

impl Refusal {
    fn new(kind: &'static str, error: impl Into<String>, status: u16) -> Self {
        Self {
            kind,
            error: error.into(),
            status,
            metric: "subscription_error",
        }
    }
}

/// Parsed `channel_data` of a presence subscription.
fn presence_member(
    channel_data: Option<&str>,
    max_info: usize,
) -> Result<(Arc<str>, serde_json::Value), Refusal> {
    let bad = |e: &str| Refusal::new("AuthError", e.to_owned(), 400);
    let data = channel_data.ok_or_else(|| bad("presence channels need channel_data"))?;
    let value: serde_json::Value =
        serde_json::from_str(data).map_err(|_| bad("channel_data is not JSON"))?;
    let user_id = match value.get("user_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => {
            return Err(bad(
                "channel_data needs a user_id (string of 1-128 characters)",
            ))
        }
    };
    let info = value
        .get("user_info")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    if info.to_string().len() > max_info {
        return Err(bad("user_info is too large"));
    }
    Ok((Arc::from(user_id), info))
}

impl Session {
    pub(super) async fn subscribe(&mut self, req: SubscribeRequest) -> Vec<Bytes> {
        match self.try_subscribe(&req).await {
            Ok(frames) => frames,
            Err(r) => {
                metrics::counter!("crier_client_errors_total", "kind" => r.metric).increment(1);
                vec![Bytes::from(frames::subscription_error(
                    &req.channel,
                    r.kind,
                    &r.error,
                    r.status,
                ))]
            }
        }
    }

    fn authorize(&self, channel: &ChannelName, req: &SubscribeRequest) -> Result<(), Refusal> {
        if !channel.kind().requires_auth() {
            return Ok(());
        }
        let auth = req
            .auth
            .as_deref()
            .ok_or_else(|| Refusal::new("AuthError", "auth is required for this channel", 401))?;
        let message = signature::channel_auth_message(
            &self.socket_id,
            channel.as_str(),
            req.channel_data.as_deref(),
        );
        if signature::verify_key_signature(&self.app.key, &self.app.secret, &message, auth) {
            Ok(())
        } else {
            Err(Refusal::new("AuthError", "Invalid signature", 401))
        }
    }

    async fn try_subscribe(&mut self, req: &SubscribeRequest) -> Result<Vec<Bytes>, Refusal> {
        let channel = ChannelName::parse(&req.channel)
            .map_err(|e| Refusal::new("InvalidChannel", e.to_string(), 400))?;
        if channel.kind() == ChannelKind::ServerToUser {
            // pusher-js subscribes to its own `#server-to-user-<id>` after signing in;
            // signing in already joined it, so that is a success. Others are refused.
            if self.user.is_some() && self.user.as_deref() == channel.server_to_user_id() {
                return Ok(vec![Bytes::from(frames::subscription_succeeded(
                    channel.as_str(),
                ))]);
            }
            return Err(Refusal::new(
                "InvalidChannel",
                "server-to-user channels are joined by signing in",
                403,
            ));
        }
        if self.channels.contains_key(&channel) {
            // Pusher answers a repeated subscribe as a success without a second join.
            return Ok(vec![Bytes::from(frames::subscription_succeeded(
                channel.as_str(),
            ))]);
        }
        self.check_channel_cap()?;
        self.authorize(&channel, req)?;
        let presence = if channel.kind() == ChannelKind::Presence {
            let (user_id, user_info) = presence_member(
                req.channel_data.as_deref(),
                self.app.limits.max_user_info_size,
            )?;
            Some(PresenceJoin {
                user_id,
                user_info,
                max_members: self.app.limits.max_presence_members,
            })
        } else {
            None
        };
        let presence_user = presence.as_ref().map(|p| p.user_id.clone());
        // Register for live messages before reading history: whatever the read misses
        // is delivered live, and `accept` drops what both paths carry.
        // Boxed: the transport boxes `handle` for every client frame, and holding the
        // node's subscribe future inline made that box 184 bytes larger (528 -> 712,
        // -Zprint-type-sizes) for pings and client events too, not only subscribes.
        let subscribing = self
            .node
            .subscribe(&self.app.id, &channel, self.subscriber(), presence);
        let presence_frame = Box::pin(subscribing).await.map_err(|e| match e {
            SubscribeError::PresenceFull => {
                metrics::counter!("crier_limit_hits_total", "limit" => "max_presence_members")
                    .increment(1);
                Refusal::new("LimitReached", "presence channel is full", 403)
            }
            SubscribeError::Broker(e) => Refusal::new("Unavailable", e.to_string(), 503),
            SubscribeError::Presence(e) => Refusal::new("Unavailable", e.to_string(), 503),
        })?;
        self.channels
            .insert(channel.clone(), Membership { presence_user });
        let mut out =
            vec![Bytes::from(presence_frame.unwrap_or_else(|| {
                frames::subscription_succeeded(channel.as_str())
            }))];
        if let Some(since) = &req.since {
            self.start_replay(&channel, since, &mut out);
        } else if channel.is_cache() {
            self.send_cached(&channel, &mut out).await;
        }
        Ok(out)
    }

    async fn send_cached(&mut self, channel: &ChannelName, out: &mut Vec<Bytes>) {
        match self.node.last_message(&self.app.id, channel).await {
            Ok(Some(message)) => {
                self.recovering
                    .insert(channel.clone(), Recovery::Done(message.position.clone()));
                out.push(message.pusher_frame());
            }
            Ok(None) => out.push(Bytes::from(frames::cache_miss(channel.as_str()))),
            Err(e) => {
                tracing::warn!(error = %e, %channel, "cache channel read failed");
                out.push(Bytes::from(frames::cache_miss(channel.as_str())));
            }
        }
    }

    /// Refuses a channel beyond the app's `max_channels_per_connection`: each one
    /// costs a hub entry and fan-out work for as long as the connection lives.
    fn check_channel_cap(&self) -> Result<(), Refusal> {
        let max = self.app.limits.max_channels_per_connection;
        // The `#server-to-user` channel joined by signing in is the server's, not the
        // client's choice, so it does not count.
        let joined = self.channels.len() - usize::from(self.user.is_some());
        if joined < max {
            return Ok(());
        }
        metrics::counter!("crier_limit_hits_total", "limit" => "max_channels_per_connection")
            .increment(1);
        Err(Refusal {
            metric: "channel_limit",
            ..Refusal::new(
                "LimitReached",
                format!("Too many channels on this connection (the limit is {max})"),
                403,
            )
        })
    }

    /// Queues the replay of the messages after `since`; the transport pulls it with
    /// [`Session::replay_page`]. An unreadable cursor, or one for other channels, gets
    /// `crier:gap` at once: the client cannot know what it missed, so it is told and
    /// gets what is retained.
    fn start_replay(&mut self, channel: &ChannelName, since: &str, out: &mut Vec<Bytes>) {
        let after = match Cursor::decode(since, Some(channel)) {
            Ok(cursor) => cursor.get(channel).cloned(),
            Err(_) => None,
        };
        if after.is_none() {
            out.push(Bytes::from(frames::gap(channel.as_str())));
        }
        self.recovering.insert(
            channel.clone(),
            Recovery::Replaying(ReplayState { after, sent: 0 }),
        );
    }

    /// The next page of a pending replay (empty when none is pending): up to
    /// [`REPLAY_PAGE`] channel events, preceded by `crier:gap` when history no longer
    /// covers the position replayed from. The transport writes a page before asking for
    /// the next, so a client that stops reading holds one page, never the whole replay.
    pub async fn replay_page(&mut self) -> Vec<Bytes> {
        let Some((channel, after, sent)) =
            self.recovering.iter().find_map(|(channel, r)| match r {
                Recovery::Replaying(s) => Some((channel.clone(), s.after.clone(), s.sent)),
                Recovery::Done(_) => None,
            })
        else {
            return Vec::new();
        };
        let limit = self.node.settings().replay_limit;
        let page = self
            .node
            .read_history(
                &self.app.id,
                &channel,
                after.as_ref(),
                limit.saturating_sub(sent).clamp(1, REPLAY_PAGE),
            )
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, %channel, "history read failed during resume");
                // Live messages resume after what was sent; those dropped while the
                // replay ran are lost, which is what the gap says.
                match after {
                    Some(at) => self.recovering.insert(channel.clone(), Recovery::Done(at)),
                    None => self.recovering.remove(&channel),
                };
                return vec![Bytes::from(frames::gap(channel.as_str()))];
            }
        };
        let mut out = Vec::with_capacity(page.messages.len() + 1);
        // Checked on every page, not only the first: retention can drop messages while a
        // slow client is still being replayed to.
        if page.gap && after.is_some() {
            out.push(Bytes::from(frames::gap(channel.as_str())));
        }
        let sent = sent + page.messages.len();
        out.extend(page.messages.iter().map(|m| m.pusher_frame()));
        metrics::counter!("crier_replayed_messages_total").increment(page.messages.len() as u64);
        let next = if !page.more || sent >= limit {
            Recovery::Done(page.position)
        } else {
            Recovery::Replaying(ReplayState {
                after: Some(page.position),
                sent,
            })
        };
        self.recovering.insert(channel, next);
        out
    }
}
