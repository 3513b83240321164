//! JWTs from SSE and long-poll clients. Any token: verification never panics and never
//! returns expired claims. Issued tokens: they verify to the claims they were issued
//! with, and changing any one byte makes them fail.

#![no_main]

use crier_protocol::token::{self, Claims, TokenError};
use libfuzzer_sys::fuzz_target;

struct Input {
    token: String,
    secret: String,
    now: i64,
    channels: Vec<String>,
    exp: i64,
    sub: Option<String>,
    // Strings only: serde_json does not promise that floats survive a round trip.
    user_info: Option<String>,
    tamper_at: usize,
    tamper_to: u8,
}

/// `now`, `exp` (i64 LE), `tamper_at` (u16 LE), `tamper_to`, then lines: token, secret,
/// sub, user_info (empty for none), channels.
fn input(data: &[u8]) -> Option<Input> {
    let (now, rest) = data.split_first_chunk::<8>()?;
    let (exp, rest) = rest.split_first_chunk::<8>()?;
    let (tamper_at, rest) = rest.split_first_chunk::<2>()?;
    let (tamper_to, rest) = rest.split_first()?;
    let text = std::str::from_utf8(rest).ok()?;
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or("").to_owned();
    let optional = |s: String| (!s.is_empty()).then_some(s);
    Some(Input {
        now: i64::from_le_bytes(*now),
        exp: i64::from_le_bytes(*exp),
        tamper_at: usize::from(u16::from_le_bytes(*tamper_at)),
        tamper_to: *tamper_to,
        token: next(),
        secret: next(),
        sub: optional(next()),
        user_info: optional(next()),
        channels: lines.map(str::to_owned).collect(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = input(data) else {
        return;
    };
    if let Ok(claims) = token::verify(&input.token, &input.secret, input.now) {
        assert!(claims.exp > input.now, "expired claims accepted");
    }

    let claims = Claims {
        channels: input.channels,
        exp: input.exp,
        sub: input.sub,
        user_info: input.user_info.map(serde_json::Value::String),
    };
    let json = serde_json::json!({
        "channels": claims.channels,
        "exp": claims.exp,
        "sub": claims.sub,
        "user_info": claims.user_info,
    });
    let issued = token::issue(&json, &input.secret);
    let expected = if claims.exp > input.now {
        Ok(claims)
    } else {
        Err(TokenError::Expired)
    };
    assert_eq!(token::verify(&issued, &input.secret, input.now), expected);

    // ASCII replacements keep the token a string, as it arrives in a query or header.
    let mut tampered = issued.into_bytes();
    let at = input.tamper_at % tampered.len();
    let to = input.tamper_to & 0x7f;
    if tampered[at] != to {
        tampered[at] = to;
        let tampered = String::from_utf8(tampered).expect("ASCII stays UTF-8");
        assert!(
            token::verify(&tampered, &input.secret, i64::MIN).is_err(),
            "{tampered:?} verified after a one-byte change"
        );
    }
});
