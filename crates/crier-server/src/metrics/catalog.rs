//! Every metric family Crier exports: its name, its help text, and the label values it
//! starts with at zero.

use crate::config::Config;
use crate::ingest::event::Reject;
use crier_core::outbox::Disconnect;
use crier_protocol::ErrorCode;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use std::sync::Arc;

/// Family names. `crier_subscriptions`, `crier_channels`, `crier_history_*`,
/// `crier_client_errors_total` and `crier_replayed_messages_total` are recorded in
/// `crier-core` under the same names.
pub(crate) mod names {
    pub(crate) const BUILD_INFO: &str = "crier_build_info";
    pub(crate) const CONNECTIONS: &str = "crier_connections";
    pub(crate) const OPENED: &str = "crier_connections_opened_total";
    pub(crate) const CLOSED: &str = "crier_connections_closed_total";
    pub(crate) const SUBSCRIPTIONS: &str = "crier_subscriptions";
    pub(crate) const CHANNELS: &str = "crier_channels";
    pub(crate) const PUBLISHED: &str = "crier_messages_published_total";
    pub(crate) const DELIVERED: &str = "crier_messages_delivered_total";
    pub(crate) const REPLAYED: &str = "crier_replayed_messages_total";
    pub(crate) const BYTES_RECEIVED: &str = "crier_bytes_received_total";
    pub(crate) const BYTES_SENT: &str = "crier_bytes_sent_total";
    pub(crate) const SLOW_CONSUMERS: &str = "crier_slow_consumer_disconnects_total";
    pub(crate) const REJECTED: &str = "crier_rejected_requests_total";
    pub(crate) const LIMIT_HITS: &str = "crier_limit_hits_total";
    pub(crate) const CLIENT_ERRORS: &str = "crier_client_errors_total";
    pub(crate) const INGEST_DROPPED: &str = "crier_ingest_dropped_total";
    pub(crate) const WEBHOOKS_SENT: &str = "crier_webhooks_sent_total";
    pub(crate) const WEBHOOKS_FAILED: &str = "crier_webhooks_failed_total";
    pub(crate) const WEBHOOKS_DROPPED: &str = "crier_webhook_events_dropped_total";
    pub(crate) const HISTORY_BYTES: &str = "crier_history_size_bytes";
    pub(crate) const HISTORY_MESSAGES: &str = "crier_history_messages";
    pub(crate) const HISTORY_HEALTHY: &str = "crier_history_healthy";
    pub(crate) const HISTORY_WRITE_FAILURES: &str = "crier_history_write_failures_total";
    pub(crate) const DELIVERY_LATENCY: &str = "crier_delivery_latency_seconds";
    pub(crate) const API_DURATION: &str = "crier_http_request_duration_seconds";
    pub(crate) const TASKS: &str = "crier_runtime_alive_tasks";
    // Recorded by crier-core's Redis broker.
    pub(crate) const BROKER_CATCH_UPS: &str = "crier_broker_catch_ups_total";
    pub(crate) const BROKER_LOST: &str = "crier_broker_lost_total";
    pub(crate) const BROKER_UNDECODABLE: &str = "crier_broker_undecodable_total";
    pub(crate) const BROKER_FRAMES_DROPPED: &str = "crier_broker_frames_dropped_total";
}

/// A client transport; the `transport` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws = 0,
    Sse = 1,
    Poll = 2,
    /// pusher-js's `xhr_streaming` and `xhr_polling` sessions.
    Xhr = 3,
}

impl Transport {
    pub const ALL: [Transport; 4] = [Self::Ws, Self::Sse, Self::Poll, Self::Xhr];

    pub fn label(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Poll => "poll",
            Self::Xhr => "xhr",
        }
    }
}

