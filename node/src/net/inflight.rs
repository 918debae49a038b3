//! A node-wide bound on inbound request bytes being read: every body reserves its chunks
//! here before reading them, so many streams that stall mid-body cannot add up to more than
//! the bound, however many peers or streams a member opens.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Default bound on inbound bytes in flight, in total across peers and streams.
pub const DEFAULT_INFLIGHT_BYTES: usize = 256 << 20;

/// Bytes of inbound bodies being read right now, and the most there may be.
#[derive(Debug)]
pub struct InflightBudget {
    used: AtomicUsize,
    limit: usize,
}

impl Default for InflightBudget {
    fn default() -> Self {
        Self::new(DEFAULT_INFLIGHT_BYTES)
    }
}

impl InflightBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Bytes held from an [`InflightBudget`] by one body being read; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<InflightBudget>,
    held: usize,
}

impl Reservation {
    /// An empty reservation against `budget`.
    pub fn new(budget: Arc<InflightBudget>) -> Self {
        Self { budget, held: 0 }
    }

    /// Reserves `more` bytes, or fails with [`io::ErrorKind::OutOfMemory`] (this node's
    /// bound, not the sender's fault) when the budget cannot hold them.
    pub fn grow(&mut self, more: usize) -> io::Result<()> {
        let limit = self.budget.limit;
        self.budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&total| total <= limit)
            })
            .map_err(|used| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "inbound bodies already hold {used} of this node's {limit} bytes in flight"
                    ),
                )
            })?;
        self.held += more;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_release_on_drop() {
        let budget = Arc::new(InflightBudget::new(100));
        let mut a = Reservation::new(budget.clone());
        a.grow(60).unwrap();
        let mut b = Reservation::new(budget.clone());
        b.grow(40).unwrap();
        let err = b.grow(1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert_eq!(budget.used(), 100, "a refused growth holds nothing more");
        drop(a);
        assert_eq!(budget.used(), 40);
        b.grow(usize::MAX).unwrap_err();
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
