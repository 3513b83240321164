//! Connections to one Redis server or to a Redis Cluster, behind one type. Commands go
//! over one multiplexed connection; messages arrive over a second one that pushes
//! (RESP3), subscribed to the topics this node has interest in: plain pub/sub on one
//! server, sharded pub/sub (`SSUBSCRIBE`) on a cluster, where a topic is served by the
//! shard that holds its channel's keys.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::Sender;

/// Pushes waiting for the dispatcher, at most. Dropping one beyond is safe: its
/// message is in the channel's history, and the dispatcher reads it back (the next
/// message shows the offset jump; `overflowed` asks for a catch-up in any case).
pub(crate) const PUSH_QUEUE: usize = 65_536;

/// Hands pushes to the dispatcher without blocking the connection, dropping them
/// when the dispatcher is [`PUSH_QUEUE`] behind.
pub(crate) struct Pushes {
    pub tx: Sender<PushInfo>,
    pub overflowed: Arc<AtomicBool>,
}

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match self.tx.try_send(info) {
            Ok(()) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                if !self.overflowed.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        "redis pushes arrive faster than they are delivered; catching up from history"
                    );
                }
                Ok(())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(redis::aio::SendError),
        }
    }
}

/// Where the Redis broker connects.
#[derive(Clone, Debug)]
pub enum Target {
    /// One server (or a primary behind a proxy): `redis://` or `rediss://`.
    Server(String),
    /// A Redis Cluster, by its seed nodes.
    Cluster(Vec<String>),
}

/// How long a command may take before the broker counts Redis as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub(crate) enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// The command that publishes to a topic, run inside the publish script.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Self::Server(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    pub(crate) async fn subscribe(&mut self, topic: &str) -> RedisResult<()> {
        match self {
            Self::Server(c) => c.subscribe(topic).await,
            Self::Cluster(c) => c.ssubscribe(topic).await,
        }
    }

    pub(crate) async fn unsubscribe(&mut self, topic: &str) -> RedisResult<()> {
        match self {
            Self::Server(c) => c.unsubscribe(topic).await,
            Self::Cluster(c) => c.sunsubscribe(topic).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens the command connection and the pushing one; pushes (messages, and a
/// `Disconnection` when the link drops) go to `pushes`. Both reconnect by themselves,
/// and the pushing one subscribes again to its topics.
pub(crate) async fn open(target: &Target, pushes: Pushes) -> RedisResult<(Conn, Conn)> {
    match target {
        Target::Server(url) => {
            let info = url.as_str().into_connection_info()?;
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let client = redis::Client::open(info.clone())?;
            let push_client = redis::Client::open(info.set_redis_settings(resp3))?;
            let config = || {
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2))
            };
            let commands = client.get_connection_manager_with_config(config()).await?;
            let subscriber = push_client
                .get_connection_manager_with_config(
                    config()
                        .set_push_sender(pushes)
                        .set_automatic_resubscription(),
                )
                .await?;
            Ok((Conn::Server(commands), Conn::Server(subscriber)))
        }
        Target::Cluster(seeds) => {
            let builder = || {
                ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
            };
            let commands = builder().build()?.get_async_connection().await?;
            let subscriber = builder()
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()?
                .get_async_connection()
                .await?;
            Ok((Conn::Cluster(commands), Conn::Cluster(subscriber)))
        }
    }
}
