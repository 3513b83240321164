//! The Redis broker: the node's window on a cluster of nodes sharing one Redis.

use super::codec;
use super::dispatch::{Dispatcher, Entry, Interest};
use super::history::RedisHistory;
use super::membership::{Heartbeat, LocalShares};
use super::presence::RedisPresence;
use super::scripts;
use super::{RedisSettings, Shared};
use crate::app::{App, AppRegistry};
use crate::broker::{Broker, BrokerError, Deliver, Unhealthy};
use crate::events::{ChannelEvent, ChannelObserver};
use crate::history::HistoryStore;
use crate::message::{NewMessage, Published};
use crate::outbox::Disconnect;
use async_trait::async_trait;
use bytes::Bytes;
use crier_protocol::ChannelName;
use redis::{AsyncCommands, PushInfo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, Receiver, UnboundedReceiver, UnboundedSender};

/// A change of this node's share of a channel, written in the order it was made.
pub(crate) struct CountChange {
    pub app: Arc<str>,
    pub channel: ChannelName,
    pub subscriptions: i64,
    pub holds: i64,
    /// The topic to unsubscribe from, when this ended the node's interest.
    pub unsubscribe: Option<String>,
}

/// Ephemeral frames and closes on their way to Redis, in order; counts what is queued
/// so that a node leaving the cluster can wait for them to go out.
#[derive(Clone)]
pub(crate) struct FrameQueue {
    tx: UnboundedSender<(String, Vec<u8>)>,
    pending: Arc<AtomicU64>,
}

impl FrameQueue {
    pub(crate) fn send(&self, topic: String, payload: Vec<u8>) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send((topic, payload)).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits, up to `limit`, until everything queued was written (or dropped).
    async fn drained(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// What ends up announcing occupancy: the observer, behind one call.
#[derive(Clone)]
pub(crate) struct Announcer {
    pub observer: Option<Arc<dyn ChannelObserver>>,
}

impl Announcer {
    pub(crate) fn occupancy(&self, app: &Arc<str>, channel: ChannelName, change: i64) {
        let Some(o) = &self.observer else { return };
        match change {
            1 => o.on_event(app, ChannelEvent::Occupied(channel)),
            -1 => o.on_event(app, ChannelEvent::Vacated(channel)),
            _ => {}
        }
    }

    pub(crate) fn event(&self, app: &Arc<str>, event: ChannelEvent) {
        if let Some(o) = &self.observer {
            o.on_event(app, event);
        }
    }
}

pub struct RedisBroker {
    shared: Arc<Shared>,
    history: Arc<dyn HistoryStore>,
    interest: Arc<Interest>,
    shares: Arc<LocalShares>,
    /// Serializes taking and dropping a topic, so that a drop written late cannot
    /// unsubscribe a topic taken again meanwhile.
    topics: Arc<tokio::sync::Mutex<()>>,
    counts: UnboundedSender<CountChange>,
    frames: FrameQueue,
    announcer: Announcer,
    /// Each app's connections on the other nodes, as of the last heartbeat.
    elsewhere: Arc<HashMap<Arc<str>, AtomicU64>>,
    heartbeat: Arc<Heartbeat>,
    stop: tokio_util::sync::CancellationToken,
    /// Stops the heartbeat alone, when the node leaves the cluster on shutdown.
    stop_beating: tokio_util::sync::CancellationToken,
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisBroker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        shared: Arc<Shared>,
        history: Arc<RedisHistory>,
        presence: RedisPresence,
        apps: &AppRegistry,
        deliver: Arc<dyn Deliver>,
        observer: Option<Arc<dyn ChannelObserver>>,
        pushes: Receiver<PushInfo>,
        link_dropped: Arc<AtomicBool>,
        settings: &RedisSettings,
    ) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let interest = Arc::new(Interest::default());
        let shares = Arc::new(LocalShares::default());
        let topics = Arc::new(tokio::sync::Mutex::new(()));
        let announcer = Announcer { observer };
        let elsewhere: Arc<HashMap<Arc<str>, AtomicU64>> = Arc::new(
            apps.iter()
                .map(|a| (a.id.clone(), AtomicU64::new(0)))
                .collect(),
        );
        // Bounded by the heartbeat: one catch-up request per beat at most.
        let (control_tx, control_rx) = unbounded_channel();
        let dispatcher = Dispatcher {
            interest: interest.clone(),
            history: history.clone(),
            deliver,
            link_dropped: link_dropped.clone(),
        };
        spawn_until(&stop, dispatcher.run(pushes, control_rx));
        // One change per subscription or hold ended, written as fast as Redis answers and
        // skipped (left to the resync) while Redis is unreachable: it holds what
        // connections end within a round trip.
        let (counts, counts_rx) = unbounded_channel();
        spawn_until(
            &stop,
            write_counts(
                shared.clone(),
                interest.clone(),
                topics.clone(),
                announcer.clone(),
                counts_rx,
            ),
        );
        // Client events (each connection rate-limited by `client_events_per_sec`) and
        // presence changes, written 256 per round trip, dropped while Redis is
        // unreachable: it holds what arrives within a round trip.
        let (frames_tx, frames_rx) = unbounded_channel();
        let frames = FrameQueue {
            tx: frames_tx,
            pending: Arc::default(),
        };
        spawn_until(
            &stop,
            write_frames(shared.clone(), frames_rx, frames.pending.clone()),
        );
        let heartbeat = Arc::new(Heartbeat {
            shared: shared.clone(),
            apps: apps.iter().cloned().collect(),
            shares: shares.clone(),
            presence,
            announcer: announcer.clone(),
            frames: frames.clone(),
            elsewhere: elsewhere.clone(),
            catch_up: control_tx,
            link_dropped,
            every: settings.heartbeat,
            node_timeout: settings.node_timeout,
        });
        let stop_beating = stop.child_token();
        spawn_until(&stop_beating, heartbeat.clone().run());
        Self {
            shared,
            history,
            interest,
            shares,
            topics,
            counts,
            frames,
            announcer,
            elsewhere,
            heartbeat,
            stop,
            stop_beating,
        }
    }

