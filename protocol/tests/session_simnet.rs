//! The round's real sessions over the seeded simulated network: one `HostSession` and the
//! `ClientSession`s of every participant (the host among them, as in the node) exchange their
//! effects through `protocol::simnet::SimNet`, with loss, duplication, reordering, crashes and
//! an outsider that forges and replays traffic. The harness plays only the node's duties
//! (offers answered or refused, the durable "answered" mark, the learning job, the release,
//! the improvement job, keeping checkpoints and acknowledging them, the host's clock); every
//! round decision is the sessions'. The randomized tests print what they measured
//! (`cargo test -p protocol --test session_simnet -- --nocapture`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::RangeInclusive;

use privacy::secagg::{ClientMessage, ServerMessage};
use protocol::round::client::ClientView;
use protocol::round::{HostStage, RoundError, Sender, Unexpected};
use protocol::session::{
    ClientEffect, ClientSession, HostEffect, HostSession, OpenRound, Replication, RoundPolicy,
};
use protocol::simnet::{SimNet, SimNetConfig, SimNetStats};
use protocol::wire::{CheckpointTransfer, Participant, Request, Response, SecAggPacket};
use protocol::{AbstainReason, Refusal, RoundStart, UploadLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use ring::signature::{Ed25519KeyPair, KeyPair};

const TERM: u64 = 3;
const STAGE_TICKS: u64 = 8;
const POLICY: RoundPolicy = RoundPolicy {
    stage_ticks: STAGE_TICKS,
    clip: 1.0,
    noise_multiplier: 0.0,
};
/// Ticks the node's improvement job takes once the sum is out.
const IMPROVE_TICKS: u64 = 2;
/// Worst-case ticks from the offer to the end of the round: the four secure-aggregation
/// deadlines (the masked-input one four stage lengths), the improvement and the replication
/// deadline, all read from the policy.
const BOUND: u64 = 7 * STAGE_TICKS + IMPROVE_TICKS + STAGE_TICKS;
/// Values per upload: 3 samples of 2 classes, 3·2 + 2.
const DIM: usize = 8;

/// PeerId bytes of simulated node `i` (node 0 hosts; the last node is the outsider).
fn peer(i: usize) -> Vec<u8> {
    vec![0xA0, i as u8]
}

fn index(p: &[u8]) -> usize {
    p[1] as usize
}

fn key(i: usize) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[i as u8 + 1; 32]).unwrap()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

fn start(round: u64) -> RoundStart {
    RoundStart {
        round,
        side: 2,
        classes: 2,
        emb_dim: 2,
        images: vec![7; 3 * 2 * 2],
        prompt_class: vec![0, 1, 0],
        prompt_template: vec![0, 1, 2],
        text_emb: vec![0.5; 3 * 2],
        teacher: None,
        latent: None,
    }
}

/// Node `k`'s upload in `round`, built as honest clients build theirs for prompts (0, 1, 0):
/// its share of class 0 is 2^k / 64 (so a sum names who is in it) and every prediction
/// depends on the round (so a replayed old input would show).
fn upload(k: usize, round: u64) -> Vec<f32> {
    let r = 0.05 * (round % 8) as f32;
    let a = f64::from(1u32 << k);
    UploadLayout {
        samples: 3,
        classes: 2,
        moments: 0,
    }
    .build(
        &[0.2 + r, 0.8 - r, 0.5, 0.5, 0.8 - r, 0.2 + r],
        &[0, 1, 0],
        &[a, 64.0 - a],
        None,
    )
    .unwrap()
}

fn assert_sum_of(sum: &[f64], who: &[usize], round: u64, what: &str) {
    assert_eq!(sum.len(), DIM, "{what}");
    for (j, s) in sum.iter().enumerate() {
        let want: f64 = who.iter().map(|&k| f64::from(upload(k, round)[j])).sum();
        assert!(
            (s - want).abs() < 1e-4,
            "{what}: value {j} is {s}, the uploads of {who:?} sum to {want}"
        );
    }
}

/// A refusal's kind, without its free-text detail: what the tallies count.
fn kind(r: &Refusal) -> String {
    match r {
        Refusal::Round(e) => match e {
            RoundError::WrongSender(s) => format!("Round(WrongSender({s:?}))"),
            RoundError::WrongTerm { .. } => "Round(WrongTerm)".into(),
            RoundError::WrongRound { .. } => "Round(WrongRound)".into(),
            RoundError::WrongAttempt { .. } => "Round(WrongAttempt)".into(),
            RoundError::AlreadyDone(_) => "Round(AlreadyDone)".into(),
            RoundError::TooFewContributors { .. } => "Round(TooFewContributors)".into(),
            RoundError::Unexpected(u) => format!("Round(Unexpected({u:?}))"),
        },
        Refusal::SecAgg(_) => "SecAgg".into(),
        Refusal::Invalid(_) => "Invalid".into(),
        Refusal::Local(_) => "Local".into(),
        other => format!("{other:?}"),
    }
}

/// What travels on the simulated wire: request-response, as libp2p carries it.
#[derive(Debug, Clone)]
enum Wire {
    /// A request; `seq` numbers the original, so the receiver can tell a copy.
    Req { seq: u64, req: Request },
    /// The response to request `seq`.
    Resp { seq: u64, resp: Response },
}

/// What the host's node waits for a response to (as `node::run::Pending`).
#[derive(Debug, Clone, Copy)]
enum Pending {
    Offer { to: usize, round: u64, attempt: u32 },
    Checkpoint { to: usize, round: u64 },
}

/// A forged or replayed request: its receiver must refuse it, with the refusal
/// `Sim::host_expects` or `Sim::client_expects` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forged {
    /// From the outsider, to the host: a copy of a participant's packet.
    StrangerPacket,
    /// From the outsider, to the host: an abstention.
    StrangerAbstain,
    /// From a participant, to the host: its packet under an older term.
    StaleTerm,
    /// From the outsider, to a client: a copy of the host's packet.
    StrangerHostPacket,
    /// From the outsider, to a client: a copy of the host's offer.
    StrangerOffer,
    /// From the outsider, to a client: a checkpoint.
    StrangerCheckpoint,
    /// A request of an earlier round, from its original sender.
    Replay,
}

/// The fault model of one batch of runs.
#[derive(Debug, Clone)]
struct Faults {
    net: SimNetConfig,
    /// Probability that a client's budget cannot pay for its release (it abstains).
    abstain: f64,
    /// Probability that one client crashes (and restarts with a fresh session) in a run.
    crash: f64,
    /// Probability per tick that the outsider sends a forged message.
    inject: f64,
    /// Ticks a client's learning takes.
    train: RangeInclusive<u64>,
}

