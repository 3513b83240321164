//! A connection's bounded outbound queue. Fan-out pushes without waiting; when a
//! client cannot keep up and its queue is full, the connection is told to close
//! (slow consumer) instead of growing memory or holding up the publisher.

use crate::message::Published;
use bytes::Bytes;
use crier_protocol::ErrorCode;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// Why the server ends a connection: a Pusher close code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl Disconnect {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The client fell too far behind; it may reconnect and resume from history.
    pub fn slow_consumer() -> Self {
        Self::new(
            ErrorCode::OverCapacity,
            "Connection too slow to keep up; reconnect and resume",
        )
    }
}

/// What a connection's transport receives.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A published message; the transport picks its encoding.
    Message(Arc<Published>),
    /// An already-encoded Pusher frame (client events, presence changes).
    Frame(Bytes),
}

struct Shared {
    closing: Mutex<Option<Disconnect>>,
    wake: Notify,
}

/// The sending side, held by the hub for each subscription of the connection.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

/// The receiving side, owned by the connection's transport task.
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
}

/// What the transport should do next.
#[derive(Debug)]
pub enum Next {
    Send(Outgoing),
    Close(Disconnect),
}

/// A queue of `capacity` items for one connection.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared {
        closing: Mutex::new(None),
        wake: Notify::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver { rx, shared },
    )
}

impl Outbox {
    /// Queues an item; a full queue closes the connection as a slow consumer.
    /// Returns false when the item was not queued.
    pub fn push(&self, item: Outgoing) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("crier_slow_consumer_disconnects_total").increment(1);
                self.close(Disconnect::slow_consumer());
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn close(&self, reason: Disconnect) {
        let mut closing = self.shared.closing.lock();
        if closing.is_none() {
            *closing = Some(reason);
            drop(closing);
            self.shared.wake.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether two handles feed the same connection.
    pub fn same_connection(&self, other: &Outbox) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl OutboxReceiver {
    /// The next item, or the reason to close. A close request wins over queued items:
    /// a slow consumer resumes from history anyway.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(reason) = self.shared.closing.lock().clone() {
                return Next::Close(reason);
            }
            tokio::select! {
                biased;
                () = self.shared.wake.notified() => continue,
                item = self.rx.recv() => match item {
                    Some(item) => return Next::Send(item),
                    None => return Next::Close(Disconnect::new(
                        crier_protocol::ErrorCode::GenericReconnect,
                        "server closed the connection",
                    )),
                },
            }
        }
    }

    /// An item already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Outgoing> {
        if self.shared.closing.lock().is_some() {
            return None;
        }
        self.rx.try_recv().ok()
    }

    /// Items that can be taken without waiting (for batching writes).
    pub fn queued(&self) -> usize {
        self.rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer() {
        let (tx, mut rx) = outbox(2);
        assert!(tx.push(Outgoing::Frame(Bytes::from_static(b"1"))));
        assert!(tx.push(Outgoing::Frame(Bytes::from_static(b"2"))));
        assert!(!tx.push(Outgoing::Frame(Bytes::from_static(b"3"))));
        match rx.next().await {
            Next::Close(d) => assert_eq!(d.code, ErrorCode::OverCapacity),
            other => panic!("expected close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn items_arrive_in_order() {
        let (tx, mut rx) = outbox(8);
        for b in [&b"a"[..], b"b", b"c"] {
            tx.push(Outgoing::Frame(Bytes::copy_from_slice(b)));
        }
        for want in [&b"a"[..], b"b", b"c"] {
            match rx.next().await {
                Next::Send(Outgoing::Frame(f)) => assert_eq!(&f[..], want),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
