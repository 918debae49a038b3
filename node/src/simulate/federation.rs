//! The simulation's federation: the node's round sessions (`protocol::session`), one host and
//! one client session per simulated client, over an in-memory transport. Every request is
//! delivered in order and counted by its real wire encoding; with `--secagg` the uploads are
//! securely aggregated exactly as between nodes, otherwise summed in the clear by the same
//! sessions (the simulation's cheaper stand-in, which models the sum secure aggregation
//! would release).
//!
//! A client may [drop out](Federation::drop_out) mid-round (it goes silent: nothing reaches
//! it, nothing it would send leaves it); the stages that wait for it then close on their
//! deadline, one tick per pass once nothing is in flight and no one is left to release. The
//! federation also keeps per-party accounts ([`Usage`]): time inside each session's calls and
//! bytes each way.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use protocol::round::client::ClientView;
use protocol::round::HostStage;
use protocol::session::release::Release;
use protocol::session::{
    ClientEffect, ClientSession, HostEffect, HostSession, OpenRound, ReleasePlan, RoundPolicy,
};
use protocol::wire::{self, Aggregation, Participant, PeerBytes, Request};
use protocol::{AbstainReason, RoundStart};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The term every simulated round runs in (the simulation has one host throughout).
const TERM: u64 = 1;

/// Bytes a round moved, by direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes {
    /// Host → clients.
    pub down: usize,
    /// Clients → host.
    pub up: usize,
}

/// What one party spent in a round: wall time inside its session's calls, and bytes by
/// direction (a request discarded because its sender or receiver dropped out counts nowhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Wall time inside the party's session calls (a client's `on_offer`, `on_secagg`,
    /// `on_released` and `sit_out`; the host's `open`, `on_secagg`, `on_upload`,
    /// `on_abstain` and `on_tick`).
    pub time: Duration,
    /// Bytes the party sent, by their wire encoding.
    pub sent: usize,
    /// Bytes the party received, by their wire encoding.
    pub received: usize,
}

/// Most clock ticks a round may take to close its stages once only dropped clients are
/// left to hear from (each stage lasts at most a few ticks; this only stops a runaway loop).
const MAX_SETTLE_TICKS: u32 = 1_000;

/// How a round's host session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundEnd {
    /// The sum of `included` clients' uploads is out.
    Sum {
        /// The sum.
        sum: Vec<f64>,
        /// Clients whose uploads are in it.
        included: usize,
    },
    /// The host gave the round up (too few uploads).
    Abandoned(String),
}

/// One host and `n` clients of a simulated federation.
pub struct Federation {
    host: PeerBytes,
    peers: Vec<PeerBytes>,
    index: HashMap<PeerBytes, usize>,
    keys: Vec<Ed25519KeyPair>,
    participants: Vec<Participant>,
    clients: Vec<ClientSession>,
    aggregation: Aggregation,
    policy: RoundPolicy,
    rng: ChaCha20Rng,
    /// Requests in flight: (from client, to client) where `None` is the host.
    wire: VecDeque<(Option<usize>, Option<usize>, Request)>,
    session: Option<HostSession>,
    learning: Vec<usize>,
    end: Option<RoundEnd>,
    bytes: Bytes,
    attempts: u32,
    /// Per client: asked to learn this round and its release not yet in.
    awaiting: Vec<bool>,
    /// Per client: silent for the rest of this round ([`Federation::drop_out`]).
    dropped: Vec<bool>,
    /// Per client: this round's time and bytes.
    usage: Vec<Usage>,
    /// Time inside the host session's calls this round.
    host_time: Duration,
    /// How this round sums the uploads, in words ([`HostSession::aggregation`]).
    described: String,
}