impl Faults {
    fn clean() -> Self {
        Faults {
            net: SimNetConfig {
                delay_min: 0,
                delay_max: 3,
                loss: 0.0,
                duplicate: 0.2,
            },
            abstain: 0.0,
            crash: 0.0,
            inject: 0.2,
            train: 1..=12,
        }
    }

    /// Whether no stage may wait for a deadline and every round must complete with everyone
    /// who did not abstain (or, with fewer than two others left, be given up): no loss or
    /// crash, and a round trip shorter than a stage.
    fn lossless(&self) -> bool {
        self.net.loss == 0.0 && self.crash == 0.0 && 2 * self.net.delay_max < STAGE_TICKS
    }

    fn lossy(loss: f64) -> Self {
        Faults {
            net: SimNetConfig {
                loss,
                ..Faults::clean().net
            },
            abstain: 0.1,
            crash: 0.25,
            ..Faults::clean()
        }
    }
}

/// What the runs measured, summed over runs.
#[derive(Debug, Default, Clone)]
struct Tally {
    runs: u64,
    completed_all: u64,
    completed_subset: u64,
    abandoned_aggregating: u64,
    abandoned_replicating: u64,
    /// Stages closed by their deadline rather than by hearing everyone.
    deadline_closes: u64,
    latest_end: u64,
    /// Share deliveries (copies included) that arrived before the client's upload was ready,
    /// and of those the copies of one already held (kept once).
    held: u64,
    held_copies_collapsed: u64,
    /// Share deliveries released from the hold by the upload (exactly once each).
    released_from_hold: u64,
    /// Share deliveries that arrived after the upload was ready (answered at once).
    shares_after_upload: u64,
    abstained: u64,
    crashes: u64,
    peer_gone_closes: u64,
    /// Copies of a message its receiver had already had, and how they ended (each one way).
    duplicates: u64,
    duplicates_refused: u64,
    duplicates_ignored: u64,
    /// Duplicated abstentions (idempotent: they may close a stage that waits for nobody).
    duplicates_abstain: u64,
    /// A second copy of an offer to a client that had already answered it.
    offer_after_answer_refused: u64,
    forged: u64,
    replays: u64,
    /// Distinct members' acknowledgements when the round completed.
    acks_at_completion: u64,
    /// Why rounds were abandoned (the reason up to its first colon).
    abandoned_because: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
    net: SimNetStats,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        macro_rules! sum {
            ($($f:ident),*) => { $(self.$f += o.$f;)* };
        }
        sum!(
            runs,
            completed_all,
            completed_subset,
            abandoned_aggregating,
            abandoned_replicating,
            deadline_closes,
            held,
            held_copies_collapsed,
            released_from_hold,
            shares_after_upload,
            abstained,
            crashes,
            peer_gone_closes,
            duplicates,
            duplicates_refused,
            duplicates_ignored,
            duplicates_abstain,
            offer_after_answer_refused,
            forged,
            replays,
            acks_at_completion
        );
        self.latest_end = self.latest_end.max(o.latest_end);
        for (k, v) in &o.refusals {
            *self.refusals.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.abandoned_because {
            *self.abandoned_because.entry(k.clone()).or_default() += v;
        }
        self.net.sent += o.net.sent;
        self.net.delivered += o.net.delivered;
        self.net.lost += o.net.lost;
        self.net.duplicated += o.net.duplicated;
        self.net.crashed += o.net.crashed;
    }

    fn refused(&self, k: &str) -> u64 {
        self.refusals.get(k).copied().unwrap_or(0)
    }

    fn print(&self, what: &str) {
        println!("{what}:");
        println!(
            "  runs {}: completed with all {}, with a subset {}; abandoned aggregating {}, \
             replicating {}; latest end tick {} (bound {BOUND})",
            self.runs,
            self.completed_all,
            self.completed_subset,
            self.abandoned_aggregating,
            self.abandoned_replicating,
            self.latest_end
        );
        println!(
            "  deadline closes {}, peer-gone closes {}, crashes {}, abstained {}, acks at \
             completion {}",
            self.deadline_closes,
            self.peer_gone_closes,
            self.crashes,
            self.abstained,
            self.acks_at_completion
        );
        println!(
            "  shares held {} (copies collapsed {}), released from the hold {}, arrived after \
             the upload {}",
            self.held,
            self.held_copies_collapsed,
            self.released_from_hold,
            self.shares_after_upload
        );
        println!(
            "  duplicates {}: refused {}, ignored {}, abstentions {}; offer copies after an \
             answer refused {}",
            self.duplicates,
            self.duplicates_refused,
            self.duplicates_ignored,
            self.duplicates_abstain,
            self.offer_after_answer_refused
        );
        println!("  abandoned because: {:?}", self.abandoned_because);
        println!("  forged {}, replayed {}", self.forged, self.replays);
        println!("  refusals: {:?}", self.refusals);
        println!("  net: {:?}", self.net);
    }
}

/// One participant's node: its session and what its node keeps (durably: the answered mark
/// and the last completed round survive a crash; the session does not).
struct Node {
    session: ClientSession,
    key: Ed25519KeyPair,
    answered: BTreeSet<(u64, u64, u32)>,
    last_completed: u64,
    abstains: bool,
    /// (tick, attempt) when its learning job finishes.
    learning: Option<(u64, u32)>,
    /// Per attempt: Learn effects, released uploads, and the secure-aggregation message kinds
    /// sent (each at most once: a client never answers one attempt twice).
    learned: BTreeMap<u32, u32>,
    sent: BTreeMap<u32, Vec<&'static str>>,
    /// Share deliveries of the current attempt held before the upload was ready.
    held: Vec<Vec<u8>>,
    released: bool,
    /// Whether it handled a share delivery (so later copies must be refused).
    masked: bool,
}

/// What the node does when the host's session asked for the round to be over.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Completed,
    Abandoned { reason: String, replicating: bool },
}

