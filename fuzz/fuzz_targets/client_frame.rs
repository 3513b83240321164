//! Client frames: any text a WebSocket client sends. A frame that parses must encode to
//! a frame that parses to the same message, so what the bench and tests send (through
//! `ClientMessage::encode`) is what the server reads.

#![no_main]

use crier_protocol::frames::ClientMessage;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    // The WebSocket layer only hands over text frames, which are UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let Ok(message) = ClientMessage::parse(text) else {
        return Corpus::Keep;
    };
    let encoded = message.encode();
    assert_eq!(
        ClientMessage::parse(&encoded).as_ref(),
        Ok(&message),
        "{text:?} re-encoded as {encoded:?}"
    );
    Corpus::Keep
});
