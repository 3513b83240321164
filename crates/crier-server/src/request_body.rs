//! Reading a request body with a size limit and a deadline, for the HTTP API and
//! `xhr_send`. axum's `Bytes` extractor with `DefaultBodyLimit` answers an oversized
//! body with a plain-text 413 and waits as long as the client likes for a body that
//! trickles in; both endpoints promise JSON errors and a bounded request.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use bytes::BytesMut;
use futures_util::StreamExt;
use std::time::Duration;

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Longer than the limit (declared or as it arrived).
    TooLarge { limit: usize },
    /// Not complete within the deadline.
    TooSlow { deadline: Duration },
    /// The connection failed mid-body.
    Failed(String),
}

impl BodyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Failed(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The message for the JSON error, naming the setting behind the limit.
    pub(crate) fn message(&self, limit_key: &str) -> String {
        match self {
            Self::TooLarge { limit } => {
                format!("request body is larger than {limit} bytes ({limit_key})")
            }
            Self::TooSlow { deadline } => format!(
                "request body not received within {} s (server.handshake_timeout_secs)",
                deadline.as_secs()
            ),
            Self::Failed(e) => format!("cannot read request body: {e}"),
        }
    }
}

/// The whole body, at most `limit` bytes, within `deadline`.
///
/// # Errors
/// See [`BodyError`]. A declared `Content-Length` over the limit is refused before
/// anything is read.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let collect = async {
        let mut stream = body.into_data_stream();
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BodyError::Failed(e.to_string()))?;
            if buf.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(deadline, collect)
        .await
        .unwrap_or(Err(BodyError::TooSlow { deadline }))
}
