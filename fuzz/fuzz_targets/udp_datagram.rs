//! UDP ingest datagrams, through the same function the listener calls. Accepted
//! datagrams name a known app and valid channels; a signed datagram is accepted exactly
//! when its JSON alone would be (with the same messages), a forged one never is, and a
//! required signature is never skipped.

#![no_main]

use crier_core::message::NewMessage;
use crier_core::{App, AppRegistry};
use crier_protocol::{signature, ChannelName};
use crier_server::ingest::udp::{parse_datagram, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

struct Input<'a> {
    datagram: &'a [u8],
    require_signature: bool,
}

fn summary(messages: &[NewMessage]) -> Vec<(String, String, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m.channel.to_string(),
                m.event.to_string(),
                m.data.to_string(),
            )
        })
        .collect()
}

// The first byte's low bit is `require_signature`; the rest is the datagram.
fuzz_target!(|data: &[u8]| {
    let Some((flags, datagram)) = data.split_first() else {
        return;
    };
    let input = Input {
        datagram,
        require_signature: flags & 1 == 1,
    };
    let apps = AppRegistry::new([App::new("app", "key", "secret")]);
    let verdict = parse_datagram(&apps, input.datagram, input.require_signature);
    if let Ok(messages) = &verdict {
        assert!(!messages.is_empty());
        for m in messages {
            assert_eq!(&*m.app_id, "app");
            assert_eq!(
                ChannelName::parse(m.channel.as_str()).as_ref(),
                Ok(&m.channel)
            );
        }
        if input.require_signature {
            // The signature is checked against the JSON after the first space.
            let trimmed = input.datagram.trim_ascii_start();
            assert_ne!(trimmed.first(), Some(&b'{'), "unsigned datagram accepted");
        }
    }
    let trimmed = input.datagram.trim_ascii_start();
    let Ok(json) = std::str::from_utf8(trimmed) else {
        return;
    };
    if !json.starts_with('{') || trimmed.len() + 65 >= MAX_DATAGRAM {
        return;
    }
    let unsigned = parse_datagram(&apps, trimmed, false);
    let signed = format!("{} {json}", signature::sign("secret", json));
    let signed = parse_datagram(&apps, signed.as_bytes(), true);
    match (&unsigned, &signed) {
        (Ok(a), Ok(b)) => assert_eq!(summary(a), summary(b)),
        // The reasons may differ: a signed datagram's app is looked up first, to find
        // its secret, so a body broken in two ways fails on the app before the rest.
        (Err(_), Err(_)) => {}
        _ => panic!(
            "signed {:?} but unsigned {:?}",
            signed.is_ok(),
            unsigned.is_ok()
        ),
    }
    let forged = format!("{} {json}", signature::sign("not-the-secret", json));
    assert!(parse_datagram(&apps, forged.as_bytes(), true).is_err());
});
