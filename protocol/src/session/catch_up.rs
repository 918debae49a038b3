//! A member catching up on checkpoints it was not sent. The host sends each round's
//! checkpoint to a majority only; every other member learns the newest round and its hash from
//! the host's liveness announcements and fetches that checkpoint, content-addressed, from any
//! member that announces holding it: another member first, the host only when no other holder
//! shows up within a patience. A holder that fails (refuses, sends bytes that do not hash to
//! the address, stays silent) is skipped and the next one asked.

use std::collections::BTreeSet;

use crate::wire::PeerBytes;

/// What a member asks of a holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The holder asked.
    pub from: PeerBytes,
    /// The round of the checkpoint wanted.
    pub round: u64,
    /// Its content address.
    pub want: [u8; 32],
}

/// Timing of a catch-up, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpPolicy {
    /// Ticks to wait for a holder other than the host before asking the host.
    pub patience: u64,
    /// Ticks a holder has to deliver before the next one is asked.
    pub timeout: u64,
}

/// The checkpoint a member is catching up to and whom it asked (sans-IO: the node feeds it
/// announcements, ticks and outcomes, and sends the [`Fetch`]es it returns).
#[derive(Debug, Clone)]
pub struct CatchUp {
    policy: CatchUpPolicy,
    /// (round, hash) the host announced and this node does not hold.
    target: Option<(u64, [u8; 32])>,
    /// Ticks since the target was set.
    waited: u64,
    /// The holder asked and the ticks it has left.
    asked: Option<(PeerBytes, u64)>,
    /// Holders that failed for the current target.
    failed: BTreeSet<PeerBytes>,
}

impl CatchUp {
    /// A member that holds everything it knows of.
    pub fn new(policy: CatchUpPolicy) -> Self {
        Self {
            policy,
            target: None,
            waited: 0,
            asked: None,
            failed: BTreeSet::new(),
        }
    }

    /// The checkpoint being caught up to, if any.
    pub fn target(&self) -> Option<(u64, [u8; 32])> {
        self.target
    }

    /// The host announced that its newest checkpoint is `hash`, of `round`; this node holds
    /// rounds up to `held`.
    pub fn on_host_checkpoint(&mut self, round: u64, hash: [u8; 32], held: u64) {
        if round <= held {
            self.clear();
            return;
        }
        if self.target != Some((round, hash)) {
            self.clear();
            self.target = Some((round, hash));
        }
    }

    /// This node now holds rounds up to `held` (replicated, fetched or restored).
    pub fn on_held(&mut self, held: u64) {
        if self.target.is_some_and(|(round, _)| round <= held) {
            self.clear();
        }
    }

    /// One tick. `holders` are the members that announce holding the target (the host may be
    /// among them), `host` the current host, and `pick` a random number that spreads the
    /// fetches over the holders. Returns the fetch to send, if one is due.
    pub fn on_tick(&mut self, holders: &[PeerBytes], host: &[u8], pick: u64) -> Option<Fetch> {
        let (round, want) = self.target?;
        self.waited += 1;
        if let Some((_, left)) = self.asked.as_mut() {
            *left = left.saturating_sub(1);
            if *left > 0 {
                return None;
            }
            if let Some((silent, _)) = self.asked.take() {
                self.failed.insert(silent);
            }
        }
        let untried = |p: &&PeerBytes| !self.failed.contains(*p);
        let mut others: Vec<&PeerBytes> = holders
            .iter()
            .filter(|p| p.as_slice() != host)
            .filter(untried)
            .collect();
        if others.is_empty() && self.waited >= self.policy.patience {
            others = holders
                .iter()
                .filter(|p| p.as_slice() == host)
                .filter(untried)
                .collect();
        }
        if others.is_empty() {
            if !holders.is_empty() && holders.iter().all(|p| self.failed.contains(p)) {
                // Every holder failed once: try them all again.
                self.failed.clear();
            }
            return None;
        }
        let from = others[(pick % others.len() as u64) as usize].clone();
        self.asked = Some((from.clone(), self.policy.timeout.max(1)));
        Some(Fetch { from, round, want })
    }

