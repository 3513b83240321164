//! Who may see the dashboard: loopback peers without a login (unless configured
//! otherwise, or the request came through a proxy), everyone else with the configured
//! basic login or bearer token, compared in constant time.

use crate::config::DashboardConfig;
use axum::http::{header, HeaderMap};
use base64::Engine;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No or wrong credentials; a login exists (401).
    Login,
    /// Off loopback and no login is configured: nobody there can get in (403).
    NoLoginConfigured,
}

/// Decides whether a request from `peer` with `headers` may see the dashboard.
pub(crate) fn check(
    config: &DashboardConfig,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), Denied> {
    if config.open_on_loopback && is_local(peer, headers) {
        return Ok(());
    }
    if !config.has_login() {
        return Err(Denied::NoLoginConfigured);
    }
    if credentials_match(config, headers) {
        Ok(())
    } else {
        Err(Denied::Login)
    }
}

/// A loopback peer that asked for a loopback host name directly. Forwarding headers
/// mean a proxy on this machine relays someone else; a host name that is not local
/// means a page of another site whose name was made to point at 127.0.0.1 (DNS
/// rebinding) is reading from the operator's browser.
fn is_local(peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    let Some(peer) = peer else {
        return false;
    };
    let loopback = match peer.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    loopback && !proxied && host_is_local(host)
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn host_is_local(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn credentials_match(config: &DashboardConfig, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return same(&config.token, rest);
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    // Both checks run whatever the first one says, so the time taken does not tell
    // which part was right.
    let login = same(&config.username, user) & same(&config.password, password);
    let token = same(&config.token, password);
    login | token
}

/// Constant-time equality with a configured secret; an empty secret matches nothing.
fn same(secret: &str, given: &str) -> bool {
    !secret.is_empty() && bool::from(secret.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config(username: &str, password: &str, token: &str) -> DashboardConfig {
        DashboardConfig {
            username: username.into(),
            password: password.into(),
            token: token.into(),
            ..DashboardConfig::default()
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    const LOOPBACK: &str = "127.0.0.1:50000";
    const MAPPED_LOOPBACK: &str = "[::ffff:127.0.0.1]:50000";
    // Documentation addresses (RFC 5737): values only, nothing is sent there.
    const REMOTE: &str = "192.0.2.7:50000";

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn loopback_peers_asking_for_a_local_host_need_no_login() {
        let c = config("", "", "");
        for host in [
            "127.0.0.1:6001",
            "localhost:6001",
            "[::1]:6001",
            "localhost",
        ] {
            let h = headers(&[("host", host)]);
            assert_eq!(check(&c, peer(LOOPBACK), &h), Ok(()), "{host}");
            assert_eq!(check(&c, peer(MAPPED_LOOPBACK), &h), Ok(()), "{host}");
            assert_eq!(check(&c, peer("[::1]:1"), &h), Ok(()), "{host}");
        }
    }

    #[test]
    fn off_loopback_without_a_configured_login_nobody_gets_in() {
        let c = config("", "", "");
        let h = headers(&[
            ("host", "crier.example:6001"),
            ("authorization", &basic("a", "b")),
        ]);
        assert_eq!(check(&c, peer(REMOTE), &h), Err(Denied::NoLoginConfigured));
        assert_eq!(check(&c, None, &h), Err(Denied::NoLoginConfigured));
    }

    #[test]
    fn proxied_or_rebound_loopback_requests_need_the_login() {
        let c = config("ops", "pw", "");
        for h in [
            headers(&[("host", "127.0.0.1:6001"), ("x-forwarded-for", "192.0.2.9")]),
            headers(&[("host", "127.0.0.1:6001"), ("forwarded", "for=192.0.2.9")]),
            headers(&[("host", "evil.example:6001")]),
            headers(&[]),
        ] {
            assert_eq!(check(&c, peer(LOOPBACK), &h), Err(Denied::Login), "{h:?}");
        }
    }

    #[test]
    fn open_on_loopback_false_asks_loopback_peers_too() {
        let mut c = config("ops", "pw", "");
        c.open_on_loopback = false;
        let h = headers(&[("host", "127.0.0.1:6001")]);
        assert_eq!(check(&c, peer(LOOPBACK), &h), Err(Denied::Login));
        let h = headers(&[
            ("host", "127.0.0.1:6001"),
            ("authorization", &basic("ops", "pw")),
        ]);
        assert_eq!(check(&c, peer(LOOPBACK), &h), Ok(()));
    }

    #[test]
    fn basic_login_must_match_both_parts() {
        let c = config("ops", "pw", "");
        let remote = |auth: &str| check(&c, peer(REMOTE), &headers(&[("authorization", auth)]));
        assert_eq!(remote(&basic("ops", "pw")), Ok(()));
        assert_eq!(
            remote(&format!("bAsIc {}", &basic("ops", "pw")[6..])),
            Ok(())
        );
        assert_eq!(remote(&basic("ops", "pw2")), Err(Denied::Login));
        assert_eq!(remote(&basic("ops2", "pw")), Err(Denied::Login));
        assert_eq!(remote(&basic("", "")), Err(Denied::Login));
        assert_eq!(remote("Basic !!!"), Err(Denied::Login));
        assert_eq!(remote("Bearer pw"), Err(Denied::Login));
        assert_eq!(remote("Digest x"), Err(Denied::Login));
        assert_eq!(
            check(&c, peer(REMOTE), &HeaderMap::new()),
            Err(Denied::Login)
        );
    }

    #[test]
    fn a_token_works_as_bearer_or_as_the_basic_password() {
        let c = config("", "", "s3cret");
        let remote = |auth: &str| check(&c, peer(REMOTE), &headers(&[("authorization", auth)]));
        assert_eq!(remote("Bearer s3cret"), Ok(()));
        assert_eq!(remote(&basic("anyone", "s3cret")), Ok(()));
        assert_eq!(remote("Bearer s3cre"), Err(Denied::Login));
        assert_eq!(remote("Bearer "), Err(Denied::Login));
        // An empty configured user name and password never match an empty login.
        assert_eq!(remote(&basic("", "")), Err(Denied::Login));
    }
}
