//! Stream positions, message ids and cursors. A position is an offset in one channel's
//! stream plus the epoch of that stream; ids and cursors are their URL-safe text forms.
//! Clients treat both as opaque.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use crier_protocol::ChannelName;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Where a message sits in its channel's stream. Offsets start at 1 and only grow
/// within an epoch; offset 0 means "before the first message".
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StreamPosition {
    /// Names one unbroken history; a store that loses its data starts a new epoch.
    pub epoch: Arc<str>,
    pub offset: u64,
}

/// A cursor or id that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor {0:?}")]
pub struct InvalidCursor(pub String);

const CURSOR_PREFIX: &str = "c.";

impl StreamPosition {
    pub fn new(epoch: Arc<str>, offset: u64) -> Self {
        Self { epoch, offset }
    }

    /// The message id form: `<epoch>-<offset>`.
    pub fn to_id(&self) -> String {
        format!("{}-{}", self.epoch, self.offset)
    }

    /// Parses an id (`<epoch>-<offset>`).
    ///
    /// # Errors
    /// Anything that is not an epoch of URL-safe characters, a dash and a number.
    pub fn parse_id(id: &str) -> Result<Self, InvalidCursor> {
        let bad = || InvalidCursor(id.to_owned());
        let (epoch, offset) = id.rsplit_once('-').ok_or_else(bad)?;
        if epoch.is_empty() || !epoch.bytes().all(is_epoch_byte) {
            return Err(bad());
        }
        let offset = offset.parse().map_err(|_| bad())?;
        Ok(Self::new(Arc::from(epoch), offset))
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.offset)
    }
}

fn is_epoch_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A new random epoch: 12 URL-safe alphanumeric characters.
pub fn new_epoch() -> Arc<str> {
    use rand::distr::{Alphanumeric, SampleString};
    Arc::from(Alphanumeric.sample_string(&mut rand::rng(), 12))
}

/// Positions in several channels at once: the resume point of an SSE or long-poll
/// stream. A plain message id is also accepted as a cursor for a single channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: BTreeMap<ChannelName, StreamPosition>,
}

impl Cursor {
    pub fn get(&self, channel: &ChannelName) -> Option<&StreamPosition> {
        self.positions.get(channel)
    }

    pub fn set(&mut self, channel: ChannelName, position: StreamPosition) {
        self.positions.insert(channel, position);
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Text form: `c.` followed by base64url of `channel SP id` lines.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        for (channel, pos) in &self.positions {
            text.push_str(channel.as_str());
            text.push(' ');
            text.push_str(&pos.to_id());
            text.push('\n');
        }
        format!("{CURSOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(text))
    }

    /// Reads a cursor; a bare message id applies to `single_channel` when the stream
    /// has exactly one channel.
    ///
    /// # Errors
    /// Text that is neither an encoded cursor nor (with one channel) a message id.
    pub fn decode(text: &str, single_channel: Option<&ChannelName>) -> Result<Self, InvalidCursor> {
        let bad = || InvalidCursor(text.to_owned());
        let Some(body) = text.strip_prefix(CURSOR_PREFIX) else {
            let channel = single_channel.ok_or_else(bad)?;
            let mut cursor = Cursor::default();
            cursor.set(channel.clone(), StreamPosition::parse_id(text)?);
            return Ok(cursor);
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let decoded = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut cursor = Cursor::default();
        for line in decoded.lines() {
            let (channel, id) = line.split_once(' ').ok_or_else(bad)?;
            let channel = ChannelName::parse(channel).map_err(|_| bad())?;
            cursor.set(channel, StreamPosition::parse_id(id)?);
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let p = StreamPosition::new(Arc::from("abcXYZ12"), 42);
        assert_eq!(p.to_id(), "abcXYZ12-42");
        assert_eq!(StreamPosition::parse_id("abcXYZ12-42").unwrap(), p);
        assert!(StreamPosition::parse_id("abc").is_err());
        assert!(StreamPosition::parse_id("-4").is_err());
        assert!(StreamPosition::parse_id("a b-4").is_err());
    }

    #[test]
    fn cursors_round_trip_and_are_url_safe() {
        let mut c = Cursor::default();
        c.set(
            ChannelName::parse("news").unwrap(),
            StreamPosition::new(Arc::from("e1"), 3),
        );
        c.set(
            ChannelName::parse("private-a,b;c").unwrap(),
            StreamPosition::new(Arc::from("e1"), 9),
        );
        let text = c.encode();
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
        assert_eq!(Cursor::decode(&text, None).unwrap(), c);
    }

    #[test]
    fn a_message_id_is_a_cursor_for_its_channel() {
        let ch = ChannelName::parse("news").unwrap();
        let c = Cursor::decode("e1-5", Some(&ch)).unwrap();
        assert_eq!(c.get(&ch).unwrap().offset, 5);
        assert!(Cursor::decode("e1-5", None).is_err());
        assert!(Cursor::decode("c.!!", None).is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn position() -> impl Strategy<Value = StreamPosition> {
        ("[A-Za-z0-9_]{1,12}", any::<u64>())
            .prop_map(|(epoch, offset)| StreamPosition::new(Arc::from(epoch), offset))
    }

    fn channel() -> impl Strategy<Value = ChannelName> {
        prop_oneof![
            "(private-|presence-|cache-)?[a-zA-Z0-9_=@,.;-]{1,30}",
            "#server-to-user-[a-zA-Z0-9_-]{1,10}",
        ]
        .prop_map(|n| ChannelName::parse(&n).expect("generated names are valid"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn message_ids_round_trip(p in position()) {
            let id = p.to_id();
            prop_assert_eq!(id.clone(), p.to_string());
            prop_assert_eq!(StreamPosition::parse_id(&id), Ok(p));
        }

        #[test]
        fn cursors_round_trip(
            positions in prop::collection::btree_map(channel(), position(), 0..6),
        ) {
            let mut cursor = Cursor::default();
            for (channel, p) in &positions {
                cursor.set(channel.clone(), p.clone());
            }
            let text = cursor.encode();
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
            let decoded = Cursor::decode(&text, None);
            prop_assert_eq!(decoded.as_ref(), Ok(&cursor));
            for (channel, p) in &positions {
                prop_assert_eq!(cursor.get(channel), Some(p));
            }
        }

        #[test]
        fn an_id_is_a_cursor_for_the_single_channel(c in channel(), p in position()) {
            let cursor = Cursor::decode(&p.to_id(), Some(&c)).expect("an id decodes");
            prop_assert_eq!(cursor.get(&c), Some(&p));
        }
    }
}
