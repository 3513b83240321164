//! The benchmark payload. Every published message carries its publish time (Unix
//! microseconds), its per-channel sequence number and its channel index in a plain
//! ASCII string (`crb:<micros>:<seq>:<channel>:` plus padding) that needs no JSON
//! escaping, so a receiver finds it with a byte scan whatever the framing around it
//! (Pusher frame, SSE envelope, long-poll batch, raw Nchan message).

use std::time::{SystemTime, UNIX_EPOCH};

/// Marks the start of a payload inside whatever text carries it.
const MARKER: &[u8] = b"crb:";

/// What a payload says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// When the publisher sent it, Unix microseconds.
    pub(crate) sent_micros: u64,
    /// Position in its channel's sequence, from 1.
    pub(crate) seq: u64,
    /// Index of its channel (0..channels).
    pub(crate) channel: u32,
}

/// Builds the payload string; `size` pads it with `x` up to that many bytes.
pub(crate) fn encode(stamp: Stamp, size: usize) -> String {
    let mut s = format!("crb:{}:{}:{}:", stamp.sent_micros, stamp.seq, stamp.channel);
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    s
}

/// Finds the first payload in `text` at or after `from`; returns it and the offset
/// just after it, so a caller can look for the next one.
pub(crate) fn find_from(text: &[u8], from: usize) -> Option<(Stamp, usize)> {
    let mut start = from;
    while start + MARKER.len() <= text.len() {
        let pos = start
            + text[start..]
                .windows(MARKER.len())
                .position(|w| w == MARKER)?;
        let mut at = pos + MARKER.len();
        let parsed = (|| {
            let sent_micros = number(text, &mut at)?;
            let seq = number(text, &mut at)?;
            let channel = u32::try_from(number(text, &mut at)?).ok()?;
            Some(Stamp {
                sent_micros,
                seq,
                channel,
            })
        })();
        match parsed {
            Some(stamp) => return Some((stamp, at)),
            None => start = pos + 1,
        }
    }
    None
}

/// Finds the first payload in `text`.
pub(crate) fn find(text: &[u8]) -> Option<Stamp> {
    find_from(text, 0).map(|(s, _)| s)
}

/// Reads decimal digits at `*at` followed by one `:` and moves past them.
fn number(text: &[u8], at: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    let start = *at;
    while let Some(&b) = text.get(*at) {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        *at += 1;
    }
    if *at == start || text.get(*at) != Some(&b':') {
        return None;
    }
    *at += 1;
    Some(value)
}

/// The current time in Unix microseconds.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_inside_a_pusher_frame() {
        let stamp = Stamp {
            sent_micros: 1_700_000_000_123_456,
            seq: 42,
            channel: 7,
        };
        let data = encode(stamp, 64);
        assert_eq!(data.len(), 64);
        let frame = format!(r#"{{"event":"bench","channel":"b-7","data":"{data}","id":"x"}}"#);
        assert_eq!(find(frame.as_bytes()), Some(stamp));
    }

    #[test]
    fn finds_every_payload_of_a_batch() {
        let a = Stamp {
            sent_micros: 1,
            seq: 1,
            channel: 0,
        };
        let b = Stamp {
            sent_micros: 2,
            seq: 2,
            channel: 0,
        };
        let text = format!("[crb:9x,\"{}\",\"{}\"]", encode(a, 0), encode(b, 0));
        let (first, next) = find_from(text.as_bytes(), 0).expect("first");
        assert_eq!(first, a);
        let (second, _) = find_from(text.as_bytes(), next).expect("second");
        assert_eq!(second, b);
    }

    #[test]
    fn ignores_text_without_payload() {
        assert_eq!(find(br#"{"event":"pusher:ping","data":{}}"#), None);
        assert_eq!(find(b"crb:12"), None);
    }
}