/// One host session, `n` participants (node 0 hosts and contributes), and outsider `n`.
struct Sim {
    n: usize,
    round: u64,
    attempt: u32,
    faults: Faults,
    net: SimNet<usize, Wire>,
    rng: ChaCha8Rng,
    crypto: ChaCha20Rng,
    now: u64,
    opened_at: u64,
    host: HostSession,
    nodes: Vec<Node>,
    /// Node 0's requests between its own host and client sides (as `node::run::Local`).
    local: VecDeque<(bool, Request)>,
    seq: u64,
    pending: BTreeMap<u64, Pending>,
    forged: BTreeMap<u64, Forged>,
    /// (receiver, seq) of every request delivered, and every response (a duplicated
    /// request may be answered differently the second time).
    seen: BTreeSet<(usize, u64)>,
    seen_resp: Vec<(u64, Response)>,
    /// Packets seen on the wire, for the outsider to copy: (sender, receiver, packet).
    packets: Vec<(usize, usize, SecAggPacket)>,
    /// The host's offer of this attempt, for the outsider to copy.
    offer: Option<Request>,
    /// Every genuine request and response delivered over the network, as (sender,
    /// receiver, message): what a later round replays.
    delivered: Vec<(usize, usize, Wire)>,
    /// (client, tick, restart tick) of this round's crash, if any.
    crash: Option<(usize, u64, u64)>,
    /// Requests and responses of an earlier round, to replay from their original senders.
    replays: Vec<(usize, usize, Wire)>,
    improve_at: Option<u64>,
    replicating_since: Option<u64>,
    acks: BTreeSet<usize>,
    sum: Option<(Vec<f64>, Vec<usize>)>,
    outcome: Option<(Outcome, u64)>,
    t: Tally,
}

