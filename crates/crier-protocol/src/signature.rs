//! HMAC-SHA256 signatures: channel authorization, user sign-in and the HTTP API's
//! request signing, exactly as Pusher computes them. Every comparison of a signature
//! runs in constant time so an attacker learns nothing from response timing.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::borrow::Cow;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far an HTTP API request's `auth_timestamp` may be from now.
pub const MAX_TIMESTAMP_SKEW_SECS: i64 = 600;

fn mac(secret: &str, message: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(message.as_bytes());
    mac
}

/// Lower-case hex HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &str, message: &str) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

/// Checks a hex signature in constant time; malformed hex is simply a mismatch.
pub fn verify(secret: &str, message: &str, signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(bytes) => mac(secret, message).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// The string an app's auth endpoint signs to let `socket_id` into `channel`.
pub fn channel_auth_message(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The `auth` value (`key:signature`) an auth endpoint returns for a subscription.
pub fn channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let sig = sign(
        secret,
        &channel_auth_message(socket_id, channel, channel_data),
    );
    format!("{key}:{sig}")
}

/// The string an app's user-authentication endpoint signs for `pusher:signin`.
pub fn user_auth_message(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Verifies an `auth` value of the form `key:signature` against `message`.
pub fn verify_key_signature(key: &str, secret: &str, message: &str, auth: &str) -> bool {
    let Some((given_key, sig)) = auth.split_once(':') else {
        return false;
    };
    let key_ok: bool = given_key.as_bytes().ct_eq(key.as_bytes()).into();
    // Always compute the MAC so a wrong key costs the same time as a wrong signature.
    let sig_ok = verify(secret, message, sig);
    key_ok & sig_ok
}

/// Lower-case hex MD5 of an HTTP body, for `body_md5`.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Why a signed HTTP API request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    #[error("auth_version must be 1.0")]
    BadVersion,
    #[error("auth_timestamp is not a number")]
    BadTimestamp,
    #[error("auth_timestamp is more than 600 s away from the server's clock")]
    StaleTimestamp,
    #[error("body_md5 does not match the body")]
    BodyMd5Mismatch,
    #[error("auth_key does not belong to this app")]
    WrongKey,
    #[error("invalid auth_signature")]
    BadSignature,
}

/// The decoded query parameters of an HTTP API request, in arrival order.
pub type QueryPairs = Vec<(String, String)>;

/// Builds the canonical `METHOD\nPATH\nsorted_query` string Pusher signs: keys lower
/// case, sorted, `auth_signature` left out, values as decoded.
pub fn request_string_to_sign(method: &str, path: &str, query: &[(String, String)]) -> String {
    // Built in one buffer: this runs on every API request, and a String per pair
    // showed up at 6% of the server's CPU under publish load. Keys are nearly always
    // lowercase already, so they are borrowed unless they are not.
    let mut pairs: Vec<(Cow<'_, str>, &str)> = query
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| {
            let key = if k.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(k.to_ascii_lowercase())
            } else {
                Cow::Borrowed(k.as_str())
            };
            (key, v.as_str())
        })
        .collect();
    pairs.sort_unstable();
    let len = method.len()
        + path.len()
        + 2
        + pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    let mut out = String::with_capacity(len);
    out.extend(method.chars().map(|c| c.to_ascii_uppercase()));
    out.push('\n');
    out.push_str(path);
    out.push('\n');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Verifies a signed HTTP API request. `now` is Unix seconds.
///
/// # Errors
/// Any missing parameter, wrong key, stale timestamp, body digest mismatch or bad
/// signature, each with its own variant so the client is told what to fix.
pub fn verify_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    now: i64,
) -> Result<(), RequestAuthError> {
    let get = |name: &'static str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .ok_or(RequestAuthError::Missing(name))
    };
    let given_key = get("auth_key")?;
    let timestamp = get("auth_timestamp")?;
    let signature = get("auth_signature")?;
    if get("auth_version")? != "1.0" {
        return Err(RequestAuthError::BadVersion);
    }
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| RequestAuthError::BadTimestamp)?;
    // abs_diff: `now - ts` overflows for timestamps near i64::MIN or MAX, which panics
    // in debug builds and in release wraps to a negative skew that passes the check.
    if now.abs_diff(ts) > MAX_TIMESTAMP_SKEW_SECS.unsigned_abs() {
        return Err(RequestAuthError::StaleTimestamp);
    }
    if !body.is_empty() {
        let md5 = get("body_md5")?;
        if !md5.eq_ignore_ascii_case(&body_md5(body)) {
            return Err(RequestAuthError::BodyMd5Mismatch);
        }
    }
    let key_ok: bool = given_key.as_bytes().ct_eq(key.as_bytes()).into();
    if !key_ok {
        return Err(RequestAuthError::WrongKey);
    }
    if !verify(
        secret,
        &request_string_to_sign(method, path, query),
        signature,
    ) {
        return Err(RequestAuthError::BadSignature);
    }
    Ok(())
}

