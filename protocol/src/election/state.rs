//! The election state machine: roles, timers, vote rules and the driver-facing API.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::capability::{rank, Capability};
use super::messages::{Action, ElectionMessage, Persistent};
use super::{ElectionError, NodeId};

/// Timing of the election, all in ticks of the driver's fixed period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    /// A leader broadcasts a heartbeat this often; must be shorter than the election timeout.
    pub heartbeat_ticks: u64,
    /// Lower bound (inclusive) of the randomized election timeout.
    pub election_timeout_min: u64,
    /// Upper bound (exclusive) of the randomized part; also the leader's check-quorum window.
    pub election_timeout_max: u64,
    /// How long what we heard from a member counts as fresh for the preference rule.
    pub stale_ticks: u64,
    /// Extra election timeout per fresh member that outranks this node, so the best stands first.
    pub rank_step_ticks: u64,
    /// Messages whose term is more than this far ahead of ours are refused: a liar's huge term
    /// would otherwise exhaust the term space and stop every later election. Honest terms grow
    /// by one per election that a majority pre-approved, so none is ever this far ahead.
    pub max_term_jump: u64,
}

impl Default for ElectionConfig {
    /// Defaults for a 100 ms tick: heartbeat 200 ms, timeout 1–2 s, stale after 3 s.
    fn default() -> Self {
        Self {
            heartbeat_ticks: 2,
            election_timeout_min: 10,
            election_timeout_max: 20,
            stale_ticks: 30,
            rank_step_ticks: 5,
            max_term_jump: 1_000_000,
        }
    }
}

impl ElectionConfig {
    /// Checks the timings can work: heartbeats faster than timeouts and a non-empty timeout range.
    pub fn validate(&self) -> Result<(), ElectionError> {
        if self.heartbeat_ticks == 0 {
            return Err(ElectionError::InvalidConfig(
                "heartbeat_ticks must be at least 1",
            ));
        }
        if self.election_timeout_min <= self.heartbeat_ticks {
            return Err(ElectionError::InvalidConfig(
                "election_timeout_min must exceed heartbeat_ticks",
            ));
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(ElectionError::InvalidConfig(
                "election_timeout_max must exceed election_timeout_min",
            ));
        }
        if self.max_term_jump == 0 {
            return Err(ElectionError::InvalidConfig(
                "max_term_jump must be at least 1",
            ));
        }
        Ok(())
    }

    /// How long a heartbeat keeps a follower sure its host is live (leader stickiness): half the
    /// minimum election timeout, and more than one heartbeat period. Shorter than the timeout,
    /// so when one follower's timer fires the others, who heard the same last heartbeat within
    /// a network delay of it, have already let it lapse and grant its pre-vote.
    pub fn lease_ticks(&self) -> u64 {
        (self.election_timeout_min / 2).max(self.heartbeat_ticks + 1)
    }

    /// Longest election timeout a node of a `members`-node cluster draws (all others outrank it).
    pub fn max_election_timeout(&self, members: usize) -> u64 {
        let others = members.saturating_sub(1) as u64;
        (self.election_timeout_max - 1).saturating_add(others.saturating_mul(self.rank_step_ticks))
    }
}

/// A node's role in its current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one); asks for pre-votes when its election timer fires.
    Follower,
    /// Asking whether a majority would vote for it in the next term (pre-vote, Raft §9.6),
    /// still in its old term: it stands only if they would.
    PreCandidate,
    /// Asked for votes in the current term and is counting them.
    Candidate,
    /// Hosts the current term and sends heartbeats.
    Leader,
}

/// What this node knows of a peer, for the `peers` CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus<N> {
    /// The peer.
    pub id: N,
    /// Its last announced capability.
    pub capability: Capability,
    /// The highest last completed round it has announced.
    pub last_completed_round: u64,
    /// Ticks since this node last heard from or of it.
    pub ticks_since_heard: u64,
}

#[derive(Debug, Clone)]
struct PeerInfo {
    capability: Capability,
    last_completed_round: u64,
    last_heard: u64,
}

#[derive(Debug, Clone)]
struct Snapshot<N> {
    term: u64,
    voted_for: Option<N>,
    role: Role,
    leader: Option<N>,
}

/// Raft leader election with capability preference, driven by ticks and messages (sans-IO).
#[derive(Debug)]
pub struct Election<N: NodeId> {
    me: N,
    capability: Capability,
    members: BTreeSet<N>,
    cfg: ElectionConfig,
    rng: ChaCha8Rng,
    term: u64,
    voted_for: Option<N>,
    role: Role,
    leader: Option<N>,
    last_completed_round: u64,
    now: u64,
    election_deadline: u64,
    next_heartbeat: u64,
    votes: BTreeSet<N>,
    prevotes: BTreeSet<N>,
    /// Tick at which this node last heard a heartbeat from the leader of its term.
    leader_contact: u64,
    acks: BTreeMap<N, u64>,
    peers: BTreeMap<N, PeerInfo>,
}

impl<N: NodeId> Election<N> {
    /// Builds a follower from its persisted state; `members`: the fixed membership, with `me`.
    pub fn new(
        me: N,
        capability: Capability,
        members: Vec<N>,
        persistent: Persistent<N>,
        cfg: ElectionConfig,
        seed: u64,
    ) -> Result<Self, ElectionError> {
        cfg.validate()?;
        if members.is_empty() {
            return Err(ElectionError::EmptyMembership);
        }
        let members: BTreeSet<N> = members.into_iter().collect();
        if !members.contains(&me) {
            return Err(ElectionError::SelfNotAMember);
        }
        let mut election = Self {
            me,
            capability,
            members,
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            term: persistent.term,
            voted_for: persistent.voted_for,
            role: Role::Follower,
            leader: None,
            last_completed_round: 0,
            now: 0,
            election_deadline: 0,
            next_heartbeat: 0,
            votes: BTreeSet::new(),
            prevotes: BTreeSet::new(),
            leader_contact: 0,
            acks: BTreeMap::new(),
            peers: BTreeMap::new(),
        };
        election.reset_election_timer();
        Ok(election)
    }

