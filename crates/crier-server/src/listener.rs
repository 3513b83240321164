//! The HTTP accept loop: one hyper HTTP/1 connection per accepted socket, with a
//! deadline on every stage before a request is complete and writes that may not stay
//! blocked forever.
//!
//! `axum::serve` was used before; it builds its connections without a timer, which
//! silently turns hyper's header-read timeout off: a client could send half a header
//! and hold the connection (and up to ~400 KiB of read buffer) for as long as it liked.

use crate::tls::Tls;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bytes of response hyper may buffer per connection before it stops polling the body.
/// hyper's default (~400 KiB) is what a stream whose client stopped reading held on top
/// of the socket's own buffer; an SSE or xhr_streaming chunk is a few KiB.
const WRITE_BUFFER: usize = 64 * 1024;

/// The per-connection limits, from `[server]`.
pub(crate) struct Limits {
    /// Time to receive a request's headers, counted from accept and again from the
    /// end of each response (keep-alive idle).
    pub header_timeout: Duration,
    /// Largest request head (request line and headers); 431 beyond.
    pub max_header_bytes: usize,
    /// Time a write may stay blocked before the connection is dropped.
    pub write_timeout: Duration,
}

/// Accepts connections until `shutdown`, then asks each to finish its current request
/// and waits for all of them. Upgraded connections (WebSocket) leave hyper and are
/// tracked by their own task. With `tls`, each connection first completes a TLS
/// handshake within `header_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Tls>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper restarts this timer whenever it waits for a new request head, so it
        // also bounds keep-alive idle time.
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(WRITE_BUFFER));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let io = WriteDeadline::new(stream, limits.write_timeout);
        // A clone of the prebuilt router is one reference count, not a new route table.
        let service = WithPeer {
            inner: TowerToHyperService::new(app.clone()),
            peer,
        };
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        match &tls {
            None => connections.spawn(serve_connection(builder, io, service, shutdown)),
            Some(tls) => {
                let acceptor = tls.acceptor().clone();
                let handshake_timeout = limits.header_timeout;
                connections.spawn(async move {
                    // The handshake happens in the connection's task, never in the
                    // accept loop, and has the same deadline as a request head: a
                    // client that sends its ClientHello a byte at a time is cut off.
                    let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(io));
                    let io = tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(io)) => io,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake not done in {handshake_timeout:?}");
                                return;
                            }
                        },
                        () = shutdown.cancelled() => return,
                    };
                    serve_connection(builder, io, service, shutdown).await;
                })
            }
        };
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves HTTP/1 requests (and upgrades) on one connection until it ends; on
/// `shutdown` lets the current request finish first.
async fn serve_connection<I>(
    builder: http1::Builder,
    io: I,
    service: WithPeer<TowerToHyperService<Router>>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // hyper answers these itself (431) or just closes (a slow head).
        if e.is_timeout() {
            crate::metrics::limit_hit(crate::metrics::limits::HANDSHAKE_TIMEOUT);
        } else if e.is_parse_too_large() {
            crate::metrics::limit_hit(crate::metrics::limits::MAX_HEADER_BYTES);
        }
        tracing::debug!("connection ended: {e}");
    }
}

/// Gives every request of a connection its peer address, as axum's `ConnectInfo`
/// (the dashboard opens itself to loopback peers only) and as the
/// [`crate::limits::ClientAddr`] the per-address limits count by.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S> hyper::service::Service<Request<Incoming>> for WithPeer<S>
where
    S: hyper::service::Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut()
            .insert(crate::limits::ClientAddr(self.peer.ip()));
        self.inner.call(req)
    }
}

async fn accept_failed(e: io::Error) {
    // A client that gave up between SYN and accept is not our problem.
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    // Out of file descriptors, most likely: accepting again at once would spin.
    tracing::error!("accept failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A socket whose writes fail with `TimedOut` once they have made no progress for
/// `timeout`. A client that stops reading fills the kernel's send buffer; without
/// this its connection, hyper's buffer and the response stream behind it (an SSE
/// stream, an xhr_streaming session) would be held forever: nothing polls a response
/// body that hyper has no room for, so only the socket can notice.
pub(crate) struct WriteDeadline {
    io: TcpStream,
    timeout: Duration,
    /// Armed at the first blocked write, dropped at the next write that goes through;
    /// allocated only while blocked, so idle connections do not carry a timer.
    stalled: Option<Pin<Box<Sleep>>>,
    /// The deadline passed: every later write fails at once. hyper tries to flush
    /// again while closing, which would otherwise wait (and count) a second time.
    expired: bool,
}

fn stopped_reading() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "client stopped reading (write_timeout)",
    )
}

impl WriteDeadline {
    pub(crate) fn new(io: TcpStream, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
            expired: false,
        }
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if self.expired {
            return Poll::Ready(Err(stopped_reading()));
        }
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        // Registers this task's waker with the timer too, so hyper is woken to retry
        // the write (and see the error) even if the socket never becomes writable.
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stalled = None;
        self.expired = true;
        metrics::counter!("crier_slow_consumer_disconnects_total").increment(1);
        tracing::debug!("client stopped reading for {timeout:?}; dropping the connection");
        Poll::Ready(Err(stopped_reading()))
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