/// Signs an HTTP API request the way the Pusher SDKs do; returns the full query string.
/// Used by `crier publish`, the benchmark tool and tests.
pub fn sign_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
    now: i64,
) -> String {
    let mut query: QueryPairs = vec![
        ("auth_key".into(), key.into()),
        ("auth_timestamp".into(), now.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        query.push(("body_md5".into(), body_md5(body)));
    }
    query.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let sig = sign(secret, &request_string_to_sign(method, path, &query));
    query.push(("auth_signature".into(), sig));
    let mut out = String::new();
    for (i, (k, v)) in query.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode(k, &mut out);
        out.push('=');
        percent_encode(v, &mut out);
    }
    out
}

/// Escapes all but RFC 3986's unreserved characters. The signature covers the decoded
/// values, so a value with `&`, `+`, `%` or a space must reach the server escaped to be
/// decoded back to what was signed.
fn percent_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&hex::encode_upper([b]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_auth_matches_pusher_docs_example() {
        // The worked example from Pusher's "authorizing connections" documentation.
        let auth = channel_auth(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "1234.1234",
            "private-foobar",
            None,
        );
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn key_signature_checks_key_and_mac() {
        let msg = channel_auth_message("1.2", "private-a", None);
        let good = channel_auth("k", "s", "1.2", "private-a", None);
        assert!(verify_key_signature("k", "s", &msg, &good));
        assert!(!verify_key_signature("other", "s", &msg, &good));
        assert!(!verify_key_signature("k", "wrong", &msg, &good));
        assert!(!verify_key_signature("k", "s", &msg, "k:zz"));
        assert!(!verify_key_signature("k", "s", &msg, "nocolon"));
    }

    #[test]
    fn string_to_sign_lowercases_sorts_and_drops_the_signature() {
        let owned = |pairs: &[(&str, &str)]| -> QueryPairs {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let query = owned(&[
            ("auth_version", "1.0"),
            ("Auth_Key", "k"),
            ("auth_signature", "ignored"),
            ("b", "2"),
            ("a", "1"),
        ]);
        assert_eq!(
            request_string_to_sign("post", "/apps/3/events", &query),
            "POST\n/apps/3/events\na=1&auth_key=k&auth_version=1.0&b=2"
        );
        assert_eq!(request_string_to_sign("GET", "/x", &[]), "GET\n/x\n");
    }

    /// Found by fuzz/api_signature: `now - ts` overflowed.
    #[test]
    fn extreme_timestamps_are_stale() {
        for (ts, now) in [(i64::MIN, 1000), (i64::MAX, -1), (1000 + i64::MIN, 1000)] {
            let qs = sign_request("k", "s", "GET", "/apps/1/channels", &[], b"", ts);
            let pairs: QueryPairs = qs
                .split('&')
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            assert_eq!(
                verify_request("k", "s", "GET", "/apps/1/channels", &pairs, b"", now),
                Err(RequestAuthError::StaleTimestamp),
                "timestamp {ts} at {now}"
            );
        }
    }

    #[test]
    fn signed_request_round_trips() {
        let body = br#"{"name":"e","channel":"c","data":"{}"}"#;
        let qs = sign_request("k", "s", "POST", "/apps/1/events", &[], body, 1000);
        let pairs: QueryPairs = qs
            .split('&')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        assert_eq!(
            verify_request("k", "s", "POST", "/apps/1/events", &pairs, body, 1000),
            Ok(())
        );
        assert_eq!(
            verify_request("k", "s", "POST", "/apps/1/events", &pairs, body, 1601),
            Err(RequestAuthError::StaleTimestamp)
        );
        assert_eq!(
            verify_request("k", "s", "POST", "/apps/1/events", &pairs, b"{}", 1000),
            Err(RequestAuthError::BodyMd5Mismatch)
        );
        assert_eq!(
            verify_request("k", "x", "POST", "/apps/1/events", &pairs, body, 1000),
            Err(RequestAuthError::BadSignature)
        );
        assert_eq!(
            verify_request("k", "s", "POST", "/apps/2/events", &pairs, body, 1000),
            Err(RequestAuthError::BadSignature)
        );
    }
}
