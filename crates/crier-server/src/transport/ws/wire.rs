//! The WebSocket layer under the Pusher protocol: the settings every upgrade gets, and
//! how a connection ends when the client breaks RFC 6455. The Autobahn echo server
//! (`examples/ws_echo.rs`) uses these same functions, so a conformance run tests
//! exactly what the Pusher endpoint runs.

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use futures_util::SinkExt;
use std::time::Duration;
use tungstenite::error::ProtocolError;

/// Applies Crier's size limits and buffer sizes to an upgrade.
pub fn configure(upgrade: WebSocketUpgrade, max_message_bytes: usize) -> WebSocketUpgrade {
    // tungstenite preallocates a 128 KiB read buffer per connection by default; a
    // small one keeps idle connections cheap and grows only for large frames. Writes
    // gather up to 8 KiB of queued frames before a syscall (flushed after each batch).
    upgrade
        .max_message_size(max_message_bytes)
        .max_frame_size(max_message_bytes)
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
}

/// The close frame that fails the connection after `error` came from a read, or `None`
/// when there is no one left to tell (the peer went away, or closing had begun).
///
/// tungstenite reports these violations as errors without queueing a close frame
/// itself (snapview/tungstenite-rs#38); the one exception, a close frame carrying a
/// reserved code, it answers with 1002 on its own and is not an error.
pub fn close_frame_for(error: axum::Error) -> Option<CloseFrame> {
    // axum boxes tungstenite's error. The downcast only matches while our `tungstenite`
    // is the version axum was built with; tests/ws_protocol_errors.rs fails if not.
    let error = error.into_inner().downcast::<tungstenite::Error>().ok()?;
    let (code, reason) = match *error {
        tungstenite::Error::Utf8(_) => (close_code::INVALID, "Invalid UTF-8"),
        tungstenite::Error::Capacity(_) => (close_code::SIZE, "Message too big"),
        tungstenite::Error::Protocol(violation) => (close_code::PROTOCOL, reason(&violation)?),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    })
}

/// The close reason for a frame-level violation; `None` for the protocol errors that
/// are about the connection's state rather than a bad frame.
fn reason(violation: &ProtocolError) -> Option<&'static str> {
    Some(match violation {
        ProtocolError::NonZeroReservedBits => "Reserved bits set",
        ProtocolError::UnmaskedFrameFromClient => "Unmasked frame",
        ProtocolError::UnknownControlFrameType(_)
        | ProtocolError::UnknownDataFrameType(_)
        | ProtocolError::InvalidOpcode(_) => "Unknown opcode",
        ProtocolError::FragmentedControlFrame | ProtocolError::ControlFrameTooBig => {
            "Bad control frame"
        }
        ProtocolError::UnexpectedContinueFrame | ProtocolError::ExpectedFragment(_) => {
            "Bad fragmentation"
        }
        ProtocolError::InvalidCloseSequence => "Bad close frame",
        _ => return None,
    })
}

/// Sends `frame` and gives the connection up. After a read error the stream yields
/// nothing more, so there is no close reply to wait for.
pub async fn fail(socket: &mut WebSocket, frame: CloseFrame, write_timeout: Duration) {
    let _ = tokio::time::timeout(write_timeout, socket.send(Message::Close(Some(frame)))).await;
}

/// Completes a close the client started. tungstenite queues its reply to the client's
/// close frame but writes it only on the next read or flush; dropping the socket first
/// would leave the client without a reply (it would report 1006).
pub async fn finish_client_close(socket: &mut WebSocket, write_timeout: Duration) {
    let _ = tokio::time::timeout(write_timeout, socket.flush()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::error::CapacityError;

    fn code(error: tungstenite::Error) -> Option<u16> {
        close_frame_for(axum::Error::new(error)).map(|frame| frame.code)
    }

    #[test]
    fn violations_map_to_their_close_codes() {
        assert_eq!(code(tungstenite::Error::Utf8("bad".into())), Some(1007));
        let too_long = CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        };
        assert_eq!(code(tungstenite::Error::Capacity(too_long)), Some(1009));
        for violation in [
            ProtocolError::NonZeroReservedBits,
            ProtocolError::UnknownDataFrameType(3),
            ProtocolError::UnknownControlFrameType(11),
            ProtocolError::UnmaskedFrameFromClient,
            ProtocolError::UnexpectedContinueFrame,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::InvalidCloseSequence,
        ] {
            assert_eq!(code(tungstenite::Error::Protocol(violation)), Some(1002));
        }
    }

    #[test]
    fn a_vanished_or_closing_peer_gets_no_close_frame() {
        let reset = ProtocolError::ResetWithoutClosingHandshake;
        assert_eq!(code(tungstenite::Error::Protocol(reset)), None);
        let after = ProtocolError::ReceivedAfterClosing;
        assert_eq!(code(tungstenite::Error::Protocol(after)), None);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(code(tungstenite::Error::Io(io)), None);
        assert_eq!(code(tungstenite::Error::ConnectionClosed), None);
        // Not a tungstenite error at all (or one from another tungstenite version).
        let other = axum::Error::new(std::io::Error::other("elsewhere"));
        assert!(close_frame_for(other).is_none());
    }
}
