//! RFC 6455 violations on the Pusher endpoint end with a close frame carrying the right
//! code (1002, 1007, 1009), not a dropped connection. A WebSocket client library would
//! refuse to send these frames, so the client here is a raw TCP stream: the upgrade
//! handshake is written by hand and every frame is built byte by byte, masked as a
//! client's must be.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
/// The mask every test frame uses; any value works, the server only has to unmask.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: `first` is the FIN/RSV/opcode byte, the payload is masked.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    push_len(&mut out, 0x80, payload.len());
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A frame without a mask, which a server must refuse from a client.
fn unmasked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    push_len(&mut out, 0, payload.len());
    out.extend_from_slice(payload);
    out
}

fn push_len(out: &mut Vec<u8>, mask_bit: u8, len: usize) {
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// A frame from the server (servers never mask).
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    /// Upgrades to a Pusher WebSocket and reads `pusher:connection_established`.
    async fn connect(server: &TestServer) -> Self {
        let mut stream = TcpStream::connect(server.addr).await.expect("tcp connect");
        // The key and accept value are RFC 6455's own example (section 1.3).
        let request = format!(
            "GET /app/{KEY}?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\n\
             Host: {}\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        let mut client = Self { stream };
        let hello = client.read_frame().await.expect("first frame");
        assert_eq!(hello.opcode, TEXT);
        let hello = String::from_utf8(hello.payload).unwrap();
        assert!(hello.contains("pusher:connection_established"), "{hello}");
        client
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write frame");
    }

    /// The next frame, or `None` once the server has closed the TCP connection.
    async fn read_frame(&mut self) -> Option<ServerFrame> {
        let mut head = [0u8; 2];
        self.read_exact(&mut head).await?;
        assert_eq!(head[1] & 0x80, 0, "server frames are never masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.read_exact(&mut b).await?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.read_exact(&mut b).await?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        self.read_exact(&mut payload).await?;
        Some(ServerFrame {
            opcode: head[0] & 0x0f,
            payload,
        })
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Option<()> {
        match tokio::time::timeout(WAIT, self.stream.read_exact(buf)).await {
            Ok(Ok(_)) => Some(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Ok(Err(e)) => panic!("reading from the server: {e}"),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }

    /// Skips data frames up to the close frame; returns its code and reason.
    async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let frame = self
                .read_frame()
                .await
                .expect("a close frame before the connection ends");
            if frame.opcode == CLOSE {
                assert!(frame.payload.len() >= 2, "close frame without a code");
                let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                let reason = String::from_utf8(frame.payload[2..].to_vec()).unwrap();
                return (code, reason);
            }
        }
    }

    /// Asserts that the server ends the TCP connection after its close frame.
    async fn expect_disconnect(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest)).await;
        match read.expect("the server closes the connection") {
            Ok(_) => assert!(rest.is_empty(), "bytes after the close frame: {rest:?}"),
            // A reset is also an end: the server may not read what a failed client sent.
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("handshake reply in time")
            .expect("read handshake reply");
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Sends `bytes` on a fresh connection and returns the close code the server answers.
async fn close_code_after(server: &TestServer, bytes: &[u8]) -> (u16, String) {
    let mut client = RawClient::connect(server).await;
    client.write(bytes).await;
    let close = client.expect_close().await;
    client.expect_disconnect().await;
    close
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = TestServer::start().await;
    let (code, reason) =
        close_code_after(&server, &frame(FIN | TEXT, b"{\"event\":\"\xc3\x28\"}")).await;
    assert_eq!(code, 1007, "{reason}");
}

#[tokio::test]
async fn reserved_bit_closes_with_1002() {
    let server = TestServer::start().await;
    let (code, reason) = close_code_after(&server, &frame(FIN | RSV1 | TEXT, b"{}")).await;
    assert_eq!(code, 1002, "{reason}");
}

#[tokio::test]
async fn reserved_opcode_closes_with_1002() {
    let server = TestServer::start().await;
    let (code, reason) = close_code_after(&server, &frame(FIN | 0x3, b"{}")).await;
    assert_eq!(code, 1002, "{reason}");
}

#[tokio::test]
async fn unmasked_frame_and_stray_continuation_close_with_1002() {
    let server = TestServer::start().await;
    let (code, reason) = close_code_after(&server, &unmasked_frame(FIN | TEXT, b"{}")).await;
    assert_eq!(code, 1002, "unmasked: {reason}");
    let (code, reason) = close_code_after(&server, &frame(FIN | CONTINUATION, b"{}")).await;
    assert_eq!(code, 1002, "continuation: {reason}");
}

#[tokio::test]
async fn frame_over_max_frame_bytes_closes_with_1009() {
    let server = TestServer::with(|c| c.server.max_frame_bytes = 1024).await;
    // The whole payload is sent, most of it after the server has given up on the frame:
    // the close frame must still arrive ahead of any reset that unread data causes.
    let payload = vec![b'x'; 4096];
    let (code, reason) = close_code_after(&server, &frame(FIN | TEXT, &payload)).await;
    assert_eq!(code, 1009, "{reason}");

    // A frame at the limit is still read: it gets a Pusher error, not a close.
    let mut client = RawClient::connect(&server).await;
    client.write(&frame(FIN | TEXT, &[b'x'; 1024])).await;
    let reply = client.read_frame().await.expect("a reply");
    assert_eq!(reply.opcode, TEXT);
    assert!(String::from_utf8(reply.payload)
        .unwrap()
        .contains("pusher:error"));
}

#[tokio::test]
async fn text_that_is_not_json_gets_a_pusher_error_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(&server).await;
    client.write(&frame(FIN | TEXT, b"not json")).await;
    let reply = client.read_frame().await.expect("a reply");
    assert_eq!(reply.opcode, TEXT);
    assert!(String::from_utf8(reply.payload)
        .unwrap()
        .contains("pusher:error"));
    client
        .write(&frame(FIN | TEXT, br#"{"event":"pusher:ping","data":{}}"#))
        .await;
    let pong = client.read_frame().await.expect("still open");
    assert!(String::from_utf8(pong.payload)
        .unwrap()
        .contains("pusher:pong"));
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(&server).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    client.write(&frame(FIN | CLOSE, &payload)).await;
    let (code, _) = tokio::time::timeout(Duration::from_secs(5), client.expect_close())
        .await
        .expect("close reply in time");
    assert_eq!(code, 1000);
    client.expect_disconnect().await;
}
