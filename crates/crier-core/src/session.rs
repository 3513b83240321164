//! One client connection speaking the Pusher protocol, independent of its transport.
//! The transport feeds it text frames and writes what it returns; it drains the
//! connection's outbox through [`Session::outgoing`], which drops what a resume has
//! already replayed or is about to replay; while [`Session::replaying`], it pulls the
//! replay a page at a time with [`Session::replay_page`], writing each page before it
//! asks for the next, so a client that stops reading holds one page, not the whole
//! replay.

mod rate;
mod subscribe;

use crate::app::App;
use crate::hub::{ConnId, Subscriber};
use crate::message::Published;
use crate::node::Node;
use crate::outbox::{Disconnect, Outbox, Outgoing};
use bytes::Bytes;
use crier_protocol::frames::{self, ClientMessage};
use crier_protocol::{signature, ChannelKind, ChannelName, ErrorCode};
use rate::RateLimiter;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

/// What the transport should do with an item from the outbox.
#[derive(Debug)]
pub enum Delivery {
    Send(Bytes),
    Skip,
}

/// How far the resume of a channel has got.
#[derive(Debug)]
enum Recovery {
    /// History is still being replayed. Live messages of the channel are dropped: each
    /// was appended before it was delivered, so the replay, which reads on to the
    /// channel's tip, carries it in order.
    Replaying(subscribe::ReplayState),
    /// Replayed up to here: live messages at or below it were sent by the replay.
    Done(crate::position::StreamPosition),
}

/// A channel this connection is subscribed to.
#[derive(Debug)]
struct Membership {
    /// The presence user this connection joined as.
    presence_user: Option<Arc<str>>,
}

pub struct Session {
    node: Arc<Node>,
    app: Arc<App>,
    conn: ConnId,
    socket_id: Arc<str>,
    outbox: Outbox,
    channels: HashMap<ChannelName, Membership>,
    /// Channels being resumed (`since`, or a cache channel's last event).
    recovering: HashMap<ChannelName, Recovery>,
    user: Option<Arc<str>>,
    client_events: RateLimiter,
    /// Subscribe and unsubscribe requests (`subscriptions_per_sec`).
    subscriptions: RateLimiter,
    closed: bool,
}

/// Sends a non-fatal `pusher:error`.
fn error_frame(message: &str) -> Bytes {
    Bytes::from(frames::error(message, None))
}

impl Session {
    /// Opens a session for `app`; the returned frame is `connection_established`.
    ///
    /// # Errors
    /// The app is disabled or over its connection quota.
    pub fn open(
        node: Arc<Node>,
        app: Arc<App>,
        outbox: Outbox,
    ) -> Result<(Self, Bytes), Disconnect> {
        if !app.enabled {
            return Err(Disconnect::new(ErrorCode::AppDisabled, "App is disabled"));
        }
        if !node.add_connection(&app) {
            return Err(Disconnect::new(
                ErrorCode::OverConnectionQuota,
                "App is over its connection quota",
            ));
        }
        let (conn, socket_id) = node.new_connection();
        let established = Bytes::from(frames::connection_established(
            &socket_id,
            node.settings().activity_timeout.as_secs(),
        ));
        let rate = app.limits.client_events_per_sec;
        let subscriptions = RateLimiter::per_second(app.limits.subscriptions_per_sec);
        Ok((
            Self {
                node,
                app,
                conn,
                socket_id,
                outbox,
                channels: HashMap::new(),
                recovering: HashMap::new(),
                user: None,
                client_events: RateLimiter::per_second(rate),
                subscriptions,
                closed: false,
            },
            established,
        ))
    }

    pub fn socket_id(&self) -> &str {
        &self.socket_id
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Whether the connection holds any channel (signing in joins one).
    pub fn subscribed(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Handles one text frame; returns the frames to write at once, in order.
    ///
    /// # Errors
    /// A protocol violation that ends the connection (e.g. client event flood).
    pub async fn handle(&mut self, text: &str) -> Result<Vec<Bytes>, Disconnect> {
        let message = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("crier_client_errors_total", "kind" => "bad_frame").increment(1);
                return Ok(vec![error_frame(&e.to_string())]);
            }
        };
        match message {
            ClientMessage::Ping => Ok(vec![Bytes::from(frames::pong())]),
            ClientMessage::Pong | ClientMessage::Other(_) => Ok(Vec::new()),
            ClientMessage::Subscribe(req) => {
                self.check_subscription_rate()?;
                Ok(self.subscribe(req).await)
            }
            ClientMessage::Unsubscribe { channel } => {
                self.check_subscription_rate()?;
                if let Ok(channel) = ChannelName::parse(&channel) {
                    self.unsubscribe(&channel);
                }
                Ok(Vec::new())
            }
            ClientMessage::Signin { auth, user_data } => self.signin(&auth, &user_data).await,
            ClientMessage::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event(&event, &channel, &data),
        }
    }

    /// Closes a connection that subscribes and unsubscribes faster than the app's
    /// `subscriptions_per_sec` (each costs hub and broker work), as a client event flood
    /// is closed: with 4301, after which pusher-js reconnects with a backoff.
    fn check_subscription_rate(&mut self) -> Result<(), Disconnect> {
        let max = self.app.limits.subscriptions_per_sec;
        if max == 0 || self.subscriptions.allow() {
            return Ok(());
        }
        metrics::counter!("crier_limit_hits_total", "limit" => "subscriptions_per_sec")
            .increment(1);
        Err(Disconnect::new(
            ErrorCode::ClientEventRateLimit,
            format!("Subscription rate limit exceeded (subscriptions_per_sec is {max})"),
        ))
    }

