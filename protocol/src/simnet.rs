//! A deterministic simulated network for driving sans-IO state machines in tests.
//!
//! Seeded (ChaCha8): the same seed and the same calls give the same deliveries. Each message
//! gets a delay drawn from `[delay_min, delay_max]` ticks (so messages reorder), may be lost or
//! duplicated, is dropped when sender and receiver sit in different partition groups (checked
//! when sent and again when due), and is dropped when its receiver is crashed. Generic over the
//! node id and the message type so the election and round machines can share it. No sockets,
//! no threads, no wall clock: time is whatever `now` the caller passes.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Fault model of the simulated network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimNetConfig {
    /// Fewest ticks a message spends in flight (0 lets a message arrive in the tick it was sent).
    pub delay_min: u64,
    /// Most ticks a message spends in flight (inclusive).
    pub delay_max: u64,
    /// Probability in [0, 1] that a sent message is lost.
    pub loss: f64,
    /// Probability in [0, 1] that a delivered message also arrives a second time.
    pub duplicate: f64,
}

impl Default for SimNetConfig {
    /// A clean network: 1–3 ticks of delay, no loss, no duplicates.
    fn default() -> Self {
        Self {
            delay_min: 1,
            delay_max: 3,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

impl SimNetConfig {
    /// Checks the delay range is ordered and both probabilities lie in [0, 1].
    pub fn validate(&self) -> Result<(), SimNetError> {
        if self.delay_min > self.delay_max {
            return Err(SimNetError::DelayRange {
                min: self.delay_min,
                max: self.delay_max,
            });
        }
        for (name, value) in [("loss", self.loss), ("duplicate", self.duplicate)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimNetError::Probability { name, value });
            }
        }
        Ok(())
    }
}

/// Why a simulated network could not be configured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimNetError {
    /// `delay_min` exceeds `delay_max`.
    #[error("delay_min {min} exceeds delay_max {max}")]
    DelayRange {
        /// The configured minimum.
        min: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A probability lies outside [0, 1] (or is NaN).
    #[error("{name} probability {value} is not in [0, 1]")]
    Probability {
        /// Which probability.
        name: &'static str,
        /// The bad value.
        value: f64,
    },
}

/// Counters of what happened to the messages sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimNetStats {
    /// Messages handed to `send`.
    pub sent: u64,
    /// Copies handed back by `deliver_due`.
    pub delivered: u64,
    /// Messages dropped by random loss.
    pub lost: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Copies dropped because a partition separated sender and receiver.
    pub partitioned: u64,
    /// Copies dropped because the sender or receiver was crashed.
    pub crashed: u64,
}

#[derive(Debug, Clone)]
struct InFlight<N, M> {
    from: N,
    to: N,
    msg: M,
}

/// A seeded, in-memory network of nodes `N` exchanging messages `M`.
#[derive(Debug)]
pub struct SimNet<N, M> {
    cfg: SimNetConfig,
    rng: ChaCha8Rng,
    // Keyed by (due tick, random tie-break, sequence): pops in delivery order.
    queue: BTreeMap<(u64, u64, u64), InFlight<N, M>>,
    seq: u64,
    groups: Option<BTreeMap<N, usize>>,
    crashed: BTreeSet<N>,
    stats: SimNetStats,
}

