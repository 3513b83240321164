//! Property tests of the wire format: what one side encodes, the other reads back, and
//! what is signed cannot be changed by a byte without detection. Case counts are kept
//! small so the suite stays fast; `cargo fuzz` (fuzz/) explores the parsers for longer.

use crier_protocol::frames::{ClientMessage, SubscribeRequest};
use crier_protocol::signature::{self, QueryPairs, RequestAuthError};
use crier_protocol::token::{self, Claims, TokenError};
use crier_protocol::ChannelName;
use proptest::prelude::*;
use serde_json::value::RawValue;

/// Pusher's rule, written as plainly as possible to check the real parser against.
fn reference_channel_name(name: &str) -> bool {
    let body = name.strip_prefix("#server-to-user-").unwrap_or(name);
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-=@,.;".contains(c);
    !name.is_empty() && name.len() <= 164 && !body.is_empty() && body.chars().all(allowed)
}

/// Mostly allowed characters with a few that are not, at lengths around the limit.
fn channel_candidates() -> impl Strategy<Value = String> {
    prop_oneof![
        "(#server-to-user-)?[a-zA-Z0-9_=@,.;\\- /#:é\u{0}]{0,20}",
        "[a-zA-Z0-9_=@,.;-]{0,170}",
        "[a-z]{160,168}",
    ]
}

fn valid_channel() -> impl Strategy<Value = String> {
    "(private-|presence-|private-encrypted-|cache-)?[a-zA-Z0-9_=@,.;-]{1,40}"
}

/// Text that may need JSON escaping.
fn text() -> impl Strategy<Value = String> {
    "[ -~\u{e9}\u{2028}\u{1F600}\"\\\\\n\t]{0,24}"
}

fn json_data() -> impl Strategy<Value = Box<RawValue>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    (value, any::<bool>()).prop_map(|(v, pretty)| {
        // Pretty-printed data checks that a client's own spacing survives the relay.
        let text = if pretty {
            serde_json::to_string_pretty(&v)
        } else {
            serde_json::to_string(&v)
        };
        RawValue::from_string(text.expect("values serialize")).expect("serialized JSON")
    })
}

/// Every message `ClientMessage::parse` can return.
fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        Just(ClientMessage::Ping),
        Just(ClientMessage::Pong),
        (
            text(),
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(text())
        )
            .prop_map(|(channel, auth, channel_data, since)| {
                ClientMessage::Subscribe(SubscribeRequest {
                    channel,
                    auth,
                    channel_data,
                    since,
                })
            }),
        text().prop_map(|channel| ClientMessage::Unsubscribe { channel }),
        (text(), text()).prop_map(|(auth, user_data)| ClientMessage::Signin { auth, user_data }),
        (text(), text(), json_data()).prop_map(|(event, channel, data)| {
            ClientMessage::ClientEvent {
                event: format!("client-{event}"),
                channel,
                data,
            }
        }),
        "pusher:[a-z_]{1,12}"
            .prop_filter("known events parse as themselves", |e| {
                ![
                    "pusher:ping",
                    "pusher:pong",
                    "pusher:subscribe",
                    "pusher:unsubscribe",
                    "pusher:signin",
                ]
                .contains(&e.as_str())
            })
            .prop_map(ClientMessage::Other),
    ]
}

