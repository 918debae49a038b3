//! Per-peer request rate limiting: a fixed one-second window.

use std::time::{Duration, Instant};

/// Requests counted in the current one-second window.
#[derive(Debug, Clone, Copy)]
pub struct RateWindow {
    start: Instant,
    count: u32,
}

impl RateWindow {
    /// A window opening at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            start: now,
            count: 0,
        }
    }

    /// Requests counted in the current window.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Counts a request at `now`; false when it is over `limit` requests in its window.
    pub fn allow(&mut self, now: Instant, limit: u32) -> bool {
        if now.saturating_duration_since(self.start) >= Duration::from_secs(1) {
            *self = Self::new(now);
        }
        self.count = self.count.saturating_add(1);
        self.count <= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_per_second_then_refuses_until_the_next_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0);
        for _ in 0..3 {
            assert!(w.allow(t0 + Duration::from_millis(10), 3));
        }
        assert!(!w.allow(t0 + Duration::from_millis(500), 3));
        assert!(!w.allow(t0 + Duration::from_millis(999), 3));
        assert!(w.allow(t0 + Duration::from_millis(1000), 3), "a new window");
    }
}
