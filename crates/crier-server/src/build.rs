//! Turns a validated [`Config`] into a running domain [`Node`]: apps, hub, history
//! store and broker (in memory over the embedded store, or Redis for a cluster).

use crate::config::{AppConfig, BrokerKind, Config, Fsync};
use crier_core::app::Webhook;
use crier_core::broker::MemoryBroker;
use crier_core::events::ChannelObserver;
use crier_core::history::disk::DiskHistory;
use crier_core::history::{FsyncPolicy, HistoryStore, Retention, RetentionLookup};
use crier_core::hub::Hub;
use crier_core::redis::{RedisSettings, Target};
use crier_core::{App, AppRegistry, Node, NodeSettings};
use std::sync::Arc;
use std::time::Duration;

fn app_from_config(c: &AppConfig, config: &Config) -> App {
    let mut app = App::new(&c.id, &c.key, &c.secret);
    app.enabled = c.enabled;
    app.client_events = c.client_events;
    app.limits.max_connections = c.max_connections;
    if let Some(v) = c.max_event_size {
        app.limits.max_event_size = v;
    }
    if let Some(v) = c.max_presence_members {
        app.limits.max_presence_members = v;
    }
    if let Some(v) = c.client_events_per_sec {
        app.limits.client_events_per_sec = v;
    }
    if let Some(v) = c.max_channels_per_connection {
        app.limits.max_channels_per_connection = v;
    }
    if let Some(v) = c.max_connections_per_ip {
        app.limits.max_connections_per_ip = v;
    }
    if let Some(v) = c.subscriptions_per_sec {
        app.limits.subscriptions_per_sec = v;
    }
    if let Some(v) = c.publish_per_sec {
        app.limits.publish_per_sec = v;
    }
    app.allowed_origins = c.allowed_origins.clone();
    app.webhooks = c
        .webhooks
        .iter()
        .map(|w| Webhook {
            url: w.url.clone(),
            events: w.events.clone(),
        })
        .collect();
    app.retention = Retention {
        max_messages: c
            .history_max_messages
            .unwrap_or(config.history.max_messages),
        max_age: Duration::from_secs(
            c.history_max_age_secs
                .unwrap_or(config.history.max_age_secs),
        ),
    };
    app
}

/// What [`node`] builds.
pub struct Built {
    pub node: Arc<Node>,
    pub webhooks: crate::webhooks::WebhookSender,
    /// The embedded history store (memory broker only), for its size in `/metrics`.
    pub history: Option<Arc<DiskHistory>>,
}

/// Builds the node: with the memory broker over the history under
/// `server.data_dir`, or with the Redis broker (history and presence in Redis).
///
/// # Errors
/// The history store cannot be opened (permissions, a locked or damaged directory), or
/// Redis cannot be reached.
pub async fn node(config: &Config) -> anyhow::Result<Built> {
    let apps = AppRegistry::new(config.apps.iter().map(|a| app_from_config(a, config)));
    let retention_by_app: std::collections::HashMap<String, Retention> = apps
        .iter()
        .map(|a| (a.id.to_string(), a.retention))
        .collect();
    let retention: RetentionLookup =
        Arc::new(move |id: &str| retention_by_app.get(id).copied().unwrap_or_default());
    let (observer, webhooks) = crate::webhooks::channel(&config.apps);
    let hub = Arc::new(Hub::new());
    let settings = NodeSettings {
        activity_timeout: Duration::from_secs(config.server.activity_timeout_secs),
        pong_timeout: Duration::from_secs(config.server.pong_timeout_secs),
        outbox_capacity: config.server.outbox_capacity,
        write_timeout: Duration::from_secs(config.server.write_timeout_secs.max(1)),
        ..NodeSettings::default()
    };
    let (node, history) = match config.broker.kind {
        BrokerKind::Memory => {
            let (broker, history) =
                memory_broker(config, hub.clone(), observer.clone(), retention)?;
            (
                Node::new(apps, hub, Arc::new(broker), settings),
                Some(history),
            )
        }
        BrokerKind::Redis => {
            let b = &config.broker;
            let (target, key) = if b.cluster.is_empty() {
                (Target::Server(b.url.clone()), "broker.url")
            } else {
                (Target::Cluster(b.cluster.clone()), "broker.cluster")
            };
            let mut redis = RedisSettings::new(target);
            redis.prefix.clone_from(&b.prefix);
            redis.node_timeout = Duration::from_secs(b.node_timeout_secs);
            redis.heartbeat = redis.node_timeout / 5;
            let (broker, presence) = crier_core::redis::connect(
                redis,
                &apps,
                retention,
                hub.clone(),
                Some(observer.clone()),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{key}: cannot reach Redis: {e}"))?;
            tracing::info!(node = broker.node_id(), "joined the cluster through Redis");
            let node =
                Node::new(apps, hub, Arc::new(broker), settings).with_presence(Arc::new(presence));
            (node, None)
        }
    };
    Ok(Built {
        node: Arc::new(node.with_observer(observer)),
        webhooks,
        history,
    })
}

fn memory_broker(
    config: &Config,
    hub: Arc<Hub>,
    observer: Arc<dyn ChannelObserver>,
    retention: RetentionLookup,
) -> anyhow::Result<(MemoryBroker, Arc<DiskHistory>)> {
    let policy = match config.history.fsync {
        Fsync::Always => FsyncPolicy::Always,
        Fsync::Grouped => FsyncPolicy::Grouped,
    };
    std::fs::create_dir_all(&config.server.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "server.data_dir: cannot create {}: {e}",
            config.server.data_dir.display()
        )
    })?;
    let mut disk = None;
    let broker = MemoryBroker::new(hub, Some(observer), |on_commit| {
        let history = DiskHistory::open(
            &config.server.data_dir.join("history"),
            policy,
            Duration::from_millis(config.history.fsync_interval_ms.max(1)),
            retention,
            on_commit,
        )
        .map_err(|e| anyhow::anyhow!("server.data_dir: cannot open history: {e}"))?;
        let history = Arc::new(history);
        disk = Some(history.clone());
        Ok::<Arc<dyn HistoryStore>, anyhow::Error>(history)
    })?;
    let history = disk.expect("the broker opened the history");
    Ok((broker, history))
}