/// `text` with the byte at each position replaced by the first of `to` that differs.
fn one_byte_changes<'a>(text: &'a str, to: &'a [u8]) -> impl Iterator<Item = String> + 'a {
    (0..text.len()).map(move |i| {
        let mut bytes = text.as_bytes().to_vec();
        bytes[i] = *to.iter().find(|b| **b != bytes[i]).expect("two candidates");
        String::from_utf8(bytes).expect("ASCII replacement of ASCII")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn channel_names_follow_the_reference_rule(name in channel_candidates()) {
        let parsed = ChannelName::parse(&name);
        prop_assert_eq!(parsed.is_ok(), reference_channel_name(&name), "{:?}", name);
        if let Ok(channel) = parsed {
            prop_assert_eq!(channel.as_str(), name.as_str());
        }
    }

    #[test]
    fn client_frames_round_trip(message in client_message()) {
        let encoded = message.encode();
        prop_assert_eq!(ClientMessage::parse(&encoded), Ok(message), "{}", encoded);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn signatures_verify_and_tampering_is_caught(
        secret in "[ -~]{0,32}",
        message in text(),
    ) {
        let sig = signature::sign(&secret, &message);
        prop_assert!(signature::verify(&secret, &message, &sig));
        let other_secret = secret.clone() + "x";
        let other_message = message.clone() + "x";
        prop_assert!(!signature::verify(&other_secret, &message, &sig));
        prop_assert!(!signature::verify(&secret, &other_message, &sig));
        // Hex digits, so the change reaches the MAC comparison rather than the decoder.
        for changed in one_byte_changes(&sig, b"01") {
            prop_assert!(!signature::verify(&secret, &message, &changed), "{}", changed);
        }
    }

    #[test]
    fn channel_auth_verifies_only_for_its_socket_and_channel(
        socket in "[0-9]{1,6}\\.[0-9]{1,6}",
        channel in valid_channel(),
        data in prop::option::of(text()),
    ) {
        let auth = signature::channel_auth("key", "secret", &socket, &channel, data.as_deref());
        let message = signature::channel_auth_message(&socket, &channel, data.as_deref());
        prop_assert!(signature::verify_key_signature("key", "secret", &message, &auth));
        let other = signature::channel_auth_message(&format!("{socket}1"), &channel, data.as_deref());
        prop_assert!(!signature::verify_key_signature("key", "secret", &other, &auth));
        for changed in one_byte_changes(&auth, b"01") {
            prop_assert!(!signature::verify_key_signature("key", "secret", &message, &changed));
        }
    }

    #[test]
    fn signed_requests_verify_and_reject_changes(
        // Unreserved characters only: this test splits the query without decoding it
        // (the fuzz target api_signature decodes it as the server does).
        params in prop::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9._~-]{0,12}"), 0..4),
        body in prop::collection::vec(any::<u8>(), 0..64),
        skew in -700i64..700,
    ) {
        let params: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| !k.starts_with("auth_") && k != "body_md5")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let now = 1_700_000_000;
        let qs = signature::sign_request("key", "secret", "POST", "/apps/1/events", &params, &body, now + skew);
        let pairs: QueryPairs = qs
            .split('&')
            .map(|p| {
                let (k, v) = p.split_once('=').expect("name=value");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let verify = |path: &str, body: &[u8]| {
            signature::verify_request("key", "secret", "POST", path, &pairs, body, now)
        };
        if skew.abs() <= signature::MAX_TIMESTAMP_SKEW_SECS {
            prop_assert_eq!(verify("/apps/1/events", &body), Ok(()));
            prop_assert_eq!(verify("/apps/2/events", &body), Err(RequestAuthError::BadSignature));
            let mut changed = body.clone();
            changed.push(b'x');
            let expected = if body.is_empty() {
                RequestAuthError::Missing("body_md5")
            } else {
                RequestAuthError::BodyMd5Mismatch
            };
            prop_assert_eq!(verify("/apps/1/events", &changed), Err(expected));
        } else {
            prop_assert_eq!(verify("/apps/1/events", &body), Err(RequestAuthError::StaleTimestamp));
        }
    }

    #[test]
    fn tokens_round_trip_and_any_changed_byte_is_refused(
        channels in prop::collection::vec(valid_channel(), 0..3),
        exp in 1i64..i64::MAX,
        sub in prop::option::of(text()),
        info in prop::option::of(text()),
        secret in "[ -~]{1,24}",
    ) {
        let claims = Claims {
            channels,
            exp,
            sub,
            user_info: info.map(serde_json::Value::String),
        };
        let json = serde_json::json!({
            "channels": claims.channels,
            "exp": claims.exp,
            "sub": claims.sub,
            "user_info": claims.user_info,
        });
        let issued = token::issue(&json, &secret);
        prop_assert_eq!(token::verify(&issued, &secret, exp - 1), Ok(claims));
        prop_assert_eq!(token::verify(&issued, &secret, exp), Err(TokenError::Expired));
        for changed in one_byte_changes(&issued, b"AB") {
            prop_assert!(token::verify(&changed, &secret, 0).is_err(), "{}", changed);
        }
    }
}
