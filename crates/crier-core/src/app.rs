//! Apps (tenants): credentials, switches and limits, and the registry that finds an
//! app by id (HTTP API) or by key (client connections).

use crate::history::Retention;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A webhook target: Pusher-format POSTs for the listed event kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub events: Vec<String>,
}

/// Limits that protect the server and other tenants from one app's clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppLimits {
    /// Concurrent connections; 0 means unlimited.
    pub max_connections: u64,
    /// Bytes of `data` in one event (Pusher's default is 10 KiB).
    pub max_event_size: usize,
    /// Channels named in one publish request.
    pub max_channels_per_event: usize,
    /// Channels one connection (WebSocket, pusher-js fallback, SSE or long-poll
    /// request) may subscribe to.
    pub max_channels_per_connection: usize,
    /// Distinct users on one presence channel.
    pub max_presence_members: usize,
    /// Bytes of a presence member's `user_info`.
    pub max_user_info_size: usize,
    /// Client events one connection may send per second.
    pub client_events_per_sec: u32,
    /// Subscribe and unsubscribe requests one connection may send per second; 0 means
    /// unlimited. Above what pusher-js sends when it resubscribes a full connection.
    pub subscriptions_per_sec: u32,
    /// Connections from one client address; 0 means unlimited. Enforced by the server,
    /// which knows the address.
    pub max_connections_per_ip: u32,
    /// HTTP publish requests per second; 0 means unlimited. Enforced by the server.
    pub publish_per_sec: u32,
    /// Events in one `batch_events` request.
    pub max_batch_size: usize,
}

impl Default for AppLimits {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_event_size: 10 * 1024,
            max_channels_per_event: 100,
            max_channels_per_connection: 100,
            max_presence_members: 100,
            max_user_info_size: 1024,
            client_events_per_sec: 10,
            subscriptions_per_sec: 200,
            max_connections_per_ip: 10_000,
            publish_per_sec: 0,
            max_batch_size: 10,
        }
    }
}

/// One tenant: its credentials and settings, plus its live connection count.
#[derive(Debug)]
pub struct App {
    pub id: Arc<str>,
    pub key: Arc<str>,
    pub secret: Arc<str>,
    pub enabled: bool,
    pub client_events: bool,
    pub limits: AppLimits,
    /// Origins allowed by CORS for SSE and long-poll; `*` allows any.
    pub allowed_origins: Vec<String>,
    pub retention: Retention,
    pub webhooks: Vec<Webhook>,
    connections: AtomicU64,
}

impl App {
    pub fn new(id: &str, key: &str, secret: &str) -> Self {
        Self {
            id: Arc::from(id),
            key: Arc::from(key),
            secret: Arc::from(secret),
            enabled: true,
            client_events: true,
            limits: AppLimits::default(),
            allowed_origins: vec!["*".to_owned()],
            retention: Retention::default(),
            webhooks: Vec::new(),
            connections: AtomicU64::new(0),
        }
    }

    /// Counts a new connection unless the app is at its limit. Only the memory broker
    /// calls it: the connection quota is a fact of the cluster, kept by the broker.
    pub(crate) fn try_add_connection(&self) -> bool {
        let max = self.limits.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a new connection unless this node's connections plus `elsewhere` (the
    /// app's connections on other nodes) reach the limit.
    pub(crate) fn try_add_connection_beside(&self, elsewhere: u64) -> bool {
        let max = self.limits.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n + elsewhere < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn remove_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

/// Every configured app, by id and by key.
#[derive(Debug, Default)]
pub struct AppRegistry {
    by_id: HashMap<Arc<str>, Arc<App>>,
    by_key: HashMap<Arc<str>, Arc<App>>,
}

impl AppRegistry {
    pub fn new(apps: impl IntoIterator<Item = App>) -> Self {
        let mut registry = Self::default();
        for app in apps {
            let app = Arc::new(app);
            registry.by_id.insert(app.id.clone(), app.clone());
            registry.by_key.insert(app.key.clone(), app);
        }
        registry
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }

    /// Retention of an app, or the default for an id no longer configured.
    pub fn retention(&self, id: &str) -> Retention {
        self.by_id.get(id).map(|a| a.retention).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limit_is_enforced() {
        let mut app = App::new("a", "k", "s");
        app.limits.max_connections = 2;
        assert!(app.try_add_connection());
        assert!(app.try_add_connection());
        assert!(!app.try_add_connection());
        app.remove_connection();
        assert!(app.try_add_connection());
    }
}