/// Why a connection ended; the `reason` label of `crier_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it or went away.
    Client,
    /// The client broke the protocol or was refused mid-connection (bad signature,
    /// WebSocket protocol error).
    ProtocolError,
    /// Over a rate limit (client events, subscriptions).
    RateLimited,
    /// The client did not read fast enough.
    SlowConsumer,
    /// No pong, or no subscription, in time.
    Timeout,
    /// The server ended it: shutdown, `terminate_connections`, a broker failure.
    Server,
    /// A long-poll request that was answered.
    Completed,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        Self::Client,
        Self::ProtocolError,
        Self::RateLimited,
        Self::SlowConsumer,
        Self::Timeout,
        Self::Server,
        Self::Completed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::ProtocolError => "protocol_error",
            Self::RateLimited => "rate_limited",
            Self::SlowConsumer => "slow_consumer",
            Self::Timeout => "timeout",
            Self::Server => "server",
            Self::Completed => "completed",
        }
    }

    /// The reason behind a Pusher close.
    pub fn of(disconnect: &Disconnect) -> Self {
        match disconnect.code {
            ErrorCode::OverCapacity => Self::SlowConsumer,
            ErrorCode::PongNotReceived | ErrorCode::ClosedAfterInactivity => Self::Timeout,
            ErrorCode::ClientEventRateLimit => Self::RateLimited,
            ErrorCode::GenericReconnect => Self::Server,
            ErrorCode::SslOnly
            | ErrorCode::AppNotFound
            | ErrorCode::AppDisabled
            | ErrorCode::OverConnectionQuota
            | ErrorCode::PathNotFound
            | ErrorCode::InvalidVersionFormat
            | ErrorCode::UnsupportedProtocolVersion
            | ErrorCode::NoProtocolVersion
            | ErrorCode::Unauthorized => Self::ProtocolError,
        }
    }
}

/// A refused request or connection attempt: the `status` (HTTP status, or the Pusher
/// close code for a WebSocket) and `reason` labels of `crier_rejected_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Http(u16),
    WebSocket(ErrorCode),
}

const HTTP_STATUSES: [(u16, &str, &str); 13] = [
    (400, "400", "bad_request"),
    (401, "401", "unauthorized"),
    (403, "403", "forbidden"),
    (404, "404", "not_found"),
    (405, "405", "method_not_allowed"),
    (408, "408", "timeout"),
    (413, "413", "too_large"),
    (414, "414", "uri_too_long"),
    (415, "415", "unsupported_media_type"),
    (429, "429", "rate_limited"),
    (431, "431", "headers_too_large"),
    (500, "500", "internal"),
    (503, "503", "unavailable"),
];

const WS_CODES: [(ErrorCode, &str, &str); 9] = [
    (ErrorCode::AppNotFound, "4001", "app_not_found"),
    (ErrorCode::AppDisabled, "4003", "app_disabled"),
    (ErrorCode::OverConnectionQuota, "4004", "over_quota"),
    (
        ErrorCode::InvalidVersionFormat,
        "4006",
        "bad_protocol_version",
    ),
    (
        ErrorCode::UnsupportedProtocolVersion,
        "4007",
        "bad_protocol_version",
    ),
    (ErrorCode::NoProtocolVersion, "4008", "bad_protocol_version"),
    (ErrorCode::Unauthorized, "4009", "unauthorized"),
    (ErrorCode::OverCapacity, "4100", "over_capacity"),
    (ErrorCode::GenericReconnect, "4200", "shutting_down"),
];

impl Rejection {
    pub(super) fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::Http(status) => HTTP_STATUSES
                .iter()
                .find(|(s, _, _)| *s == status)
                .map_or(("other", "other"), |(_, s, r)| (*s, *r)),
            Self::WebSocket(code) => WS_CODES
                .iter()
                .find(|(c, _, _)| *c == code)
                .map_or(("other", "other"), |(_, s, r)| (*s, *r)),
        }
    }
}

/// The limits of SPEC §8, by config key; the `limit` label of `crier_limit_hits_total`.
pub(crate) mod limits {
    pub(crate) const MAX_CONNECTIONS: &str = "max_connections";
    pub(crate) const MAX_CONNECTIONS_PER_IP: &str = "max_connections_per_ip";
    pub(crate) const MAX_CHANNELS_PER_CONNECTION: &str = "max_channels_per_connection";
    pub(crate) const SUBSCRIPTIONS_PER_SEC: &str = "subscriptions_per_sec";
    pub(crate) const CLIENT_EVENTS_PER_SEC: &str = "client_events_per_sec";
    pub(crate) const PUBLISH_PER_SEC: &str = "publish_per_sec";
    pub(crate) const MAX_EVENT_SIZE: &str = "max_event_size";
    pub(crate) const MAX_PRESENCE_MEMBERS: &str = "max_presence_members";
    pub(crate) const HANDSHAKE_TIMEOUT: &str = "handshake_timeout_secs";
    pub(crate) const SUBSCRIBE_TIMEOUT: &str = "subscribe_timeout_secs";
    pub(crate) const MAX_HEADER_BYTES: &str = "max_header_bytes";
    pub(crate) const MAX_URL_BYTES: &str = "max_url_bytes";
    pub(crate) const MAX_BODY_BYTES: &str = "max_body_bytes";

