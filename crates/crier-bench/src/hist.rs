//! Latency histograms (microseconds) that cross process boundaries as plain
//! `(value, count)` pairs and merge in the coordinator.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Highest latency tracked: 10 minutes, in microseconds.
const MAX_MICROS: u64 = 600_000_000;

/// A new histogram covering 1 µs .. 10 min at 3 significant digits.
pub(crate) fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("static bounds are valid")
}

/// Records one value, clamped into the tracked range.
pub(crate) fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.clamp(1, MAX_MICROS));
}

/// The recorded buckets of a histogram, for the trip from a worker to the coordinator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Buckets(pub(crate) Vec<(u64, u64)>);

impl Buckets {
    pub(crate) fn from_hist(h: &Histogram<u64>) -> Self {
        Self(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub(crate) fn add_to(&self, h: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            let _ = h.record_n(value.clamp(1, MAX_MICROS), count);
        }
    }
}

/// A histogram shared by the connection tasks of one process. Tasks record into a
/// small local buffer and merge it here in batches, so the lock is rarely taken.
#[derive(Debug)]
pub(crate) struct Shared(Mutex<Histogram<u64>>);

impl Shared {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(new()))
    }

    pub(crate) fn merge(&self, values: &mut Vec<u64>) {
        if values.is_empty() {
            return;
        }
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for v in values.drain(..) {
            record(&mut h, v);
        }
    }

    pub(crate) fn buckets(&self) -> Buckets {
        Buckets::from_hist(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Percentiles for the report, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
}

impl Summary {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }

    /// `p50 1.20 ms  p90 ...` on one line.
    pub(crate) fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (mean {:.2} ms)",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_merge_into_the_same_percentiles() {
        let mut a = new();
        for v in 1..=1000u64 {
            record(&mut a, v * 10);
        }
        let mut b = new();
        Buckets::from_hist(&a).add_to(&mut b);
        assert_eq!(a.len(), b.len());
        assert_eq!(a.value_at_quantile(0.99), b.value_at_quantile(0.99));
        let s = Summary::of(&b);
        assert!(s.p50_ms > 4.9 && s.p50_ms < 5.1, "{s:?}");
    }
}
