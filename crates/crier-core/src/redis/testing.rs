//! Redis brokers on the test's own redis-server or Redis Cluster, each under a key
//! prefix of its own so that fixtures never see each other's channels.

use super::{connect, RedisBroker, RedisPresence, RedisSettings, Target};
use crate::app::{App, AppRegistry};
use crate::broker::Deliver;
use crate::events::ChannelObserver;
use crate::history::{Retention, RetentionLookup};
use crier_testkit::{RedisCluster, RedisServer};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// Keeps the Redis processes of a fixture alive.
pub(crate) type Guard = Box<dyn Any + Send + Sync>;

/// The Redis deployments every Redis case runs on.
pub(crate) fn deployments() -> Vec<(&'static str, Target, Guard)> {
    let server = RedisServer::start();
    let cluster = RedisCluster::start(3);
    vec![
        ("redis", Target::Server(server.url()), Box::new(server)),
        (
            "redis-cluster",
            Target::Cluster(cluster.urls()),
            Box::new(cluster),
        ),
    ]
}

pub(crate) fn apps() -> AppRegistry {
    AppRegistry::new(["app", "q", "other"].map(|id| App::new(id, &format!("{id}-key"), "s")))
}

pub(crate) fn settings(target: &Target) -> RedisSettings {
    let mut s = RedisSettings::new(target.clone());
    s.prefix = format!("t{:08x}", rand::random::<u32>());
    s.heartbeat = Duration::from_millis(200);
    s.node_timeout = Duration::from_secs(2);
    s
}

pub(crate) async fn node(
    settings: &RedisSettings,
    apps: &AppRegistry,
    retention: Retention,
    deliver: Arc<dyn Deliver>,
    observer: Option<Arc<dyn ChannelObserver>>,
) -> (RedisBroker, RedisPresence) {
    let retention: RetentionLookup = Arc::new(move |_: &str| retention);
    connect(settings.clone(), apps, retention, deliver, observer)
        .await
        .expect("connect to the test's Redis")
}