    /// This node's id in Redis (its heartbeat and shares are filed under it).
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    fn unavailable(&self, what: &str, e: &redis::RedisError) -> BrokerError {
        self.shared.failed(what, e);
        BrokerError::Unavailable(format!("redis: {e}"))
    }

    fn change(&self, app: &Arc<str>, channel: &ChannelName, subscriptions: i64, holds: i64) {
        self.shares.add(app, channel, subscriptions, holds);
        let unsubscribe = (subscriptions < 0)
            .then(|| self.shared.keys.topic(app, channel))
            .filter(|topic| self.interest.remove_one(topic));
        let _ = self.counts.send(CountChange {
            app: app.clone(),
            channel: channel.clone(),
            subscriptions,
            holds,
            unsubscribe,
        });
    }

    /// Takes a topic this node does not receive yet: reads where the channel stands,
    /// then subscribes; a message published between the two arrives with an offset
    /// past it, and the dispatcher reads the difference from history.
    async fn take_topic(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        topic: &str,
    ) -> Result<(), BrokerError> {
        let _taking = self.topics.lock().await;
        if self.interest.add_to_existing(topic) {
            return Ok(());
        }
        let tip = self.history.tip(app, channel).await?;
        self.interest.insert(
            topic,
            Entry {
                app: app.clone(),
                channel: channel.clone(),
                count: 1,
                epoch: tip.epoch,
                delivered: tip.offset,
            },
        );
        let mut subscriber = self.shared.subscriber.clone();
        if let Err(e) = subscriber.subscribe(topic).await {
            self.interest.remove_one(topic);
            return Err(self.unavailable("subscribe", &e));
        }
        Ok(())
    }
}

fn spawn_until(
    stop: &tokio_util::sync::CancellationToken,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            () = stop.cancelled() => {}
        }
    });
}

