//! Per-peer offence counting: a member whose requests keep being refused for its own fault
//! (malformed, mislabelled, stalled, out of turn, flooding) is banned for a while.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When offences add up to a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    /// Offences within `window` that ban a peer.
    pub threshold: u32,
    /// How far back offences count.
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
}

/// One peer's recent offences (at most `threshold` remembered) and its ban, if any.
#[derive(Debug, Clone, Default)]
pub struct OffenceRecord {
    recent: VecDeque<Instant>,
    total: u64,
    banned_until: Option<Instant>,
    last: Option<String>,
}

impl OffenceRecord {
    /// Counts one offence at `now`; returns true when it bans the peer (it was not banned,
    /// and `threshold` offences now fall within the window).
    pub fn offend(&mut self, now: Instant, what: &str, policy: &BanPolicy) -> bool {
        self.total = self.total.saturating_add(1);
        self.last = Some(what.chars().take(160).collect());
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let cap = policy.threshold.max(1) as usize;
        while self.recent.len() > cap {
            self.recent.pop_front();
        }
        if self.banned(now) || self.recent.len() < cap {
            return false;
        }
        self.banned_until = Some(now + policy.ban);
        self.recent.clear();
        true
    }

    /// Bans the peer until `until` (a ban restored from the store after a restart).
    pub fn ban_until(&mut self, until: Instant, why: String) {
        self.banned_until = Some(until);
        self.last = Some(why);
    }

    /// Whether the peer is banned at `now`.
    pub fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| now < t)
    }

    /// When the ban ends, while there is one (expired bans read as none).
    pub fn banned_until(&self, now: Instant) -> Option<Instant> {
        self.banned_until.filter(|t| now < *t)
    }

    /// Ends an expired ban; true when one just ended.
    pub fn expire(&mut self, now: Instant) -> bool {
        if self.banned_until.is_some_and(|t| now >= t) {
            self.banned_until = None;
            return true;
        }
        false
    }

    /// Offences counted since this node started.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The latest offence, in words.
    pub fn last(&self) -> Option<&str> {
        self.last.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BanPolicy {
        BanPolicy {
            threshold: 3,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_threshold_within_the_window_bans_until_the_ban_expires() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = OffenceRecord::default();
        assert!(!r.offend(t0, "a", &policy()));
        assert!(!r.offend(t0 + s(1), "b", &policy()));
        assert!(
            r.offend(t0 + s(2), "c", &policy()),
            "the third within 10 s bans"
        );
        assert!(r.banned(t0 + s(61)));
        assert_eq!(r.banned_until(t0 + s(3)), Some(t0 + s(62)));
        // Offences during a ban are counted but do not re-ban or extend it.
        assert!(!r.offend(t0 + s(3), "d", &policy()));
        assert_eq!(r.total(), 4);
        assert_eq!(r.last(), Some("d"));
        assert!(!r.expire(t0 + s(61)));
        assert!(r.expire(t0 + s(62)));
        assert!(!r.banned(t0 + s(62)));
        assert_eq!(r.banned_until(t0 + s(62)), None);
    }

    #[test]
    fn offences_spread_wider_than_the_window_never_ban() {
        let t0 = Instant::now();
        let mut r = OffenceRecord::default();
        for i in 0..100u64 {
            assert!(!r.offend(t0 + Duration::from_secs(6 * i), "slow", &policy()));
        }
        assert_eq!(r.total(), 100);
        assert!(r.recent.len() <= 3, "memory per peer stays bounded");
    }
}
