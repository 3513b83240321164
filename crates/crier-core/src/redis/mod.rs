//! The Redis backend: many nodes as one server. One atomic script per publish gives
//! each message its offset in its channel, stores it in the channel's history in Redis
//! and publishes it on the channel's topic, so every node sees one order per channel
//! with the same ids. A node subscribes only to the topics of channels its clients
//! want; it delivers what arrives there through the same hub path as one node does,
//! and reads what pub/sub dropped (an offset jump, a dropped link) back from the
//! history before newer messages. Presence, occupancy, subscription and connection
//! counts live in Redis, kept per node so that the share of a node that stops
//! heartbeating is removed by the others.

mod broker;
mod codec;
mod connection;
mod dispatch;
mod history;
mod keys;
mod membership;
mod presence;
mod scripts;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use broker::RedisBroker;
pub use connection::Target;
pub use history::RedisHistory;
pub use presence::RedisPresence;

use crate::app::AppRegistry;
use crate::broker::Deliver;
use crate::events::ChannelObserver;
use crate::history::RetentionLookup;
use connection::Conn;
use keys::Keys;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the Redis backend runs.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub target: Target,
    /// Prepended to every key and topic, so that deployments can share a Redis.
    pub prefix: String,
    /// How often a node tells Redis it is alive and checks on the others.
    pub heartbeat: Duration,
    /// A node silent for this long is removed with its presence members.
    pub node_timeout: Duration,
}

impl RedisSettings {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            prefix: "crier".into(),
            heartbeat: Duration::from_secs(2),
            node_timeout: Duration::from_secs(15),
        }
    }
}

/// What the broker, its history and presence share: the connections and the node's
/// standing with Redis.
pub(crate) struct Shared {
    keys: Keys,
    node_id: String,
    commands: Conn,
    subscriber: Conn,
    retention: RetentionLookup,
    healthy: AtomicBool,
    problem: Mutex<String>,
    /// The node's counts or presence in Redis may be wrong (a write failed, or the
    /// others removed this node): the next heartbeat puts them back.
    resync: AtomicBool,
}

impl Shared {
    fn commands(&self) -> Conn {
        self.commands.clone()
    }

    /// Records a failed Redis call; the node reports itself degraded until the next
    /// heartbeat gets through.
    fn failed(&self, what: &str, error: &redis::RedisError) {
        let text = format!("{what}: {error}");
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %text, "redis unreachable; serving local connections only");
        }
        *self.problem.lock() = text;
        self.resync.store(true, Ordering::Release);
    }
}

/// Connects to Redis and returns the broker and presence of this node; background
/// tasks (delivery, heartbeat, writes made on behalf of ending connections) run on the
/// current Tokio runtime until the broker is dropped.
///
/// # Errors
/// Redis cannot be reached, or the target is not a valid Redis URL.
pub async fn connect(
    settings: RedisSettings,
    apps: &AppRegistry,
    retention: RetentionLookup,
    deliver: Arc<dyn Deliver>,
    observer: Option<Arc<dyn ChannelObserver>>,
) -> Result<(RedisBroker, RedisPresence), redis::RedisError> {
    let (push_tx, push_rx) = tokio::sync::mpsc::channel(connection::PUSH_QUEUE);
    // Set when the pushing link dropped or fell behind: the heartbeat then has the
    // dispatcher catch every channel up from history.
    let link_dropped = Arc::new(AtomicBool::new(false));
    let pushes = connection::Pushes {
        tx: push_tx,
        overflowed: link_dropped.clone(),
    };
    let (commands, subscriber) = connection::open(&settings.target, pushes).await?;
    let shared = Arc::new(Shared {
        keys: Keys::new(&settings.prefix),
        node_id: format!("{:016x}", rand::random::<u64>()),
        commands,
        subscriber,
        retention,
        healthy: AtomicBool::new(true),
        problem: Mutex::new(String::new()),
        resync: AtomicBool::new(false),
    });
    let history = Arc::new(RedisHistory::new(shared.clone()));
    let presence = RedisPresence::new(shared.clone());
    let broker = RedisBroker::start(
        shared,
        history,
        presence.clone(),
        apps,
        deliver,
        observer,
        push_rx,
        link_dropped,
        &settings,
    );
    Ok((broker, presence))
}