    pub(crate) const ALL: [&str; 13] = [
        MAX_CONNECTIONS,
        MAX_CONNECTIONS_PER_IP,
        MAX_CHANNELS_PER_CONNECTION,
        SUBSCRIPTIONS_PER_SEC,
        CLIENT_EVENTS_PER_SEC,
        PUBLISH_PER_SEC,
        MAX_EVENT_SIZE,
        MAX_PRESENCE_MEMBERS,
        HANDSHAKE_TIMEOUT,
        SUBSCRIBE_TIMEOUT,
        MAX_HEADER_BYTES,
        MAX_URL_BYTES,
        MAX_BODY_BYTES,
    ];
}

/// `kind` values of `crier_client_errors_total` (recorded in `crier-core` and here).
const CLIENT_ERROR_KINDS: [&str; 5] = [
    "bad_frame",
    "subscription_error",
    "channel_limit",
    "fallback_capacity",
    "fallback_refused",
];

/// Ingests whose messages are counted by `crier_messages_published_total`.
pub(crate) const INGESTS: [&str; 4] = ["http", "udp", "redis_queue", "client_event"];

/// Endpoints of the HTTP API, the `endpoint` label of its request duration.
pub(crate) const API_ENDPOINTS: [&str; 7] = [
    "events",
    "batch_events",
    "channels",
    "channel",
    "channel_users",
    "channel_messages",
    "terminate_connections",
];

fn describe() {
    use names::*;
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which Crier this is"
    );
    describe_gauge!(
        CONNECTIONS,
        "Open client connections (WebSocket, SSE stream, held long-poll, pusher-js fallback session) by transport and app"
    );
    describe_counter!(OPENED, "Client connections opened, by transport");
    describe_counter!(CLOSED, "Client connections closed, by transport and reason");
    describe_gauge!(
        SUBSCRIPTIONS,
        "Channel subscriptions held by local connections"
    );
    describe_gauge!(CHANNELS, "Channels with at least one local subscriber");
    describe_counter!(
        PUBLISHED,
        "Messages accepted for publishing (one per channel), by ingest and app"
    );
    describe_counter!(
        DELIVERED,
        "Frames written to clients from their outbox (channel events, client events, presence changes), by transport"
    );
    describe_counter!(REPLAYED, "Messages sent from history to resuming clients");
    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "Payload bytes received from clients (WebSocket frames, fallback sends), by transport"
    );
    describe_counter!(
        BYTES_SENT,
        Unit::Bytes,
        "Payload bytes written to clients (frames, SSE events, response bodies), by transport"
    );
    describe_counter!(
        BROKER_CATCH_UPS,
        "Reads of missed messages from the Redis history, by cause (gap: an offset jumped; reconnect: the link to Redis dropped or fell behind)"
    );
    describe_counter!(
        BROKER_LOST,
        "Catch-ups that found messages gone from the Redis history (expired, or Redis lost them)"
    );
    describe_counter!(
        BROKER_FRAMES_DROPPED,
        "Client events and presence frames not sent to other nodes because Redis was unreachable"
    );
    describe_counter!(
        BROKER_UNDECODABLE,
        "Items on a Redis topic this version cannot read"
    );
    describe_counter!(
        SLOW_CONSUMERS,
        "Connections closed because the client did not read fast enough"
    );
    describe_counter!(
        REJECTED,
        "Requests and connection attempts refused, by status (HTTP status or Pusher close code) and reason"
    );
    describe_counter!(
        LIMIT_HITS,
        "Refusals by a configured limit, by its config key"
    );
    describe_counter!(
        CLIENT_ERRORS,
        "Client frames answered with an error while the connection stays open, by kind"
    );
    describe_counter!(
        INGEST_DROPPED,
        "UDP datagrams and Redis queue items dropped, by ingest and reason"
    );
    describe_counter!(WEBHOOKS_SENT, "Webhook requests delivered");
    describe_counter!(
        WEBHOOKS_FAILED,
        "Webhook requests given up on after their retries"
    );
    describe_counter!(
        WEBHOOKS_DROPPED,
        "Webhook events dropped because the webhook queue was full"
    );
    describe_gauge!(
        HISTORY_BYTES,
        Unit::Bytes,
        "Bytes the history store occupies on disk (journal and tables)"
    );
    describe_gauge!(
        HISTORY_MESSAGES,
        "Messages retained in history (approximate: expired ones count until compaction)"
    );
    describe_gauge!(HISTORY_HEALTHY, "1 while the history store takes writes");
    describe_counter!(HISTORY_WRITE_FAILURES, "History writes that failed");
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Time from a publish accepted by this node to its frame handed to a client's connection for writing, by transport (one sample per batch written)"
    );
    describe_histogram!(
        API_DURATION,
        Unit::Seconds,
        "HTTP API request duration, by endpoint"
    );
    describe_gauge!(TASKS, "Tasks alive on the runtime (read at scrape time)");
}

