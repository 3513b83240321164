//! The Pusher Channels wire format as Crier speaks it: channel names, the close and
//! error codes, HMAC signatures for channel auth and the HTTP API, the JWT tokens of
//! the SSE and long-poll transports, and the JSON frames. Pure functions, no I/O, so
//! the server, the benchmark tool and the tests share one definition of the protocol.

#![forbid(unsafe_code)]

pub mod channel;
pub mod error_code;
pub mod frames;
pub mod signature;
pub mod token;

pub use channel::{ChannelKind, ChannelName, ChannelNameError};
pub use error_code::ErrorCode;
