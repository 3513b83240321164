//! Webhooks in Pusher's format: `channel_occupied`, `channel_vacated`,
//! `member_added`, `member_removed` and `client_event`, batched per app, signed with
//! the app secret (`X-Pusher-Key`, `X-Pusher-Signature`), retried with backoff.
//! The node reports events without waiting; a full queue drops events (counted) rather
//! than slow down connections.

use crier_core::events::{ChannelEvent, ChannelObserver, ClientEvent};
use crier_core::message::now_ms;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events waiting to be sent, across apps.
const QUEUE: usize = 10_000;
/// How long events gather before a batch is sent.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most events in one POST (Pusher batches similarly).
const MAX_BATCH: usize = 100;
/// Attempts per batch and target before it is dropped (logged).
const ATTEMPTS: u32 = 5;
/// Wait after the first failed attempt; doubles after each further one, up to
/// [`MAX_RETRY_DELAY`] (200 ms, 400 ms, 800 ms, 1.6 s with five attempts).
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// One attempt that has no answer this long has failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reports channel events to the webhook sender task.
pub struct WebhookObserver {
    tx: mpsc::Sender<(Arc<str>, Value)>,
    /// Apps that have webhooks, so others cost nothing.
    apps: Vec<Arc<str>>,
}

fn event_json(event: ChannelEvent) -> Value {
    match event {
        ChannelEvent::Occupied(c) => json!({"name": "channel_occupied", "channel": c.as_str()}),
        ChannelEvent::Vacated(c) => json!({"name": "channel_vacated", "channel": c.as_str()}),
        ChannelEvent::MemberAdded(c, u) => {
            json!({"name": "member_added", "channel": c.as_str(), "user_id": &*u})
        }
        ChannelEvent::MemberRemoved(c, u) => {
            json!({"name": "member_removed", "channel": c.as_str(), "user_id": &*u})
        }
        ChannelEvent::ClientEvent(ClientEvent {
            channel,
            event,
            data,
            socket_id,
            user_id,
        }) => {
            let mut v = json!({
                "name": "client_event", "channel": channel.as_str(), "event": event,
                "data": data, "socket_id": &*socket_id,
            });
            if let Some(u) = user_id {
                v["user_id"] = json!(&*u);
            }
            v
        }
    }
}

impl ChannelObserver for WebhookObserver {
    fn on_event(&self, app: &Arc<str>, event: ChannelEvent) {
        if !self.apps.iter().any(|a| a == app) {
            return;
        }
        if self.tx.try_send((app.clone(), event_json(event))).is_err() {
            metrics::counter!("crier_webhook_events_dropped_total").increment(1);
        }
    }
}

/// The sending side: batches per app and POSTs to each matching target.
pub struct WebhookSender {
    rx: mpsc::Receiver<(Arc<str>, Value)>,
    targets: HashMap<Arc<str>, AppTargets>,
}

#[derive(Clone)]
struct AppTargets {
    key: Arc<str>,
    secret: Arc<str>,
    hooks: Vec<(String, Vec<String>)>,
}

/// An observer for the node and the task that sends what it observes.
pub fn channel(apps: &[crate::config::AppConfig]) -> (Arc<WebhookObserver>, WebhookSender) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let targets: HashMap<Arc<str>, AppTargets> = apps
        .iter()
        .filter(|a| !a.webhooks.is_empty())
        .map(|a| {
            (
                Arc::from(a.id.as_str()),
                AppTargets {
                    key: Arc::from(a.key.as_str()),
                    secret: Arc::from(a.secret.as_str()),
                    hooks: a
                        .webhooks
                        .iter()
                        .map(|w| (w.url.clone(), w.events.clone()))
                        .collect(),
                },
            )
        })
        .collect();
    let observer = WebhookObserver {
        tx,
        apps: targets.keys().cloned().collect(),
    };
    (Arc::new(observer), WebhookSender { rx, targets })
}

impl WebhookSender {
    /// Runs until shutdown, then sends what is still queued.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .unwrap_or_default();
        loop {
            let first = tokio::select! {
                item = self.rx.recv() => match item { Some(i) => i, None => return },
                () = shutdown.cancelled() => {
                    self.rx.close();
                    match self.rx.recv().await { Some(i) => i, None => return }
                }
            };
            let mut pending: HashMap<Arc<str>, Vec<Value>> = HashMap::new();
            pending.entry(first.0).or_default().push(first.1);
            let window = tokio::time::sleep(BATCH_WINDOW);
            tokio::pin!(window);
            let mut count = 1;
            while count < MAX_BATCH {
                tokio::select! {
                    item = self.rx.recv() => match item {
                        Some((app, ev)) => { pending.entry(app).or_default().push(ev); count += 1; }
                        None => break,
                    },
                    () = &mut window => break,
                }
            }
            for (app, events) in pending {
                if let Some(t) = self.targets.get(&app) {
                    self.send(&http, t, events).await;
                }
            }
        }
    }

    async fn send(&self, http: &reqwest::Client, t: &AppTargets, events: Vec<Value>) {
        for (url, wanted) in &t.hooks {
            let selected: Vec<&Value> = events
                .iter()
                .filter(|e| wanted.is_empty() || wanted.iter().any(|w| e["name"] == w.as_str()))
                .collect();
            if selected.is_empty() {
                continue;
            }
            let body = json!({ "time_ms": now_ms(), "events": selected }).to_string();
            let signature = crier_protocol::signature::sign(&t.secret, &body);
            let http = http.clone();
            let (url, key, body) = (url.clone(), t.key.to_string(), body);
            // Each target retries on its own so one slow endpoint does not hold others.
            tokio::spawn(async move {
                let mut delay = FIRST_RETRY_DELAY;
                for attempt in 1..=ATTEMPTS {
                    if attempt > 1 {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_RETRY_DELAY);
                    }
                    let res = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-pusher-key", &key)
                        .header("x-pusher-signature", &signature)
                        .body(body.clone())
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().is_success() => {
                            metrics::counter!("crier_webhooks_sent_total").increment(1);
                            return;
                        }
                        Ok(r) => {
                            tracing::warn!(%url, status = %r.status(), attempt, "webhook refused")
                        }
                        Err(e) => tracing::warn!(%url, error = %e, attempt, "webhook failed"),
                    }
                }
                metrics::counter!("crier_webhooks_failed_total").increment(1);
                tracing::error!(%url, "webhook dropped after {ATTEMPTS} attempts");
            });
        }
    }
}