impl Sim {
    fn new(seed: u64, n: usize, faults: Faults) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5e55_10e5);
        let nodes = (0..n)
            .map(|i| Node {
                session: ClientSession::new(),
                key: key(i),
                answered: BTreeSet::new(),
                last_completed: 0,
                abstains: i != 0 && rng.random_bool(faults.abstain),
                learning: None,
                learned: BTreeMap::new(),
                sent: BTreeMap::new(),
                held: Vec::new(),
                released: false,
                masked: false,
            })
            .collect();
        let (host, effects) = Self::open_session(n, 1, 0);
        let mut sim = Sim {
            n,
            round: 0,
            attempt: 0,
            net: SimNet::new(seed, faults.net).unwrap(),
            faults,
            rng,
            crypto: ChaCha20Rng::seed_from_u64(seed),
            now: 0,
            opened_at: 0,
            host,
            nodes,
            local: VecDeque::new(),
            seq: 0,
            pending: BTreeMap::new(),
            forged: BTreeMap::new(),
            seen: BTreeSet::new(),
            seen_resp: Vec::new(),
            packets: Vec::new(),
            offer: None,
            delivered: Vec::new(),
            crash: None,
            replays: Vec::new(),
            improve_at: None,
            replicating_since: None,
            acks: BTreeSet::new(),
            sum: None,
            outcome: None,
            t: Tally {
                runs: 1,
                ..Tally::default()
            },
        };
        sim.begin(1, 0, effects);
        sim
    }

    fn open_session(n: usize, round: u64, attempt: u32) -> (HostSession, Vec<HostEffect>) {
        let participants = (0..n)
            .map(|i| Participant {
                peer: peer(i),
                identity: key(i).public_key().as_ref().try_into().unwrap(),
            })
            .collect();
        let open = OpenRound {
            term: TERM,
            attempt,
            start: Box::new(start(round)),
            participants,
            host: peer(0),
            members: n,
            graph_seed: [round as u8; 32],
            aggregation: protocol::wire::Aggregation::Secure,
        };
        HostSession::open(open, POLICY).unwrap()
    }

    /// The host opens attempt `attempt` of `round` (the clock starts again).
    fn open(&mut self, round: u64, attempt: u32) {
        let (host, effects) = Self::open_session(self.n, round, attempt);
        self.host = host;
        self.begin(round, attempt, effects);
    }

    /// The host's session of `round`'s `attempt` just opened with `effects`.
    fn begin(&mut self, round: u64, attempt: u32, effects: Vec<HostEffect>) {
        self.round = round;
        self.attempt = attempt;
        self.opened_at = self.now;
        self.improve_at = None;
        self.replicating_since = None;
        self.acks.clear();
        self.sum = None;
        self.outcome = None;
        self.packets.clear();
        self.crash = self.rng.random_bool(self.faults.crash).then(|| {
            let at = self.now + self.rng.random_range(1..=40);
            let k = self.rng.random_range(1..self.n);
            (k, at, at + self.rng.random_range(3..=15))
        });
        for node in &mut self.nodes {
            node.held.clear();
            node.released = false;
            node.masked = false;
        }
        self.host_effects(effects);
        self.drain_local();
    }

    fn outsider(&self) -> usize {
        self.n
    }

    fn refused(&mut self, r: &Refusal) {
        *self.t.refusals.entry(kind(r)).or_default() += 1;
    }

    fn send(&mut self, from: usize, to: usize, req: Request) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        self.net.send(&from, &to, Wire::Req { seq, req }, self.now);
        seq
    }

    // --- the host's node ---------------------------------------------------------------------

    fn host_effects(&mut self, effects: Vec<HostEffect>) {
        for e in effects {
            match e {
                HostEffect::Send { to, request } => {
                    let to = index(&to);
                    if to == 0 {
                        self.local.push_back((false, request));
                        continue;
                    }
                    if let Request::Offer(_) = &request {
                        self.offer = Some(request.clone());
                    }
                    let pending = match &request {
                        Request::Offer(o) => Some(Pending::Offer {
                            to,
                            round: o.start.round,
                            attempt: o.attempt,
                        }),
                        Request::Checkpoint(c) => Some(Pending::Checkpoint { to, round: c.round }),
                        _ => None,
                    };
                    let seq = self.send(0, to, request);
                    if let Some(p) = pending {
                        self.pending.insert(seq, p);
                    }
                }
                HostEffect::Phase { .. } => {}
                HostEffect::Improve { sum, .. } => {
                    assert!(self.sum.is_none(), "a second sum");
                    let included: Vec<usize> =
                        self.host.included().iter().map(|p| index(p)).collect();
                    assert_sum_of(&sum, &included, self.round, "the released sum");
                    assert!(
                        included.iter().filter(|&&k| k != 0).count() >= 2,
                        "a sum of the host and fewer than two others: {included:?}"
                    );
                    for &k in &included {
                        assert!(
                            self.nodes[k].released,
                            "{k} is in the sum but never released"
                        );
                    }
                    self.sum = Some((sum, included));
                    self.improve_at = Some(self.now + IMPROVE_TICKS);
                }
                HostEffect::Completed => {
                    assert_eq!(
                        self.acks.len(),
                        RoundPolicy::replicas_needed(self.n),
                        "completes at the first majority of distinct acks"
                    );
                    self.t.acks_at_completion += self.acks.len() as u64;
                    self.end(Outcome::Completed);
                    // The host holds the checkpoint, and every live member the host did not
                    // send it to fetches it from a holder (the node's catch-up, which this
                    // harness does not play), and so leaves the round.
                    for k in 0..self.n {
                        if !self.net.is_crashed(&k) {
                            self.nodes[k].last_completed = self.round;
                            self.nodes[k].session.leave_round(self.round);
                        }
                    }
                }
                HostEffect::Abandoned { reason } => {
                    let replicating = self.replicating_since.is_some();
                    if let Some(since) = self.replicating_since {
                        assert!(self.acks.len() < RoundPolicy::replicas_needed(self.n));
                        assert_eq!(
                            self.now - since,
                            POLICY.replication_ticks(),
                            "abandoned at the replication deadline"
                        );
                    }
                    self.end(Outcome::Abandoned {
                        reason,
                        replicating,
                    });
                    self.nodes[0].session.leave_round(self.round);
                }
            }
        }
    }

    fn end(&mut self, outcome: Outcome) {
        assert!(self.outcome.is_none(), "ended twice: {outcome:?}");
        self.outcome = Some((outcome, self.now));
    }

    /// A client's request to the host's session.
    fn at_host(&mut self, from: usize, req: Request, forged: Option<Forged>, dup: bool) {
        let expected = forged.map(|f| self.host_expects(f, &req));
        let is_abstain = matches!(req, Request::Abstain { .. });
        let result = match req {
            Request::SecAgg(p) => {
                if forged.is_none() && !dup {
                    self.packets.push((from, 0, p.clone()));
                }
                self.host.on_secagg(&peer(from), p)
            }
            Request::Abstain {
                term,
                round,
                attempt,
                ..
            } => self.host.on_abstain(&peer(from), term, round, attempt),
            other => panic!("the host got {other:?}"),
        };
        self.settle(result, expected, dup && !is_abstain, dup && is_abstain);
    }

    /// Counts and checks how a delivery ended at the host.
    fn settle(
        &mut self,
        result: Result<Vec<HostEffect>, Refusal>,
        expected: Option<Refusal>,
        dup: bool,
        dup_abstain: bool,
    ) {
        if let Some(want) = expected {
            assert_eq!(result.as_ref().err(), Some(&want), "forged at the host");
        }
        match result {
            Ok(effects) => {
                if dup {
                    assert!(effects.is_empty(), "a duplicate acted: {effects:?}");
                    self.t.duplicates_ignored += 1;
                }
                self.t.duplicates_abstain += dup_abstain as u64;
                self.host_effects(effects);
            }
            Err(r) => {
                self.t.duplicates_refused += (dup || dup_abstain) as u64;
                self.refused(&r);
            }
        }
    }

    /// The refusal the host's session must give forged request `req`.
    fn host_expects(&self, f: Forged, req: &Request) -> Refusal {
        let stage = self.host.stage();
        let done = matches!(stage, HostStage::Complete | HostStage::Abandoned);
        Refusal::Round(match (f, req) {
            (Forged::StrangerPacket, _) if done => RoundError::AlreadyDone(self.round),
            (Forged::StrangerPacket, _) if stage == HostStage::Aggregate => {
                RoundError::WrongSender(Sender::Participant)
            }
            (Forged::StrangerPacket, _) => RoundError::Unexpected(Unexpected::SecAggMessage),
            (Forged::StrangerAbstain, _) if done => RoundError::AlreadyDone(self.round),
            (Forged::StrangerAbstain, _) => RoundError::WrongSender(Sender::Participant),
            (Forged::StaleTerm, _) => RoundError::WrongTerm {
                got: TERM - 1,
                current: TERM,
            },
            (Forged::Replay, Request::SecAgg(SecAggPacket { attempt, .. }))
            | (Forged::Replay, Request::Abstain { attempt, .. }) => RoundError::WrongAttempt {
                got: *attempt,
                current: self.attempt,
            },
            (f, req) => panic!("{f:?} is not for the host: {req:?}"),
        })
    }

    /// A response to the host's request `seq` arrived from `from`.
    fn host_response(&mut self, from: usize, seq: u64, resp: Response) {
        let seen = self.seen_resp.contains(&(seq, resp.clone()));
        if !seen {
            self.seen_resp.push((seq, resp.clone()));
        }
        let Some(&pending) = self.pending.get(&seq) else {
            return;
        };
        let (Pending::Offer { round, .. } | Pending::Checkpoint { round, .. }) = pending;
        // A copy of a response of this round (one of an earlier round is a replay).
        let dup = seen && round == self.round;
        self.t.duplicates += dup as u64;
        match (pending, resp) {
            (Pending::Checkpoint { to, round }, Response::Ack) if to == from => {
                let replicating = self.host.stage() == HostStage::Replicate;
                let result = self.host.on_replica(&peer(from), TERM, round);
                if round != self.round {
                    assert_eq!(
                        result,
                        Err(RoundError::WrongRound {
                            got: round,
                            expected: self.round
                        }),
                        "a replayed ack"
                    );
                }
                if result.is_ok() && replicating && round == self.round {
                    self.acks.insert(from);
                }
                let result = result.map_err(Refusal::Round);
                self.settle(result, None, dup, false);
            }
            (Pending::Offer { to, round, attempt }, Response::Rejected(_)) if to == from => {
                // As the node does: an offer refused is an abstention.
                let result = self.host.on_abstain(&peer(from), TERM, round, attempt);
                self.settle(result, None, false, dup);
            }
            // The node acts on no other response (an accepted offer, a refused checkpoint).
            _ => self.t.duplicates_ignored += dup as u64,
        }
    }

    // --- a client's node ---------------------------------------------------------------------

    fn client_effects(&mut self, k: usize, effects: Vec<ClientEffect>) {
        for e in effects {
            match e {
                ClientEffect::Send { to, request } => {
                    assert_eq!(index(&to), 0, "clients send to the host");
                    if let Request::SecAgg(p) = &request {
                        let msg = ClientMessage::decode(&p.payload, p.round).unwrap();
                        let sent = self.nodes[k].sent.entry(p.attempt).or_default();
                        assert!(
                            !sent.contains(&msg.kind()),
                            "client {k} answered attempt {} twice: {}",
                            p.attempt,
                            msg.kind()
                        );
                        sent.push(msg.kind());
                    }
                    if k == 0 {
                        self.local.push_back((true, request));
                    } else {
                        self.send(k, 0, request);
                    }
                }
                ClientEffect::Phase { .. } => {}
                ClientEffect::Learn { attempt, .. } => {
                    let node = &mut self.nodes[k];
                    let learned = node.learned.entry(attempt).or_default();
                    *learned += 1;
                    assert_eq!(*learned, 1, "client {k} joined attempt {attempt} twice");
                    let ticks = self.rng.random_range(self.faults.train.clone());
                    node.learning = Some((self.now + ticks, attempt));
                }
            }
        }
    }

    /// A request to client `k`'s node; returns its response when the request wants one.
    fn at_client(
        &mut self,
        k: usize,
        from: usize,
        req: Request,
        forged: Option<Forged>,
        dup: bool,
    ) -> Option<Response> {
        let (me, leader) = (peer(k), peer(0));
        let view = ClientView {
            me: &me,
            leader: Some(&leader),
            term: TERM,
            last_completed: self.nodes[k].last_completed,
        };
        let expected = forged.map(|f| self.client_expects(k, f, &req));
        let wants_response = matches!(req, Request::Offer(_) | Request::Checkpoint(_));
        let is_offer = matches!(req, Request::Offer(_));
        let result: Result<Vec<ClientEffect>, Refusal> = match req {
            Request::Offer(offer) => {
                let node = &mut self.nodes[k];
                let answered =
                    node.answered
                        .contains(&(offer.term, offer.start.round, offer.attempt));
                node.session.on_offer(
                    &peer(from),
                    *offer,
                    view,
                    answered,
                    &node.key,
                    &mut self.crypto,
                )
            }
            Request::SecAgg(p) => self.client_secagg(k, from, p, forged.is_some() || dup),
            Request::Checkpoint(t) => {
                let node = &mut self.nodes[k];
                node.session
                    .check_checkpoint(&peer(from), t.term, t.round, view)
                    .and_then(|()| {
                        if digest(&t.bytes) != t.hash {
                            return Err(Refusal::CheckpointHash);
                        }
                        node.last_completed = t.round;
                        node.session.leave_round(t.round);
                        Ok(Vec::new())
                    })
            }
            other => panic!("client {k} got {other:?}"),
        };
        if let Some(want) = expected {
            assert_eq!(result.as_ref().err(), Some(&want), "forged at client {k}");
        }
        let response = match result {
            Ok(effects) => {
                if dup {
                    assert!(effects.is_empty(), "a duplicate acted at {k}: {effects:?}");
                    self.t.duplicates_ignored += 1;
                }
                self.client_effects(k, effects);
                Response::Ack
            }
            Err(r) => {
                self.t.duplicates_refused += dup as u64;
                if dup && is_offer && r == Refusal::Round(RoundError::AlreadyDone(self.round)) {
                    self.t.offer_after_answer_refused += 1;
                }
                self.refused(&r);
                Response::Rejected(r)
            }
        };
        wants_response.then_some(response)
    }

    /// A host's packet at client `k`, with the bookkeeping of held share deliveries.
    fn client_secagg(
        &mut self,
        k: usize,
        from: usize,
        p: SecAggPacket,
        not_genuine: bool,
    ) -> Result<Vec<ClientEffect>, Refusal> {
        let shares = matches!(
            ServerMessage::decode(&p.payload, p.round),
            Ok(ServerMessage::Shares(_))
        );
        if !not_genuine && k != 0 {
            self.packets.push((from, k, p.clone()));
        }
        let payload = p.payload.clone();
        let current =
            from == 0 && self.nodes[k].session.engaged() == Some((TERM, p.round, p.attempt));
        let result = self.nodes[k].session.on_secagg(&peer(from), p);
        let node = &mut self.nodes[k];
        if shares && current && result.is_ok() {
            if !node.released {
                assert_eq!(
                    result,
                    Ok(vec![]),
                    "client {k}: a share delivery before the upload"
                );
                self.t.held += 1;
                if node.held.contains(&payload) {
                    self.t.held_copies_collapsed += 1;
                } else {
                    node.held.push(payload);
                }
            } else {
                let n = result.as_ref().map_or(0, Vec::len);
                assert_eq!(n, 1, "client {k}: one masked input for the share delivery");
                assert!(!node.masked, "client {k} masked twice");
                node.masked = true;
                self.t.shares_after_upload += 1;
            }
        }
        result
    }

    /// The refusal client `k`'s session must give forged request `req`.
    fn client_expects(&self, k: usize, f: Forged, req: &Request) -> Refusal {
        let engaged = self.nodes[k].session.engaged();
        match (f, req) {
            (Forged::StrangerHostPacket | Forged::Replay, Request::SecAgg(p)) => match engaged {
                None => Refusal::NoRound,
                Some((_, _, a)) if a != p.attempt => Refusal::Round(RoundError::WrongAttempt {
                    got: p.attempt,
                    current: a,
                }),
                Some(_) => Refusal::Round(RoundError::WrongSender(Sender::RoundHost)),
            },
            (Forged::StrangerOffer | Forged::StrangerCheckpoint, _) => {
                Refusal::Round(RoundError::WrongSender(Sender::CurrentHost))
            }
            (Forged::Replay, Request::Offer(o)) => {
                Refusal::Round(RoundError::AlreadyDone(o.start.round))
            }
            (Forged::Replay, Request::Checkpoint(t)) => {
                Refusal::Round(RoundError::AlreadyDone(t.round))
            }
            (f, req) => panic!("{f:?} is not for a client: {req:?}"),
        }
    }

    /// Client `k`'s learning finished: release its upload (no noise) or abstain.
    fn learned(&mut self, k: usize, attempt: u32) {
        let Some(plan) = self.nodes[k]
            .session
            .release_plan(TERM, self.round, attempt)
        else {
            return;
        };
        let node = &mut self.nodes[k];
        // Durable before anything leaves, as the node does.
        node.answered.insert((TERM, self.round, attempt));
        let effects = if node.abstains {
            self.t.abstained += 1;
            node.session.sit_out(&plan, AbstainReason::BudgetExhausted)
        } else {
            node.released = true;
            let held = node.held.len();
            let effects = node
                .session
                .on_released(&plan, &upload(k, self.round))
                .unwrap();
            let sends = effects
                .iter()
                .filter(|e| matches!(e, ClientEffect::Send { .. }))
                .count();
            assert_eq!(sends, held.min(1), "client {k}: the held delivery, once");
            self.t.released_from_hold += sends as u64;
            node.masked |= sends > 0;
            effects
        };
        self.client_effects(k, effects);
    }

    // --- the clock -----------------------------------------------------------------------------

    /// Node 0's requests between its own sides (lossless and in order, as `drain_local`).
    fn drain_local(&mut self) {
        while let Some((to_host, req)) = self.local.pop_front() {
            if to_host {
                self.at_host(0, req, None, false);
            } else if let Some(Response::Rejected(_)) = self.at_client(0, 0, req, None, false) {
                panic!("the host's own client side refused its host");
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, wire: Wire) {
        match wire {
            Wire::Req { seq, req } => {
                let dup = !self.seen.insert((to, seq));
                self.t.duplicates += dup as u64;
                let forged = self.forged.get(&seq).copied();
                if !dup && forged.is_none() {
                    self.delivered.push((
                        from,
                        to,
                        Wire::Req {
                            seq,
                            req: req.clone(),
                        },
                    ));
                }
                if to == 0 {
                    self.at_host(from, req, forged, dup);
                } else if to < self.n {
                    if let Some(resp) = self.at_client(to, from, req, forged, dup) {
                        if forged != Some(Forged::Replay) {
                            self.net
                                .send(&to, &from, Wire::Resp { seq, resp }, self.now);
                        }
                    }
                }
            }
            Wire::Resp { seq, resp } => {
                if to == 0 {
                    if !self.seen_resp.contains(&(seq, resp.clone())) {
                        self.delivered.push((
                            from,
                            to,
                            Wire::Resp {
                                seq,
                                resp: resp.clone(),
                            },
                        ));
                    }
                    self.host_response(from, seq, resp);
                }
            }
        }
        self.drain_local();
    }

    /// One tick: due messages, finished learning, the node's jobs, crashes, the host's clock,
    /// the outsider.
    fn step(&mut self) {
        for (from, to, wire) in self.net.deliver_due(self.now) {
            self.deliver(from, to, wire);
        }
        for k in 0..self.n {
            if let Some((at, attempt)) = self.nodes[k].learning {
                if at <= self.now {
                    self.nodes[k].learning = None;
                    self.learned(k, attempt);
                    self.drain_local();
                }
            }
        }
        self.crashes();
        let aggregating = self.host.stage() == HostStage::Aggregate;
        let effects = self.host.on_tick();
        self.t.deadline_closes += (aggregating && !effects.is_empty()) as u64;
        self.host_effects(effects);
        self.drain_local();
        // The improvement job's result arrives between ticks.
        if self.improve_at == Some(self.now) {
            let bytes = vec![self.round as u8; 16];
            let t = CheckpointTransfer {
                term: TERM,
                round: self.round,
                hash: digest(&bytes),
                base: None,
                bytes,
            };
            // The connected members, as the node offers them.
            let candidates = (1..self.n)
                .filter(|k| !self.net.is_crashed(k))
                .map(|k| (peer(k), false))
                .collect();
            let effects = self.host.on_improved(Replication {
                full: t,
                delta: None,
                candidates,
            });
            assert_eq!(self.host.stage(), HostStage::Replicate);
            self.replicating_since = Some(self.now);
            self.host_effects(effects);
        }
        self.drain_local();
        if self.outcome.is_none() && self.rng.random_bool(self.faults.inject) {
            self.inject();
        }
        if !self.replays.is_empty() && self.rng.random_bool(0.3) {
            let (from, to, wire) = self
                .replays
                .swap_remove(self.rng.random_range(0..self.replays.len()));
            self.replay(from, to, wire);
        }
    }

    fn crashes(&mut self) {
        let Some((k, at, back)) = self.crash else {
            return;
        };
        if self.now == at {
            assert!(!self.net.is_crashed(&k));
            self.t.crashes += 1;
            self.net.crash(&k);
            self.nodes[k].learning = None;
        }
        if self.now == at + 1 {
            // The host's node notices the lost connection.
            let effects = self.host.on_peer_gone(&peer(k));
            self.t.peer_gone_closes += !effects.is_empty() as u64;
            self.host_effects(effects);
        }
        if self.now == back {
            // A fresh process: the session is gone, the store is not.
            self.net.restart(&k);
            self.nodes[k].session = ClientSession::new();
            self.nodes[k].held.clear();
        }
    }

    /// The outsider forges a message, or a participant sends a stale one.
    fn inject(&mut self) {
        let out = self.outsider();
        let client = self.rng.random_range(1..self.n);
        let pick = self.rng.random_range(0..6);
        let from_client: Vec<SecAggPacket> = self
            .packets
            .iter()
            .filter(|(_, to, _)| *to == 0)
            .map(|(_, _, p)| p.clone())
            .collect();
        let to_client: Vec<SecAggPacket> = self
            .packets
            .iter()
            .filter(|(from, to, _)| *from == 0 && *to == client)
            .map(|(_, _, p)| p.clone())
            .collect();
        let choose = |rng: &mut ChaCha8Rng, v: &[SecAggPacket]| {
            (!v.is_empty()).then(|| v[rng.random_range(0..v.len())].clone())
        };
        let (from, to, req, f) = match pick {
            0 => match choose(&mut self.rng, &from_client) {
                Some(p) => (out, 0, Request::SecAgg(p), Forged::StrangerPacket),
                None => return,
            },
            1 => (
                out,
                0,
                Request::Abstain {
                    term: TERM,
                    round: self.round,
                    attempt: self.attempt,
                    reason: AbstainReason::BudgetExhausted,
                },
                Forged::StrangerAbstain,
            ),
            2 => match choose(&mut self.rng, &from_client) {
                Some(p) => {
                    // A participant's own packet under an older term.
                    let sender = ClientMessage::decode(&p.payload, p.round).unwrap().sender();
                    let stale = SecAggPacket {
                        term: TERM - 1,
                        ..p
                    };
                    (
                        sender as usize,
                        0,
                        Request::SecAgg(stale),
                        Forged::StaleTerm,
                    )
                }
                None => return,
            },
            3 => match choose(&mut self.rng, &to_client) {
                Some(p) => (out, client, Request::SecAgg(p), Forged::StrangerHostPacket),
                None => return,
            },
            4 => match self.offer.clone() {
                Some(offer) => (out, client, offer, Forged::StrangerOffer),
                None => return,
            },
            _ => {
                let bytes = vec![0xEE; 16];
                let t = CheckpointTransfer {
                    term: TERM,
                    round: self.round,
                    hash: digest(&bytes),
                    base: None,
                    bytes,
                };
                (
                    out,
                    client,
                    Request::Checkpoint(t),
                    Forged::StrangerCheckpoint,
                )
            }
        };
        if from != out && self.net.is_crashed(&from) {
            return;
        }
        let seq = self.send(from, to, req);
        self.forged.insert(seq, f);
        self.t.forged += 1;
    }

    /// Sends again a request or response of an earlier round from its original sender.
    fn replay(&mut self, from: usize, to: usize, wire: Wire) {
        self.t.replays += 1;
        match wire {
            Wire::Req { req, .. } => {
                let seq = self.send(from, to, req);
                self.forged.insert(seq, Forged::Replay);
            }
            resp @ Wire::Resp { .. } => self.net.send(&from, &to, resp, self.now),
        }
    }

    /// Runs the round to its end, then as long again as a message can be in flight, so late
    /// copies meet the finished sessions.
    fn run(&mut self) -> &mut Self {
        let limit = self.opened_at + BOUND + self.net.config().delay_max + 2;
        while self.now < limit {
            self.now += 1;
            self.step();
        }
        let (_, at) = self.outcome.clone().expect("the round ended");
        let took = at - self.opened_at;
        assert!(
            took <= BOUND,
            "ended after {took} ticks, past the deadlines' {BOUND}"
        );
        self.t.latest_end = self.t.latest_end.max(took);
        self
    }

    /// Checks the end state and tallies it.
    fn judge(&mut self, lossless: bool) {
        let (outcome, _) = self.outcome.clone().unwrap();
        let expected: Vec<usize> = (0..self.n).filter(|&k| !self.nodes[k].abstains).collect();
        match &outcome {
            Outcome::Completed => {
                let (_, included) = self.sum.as_ref().expect("completed without a sum");
                if *included == expected {
                    self.t.completed_all += 1;
                } else {
                    self.t.completed_subset += 1;
                }
            }
            Outcome::Abandoned {
                reason,
                replicating,
            } => {
                let why = reason.split(':').next().unwrap_or_default().to_string();
                *self.t.abandoned_because.entry(why).or_default() += 1;
                if *replicating {
                    self.t.abandoned_replicating += 1;
                } else {
                    assert!(self.sum.is_none());
                    self.t.abandoned_aggregating += 1;
                }
            }
        }
        if lossless {
            assert_eq!(
                self.t.deadline_closes, 0,
                "no loss: no stage waits for a deadline"
            );
            let others = expected.iter().filter(|&&k| k != 0).count();
            if others < 2 {
                assert!(
                    matches!(
                        outcome,
                        Outcome::Abandoned {
                            replicating: false,
                            ..
                        }
                    ),
                    "no loss, {others} other contributor(s): abandoned, got {outcome:?}"
                );
            } else {
                assert_eq!(outcome, Outcome::Completed, "no loss: the round completes");
                let (_, included) = self.sum.as_ref().unwrap();
                assert_eq!(*included, expected, "no loss: with every participant");
                for k in &expected {
                    let sent = &self.nodes[*k].sent[&self.attempt];
                    assert_eq!(sent.len(), 4, "client {k} sent {sent:?}");
                }
            }
        }
        let t = &self.t;
        assert_eq!(
            t.duplicates_refused + t.duplicates_ignored + t.duplicates_abstain,
            t.duplicates,
            "every duplicate was refused or harmless"
        );
        self.t.net = self.net.stats();
    }
}

fn simulate(seeds: std::ops::Range<u64>, faults: &Faults) -> Tally {
    let mut total = Tally::default();
    for seed in seeds {
        let n = 3 + (seed % 3) as usize;
        let mut sim = Sim::new(seed, n, faults.clone());
        sim.run().judge(faults.lossless());
        total.add(&sim.t);
    }
    total
}

#[test]
fn without_loss_every_round_completes_with_every_participant_and_the_exact_sum() {
    let t = simulate(0..200, &Faults::clean());
    t.print("no loss, 20% duplicates, delays 0..=3");
    assert_eq!(t.completed_all, 200);
    assert!(t.net.duplicated > 0 && t.duplicates > 0 && t.duplicates_refused > 0);
    assert!(t.held > 0 && t.released_from_hold > 0);
    assert!(t.forged > 100);
    assert!(t.refused("Round(WrongSender(Participant))") > 0);
    assert!(t.refused("Round(WrongSender(RoundHost))") > 0);
    assert!(t.refused("Round(WrongSender(CurrentHost))") > 0);
    assert!(t.refused("Round(WrongTerm)") > 0 && t.refused("SecAgg") > 0);

    // Abstentions: every round completes with everyone who did not abstain, or is given up
    // at once when fewer than two others are left.
    let faults = Faults {
        net: SimNetConfig {
            duplicate: 0.5,
            ..Faults::clean().net
        },
        abstain: 0.3,
        train: 0..=3,
        ..Faults::clean()
    };
    let t = simulate(1000..1200, &faults);
    t.print("no loss, 50% duplicates, 30% abstain, learning 0..=3 ticks");
    assert_eq!(t.completed_all + t.abandoned_aggregating, 200);
    assert!(t.completed_all > 100 && t.abandoned_aggregating > 0 && t.abstained > 50);
    assert!(t.duplicates_abstain > 0);
    assert!(
        t.offer_after_answer_refused > 0,
        "exercised: a copy of the offer after the client answered it"
    );
}

#[test]
fn with_loss_duplication_reordering_and_crashes_every_round_ends_by_its_deadlines() {
    let mut all = Tally::default();
    for (i, loss) in [0.03, 0.1, 0.2].into_iter().enumerate() {
        let base = 10_000 * (i as u64 + 1);
        let t = simulate(base..base + 200, &Faults::lossy(loss));
        t.print(&format!(
            "loss {loss}, 20% duplicates, delays 0..=3, 25% of runs crash a client, 10% abstain"
        ));
        let ended = t.completed_all
            + t.completed_subset
            + t.abandoned_aggregating
            + t.abandoned_replicating;
        assert_eq!(ended, 200);
        assert!(t.deadline_closes > 0 && t.net.lost > 0);
        all.add(&t);
    }
    assert!(all.completed_all > 0 && all.completed_subset > 0);
    assert!(all.abandoned_aggregating > 0 && all.abandoned_replicating > 0);
    assert!(all.crashes > 0 && all.peer_gone_closes > 0 && all.abstained > 0);
    assert!(
        all.refused("NoRound") > 0,
        "a restarted client is in no round"
    );
    assert!(all.duplicates_refused > 0 && all.duplicates_abstain > 0);
    assert!(all.latest_end <= BOUND);
}

/// The host's share delivery racing the client's learning, with half the messages
/// duplicated: held until the upload is ready and answered exactly once, whichever arrives
/// first (the harness asserts it at every delivery and release).
#[test]
fn a_share_delivery_before_the_upload_is_held_and_answered_exactly_once() {
    let faults = Faults {
        net: SimNetConfig {
            delay_min: 0,
            delay_max: 3,
            loss: 0.0,
            duplicate: 0.5,
        },
        inject: 0.0,
        train: 1..=16,
        ..Faults::clean()
    };
    let t = simulate(500..700, &faults);
    t.print("no loss, 50% duplicates, learning 1..=16 ticks");
    assert_eq!(t.completed_all, 200);
    assert!(t.held > 100 && t.held_copies_collapsed > 10);
    assert!(t.released_from_hold > 100 && t.shares_after_upload > 100);
}

#[test]
fn replays_of_the_previous_round_are_refused_and_never_change_the_sum() {
    let mut all = Tally::default();
    for seed in 0..100u64 {
        let n = 3 + (seed % 3) as usize;
        let clean = Faults {
            inject: 0.0,
            ..Faults::clean()
        };
        let mut sim = Sim::new(seed, n, clean);
        sim.run().judge(true);
        assert_eq!(sim.net.in_flight(), 0);
        // Round 2 is the term's next attempt, over a lossy network, with round 1's traffic
        // replayed by its senders.
        sim.replays = std::mem::take(&mut sim.delivered);
        sim.faults = Faults::lossy(0.1);
        sim.net.set_config(sim.faults.net).unwrap();
        sim.open(2, 1);
        sim.run().judge(false);
        all.add(&sim.t);
    }
    all.print("round 1 clean, round 2 at 10% loss with round 1 replayed");
    assert!(all.replays > 1000);
    let ended = all.completed_all
        + all.completed_subset
        + all.abandoned_aggregating
        + all.abandoned_replicating;
    assert_eq!(ended, 200, "two rounds a run, each ended");
    assert!(
        all.completed_all >= 100,
        "round 1 always completes with everyone"
    );
    for k in [
        "Round(WrongAttempt)",
        "Round(AlreadyDone)",
        "Round(WrongRound)",
        "NoRound",
    ] {
        assert!(all.refused(k) > 0, "{k}");
    }
}

/// The replication step as the node plays it, by hand: the checkpoint goes to as many members
/// as make a majority (a delta to those that hold the previous one); only their distinct
/// acknowledgements (or announcements of holding it) count, a failed or silent one is replaced
/// by a spare, and the deadline gives up.
#[test]
fn only_the_members_sent_the_checkpoint_make_up_its_majority() {
    let clean = Faults {
        inject: 0.0,
        ..Faults::clean()
    };
    for end in ["spare", "deadline", "announced"] {
        // Five members: the host and two acknowledgements are a majority.
        let mut sim = Sim::new(3, 5, clean.clone());
        while sim.host.stage() == HostStage::Aggregate {
            sim.now += 1;
            sim.step();
        }
        assert_eq!(sim.host.stage(), HostStage::Improve);
        sim.improve_at = None;
        let bytes = vec![1; 16];
        let full = CheckpointTransfer {
            term: TERM,
            round: 1,
            hash: digest(&bytes),
            base: None,
            bytes,
        };
        let delta = CheckpointTransfer {
            base: Some([9; 32]),
            bytes: vec![2; 4],
            ..full.clone()
        };
        let replication = |candidates| Replication {
            full: full.clone(),
            delta: Some(delta.clone()),
            candidates,
        };
        let send = |k, t: &CheckpointTransfer| HostEffect::Send {
            to: peer(k),
            request: Request::Checkpoint(t.clone()),
        };
        // Member 4 is not connected and 3 holds the previous checkpoint: 3 gets the delta and 1
        // the full checkpoint (with the host, a majority); 2 is a spare.
        let effects = sim.host.on_improved(replication(vec![
            (peer(1), false),
            (peer(2), false),
            (peer(3), true),
        ]));
        assert!(
            matches!(effects[0], HostEffect::Phase { .. }),
            "{effects:?}"
        );
        assert_eq!(effects[1..], [send(3, &delta), send(1, &full)]);
        assert_eq!(
            sim.host.on_improved(replication(vec![(peer(4), false)])),
            vec![],
            "sent once"
        );
        let stranger = Err(RoundError::WrongSender(Sender::CheckpointTarget));
        assert_eq!(sim.host.on_replica(&peer(5), TERM, 1), stranger, "outsider");
        assert_eq!(sim.host.on_replica(&peer(4), TERM, 1), stranger, "not sent");
        assert_eq!(sim.host.on_replica(&peer(2), TERM, 1), stranger, "a spare");
        assert_eq!(sim.host.on_replica(&peer(3), TERM, 1), Ok(vec![]));
        assert_eq!(sim.host.on_replica(&peer(3), TERM, 1), Ok(vec![]), "one");
        assert_eq!(
            sim.host.on_replica(&peer(1), TERM, 0),
            Err(RoundError::WrongRound {
                got: 0,
                expected: 1
            })
        );
        assert_eq!(sim.host.on_replica_failed(&peer(3)), vec![], "3 holds it");
        assert_eq!(sim.host.stage(), HostStage::Replicate);
        if end == "announced" {
            // 1's acknowledgement is lost, but 4 (never sent it) announces holding it: a
            // holder is a replica whoever it got the checkpoint from.
            assert_eq!(sim.host.on_holder(&peer(4), 0), vec![], "another round's");
            let effects = sim.host.on_holder(&peer(4), 1);
            assert_eq!(effects[0], HostEffect::Completed);
            assert_eq!(sim.host.stage(), HostStage::Complete);
        } else if end == "deadline" {
            // 1 stays silent: at half the deadline the spare is sent the checkpoint too, and
            // when both stay silent the round is given up.
            let mut sent = Vec::new();
            for _ in 1..POLICY.replication_ticks() {
                sent.extend(sim.host.on_tick());
            }
            let effects = sim.host.on_tick();
            sent.extend(effects.iter().cloned());
            assert!(sent.contains(&send(2, &full)), "{sent:?}");
            assert!(
                effects
                    .iter()
                    .any(|e| matches!(e, HostEffect::Abandoned { .. })),
                "{effects:?}"
            );
            assert_eq!(sim.host.stage(), HostStage::Abandoned);
            assert_eq!(
                sim.host.on_replica(&peer(1), TERM, 1),
                Err(RoundError::AlreadyDone(1))
            );
        } else {
            // 1 refuses: the spare gets it, and its acknowledgement completes the majority.
            assert_eq!(sim.host.on_replica_failed(&peer(1)), vec![send(2, &full)]);
            assert_eq!(
                sim.host.on_replica_failed(&peer(1)),
                vec![],
                "no spare left"
            );
            let effects = sim.host.on_replica(&peer(2), TERM, 1).unwrap();
            assert_eq!(effects[0], HostEffect::Completed);
            assert_eq!(sim.host.stage(), HostStage::Complete);
        }
    }
}
