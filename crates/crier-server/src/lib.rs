//! Crier's server: configuration, the HTTP router (Pusher WebSocket, HTTP API, SSE,
//! long-poll, operations endpoints) and the ingests, all thin adapters around
//! `crier-core`. [`server::run`] is what both the `crier` binary and the tests start.

#![forbid(unsafe_code)]

pub mod api;
pub mod build;
pub mod config;
mod dashboard;
pub mod demo;
pub mod ingest;
mod landing;
pub mod limits;
mod listener;
pub mod logging;
pub mod metrics;
pub mod ops;
mod request_body;
pub mod scripts;
pub mod server;
pub mod state;
pub mod tls;
pub mod transport;
pub mod webhooks;

pub use config::Config;
pub use server::{run, Running};
