//! An event handed over by a backend outside HTTP (UDP datagram, Redis queue item):
//! the HTTP API's event plus `app_id`, validated by the same `EventRequest` rules.

use crier_core::message::NewMessage;
use crier_core::publish::{EventRequest, PublishError};
use crier_core::{App, AppRegistry};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct Item {
    app_id: Option<String>,
    #[serde(flatten)]
    event: EventRequest,
}

/// Why an item can never be published; also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    InvalidJson,
    MissingApp,
    UnknownApp,
    AppDisabled,
    MissingSignature,
    BadSignature,
    Oversize,
    InvalidChannel,
    InvalidEvent,
    DataTooLarge,
}

impl Reject {
    pub const ALL: [Reject; 10] = [
        Reject::InvalidJson,
        Reject::MissingApp,
        Reject::UnknownApp,
        Reject::AppDisabled,
        Reject::MissingSignature,
        Reject::BadSignature,
        Reject::Oversize,
        Reject::InvalidChannel,
        Reject::InvalidEvent,
        Reject::DataTooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::InvalidJson => "invalid_json",
            Reject::MissingApp => "missing_app_id",
            Reject::UnknownApp => "unknown_app",
            Reject::AppDisabled => "app_disabled",
            Reject::MissingSignature => "missing_signature",
            Reject::BadSignature => "bad_signature",
            Reject::Oversize => "oversize",
            Reject::InvalidChannel => "invalid_channel",
            Reject::InvalidEvent => "invalid_event",
            Reject::DataTooLarge => "data_too_large",
        }
    }
}

/// A rejected item: the reason and a message for logs and dead letters.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub reason: Reject,
    pub detail: String,
}

impl Rejected {
    fn new(reason: Reject, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

fn publish_reject(e: &PublishError) -> Reject {
    match e {
        PublishError::InvalidChannel(_)
        | PublishError::TooManyChannels(..)
        | PublishError::MissingChannel
        | PublishError::ChannelAndChannels => Reject::InvalidChannel,
        PublishError::DataTooLarge(..) => Reject::DataTooLarge,
        PublishError::AppDisabled => Reject::AppDisabled,
        _ => Reject::InvalidEvent,
    }
}

/// Reads an item's app without validating the rest (for signature checks).
pub fn app_of(apps: &AppRegistry, json: &[u8]) -> Result<Arc<App>, Rejected> {
    #[derive(Deserialize)]
    struct AppOnly {
        app_id: Option<String>,
    }
    let a: AppOnly = serde_json::from_slice(json)
        .map_err(|e| Rejected::new(Reject::InvalidJson, e.to_string()))?;
    let id = a
        .app_id
        .ok_or_else(|| Rejected::new(Reject::MissingApp, "app_id is missing"))?;
    apps.by_id(&id)
        .cloned()
        .ok_or_else(|| Rejected::new(Reject::UnknownApp, format!("unknown app {id:?}")))
}

/// Validates one item into the messages to publish.
///
/// # Errors
/// Anything that makes the item unpublishable, with its reason.
pub fn parse(apps: &AppRegistry, json: &[u8]) -> Result<(Arc<App>, Vec<NewMessage>), Rejected> {
    let item: Item = serde_json::from_slice(json)
        .map_err(|e| Rejected::new(Reject::InvalidJson, e.to_string()))?;
    let id = item
        .app_id
        .ok_or_else(|| Rejected::new(Reject::MissingApp, "app_id is missing"))?;
    let app = apps
        .by_id(&id)
        .cloned()
        .ok_or_else(|| Rejected::new(Reject::UnknownApp, format!("unknown app {id:?}")))?;
    let messages = item
        .event
        .into_messages(&app)
        .map_err(|e| Rejected::new(publish_reject(&e), e.to_string()))?;
    Ok((app, messages))
}

/// Logs rejected items at most once per reason per interval, with a count of the rest.
pub struct RateLimitedLog {
    ingest: &'static str,
    last: std::collections::HashMap<Reject, (std::time::Instant, u64)>,
}

impl std::hash::Hash for Reject {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.label().hash(state);
    }
}

const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl RateLimitedLog {
    pub fn new(ingest: &'static str) -> Self {
        Self {
            ingest,
            last: std::collections::HashMap::new(),
        }
    }

    /// Counts and (rate-limited) logs a rejected item.
    pub fn reject(&mut self, r: &Rejected) {
        metrics::counter!("crier_ingest_dropped_total", "ingest" => self.ingest, "reason" => r.reason.label()).increment(1);
        let now = std::time::Instant::now();
        let entry = self.last.entry(r.reason).or_insert((now - LOG_EVERY, 0));
        if now.duration_since(entry.0) >= LOG_EVERY {
            tracing::warn!(
                ingest = self.ingest,
                reason = r.reason.label(),
                suppressed = entry.1,
                "dropped: {}",
                r.detail
            );
            *entry = (now, 0);
        } else {
            entry.1 += 1;
        }
    }
}
