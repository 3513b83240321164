//! Loss, duplicate and order accounting for one (connection, channel) pair.
//!
//! The publisher numbers each channel's messages 1, 2, 3, ... and keeps at most one
//! publish per channel in flight, so the server must deliver them in that order. A
//! tracker remembers the highest number seen and the holes below it (as ranges, empty
//! in a healthy run), which is enough to tell a late message (fills a hole: out of
//! order) from a repeated one (duplicate) and, once the publisher says how many it
//! sent, how many never arrived.

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    InOrder,
    /// Filled a hole left earlier: it arrived after a later message.
    OutOfOrder,
    Duplicate,
}

/// The state of one subscription.
#[derive(Debug, Clone)]
pub(crate) struct ChanTrack {
    pub(crate) channel: u32,
    max_seen: u64,
    /// Distinct messages received.
    pub(crate) received: u64,
    /// Sequence numbers skipped so far, inclusive ranges in ascending order.
    holes: Vec<(u64, u64)>,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
}

impl ChanTrack {
    pub(crate) fn new(channel: u32) -> Self {
        Self {
            channel,
            max_seen: 0,
            received: 0,
            holes: Vec::new(),
            duplicates: 0,
            out_of_order: 0,
        }
    }

    /// Records message `seq` (from 1).
    pub(crate) fn record(&mut self, seq: u64) -> Arrival {
        if seq > self.max_seen {
            if seq > self.max_seen + 1 {
                self.holes.push((self.max_seen + 1, seq - 1));
            }
            self.max_seen = seq;
            self.received += 1;
            return Arrival::InOrder;
        }
        let Some(i) = self.holes.iter().position(|&(a, b)| a <= seq && seq <= b) else {
            self.duplicates += 1;
            return Arrival::Duplicate;
        };
        let (a, b) = self.holes[i];
        match (seq == a, seq == b) {
            (true, true) => {
                self.holes.remove(i);
            }
            (true, false) => self.holes[i].0 = a + 1,
            (false, true) => self.holes[i].1 = b - 1,
            (false, false) => {
                self.holes[i].1 = seq - 1;
                self.holes.insert(i + 1, (seq + 1, b));
            }
        }
        self.received += 1;
        self.out_of_order += 1;
        Arrival::OutOfOrder
    }

    /// Messages among the first `published` that never arrived.
    pub(crate) fn missing(&self, published: u64) -> u64 {
        let in_holes: u64 = self
            .holes
            .iter()
            .filter(|&&(a, _)| a <= published)
            .map(|&(a, b)| b.min(published) - a + 1)
            .sum();
        in_holes + published.saturating_sub(self.max_seen)
    }

    /// Whether all of the first `published` messages arrived.
    pub(crate) fn complete(&self, published: u64) -> bool {
        self.max_seen >= published && self.holes.iter().all(|&(a, _)| a > published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_is_complete() {
        let mut t = ChanTrack::new(0);
        for s in 1..=5 {
            assert_eq!(t.record(s), Arrival::InOrder);
        }
        assert!(t.complete(5));
        assert_eq!(t.missing(5), 0);
        assert_eq!(t.missing(7), 2);
        assert!(!t.complete(6));
    }

    #[test]
    fn late_message_is_out_of_order_and_repeat_is_duplicate() {
        let mut t = ChanTrack::new(0);
        t.record(1);
        t.record(4);
        assert_eq!(t.missing(4), 2);
        assert_eq!(t.record(3), Arrival::OutOfOrder);
        assert_eq!(t.record(3), Arrival::Duplicate);
        assert_eq!(t.record(4), Arrival::Duplicate);
        assert_eq!(t.missing(4), 1);
        assert_eq!(t.record(2), Arrival::OutOfOrder);
        assert_eq!(t.missing(4), 0);
        assert!(t.complete(4));
        assert_eq!((t.duplicates, t.out_of_order, t.received), (2, 2, 4));
    }

    #[test]
    fn filling_the_middle_of_a_hole_splits_it() {
        let mut t = ChanTrack::new(0);
        t.record(10);
        t.record(5);
        assert_eq!(t.missing(10), 8);
        assert_eq!(t.record(5), Arrival::Duplicate);
    }
}
