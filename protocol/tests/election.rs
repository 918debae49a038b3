//! Host election driven over the seeded simulated network: safety under loss, duplication,
//! reordering, partitions and crash/restart; liveness and capability preference without faults;
//! and the up-to-date rule. Each test prints the numbers it measured (`--nocapture`).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use protocol::election::{
    Action, Capability, Election, ElectionConfig, ElectionError, ElectionMessage, Persistent,
};
use protocol::simnet::{SimNet, SimNetConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What travels on the simulated wire.
#[derive(Debug, Clone)]
enum Wire {
    Election(ElectionMessage<u32>),
    /// A capability announcement (gossipsub in the node); the driver feeds it to `observe`.
    Alive {
        capability: Capability,
        round: u64,
    },
}

/// Per-tick fault rates on top of the network's loss/duplication/delay.
#[derive(Debug, Clone, Copy, Default)]
struct Chaos {
    /// Probability per tick that the partition changes (to random groups, or healed).
    partition: f64,
    /// Probability per tick that a random live node crashes.
    crash: f64,
    /// Probability per tick that a random crashed node restarts from its persisted state.
    restart: f64,
    /// Every this many ticks each leader tries to complete an FL round on a random majority.
    round_every: Option<u64>,
}

struct Cluster {
    seed: u64,
    cfg: ElectionConfig,
    caps: Vec<Capability>,
    nodes: Vec<Option<Election<u32>>>,
    /// What each node last persisted: all a restart gets.
    disk: Vec<Persistent<u32>>,
    /// Last completed round whose checkpoint each node holds (on disk: survives crashes).
    round: Vec<u64>,
    net: SimNet<u32, Wire>,
    rng: ChaCha8Rng,
    now: u64,
    announce_every: Option<u64>,
    /// term → leader, every BecameLeader of the whole run.
    leaders: BTreeMap<u64, u32>,
    /// (tick, node, term) of every BecameLeader, in order.
    elected: Vec<(u64, u32, u64)>,
    /// (round, term) of every round a leader counted complete.
    committed: Vec<(u64, u64)>,
    crashes: u64,
}

impl Cluster {
    fn new(
        seed: u64,
        caps: Vec<Capability>,
        cfg: ElectionConfig,
        net: SimNetConfig,
        announce_every: Option<u64>,
    ) -> Self {
        let n = caps.len();
        let mut c = Cluster {
            seed,
            cfg,
            caps,
            nodes: (0..n).map(|_| None).collect(),
            disk: vec![Persistent::default(); n],
            round: vec![0; n],
            net: SimNet::new(seed ^ 0x5eed, net).unwrap(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            announce_every,
            leaders: BTreeMap::new(),
            elected: Vec::new(),
            committed: Vec::new(),
            crashes: 0,
        };
        for i in 0..n {
            c.boot(i);
        }
        if announce_every.is_some() {
            c.announce(); // nodes announce themselves when they join
        }
        c
    }

    fn n(&self) -> usize {
        self.caps.len()
    }

    fn majority(&self) -> usize {
        self.n() / 2 + 1
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    fn node(&self, i: usize) -> &Election<u32> {
        self.nodes[i].as_ref().unwrap()
    }

    /// (Re)builds node `i` from its persisted state only.
    fn boot(&mut self, i: usize) {
        let members = (0..self.n() as u32).collect();
        let mut e = Election::new(
            i as u32,
            self.caps[i],
            members,
            self.disk[i].clone(),
            self.cfg,
            self.rng.random(),
        )
        .unwrap();
        e.set_last_completed_round(self.round[i]);
        self.nodes[i] = Some(e);
        self.net.restart(&(i as u32));
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.net.crash(&(i as u32));
        self.crashes += 1;
    }

    fn announce(&mut self) {
        for i in 0..self.n() {
            if self.alive(i) {
                let msg = Wire::Alive {
                    capability: self.caps[i],
                    round: self.round[i],
                };
                let all: Vec<u32> = (0..self.n() as u32).collect();
                self.net.broadcast(&(i as u32), &all, &msg, self.now);
            }
        }
    }

    /// One tick: deliver due messages, tick every live node, announce.
    fn step(&mut self) {
        self.now += 1;
        for (from, to, wire) in self.net.deliver_due(self.now) {
            let i = to as usize;
            let Some(node) = self.nodes[i].as_mut() else {
                continue;
            };
            match wire {
                Wire::Election(msg) => {
                    let before = node.persistent();
                    let actions = node.handle(&from, msg).unwrap();
                    self.apply(i, before, actions);
                }
                Wire::Alive { capability, round } => {
                    node.observe(&from, capability, round).unwrap();
                }
            }
        }
        for i in 0..self.n() {
            if let Some(node) = self.nodes[i].as_mut() {
                let before = node.persistent();
                let actions = node.tick();
                self.apply(i, before, actions);
            }
        }
        if let Some(every) = self.announce_every {
            if self.now.is_multiple_of(every) {
                self.announce();
            }
        }
    }

    /// Carries out node `i`'s actions in order, checking the Persist-first contract and safety.
    fn apply(&mut self, i: usize, before: Persistent<u32>, actions: Vec<Action<u32>>) {
        let seed = self.seed;
        let after = self.node(i).persistent();
        let persists = actions
            .iter()
            .filter(|a| matches!(a, Action::Persist(_)))
            .count();
        if after != before {
            assert_eq!(persists, 1, "seed {seed}: {actions:?}");
            assert_eq!(actions[0], Action::Persist(after.clone()), "seed {seed}");
        } else {
            assert_eq!(persists, 0, "seed {seed}: persist without change");
        }
        if after.term == before.term && before.voted_for.is_some() {
            assert_eq!(after.voted_for, before.voted_for, "seed {seed}: re-voted");
        }
        assert!(after.term >= before.term, "seed {seed}: term went back");
        let me = i as u32;
        for action in actions {
            match action {
                Action::Persist(p) => self.disk[i] = p,
                Action::Send { to, msg } => {
                    self.net.send(&me, &to, Wire::Election(msg), self.now);
                }
                Action::Broadcast(msg) => {
                    let all: Vec<u32> = (0..self.n() as u32).collect();
                    self.net
                        .broadcast(&me, &all, &Wire::Election(msg), self.now);
                }
                Action::BecameLeader { term } => {
                    assert_eq!(term, self.node(i).term(), "seed {seed}");
                    if let Some(prev) = self.leaders.insert(term, me) {
                        assert_eq!(
                            prev, me,
                            "seed {seed}: nodes {prev} and {me} both led term {term}"
                        );
                    }
                    // Up-to-date: the new host holds every round completed in an earlier term.
                    let need = self
                        .committed
                        .iter()
                        .filter(|(_, t)| *t < term)
                        .map(|(r, _)| *r)
                        .max()
                        .unwrap_or(0);
                    assert!(
                        self.round[i] >= need,
                        "seed {seed}: node {me} leads term {term} holding round {} < {need}",
                        self.round[i]
                    );
                    self.elected.push((self.now, me, term));
                }
                Action::SteppedDown { .. } | Action::LeaderChanged { .. } => {}
            }
        }
    }

    /// Random partitions, crashes, restarts and round completions.
    fn chaos(&mut self, chaos: &Chaos) {
        let n = self.n();
        if self.rng.random_bool(chaos.partition) {
            if self.rng.random_bool(0.3) {
                self.net.heal();
            } else {
                let k = self.rng.random_range(2..=3);
                let mut groups = vec![Vec::new(); k];
                for i in 0..n as u32 {
                    groups[self.rng.random_range(0..k)].push(i);
                }
                self.net.partition(groups);
            }
        }
        if self.rng.random_bool(chaos.crash) {
            let i = self.rng.random_range(0..n);
            if self.alive(i) {
                self.crash(i);
            }
        }
        if self.rng.random_bool(chaos.restart) {
            let i = self.rng.random_range(0..n);
            if !self.alive(i) {
                self.boot(i);
            }
        }
        if let Some(every) = chaos.round_every {
            if self.now.is_multiple_of(every) {
                self.complete_rounds();
            }
        }
    }

    /// Each node that believes it leads hands the next checkpoint to a random subset of the
    /// reachable members still in its term; it counts the round complete only on a majority.
    fn complete_rounds(&mut self) {
        for l in 0..self.n() {
            if !self.alive(l) || !self.node(l).is_leader() {
                continue;
            }
            let term = self.node(l).term();
            let mut holders = vec![l];
            for j in 0..self.n() {
                if j != l
                    && self.alive(j)
                    && self.net.connected(&(l as u32), &(j as u32))
                    && self.node(j).term() == term
                    && self.rng.random_bool(0.7)
                {
                    holders.push(j);
                }
            }
            if holders.len() < self.majority() {
                continue;
            }
            let r = self.round[l] + 1;
            for &j in &holders {
                assert!(self.round[j] < r, "seed {}: round numbering", self.seed);
                self.round[j] = r;
                if let Some(node) = self.nodes[j].as_mut() {
                    node.set_last_completed_round(r);
                }
            }
            self.committed.push((r, term));
        }
    }

    /// The host every live node agrees on (same term, same leader), if they all do.
    fn settled(&self) -> Option<(usize, u64)> {
        let leaders = self.current_leaders();
        let [l] = leaders.as_slice() else {
            return None;
        };
        let term = self.node(*l).term();
        let agree = (0..self.n())
            .filter(|&i| self.alive(i))
            .all(|i| self.node(i).term() == term && self.node(i).leader() == Some(&(*l as u32)));
        agree.then_some((*l, term))
    }

    /// Steps until `settled` holds (bounded); returns the host and its term.
    fn run_until_settled(&mut self, limit: u64) -> Option<(usize, u64)> {
        for _ in 0..limit {
            if let Some(s) = self.settled() {
                return Some(s);
            }
            self.step();
        }
        self.settled()
    }

    fn current_leaders(&self) -> Vec<usize> {
        (0..self.n())
            .filter(|&i| self.alive(i) && self.node(i).is_leader())
            .collect()
    }

    /// Steps until some node in `among` becomes leader after now; returns (ticks waited, node).
    fn run_until_elected(&mut self, among: &BTreeSet<u32>, limit: u64) -> Option<(u64, u32)> {
        let start = self.now;
        let seen = self.elected.len();
        while self.now < start + limit {
            self.step();
            if let Some(&(t, who, _)) = self.elected[seen..]
                .iter()
                .find(|(_, who, _)| among.contains(who))
            {
                return Some((t - start, who));
            }
        }
        None
    }
}

fn random_caps(rng: &mut ChaCha8Rng, n: usize) -> Vec<Capability> {
    let mems = [4_000, 8_000, 16_000, 32_000];
    (0..n)
        .map(|_| Capability::new(rng.random_bool(0.4), mems[rng.random_range(0..mems.len())]))
        .collect()
}

/// One GPU node at a random index; CPU nodes with random memory, some larger than the GPU's.
fn one_gpu_caps(rng: &mut ChaCha8Rng, n: usize) -> (Vec<Capability>, usize) {
    let mems = [8_000, 16_000, 32_000, 64_000];
    let g = rng.random_range(0..n);
    let caps = (0..n)
        .map(|i| {
            if i == g {
                Capability::new(true, 16_000)
            } else {
                Capability::new(false, mems[rng.random_range(0..mems.len())])
            }
        })
        .collect();
    (caps, g)
}

/// Index of the best-ranked node among `ids` (GPU, memory, smaller id).
fn best_of(caps: &[Capability], ids: impl Iterator<Item = usize>) -> usize {
    ids.max_by(|&a, &b| protocol::election::rank((&caps[a], &(a as u32)), (&caps[b], &(b as u32))))
        .unwrap()
}

struct SafetyStats {
    elections: usize,
    max_term: u64,
    crashes: u64,
    commits: usize,
}

/// One randomized chaos run; panics on any safety violation.
fn chaos_run(seed: u64, n: usize, ticks: u64) -> SafetyStats {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let net = SimNetConfig {
        delay_min: 1,
        delay_max: rng.random_range(1..=6),
        loss: rng.random_range(0.0..=0.3),
        duplicate: rng.random_range(0.0..=0.2),
    };
    let chaos = Chaos {
        partition: 0.02,
        crash: 0.01,
        restart: 0.05,
        round_every: Some(5),
    };
    let caps = random_caps(&mut rng, n);
    let mut c = Cluster::new(seed, caps, ElectionConfig::default(), net, Some(10));
    for _ in 0..ticks {
        c.chaos(&chaos);
        c.step();
    }
    SafetyStats {
        elections: c.leaders.len(),
        max_term: c.leaders.keys().max().copied().unwrap_or(0),
        crashes: c.crashes,
        commits: c.committed.len(),
    }
}

#[test]
fn at_most_one_leader_per_term_under_faults() {
    let runs = 300u64;
    let ticks = 400;
    let (mut elections, mut max_term, mut crashes, mut commits) = (0, 0, 0, 0);
    let mut runs_with_leader = 0;
    for seed in 0..runs {
        let n = 3 + (seed % 3) as usize;
        let s = chaos_run(seed, n, ticks);
        elections += s.elections;
        max_term = max_term.max(s.max_term);
        crashes += s.crashes;
        commits += s.commits;
        runs_with_leader += usize::from(s.elections > 0);
    }
    println!(
        "safety: {runs} runs x {ticks} ticks (3/4/5 nodes): {elections} (term, leader) pairs, \
         no term with two leaders; max term {max_term}; {crashes} crashes; {commits} rounds \
         completed; {runs_with_leader} runs elected someone"
    );
    // Faults are heavy but not permanent: nearly every run should elect someone.
    assert!(runs_with_leader as u64 >= runs * 9 / 10);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Safety for every cluster size including 1 and 2, with fault rates chosen by proptest.
    #[test]
    fn prop_one_leader_per_term(
        seed in any::<u64>(),
        n in 1usize..=5,
        loss in 0.0f64..0.4,
        duplicate in 0.0f64..0.3,
        delay_max in 1u64..8,
        partition in 0.0f64..0.05,
        crash in 0.0f64..0.03,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let caps = random_caps(&mut rng, n);
        let net = SimNetConfig { delay_min: 1, delay_max, loss, duplicate };
        let chaos = Chaos { partition, crash, restart: 0.05, round_every: Some(5) };
        let mut c = Cluster::new(seed, caps, ElectionConfig::default(), net, Some(10));
        for _ in 0..300 {
            c.chaos(&chaos);
            c.step();
        }
    }

    /// Arbitrary (even hostile) input never panics, errors change nothing, one vote per term.
    #[test]
    fn prop_arbitrary_input_never_panics(
        ops in proptest::collection::vec(
            (0u32..7, 0u8..5, 0u64..6, 0u32..7, any::<bool>(), 0u64..4, any::<bool>()),
            1..200,
        ),
    ) {
        let members = vec![0u32, 1, 2, 3, 4];
        let mut e = Election::new(
            0u32,
            Capability::new(false, 8_000),
            members,
            Persistent::default(),
            ElectionConfig::default(),
            7,
        )
        .unwrap();
        let mut votes: BTreeMap<u64, u32> = BTreeMap::new();
        for (from, kind, term, id, flag, round, gpu) in ops {
            let term = if term == 5 { u64::MAX } else { term };
            let cap = Capability::new(gpu, 8_000);
            let before = e.persistent();
            let result = match kind {
                0 => Ok(e.tick()),
                1 => e.handle(&from, ElectionMessage::RequestVote {
                    term, candidate: id, capability: cap, last_completed_round: round }),
                2 => e.handle(&from, ElectionMessage::Vote { term, voter: id, granted: flag }),
                3 => e.handle(&from, ElectionMessage::Heartbeat {
                    term, leader: id, capability: cap, last_completed_round: round }),
                _ => e.handle(&from, ElectionMessage::HeartbeatAck {
                    term, from: id, capability: cap, last_completed_round: round }),
            };
            match result {
                Ok(actions) => {
                    let after = e.persistent();
                    prop_assert!(after.term >= before.term);
                    if after != before {
                        prop_assert_eq!(&actions[0], &Action::Persist(after.clone()));
                    }
                    if let Some(v) = after.voted_for {
                        let prev = *votes.entry(after.term).or_insert(v);
                        prop_assert_eq!(prev, v, "two votes in term {}", after.term);
                    }
                }
                Err(err) => {
                    prop_assert_eq!(e.persistent(), before);
                    if from >= 5 {
                        prop_assert_eq!(err, ElectionError::NotAMember);
                    }
                }
            }
        }
    }
}

/// Fault-free start with capability announcements: the GPU node hosts first; when it dies a
/// CPU node takes over within a config-derived bound; when that CPU host dies with the GPU node
/// back, the GPU node takes over within the (shorter) bound of a plain Raft failover.
#[test]
fn gpu_preferred_and_failover_is_bounded() {
    let cfg = ElectionConfig::default();
    let net = SimNetConfig::default(); // 1..=3 ticks delay, no loss
    let dmax = net.delay_max;
    let runs_per_size = 100u64;
    let (mut runs, mut gpu_first) = (0u64, 0u64);
    let (mut worst_gpu_gone, mut worst_cpu_gone) = (0u64, 0u64);
    let mut best_survivor_won = 0u64;
    let mut first_times = Vec::new();
    for n in 3..=5usize {
        // Round trips after the deciding timer fires: pre-vote + grant (2·dmax), request + vote
        // (2·dmax), plus, if a worse rival stood in the same term, its request reaching the
        // better one (≤ 2·dmax) which stands again at once: 6·dmax in all.
        let settle = 6 * dmax;
        // After the GPU host dies, survivors keep refusing CPU candidates while its last
        // announcement is fresh (it reached them ≤ dmax after the crash; stale after
        // stale_ticks + 1); the best survivor's timer then fires within the longest timeout.
        let bound_gpu_gone = dmax + cfg.stale_ticks + 1 + cfg.max_election_timeout(n) + settle;
        // With the GPU node alive nothing blocks it: its timer (no one outranks it, so no
        // stagger) was last reset by a heartbeat ≤ dmax after the crash and fires within
        // election_timeout_max - 1.
        let bound_cpu_gone = dmax + (cfg.election_timeout_max - 1) + settle;
        for seed in 0..runs_per_size {
            let seed = seed + 1_000 * n as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (caps, g) = one_gpu_caps(&mut rng, n);
            let mut c = Cluster::new(seed, caps.clone(), cfg, net, Some(10));
            let all: BTreeSet<u32> = (0..n as u32).collect();
            let (t_first, first) = c.run_until_elected(&all, 200).unwrap();
            runs += 1;
            gpu_first += u64::from(first as usize == g);
            first_times.push(t_first);
            while c.now < 100 {
                c.step();
            }
            assert_eq!(
                c.current_leaders(),
                vec![g],
                "seed {seed}: GPU node hosts by tick 100"
            );

            // The GPU host crashes.
            c.crash(g);
            let survivors: BTreeSet<u32> =
                all.iter().copied().filter(|&i| i as usize != g).collect();
            let (d, who) = c.run_until_elected(&survivors, 500).unwrap();
            assert!(
                d <= bound_gpu_gone,
                "seed {seed}: CPU took over after {d} > {bound_gpu_gone}"
            );
            assert!(!caps[who as usize].gpu);
            worst_gpu_gone = worst_gpu_gone.max(d);
            let best = best_of(&caps, survivors.iter().map(|&i| i as usize));
            best_survivor_won += u64::from(who as usize == best);

            // Once every survivor follows one host, the GPU node comes back; it must not
            // disturb that host. Then the CPU host crashes.
            let (host, term) = c.run_until_settled(500).unwrap();
            assert!(!caps[host].gpu);
            c.boot(g);
            let until = c.now + 60;
            while c.now < until {
                c.step();
            }
            assert_eq!(
                c.settled(),
                Some((host, term)),
                "seed {seed}: the restart caused churn"
            );
            c.crash(host);
            let gpu_only: BTreeSet<u32> = [g as u32].into();
            let (d, _) = c.run_until_elected(&gpu_only, 500).unwrap();
            assert!(
                d <= bound_cpu_gone,
                "seed {seed}: GPU took over after {d} > {bound_cpu_gone}"
            );
            worst_cpu_gone = worst_cpu_gone.max(d);
        }
    }
    first_times.sort_unstable();
    println!(
        "preference: GPU node hosted first in {gpu_first}/{runs} fault-free starts \
         (first election at tick median {} max {}); GPU host crash → CPU host within \
         max {worst_gpu_gone} ticks (best survivor in {best_survivor_won}/{runs}); CPU host crash \
         → GPU host within max {worst_cpu_gone} ticks",
        first_times[first_times.len() / 2],
        first_times[first_times.len() - 1],
    );
    // Every node hears the GPU node's join announcement (≤ dmax = 3 ticks) before any timer
    // can fire (≥ election_timeout_min = 10 ticks), and from then on it refuses every CPU
    // candidate (the GPU node refuses them as their better), so with no loss a CPU node cannot
    // collect a majority before the GPU node wins: the expected count is all runs.
    assert_eq!(gpu_first, runs);
    assert_eq!(best_survivor_won, runs);
}

/// Without announcements only the voters' own rank and what candidates reveal steer the choice.
#[test]
fn gpu_preference_without_announcements() {
    let cfg = ElectionConfig::default();
    let (mut runs, mut gpu_first, mut chance, mut var) = (0u64, 0u64, 0.0f64, 0.0f64);
    for n in 3..=5usize {
        for seed in 0..100u64 {
            let seed = seed + 7_000 * n as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (caps, g) = one_gpu_caps(&mut rng, n);
            let mut c = Cluster::new(seed, caps, cfg, SimNetConfig::default(), None);
            let all: BTreeSet<u32> = (0..n as u32).collect();
            let (_, first) = c.run_until_elected(&all, 300).unwrap();
            runs += 1;
            gpu_first += u64::from(first as usize == g);
            chance += 1.0 / n as f64;
            var += (1.0 / n as f64) * (1.0 - 1.0 / n as f64);
        }
    }
    println!(
        "preference without announcements: GPU node hosted first in {gpu_first}/{runs} \
         (uniform chance would give {chance:.0})"
    );
    // Refusals can only remove CPU winners, so the GPU node must do at least as well as a
    // uniform draw; allow 3 standard deviations of binomial noise below it.
    assert!(gpu_first as f64 >= chance - 3.0 * var.sqrt());
}

/// A node (even the GPU node) that lacks the last completed round never wins while a majority
/// holds it, under loss, duplication, partitions and crashes.
#[test]
fn out_of_date_nodes_never_win() {
    let mut elections = 0usize;
    let mut runs = 0;
    for n in 3..=5usize {
        for seed in 0..100u64 {
            let seed = seed + 20_000 * n as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (caps, g) = one_gpu_caps(&mut rng, n);
            // A bare majority holds round 7; the rest (always including the GPU node) hold 3.
            let mut ids: Vec<usize> = (0..n).filter(|&i| i != g).collect();
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.random_range(0..=i));
            }
            let high: BTreeSet<usize> = ids.into_iter().take(n / 2 + 1).collect();
            let net = SimNetConfig {
                delay_min: 1,
                delay_max: 4,
                loss: 0.1,
                duplicate: 0.1,
            };
            let mut c = Cluster::new(seed, caps, ElectionConfig::default(), net, Some(10));
            for i in 0..n {
                c.round[i] = if high.contains(&i) { 7 } else { 3 };
                let r = c.round[i];
                c.nodes[i].as_mut().unwrap().set_last_completed_round(r);
            }
            let chaos = Chaos {
                partition: 0.02,
                crash: 0.01,
                restart: 0.05,
                round_every: None,
            };
            for _ in 0..300 {
                c.chaos(&chaos);
                c.step();
            }
            for &(_, who, term) in &c.elected {
                assert!(
                    high.contains(&(who as usize)),
                    "seed {seed}: node {who} with round 3 led term {term}"
                );
            }
            elections += c.elected.len();
            runs += 1;
        }
    }
    println!("up-to-date: {runs} runs, {elections} elections, all won by round-7 holders");
    assert!(elections > 0);
}

/// A fault-free cluster of `n` random members once it follows one host: (cluster, rng, host,
/// term).
fn settled_cluster(seed: u64, n: usize) -> (Cluster, ChaCha8Rng, usize, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let caps = random_caps(&mut rng, n);
    let mut c = Cluster::new(
        seed,
        caps,
        ElectionConfig::default(),
        SimNetConfig::default(),
        Some(10),
    );
    let (host, term) = c.run_until_settled(1_000).unwrap();
    (c, rng, host, term)
}

/// Pre-vote: a member cut off from everyone never raises its term (no majority would vote for
/// it), so when the partition heals it rejoins the live host's term instead of deposing it.
#[test]
fn a_member_cut_off_and_healed_does_not_depose_the_host() {
    let n = 5usize;
    let mut runs = 0;
    for seed in 0..40u64 {
        let (mut c, mut rng, host, term) = settled_cluster(seed, n);
        let cut = (host + 1 + rng.random_range(0..n - 1)) % n;
        let rest: Vec<u32> = (0..n as u32).filter(|&i| i as usize != cut).collect();
        c.net.partition(vec![vec![cut as u32], rest]);
        for _ in 0..400 {
            c.step();
        }
        assert_eq!(
            c.node(cut).term(),
            term,
            "seed {seed}: the cut-off member raised its term"
        );
        c.net.heal();
        for _ in 0..100 {
            c.step();
        }
        assert_eq!(
            c.settled(),
            Some((host, term)),
            "seed {seed}: the host was deposed"
        );
        runs += 1;
    }
    println!("pre-vote: {runs} runs, an isolated member rejoined every time without an election");
}

/// Leader stickiness: a member that lies (a newer term in a heartbeat or a vote request, a
/// pre-vote, a term near the end of the space) cannot depose a live, reachable host.
#[test]
fn a_lying_member_cannot_depose_a_live_host() {
    let n = 5usize;
    for seed in 0..20u64 {
        let (mut c, _, host, term) = settled_cluster(seed, n);
        let liar = ((host + 1) % n) as u32;
        let lies = [
            ElectionMessage::Heartbeat {
                term: term + 50,
                leader: liar,
                capability: Capability::new(true, u64::MAX),
                last_completed_round: 1_000,
            },
            ElectionMessage::RequestVote {
                term: term + 50,
                candidate: liar,
                capability: Capability::new(true, u64::MAX),
                last_completed_round: 1_000,
            },
            ElectionMessage::PreVote {
                term: term + 1,
                candidate: liar,
                capability: Capability::new(true, u64::MAX),
                last_completed_round: 1_000,
            },
        ];
        for _ in 0..50 {
            for i in (0..n).filter(|&i| i as u32 != liar) {
                for lie in &lies {
                    let node = c.nodes[i].as_mut().unwrap();
                    let before = node.persistent();
                    let actions = node.handle(&liar, lie.clone()).unwrap();
                    assert!(
                        !actions.iter().any(|a| matches!(
                            a,
                            Action::Send {
                                msg: ElectionMessage::PreVoteReply { granted: true, .. }
                                    | ElectionMessage::Vote { granted: true, .. },
                                ..
                            }
                        )),
                        "seed {seed}: node {i} granted the liar {actions:?}"
                    );
                    c.apply(i, before, actions);
                }
                let node = c.nodes[i].as_mut().unwrap();
                let huge = ElectionMessage::Heartbeat {
                    term: u64::MAX - 1,
                    leader: liar,
                    capability: Capability::new(true, u64::MAX),
                    last_completed_round: 1_000,
                };
                assert!(matches!(
                    node.handle(&liar, huge),
                    Err(ElectionError::TermTooFar { .. })
                ));
            }
            c.step();
        }
        for _ in 0..100 {
            c.step();
        }
        assert_eq!(
            c.settled(),
            Some((host, term)),
            "seed {seed}: the liar deposed the host"
        );
    }
}
