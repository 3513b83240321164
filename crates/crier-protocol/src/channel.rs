//! Channel names and the kind of channel a name denotes, with Pusher's naming rules.

use std::fmt;
use std::sync::Arc;

/// Longest channel name Pusher accepts.
pub const MAX_CHANNEL_NAME_LEN: usize = 164;

/// Prefix of the channel a signed-in user is subscribed to implicitly; the Pusher server
/// SDKs' `sendToUser` publishes to `#server-to-user-<user_id>`.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel's prefix makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    Private,
    PrivateEncrypted,
    Presence,
    /// `#server-to-user-<id>`: events for one signed-in user; clients cannot subscribe.
    ServerToUser,
}

impl ChannelKind {
    /// Whether subscribing needs a signature from the app's auth endpoint.
    pub fn requires_auth(self) -> bool {
        !matches!(self, ChannelKind::Public)
    }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_NAME_LEN} characters")]
    TooLong,
    #[error("channel name {0:?} contains characters other than A-Z a-z 0-9 _ - = @ , . ;")]
    BadCharacter(String),
}

/// A validated channel name; cheap to clone and share among subscribers.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates `name` against Pusher's rules.
    ///
    /// # Errors
    /// Empty names, names over 164 characters and names with characters outside
    /// `[A-Za-z0-9_\-=@,.;]` (plus the leading `#` of server-to-user channels).
    pub fn parse(name: &str) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > MAX_CHANNEL_NAME_LEN {
            return Err(ChannelNameError::TooLong);
        }
        let body = name.strip_prefix(SERVER_TO_USER_PREFIX).unwrap_or(name);
        if body.is_empty() || !body.bytes().all(is_channel_byte) {
            return Err(ChannelNameError::BadCharacter(name.to_owned()));
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> ChannelKind {
        let n = self.as_str();
        if n.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else if n.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if n.starts_with("private-") {
            ChannelKind::Private
        } else if n.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }

    /// Cache channels (`cache-`, `private-cache-`, `presence-cache-`,
    /// `private-encrypted-cache-`) hand their last event to each new subscriber.
    pub fn is_cache(&self) -> bool {
        let n = self.as_str();
        [
            "cache-",
            "private-cache-",
            "presence-cache-",
            "private-encrypted-cache-",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    }

    /// The user a `#server-to-user-` channel belongs to.
    pub fn server_to_user_id(&self) -> Option<&str> {
        self.as_str().strip_prefix(SERVER_TO_USER_PREFIX)
    }

    pub fn for_user(user_id: &str) -> Result<Self, ChannelNameError> {
        Self::parse(&format!("{SERVER_TO_USER_PREFIX}{user_id}"))
    }
}

fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_prefixes() {
        let k = |n: &str| ChannelName::parse(n).unwrap().kind();
        assert_eq!(k("news"), ChannelKind::Public);
        assert_eq!(k("private-orders"), ChannelKind::Private);
        assert_eq!(k("private-encrypted-x"), ChannelKind::PrivateEncrypted);
        assert_eq!(k("presence-room"), ChannelKind::Presence);
        assert_eq!(k("#server-to-user-42"), ChannelKind::ServerToUser);
        assert!(ChannelName::parse("presence-cache-a").unwrap().is_cache());
        assert!(!ChannelName::parse("cachex").unwrap().is_cache());
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(ChannelName::parse(""), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::parse(&"a".repeat(165)),
            Err(ChannelNameError::TooLong)
        );
        assert!(ChannelName::parse(&"a".repeat(164)).is_ok());
        assert!(ChannelName::parse("a b").is_err());
        assert!(ChannelName::parse("a/b").is_err());
        assert!(ChannelName::parse("#other").is_err());
        assert!(ChannelName::parse("#server-to-user-").is_err());
        assert!(ChannelName::parse("ok_-=@,.;Z9").is_ok());
    }
}