/// Describes every family and registers its series at zero: counters and histograms
/// are touched without a value, gauges are incremented by zero (so a second server in
/// the same process does not reset them).
pub(crate) fn register(config: &Config) {
    use names::*;
    if super::handle().is_none() {
        return;
    }
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for t in Transport::ALL {
        let t = t.label();
        for app in &config.apps {
            let app: Arc<str> = Arc::from(app.id.as_str());
            metrics::gauge!(CONNECTIONS, "transport" => t, "app" => app).increment(0.0);
        }
        metrics::counter!(OPENED, "transport" => t).increment(0);
        for r in CloseReason::ALL {
            metrics::counter!(CLOSED, "transport" => t, "reason" => r.label()).increment(0);
        }
        // Taking the handle registers the series; it renders with zero samples.
        let _ = metrics::histogram!(DELIVERY_LATENCY, "transport" => t);
    }
    for t in Transport::ALL {
        // The handles: this resolves the delivered and bytes counters too.
        super::transport(t).delivered.increment(0);
        super::transport(t).bytes_sent.increment(0);
        super::transport(t).bytes_received.increment(0);
    }
    metrics::gauge!(SUBSCRIPTIONS).increment(0.0);
    metrics::gauge!(CHANNELS).increment(0.0);
    for ingest in INGESTS {
        for app in &config.apps {
            let app: Arc<str> = Arc::from(app.id.as_str());
            metrics::counter!(PUBLISHED, "ingest" => ingest, "app" => app).increment(0);
        }
    }
    metrics::counter!(REPLAYED).increment(0);
    metrics::counter!(SLOW_CONSUMERS).increment(0);
    for cause in ["gap", "reconnect"] {
        metrics::counter!(BROKER_CATCH_UPS, "cause" => cause).increment(0);
    }
    metrics::counter!(BROKER_LOST).increment(0);
    metrics::counter!(BROKER_UNDECODABLE).increment(0);
    metrics::counter!(BROKER_FRAMES_DROPPED).increment(0);
    for (_, status, reason) in HTTP_STATUSES {
        metrics::counter!(REJECTED, "status" => status, "reason" => reason).increment(0);
    }
    for (_, status, reason) in WS_CODES {
        metrics::counter!(REJECTED, "status" => status, "reason" => reason).increment(0);
    }
    for limit in limits::ALL {
        metrics::counter!(LIMIT_HITS, "limit" => limit).increment(0);
    }
    for kind in CLIENT_ERROR_KINDS {
        metrics::counter!(CLIENT_ERRORS, "kind" => kind).increment(0);
    }
    for ingest in ["udp", "redis_queue"] {
        for reason in Reject::ALL
            .map(Reject::label)
            .into_iter()
            .chain(["publish_failed"])
        {
            metrics::counter!(INGEST_DROPPED, "ingest" => ingest, "reason" => reason).increment(0);
        }
    }
    metrics::counter!(WEBHOOKS_SENT).increment(0);
    metrics::counter!(WEBHOOKS_FAILED).increment(0);
    metrics::counter!(WEBHOOKS_DROPPED).increment(0);
    metrics::gauge!(HISTORY_BYTES).increment(0.0);
    metrics::gauge!(HISTORY_MESSAGES).increment(0.0);
    metrics::counter!(HISTORY_WRITE_FAILURES).increment(0);
    for endpoint in API_ENDPOINTS {
        let _ = metrics::histogram!(API_DURATION, "endpoint" => endpoint);
    }
    metrics::gauge!(TASKS).increment(0.0);
}
