//! `[broker]`: how nodes form a cluster (the memory broker for one node, or Redis).

use super::{default_redis_url, invalid, ConfigError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub kind: BrokerKind,
    /// One Redis server: `redis://` or `rediss://` (TLS), with user and password.
    pub url: String,
    /// A Redis Cluster, by seed node URLs; used instead of `url` when not empty.
    pub cluster: Vec<String>,
    /// Prepended to every Redis key and topic, so deployments can share a Redis.
    pub prefix: String,
    /// A node silent this long is removed, with its presence members; nodes
    /// heartbeat at a fifth of it.
    pub node_timeout_secs: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            kind: BrokerKind::Memory,
            url: default_redis_url(),
            cluster: Vec::new(),
            prefix: "crier".into(),
            node_timeout_secs: 15,
        }
    }
}

impl BrokerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let scheme_ok = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
        if self.cluster.is_empty() {
            if !scheme_ok(&self.url) {
                return Err(invalid(
                    "broker.url",
                    format!("{:?} is not a redis:// or rediss:// URL", self.url),
                ));
            }
        } else if let Some(bad) = self.cluster.iter().find(|u| !scheme_ok(u)) {
            return Err(invalid(
                "broker.cluster",
                format!("{bad:?} is not a redis:// or rediss:// URL"),
            ));
        }
        if !(1..=300).contains(&self.node_timeout_secs) {
            return Err(invalid("broker.node_timeout_secs", "must be 1 to 300"));
        }
        let prefix_ok = !self.prefix.is_empty()
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        if !prefix_ok {
            return Err(invalid(
                "broker.prefix",
                "must be letters, digits, '_', '-', '.' or ':'",
            ));
        }
        Ok(())
    }
}
