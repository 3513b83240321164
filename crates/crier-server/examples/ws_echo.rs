//! An echo WebSocket on exactly the stack of Crier's Pusher endpoint (axum's `ws`, the
//! limits and buffer sizes of `wire::configure`, the close codes of
//! `wire::close_frame_for`), so that the Autobahn|Testsuite fuzzing client
//! (`scripts/autobahn`) can judge our WebSocket layer without the Pusher protocol in
//! the way. Not a server to run for anything else.
//!
//! `cargo run -p crier-server --example ws_echo -- --listen 127.0.0.1:0` prints
//! `listening on ADDR` once it accepts connections.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use crier_server::config::ServerConfig;
use crier_server::transport::ws::wire;
use std::io::Write;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Largest message and frame accepted; the Pusher endpoint's default unless given.
    #[arg(long)]
    max_message_bytes: Option<usize>,
}

#[derive(Clone, Copy)]
struct Settings {
    max_message_bytes: usize,
    write_timeout: Duration,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let defaults = ServerConfig::default();
    let settings = Settings {
        max_message_bytes: args.max_message_bytes.unwrap_or(defaults.max_frame_bytes),
        write_timeout: Duration::from_secs(defaults.write_timeout_secs),
    };
    let app = Router::new().route("/", get(upgrade)).with_state(settings);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("max message bytes: {}", settings.max_message_bytes);
    // The script waits for this line to learn the port.
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, app).await
}

async fn upgrade(ws: WebSocketUpgrade, State(settings): State<Settings>) -> Response {
    wire::configure(ws, settings.max_message_bytes)
        .on_upgrade(move |socket| echo(socket, settings.write_timeout))
}

async fn echo(mut socket: WebSocket, write_timeout: Duration) {
    loop {
        let reply = match socket.recv().await {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => message,
            // tungstenite queues the pong itself and writes it on the next read.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) => {
                return wire::finish_client_close(&mut socket, write_timeout).await;
            }
            Some(Err(error)) => {
                if let Some(frame) = wire::close_frame_for(error) {
                    wire::fail(&mut socket, frame, write_timeout).await;
                }
                return;
            }
            None => return,
        };
        match tokio::time::timeout(write_timeout, socket.send(reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}
