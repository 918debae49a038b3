//! The round's sans-IO sessions driven against each other in-process: a host session and
//! real client sessions (the host among them, as in the node) exchange their effects through
//! a direct in-memory transport, with real secure aggregation and the real release path.
//! Every transition a node relies on is exercised here without a socket.

use std::collections::VecDeque;

use privacy::ledger::{Budget, Ledger};
use privacy::secagg::AggregatorStage;
use protocol::round::client::ClientView;
use protocol::round::{HostStage, RoundError, Sender};
use protocol::session::release::{PrivacyPlan, Release, Releaser};
use protocol::session::{
    ClientEffect, ClientSession, HostEffect, HostSession, OpenRound, Replication, RoundPolicy,
};
use protocol::wire::{Aggregation, CheckpointTransfer, Participant, Phase, Request, SecAggPacket};
use protocol::{AbstainReason, Refusal, RoundStart, UploadLayout};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use ring::signature::{Ed25519KeyPair, KeyPair};

const TERM: u64 = 3;
const ROUND: u64 = 1;
const STAGE_TICKS: u64 = 5;

fn peer(i: usize) -> Vec<u8> {
    vec![0xA0, i as u8]
}

fn key(i: usize) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[i as u8 + 1; 32]).unwrap()
}

/// A synthetic set of 3 samples of 2 classes: uploads have 3·2 + 2 = 8 values.
fn start() -> RoundStart {
    RoundStart {
        round: ROUND,
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

/// Node `k`'s upload, built as honest clients build theirs for [`start`]'s prompts
/// (0, 1, 0): a share (k + 1)/20 of class 0 and distinct predictions, so the sum identifies
/// who is in it (and the host's check of the sum passes).
fn upload(k: usize) -> Vec<f32> {
    let q = 0.1 + 0.01 * k as f32;
    UploadLayout {
        samples: 3,
        classes: 2,
        moments: 0,
    }
    .build(
        &[q, 1.0 - q, 0.3, 0.7, 0.7, 0.3],
        &[0, 1, 0],
        &[(k + 1) as f64, (19 - k) as f64],
        None,
    )
    .unwrap()
}

/// A federation of `n` nodes; node 0 hosts and contributes.
struct Fed {
    host: HostSession,
    clients: Vec<ClientSession>,
    keys: Vec<Ed25519KeyPair>,
    /// (from, to, request) not yet delivered.
    wire: VecDeque<(usize, usize, Request)>,
    /// Clients whose learning finished (a `Learn` effect arrived), in order.
    learned: Vec<usize>,
    /// Host effects other than sends, in order.
    host_out: Vec<HostEffect>,
    /// Client phases seen, per client.
    phases: Vec<Vec<Phase>>,
    /// Refusals, as (receiver, refusal).
    refused: Vec<(usize, Refusal)>,
    /// Clients that do not answer (crashed): their traffic is dropped.
    silent: Vec<usize>,
    /// Everything delivered, in order.
    log: Vec<(usize, usize, Request)>,
    rng: ChaCha20Rng,
}

impl Fed {
    fn new(n: usize) -> Self {
        Self::with(n, Aggregation::Secure, ClientSession::new)
    }

    /// A federation whose host offers `aggregation` to clients made by `client`.
    fn with(n: usize, aggregation: Aggregation, client: fn() -> ClientSession) -> Self {
        Self::noised(n, aggregation, client, 0.0)
    }

    /// [`Fed::with`], the host expecting client-level noise of multiplier `z` on the uploads.
    fn noised(n: usize, aggregation: Aggregation, client: fn() -> ClientSession, z: f64) -> Self {
        let keys: Vec<Ed25519KeyPair> = (0..n).map(key).collect();
        let participants = (0..n)
            .map(|i| Participant {
                peer: peer(i),
                identity: keys[i].public_key().as_ref().try_into().unwrap(),
            })
            .collect();
        let open = OpenRound {
            term: TERM,
            attempt: 0,
            start: Box::new(start()),
            participants,
            host: peer(0),
            members: n,
            graph_seed: [9; 32],
            aggregation,
        };
        let policy = RoundPolicy {
            stage_ticks: STAGE_TICKS,
            clip: 1.0,
            noise_multiplier: z,
        };
        let (host, effects) = HostSession::open(open, policy).unwrap();
        let mut fed = Fed {
            host,
            clients: (0..n).map(|_| client()).collect(),
            keys,
            wire: VecDeque::new(),
            learned: Vec::new(),
            host_out: Vec::new(),
            phases: vec![Vec::new(); n],
            refused: Vec::new(),
            silent: Vec::new(),
            log: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(7),
        };
        fed.host_effects(effects);
        fed
    }

    fn index(p: &[u8]) -> usize {
        p[1] as usize
    }

    fn host_effects(&mut self, effects: Vec<HostEffect>) {
        for e in effects {
            match e {
                HostEffect::Send { to, request } => {
                    self.wire.push_back((0, Self::index(&to), request))
                }
                other => self.host_out.push(other),
            }
        }
    }

    fn client_effects(&mut self, k: usize, effects: Vec<ClientEffect>) {
        for e in effects {
            match e {
                ClientEffect::Send { to, request } => {
                    self.wire.push_back((k, Self::index(&to), request))
                }
                ClientEffect::Phase { phase, .. } => self.phases[k].push(phase),
                ClientEffect::Learn { .. } => self.learned.push(k),
            }
        }
    }

    /// Delivers everything in flight (and what it causes), client → host requests to the
    /// host's session, host → client requests to the clients'.
    fn run(&mut self) {
        while let Some((from, to, req)) = self.wire.pop_front() {
            if self.silent.contains(&from) || self.silent.contains(&to) {
                continue;
            }
            self.log.push((from, to, req.clone()));
            self.deliver(from, to, req);
        }
    }

    fn deliver(&mut self, from: usize, to: usize, req: Request) {
        // Node 0's requests to itself go to its host side when they come from its client side.
        let is_host_side = to == 0 && (from != 0 || client_to_host(&req));
        if is_host_side {
            let result = match req {
                Request::SecAgg(p) => self.host.on_secagg(&peer(from), p),
                Request::Upload(p) => self.host.on_upload(&peer(from), p),
                Request::Abstain {
                    term,
                    round,
                    attempt,
                    ..
                } => self.host.on_abstain(&peer(from), term, round, attempt),
                other => panic!("host got {other:?}"),
            };
            match result {
                Ok(effects) => self.host_effects(effects),
                Err(r) => self.refused.push((0, r)),
            }
        } else {
            let view = ClientView {
                me: &peer(to),
                leader: Some(&peer(0)),
                term: TERM,
                last_completed: ROUND - 1,
            };
            let result = match req {
                Request::Offer(offer) => {
                    let key = &self.keys[to];
                    self.clients[to].on_offer(&peer(from), *offer, view, false, key, &mut self.rng)
                }
                Request::SecAgg(p) => self.clients[to].on_secagg(&peer(from), p),
                Request::Checkpoint(_) => Ok(Vec::new()),
                other => panic!("client got {other:?}"),
            };
            match result {
                Ok(effects) => self.client_effects(to, effects),
                Err(r) => self.refused.push((to, r)),
            }
        }
    }

    /// Client `k` finished learning: its upload is released as is (no noise) and masked.
    fn release_plain(&mut self, k: usize) {
        let plan = self.clients[k].release_plan(TERM, ROUND, 0).unwrap();
        let effects = self.clients[k].on_released(&plan, &upload(k)).unwrap();
        self.client_effects(k, effects);
    }

    fn improve(&self) -> Option<&Vec<f64>> {
        self.host_out.iter().find_map(|e| match e {
            HostEffect::Improve { sum, .. } => Some(sum),
            _ => None,
        })
    }

    fn abandoned(&self) -> Option<&str> {
        self.host_out.iter().find_map(|e| match e {
            HostEffect::Abandoned { reason } => Some(reason.as_str()),
            _ => None,
        })
    }
}

/// A request that travels from a client side to a host side.
fn client_to_host(req: &Request) -> bool {
    match req {
        Request::SecAgg(p) => privacy::secagg::ClientMessage::decode(&p.payload, p.round).is_ok(),
        Request::Abstain { .. } | Request::Upload(_) => true,
        _ => false,
    }
}

fn assert_sum_of(sum: &[f64], who: &[usize]) {
    for (j, s) in sum.iter().enumerate() {
        let want: f64 = who.iter().map(|&k| f64::from(upload(k)[j])).sum();
        assert!(
            (s - want).abs() < 1e-4,
            "value {j}: {s} vs {want} for {who:?}"
        );
    }
}

#[test]
fn a_round_between_real_sessions_releases_the_exact_sum_and_counts_on_a_majority() {
    let mut fed = Fed::new(4);
    assert_eq!(
        fed.host_out,
        vec![HostEffect::Phase {
            phase: Phase::Learn,
            participants: 4
        }]
    );
    fed.run();
    assert_eq!(
        fed.learned,
        vec![0, 1, 2, 3],
        "every node, the host too, learns"
    );
    assert_eq!(
        fed.host.secagg_stage(),
        Some(AggregatorStage::CollectMaskedInputs)
    );
    // The shares arrived before the uploads were ready: held, not answered.
    assert!(fed.wire.is_empty());
    for k in 0..4 {
        fed.release_plain(k);
        fed.run();
        assert_eq!(fed.phases[k], vec![Phase::Learn, Phase::Aggregate]);
    }
    assert!(fed.refused.is_empty(), "{:?}", fed.refused);
    assert_sum_of(fed.improve().expect("the sum is out"), &[0, 1, 2, 3]);
    assert_eq!(fed.host.stage(), HostStage::Improve);
    assert_eq!(fed.host.included().len(), 4);

    // The checkpoint goes to two of the three other members: with the host, a majority of
    // four; the third fetches it later from a holder.
    let t = CheckpointTransfer {
        term: TERM,
        round: ROUND,
        hash: [1; 32],
        base: None,
        bytes: vec![1, 2, 3],
    };
    let effects = fed.host.on_improved(Replication {
        full: t,
        delta: None,
        candidates: vec![(peer(1), false), (peer(2), false), (peer(3), false)],
    });
    assert_eq!(effects.len(), 3, "a phase and two sends: {effects:?}");
    assert_eq!(fed.host.stage(), HostStage::Replicate);
    assert_eq!(fed.host.on_replica(&peer(1), TERM, ROUND), Ok(vec![]));
    assert_eq!(
        fed.host.on_replica(&peer(1), TERM, ROUND),
        Ok(vec![]),
        "one replica"
    );
    let done = fed.host.on_replica(&peer(2), TERM, ROUND).unwrap();
    assert_eq!(done[0], HostEffect::Completed);
    assert_eq!(
        fed.host.on_replica(&peer(3), TERM, ROUND),
        Err(RoundError::AlreadyDone(ROUND))
    );
}

#[test]
fn an_abstaining_client_is_not_waited_for_and_two_others_still_release_a_sum() {
    let mut fed = Fed::new(4);
    fed.run();
    let plan = fed.clients[3].release_plan(TERM, ROUND, 0).unwrap();
    let effects = fed.clients[3].sit_out(&plan, AbstainReason::StorageFull);
    fed.client_effects(3, effects);
    assert_eq!(fed.clients[3].engaged(), None, "it left the round");
    for k in 0..3 {
        fed.release_plain(k);
    }
    fed.run();
    assert_sum_of(fed.improve().expect("the sum is out"), &[0, 1, 2]);
}

#[test]
fn a_sum_of_the_host_and_one_other_is_never_unmasked() {
    // Three nodes: secure aggregation's threshold is 2, so only the host's own rule stops a
    // sum from which it could subtract its input and read the other one's.
    let mut fed = Fed::new(3);
    fed.run();
    let plan = fed.clients[2].release_plan(TERM, ROUND, 0).unwrap();
    let effects = fed.clients[2].sit_out(&plan, AbstainReason::BudgetExhausted);
    fed.client_effects(2, effects);
    fed.release_plain(0);
    fed.release_plain(1);
    fed.run();
    assert!(fed.improve().is_none());
    let reason = fed.abandoned().expect("abandoned");
    assert!(reason.contains("not unmasking"), "{reason}");
    assert_eq!(fed.host.stage(), HostStage::Abandoned);
}

#[test]
fn a_silent_client_is_dropped_at_the_deadline_and_the_rest_are_summed() {
    let mut fed = Fed::new(5);
    fed.run();
    fed.silent.push(4);
    for k in 0..4 {
        fed.release_plain(k);
    }
    fed.run();
    assert!(fed.improve().is_none(), "still waiting for client 4");
    // The masked-input stage covers learning: four stage lengths.
    for _ in 0..STAGE_TICKS * 4 - 1 {
        assert!(fed.host.on_tick().is_empty());
    }
    let effects = fed.host.on_tick();
    fed.host_effects(effects);
    fed.run();
    assert_sum_of(fed.improve().expect("the sum is out"), &[0, 1, 2, 3]);
}

#[test]
fn a_departed_participant_stops_the_wait_without_a_deadline() {
    let mut fed = Fed::new(5);
    fed.run();
    fed.silent.push(4);
    for k in 0..4 {
        fed.release_plain(k);
    }
    fed.run();
    let effects = fed.host.on_peer_gone(&peer(4));
    fed.host_effects(effects);
    fed.run();
    assert_sum_of(fed.improve().expect("the sum is out"), &[0, 1, 2, 3]);
    assert!(
        fed.host.on_peer_gone(&peer(4)).is_empty(),
        "after the sum: nothing"
    );
}

#[test]
fn sessions_refuse_what_is_not_theirs() {
    let mut fed = Fed::new(4);
    fed.run();
    let packet = |attempt, round| SecAggPacket {
        term: TERM,
        round,
        attempt,
        payload: vec![0; 4],
    };
    // Host: another attempt, a non-participant, another round, garbage.
    assert_eq!(
        fed.host.on_secagg(&peer(1), packet(1, ROUND)).err(),
        Some(Refusal::Round(RoundError::WrongAttempt {
            got: 1,
            current: 0
        }))
    );
    assert_eq!(
        fed.host.on_secagg(&peer(9), packet(0, ROUND)).err(),
        Some(Refusal::Round(RoundError::WrongSender(Sender::Participant)))
    );
    assert!(matches!(
        fed.host.on_secagg(&peer(1), packet(0, ROUND + 1)),
        Err(Refusal::Round(RoundError::WrongRound { .. }))
    ));
    assert!(matches!(
        fed.host.on_secagg(&peer(1), packet(0, ROUND)),
        Err(Refusal::SecAgg(_))
    ));
    // A client's message claiming another sender is refused.
    let mut stolen = None;
    fed.release_plain(1);
    while let Some((from, to, req)) = fed.wire.pop_front() {
        if from == 1 && to == 0 {
            stolen = Some(req);
        }
    }
    let Some(Request::SecAgg(p)) = stolen else {
        panic!("client 1 sent nothing");
    };
    assert!(matches!(
        fed.host.on_secagg(&peer(2), p),
        Err(Refusal::Invalid(_))
    ));
    // Client: garbage; a real host message replayed by another member; outside a round.
    assert!(matches!(
        fed.clients[2].on_secagg(&peer(0), packet(0, ROUND)),
        Err(Refusal::SecAgg(_))
    ));
    let replay = fed
        .log
        .iter()
        .find_map(|(from, to, req)| match req {
            Request::SecAgg(p) if *from == 0 && *to == 2 => Some(p.clone()),
            _ => None,
        })
        .expect("the host wrote to client 2");
    assert_eq!(
        fed.clients[2].on_secagg(&peer(3), replay).err(),
        Some(Refusal::Round(RoundError::WrongSender(Sender::RoundHost)))
    );
    assert_eq!(
        ClientSession::new()
            .on_secagg(&peer(0), packet(0, ROUND))
            .err(),
        Some(Refusal::NoRound)
    );
    assert!(matches!(
        fed.clients[2].on_secagg(&peer(0), packet(5, ROUND)),
        Err(Refusal::Round(RoundError::WrongAttempt {
            got: 5,
            current: 0
        }))
    ));
    // A release for an attempt the client is not in is refused.
    let mut plan = fed.clients[2].release_plan(TERM, ROUND, 0).unwrap();
    plan.attempt = 4;
    assert_eq!(
        fed.clients[2].on_released(&plan, &upload(2)).err(),
        Some(Refusal::NoRound)
    );
    assert_eq!(fed.clients[2].release_plan(TERM, ROUND, 4), None);
}

#[test]
fn a_sum_no_honest_contributors_could_make_abandons_the_round() {
    // Client 2 masks an input whose every value is within the encoding's bound, so masking
    // accepts it and nobody sees it; only the sum shows what it did.
    // (value, what it adds to it, what the refusal says)
    let hostile = [
        // A boosted class: sample 0's predictions no longer sum to its class's share.
        (1, 0.9, "not to the share"),
        // A value near the largest the encoding allows (16).
        (4, 15.0, "outside [0, 3]"),
        // Class shares claimed for data it does not have.
        (6, 3.0, "outside [0, 3]"),
    ];
    for (at, add, says) in hostile {
        let mut fed = Fed::new(3);
        fed.run();
        fed.release_plain(0);
        fed.release_plain(1);
        let plan = fed.clients[2].release_plan(TERM, ROUND, 0).unwrap();
        let mut input = upload(2);
        input[at] += add;
        let effects = fed.clients[2].on_released(&plan, &input).unwrap();
        fed.client_effects(2, effects);
        fed.run();
        assert!(
            fed.improve().is_none(),
            "{says}: the sum reached the generator"
        );
        let reason = fed.abandoned().expect("the round is abandoned");
        assert!(
            reason.contains("impossible aggregate") && reason.contains(says),
            "{says}: {reason}"
        );
    }
}

#[test]
fn the_release_path_charges_the_ledger_before_the_upload_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    let privacy = PrivacyPlan {
        epsilon: 4.0,
        delta: 1e-5,
        clip: 1.0,
        planned_rounds: 1,
    };
    // The host expects the noise the clients' budgets call for: their noised sum passes its
    // check of what honest uploads could sum to.
    let z = Releaser::new(privacy).aggregate_noise_multiplier().unwrap();
    let mut fed = Fed::noised(3, Aggregation::Secure, ClientSession::new, z);
    fed.run();
    let mut ledgers = Vec::new();
    for k in 0..3 {
        let ledger = Ledger::open(&dir.path().join(format!("n{k}"))).unwrap();
        ledger.set_budget(Budget::new(4.0, 1e-5).unwrap()).unwrap();
        let mut releaser = Releaser::new(privacy);
        let plan = fed.clients[k].release_plan(TERM, ROUND, 0).unwrap();
        assert_eq!((plan.participants, plan.noise_shares, plan.dim), (3, 2, 8));
        let Release::Noised(noised) = releaser
            .release(&ledger, &plan, format!("n{k}"), &upload(k))
            .unwrap()
        else {
            panic!("refused");
        };
        assert!(noised.iter().all(|v| v.abs() <= plan.bound));
        assert_eq!(ledger.entries().unwrap().len(), 1);
        // The budget covers one release of this shape: a second is refused.
        assert_eq!(
            releaser
                .release(&ledger, &plan, format!("n{k}"), &upload(k))
                .unwrap(),
            Release::BudgetExhausted
        );
        let effects = fed.clients[k].on_released(&plan, &noised).unwrap();
        fed.client_effects(k, effects);
        ledgers.push(ledger);
    }
    fed.run();
    assert_eq!(fed.abandoned(), None);
    let sum = fed.improve().expect("the sum is out");
    assert_eq!(sum.len(), 8);
    assert!(ledgers.iter().all(|l| l.verify().is_ok()));
}

#[test]
fn a_plain_round_sums_uploads_in_the_clear_only_for_clients_that_accept_it() {
    let mut fed = Fed::with(4, Aggregation::Plain, ClientSession::accepting_plain);
    fed.run();
    assert_eq!(fed.learned, vec![0, 1, 2, 3]);
    assert_eq!(fed.host.secagg_stage(), None);
    for k in 0..3 {
        fed.release_plain(k);
    }
    fed.run();
    assert!(
        fed.improve().is_none(),
        "a plain sum waits for every upload"
    );
    fed.release_plain(3);
    fed.run();
    assert!(fed.refused.is_empty(), "{:?}", fed.refused);
    let sum = fed.improve().expect("the sum is out").clone();
    assert_sum_of(&sum, &[0, 1, 2, 3]);
    assert_eq!(fed.host.included().len(), 4);

    // An upload of the wrong length, or with a value that is not finite, is refused and says
    // which; the round still waits for a good one from that client.
    let mut fed = Fed::with(3, Aggregation::Plain, ClientSession::accepting_plain);
    fed.run();
    let packet = |values| protocol::wire::UploadPacket {
        term: TERM,
        round: ROUND,
        attempt: 0,
        values,
    };
    let mut nan = upload(1);
    nan[2] = f32::NAN;
    let short = upload(1)[1..].to_vec();
    for (values, says) in [
        (nan, "1 of them not finite"),
        (short, "0 of them not finite"),
    ] {
        match fed.host.on_upload(&peer(1), packet(values)) {
            Err(Refusal::Invalid(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    for k in 0..3 {
        fed.release_plain(k);
    }
    fed.run();
    assert!(fed.refused.is_empty(), "{:?}", fed.refused);
    assert_sum_of(fed.improve().expect("the sum is out"), &[0, 1, 2]);

    // A node's client session never sends its upload in the clear.
    let mut fed = Fed::with(4, Aggregation::Plain, ClientSession::new);
    fed.run();
    assert!(fed.learned.is_empty());
    assert_eq!(fed.refused.len(), 4);
    assert!(fed
        .refused
        .iter()
        .all(|(_, r)| matches!(r, Refusal::Invalid(m) if m.contains("secure aggregation"))));

    // A securely aggregated round refuses uploads in the clear.
    let mut fed = Fed::new(3);
    fed.run();
    let upload = protocol::wire::UploadPacket {
        term: TERM,
        round: ROUND,
        attempt: 0,
        values: upload(1),
    };
    assert_eq!(
        fed.host.on_upload(&peer(1), upload).err(),
        Some(Refusal::Round(RoundError::Unexpected(
            protocol::round::Unexpected::PlainUpload
        )))
    );
}
