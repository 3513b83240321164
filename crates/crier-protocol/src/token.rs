//! HS256 JSON Web Tokens that admit SSE and long-poll clients to private and presence
//! channels. Only HS256 is accepted: the app secret is the key, as for channel auth.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// The claims Crier reads from a token.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Claims {
    /// Channels the bearer may subscribe to.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Expiry, Unix seconds. Required: a token that never expires is refused.
    pub exp: i64,
    /// The user id, required for presence channels.
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub user_info: Option<serde_json::Value>,
}

impl Claims {
    pub fn allows(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == channel)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a JWT")]
    Malformed,
    #[error("token algorithm must be HS256")]
    UnsupportedAlgorithm,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token claims are invalid: {0}")]
    BadClaims(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies `token` with `secret` at time `now` (Unix seconds) and returns its claims.
///
/// # Errors
/// A token that is not three base64url parts, not HS256, wrongly signed, expired, or
/// whose claims lack `exp`.
pub fn verify(token: &str, secret: &str, now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(header)?;
    if header.alg != "HS256" {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let signed = &token[..header_payload_len(token)];
    if !crate::signature::verify(secret, signed, &hex::encode(sig)) {
        return Err(TokenError::BadSignature);
    }
    let claims: Claims = decode_json(payload)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

fn header_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::BadClaims(e.to_string()))
}

/// Issues an HS256 token; for the CLI, the benchmark tool and tests.
pub fn issue(claims: &serde_json::Value, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let sig = hex::decode(crate::signature::sign(secret, &signing_input))
        .expect("sign returns valid hex");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn issued_tokens_verify() {
        let t = issue(
            &json!({"channels": ["private-a"], "exp": 2000, "sub": "u1"}),
            "s",
        );
        let c = verify(&t, "s", 1000).unwrap();
        assert!(c.allows("private-a"));
        assert!(!c.allows("private-b"));
        assert_eq!(c.sub.as_deref(), Some("u1"));
        assert_eq!(verify(&t, "other", 1000), Err(TokenError::BadSignature));
        assert_eq!(verify(&t, "s", 2000), Err(TokenError::Expired));
        assert_eq!(verify("a.b", "s", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn tokens_without_exp_are_refused() {
        let t = issue(&json!({"channels": []}), "s");
        assert!(matches!(verify(&t, "s", 0), Err(TokenError::BadClaims(_))));
    }
}