impl<N: Clone + Ord, M: Clone> SimNet<N, M> {
    /// A fully connected network with no crashed nodes.
    pub fn new(seed: u64, cfg: SimNetConfig) -> Result<Self, SimNetError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BTreeMap::new(),
            seq: 0,
            groups: None,
            crashed: BTreeSet::new(),
            stats: SimNetStats::default(),
        })
    }

    /// Changes the fault model for messages sent from now on.
    pub fn set_config(&mut self, cfg: SimNetConfig) -> Result<(), SimNetError> {
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// The current fault model.
    pub fn config(&self) -> SimNetConfig {
        self.cfg
    }

    /// Sends `msg` at tick `now`; it becomes due after a random delay unless lost or cut off.
    pub fn send(&mut self, from: &N, to: &N, msg: M, now: u64) {
        self.stats.sent += 1;
        if self.crashed.contains(from) || self.crashed.contains(to) {
            self.stats.crashed += 1;
            return;
        }
        if !self.connected(from, to) {
            self.stats.partitioned += 1;
            return;
        }
        if self.rng.random_bool(self.cfg.loss) {
            self.stats.lost += 1;
            return;
        }
        if self.rng.random_bool(self.cfg.duplicate) {
            self.stats.duplicated += 1;
            self.enqueue(from, to, msg.clone(), now);
        }
        self.enqueue(from, to, msg, now);
    }

    /// Sends a copy of `msg` from `from` to each of `to` (skipping `from` itself).
    pub fn broadcast<'a>(
        &mut self,
        from: &N,
        to: impl IntoIterator<Item = &'a N>,
        msg: &M,
        now: u64,
    ) where
        N: 'a,
    {
        for t in to {
            if t != from {
                self.send(from, t, msg.clone(), now);
            }
        }
    }

    /// Removes and returns every message due by `now` as (from, to, msg), in delivery order.
    pub fn deliver_due(&mut self, now: u64) -> Vec<(N, N, M)> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let m = entry.remove();
            if self.crashed.contains(&m.to) {
                self.stats.crashed += 1;
            } else if !self.connected(&m.from, &m.to) {
                self.stats.partitioned += 1;
            } else {
                self.stats.delivered += 1;
                out.push((m.from, m.to, m.msg));
            }
        }
        out
    }

    /// Splits the network: only nodes in the same group can talk; unlisted nodes are isolated.
    pub fn partition(&mut self, groups: Vec<Vec<N>>) {
        let mut map = BTreeMap::new();
        for (i, group) in groups.into_iter().enumerate() {
            for n in group {
                map.insert(n, i);
            }
        }
        self.groups = Some(map);
    }

    /// Removes any partition: every node can reach every other again.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Whether a message from `a` to `b` can currently get through the partition.
    pub fn connected(&self, a: &N, b: &N) -> bool {
        if a == b {
            return true;
        }
        match &self.groups {
            None => true,
            Some(map) => match (map.get(a), map.get(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }

    /// Crashes `node`: messages in flight to it are dropped, and nothing reaches or leaves it.
    pub fn crash(&mut self, node: &N) {
        self.crashed.insert(node.clone());
        let before = self.queue.len();
        self.queue.retain(|_, m| m.to != *node);
        self.stats.crashed += (before - self.queue.len()) as u64;
    }

    /// Brings `node` back; it receives only messages sent after this call.
    pub fn restart(&mut self, node: &N) {
        self.crashed.remove(node);
    }

    /// Whether `node` is currently crashed.
    pub fn is_crashed(&self, node: &N) -> bool {
        self.crashed.contains(node)
    }

    /// Number of message copies still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// What has happened to the messages so far.
    pub fn stats(&self) -> SimNetStats {
        self.stats
    }

    fn enqueue(&mut self, from: &N, to: &N, msg: M, now: u64) {
        let delay = self
            .rng
            .random_range(self.cfg.delay_min..=self.cfg.delay_max);
        let key = (
            now.saturating_add(delay),
            self.rng.random::<u64>(),
            self.seq,
        );
        self.seq += 1;
        self.queue.insert(
            key,
            InFlight {
                from: from.clone(),
                to: to.clone(),
                msg,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(seed: u64, cfg: SimNetConfig) -> SimNet<u32, u64> {
        SimNet::new(seed, cfg).unwrap()
    }

    #[test]
    fn delivers_within_the_delay_bounds_in_due_order() {
        let cfg = SimNetConfig {
            delay_min: 2,
            delay_max: 5,
            ..SimNetConfig::default()
        };
        let mut n = net(1, cfg);
        for i in 0..200 {
            n.send(&0, &1, i, 10);
        }
        assert!(n.deliver_due(11).is_empty());
        let mut got = Vec::new();
        for t in 12..=15 {
            got.extend(n.deliver_due(t).into_iter().map(|(_, _, m)| (t, m)));
        }
        assert_eq!(got.len(), 200);
        assert_eq!(n.in_flight(), 0);
        // Reordered: not delivered in send order.
        assert!(got.windows(2).any(|w| w[0].1 > w[1].1));
        assert_eq!(n.stats().delivered, 200);
    }

    #[test]
    fn same_seed_same_deliveries() {
        let cfg = SimNetConfig {
            delay_min: 0,
            delay_max: 4,
            loss: 0.3,
            duplicate: 0.2,
        };
        let run = |seed| {
            let mut n = net(seed, cfg);
            let mut out = Vec::new();
            for t in 0..50u64 {
                n.send(&((t % 3) as u32), &(((t + 1) % 3) as u32), t, t);
                out.extend(n.deliver_due(t));
            }
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn loss_and_duplication_extremes() {
        let lossy = SimNetConfig {
            loss: 1.0,
            ..SimNetConfig::default()
        };
        let mut n = net(2, lossy);
        for i in 0..20 {
            n.send(&0, &1, i, 0);
        }
        assert!(n.deliver_due(100).is_empty());
        assert_eq!(n.stats().lost, 20);

        let dup = SimNetConfig {
            duplicate: 1.0,
            ..SimNetConfig::default()
        };
        let mut n = net(3, dup);
        for i in 0..20 {
            n.send(&0, &1, i, 0);
        }
        assert_eq!(n.deliver_due(100).len(), 40);
    }

    #[test]
    fn partitions_cut_across_groups_until_healed() {
        let mut n = net(4, SimNetConfig::default());
        n.send(&0, &2, 1, 0); // in flight when the partition starts: dropped when due
        n.partition(vec![vec![0, 1], vec![2]]);
        n.send(&0, &1, 2, 0);
        n.send(&0, &2, 3, 0);
        n.send(&3, &0, 4, 0); // 3 is in no group: isolated
        let got: Vec<u64> = n.deliver_due(10).into_iter().map(|m| m.2).collect();
        assert_eq!(got, vec![2]);
        assert_eq!(n.stats().partitioned, 3);
        n.heal();
        n.send(&0, &2, 5, 10);
        assert_eq!(n.deliver_due(20).len(), 1);
    }

    #[test]
    fn crash_drops_in_flight_messages_to_the_node() {
        let mut n = net(5, SimNetConfig::default());
        n.send(&0, &1, 1, 0);
        n.send(&1, &0, 2, 0); // from the crashing node: already on the wire, still arrives
        n.crash(&1);
        assert!(n.is_crashed(&1));
        n.send(&0, &1, 3, 0);
        let got: Vec<u64> = n.deliver_due(10).into_iter().map(|m| m.2).collect();
        assert_eq!(got, vec![2]);
        n.restart(&1);
        n.send(&0, &1, 4, 10);
        assert_eq!(n.deliver_due(20).len(), 1);
    }

    #[test]
    fn bad_configs_are_rejected() {
        let bad = SimNetConfig {
            delay_min: 3,
            delay_max: 1,
            ..SimNetConfig::default()
        };
        assert!(SimNet::<u32, u8>::new(0, bad).is_err());
        let bad = SimNetConfig {
            loss: f64::NAN,
            ..SimNetConfig::default()
        };
        assert!(SimNet::<u32, u8>::new(0, bad).is_err());
        let bad = SimNetConfig {
            duplicate: 1.5,
            ..SimNetConfig::default()
        };
        assert!(matches!(
            SimNet::<u32, u8>::new(0, bad),
            Err(SimNetError::Probability { .. })
        ));
    }
}
