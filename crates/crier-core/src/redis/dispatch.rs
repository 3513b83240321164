//! Delivery on a Redis node: what arrives on the topics the node subscribes to goes to
//! the hub in each channel's offset order. Pub/sub may drop messages (a slow or broken
//! link); an offset that jumps, or a link that dropped, makes the node read the missing
//! range from the channel's history and deliver it before anything newer, so local
//! subscribers see every message once, in order, without reconnecting.

use super::codec::{self, Item};
use super::history::{published_from, RedisHistory};
use crate::broker::Deliver;
use crate::history::HistoryStore;
use crate::outbox::Disconnect;
use crate::position::StreamPosition;
use crier_protocol::{ChannelName, ErrorCode};
use parking_lot::Mutex;
use redis::{PushInfo, PushKind, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{Receiver, UnboundedReceiver};

/// Messages read per history request while catching up.
const CATCH_UP_PAGE: usize = 256;

/// A channel this node receives: its local subscriptions and how far delivery got.
pub(crate) struct Entry {
    pub app: Arc<str>,
    pub channel: ChannelName,
    pub count: usize,
    pub epoch: Arc<str>,
    pub delivered: u64,
}

/// The node's interest, by topic, so that an arriving message is looked up by the
/// name it came with, without parsing or allocating.
#[derive(Default)]
pub(crate) struct Interest(Mutex<HashMap<Box<str>, Entry>>);

impl Interest {
    /// One more subscription of a channel the node already receives.
    pub(crate) fn add_to_existing(&self, topic: &str) -> bool {
        match self.0.lock().get_mut(topic) {
            Some(e) => {
                e.count += 1;
                true
            }
            None => false,
        }
    }

    pub(crate) fn insert(&self, topic: &str, entry: Entry) {
        self.0.lock().insert(topic.into(), entry);
    }

    pub(crate) fn contains(&self, topic: &str) -> bool {
        self.0.lock().contains_key(topic)
    }

    /// Drops one subscription; returns whether it was the last.
    pub(crate) fn remove_one(&self, topic: &str) -> bool {
        let mut map = self.0.lock();
        let Some(e) = map.get_mut(topic) else {
            return false;
        };
        e.count = e.count.saturating_sub(1);
        if e.count == 0 {
            map.remove(topic);
            return true;
        }
        false
    }

    fn topics(&self) -> Vec<Box<str>> {
        self.0.lock().keys().cloned().collect()
    }
}

/// Told by the heartbeat that the link is back: read what may have been missed.
pub(crate) enum Control {
    CatchUp,
}

pub(crate) struct Dispatcher {
    pub interest: Arc<Interest>,
    pub history: Arc<RedisHistory>,
    pub deliver: Arc<dyn Deliver>,
    /// Set when the pushing link dropped (or fell behind and pushes were dropped); the
    /// heartbeat asks for a catch-up once Redis answers.
    pub link_dropped: Arc<AtomicBool>,
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

impl Dispatcher {
    pub(crate) async fn run(
        self,
        mut pushes: Receiver<PushInfo>,
        mut control: UnboundedReceiver<Control>,
    ) {
        loop {
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(Control::CatchUp) => self.catch_up_all().await,
                    None => return,
                },
                push = pushes.recv() => match push {
                    Some(push) => self.on_push(push).await,
                    None => return,
                },
            }
        }
    }

    async fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let (Some(topic), Some(payload)) = (
                    push.data.first().and_then(bulk),
                    push.data.get(1).and_then(bulk),
                ) else {
                    return;
                };
                let Ok(topic) = std::str::from_utf8(topic) else {
                    return;
                };
                self.on_item(topic, payload).await;
            }
            PushKind::Disconnection => {
                self.link_dropped.store(true, Ordering::Release);
            }
            _ => {}
        }
    }

    async fn on_item(&self, topic: &str, payload: &[u8]) {
        let Some(item) = codec::decode(payload) else {
            metrics::counter!("crier_broker_undecodable_total").increment(1);
            return;
        };
        let m = match item {
            Item::Message(m) => m,
            Item::Ephemeral { exclude, frame } => {
                if let Some((app, channel)) = self.channel_of(topic) {
                    self.deliver.deliver_frame(&app, &channel, frame, exclude);
                }
                return;
            }
            Item::Close { code, reason } => {
                if let Some((app, channel)) = self.channel_of(topic) {
                    let code = ErrorCode::from_code(code).unwrap_or(ErrorCode::GenericReconnect);
                    let reason = Disconnect::new(code, reason.to_owned());
                    self.deliver.close(&app, &channel, &reason);
                }
                return;
            }
        };
        // The usual case, the next offset, is taken under one lock.
        let next = {
            let mut map = self.interest.0.lock();
            let Some(e) = map.get_mut(topic) else {
                return;
            };
            if *e.epoch != *m.epoch {
                // Redis lost the channel and began a new epoch: everything of the new
                // one is news.
                e.epoch = Arc::from(m.epoch);
                e.delivered = 0;
            }
            if m.offset <= e.delivered {
                return;
            }
            (m.offset == e.delivered + 1).then(|| {
                e.delivered = m.offset;
                (e.app.clone(), e.channel.clone(), e.epoch.clone())
            })
        };
        let (app, channel, epoch) = match next {
            Some(next) => next,
            None => {
                metrics::counter!("crier_broker_catch_ups_total", "cause" => "gap").increment(1);
                self.catch_up(topic, Some(m.offset - 1)).await;
                let mut map = self.interest.0.lock();
                let Some(e) = map.get_mut(topic) else {
                    return;
                };
                if *e.epoch != *m.epoch || m.offset <= e.delivered {
                    return;
                }
                e.delivered = m.offset;
                (e.app.clone(), e.channel.clone(), e.epoch.clone())
            }
        };
        let message = published_from(&app, &channel, &epoch, &m);
        self.deliver.deliver(&Arc::new(message));
    }

    fn channel_of(&self, topic: &str) -> Option<(Arc<str>, ChannelName)> {
        let map = self.interest.0.lock();
        map.get(topic).map(|e| (e.app.clone(), e.channel.clone()))
    }

    /// Marks `offset` delivered if it is the next one of `epoch`; false if it was
    /// delivered already (by a catch-up) or the epoch moved on.
    fn advance(&self, topic: &str, epoch: &Arc<str>, offset: u64) -> bool {
        let mut map = self.interest.0.lock();
        match map.get_mut(topic) {
            Some(e) if *e.epoch == **epoch && offset > e.delivered => {
                e.delivered = offset;
                true
            }
            _ => false,
        }
    }

    /// Reads the channel's history after what was delivered, up to `until` (or its
    /// end), and delivers it in order.
    async fn catch_up(&self, topic: &str, until: Option<u64>) {
        loop {
            let Some((app, channel, epoch, delivered)) =
                self.interest.0.lock().get(topic).map(|e| {
                    (
                        e.app.clone(),
                        e.channel.clone(),
                        e.epoch.clone(),
                        e.delivered,
                    )
                })
            else {
                return;
            };
            if until.is_some_and(|u| delivered >= u) {
                return;
            }
            let after = StreamPosition::new(epoch.clone(), delivered);
            let page = match self
                .history
                .read(&app, &channel, Some(&after), CATCH_UP_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::debug!(%topic, error = %e, "catch-up read failed; retried when Redis is back");
                    return;
                }
            };
            if page.gap {
                // Messages are gone from history (expired, or Redis lost them): carry
                // on from what is there.
                metrics::counter!("crier_broker_lost_total").increment(1);
                let mut map = self.interest.0.lock();
                if let Some(e) = map.get_mut(topic) {
                    e.epoch = page.position.epoch.clone();
                    e.delivered = page
                        .messages
                        .first()
                        .map_or(page.position.offset, |m| m.position.offset - 1);
                }
            }
            let mut progressed = false;
            for message in &page.messages {
                if until.is_some_and(|u| message.position.offset > u) {
                    return;
                }
                if self.advance(topic, &message.position.epoch, message.position.offset) {
                    self.deliver.deliver(message);
                    progressed = true;
                }
            }
            if !page.more || !progressed {
                return;
            }
        }
    }

    async fn catch_up_all(&self) {
        metrics::counter!("crier_broker_catch_ups_total", "cause" => "reconnect").increment(1);
        for topic in self.interest.topics() {
            self.catch_up(&topic, None).await;
        }
    }
}