impl Federation {
    /// A federation of `n` clients whose uploads are clipped to `clip` (and noised with
    /// multiplier `noise_multiplier`, 0 for none), summed securely when `secure`; keys and
    /// graph seeds come from `seed`.
    pub fn new(
        n: usize,
        secure: bool,
        clip: f64,
        noise_multiplier: f64,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let host = b"sim-host".to_vec();
        let peers: Vec<PeerBytes> = (0..n)
            .map(|k| format!("sim-client-{k}").into_bytes())
            .collect();
        let keys = (0..n)
            .map(|_| {
                let mut s = [0u8; 32];
                rng.fill_bytes(&mut s);
                Ed25519KeyPair::from_seed_unchecked(&s)
                    .map_err(|e| anyhow::anyhow!("client key: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let participants = peers
            .iter()
            .zip(&keys)
            .map(|(peer, key)| -> anyhow::Result<Participant> {
                Ok(Participant {
                    peer: peer.clone(),
                    identity: key.public_key().as_ref().try_into()?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            index: peers
                .iter()
                .cloned()
                .enumerate()
                .map(|(k, p)| (p, k))
                .collect(),
            host,
            peers,
            keys,
            participants,
            clients: (0..n).map(|_| ClientSession::accepting_plain()).collect(),
            aggregation: if secure {
                Aggregation::Secure
            } else {
                Aggregation::Plain
            },
            // One tick per delivery pass; the in-memory transport loses nothing, so a stage
            // waits for its deadline only when a client dropped out (`drop_out`).
            policy: RoundPolicy {
                stage_ticks: 1,
                clip,
                noise_multiplier,
            },
            rng,
            wire: VecDeque::new(),
            session: None,
            learning: Vec::new(),
            end: None,
            bytes: Bytes::default(),
            attempts: 0,
            awaiting: vec![false; n],
            dropped: vec![false; n],
            usage: vec![Usage::default(); n],
            host_time: Duration::ZERO,
            described: String::new(),
        })
    }

    /// Opens a round: the host's offer reaches every client (and, with secure aggregation,
    /// the key exchange runs up to where the clients must learn). Returns the clients that
    /// were asked to learn, in order. Dropouts, usage and bytes of the last round are cleared.
    pub fn open(&mut self, start: RoundStart) -> anyhow::Result<Vec<usize>> {
        let mut graph_seed = [0u8; 32];
        self.rng.fill_bytes(&mut graph_seed);
        let open = OpenRound {
            term: TERM,
            attempt: self.attempts,
            start: Box::new(start),
            participants: self.participants.clone(),
            host: self.host.clone(),
            members: self.peers.len() + 1,
            graph_seed,
            aggregation: self.aggregation,
        };
        self.attempts += 1;
        self.bytes = Bytes::default();
        self.end = None;
        self.learning.clear();
        self.awaiting.fill(false);
        self.dropped.fill(false);
        self.usage.fill(Usage::default());
        self.host_time = Duration::ZERO;
        let t = Instant::now();
        let (session, effects) = HostSession::open(open, self.policy)?;
        self.host_time += t.elapsed();
        self.described = session.aggregation().to_string();
        self.session = Some(session);
        self.host_effects(effects);
        self.run()?;
        let learning = std::mem::take(&mut self.learning);
        for &k in &learning {
            self.awaiting[k] = true;
        }
        Ok(learning)
    }

    /// Client `k` goes silent for the rest of the round, as a crashed node does: nothing sent
    /// to it is delivered, it sends nothing more and releases nothing. Called after [`open`]
    /// (which ran the key exchange), it is secure aggregation's worst case: its keys and
    /// shares are out but its masked input never comes. The stages waiting for it close on
    /// their deadline once nothing else is in flight and every other client has released.
    ///
    /// [`open`]: Federation::open
    pub fn drop_out(&mut self, k: usize) -> anyhow::Result<()> {
        let Some(dropped) = self.dropped.get_mut(k) else {
            anyhow::bail!("no client {k}");
        };
        *dropped = true;
        self.awaiting[k] = false;
        self.settle()
    }

    /// Whether client `k` dropped out of this round.
    pub fn is_dropped(&self, k: usize) -> bool {
        self.dropped.get(k).copied().unwrap_or(false)
    }

    /// How the last opened round sums the uploads, in words (e.g. "SecAgg+ (k = 18
    /// neighbours, t = 10, N = 40)"); empty before the first round.
    pub fn aggregation(&self) -> &str {
        &self.described
    }

    /// The host's timing, quorum and encoding policy.
    pub fn policy(&self) -> RoundPolicy {
        self.policy
    }

    /// What each client spent in the round so far, by client index.
    pub fn client_usage(&self) -> &[Usage] {
        &self.usage
    }

    /// What the host spent in the round so far: its time, and every byte it sent to or got
    /// from a client.
    pub fn host_usage(&self) -> Usage {
        Usage {
            time: self.host_time,
            sent: self.bytes.down,
            received: self.bytes.up,
        }
    }

    /// What client `k`'s release this round must fit.
    pub fn plan(&self, k: usize) -> anyhow::Result<ReleasePlan> {
        let (term, round, attempt) = self
            .clients
            .get(k)
            .and_then(ClientSession::engaged)
            .ok_or_else(|| anyhow::anyhow!("client {k} is in no round"))?;
        self.clients[k]
            .release_plan(term, round, attempt)
            .ok_or_else(|| anyhow::anyhow!("client {k} has no release plan"))
    }

    /// Client `k`'s release is ready (privatised, or refused by its ledger): its session
    /// masks and sends it, or tells the host it sits the round out.
    pub fn released(
        &mut self,
        k: usize,
        plan: &ReleasePlan,
        release: Release,
    ) -> anyhow::Result<()> {
        let client = self
            .clients
            .get_mut(k)
            .ok_or_else(|| anyhow::anyhow!("no client {k}"))?;
        anyhow::ensure!(!self.dropped[k], "client {k} dropped out of the round");
        self.awaiting[k] = false;
        let t = Instant::now();
        let effects = match release {
            Release::Noised(values) => client.on_released(plan, &values),
            Release::BudgetExhausted => Ok(client.sit_out(plan, AbstainReason::BudgetExhausted)),
        };
        self.usage[k].time += t.elapsed();
        self.client_effects(k, effects?);
        self.run()?;
        self.settle()
    }

    /// How the round ended, once every client answered; `None` while it is still open.
    pub fn end(&mut self) -> Option<RoundEnd> {
        let end = self.end.take();
        if end.is_some() {
            self.session = None;
            for c in &mut self.clients {
                c.leave();
            }
        }
        end
    }

    /// Bytes moved in the round so far.
    pub fn bytes(&self) -> Bytes {
        self.bytes
    }

    /// Once nothing is in flight and no client is left to release, ticks the host's clock
    /// (one tick per pass, delivering what each tick causes) until the round ends: the
    /// stages waiting for dropped clients close on their deadline. Without dropouts the
    /// round has ended by then and this does nothing.
    fn settle(&mut self) -> anyhow::Result<()> {
        let mut ticks = 0;
        while self.end.is_none() && self.wire.is_empty() && !self.awaiting.contains(&true) {
            let Some(session) = self.session.as_mut() else {
                return Ok(());
            };
            if !matches!(session.stage(), HostStage::Aggregate) {
                return Ok(());
            }
            anyhow::ensure!(
                ticks < MAX_SETTLE_TICKS,
                "the round's stages did not close within {MAX_SETTLE_TICKS} ticks"
            );
            ticks += 1;
            let t = Instant::now();
            let effects = session.on_tick();
            self.host_time += t.elapsed();
            self.host_effects(effects);
            self.run()?;
        }
        Ok(())
    }

    /// Delivers everything in flight, and what it causes, in order; what a dropped client
    /// would send or receive is discarded.
    fn run(&mut self) -> anyhow::Result<()> {
        while let Some((from, to, request)) = self.wire.pop_front() {
            if [from, to].into_iter().flatten().any(|k| self.dropped[k]) {
                continue;
            }
            let size = wire::encoded_len(&request)?;
            match to {
                None => {
                    self.bytes.up += size;
                    let Some(k) = from else { continue };
                    self.usage[k].sent += size;
                    let sender = self.peers[k].clone();
                    let Some(session) = self.session.as_mut() else {
                        continue;
                    };
                    let t = Instant::now();
                    let effects = match request {
                        Request::SecAgg(p) => session.on_secagg(&sender, p),
                        Request::Upload(p) => session.on_upload(&sender, p),
                        Request::Abstain {
                            term,
                            round,
                            attempt,
                            ..
                        } => session.on_abstain(&sender, term, round, attempt),
                        other => anyhow::bail!("the host got a {:?} request", other.kind()),
                    };
                    self.host_time += t.elapsed();
                    let effects =
                        effects.map_err(|e| anyhow::anyhow!("the host refused client {k}: {e}"))?;
                    self.host_effects(effects);
                }
                Some(k) => {
                    self.bytes.down += size;
                    self.usage[k].received += size;
                    let view = ClientView {
                        me: &self.peers[k],
                        leader: Some(&self.host),
                        term: TERM,
                        last_completed: 0,
                    };
                    let client = &mut self.clients[k];
                    let t = Instant::now();
                    let effects = match request {
                        Request::Offer(offer) => client.on_offer(
                            &self.host,
                            *offer,
                            view,
                            false,
                            &self.keys[k],
                            &mut self.rng,
                        ),
                        Request::SecAgg(p) => client.on_secagg(&self.host, p),
                        other => anyhow::bail!("client {k} got a {:?} request", other.kind()),
                    };
                    self.usage[k].time += t.elapsed();
                    let effects =
                        effects.map_err(|e| anyhow::anyhow!("client {k} refused the host: {e}"))?;
                    self.client_effects(k, effects);
                }
            }
        }
        Ok(())
    }

    fn host_effects(&mut self, effects: Vec<HostEffect>) {
        for effect in effects {
            match effect {
                HostEffect::Send { to, request } => {
                    let to = self.index.get(&to).copied();
                    if to.is_some() {
                        self.wire.push_back((None, to, request));
                    }
                }
                HostEffect::Improve { sum, .. } => {
                    let included = self.session.as_ref().map_or(0, |s| s.included().len());
                    self.end = Some(RoundEnd::Sum { sum, included });
                }
                HostEffect::Abandoned { reason } => self.end = Some(RoundEnd::Abandoned(reason)),
                HostEffect::Phase { .. } | HostEffect::Completed => {}
            }
        }
    }

    fn client_effects(&mut self, k: usize, effects: Vec<ClientEffect>) {
        for effect in effects {
            match effect {
                ClientEffect::Send { request, .. } => self.wire.push_back((Some(k), None, request)),
                ClientEffect::Learn { .. } => self.learning.push(k),
                ClientEffect::Phase { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> RoundStart {
        RoundStart {
            round: 1,
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

    /// Client `k`'s upload, built as honest clients build theirs for prompts (0, 1, 0): a
    /// share (k + 1)/8 of class 0 (binary fractions, so sums are exact).
    fn upload(k: usize) -> Vec<f32> {
        protocol::UploadLayout {
            samples: 3,
            classes: 2,
            moments: 0,
        }
        .build(
            &[0.5, 0.5, 0.25, 0.75, 0.75, 0.25],
            &[0, 1, 0],
            &[(k + 1) as f64, (7 - k) as f64],
            None,
        )
        .unwrap()
    }

    /// Runs one round of `n` clients; the clients in `abstain` sit it out.
    fn round(n: usize, secure: bool, abstain: &[usize]) -> (Option<RoundEnd>, Bytes) {
        let mut fed = Federation::new(n, secure, 1.0, 0.0, 3).unwrap();
        assert_eq!(fed.open(start()).unwrap(), (0..n).collect::<Vec<_>>());
        for k in 0..n {
            let plan = fed.plan(k).unwrap();
            let release = if abstain.contains(&k) {
                Release::BudgetExhausted
            } else {
                Release::Noised(upload(k))
            };
            fed.released(k, &plan, release).unwrap();
        }
        (fed.end(), fed.bytes())
    }

    #[test]
    fn plain_and_secure_rounds_release_the_same_sum_and_secure_costs_more_bytes() {
        let want: Vec<f64> = (0..8)
            .map(|j| (0..4).map(|k| f64::from(upload(k)[j])).sum())
            .collect();
        let (plain, plain_bytes) = round(4, false, &[]);
        assert_eq!(
            plain,
            Some(RoundEnd::Sum {
                sum: want.clone(),
                included: 4
            })
        );
        let (Some(RoundEnd::Sum { sum, included }), secure_bytes) = round(4, true, &[]) else {
            panic!("no secure sum");
        };
        assert_eq!(included, 4);
        for (a, b) in sum.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!(plain_bytes.down > 0 && plain_bytes.up > 0);
        assert!(secure_bytes.up > plain_bytes.up && secure_bytes.down > plain_bytes.down);
    }

    #[test]
    fn clients_that_drop_after_the_key_exchange_are_left_out_once_the_stages_time_out() {
        let n = 6;
        let mut fed = Federation::new(n, true, 1.0, 0.0, 3).unwrap();
        assert_eq!(fed.open(start()).unwrap(), (0..n).collect::<Vec<_>>());
        assert!(
            fed.aggregation().starts_with("SecAgg (complete graph"),
            "{}",
            fed.aggregation()
        );
        let after_keys = fed.client_usage().to_vec();
        let plans: Vec<ReleasePlan> = (0..n).map(|k| fed.plan(k).unwrap()).collect();
        fed.drop_out(1).unwrap();
        fed.drop_out(4).unwrap();
        assert!(fed.is_dropped(1) && !fed.is_dropped(0));
        assert!(fed.drop_out(n).is_err());
        assert!(fed
            .released(1, &plans[1], Release::Noised(upload(1)))
            .is_err());
        let survivors = [0, 2, 3, 5];
        for &k in &survivors {
            assert!(
                fed.end().is_none(),
                "the round ended before client {k} released"
            );
            fed.released(k, &plans[k], Release::Noised(upload(k)))
                .unwrap();
        }
        let Some(RoundEnd::Sum { sum, included }) = fed.end() else {
            panic!("no sum");
        };
        assert_eq!(included, survivors.len());
        for (j, s) in sum.iter().enumerate() {
            let want: f64 = survivors.iter().map(|&k| f64::from(upload(k)[j])).sum();
            assert!((s - want).abs() < 1e-5, "coordinate {j}: {s} vs {want}");
        }
        // Per-party accounts add up to the host's, and the dropped clients stopped at the
        // key exchange.
        let usage = fed.client_usage();
        let host = fed.host_usage();
        assert_eq!(usage.iter().map(|u| u.sent).sum::<usize>(), host.received);
        assert_eq!(usage.iter().map(|u| u.received).sum::<usize>(), host.sent);
        assert_eq!(
            (host.sent, host.received),
            (fed.bytes().down, fed.bytes().up)
        );
        for k in [1, 4] {
            assert_eq!(usage[k], after_keys[k], "client {k} kept talking");
            assert!(usage[k].sent > 0 && usage[k].received > 0);
        }
        for &k in &survivors {
            assert!(
                usage[k].sent > after_keys[k].sent && usage[k].received > after_keys[k].received
            );
            assert!(usage[k].time > after_keys[k].time);
        }
        assert!(host.time > Duration::ZERO);
    }

    #[test]
    fn too_many_dropouts_abandon_a_secure_round_on_the_deadline() {
        let n = 5;
        let mut fed = Federation::new(n, true, 1.0, 0.0, 3).unwrap();
        fed.open(start()).unwrap();
        for k in 0..3 {
            fed.drop_out(k).unwrap();
        }
        for k in 3..n {
            let plan = fed.plan(k).unwrap();
            fed.released(k, &plan, Release::Noised(upload(k))).unwrap();
        }
        let end = fed.end();
        assert!(matches!(end, Some(RoundEnd::Abandoned(_))), "{end:?}");
    }

    #[test]
    fn an_abstention_ends_a_plain_round_but_not_a_secure_one() {
        let (end, _) = round(4, false, &[2]);
        assert!(matches!(end, Some(RoundEnd::Abandoned(_))), "{end:?}");
        let (end, _) = round(4, true, &[2]);
        assert!(
            matches!(end, Some(RoundEnd::Sum { included: 3, .. })),
            "{end:?}"
        );
    }
}
