//! A connection's bounded outbound queue. Fan-out pushes without waiting; when a
//! client cannot keep up and its queue is full, the connection is told to close
//! (slow consumer) instead of growing memory or holding up the publisher.

use crate::message::Published;
use bytes::Bytes;
use crier_protocol::ErrorCode;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;

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

struct State {
    queue: VecDeque<Outgoing>,
    closing: Option<Disconnect>,
    receiver_alive: bool,
    /// The queue overflowed and the transport has not yet taken the close.
    overflowed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    capacity: usize,
}

/// The sending side, held by the hub for each subscription of the connection.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving side, owned by the connection's transport task.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

/// What the transport should do next.
#[derive(Debug)]
pub enum Next {
    Send(Outgoing),
    Close(Disconnect),
}

/// Queue capacity kept after a burst has drained; beyond it the buffer is freed so an
/// idle connection costs no queue memory.
const KEEP_CAPACITY: usize = 16;

/// A queue of `capacity` items for one connection. Nothing is allocated until the
/// first item arrives: idle connections are the common case.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            closing: None,
            receiver_alive: true,
            overflowed: false,
        }),
        wake: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReceiver { shared },
    )
}

impl Outbox {
    /// Queues an item; a full queue closes the connection as a slow consumer.
    /// Returns false when the item was not queued.
    pub fn push(&self, item: Outgoing) -> bool {
        let mut state = self.shared.state.lock();
        if state.closing.is_some() || !state.receiver_alive {
            return false;
        }
        if state.queue.len() >= self.shared.capacity {
            // Counted when the transport acts on it (`next`), not here: a transport
            // whose client stopped reading may never get that far, and is then counted
            // where it is dropped instead (its write timeout), once.
            state.closing = Some(Disconnect::slow_consumer());
            state.overflowed = true;
            drop(state);
            self.shared.wake.notify_one();
            return false;
        }
        state.queue.push_back(item);
        let first = state.queue.len() == 1;
        drop(state);
        // The receiver drains everything once woken, so only the first item of a
        // batch needs to wake it (a stored permit covers a receiver not yet waiting).
        if first {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn close(&self, reason: Disconnect) {
        let mut state = self.shared.state.lock();
        if state.closing.is_none() {
            state.closing = Some(reason);
            drop(state);
            self.shared.wake.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        !self.shared.state.lock().receiver_alive
    }
}

impl OutboxReceiver {
    /// The next item, or the reason to close. A close request wins over queued items:
    /// a slow consumer resumes from history anyway.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(next) = self.take() {
                if matches!(next, Next::Close(_))
                    && std::mem::take(&mut self.shared.state.lock().overflowed)
                {
                    metrics::counter!("crier_slow_consumer_disconnects_total").increment(1);
                }
                return next;
            }
            self.shared.wake.notified().await;
        }
    }

    fn take(&self) -> Option<Next> {
        let mut state = self.shared.state.lock();
        if let Some(reason) = &state.closing {
            return Some(Next::Close(reason.clone()));
        }
        let item = state.queue.pop_front();
        if state.queue.is_empty() && state.queue.capacity() > KEEP_CAPACITY {
            state.queue = VecDeque::new();
        }
        item.map(Next::Send)
    }

    /// An item already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Outgoing> {
        match self.take() {
            Some(Next::Send(item)) => Some(item),
            _ => None,
        }
    }

    /// Items that can be taken without waiting (for batching writes).
    pub fn queued(&self) -> usize {
        self.shared.state.lock().queue.len()
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.receiver_alive = false;
        state.queue = VecDeque::new();
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
