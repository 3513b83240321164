//! Pusher's error and close codes. The range tells pusher-js what to do: 4000-4099
//! do not reconnect, 4100-4199 reconnect after a pause, 4200-4299 reconnect at once.

/// A code sent in `pusher:error` and, when fatal, as the WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Application only accepts SSL connections (unused: TLS is the proxy's job).
    SslOnly = 4000,
    AppNotFound = 4001,
    AppDisabled = 4003,
    OverConnectionQuota = 4004,
    PathNotFound = 4005,
    InvalidVersionFormat = 4006,
    UnsupportedProtocolVersion = 4007,
    NoProtocolVersion = 4008,
    Unauthorized = 4009,
    OverCapacity = 4100,
    GenericReconnect = 4200,
    PongNotReceived = 4201,
    ClosedAfterInactivity = 4202,
    ClientEventRateLimit = 4301,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code with this number, if it is one of ours.
    pub fn from_code(code: u16) -> Option<Self> {
        use ErrorCode::*;
        [
            SslOnly,
            AppNotFound,
            AppDisabled,
            OverConnectionQuota,
            PathNotFound,
            InvalidVersionFormat,
            UnsupportedProtocolVersion,
            NoProtocolVersion,
            Unauthorized,
            OverCapacity,
            GenericReconnect,
            PongNotReceived,
            ClosedAfterInactivity,
            ClientEventRateLimit,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}
