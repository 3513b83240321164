//! Limits the server enforces because only it knows what they count: connections per
//! client address (`max_connections_per_ip`), HTTP publishes per app per second
//! (`publish_per_sec`) and the length of a request's URL (`max_url_bytes`). The limits
//! of a connection's own traffic (channels, client events, subscriptions) live in
//! `crier-core`'s session.

use crate::api::ApiError;
use crate::metrics::{self as m, limits, Rejection};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_core::{App, AppRegistry};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The peer address of the TCP connection a request came on, put into every request's
/// extensions by the accept loop. (Behind a proxy, it is the proxy's address.)
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

/// Open connections by (app, client address).
#[derive(Default)]
pub struct IpConnections {
    counts: Mutex<HashMap<(Arc<str>, IpAddr), u32>>,
}

/// One connection counted against its address until dropped.
pub struct IpSlot {
    table: Arc<IpConnections>,
    app: Arc<str>,
    ip: IpAddr,
}

impl IpConnections {
    /// Counts a connection from `ip` to `app`, or `None` when the address already has
    /// the app's `max_connections_per_ip` (0: unlimited, and nothing is counted).
    pub fn try_acquire(self: &Arc<Self>, app: &App, ip: IpAddr) -> Result<Option<IpSlot>, u32> {
        let max = app.limits.max_connections_per_ip;
        if max == 0 {
            return Ok(None);
        }
        let mut counts = self.counts.lock();
        let n = counts.entry((app.id.clone(), ip)).or_insert(0);
        if *n >= max {
            drop(counts);
            m::limit_hit(limits::MAX_CONNECTIONS_PER_IP);
            return Err(max);
        }
        *n += 1;
        Ok(Some(IpSlot {
            table: self.clone(),
            app: app.id.clone(),
            ip,
        }))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock();
        let key = (self.app.clone(), self.ip);
        if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }
}

/// The message for a refused connection.
pub(crate) fn too_many_from_address(max: u32) -> String {
    format!("Too many connections from this address (max_connections_per_ip is {max})")
}

/// A token bucket: `rate` tokens a second, holding at most one second's worth.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The `publish_per_sec` bucket of every app that has one.
pub struct PublishRates {
    buckets: HashMap<Arc<str>, Mutex<Bucket>>,
}

impl PublishRates {
    pub fn new(apps: &AppRegistry) -> Self {
        let now = Instant::now();
        let buckets = apps
            .iter()
            .filter(|a| a.limits.publish_per_sec > 0)
            .map(|a| {
                let rate = f64::from(a.limits.publish_per_sec);
                let bucket = Bucket {
                    rate,
                    tokens: rate,
                    at: now,
                };
                (a.id.clone(), Mutex::new(bucket))
            })
            .collect();
        Self { buckets }
    }

    /// Admits one publish request of `app`.
    ///
    /// # Errors
    /// The 429 to answer, with `Retry-After` in whole seconds (at least 1).
    pub fn admit(&self, app: &App) -> Result<(), ApiError> {
        let Some(bucket) = self.buckets.get(&app.id) else {
            return Ok(());
        };
        let wait = match bucket.lock().take(Instant::now()) {
            Ok(()) => return Ok(()),
            Err(wait) => wait,
        };
        m::limit_hit(limits::PUBLISH_PER_SEC);
        let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
        let message = format!(
            "app {} is over its publish rate (publish_per_sec is {}); retry after {retry_after} s",
            app.id, app.limits.publish_per_sec
        );
        Err(ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        })
    }
}

/// Refuses a request whose URL (path and query) is longer than `max_url_bytes`: 414
/// with a JSON body, before any handler parses it.
pub(crate) async fn url_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let max = state.config.server.max_url_bytes;
    let len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if len <= max {
        return next.run(request).await;
    }
    m::limit_hit(limits::MAX_URL_BYTES);
    m::rejected(Rejection::Http(414));
    let message = format!("URL of {len} bytes is longer than server.max_url_bytes ({max})");
    (
        StatusCode::URI_TOO_LONG,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_then_says_how_long_to_wait() {
        let start = Instant::now();
        let mut b = Bucket {
            rate: 2.0,
            tokens: 2.0,
            at: start,
        };
        assert!(b.take(start).is_ok() && b.take(start).is_ok());
        let wait = b.take(start).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(b.take(start + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn slots_are_counted_per_app_and_address_and_released_on_drop() {
        let table = Arc::new(IpConnections::default());
        let mut app = App::new("a", "k", "s");
        app.limits.max_connections_per_ip = 2;
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        let first = table.try_acquire(&app, ip).unwrap();
        let _second = table.try_acquire(&app, ip).unwrap();
        assert_eq!(table.try_acquire(&app, ip).err(), Some(2));
        assert!(table.try_acquire(&app, other).is_ok());
        drop(first);
        assert!(table.try_acquire(&app, ip).is_ok());
    }
}
