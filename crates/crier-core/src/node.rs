//! The node wires the domain together: apps, the hub of local subscriptions, and the
//! broker (with its history). Transports and ingests hold an `Arc<Node>` and nothing
//! else of the core.

use crate::app::{App, AppRegistry};
use crate::broker::{Broker, BrokerError};
use crate::hub::{ConnId, Hub};
use crate::message::Published;
use crate::outbox::Disconnect;
use crate::publish::{EventRequest, PublishError};
use crier_protocol::{ChannelName, ErrorCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Protocol timings and buffer sizes shared by all connections.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Seconds of silence after which either side pings (sent to clients).
    pub activity_timeout: Duration,
    /// How long to wait for a pong before closing with 4201.
    pub pong_timeout: Duration,
    /// Frames queued per connection before it counts as a slow consumer.
    pub outbox_capacity: usize,
    /// Most messages replayed per channel on a resume.
    pub replay_limit: usize,
    /// A write to a client that takes longer than this means it stopped reading.
    pub write_timeout: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            outbox_capacity: 1024,
            replay_limit: 10_000,
            write_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodePublishError {
    #[error(transparent)]
    Invalid(#[from] PublishError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

pub struct Node {
    pub apps: AppRegistry,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub settings: NodeSettings,
    next_conn: AtomicU64,
    /// Random per process so socket ids from a restarted node do not repeat.
    socket_prefix: u64,
}

impl Node {
    pub fn new(
        apps: AppRegistry,
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        settings: NodeSettings,
    ) -> Self {
        Self {
            apps,
            hub,
            broker,
            settings,
            next_conn: AtomicU64::new(1),
            socket_prefix: rand::random::<u32>() as u64,
        }
    }

    /// A new connection id and its Pusher socket id (`<digits>.<digits>`).
    pub fn new_connection(&self) -> (ConnId, Arc<str>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        (conn, Arc::from(format!("{}.{}", self.socket_prefix, conn)))
    }

    /// Validates and publishes events (one or a batch), all or nothing.
    ///
    /// # Errors
    /// The first invalid event (nothing is published), or a broker failure.
    pub async fn publish(
        &self,
        app: &App,
        requests: Vec<EventRequest>,
    ) -> Result<Vec<Arc<Published>>, NodePublishError> {
        let mut batch = Vec::with_capacity(requests.len());
        for request in requests {
            batch.extend(request.into_messages(app)?);
        }
        Ok(self.broker.publish(batch).await?)
    }

    /// Closes every connection signed in as `user_id`; returns how many.
    pub fn terminate_user(&self, app: &App, user_id: &str) -> usize {
        let Ok(channel) = ChannelName::for_user(user_id) else {
            return 0;
        };
        self.hub.close_subscribers(
            &app.id,
            &channel,
            &Disconnect::new(
                ErrorCode::Unauthorized,
                "connections terminated by the server",
            ),
        )
    }
}
