//! Configuration: the TOML file of SPEC §1, overridden by `CRIER_*` environment
//! variables and command-line flags, validated into one `Config` with errors that
//! name the offending key.

use clap::Args;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod broker;
pub use broker::{BrokerConfig, BrokerKind};

/// Longest timing (`server.*_secs`) accepted. A day is beyond any sensible setting, and
/// the bound keeps `Instant::now() + timing` from overflowing (a panic on every
/// connection) and the activity timeout within what pusher-js's timer can hold
/// (2^31 - 1 ms; beyond it the client pings at once, again and again).
pub const MAX_TIMING_SECS: u64 = 86_400;

/// Credentials of the built-in development app; refused on non-loopback addresses.
pub const DEV_APP_ID: &str = "1";
pub const DEV_APP_KEY: &str = "app-key";
pub const DEV_APP_SECRET: &str = "app-secret";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub apps: Vec<AppConfig>,
    pub history: HistoryConfig,
    pub ingest: IngestConfig,
    pub broker: BrokerConfig,
    pub dashboard: DashboardConfig,
    pub demo: DemoConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            apps: vec![AppConfig::dev()],
            history: HistoryConfig::default(),
            ingest: IngestConfig::default(),
            broker: BrokerConfig::default(),
            dashboard: DashboardConfig::default(),
            demo: DemoConfig::default(),
        }
    }
}

/// `[demo]`: the demo pages under `/demo` (see `crate::demo`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve the pages and their endpoints. They sign tokens and publish on the first
    /// app's demo channels for anyone who can reach the server, so unset means: only
    /// while `server.listen` is a loopback address.
    pub enabled: Option<bool>,
}

