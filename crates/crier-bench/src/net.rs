//! Sockets and a small keep-alive HTTP/1.1 client. Client sockets are bound to
//! 127.0.0.x before connecting so one run can use more connections than one source
//! address has ephemeral ports.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use tokio::net::{TcpSocket, TcpStream};

/// A server address given as `http://host:port` (or `ws://`, or bare `host:port`).
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// The `Host` header value.
    pub(crate) host: String,
}

impl Endpoint {
    /// # Errors
    /// When the URL has no port or does not resolve.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .trim_start_matches("http://")
            .trim_start_matches("ws://")
            .trim_end_matches('/');
        if url.starts_with("https://") || url.starts_with("wss://") {
            bail!("{url}: TLS targets are not supported; benchmark the plain-text listener");
        }
        let host = rest.split('/').next().unwrap_or(rest).to_string();
        let addr = host
            .to_socket_addrs()
            .with_context(|| format!("{url}: expected http://HOST:PORT"))?
            .next()
            .with_context(|| format!("{url}: does not resolve"))?;
        Ok(Self { addr, host })
    }
}

/// The source address of connection `idx` when spreading over `k` loopback
/// addresses: 127.0.0.1 .. 127.0.0.k.
pub(crate) fn source_ip(idx: usize, k: usize) -> IpAddr {
    let x = idx % k.clamp(1, 254);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + x as u8))
}

/// Connects to `dst`, first binding to `src` when both are loopback IPv4 (binding to a
/// loopback source cannot reach another host).
///
/// # Errors
/// Socket creation, bind or connect failures.
pub(crate) async fn connect(src: Option<IpAddr>, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if dst.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src @ IpAddr::V4(v4)) = src {
        if v4.is_loopback() && dst.ip().is_loopback() && dst.is_ipv4() {
            socket.bind(SocketAddr::new(src, 0))?;
        }
    }
    let stream = socket.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One keep-alive HTTP/1.1 connection; requests go one after another.
pub(crate) struct HttpConn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl HttpConn {
    /// # Errors
    /// Connect or handshake failures.
    pub(crate) async fn open(src: Option<IpAddr>, endpoint: &Endpoint) -> anyhow::Result<Self> {
        let stream = connect(src, endpoint.addr).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the server closes or the sender is dropped.
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: endpoint.host.clone(),
        })
    }

    /// Whether the connection can take another request.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends a request and returns the response with its body unread.
    ///
    /// # Errors
    /// When the connection is closed or the request cannot be written.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Response<Incoming>> {
        self.sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, &self.host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body))?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends a request and reads the whole response.
    ///
    /// # Errors
    /// As [`HttpConn::send`], plus body read failures.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let resp = self.send(method, path_and_query, headers, body).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:6001/").expect("parse");
        assert_eq!(e.addr, "127.0.0.1:6001".parse().expect("addr"));
        assert_eq!(e.host, "127.0.0.1:6001");
        assert!(Endpoint::parse("https://127.0.0.1:1").is_err());
    }

    #[test]
    fn spreads_sources_over_loopback() {
        assert_eq!(source_ip(0, 4).to_string(), "127.0.0.1");
        assert_eq!(source_ip(5, 4).to_string(), "127.0.0.2");
    }

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(encode_query("a,b c"), "a%2Cb%20c");
        assert_eq!(encode_query("x-1.2_~"), "x-1.2_~");
    }
}