    /// Advances logical time by one tick: fires the election timer, heartbeats and check-quorum.
    pub fn tick(&mut self) -> Vec<Action<N>> {
        let before = self.snapshot();
        self.now = self.now.saturating_add(1);
        let mut out = Vec::new();
        match self.role {
            Role::Leader => {
                if !self.has_quorum_contact() {
                    self.role = Role::Follower;
                    self.leader = None;
                    self.acks.clear();
                    self.reset_election_timer();
                } else if self.now >= self.next_heartbeat {
                    if self.members.len() > 1 {
                        out.push(Action::Broadcast(self.heartbeat()));
                    }
                    self.next_heartbeat = self.now.saturating_add(self.cfg.heartbeat_ticks);
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if self.now >= self.election_deadline {
                    self.start_pre_vote(&mut out);
                }
            }
        }
        self.finish(before, out)
    }

    /// Handles one message from member `from` (as authenticated by the transport).
    pub fn handle(
        &mut self,
        from: &N,
        msg: ElectionMessage<N>,
    ) -> Result<Vec<Action<N>>, ElectionError> {
        self.validate(from, &msg)?;
        if let ElectionMessage::Heartbeat { term, .. } = &msg {
            if *term == self.term && self.role == Role::Leader {
                return Err(ElectionError::ConflictingLeader { term: *term });
            }
        }
        let before = self.snapshot();
        self.learn_from(from, &msg);
        let pre_vote = matches!(
            msg,
            ElectionMessage::PreVote { .. } | ElectionMessage::PreVoteReply { .. }
        );
        if msg.term() > self.term && !pre_vote {
            if self.in_lease() {
                // Leader stickiness (Ongaro's thesis §4.2.3): while this node hears a live host,
                // a newer term is either a member that cannot win or a liar; ignoring a message
                // is always safe, and it keeps a reachable host from being deposed.
                return Ok(self.finish(before, Vec::new()));
            }
            self.enter_term(msg.term());
        }
        let mut out = Vec::new();
        match msg {
            ElectionMessage::PreVote {
                term,
                candidate,
                capability,
                last_completed_round,
            } => {
                // Granted as a vote would be in `term`, but nothing is recorded: a pre-vote
                // binds no one, so it needs no term, no `voted_for` and no persistence.
                let granted = term > self.term
                    && !self.in_lease()
                    && last_completed_round >= self.last_completed_round
                    && !self.better_member_fresh(&candidate, &capability, last_completed_round);
                out.push(Action::Send {
                    to: candidate,
                    msg: ElectionMessage::PreVoteReply {
                        term,
                        voter: self.me.clone(),
                        granted,
                    },
                });
            }
            ElectionMessage::PreVoteReply {
                term,
                voter,
                granted,
            } => {
                if granted
                    && self.role == Role::PreCandidate
                    && Some(term) == self.term.checked_add(1)
                {
                    self.prevotes.insert(voter);
                    if self.prevotes.len() >= self.majority() {
                        self.start_election(&mut out);
                    }
                }
            }
            ElectionMessage::RequestVote {
                term,
                candidate,
                capability,
                last_completed_round,
            } => {
                let granted = term == self.term
                    && self.consider_vote(&candidate, &capability, last_completed_round);
                // A rival stood in our term and took its own vote, perhaps the one we need:
                // if we outrank it, stand again now rather than after a timeout (a split vote).
                // Starting an election is always safe; only the better rival does it.
                let split = term == self.term
                    && self.role == Role::Candidate
                    && self.outranks(&candidate, &capability, last_completed_round);
                out.push(Action::Send {
                    to: candidate,
                    msg: ElectionMessage::Vote {
                        term: self.term,
                        voter: self.me.clone(),
                        granted,
                    },
                });
                if split {
                    self.start_election(&mut out);
                }
            }
            ElectionMessage::Vote {
                term,
                voter,
                granted,
            } => {
                if term == self.term && self.role == Role::Candidate && granted {
                    self.votes.insert(voter);
                    if self.votes.len() >= self.majority() {
                        self.become_leader(&mut out);
                    }
                }
            }
            ElectionMessage::Heartbeat { term, leader, .. } => {
                if term == self.term {
                    self.role = Role::Follower;
                    self.votes.clear();
                    self.prevotes.clear();
                    self.leader = Some(leader.clone());
                    self.leader_contact = self.now;
                    self.reset_election_timer();
                }
                // An ack in our (possibly newer) term also tells a stale leader to step down.
                out.push(Action::Send {
                    to: leader,
                    msg: self.heartbeat_ack(),
                });
            }
            ElectionMessage::HeartbeatAck { term, from, .. } => {
                if term == self.term && self.role == Role::Leader {
                    self.acks.insert(from, self.now);
                }
            }
        }
        Ok(self.finish(before, out))
    }

    /// Records a peer's capability and round heard of by other means (e.g. a gossip announcement).
    pub fn observe(
        &mut self,
        peer: &N,
        capability: Capability,
        last_completed_round: u64,
    ) -> Result<(), ElectionError> {
        if !self.members.contains(peer) {
            return Err(ElectionError::NotAMember);
        }
        if *peer == self.me {
            return Err(ElectionError::FromSelf);
        }
        self.record_peer(peer, capability, last_completed_round);
        Ok(())
    }

    /// Sets the last FL round whose generator checkpoint this node holds (up-to-date rule input).
    pub fn set_last_completed_round(&mut self, round: u64) {
        self.last_completed_round = round;
    }

    /// The last FL round whose checkpoint this node holds, as last set by the driver.
    pub fn last_completed_round(&self) -> u64 {
        self.last_completed_round
    }

    /// The node's current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The node's role in its current term.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The host of the current term as far as this node knows.
    pub fn leader(&self) -> Option<&N> {
        self.leader.as_ref()
    }

    /// Whether this node hosts the current term.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// This node's id.
    pub fn me(&self) -> &N {
        &self.me
    }

    /// This node's own capability.
    pub fn capability(&self) -> Capability {
        self.capability
    }

    /// The fixed membership, including this node.
    pub fn members(&self) -> &BTreeSet<N> {
        &self.members
    }

    /// Whom this node voted for in the current term.
    pub fn voted_for(&self) -> Option<&N> {
        self.voted_for.as_ref()
    }

    /// The state a restart must resume from (the same as the last `Persist` action).
    pub fn persistent(&self) -> Persistent<N> {
        Persistent {
            term: self.term,
            voted_for: self.voted_for.clone(),
        }
    }

    /// Ticks since construction (logical time).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of members (this node included) that make a majority.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Every peer heard from or of, by id, with how long ago; for the `peers` CLI.
    pub fn known_peers(&self) -> Vec<PeerStatus<N>> {
        self.peers
            .iter()
            .map(|(id, p)| PeerStatus {
                id: id.clone(),
                capability: p.capability,
                last_completed_round: p.last_completed_round,
                ticks_since_heard: self.now.saturating_sub(p.last_heard),
            })
            .collect()
    }

    fn validate(&self, from: &N, msg: &ElectionMessage<N>) -> Result<(), ElectionError> {
        if !self.members.contains(from) {
            return Err(ElectionError::NotAMember);
        }
        if *from == self.me {
            return Err(ElectionError::FromSelf);
        }
        if msg.claimed_sender() != from {
            return Err(ElectionError::SenderMismatch);
        }
        if msg.term() == 0 {
            return Err(ElectionError::ZeroTerm);
        }
        if msg.term() > self.term.saturating_add(self.cfg.max_term_jump) {
            return Err(ElectionError::TermTooFar {
                term: msg.term(),
                current: self.term,
            });
        }
        Ok(())
    }

    fn snapshot(&self) -> Snapshot<N> {
        Snapshot {
            term: self.term,
            voted_for: self.voted_for.clone(),
            role: self.role,
            leader: self.leader.clone(),
        }
    }

    /// Prepends Persist and the role/leader notifications implied by the change since `before`.
    fn finish(&self, before: Snapshot<N>, out: Vec<Action<N>>) -> Vec<Action<N>> {
        let mut actions = Vec::with_capacity(out.len() + 3);
        if self.term != before.term || self.voted_for != before.voted_for {
            actions.push(Action::Persist(self.persistent()));
        }
        let was_leader = before.role == Role::Leader;
        let is_leader = self.role == Role::Leader;
        if was_leader && (!is_leader || self.term != before.term) {
            actions.push(Action::SteppedDown { term: before.term });
        }
        if is_leader && (!was_leader || self.term != before.term) {
            actions.push(Action::BecameLeader { term: self.term });
        }
        if self.leader != before.leader || (self.term != before.term && self.leader.is_some()) {
            actions.push(Action::LeaderChanged {
                term: self.term,
                leader: self.leader.clone(),
            });
        }
        actions.extend(out);
        actions
    }

    fn learn_from(&mut self, from: &N, msg: &ElectionMessage<N>) {
        match msg.advertised() {
            Some((capability, round)) => self.record_peer(from, capability, round),
            None => {
                if let Some(p) = self.peers.get_mut(from) {
                    p.last_heard = self.now;
                }
            }
        }
    }

    fn record_peer(&mut self, peer: &N, capability: Capability, last_completed_round: u64) {
        let now = self.now;
        let entry = self.peers.entry(peer.clone()).or_insert(PeerInfo {
            capability,
            last_completed_round,
            last_heard: now,
        });
        entry.capability = capability;
        // Rounds only grow; a reordered old message must not lower what we know.
        entry.last_completed_round = entry.last_completed_round.max(last_completed_round);
        entry.last_heard = now;
    }

    /// Moves to a newer term as a follower with no vote and no known leader (Raft §5.1).
    fn enter_term(&mut self, term: u64) {
        let was_leader = self.role == Role::Leader;
        self.term = term;
        self.voted_for = None;
        self.role = Role::Follower;
        self.leader = None;
        self.votes.clear();
        self.prevotes.clear();
        self.acks.clear();
        if was_leader {
            self.reset_election_timer();
        }
    }

    /// Vote rules for a RequestVote of the current term; records and returns the decision.
    fn consider_vote(&mut self, candidate: &N, capability: &Capability, round: u64) -> bool {
        match &self.voted_for {
            Some(v) if v == candidate => return true, // a duplicate request: same answer
            Some(_) => return false,                  // one vote per term
            None => {}
        }
        if round < self.last_completed_round {
            return false; // up-to-date rule (§5.4.1)
        }
        if self.better_member_fresh(candidate, capability, round) {
            return false; // capability preference: wait for the better member
        }
        self.voted_for = Some(candidate.clone());
        self.reset_election_timer();
        true
    }

    /// Whether this node ranks above `candidate` and holds at least its round.
    fn outranks(&self, candidate: &N, capability: &Capability, round: u64) -> bool {
        self.last_completed_round >= round
            && rank((&self.capability, &self.me), (capability, candidate)) == Ordering::Greater
    }

    /// Whether some member other than `candidate` (this node included) outranks it, holds at
    /// least its round, and was heard from within `stale_ticks`.
    fn better_member_fresh(&self, candidate: &N, capability: &Capability, round: u64) -> bool {
        let cand = (capability, candidate);
        if self.outranks(candidate, capability, round) {
            return true;
        }
        self.peers.iter().any(|(id, p)| {
            id != candidate
                && self.is_fresh(p)
                && p.last_completed_round >= round
                && rank((&p.capability, id), cand) == Ordering::Greater
        })
    }

    fn is_fresh(&self, p: &PeerInfo) -> bool {
        self.now.saturating_sub(p.last_heard) <= self.cfg.stale_ticks
    }

    /// Fresh members (other than the current leader) that outrank us and hold at least our round.
    fn rank_position(&self) -> u64 {
        let me = (&self.capability, &self.me);
        self.peers
            .iter()
            .filter(|(id, p)| {
                Some(*id) != self.leader.as_ref()
                    && self.is_fresh(p)
                    && p.last_completed_round >= self.last_completed_round
                    && rank((&p.capability, *id), me) == Ordering::Greater
            })
            .count() as u64
    }

    fn reset_election_timer(&mut self) {
        let base = self
            .rng
            .random_range(self.cfg.election_timeout_min..self.cfg.election_timeout_max);
        let stagger = self
            .rank_position()
            .saturating_mul(self.cfg.rank_step_ticks);
        self.election_deadline = self.now.saturating_add(base).saturating_add(stagger);
    }

    /// Whether this node hears a live host: it is one, or it follows one that sent a heartbeat
    /// within [`ElectionConfig::lease_ticks`].
    fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => true,
            Role::Follower => {
                self.leader.is_some()
                    && self.now.saturating_sub(self.leader_contact) < self.cfg.lease_ticks()
            }
            Role::PreCandidate | Role::Candidate => false,
        }
    }

    /// Asks every member whether it would vote for this node in the next term (Raft §9.6);
    /// the term moves only once a majority says yes, in [`Self::start_election`].
    fn start_pre_vote(&mut self, out: &mut Vec<Action<N>>) {
        let Some(term) = self.term.checked_add(1) else {
            // Terms are exhausted: standing again would reuse a term we may have voted in.
            self.reset_election_timer();
            return;
        };
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.prevotes.clear();
        self.prevotes.insert(self.me.clone());
        self.reset_election_timer();
        if self.prevotes.len() >= self.majority() {
            self.start_election(out);
        } else {
            out.push(Action::Broadcast(ElectionMessage::PreVote {
                term,
                candidate: self.me.clone(),
                capability: self.capability,
                last_completed_round: self.last_completed_round,
            }));
        }
    }

    fn start_election(&mut self, out: &mut Vec<Action<N>>) {
        let Some(term) = self.term.checked_add(1) else {
            // Terms are exhausted: standing again would reuse a term we may have voted in.
            self.reset_election_timer();
            return;
        };
        self.term = term;
        self.voted_for = Some(self.me.clone());
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.prevotes.clear();
        self.votes.insert(self.me.clone());
        self.reset_election_timer();
        if self.votes.len() >= self.majority() {
            self.become_leader(out);
        } else {
            out.push(Action::Broadcast(ElectionMessage::RequestVote {
                term: self.term,
                candidate: self.me.clone(),
                capability: self.capability,
                last_completed_round: self.last_completed_round,
            }));
        }
    }

    fn become_leader(&mut self, out: &mut Vec<Action<N>>) {
        self.role = Role::Leader;
        self.leader = Some(self.me.clone());
        self.votes.clear();
        let now = self.now;
        // Every peer gets a full check-quorum window from the moment we win.
        self.acks = self
            .members
            .iter()
            .filter(|m| **m != self.me)
            .map(|m| (m.clone(), now))
            .collect();
        self.next_heartbeat = now.saturating_add(self.cfg.heartbeat_ticks);
        if self.members.len() > 1 {
            out.push(Action::Broadcast(self.heartbeat()));
        }
    }

    /// Check-quorum: a majority (counting us) acked within one `election_timeout_max`.
    fn has_quorum_contact(&self) -> bool {
        let window = self.cfg.election_timeout_max;
        let recent = self
            .acks
            .values()
            .filter(|t| self.now.saturating_sub(**t) <= window)
            .count();
        recent + 1 >= self.majority()
    }

    fn heartbeat(&self) -> ElectionMessage<N> {
        ElectionMessage::Heartbeat {
            term: self.term,
            leader: self.me.clone(),
            capability: self.capability,
            last_completed_round: self.last_completed_round,
        }
    }

    fn heartbeat_ack(&self) -> ElectionMessage<N> {
        ElectionMessage::HeartbeatAck {
            term: self.term,
            from: self.me.clone(),
            capability: self.capability,
            last_completed_round: self.last_completed_round,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Msg = ElectionMessage<u32>;

    fn cpu() -> Capability {
        Capability::new(false, 8_000)
    }

    fn gpu() -> Capability {
        Capability::new(true, 8_000)
    }

    fn node_with(me: u32, n: u32, cap: Capability, p: Persistent<u32>) -> Election<u32> {
        let members = (0..n).collect();
        Election::new(
            me,
            cap,
            members,
            p,
            ElectionConfig::default(),
            1000 + u64::from(me),
        )
        .unwrap()
    }

    /// Ranks below `cpu()`, so the voter's own rank never blocks the candidates these tests send.
    fn low() -> Capability {
        Capability::new(false, 4_000)
    }

    fn node(me: u32, n: u32) -> Election<u32> {
        node_with(me, n, low(), Persistent::default())
    }

    /// Ticks until the machine returns something (bounded).
    fn tick_until_actions(e: &mut Election<u32>) -> Vec<Action<u32>> {
        for _ in 0..1_000 {
            let a = e.tick();
            if !a.is_empty() {
                return a;
            }
        }
        panic!("no action within 1000 ticks");
    }

    /// Ticks until `e` asks for pre-votes, then grants them from the other members in id order
    /// until it stands; returns the actions of the grant that made it stand.
    fn stand(e: &mut Election<u32>) -> Vec<Action<u32>> {
        let first = tick_until_actions(e);
        if e.role() != Role::PreCandidate {
            return first; // a lone member stands at once
        }
        let term = e.term() + 1;
        let others: Vec<u32> = e
            .members()
            .iter()
            .copied()
            .filter(|m| m != e.me())
            .collect();
        for v in others {
            let a = e.handle(&v, pre_vote_reply(term, v, true)).unwrap();
            if e.role() != Role::PreCandidate {
                return a;
            }
        }
        panic!("no majority of pre-votes stood the node");
    }

    fn pre_vote(term: u64, candidate: u32, capability: Capability, round: u64) -> Msg {
        ElectionMessage::PreVote {
            term,
            candidate,
            capability,
            last_completed_round: round,
        }
    }

    fn pre_vote_reply(term: u64, voter: u32, granted: bool) -> Msg {
        ElectionMessage::PreVoteReply {
            term,
            voter,
            granted,
        }
    }

    /// The (term, granted) of the PreVoteReply in `actions`.
    fn pre_vote_answer(actions: &[Action<u32>]) -> Option<(u64, bool)> {
        actions.iter().find_map(|a| match a {
            Action::Send {
                msg: ElectionMessage::PreVoteReply { term, granted, .. },
                ..
            } => Some((*term, *granted)),
            _ => None,
        })
    }

    fn request_vote(term: u64, candidate: u32, capability: Capability, round: u64) -> Msg {
        ElectionMessage::RequestVote {
            term,
            candidate,
            capability,
            last_completed_round: round,
        }
    }

    fn vote(term: u64, voter: u32, granted: bool) -> Msg {
        ElectionMessage::Vote {
            term,
            voter,
            granted,
        }
    }

    fn heartbeat(term: u64, leader: u32) -> Msg {
        ElectionMessage::Heartbeat {
            term,
            leader,
            capability: cpu(),
            last_completed_round: 0,
        }
    }

    fn ack(term: u64, from: u32) -> Msg {
        ElectionMessage::HeartbeatAck {
            term,
            from,
            capability: cpu(),
            last_completed_round: 0,
        }
    }

    /// The (term, granted) of the Vote in `actions`.
    fn vote_reply(actions: &[Action<u32>]) -> (u64, bool) {
        let votes: Vec<(u64, bool)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    msg: ElectionMessage::Vote { term, granted, .. },
                    ..
                } => Some((*term, *granted)),
                _ => None,
            })
            .collect();
        assert_eq!(votes.len(), 1, "{actions:?}");
        votes[0]
    }

    fn persisted(actions: &[Action<u32>]) -> Option<Persistent<u32>> {
        match actions.first() {
            Some(Action::Persist(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// Node 0 of `n` elected leader of term 1 with votes from 1..majority.
    fn leader_of(n: u32) -> Election<u32> {
        let mut e = node(0, n);
        stand(&mut e);
        assert_eq!(e.role(), Role::Candidate);
        for v in 1..e.majority() as u32 {
            e.handle(&v, vote(1, v, true)).unwrap();
        }
        assert!(e.is_leader());
        e
    }

    #[test]
    fn follower_times_out_into_pre_vote_then_stands_persisting_before_request_vote() {
        let mut e = node(0, 3);
        let mut ticks = 0;
        let actions = loop {
            ticks += 1;
            let a = e.tick();
            if !a.is_empty() {
                break a;
            }
        };
        let cfg = ElectionConfig::default();
        assert!((cfg.election_timeout_min..cfg.election_timeout_max).contains(&ticks));
        // First it only asks: no term change, nothing to persist.
        assert_eq!(e.role(), Role::PreCandidate);
        assert_eq!(e.term(), 0);
        assert!(
            matches!(
                actions.as_slice(),
                [Action::Broadcast(ElectionMessage::PreVote {
                    term: 1,
                    candidate: 0,
                    ..
                })]
            ),
            "{actions:?}"
        );
        // A refusal and a reply about another term count for nothing.
        e.handle(&1, pre_vote_reply(1, 1, false)).unwrap();
        e.handle(&2, pre_vote_reply(2, 2, true)).unwrap();
        assert_eq!((e.role(), e.term()), (Role::PreCandidate, 0));
        // One grant makes a majority of three with its own: now it stands.
        let actions = e.handle(&1, pre_vote_reply(1, 1, true)).unwrap();
        assert_eq!(e.role(), Role::Candidate);
        assert_eq!(e.term(), 1);
        assert_eq!(
            actions[0],
            Action::Persist(Persistent {
                term: 1,
                voted_for: Some(0)
            })
        );
        let rv_at = actions
            .iter()
            .position(|a| {
                matches!(
                    a,
                    Action::Broadcast(ElectionMessage::RequestVote {
                        term: 1,
                        candidate: 0,
                        ..
                    })
                )
            })
            .unwrap();
        assert!(rv_at > 0);
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, Action::Persist(_)))
                .count(),
            1
        );
    }

    #[test]
    fn pre_votes_bind_nobody_and_are_refused_while_a_host_is_heard() {
        let mut e = node(1, 3);
        e.handle(&0, heartbeat(1, 0)).unwrap();
        // Following a live host: a pre-vote is refused and a real vote request ignored.
        let a = e.handle(&2, pre_vote(2, 2, gpu(), 0)).unwrap();
        assert_eq!(pre_vote_answer(&a), Some((2, false)));
        assert!(e
            .handle(&2, request_vote(2, 2, gpu(), 0))
            .unwrap()
            .is_empty());
        assert_eq!((e.term(), e.voted_for(), e.leader()), (1, None, Some(&0)));
        // (2 is a GPU node, so the preference rule never refuses it here.)
        // Once the host has been silent for the lease, the pre-vote is granted,
        // and still nothing changes: no term, no vote, nothing to persist.
        for _ in 0..ElectionConfig::default().lease_ticks() {
            e.tick();
        }
        let a = e.handle(&2, pre_vote(2, 2, gpu(), 0)).unwrap();
        assert_eq!(pre_vote_answer(&a), Some((2, true)));
        assert_eq!(persisted(&a), None);
        assert_eq!((e.term(), e.voted_for()), (1, None));
        // Refused for a term we are already in, or for a candidate behind our round.
        let a = e.handle(&2, pre_vote(1, 2, gpu(), 0)).unwrap();
        assert_eq!(pre_vote_answer(&a), Some((1, false)));
        e.set_last_completed_round(3);
        let a = e.handle(&2, pre_vote(2, 2, gpu(), 2)).unwrap();
        assert_eq!(pre_vote_answer(&a), Some((2, false)));
        // A granted pre-vote does not stop the voter granting another member too.
        let a = e.handle(&0, pre_vote(2, 0, cpu(), 3)).unwrap();
        assert_eq!(pre_vote_answer(&a), Some((2, true)));
    }

    #[test]
    fn a_pre_candidate_without_a_majority_never_raises_its_term() {
        let mut e = node(0, 3);
        for _ in 0..1_000 {
            e.tick();
            e.handle(&1, pre_vote_reply(e.term() + 1, 1, false))
                .unwrap();
        }
        assert_eq!(e.term(), 0, "refused pre-votes leave the term where it was");
        assert_eq!(e.role(), Role::PreCandidate);
        // A heartbeat of its own term makes it a follower again.
        e.handle(&2, heartbeat(1, 2)).unwrap();
        assert_eq!(e.term(), 1);
        assert_eq!(e.role(), Role::Follower);
    }

    #[test]
    fn terms_too_far_ahead_are_refused_and_change_nothing() {
        let mut e = node(0, 3);
        let far = ElectionConfig::default().max_term_jump + 1;
        for msg in [
            heartbeat(far, 1),
            request_vote(far, 1, gpu(), 9),
            pre_vote(u64::MAX, 1, gpu(), 9),
            vote(u64::MAX, 1, true),
        ] {
            assert!(matches!(
                e.handle(&1, msg),
                Err(ElectionError::TermTooFar { current: 0, .. })
            ));
        }
        assert_eq!((e.term(), e.leader()), (0, None));
        // Just inside the bound is an ordinary newer term.
        e.handle(&1, heartbeat(far - 1, 1)).unwrap();
        assert_eq!(e.term(), far - 1);
    }

    #[test]
    fn vote_is_granted_once_per_term_and_persisted() {
        let mut e = node(0, 3);
        let a = e.handle(&1, request_vote(1, 1, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (1, true));
        assert_eq!(
            persisted(&a),
            Some(Persistent {
                term: 1,
                voted_for: Some(1)
            })
        );
        // Another candidate in the same term: refused, nothing to persist.
        let a = e.handle(&2, request_vote(1, 2, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (1, false));
        assert_eq!(persisted(&a), None);
        // The same candidate asking again (a duplicate): the same answer.
        let a = e.handle(&1, request_vote(1, 1, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (1, true));
        assert_eq!(persisted(&a), None);
        // A new term frees the vote (2 outranks 1 here, else fresh 1 would block it).
        let a = e.handle(&2, request_vote(2, 2, gpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (2, true));
        assert_eq!(
            persisted(&a),
            Some(Persistent {
                term: 2,
                voted_for: Some(2)
            })
        );
    }

    #[test]
    fn stale_term_request_is_refused_with_the_newer_term() {
        let p = Persistent {
            term: 3,
            voted_for: None,
        };
        let mut e = node_with(0, 3, low(), p);
        let a = e.handle(&1, request_vote(2, 1, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (3, false));
        assert_eq!(persisted(&a), None);
        assert_eq!(e.voted_for(), None);
        // A stale heartbeat is answered with our term so that leader steps down.
        let a = e.handle(&1, heartbeat(2, 1)).unwrap();
        assert!(matches!(
            a.as_slice(),
            [Action::Send {
                to: 1,
                msg: ElectionMessage::HeartbeatAck { term: 3, .. }
            }]
        ));
        assert_eq!(e.leader(), None);
    }

    #[test]
    fn out_of_date_candidate_is_refused() {
        let mut e = node(0, 3);
        e.set_last_completed_round(5);
        let a = e.handle(&1, request_vote(1, 1, cpu(), 4)).unwrap();
        assert_eq!(vote_reply(&a), (1, false));
        // It still moved to the newer term (Raft §5.1), without a vote.
        assert_eq!(
            e.persistent(),
            Persistent {
                term: 1,
                voted_for: None
            }
        );
        let a = e.handle(&2, request_vote(1, 2, cpu(), 5)).unwrap();
        assert_eq!(vote_reply(&a), (1, true));
    }

    #[test]
    fn lower_capability_candidate_waits_while_a_better_member_is_fresh() {
        let mut e = node(0, 4);
        e.observe(&3, gpu(), 0).unwrap();
        let a = e.handle(&1, request_vote(1, 1, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (1, false), "GPU member 3 is fresh");
        // The better member itself is granted.
        let a = e.handle(&3, request_vote(2, 3, gpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (2, true));
        // Once 3 goes stale (it died), the CPU candidate gets the vote in a later term.
        for _ in 0..=ElectionConfig::default().stale_ticks {
            e.tick();
        }
        let a = e.handle(&1, request_vote(5, 1, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (5, true));
    }

    #[test]
    fn better_member_with_an_older_round_does_not_block() {
        let mut e = node(0, 4);
        e.observe(&3, gpu(), 2).unwrap();
        let a = e.handle(&1, request_vote(1, 1, cpu(), 3)).unwrap();
        assert_eq!(vote_reply(&a), (1, true));
    }

    #[test]
    fn voter_refuses_candidates_ranked_below_itself() {
        let mut e = node_with(0, 3, gpu(), Persistent::default());
        let a = e.handle(&1, request_vote(1, 1, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (1, false));
        // ...unless the candidate holds a newer round than this node.
        let a = e.handle(&1, request_vote(2, 1, cpu(), 1)).unwrap();
        assert_eq!(vote_reply(&a), (2, true));
    }

    #[test]
    fn better_candidate_breaks_a_split_vote_at_once() {
        let mut e = node_with(0, 3, gpu(), Persistent::default());
        stand(&mut e);
        assert_eq!(e.role(), Role::Candidate);
        // A worse rival stood in the same term: refuse it and stand again in term 2.
        let a = e.handle(&1, request_vote(1, 1, cpu(), 0)).unwrap();
        assert_eq!(
            a[0],
            Action::Persist(Persistent {
                term: 2,
                voted_for: Some(0)
            })
        );
        assert_eq!(vote_reply(&a), (1, false));
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Broadcast(ElectionMessage::RequestVote { term: 2, .. })
        )));
        assert_eq!((e.term(), e.role()), (2, Role::Candidate));
        // A better rival in the same term: refuse (vote taken), but do not race it.
        let mut e = node(0, 3);
        stand(&mut e);
        let a = e.handle(&2, request_vote(1, 2, gpu(), 0)).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(vote_reply(&a), (1, false));
        assert_eq!((e.term(), e.role()), (1, Role::Candidate));
    }

    #[test]
    fn a_leader_ignores_newer_terms_until_check_quorum_ends_it() {
        // A leader hears itself, so it is in lease: newer terms are ignored (stickiness) and
        // check-quorum is what ends a stale leader. Once it has lost its quorum it stepped down
        // as a follower with no leader, and a newer term is adopted.
        let mut e = leader_of(3);
        assert!(e.handle(&2, heartbeat(4, 2)).unwrap().is_empty());
        assert!(e.handle(&1, vote(7, 1, false)).unwrap().is_empty());
        assert!(e
            .handle(&1, request_vote(9, 1, gpu(), 5))
            .unwrap()
            .is_empty());
        assert_eq!((e.term(), e.role()), (1, Role::Leader));
        let mut e = leader_of(3);
        while e.is_leader() {
            e.tick();
        }
        let a = e.handle(&2, heartbeat(4, 2)).unwrap();
        assert_eq!(
            a[0],
            Action::Persist(Persistent {
                term: 4,
                voted_for: None
            })
        );
        assert!(a.contains(&Action::LeaderChanged {
            term: 4,
            leader: Some(2)
        }));
        assert_eq!(e.role(), Role::Follower);
        assert_eq!(e.leader(), Some(&2));
        // Following a live host of term 4 now: term 7 waits until 2 has been silent a lease.
        assert!(e.handle(&1, vote(7, 1, false)).unwrap().is_empty());
        for _ in 0..ElectionConfig::default().lease_ticks() {
            e.tick();
        }
        let a = e.handle(&1, vote(7, 1, false)).unwrap();
        assert_eq!(
            a[0],
            Action::Persist(Persistent {
                term: 7,
                voted_for: None
            })
        );
        assert!(a.contains(&Action::LeaderChanged {
            term: 7,
            leader: None
        }));
        assert_eq!(e.term(), 7);
        assert!(!e.is_leader());
    }

    #[test]
    fn leader_without_quorum_acks_steps_down() {
        let window = ElectionConfig::default().election_timeout_max;
        // Acks from one peer of three keep a majority (2 of 3).
        let mut e = leader_of(3);
        for _ in 0..10 * window {
            e.tick();
            e.handle(&1, ack(1, 1)).unwrap();
        }
        assert!(e.is_leader());
        // No acks: stands down after one window.
        let mut e = leader_of(3);
        let mut stepped = None;
        for t in 1..=window + 1 {
            let a = e.tick();
            if a.contains(&Action::SteppedDown { term: 1 }) {
                assert!(a.contains(&Action::LeaderChanged {
                    term: 1,
                    leader: None
                }));
                stepped = Some(t);
                break;
            }
        }
        assert_eq!(stepped, Some(window + 1));
        assert_eq!(e.role(), Role::Follower);
        assert_eq!(e.term(), 1, "check-quorum keeps the term");
        // Acks of an old term do not count.
        let mut e = leader_of(5);
        for _ in 0..=window {
            e.tick();
            e.handle(&1, ack(1, 1)).unwrap();
        }
        assert!(!e.is_leader(), "one ack of five is no majority");
    }

    #[test]
    fn leader_heartbeats_every_heartbeat_ticks() {
        let mut e = leader_of(3);
        let hb = ElectionConfig::default().heartbeat_ticks;
        let mut beats = Vec::new();
        for t in 1..=20 {
            let a = e.tick();
            e.handle(&1, ack(1, 1)).unwrap();
            if a.iter().any(|x| {
                matches!(
                    x,
                    Action::Broadcast(ElectionMessage::Heartbeat {
                        term: 1,
                        leader: 0,
                        ..
                    })
                )
            }) {
                beats.push(t);
            }
        }
        assert_eq!(beats.len() as u64, 20 / hb);
        assert!(beats.windows(2).all(|w| w[1] - w[0] == hb));
    }

    #[test]
    fn heartbeats_keep_a_follower_from_standing_and_are_acked() {
        let mut e = node(1, 3);
        for t in 0..200u64 {
            let a = e.tick();
            assert!(a.is_empty(), "stood at tick {t}");
            if t % 2 == 0 {
                let a = e.handle(&0, heartbeat(1, 0)).unwrap();
                assert!(a.iter().any(|x| matches!(
                    x,
                    Action::Send {
                        to: 0,
                        msg: ElectionMessage::HeartbeatAck {
                            term: 1,
                            from: 1,
                            ..
                        }
                    }
                )));
            }
        }
        assert_eq!(e.leader(), Some(&0));
        assert_eq!(e.known_peers().len(), 1);
        assert_eq!(e.known_peers()[0].ticks_since_heard, 1);
    }

    #[test]
    fn candidate_accepts_a_leader_of_its_term() {
        let mut e = node(0, 3);
        stand(&mut e);
        let a = e.handle(&1, heartbeat(1, 1)).unwrap();
        assert_eq!(e.role(), Role::Follower);
        assert!(a.contains(&Action::LeaderChanged {
            term: 1,
            leader: Some(1)
        }));
        assert_eq!(persisted(&a), None, "same term, same vote");
    }

    #[test]
    fn invalid_senders_are_typed_errors_and_change_nothing() {
        let mut e = node(0, 3);
        assert_eq!(
            e.handle(&9, request_vote(1, 9, cpu(), 0)),
            Err(ElectionError::NotAMember)
        );
        assert_eq!(
            e.handle(&1, request_vote(1, 2, cpu(), 0)),
            Err(ElectionError::SenderMismatch)
        );
        assert_eq!(
            e.handle(&1, vote(1, 2, true)),
            Err(ElectionError::SenderMismatch)
        );
        assert_eq!(e.handle(&0, heartbeat(1, 0)), Err(ElectionError::FromSelf));
        assert_eq!(e.handle(&1, heartbeat(0, 1)), Err(ElectionError::ZeroTerm));
        assert_eq!(e.observe(&9, gpu(), 0), Err(ElectionError::NotAMember));
        assert_eq!(e.observe(&0, gpu(), 0), Err(ElectionError::FromSelf));
        assert_eq!(e.term(), 0);
        assert!(e.known_peers().is_empty());

        let mut l = leader_of(3);
        assert_eq!(
            l.handle(&2, heartbeat(1, 2)),
            Err(ElectionError::ConflictingLeader { term: 1 })
        );
        assert!(l.is_leader());
    }

    #[test]
    fn construction_is_validated() {
        let cfg = ElectionConfig::default();
        let p = Persistent::default;
        assert_eq!(
            Election::new(0u32, cpu(), vec![], p(), cfg, 0).err(),
            Some(ElectionError::EmptyMembership)
        );
        assert_eq!(
            Election::new(0u32, cpu(), vec![1, 2], p(), cfg, 0).err(),
            Some(ElectionError::SelfNotAMember)
        );
        let bad = ElectionConfig {
            election_timeout_max: 10,
            ..cfg
        };
        assert!(matches!(
            Election::new(0u32, cpu(), vec![0], p(), bad, 0),
            Err(ElectionError::InvalidConfig(_))
        ));
        let bad = ElectionConfig {
            heartbeat_ticks: 10,
            ..cfg
        };
        assert!(Election::new(0u32, cpu(), vec![0], p(), bad, 0).is_err());
        // Duplicate ids in the membership collapse.
        let e = Election::new(0u32, cpu(), vec![0, 1, 1, 2], p(), cfg, 0).unwrap();
        assert_eq!(e.members().len(), 3);
        assert_eq!(e.majority(), 2);
    }

    #[test]
    fn duplicated_vote_is_not_double_counted() {
        let mut e = node(0, 5);
        stand(&mut e);
        for _ in 0..3 {
            let a = e.handle(&1, vote(1, 1, true)).unwrap();
            assert!(a.is_empty());
        }
        assert_eq!(
            e.role(),
            Role::Candidate,
            "2 distinct votes of 5 is no majority"
        );
        e.handle(&2, vote(1, 2, false)).unwrap();
        assert_eq!(e.role(), Role::Candidate);
        let a = e.handle(&3, vote(1, 3, true)).unwrap();
        assert_eq!(e.role(), Role::Leader);
        assert_eq!(a[0], Action::BecameLeader { term: 1 });
        assert!(a.contains(&Action::LeaderChanged {
            term: 1,
            leader: Some(0)
        }));
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Broadcast(ElectionMessage::Heartbeat { term: 1, .. })
        )));
        // Late votes for a won election change nothing.
        assert!(e.handle(&4, vote(1, 4, true)).unwrap().is_empty());
    }

    #[test]
    fn single_node_elects_itself() {
        let mut e = node(0, 1);
        let a = tick_until_actions(&mut e);
        assert_eq!(
            a,
            vec![
                Action::Persist(Persistent {
                    term: 1,
                    voted_for: Some(0)
                }),
                Action::BecameLeader { term: 1 },
                Action::LeaderChanged {
                    term: 1,
                    leader: Some(0)
                },
            ]
        );
        for _ in 0..500 {
            assert!(e.tick().is_empty(), "a lone leader never steps down");
        }
        assert!(e.is_leader());
    }

    #[test]
    fn two_nodes_need_both_votes() {
        let mut e = node(0, 2);
        stand(&mut e);
        assert_eq!(e.majority(), 2);
        assert_eq!(e.role(), Role::Candidate);
        e.handle(&1, vote(1, 1, true)).unwrap();
        assert!(e.is_leader());
    }

    #[test]
    fn restart_from_persistent_keeps_term_and_vote() {
        let mut e = node(0, 3);
        let a = e.handle(&1, request_vote(4, 1, cpu(), 0)).unwrap();
        let disk = persisted(&a).unwrap();
        drop(e);
        let mut e = node_with(0, 3, low(), disk);
        assert_eq!(e.term(), 4);
        assert_eq!(e.voted_for(), Some(&1));
        let a = e.handle(&2, request_vote(4, 2, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (4, false), "already voted for 1 in term 4");
        let a = e.handle(&1, request_vote(4, 1, cpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (4, true));
        // Its own next election uses a fresh term.
        let a = stand(&mut e);
        assert_eq!(
            persisted(&a),
            Some(Persistent {
                term: 5,
                voted_for: Some(0)
            })
        );
    }

    #[test]
    fn fresh_better_members_delay_the_timeout() {
        let cfg = ElectionConfig::default();
        let first_timeout = |observe: bool| {
            let mut e = node(0, 4);
            if observe {
                e.observe(&1, gpu(), 0).unwrap();
                e.observe(&2, gpu(), 0).unwrap();
                e.observe(&3, Capability::new(false, 1), 0).unwrap(); // ranks below us
            }
            e.reset_election_timer();
            let mut t = 0;
            while e.tick().is_empty() {
                t += 1;
            }
            t + 1
        };
        let plain = first_timeout(false);
        let staggered = first_timeout(true);
        // Same RNG draw; two better members add two steps.
        assert_eq!(staggered, plain + 2 * cfg.rank_step_ticks);
        assert!(staggered <= cfg.max_election_timeout(4));
    }

    #[test]
    fn term_exhaustion_never_reuses_a_term() {
        let p = Persistent {
            term: u64::MAX,
            voted_for: Some(1),
        };
        let mut e = node_with(0, 3, low(), p);
        for _ in 0..100 {
            assert!(e.tick().is_empty());
        }
        assert_eq!(e.persistent().voted_for, Some(1));
        let a = e.handle(&2, request_vote(u64::MAX, 2, gpu(), 0)).unwrap();
        assert_eq!(vote_reply(&a), (u64::MAX, false));
    }

    #[test]
    fn peers_are_learned_from_messages() {
        let mut e = node(0, 4);
        e.handle(&1, request_vote(1, 1, gpu(), 3)).unwrap();
        e.tick();
        e.handle(&2, ack(1, 2)).unwrap();
        e.observe(&3, Capability::new(false, 64_000), 9).unwrap();
        e.observe(&1, gpu(), 2).unwrap(); // older round: kept at 3
        let peers = e.known_peers();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[0].id, 1);
        assert_eq!(peers[0].last_completed_round, 3);
        assert_eq!(peers[1].ticks_since_heard, 0);
        assert_eq!(peers[2].capability.memory_mb, 64_000);
    }
}