impl DemoConfig {
    /// Whether `/demo` is served by a server listening on `listen`.
    pub fn active(&self, listen: &str) -> bool {
        self.enabled.unwrap_or_else(|| {
            listen
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback())
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Runtime worker threads; 0 means one per core.
    pub workers: usize,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub log_file: String,
    /// Seconds of silence before a ping (told to clients as `activity_timeout`).
    pub activity_timeout_secs: u64,
    /// Seconds to wait for a pong before closing with 4201.
    pub pong_timeout_secs: u64,
    /// Frames queued per connection before it is closed as a slow consumer.
    pub outbox_capacity: usize,
    /// Largest WebSocket message accepted from a client, in bytes.
    pub max_frame_bytes: usize,
    /// Largest HTTP API request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Seconds graceful shutdown may take before connections are dropped.
    pub shutdown_timeout_secs: u64,
    /// Seconds a write to a client may block before it counts as a slow consumer.
    pub write_timeout_secs: u64,
    /// Seconds a long-poll presence member stays after its last poll's timeout.
    pub poll_presence_grace_secs: u64,
    /// Seconds of silence on an SSE stream before a heartbeat comment.
    pub sse_heartbeat_secs: u64,
    /// Seconds a pusher-js fallback session may go without a receiving request before
    /// it is closed (it must outlast the gap between two polls).
    pub fallback_session_idle_secs: u64,
    /// pusher-js HTTP fallback sessions (xhr_streaming, xhr_polling) open at once; a new
    /// one beyond is refused with 4100 (over capacity).
    pub max_fallback_sessions: usize,
    /// Seconds a connection may take to send a complete request head (from accept,
    /// and again while idle between keep-alive requests), then a request body, and a
    /// WebSocket to receive its `connection_established`.
    pub handshake_timeout_secs: u64,
    /// Largest request head (request line and headers), in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// PEM certificate chain (leaf first); with `tls_key`, the listener speaks TLS only.
    /// Empty: plain HTTP.
    pub tls_cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: String,
    /// Longest request target (path and query), in bytes (414 beyond; a URL that also
    /// takes the head past `max_header_bytes` gets that limit's 431 first).
    pub max_url_bytes: usize,
    /// Seconds a WebSocket may stay open without any subscription (or sign-in) before
    /// it is closed with 4202; 0 turns it off.
    pub subscribe_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6001".into(),
            workers: 0,
            data_dir: PathBuf::from("./crier-data"),
            log_format: LogFormat::Text,
            log_file: String::new(),
            activity_timeout_secs: 120,
            pong_timeout_secs: 30,
            outbox_capacity: 1024,
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 256 * 1024,
            shutdown_timeout_secs: 10,
            write_timeout_secs: 10,
            poll_presence_grace_secs: 10,
            sse_heartbeat_secs: 15,
            fallback_session_idle_secs: 60,
            max_fallback_sessions: 10_000,
            handshake_timeout_secs: 10,
            // 100 channel names of up to 164 characters in an SSE or long-poll URL, plus a
            // token listing them, come to about 40 KiB.
            max_header_bytes: 64 * 1024,
            tls_cert: String::new(),
            tls_key: String::new(),
            // The same URL, with room to spare below max_header_bytes.
            max_url_bytes: 48 * 1024,
            subscribe_timeout_secs: 120,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub client_events: bool,
    #[serde(default)]
    pub max_connections: u64,
    #[serde(default = "any_origin")]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub max_event_size: Option<usize>,
    #[serde(default)]
    pub max_presence_members: Option<usize>,
    #[serde(default)]
    pub client_events_per_sec: Option<u32>,
    /// Channels one connection may subscribe to (default 100).
    #[serde(default)]
    pub max_channels_per_connection: Option<usize>,
    /// Connections (WebSocket, SSE, held long-poll, fallback session) from one client
    /// IP address (default 10,000; 0 = unlimited).
    #[serde(default)]
    pub max_connections_per_ip: Option<u32>,
    /// Subscribe and unsubscribe requests one WebSocket may send per second
    /// (default 200; 0 = unlimited).
    #[serde(default)]
    pub subscriptions_per_sec: Option<u32>,
    /// HTTP publish requests (`events`, `batch_events`) per second (default 0 =
    /// unlimited); 429 with `Retry-After` beyond.
    #[serde(default)]
    pub publish_per_sec: Option<u32>,
    /// Per-app history overrides of `[history]`.
    #[serde(default)]
    pub history_max_messages: Option<usize>,
    #[serde(default)]
    pub history_max_age_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

fn any_origin() -> Vec<String> {
    vec!["*".into()]
}

impl AppConfig {
    pub fn dev() -> Self {
        Self::new(DEV_APP_ID, DEV_APP_KEY, DEV_APP_SECRET)
    }

    pub fn new(id: &str, key: &str, secret: &str) -> Self {
        Self {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            enabled: true,
            client_events: true,
            max_connections: 0,
            allowed_origins: any_origin(),
            webhooks: Vec::new(),
            max_event_size: None,
            max_presence_members: None,
            client_events_per_sec: None,
            max_channels_per_connection: None,
            max_connections_per_ip: None,
            subscriptions_per_sec: None,
            publish_per_sec: None,
            history_max_messages: None,
            history_max_age_secs: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    Always,
    #[default]
    Grouped,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    pub max_messages: usize,
    pub max_age_secs: u64,
    pub fsync: Fsync,
    /// With `grouped`, how often the journal is fsynced.
    pub fsync_interval_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_age_secs: 86_400,
            fsync: Fsync::Grouped,
            fsync_interval_ms: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub udp: UdpConfig,
    pub redis_queue: Option<RedisQueueConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// Empty turns the listener off.
    pub listen: String,
    /// Require signed datagrams even on a loopback address (always on otherwise).
    pub require_signature: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6002".into(),
            require_signature: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisQueueConfig {
    #[serde(default = "default_redis_url")]
    pub url: String,
    #[serde(default = "default_queue_key")]
    pub key: String,
    /// This node's name among several consuming one queue: its in-flight items are kept
    /// in `<key>:processing:<consumer>`, so that a node recovers only its own after a
    /// crash. Unset: `<key>:processing` (one consumer).
    #[serde(default)]
    pub consumer: Option<String>,
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}

fn default_queue_key() -> String {
    "crier:publish".into()
}

/// `[dashboard]`: the live page at `/dashboard` and its JSON under `/dashboard/api/`.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// `false`: `/dashboard` answers 404.
    pub enabled: bool,
    /// Peers on a loopback address see the dashboard without a login (unless the
    /// request came through a proxy). `false` asks everyone for the login, for a
    /// machine shared with users who should not see it.
    pub open_on_loopback: bool,
    /// HTTP basic login; with `password`.
    pub username: String,
    pub password: String,
    /// Accepted as `Authorization: Bearer TOKEN`, or as the basic password with any
    /// user name (so a browser's login prompt takes it too).
    pub token: String,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            open_on_loopback: true,
            username: String::new(),
            password: String::new(),
            token: String::new(),
        }
    }
}

impl DashboardConfig {
    /// Whether any login is configured; without one, only loopback peers get in.
    pub fn has_login(&self) -> bool {
        !self.password.is_empty() || !self.token.is_empty()
    }
}

/// Secrets stay out of logs and panics.
impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &str| if s.is_empty() { "" } else { "<hidden>" };
        f.debug_struct("DashboardConfig")
            .field("enabled", &self.enabled)
            .field("open_on_loopback", &self.open_on_loopback)
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .finish()
    }
}

/// Settings that flags and `CRIER_*` variables override; each documents its key.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// TOML config file with the sections [server], [[apps]], [history], [ingest.udp],
    /// [ingest.redis_queue] and [broker]; its keys are the names in brackets below.
    #[arg(long, short, env = "CRIER_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP/WebSocket/SSE address [server.listen, default 127.0.0.1:6001].
    #[arg(long, env = "CRIER_LISTEN")]
    pub listen: Option<String>,
    /// Runtime worker threads, 0 = one per core [server.workers].
    #[arg(long, env = "CRIER_WORKERS")]
    pub workers: Option<usize>,
    /// History directory [server.data_dir, default ./crier-data].
    #[arg(long, env = "CRIER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format [server.log_format].
    #[arg(long, env = "CRIER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log to this file instead of stderr [server.log_file].
    #[arg(long, env = "CRIER_LOG_FILE")]
    pub log_file: Option<String>,
    /// UDP ingest address, "" = off [ingest.udp.listen, default 127.0.0.1:6002].
    #[arg(long, env = "CRIER_UDP_LISTEN")]
    pub udp_listen: Option<String>,
    /// History fsync policy [history.fsync].
    #[arg(long, env = "CRIER_FSYNC", value_enum)]
    pub fsync: Option<Fsync>,
    /// Messages kept per channel [history.max_messages].
    #[arg(long, env = "CRIER_HISTORY_MAX_MESSAGES")]
    pub history_max_messages: Option<usize>,
    /// Seconds messages are kept [history.max_age_secs].
    #[arg(long, env = "CRIER_HISTORY_MAX_AGE_SECS")]
    pub history_max_age_secs: Option<u64>,
    /// Seconds to receive request headers, a request body, or complete a WebSocket
    /// handshake; also the keep-alive idle limit [server.handshake_timeout_secs, default 10].
    #[arg(long, env = "CRIER_HANDSHAKE_TIMEOUT_SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Largest HTTP request head in bytes, 431 beyond [server.max_header_bytes, default 65536].
    #[arg(long, env = "CRIER_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// PEM certificate chain: serve HTTPS, WSS and SSE over TLS [server.tls_cert].
    /// Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "CRIER_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// PEM private key of the certificate [server.tls_key].
    #[arg(long, env = "CRIER_TLS_KEY")]
    pub tls_key: Option<String>,
    /// Dashboard login user name [dashboard.username].
    #[arg(long, env = "CRIER_DASHBOARD_USERNAME")]
    pub dashboard_username: Option<String>,
    /// Dashboard login password [dashboard.password].
    #[arg(long, env = "CRIER_DASHBOARD_PASSWORD", hide_env_values = true)]
    pub dashboard_password: Option<String>,
    /// Dashboard bearer token [dashboard.token].
    #[arg(long, env = "CRIER_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,
    /// Broker kind [broker.kind]: "memory" (one node) or "redis" (a cluster of nodes).
    #[arg(long, env = "CRIER_BROKER", value_enum)]
    pub broker: Option<BrokerKind>,
    /// Broker URL [broker.url].
    #[arg(long, env = "CRIER_BROKER_URL")]
    pub broker_url: Option<String>,
    /// Replace the apps with one app of this id (with --app-key, --app-secret).
    #[arg(long, env = "CRIER_APP_ID", requires_all = ["app_key", "app_secret"])]
    pub app_id: Option<String>,
    /// Key of the app given with --app-id [apps[0].key].
    #[arg(long, env = "CRIER_APP_KEY", requires = "app_id")]
    pub app_key: Option<String>,
    /// Secret of the app given with --app-id [apps[0].secret].
    #[arg(
        long,
        env = "CRIER_APP_SECRET",
        requires = "app_id",
        hide_env_values = true
    )]
    pub app_secret: Option<String>,
}

