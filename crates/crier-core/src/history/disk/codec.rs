//! Keys and values of the on-disk history.
//!
//! Key: `app_id 0x00 channel 0x00 offset(u64, big-endian)`, so one channel's messages
//! are one contiguous range in offset order. Value: `published_at_ms(u64 BE)
//! event_len(u16 BE) event data`.

use crate::message::NewMessage;
use crier_protocol::ChannelName;
use std::sync::Arc;

pub(crate) fn prefix(app: &str, channel: &ChannelName) -> Vec<u8> {
    let mut k = Vec::with_capacity(app.len() + channel.as_str().len() + 10);
    k.extend_from_slice(app.as_bytes());
    k.push(0);
    k.extend_from_slice(channel.as_str().as_bytes());
    k.push(0);
    k
}

pub(crate) fn key(prefix: &[u8], offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The first key after every key of `prefix` (channel names never contain 0x01).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    if let Some(last) = k.last_mut() {
        *last = 1;
    }
    k
}

/// Splits a key into app, channel and offset.
pub(crate) fn split_key(key: &[u8]) -> Option<(Arc<str>, ChannelName, u64)> {
    if key.len() < 10 {
        return None;
    }
    let (head, off) = key.split_at(key.len() - 8);
    let offset = u64::from_be_bytes(off.try_into().ok()?);
    let head = head.strip_suffix(&[0])?;
    let sep = head.iter().position(|b| *b == 0)?;
    let app = std::str::from_utf8(&head[..sep]).ok()?;
    let channel = std::str::from_utf8(&head[sep + 1..]).ok()?;
    Some((Arc::from(app), ChannelName::parse(channel).ok()?, offset))
}

pub(crate) fn offset_of(key: &[u8]) -> Option<u64> {
    let off = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(off.try_into().ok()?))
}

pub(crate) fn encode_value(m: &NewMessage, published_at_ms: u64) -> Vec<u8> {
    let event = m.event.as_bytes();
    let mut v = Vec::with_capacity(10 + event.len() + m.data.len());
    v.extend_from_slice(&published_at_ms.to_be_bytes());
    v.extend_from_slice(&(event.len() as u16).to_be_bytes());
    v.extend_from_slice(event);
    v.extend_from_slice(m.data.as_bytes());
    v
}

/// Decoded value: published_at_ms, event, data.
pub(crate) fn decode_value(v: &[u8]) -> Option<(u64, &str, &str)> {
    let at = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let len = u16::from_be_bytes(v.get(8..10)?.try_into().ok()?) as usize;
    let event = std::str::from_utf8(v.get(10..10 + len)?).ok()?;
    let data = std::str::from_utf8(v.get(10 + len..)?).ok()?;
    Some((at, event, data))
}

/// Only the timestamp, for retention sweeps.
pub(crate) fn published_at(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_offset_and_split_back() {
        let ch = ChannelName::parse("private-a").unwrap();
        let p = prefix("app", &ch);
        let k1 = key(&p, 1);
        let k2 = key(&p, 256);
        assert!(k1 < k2 && k2 < prefix_end(&p));
        let (app, c, off) = split_key(&k2).unwrap();
        assert_eq!((&*app, c.as_str(), off), ("app", "private-a", 256));
    }

    #[test]
    fn values_round_trip() {
        let m = NewMessage {
            app_id: Arc::from("a"),
            channel: ChannelName::parse("c").unwrap(),
            event: Arc::from("ev"),
            data: Arc::from("{\"x\":1}"),
            exclude_socket: None,
        };
        let v = encode_value(&m, 42);
        assert_eq!(decode_value(&v), Some((42, "ev", "{\"x\":1}")));
        assert_eq!(published_at(&v), Some(42));
        assert_eq!(decode_value(&v[..5]), None);
    }
}