/// Changes this node's share of a channel in Redis by `subscriptions` and `holds`;
/// returns 1 when that occupied the channel in the cluster, -1 when it vacated it.
async fn count(
    shared: &Shared,
    app: &str,
    channel: &ChannelName,
    subscriptions: i64,
    holds: i64,
) -> redis::RedisResult<i64> {
    let keys = &shared.keys;
    let mut conn = shared.commands();
    scripts::COUNT
        .key(keys.subscriptions(app))
        .key(keys.occupancy(app))
        .key(keys.node_counts(app, &shared.node_id))
        .arg(channel.as_str())
        .arg(subscriptions)
        .arg(holds)
        .invoke_async(&mut conn)
        .await
}

/// Writes count changes in the order they were made, and announces what they did to
/// the channel's occupancy in the cluster. The queue holds one change per subscription
/// ended; while Redis is unreachable the changes are not written but counted in the
/// node's share, which the heartbeat puts back once Redis answers, so the queue never
/// waits on a dead Redis.
async fn write_counts(
    shared: Arc<Shared>,
    interest: Arc<Interest>,
    topics: Arc<tokio::sync::Mutex<()>>,
    announcer: Announcer,
    mut changes: UnboundedReceiver<CountChange>,
) {
    // Topics to leave that could not be left while Redis was away.
    let mut to_leave: Vec<String> = Vec::new();
    while let Some(change) = changes.recv().await {
        if !shared.healthy.load(Ordering::Acquire) {
            shared.resync.store(true, Ordering::Release);
            to_leave.extend(change.unsubscribe);
            continue;
        }
        let result = count(
            &shared,
            &change.app,
            &change.channel,
            change.subscriptions,
            change.holds,
        )
        .await;
        match result {
            Ok(occupancy) => announcer.occupancy(&change.app, change.channel, occupancy),
            Err(e) => shared.failed("count", &e),
        }
        to_leave.extend(change.unsubscribe);
        if to_leave.is_empty() {
            continue;
        }
        let _dropping = topics.lock().await;
        let mut subscriber = shared.subscriber.clone();
        for topic in std::mem::take(&mut to_leave) {
            if interest.contains(&topic) {
                continue;
            }
            if let Err(e) = subscriber.unsubscribe(&topic).await {
                tracing::debug!(%topic, error = %e, "unsubscribe failed; retried later");
                to_leave.push(topic);
            }
        }
    }
}

/// Publishes ephemeral frames and closes, in order, batching what is waiting (up to
/// 256 per round trip). Ephemeral frames are not stored: while Redis is unreachable
/// they are dropped and counted, so the queue never waits on a dead Redis.
async fn write_frames(
    shared: Arc<Shared>,
    mut frames: UnboundedReceiver<(String, Vec<u8>)>,
    pending: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(64);
    loop {
        let taken = frames.recv_many(&mut batch, 256).await;
        if taken == 0 {
            return;
        }
        write_frame_batch(&shared, &mut batch).await;
        pending.fetch_sub(taken as u64, Ordering::AcqRel);
    }
}

