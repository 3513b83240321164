//! A fixed-window rate limiter for client events (Pusher allows 10 per second).

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_window: u32,
    window_start: Instant,
    used: u32,
}

impl RateLimiter {
    pub(crate) fn per_second(limit: u32) -> Self {
        Self {
            per_window: limit,
            window_start: Instant::now(),
            used: 0,
        }
    }

    pub(crate) fn allow(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_limit_per_window() {
        let mut r = RateLimiter::per_second(3);
        assert!(r.allow() && r.allow() && r.allow());
        assert!(!r.allow());
    }
}
