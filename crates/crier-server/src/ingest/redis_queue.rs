//! Redis list ingest, at least once. Producers `LPUSH` JSON events onto `key`; the
//! consumer moves the oldest to `key:processing` (`BLMOVE`), publishes it (durable in
//! history), then removes it. Items a crash left in processing are published first on
//! start. Items that can never be published go to `key:dead` with the reason.

use super::event::{self, RateLimitedLog, Rejected};
use crate::config::RedisQueueConfig;
use crate::state::AppState;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use std::time::Duration;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one BLMOVE blocks; bounds how long shutdown waits for the consumer.
const BLOCK_SECS: f64 = 1.0;

struct Queue {
    key: String,
    processing: String,
    dead: String,
}

/// Consumes until shutdown, reconnecting with backoff whenever Redis goes away.
pub async fn run(config: RedisQueueConfig, state: AppState) {
    let queue = Queue {
        processing: match &config.consumer {
            Some(name) => format!("{}:processing:{name}", config.key),
            None => format!("{}:processing", config.key),
        },
        dead: format!("{}:dead", config.key),
        key: config.key.clone(),
    };
    let mut log = RateLimitedLog::new("redis_queue");
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u64;
    while !state.shutdown.is_cancelled() {
        match connect(&config.url).await {
            Ok(mut conn) => {
                if failures > 0 {
                    tracing::info!(url = %config.url, "redis queue: reconnected after {failures} failed attempts");
                }
                failures = 0;
                backoff = Duration::from_millis(100);
                match consume(&mut conn, &queue, &state, &mut log).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "redis queue: connection lost; reconnecting")
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(url = %config.url, error = %e, attempts = failures, "redis queue: cannot connect; retrying with backoff");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = state.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(BLOCK_SECS as u64 + 5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn consume(
    conn: &mut MultiplexedConnection,
    q: &Queue,
    state: &AppState,
    log: &mut RateLimitedLog,
) -> redis::RedisResult<()> {
    // Left in processing by a crash: the oldest is at the right end.
    let left: Vec<String> = conn.lrange(&q.processing, 0, -1).await?;
    if !left.is_empty() {
        tracing::info!(
            count = left.len(),
            "redis queue: publishing items left in processing by a previous run"
        );
    }
    for item in left.into_iter().rev() {
        if !handle(conn, q, state, log, item).await? {
            return Ok(());
        }
    }
    let mut blmove = redis::cmd("BLMOVE");
    blmove
        .arg(&q.key)
        .arg(&q.processing)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(BLOCK_SECS);
    loop {
        let moved: Option<String> = tokio::select! {
            r = blmove.query_async(conn) => r?,
            // An item moved by a BLMOVE cut short here stays in processing and is
            // published on the next start: at least once.
            () = state.shutdown.cancelled() => return Ok(()),
        };
        if let Some(item) = moved {
            if !handle(conn, q, state, log, item).await? {
                return Ok(());
            }
        }
    }
}

/// Publishes or dead-letters one item, then removes it from processing. Returns false
/// when shutdown interrupted a retry (the item stays in processing).
async fn handle(
    conn: &mut MultiplexedConnection,
    q: &Queue,
    state: &AppState,
    log: &mut RateLimitedLog,
    item: String,
) -> redis::RedisResult<bool> {
    match event::parse(state.node.apps(), item.as_bytes()) {
        Err(rejected) => {
            dead_letter(conn, q, &item, &rejected).await?;
            log.reject(&rejected);
        }
        Ok((_, messages)) => {
            let mut backoff = Duration::from_millis(50);
            loop {
                match state.node.publish_messages(messages.clone()).await {
                    Ok(published) => {
                        crate::metrics::published_each("redis_queue", &published);
                        break;
                    }
                    Err(e) => {
                        // Storage or broker trouble is transient: retry, never dead-letter.
                        tracing::error!(error = %e, "redis queue: publish failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = state.shutdown.cancelled() => return Ok(false),
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            let _: i64 = conn.lrem(&q.processing, -1, &item).await?;
        }
    }
    Ok(true)
}

async fn dead_letter(
    conn: &mut MultiplexedConnection,
    q: &Queue,
    item: &str,
    rejected: &Rejected,
) -> redis::RedisResult<()> {
    let letter = serde_json::json!({
        "item": item,
        "reason": rejected.reason.label(),
        "error": rejected.detail,
        "at": crier_core::message::now_ms(),
    })
    .to_string();
    redis::pipe()
        .atomic()
        .lpush(&q.dead, letter)
        .ignore()
        .lrem(&q.processing, -1, item)
        .ignore()
        .query_async::<()>(conn)
        .await
}
