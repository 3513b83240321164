//! What travels on a channel's pub/sub topic and sits in its history: one text line
//! per item, lengths first so that event names and data need no escaping.
//!
//! - message: `M<offset> <epoch> <ms> <exclude len> <event len> <exclude><event><data>`;
//!   the publish script writes the part up to `<ms> `, the node the rest;
//! - ephemeral frame: `E<exclude len> <exclude><frame>`;
//! - close: `C<code> <reason>`.

use bytes::Bytes;

/// The part of a message the node writes (the script prepends id and time).
pub(crate) fn message_body(exclude: Option<&str>, event: &str, data: &str) -> String {
    let exclude = exclude.unwrap_or("");
    let mut out = String::with_capacity(24 + exclude.len() + event.len() + data.len());
    out.push_str(&exclude.len().to_string());
    out.push(' ');
    out.push_str(&event.len().to_string());
    out.push(' ');
    out.push_str(exclude);
    out.push_str(event);
    out.push_str(data);
    out
}

pub(crate) fn ephemeral(frame: &[u8], exclude: Option<&str>) -> Vec<u8> {
    let exclude = exclude.unwrap_or("");
    let mut out = Vec::with_capacity(8 + exclude.len() + frame.len());
    out.push(b'E');
    out.extend_from_slice(exclude.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(exclude.as_bytes());
    out.extend_from_slice(frame);
    out
}

pub(crate) fn close(code: u16, reason: &str) -> Vec<u8> {
    format!("C{code} {reason}").into_bytes()
}

/// A decoded message; borrowed from the payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub offset: u64,
    pub epoch: &'a str,
    pub published_at_ms: u64,
    pub exclude: Option<&'a str>,
    pub event: &'a str,
    pub data: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    Message(Message<'a>),
    Ephemeral {
        exclude: Option<&'a str>,
        frame: Bytes,
    },
    Close {
        code: u16,
        reason: &'a str,
    },
}

/// Splits `n` space-terminated fields off the front of `text`.
fn fields<const N: usize>(mut text: &str) -> Option<([&str; N], &str)> {
    let mut out = [""; N];
    for slot in &mut out {
        let (field, rest) = text.split_once(' ')?;
        *slot = field;
        text = rest;
    }
    Some((out, text))
}

fn take(text: &str, len: usize) -> Option<(&str, &str)> {
    Some((text.get(..len)?, text.get(len..)?))
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Reads a payload; `None` for anything this version does not know.
pub(crate) fn decode(payload: &[u8]) -> Option<Item<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let rest = text.get(1..)?;
    match payload.first()? {
        b'M' => {
            let ([offset, epoch, at, exclude_len, event_len], rest) = fields::<5>(rest)?;
            let (exclude, rest) = take(rest, exclude_len.parse().ok()?)?;
            let (event, data) = take(rest, event_len.parse().ok()?)?;
            Some(Item::Message(Message {
                offset: offset.parse().ok()?,
                epoch,
                published_at_ms: at.parse().ok()?,
                exclude: non_empty(exclude),
                event,
                data,
            }))
        }
        b'E' => {
            let ([exclude_len], rest) = fields::<1>(rest)?;
            let (exclude, frame) = take(rest, exclude_len.parse().ok()?)?;
            Some(Item::Ephemeral {
                exclude: non_empty(exclude),
                frame: Bytes::copy_from_slice(frame.as_bytes()),
            })
        }
        b'C' => {
            let ([code], reason) = fields::<1>(rest)?;
            Some(Item::Close {
                code: code.parse().ok()?,
                reason,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_whatever_their_text() {
        let body = message_body(Some("1.2"), "new order", "{\"a\": \"x y\"} M1 ");
        let payload = format!("M42 Ab_3 1700 {body}");
        assert_eq!(
            decode(payload.as_bytes()),
            Some(Item::Message(Message {
                offset: 42,
                epoch: "Ab_3",
                published_at_ms: 1700,
                exclude: Some("1.2"),
                event: "new order",
                data: "{\"a\": \"x y\"} M1 ",
            }))
        );
        let payload = format!("M1 e 5 {}", message_body(None, "é", ""));
        let Some(Item::Message(m)) = decode(payload.as_bytes()) else {
            panic!("not a message");
        };
        assert_eq!((m.exclude, m.event, m.data), (None, "é", ""));
    }

    #[test]
    fn frames_and_closes_round_trip() {
        assert_eq!(
            decode(&ephemeral(b"{\"event\":\"x\"}", Some("9.9"))),
            Some(Item::Ephemeral {
                exclude: Some("9.9"),
                frame: Bytes::from_static(b"{\"event\":\"x\"}")
            })
        );
        assert_eq!(
            decode(&close(4009, "bye now")),
            Some(Item::Close {
                code: 4009,
                reason: "bye now"
            })
        );
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bad in [
            &b""[..],
            b"M",
            b"M1 e 5 9 0 ab",
            b"Mx e 5 0 0 ",
            b"E5 ab",
            b"X1",
            b"\xff\xfe",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