async fn write_frame_batch(shared: &Shared, batch: &mut Vec<(String, Vec<u8>)>) {
    if !shared.healthy.load(Ordering::Acquire) {
        metrics::counter!("crier_broker_frames_dropped_total").increment(batch.len() as u64);
        batch.clear();
        return;
    }
    let mut conn = shared.commands();
    let command = shared.commands.publish_command();
    let result = if shared.commands.is_cluster() {
        let mut result = Ok(());
        for (topic, payload) in batch.drain(..) {
            result = redis::cmd(command)
                .arg(topic)
                .arg(payload)
                .query_async::<()>(&mut conn)
                .await;
        }
        result
    } else {
        let mut pipe = redis::pipe();
        for (topic, payload) in batch.drain(..) {
            pipe.cmd(command).arg(topic).arg(payload).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    };
    if let Err(e) = result {
        shared.failed("publish frame", &e);
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, BrokerError> {
        // Counted by the ingest that published (`crier_messages_published_total`).
        Ok(self.history.append(batch).await?)
    }

    fn publish_ephemeral(
        &self,
        app: &str,
        channel: &ChannelName,
        frame: Bytes,
        exclude: Option<&str>,
    ) {
        let topic = self.shared.keys.topic(app, channel);
        self.frames.send(topic, codec::ephemeral(&frame, exclude));
    }

    async fn subscribe(&self, app: &Arc<str>, channel: &ChannelName) -> Result<(), BrokerError> {
        let topic = self.shared.keys.topic(app, channel);
        if !self.interest.add_to_existing(&topic) {
            self.take_topic(app, channel, &topic).await?;
        }
        self.shares.add(app, channel, 1, 0);
        match count(&self.shared, app, channel, 1, 0).await {
            Ok(occupancy) => self.announcer.occupancy(app, channel.clone(), occupancy),
            // The interest is taken and the subscriber will get its messages; the
            // count is put right by the next heartbeat.
            Err(e) => self.shared.failed("count", &e),
        }
        Ok(())
    }

    fn unsubscribe(&self, app: &Arc<str>, channel: &ChannelName) {
        self.change(app, channel, -1, 0);
    }

    fn hold(&self, app: &Arc<str>, channel: &ChannelName) {
        self.change(app, channel, 0, 1);
    }

    fn release(&self, app: &Arc<str>, channel: &ChannelName) {
        self.change(app, channel, 0, -1);
    }

    async fn subscription_count(
        &self,
        app: &str,
        channel: &ChannelName,
    ) -> Result<Option<usize>, BrokerError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.commands();
        let occupied: Option<i64> = conn
            .hget(keys.occupancy(app), channel.as_str())
            .await
            .map_err(|e| self.unavailable("channel query", &e))?;
        if occupied.unwrap_or(0) <= 0 {
            return Ok(None);
        }
        let subscriptions: Option<i64> = conn
            .hget(keys.subscriptions(app), channel.as_str())
            .await
            .map_err(|e| self.unavailable("channel query", &e))?;
        Ok(Some(
            subscriptions.unwrap_or(0).max(0).unsigned_abs() as usize
        ))
    }

    async fn channels(
        &self,
        app: &str,
        prefix: &str,
    ) -> Result<Vec<(ChannelName, usize)>, BrokerError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.commands();
        let occupied: HashMap<String, i64> = conn
            .hgetall(keys.occupancy(app))
            .await
            .map_err(|e| self.unavailable("channel query", &e))?;
        let subscriptions: HashMap<String, i64> = conn
            .hgetall(keys.subscriptions(app))
            .await
            .map_err(|e| self.unavailable("channel query", &e))?;
        let mut out: Vec<(ChannelName, usize)> = occupied
            .into_iter()
            .filter(|(name, n)| *n > 0 && name.starts_with(prefix))
            .filter_map(|(name, _)| {
                let count = subscriptions.get(&name).copied().unwrap_or(0).max(0);
                Some((
                    ChannelName::parse(&name).ok()?,
                    count.unsigned_abs() as usize,
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn disconnect(&self, app: &str, channel: &ChannelName, reason: &Disconnect) {
        let topic = self.shared.keys.topic(app, channel);
        self.frames
            .send(topic, codec::close(reason.code.code(), &reason.message));
    }

    fn add_connection(&self, app: &App) -> bool {
        let elsewhere = self
            .elsewhere
            .get(&app.id)
            .map_or(0, |n| n.load(Ordering::Acquire));
        app.try_add_connection_beside(elsewhere)
    }

    fn remove_connection(&self, app: &App) {
        app.remove_connection();
    }

    fn history(&self) -> &Arc<dyn HistoryStore> {
        &self.history
    }

    fn health(&self) -> Result<(), Unhealthy> {
        self.history.health().map_err(|why| Unhealthy {
            component: "broker",
            error: format!("redis unreachable: {why}"),
        })
    }

    /// Durability is Redis's; on shutdown the node leaves the cluster at once, so its
    /// members and counts do not wait out the node timeout. If Redis cannot be reached,
    /// the other nodes remove them after it, as for a node that stopped.
    async fn flush(&self) -> Result<(), BrokerError> {
        self.stop_beating.cancel();
        // Departures announced by the connections that just closed go out first.
        self.frames.drained(std::time::Duration::from_secs(2)).await;
        if let Err(e) = self.heartbeat.leave().await {
            tracing::warn!(error = %e, "could not leave the cluster; the other nodes will remove this node after the node timeout");
        }
        Ok(())
    }
}
