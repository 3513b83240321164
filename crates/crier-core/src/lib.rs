//! Crier's domain core: apps, channels, connections (sessions), presence, history and
//! fan-out. It knows nothing of HTTP or sockets: transports hand it text frames and
//! drain each connection's outbox; ingests hand it publish requests.

#![forbid(unsafe_code)]

pub mod app;
pub mod broker;
pub mod events;
pub mod history;
pub mod hub;
pub mod message;
pub mod node;
pub mod outbox;
pub mod position;
pub mod presence;
pub mod publish;
#[cfg(feature = "redis")]
pub mod redis;
pub mod session;
pub mod stream;

pub use app::{App, AppLimits, AppRegistry};
pub use node::{Node, NodeSettings};