    /// Filters an item from the outbox: drops messages for channels no longer
    /// subscribed and messages a resume already replayed.
    pub fn outgoing(&mut self, item: Outgoing) -> Delivery {
        match item {
            Outgoing::Frame(frame) => Delivery::Send(frame),
            Outgoing::Message(message) => match self.accept(&message) {
                true => Delivery::Send(message.pusher_frame()),
                false => Delivery::Skip,
            },
        }
    }

    /// Whether a published message should reach this client (for any encoding).
    pub fn accept(&mut self, message: &Published) -> bool {
        if !self.recovering.is_empty() {
            match self.recovering.get(&message.channel) {
                Some(Recovery::Replaying(_)) => return false,
                Some(Recovery::Done(done)) => {
                    if done.epoch == message.position.epoch
                        && message.position.offset <= done.offset
                    {
                        return false;
                    }
                    self.recovering.remove(&message.channel);
                }
                None => {}
            }
        }
        self.channels.contains_key(&message.channel)
    }

    /// Whether a replay still has pages to send ([`Session::replay_page`]).
    pub fn replaying(&self) -> bool {
        !self.recovering.is_empty()
            && self
                .recovering
                .values()
                .any(|r| matches!(r, Recovery::Replaying(_)))
    }

    fn unsubscribe(&mut self, channel: &ChannelName) {
        if let Some(membership) = self.channels.remove(channel) {
            self.recovering.remove(channel);
            let _ = membership.presence_user;
            self.node.unsubscribe(&self.app.id, channel, self.conn);
        }
    }

    async fn signin(&mut self, auth: &str, user_data: &str) -> Result<Vec<Bytes>, Disconnect> {
        let message = signature::user_auth_message(&self.socket_id, user_data);
        if !signature::verify_key_signature(&self.app.key, &self.app.secret, &message, auth) {
            return Err(Disconnect::new(
                ErrorCode::Unauthorized,
                "Invalid signin signature",
            ));
        }
        let id = serde_json::from_str::<serde_json::Value>(user_data)
            .ok()
            .and_then(|v| match v.get("id") {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                Disconnect::new(ErrorCode::Unauthorized, "user_data must contain an id")
            })?;
        let channel = ChannelName::for_user(&id)
            .map_err(|_| Disconnect::new(ErrorCode::Unauthorized, "invalid user id"))?;
        if self.user.is_none() {
            let sub = self.subscriber();
            // Presence limits do not apply without a presence join; a broker that
            // cannot take the interest fails the sign-in, which the client retries.
            // Boxed, like the subscribe in `try_subscribe`: see there.
            Box::pin(self.node.subscribe(&self.app.id, &channel, sub, None))
                .await
                .map_err(|e| Disconnect::new(ErrorCode::GenericReconnect, e.to_string()))?;
            self.channels.insert(
                channel,
                Membership {
                    presence_user: None,
                },
            );
            self.user = Some(Arc::from(id));
        }
        Ok(vec![Bytes::from(frames::signin_success(user_data))])
    }

    fn client_event(
        &mut self,
        event: &str,
        channel: &str,
        data: &RawValue,
    ) -> Result<Vec<Bytes>, Disconnect> {
        if !self.app.client_events {
            return Ok(vec![error_frame("Client events are disabled for this app")]);
        }
        let Ok(channel) = ChannelName::parse(channel) else {
            return Ok(vec![error_frame("Invalid channel name")]);
        };
        if !matches!(channel.kind(), ChannelKind::Private | ChannelKind::Presence) {
            return Ok(vec![error_frame(
                "Client events are only allowed on private and presence channels",
            )]);
        }
        let Some(membership) = self.channels.get(&channel) else {
            return Ok(vec![error_frame(
                "Client events need a subscription to the channel",
            )]);
        };
        if data.get().len() > self.app.limits.max_event_size {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_event_size").increment(1);
            return Ok(vec![error_frame("Client event data is too large")]);
        }
        if !self.client_events.allow() {
            metrics::counter!("crier_limit_hits_total", "limit" => "client_events_per_sec")
                .increment(1);
            return Err(Disconnect::new(
                ErrorCode::ClientEventRateLimit,
                "Client event rate limit exceeded",
            ));
        }
        let user_id = membership.presence_user.clone();
        let frame = frames::client_event(event, channel.as_str(), data, user_id.as_deref());
        metrics::counter!("crier_messages_published_total", "ingest" => "client_event", "app" => self.app.id.clone())
            .increment(1);
        self.node.client_event(
            &self.app.id,
            Bytes::from(frame),
            crate::events::ClientEvent {
                channel: channel.clone(),
                event: event.to_owned(),
                data: data.get().to_owned(),
                socket_id: self.socket_id.clone(),
                user_id,
            },
        );
        Ok(Vec::new())
    }

    fn subscriber(&self) -> Subscriber {
        Subscriber {
            conn: self.conn,
            socket_id: self.socket_id.clone(),
            outbox: self.outbox.clone(),
        }
    }

    /// Leaves every channel; idempotent, also run on drop.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let channels: Vec<ChannelName> = self.channels.keys().cloned().collect();
        for channel in channels {
            self.unsubscribe(&channel);
        }
        self.node.remove_connection(&self.app);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
