//! HTTP API request signatures: the query string as the server decodes it, then
//! `verify_request`. Any request: no panic, and acceptance implies a fresh timestamp and
//! the right MAC. Requests signed with `sign_request`: accepted within the allowed skew,
//! refused outside it or with a changed body.

#![no_main]

use crier_protocol::signature::{self, RequestAuthError, MAX_TIMESTAMP_SKEW_SECS};
use libfuzzer_sys::fuzz_target;

struct Input {
    method: String,
    query: String,
    body: Vec<u8>,
    now: i64,
    key: String,
    secret: String,
    params: Vec<(String, String)>,
    skew: i16,
}

const PATH: &str = "/apps/1/events";

fn pairs(query: &str) -> Option<signature::QueryPairs> {
    let uri: http::Uri = format!("{PATH}?{query}").parse().ok()?;
    crier_server::api::query_pairs(&uri).ok()
}

fn value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn any_request(input: &Input) {
    let Some(query) = pairs(&input.query) else {
        return;
    };
    let verdict = signature::verify_request(
        &input.key,
        &input.secret,
        &input.method,
        PATH,
        &query,
        &input.body,
        input.now,
    );
    if verdict.is_ok() {
        let ts: i64 = value(&query, "auth_timestamp")
            .and_then(|t| t.parse().ok())
            .expect("accepted requests have a timestamp");
        let skew = (i128::from(input.now) - i128::from(ts)).abs();
        assert!(skew <= i128::from(MAX_TIMESTAMP_SKEW_SECS), "skew {skew}");
        assert_eq!(value(&query, "auth_key"), Some(input.key.as_str()));
    }
}

fn signed_request(input: &Input) {
    // The SDKs reserve these names; a caller passing them would sign something else.
    let params: Vec<(&str, &str)> = input
        .params
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !k.starts_with("auth_") && k != "body_md5"
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let Some(signed_at) = input.now.checked_add(i64::from(input.skew)) else {
        return;
    };
    let qs = signature::sign_request(
        &input.key,
        &input.secret,
        "POST",
        PATH,
        &params,
        &input.body,
        signed_at,
    );
    let query = pairs(&qs).unwrap_or_else(|| panic!("signed query {qs:?} does not decode"));
    let verify = |body: &[u8]| {
        signature::verify_request(
            &input.key,
            &input.secret,
            "POST",
            PATH,
            &query,
            body,
            input.now,
        )
    };
    let expected = if i64::from(input.skew).abs() <= MAX_TIMESTAMP_SKEW_SECS {
        Ok(())
    } else {
        Err(RequestAuthError::StaleTimestamp)
    };
    assert_eq!(verify(&input.body), expected, "query {qs:?}");
    if expected.is_ok() && !input.body.is_empty() {
        let mut changed = input.body.clone();
        changed[0] ^= 1;
        assert!(verify(&changed).is_err());
    }
}

/// `now` (i64 LE), `skew` (i16 LE), then lines: method, query, body, key, secret, and
/// `name=value` parameters to sign.
fn input(data: &[u8]) -> Option<Input> {
    let (now, rest) = data.split_first_chunk::<8>()?;
    let (skew, rest) = rest.split_first_chunk::<2>()?;
    let text = std::str::from_utf8(rest).ok()?;
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or("").to_owned();
    Some(Input {
        now: i64::from_le_bytes(*now),
        skew: i16::from_le_bytes(*skew),
        method: next(),
        query: next(),
        body: next().into_bytes(),
        key: next(),
        secret: next(),
        params: lines
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = input(data) else {
        return;
    };
    any_request(&input);
    signed_request(&input);
});