/// Smallest `max_header_bytes`: browsers send about 1 KiB of headers, cookies more.
const MIN_HEADER_BYTES: usize = 4096;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Every key of the config file with its default, as TOML (shown by `crier --help`).
/// Made from the types the file is read into, so it cannot list a key that does not
/// exist or miss one that does. Per-app limits left unset show the value they get.
pub fn defaults_toml() -> String {
    let limits = crier_core::app::AppLimits::default();
    let mut app = AppConfig::dev();
    app.max_event_size = Some(limits.max_event_size);
    app.max_presence_members = Some(limits.max_presence_members);
    app.client_events_per_sec = Some(limits.client_events_per_sec);
    app.max_channels_per_connection = Some(limits.max_channels_per_connection);
    app.max_connections_per_ip = Some(limits.max_connections_per_ip);
    app.subscriptions_per_sec = Some(limits.subscriptions_per_sec);
    app.publish_per_sec = Some(limits.publish_per_sec);
    let mut config = Config {
        apps: vec![app],
        ..Config::default()
    };
    let history = &config.history;
    config.apps[0].history_max_messages = Some(history.max_messages);
    config.apps[0].history_max_age_secs = Some(history.max_age_secs);
    config.ingest.redis_queue = Some(RedisQueueConfig {
        url: default_redis_url(),
        key: default_queue_key(),
        consumer: None,
    });
    toml::to_string(&config).unwrap_or_else(|e| format!("(cannot render the defaults: {e})"))
}

