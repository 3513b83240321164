//! Cases only the Redis backend has.

use super::keys::Keys;
use super::testing;
use super::Target;
use crate::broker::Broker;
use crate::history::Retention;
use crate::message::NewMessage;
use crier_protocol::ChannelName;
use crier_testkit::RedisServer;
use std::sync::Arc;

/// Anyone with the app key can subscribe to channels nobody publishes on; what such a
/// subscription leaves in Redis must go away by itself, soon.
#[tokio::test]
async fn reading_a_channel_never_published_leaves_only_a_short_lived_key() {
    let redis = RedisServer::start();
    let settings = testing::settings(&Target::Server(redis.url()));
    let (broker, _presence) = testing::node(
        &settings,
        &testing::apps(),
        Retention::default(),
        Arc::new(crate::hub::Hub::new()),
        None,
    )
    .await;
    let keys = Keys::new(&settings.prefix);
    let quiet = ChannelName::parse("quiet").unwrap();
    let busy = ChannelName::parse("busy").unwrap();
    broker.history().tip("app", &quiet).await.unwrap();
    broker
        .publish(vec![NewMessage {
            app_id: Arc::from("app"),
            channel: busy.clone(),
            event: Arc::from("e"),
            data: Arc::from("1"),
            exclude_socket: None,
        }])
        .await
        .unwrap();
    let mut conn = redis.conn();
    let ttl = |key: String, conn: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL").arg(key).query(conn).unwrap()
    };
    let quiet_ttl = ttl(keys.meta("app", &quiet), &mut conn);
    assert!(
        (1..=600_000).contains(&quiet_ttl),
        "a read's meta lives ten minutes at most: {quiet_ttl} ms"
    );
    let busy_ttl = ttl(keys.meta("app", &busy), &mut conn);
    assert!(
        busy_ttl > 7 * 86_400_000,
        "a published channel's ids outlive its messages by a week: {busy_ttl} ms"
    );
}