    /// Whether a checkpoint with content address `hash` from `from` answers this node's fetch.
    pub fn solicited(&self, from: &[u8], hash: &[u8; 32]) -> bool {
        self.target.is_some_and(|(_, want)| &want == hash)
            && self
                .asked
                .as_ref()
                .is_some_and(|(p, _)| p.as_slice() == from)
    }

    /// What `from` sent (or its refusal of the fetch) could not be used: ask another holder at
    /// the next tick.
    pub fn on_failed(&mut self, from: &[u8]) {
        if self
            .asked
            .as_ref()
            .is_some_and(|(p, _)| p.as_slice() == from)
        {
            self.asked = None;
        }
        if self.target.is_some() {
            self.failed.insert(from.to_vec());
        }
    }

    fn clear(&mut self) {
        self.target = None;
        self.waited = 0;
        self.asked = None;
        self.failed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CatchUpPolicy = CatchUpPolicy {
        patience: 3,
        timeout: 5,
    };

    fn p(k: u8) -> PeerBytes {
        vec![k]
    }

    #[test]
    fn a_member_fetches_from_another_member_before_the_host() {
        let mut c = CatchUp::new(POLICY);
        assert_eq!(c.on_tick(&[p(1), p(2)], &p(0), 0), None, "nothing to fetch");
        c.on_host_checkpoint(4, [4; 32], 2);
        // Only the host holds it so far: wait out the patience for another holder.
        assert_eq!(c.on_tick(&[p(0)], &p(0), 0), None);
        assert_eq!(c.on_tick(&[p(0)], &p(0), 0), None);
        let fetch = c.on_tick(&[p(0), p(1), p(2)], &p(0), 1).unwrap();
        assert_eq!(
            fetch,
            Fetch {
                from: p(2),
                round: 4,
                want: [4; 32]
            }
        );
        assert!(c.solicited(&p(2), &[4; 32]));
        assert!(!c.solicited(&p(1), &[4; 32]), "not asked");
        assert!(!c.solicited(&p(2), &[5; 32]), "not the address asked for");
        c.on_held(4);
        assert_eq!(c.target(), None);
        assert!(!c.solicited(&p(2), &[4; 32]), "done");
    }

    #[test]
    fn the_host_is_asked_once_no_other_holder_shows_up() {
        let mut c = CatchUp::new(POLICY);
        c.on_host_checkpoint(1, [1; 32], 0);
        for _ in 1..POLICY.patience {
            assert_eq!(c.on_tick(&[p(0)], &p(0), 7), None);
        }
        assert_eq!(c.on_tick(&[p(0)], &p(0), 7).unwrap().from, p(0));
    }

    #[test]
    fn a_failed_or_silent_holder_is_skipped_for_the_next() {
        let mut c = CatchUp::new(POLICY);
        c.on_host_checkpoint(3, [3; 32], 1);
        let holders = [p(0), p(1), p(2)];
        assert_eq!(c.on_tick(&holders, &p(0), 0).unwrap().from, p(1));
        // A tampered delta from 1: the next holder is asked at once.
        c.on_failed(&p(1));
        assert!(!c.solicited(&p(1), &[3; 32]));
        assert_eq!(c.on_tick(&holders, &p(0), 0).unwrap().from, p(2));
        // 2 stays silent past the timeout: the host is all that is left.
        for _ in 1..POLICY.timeout {
            assert_eq!(c.on_tick(&holders, &p(0), 0), None);
        }
        assert_eq!(c.on_tick(&holders, &p(0), 0).unwrap().from, p(0));
        c.on_failed(&p(0));
        // Every holder failed once: they are tried again rather than never.
        assert_eq!(c.on_tick(&holders, &p(0), 0), None);
        assert!(c.on_tick(&holders, &p(0), 0).is_some());
    }

    #[test]
    fn a_newer_round_replaces_the_target_and_an_older_one_is_ignored() {
        let mut c = CatchUp::new(POLICY);
        c.on_host_checkpoint(2, [2; 32], 1);
        assert_eq!(c.target(), Some((2, [2; 32])));
        c.on_host_checkpoint(3, [3; 32], 1);
        assert_eq!(c.target(), Some((3, [3; 32])));
        c.on_host_checkpoint(3, [3; 32], 3);
        assert_eq!(c.target(), None, "held already");
    }
}