impl Config {
    /// Reads a TOML config file.
    ///
    /// # Errors
    /// Unreadable file, TOML syntax, unknown keys or wrong types.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// File (if any), then environment and flags; then validation.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn load(o: &Overrides) -> Result<Self, ConfigError> {
        let mut c = match &o.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let s = &mut c.server;
        if let Some(v) = &o.listen {
            s.listen = v.clone();
        }
        if let Some(v) = o.workers {
            s.workers = v;
        }
        if let Some(v) = &o.data_dir {
            s.data_dir = v.clone();
        }
        if let Some(v) = o.log_format {
            s.log_format = v;
        }
        if let Some(v) = &o.log_file {
            s.log_file = v.clone();
        }
        if let Some(v) = o.handshake_timeout_secs {
            s.handshake_timeout_secs = v;
        }
        if let Some(v) = o.max_header_bytes {
            s.max_header_bytes = v;
        }
        if let Some(v) = &o.tls_cert {
            s.tls_cert = v.clone();
        }
        if let Some(v) = &o.tls_key {
            s.tls_key = v.clone();
        }
        if let Some(v) = &o.dashboard_username {
            c.dashboard.username = v.clone();
        }
        if let Some(v) = &o.dashboard_password {
            c.dashboard.password = v.clone();
        }
        if let Some(v) = &o.dashboard_token {
            c.dashboard.token = v.clone();
        }
        if let Some(v) = &o.udp_listen {
            c.ingest.udp.listen = v.clone();
        }
        if let Some(v) = o.fsync {
            c.history.fsync = v;
        }
        if let Some(v) = o.history_max_messages {
            c.history.max_messages = v;
        }
        if let Some(v) = o.history_max_age_secs {
            c.history.max_age_secs = v;
        }
        if let Some(v) = o.broker {
            c.broker.kind = v;
        }
        if let Some(v) = &o.broker_url {
            c.broker.url = v.clone();
        }
        if let (Some(id), Some(key), Some(secret)) = (&o.app_id, &o.app_key, &o.app_secret) {
            c.apps = vec![AppConfig::new(id, key, secret)];
        }
        c.validate()?;
        Ok(c)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:6001",
                    self.server.listen
                ),
            )
        })
    }

    /// Checks values and combinations no type can express.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listen = self.listen_addr()?;
        let udp = match self.ingest.udp.listen.as_str() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "ingest.udp.listen",
                    "not an address (use \"\" to turn it off)",
                )
            })?),
        };
        if self.apps.is_empty() {
            return Err(invalid("apps", "at least one [[apps]] table is needed"));
        }
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let key = |k: &str| format!("apps[{i}].{k}");
            for (name, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
                if value.is_empty() {
                    return Err(invalid(key(name), "must not be empty"));
                }
            }
            if !ids.insert(&app.id) {
                return Err(invalid(key("id"), format!("duplicate app id {:?}", app.id)));
            }
            if !keys.insert(&app.key) {
                return Err(invalid(
                    key("key"),
                    format!("duplicate app key {:?}", app.key),
                ));
            }
            if app.secret == DEV_APP_SECRET && !listen.ip().is_loopback() {
                return Err(invalid(
                    key("secret"),
                    format!(
                        "the built-in development secret is refused on the non-loopback address {listen}; set a real secret"
                    ),
                ));
            }
            // Datagrams off loopback are trusted only through their signature, and a
            // signature made with the published dev secret proves nothing.
            if let Some(udp) = udp.filter(|a| !a.ip().is_loopback()) {
                if app.secret == DEV_APP_SECRET {
                    return Err(invalid(
                        key("secret"),
                        format!(
                            "the built-in development secret is refused with UDP ingest on the non-loopback address {udp} (ingest.udp.listen); set a real secret or listen on loopback"
                        ),
                    ));
                }
            }
            if app.max_channels_per_connection == Some(0) {
                return Err(invalid(
                    key("max_channels_per_connection"),
                    "must be at least 1",
                ));
            }
            if app.history_max_messages == Some(0) {
                return Err(invalid(key("history_max_messages"), "must be at least 1"));
            }
        }
        let s = &self.server;
        // Zero activity or pong time would ping every client at once, then close it.
        for (key, secs, min) in [
            ("server.activity_timeout_secs", s.activity_timeout_secs, 1),
            ("server.pong_timeout_secs", s.pong_timeout_secs, 1),
            ("server.write_timeout_secs", s.write_timeout_secs, 0),
            ("server.shutdown_timeout_secs", s.shutdown_timeout_secs, 0),
            (
                "server.poll_presence_grace_secs",
                s.poll_presence_grace_secs,
                0,
            ),
            ("server.sse_heartbeat_secs", s.sse_heartbeat_secs, 1),
            ("server.subscribe_timeout_secs", s.subscribe_timeout_secs, 0),
            (
                "server.fallback_session_idle_secs",
                s.fallback_session_idle_secs,
                1,
            ),
        ] {
            if !(min..=MAX_TIMING_SECS).contains(&secs) {
                return Err(invalid(
                    key,
                    format!("must be between {min} and {MAX_TIMING_SECS} seconds"),
                ));
            }
        }
        if self.history.max_messages == 0 {
            return Err(invalid("history.max_messages", "must be at least 1"));
        }
        if self.history.max_age_secs == 0 {
            return Err(invalid("history.max_age_secs", "must be at least 1"));
        }
        if self.server.max_fallback_sessions == 0 {
            return Err(invalid(
                "server.max_fallback_sessions",
                "must be at least 1",
            ));
        }
        if self.server.outbox_capacity == 0 {
            return Err(invalid("server.outbox_capacity", "must be at least 1"));
        }
        if self.server.handshake_timeout_secs == 0 {
            return Err(invalid(
                "server.handshake_timeout_secs",
                "must be at least 1 (a connection without a deadline can be held open forever)",
            ));
        }
        if self.server.max_header_bytes < MIN_HEADER_BYTES {
            return Err(invalid(
                "server.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        match (s.tls_cert.is_empty(), s.tls_key.is_empty()) {
            (false, true) => {
                return Err(invalid(
                    "server.tls_key",
                    "must be set together with server.tls_cert",
                ))
            }
            (true, false) => {
                return Err(invalid(
                    "server.tls_cert",
                    "must be set together with server.tls_key",
                ))
            }
            _ => {}
        }
        let d = &self.dashboard;
        match (d.username.is_empty(), d.password.is_empty()) {
            (false, true) => {
                return Err(invalid(
                    "dashboard.password",
                    "must be set together with dashboard.username",
                ))
            }
            (true, false) => {
                return Err(invalid(
                    "dashboard.username",
                    "must be set together with dashboard.password",
                ))
            }
            _ => {}
        }
        // (A URL is also part of the request head: beyond max_header_bytes, hyper's 431
        // comes first.)
        if self.server.max_url_bytes < 1024 {
            return Err(invalid("server.max_url_bytes", "must be at least 1024"));
        }
        if self.broker.kind == BrokerKind::Redis {
            self.broker.validate()?;
        }
        Ok(())
    }

    /// The certificate and key paths when TLS is on.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        let s = &self.server;
        (!s.tls_cert.is_empty() && !s.tls_key.is_empty())
            .then(|| (Path::new(&s.tls_cert), Path::new(&s.tls_key)))
    }

    /// Whether the built-in development credentials are in use.
    pub fn uses_dev_credentials(&self) -> bool {
        self.apps.iter().any(|a| a.secret == DEV_APP_SECRET)
    }
}

#[cfg(test)]
mod tests;
