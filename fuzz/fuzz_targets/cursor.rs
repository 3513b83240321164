//! Cursors and message ids as clients send them back (`since`, `Last-Event-ID`). What
//! decodes must re-encode to text that decodes to the same positions, and encoded
//! cursors must stay URL-safe.

#![no_main]

use crier_core::position::{Cursor, StreamPosition};
use crier_protocol::ChannelName;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    if let Ok(position) = StreamPosition::parse_id(text) {
        let id = position.to_id();
        assert_eq!(
            StreamPosition::parse_id(&id),
            Ok(position),
            "{text:?} -> {id:?}"
        );
    }
    let single = ChannelName::parse("news").expect("a valid channel name");
    for channel in [None, Some(&single)] {
        if let Ok(cursor) = Cursor::decode(text, channel) {
            let encoded = cursor.encode();
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)),
                "{encoded:?} is not URL-safe"
            );
            assert_eq!(
                Cursor::decode(&encoded, None),
                Ok(cursor),
                "{text:?} -> {encoded:?}"
            );
        }
    }
    Corpus::Keep
});
