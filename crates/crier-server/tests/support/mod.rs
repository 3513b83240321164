//! The integration-test harness: a real Crier server on 127.0.0.1:0 with its own data
//! directory, and clients that speak to it as real clients do.

#![allow(dead_code, unreachable_pub)]

use crier_protocol::signature;
use crier_server::config::{AppConfig, Config};
use crier_server::Running;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";
pub const APP: &str = "1";

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub config: Config,
    pub dir: std::sync::Arc<tempfile::TempDir>,
}

pub fn base_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.data_dir = dir.to_owned();
    config.ingest.udp.listen = String::new();
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// Starts a server after `tweak` has adjusted the default test config.
    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = base_config(dir.path());
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: std::sync::Arc<tempfile::TempDir>, config: Config) -> Self {
        config.validate().expect("valid test config");
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .expect("bind");
        let running = crier_server::run(listener, config.clone())
            .await
            .expect("server starts");
        Self {
            addr: running.addr,
            running: Some(running),
            config,
            dir,
        }
    }

    /// Stops gracefully and waits.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            tokio::time::timeout(Duration::from_secs(20), r.wait())
                .await
                .expect("shutdown in time")
                .expect("clean shutdown");
        }
    }

    pub fn ws_url(&self, key: &str) -> String {
        format!(
            "ws://{}/app/{key}?protocol=7&client=js&version=8.4.0",
            self.addr
        )
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url(KEY)).await
    }

    /// Waits until `channel` has `n` subscriptions (a stream or poll is registered, or
    /// a dropped one is gone).
    pub async fn wait_subscriptions(&self, channel: &str, n: u64) {
        self.api().wait_subscriptions(channel, n).await;
    }

    /// The in-process node, for tests that publish or count without the wire.
    pub fn node(&self) -> &std::sync::Arc<crier_core::Node> {
        &self.running.as_ref().expect("server is running").node
    }

    /// The development app as the running node holds it.
    pub fn dev_app(&self) -> std::sync::Arc<crier_core::App> {
        self.node().apps().by_id(APP).expect("the dev app").clone()
    }

    pub fn api(&self) -> Api {
        Api {
            base: format!("http://{}", self.addr),
            app: APP.into(),
            key: KEY.into(),
            secret: SECRET.into(),
            http: reqwest::Client::new(),
        }
    }
}

pub fn app(id: &str, key: &str, secret: &str) -> AppConfig {
    AppConfig::new(id, key, secret)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Pusher-protocol WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub socket_id: String,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let mut client = Self {
            ws,
            socket_id: String::new(),
        };
        let hello = client.recv().await;
        assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
        let data: Value = serde_json::from_str(hello["data"].as_str().unwrap()).unwrap();
        client.socket_id = data["socket_id"].as_str().unwrap().to_owned();
        client
    }

    /// Connects and returns the first frame without asserting on it.
    pub async fn raw(url: &str) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect")
            .0
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next JSON frame (skipping pings); panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("frame within the wait")
                .expect("stream open")
                .expect("frame");
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON frame");
                    if v["event"] == "pusher:ping" {
                        continue;
                    }
                    return v;
                }
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Frames until one with `event`, which is returned.
    pub async fn recv_event(&mut self, event: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Waits for the close frame; returns its code.
    pub async fn recv_close(&mut self) -> (Option<Value>, u16) {
        let mut error = None;
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close within the wait");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["event"] == "pusher:error" {
                        error = Some(v);
                    }
                }
                Some(Ok(Message::Close(Some(frame)))) => return (error, frame.code.into()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (error, 0),
                _ => {}
            }
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
            .await;
        self.recv().await
    }

    pub fn auth(&self, channel: &str, channel_data: Option<&str>) -> String {
        signature::channel_auth(KEY, SECRET, &self.socket_id, channel, channel_data)
    }

    pub async fn subscribe_private(&mut self, channel: &str) -> Value {
        let auth = self.auth(channel, None);
        self.send(serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}))
            .await;
        self.recv().await
    }

    pub async fn subscribe_presence(&mut self, channel: &str, user: &str) -> Value {
        let data = serde_json::json!({"user_id": user, "user_info": {"name": user}}).to_string();
        let auth = self.auth(channel, Some(&data));
        self.send(serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": data}}))
            .await;
        self.recv_event("pusher_internal:subscription_succeeded")
            .await
    }
}

/// A signed HTTP API client.
pub struct Api {
    pub base: String,
    pub app: String,
    pub key: String,
    pub secret: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn signed_url(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &[u8],
    ) -> String {
        let qs =
            signature::sign_request(&self.key, &self.secret, method, path, params, body, now());
        format!("{}{path}?{qs}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let url = self.signed_url("POST", path, &[], body.as_bytes());
        let res = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("http");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let url = self.signed_url("GET", path, params, b"");
        let res = self.http.get(url).send().await.expect("http");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `channel` has `n` subscriptions, asking through this client.
    pub async fn wait_subscriptions(&self, channel: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, info) = self
                .get(
                    &format!("/apps/{}/channels/{channel}", self.app),
                    &[("info", "subscription_count")],
                )
                .await;
            if info["subscription_count"].as_u64() == Some(n) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{channel} never reached {n} subscriptions: {info}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn trigger(&self, channel: &str, event: &str, data: &str) -> (u16, Value) {
        self.post(
            &format!("/apps/{}/events", self.app),
            &serde_json::json!({"name": event, "channel": channel, "data": data}),
        )
        .await
    }
}

pub mod redis;

pub mod busy;
pub mod metrics;
pub mod sse;
pub mod tls;
