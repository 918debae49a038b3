//! Round bookkeeping (`HostRound`, `ClientRound`) transition by transition, plus the wire
//! rules of round offers and requests. The real sessions built on this bookkeeping run over
//! the seeded simulated network in `session_simnet.rs`.

use std::collections::BTreeSet;

use proptest::prelude::*;
use protocol::election::{Capability, ElectionMessage};
use protocol::messages::{AbstainReason, RoundStart, TeacherTargets};
use protocol::round::client::ClientView;
use protocol::round::{
    ClientRound, HostRound, HostStage, OfferDecision, RoundError, SecAggDelivery, Sender,
    Unexpected,
};
use protocol::wire::{
    self, Aggregation, Announcement, CheckpointTransfer, Kind, Participant, Phase, Request,
    Response, RoundOffer, SecAggPacket, SecAggSpec, MAX_ANNOUNCEMENT_BYTES, MAX_PARTICIPANTS,
    MAX_PEER_ID_BYTES, MAX_RESPONSE_BYTES,
};
use protocol::ProtocolError;

const TERM: u64 = 5;
const ROUND: u64 = 9;
/// Synthetic set of [`start`]: 3 samples of 2 classes → upload length 3·2 + 2.
const DIM: u32 = 8;

/// PeerId bytes of simulated node `i` (node 0 is the host, 1..=n the clients).
fn peer(i: u32) -> Vec<u8> {
    vec![0x00, 0x24, 0x08, i as u8, (i >> 8) as u8]
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

fn offer_for(term: u64, round: u64, members: &[Vec<u8>]) -> RoundOffer {
    RoundOffer {
        term,
        attempt: 0,
        start: start(round),
        participants: members
            .iter()
            .enumerate()
            .map(|(i, p)| Participant {
                peer: p.clone(),
                identity: [i as u8; 32],
            })
            .collect(),
        aggregation: Aggregation::Secure,
        secagg: SecAggSpec {
            graph_seed: [(term ^ round) as u8; 32],
            neighbors: 2,
            threshold: 2,
            dim: DIM,
            bound: 1.0,
            max_clients: 8,
        },
    }
}

/// Clients 1..=n as participants, in id order.
fn members(n: u32) -> Vec<Vec<u8>> {
    (1..=n).map(peer).collect()
}

/// The secure-aggregation stages that collect client messages (keys, shares, masked inputs,
/// unmask).
const SECAGG_STAGES: u8 = 4;

/// Where a host's round is, with the open secure-aggregation stage's index: the host's
/// bookkeeping state joined with the aggregator's, which these tests stand in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Aggregate(u8),
    Improve,
    Replicate,
    Complete,
    Abandoned,
}

/// A `HostRound` with the aggregator's stage index kept beside it, as a host session does
/// (the session reads it from its aggregator).
#[derive(Debug, Clone)]
struct Staged {
    round: HostRound,
    stage: u8,
    ticks: [u64; SECAGG_STAGES as usize],
}

impl Staged {
    fn new(
        term: u64,
        round: u64,
        members: Vec<Vec<u8>>,
        ticks: [u64; SECAGG_STAGES as usize],
        replicas: usize,
    ) -> Self {
        Self {
            round: HostRound::new(term, round, members, ticks[0], replicas),
            stage: 0,
            ticks,
        }
    }

    fn stage(&self) -> Stage {
        match self.round.stage() {
            HostStage::Aggregate => Stage::Aggregate(self.stage),
            HostStage::Improve => Stage::Improve,
            HostStage::Replicate => Stage::Replicate,
            HostStage::Complete => Stage::Complete,
            HostStage::Abandoned => Stage::Abandoned,
        }
    }

    /// Closes the open stage as the aggregator would: the next one, or Improve after the last.
    fn advance(&mut self, addressed: impl IntoIterator<Item = u32>) {
        if self.round.stage() != HostStage::Aggregate {
            return;
        }
        let next = self.stage + 1;
        if next < SECAGG_STAGES {
            self.stage = next;
            self.round
                .advance(Some(self.ticks[next as usize]), addressed);
        } else {
            self.round.advance(None, []);
        }
    }
}

impl std::ops::Deref for Staged {
    type Target = HostRound;
    fn deref(&self) -> &HostRound {
        &self.round
    }
}

impl std::ops::DerefMut for Staged {
    fn deref_mut(&mut self) -> &mut HostRound {
        &mut self.round
    }
}

fn host_round(n: u32, ticks: [u64; SECAGG_STAGES as usize], replicas: usize) -> Staged {
    Staged::new(TERM, ROUND, members(n), ticks, replicas)
}

/// Closes every aggregation stage with all of `n` addressed: the host is in Improve.
fn to_improve(r: &mut Staged, n: u32) {
    for _ in 0..SECAGG_STAGES {
        r.advance(0..n);
    }
    assert_eq!(r.stage(), Stage::Improve);
}

fn view<'a>(me: &'a [u8], leader: &'a [u8], term: u64, last: u64) -> ClientView<'a> {
    ClientView {
        me,
        leader: Some(leader),
        term,
        last_completed: last,
    }
}

// ---------------------------------------------------------------------------------------------
// HostRound, transition by transition
// ---------------------------------------------------------------------------------------------

#[test]
fn host_accept_checks_term_then_round_then_sender_then_stage() {
    let r = host_round(3, [5; 4], 2);
    assert_eq!(r.stage(), Stage::Aggregate(0));
    assert_eq!((r.term(), r.round()), (TERM, ROUND));
    assert_eq!(r.participants(), members(3).as_slice());
    assert_eq!(
        r.accept(&peer(9), TERM, ROUND),
        Err(RoundError::WrongSender(Sender::Participant))
    );
    assert_eq!(
        r.accept(&peer(1), TERM - 1, ROUND),
        Err(RoundError::WrongTerm {
            got: TERM - 1,
            current: TERM
        })
    );
    assert_eq!(
        r.accept(&peer(1), TERM, ROUND + 1),
        Err(RoundError::WrongRound {
            got: ROUND + 1,
            expected: ROUND
        })
    );
    // Term is judged before round, round before sender.
    assert_eq!(
        r.accept(&peer(9), TERM + 2, ROUND - 1),
        Err(RoundError::WrongTerm {
            got: TERM + 2,
            current: TERM
        })
    );
    assert_eq!(
        r.accept(&peer(9), TERM, ROUND - 1),
        Err(RoundError::WrongRound {
            got: ROUND - 1,
            expected: ROUND
        })
    );
    // A prefix or extension of a participant's id is not that participant.
    assert!(r.accept(&peer(1)[..4], TERM, ROUND).is_err());
    assert!(r.accept(&[peer(1), vec![0]].concat(), TERM, ROUND).is_err());
    for k in 1..=3 {
        assert_eq!(
            r.accept(&peer(k), TERM, ROUND),
            Ok(k - 1),
            "ids follow offer order"
        );
    }

    let mut r = host_round(3, [1; 4], 2);
    to_improve(&mut r, 3);
    assert_eq!(
        r.accept(&peer(1), TERM, ROUND),
        Err(RoundError::Unexpected(Unexpected::SecAggMessage)),
        "no secure-aggregation message once the sum is out"
    );
}

#[test]
fn host_stage_completes_only_when_every_distinct_expected_participant_was_heard() {
    let mut r = host_round(4, [9; 4], 2);
    // Client 0 retransmits five times, client 1 twice: still two of four.
    for _ in 0..5 {
        r.heard(0);
    }
    r.heard(1);
    r.heard(1);
    r.heard(4); // no such participant
    r.heard(u32::MAX);
    assert!(
        !r.stage_complete(),
        "duplicates must not count as other participants"
    );
    r.heard(2);
    assert!(!r.stage_complete());
    r.heard(3);
    assert!(r.stage_complete());

    r.advance([1, 3]);
    assert_eq!(r.stage(), Stage::Aggregate(1));
    assert!(!r.stage_complete(), "heard sets start empty in every stage");
    r.heard(0);
    r.heard(2);
    assert!(
        !r.stage_complete(),
        "participants not addressed in this stage are ignored"
    );
    r.heard(3);
    r.heard(3);
    assert!(!r.stage_complete());
    r.heard(1);
    assert!(r.stage_complete());

    // A stage addressed to nobody has nothing to wait for (the caller decides what that means).
    r.advance([]);
    assert_eq!(r.stage(), Stage::Aggregate(2));
    assert!(r.stage_complete());
}

#[test]
fn host_deadlines_fire_after_exactly_the_stage_ticks_and_reset_per_stage() {
    let ticks = [3, 2, 6, 1];
    let mut r = host_round(3, ticks, 2);
    for (s, &t) in ticks.iter().enumerate() {
        assert_eq!(r.stage(), Stage::Aggregate(s as u8));
        for i in 1..t {
            assert!(
                !r.tick(),
                "stage {s}: deadline fired after {i} of {t} ticks"
            );
        }
        assert!(r.tick(), "stage {s}: deadline after {t} ticks");
        assert!(
            r.tick(),
            "a passed deadline stays passed until the stage closes"
        );
        r.heard(0);
        r.advance([0, 2]);
    }
    assert_eq!(r.stage(), Stage::Improve);
    for _ in 0..50 {
        assert!(!r.tick(), "Improve has no deadline");
    }
    assert!(!r.stage_complete());
    assert_eq!(r.stage(), Stage::Improve);
    // Closing Improve is `replicating`; `advance` there changes nothing.
    r.advance([0, 1, 2]);
    assert_eq!(r.stage(), Stage::Improve);
}

#[test]
fn host_advances_with_the_subset_heard_when_the_deadline_passes() {
    let mut r = host_round(5, [2, 2, 2, 2], 3);
    r.heard(0);
    r.heard(3);
    r.heard(3);
    assert!(!r.tick());
    assert!(r.tick());
    assert!(!r.stage_complete());
    r.advance([0, 3]);
    assert_eq!(r.stage(), Stage::Aggregate(1));
    // The next stage waits for exactly those two, not for the three that stayed silent.
    r.heard(1);
    r.heard(2);
    r.heard(4);
    assert!(!r.stage_complete());
    r.heard(0);
    assert!(!r.stage_complete());
    r.heard(3);
    assert!(r.stage_complete());
}

#[test]
fn host_abstention_releases_the_current_stage_and_every_later_one() {
    let mut r = host_round(3, [5; 4], 2);
    assert_eq!(
        r.abstain(&peer(7), TERM, ROUND),
        Err(RoundError::WrongSender(Sender::Participant))
    );
    assert_eq!(
        r.abstain(&peer(1), TERM + 1, ROUND),
        Err(RoundError::WrongTerm {
            got: TERM + 1,
            current: TERM
        })
    );
    assert_eq!(
        r.abstain(&peer(1), TERM, ROUND - 1),
        Err(RoundError::WrongRound {
            got: ROUND - 1,
            expected: ROUND
        })
    );
    for id in 0..3 {
        r.heard(id);
    }
    r.advance([0, 1, 2]);
    // Client 1 answered stage 1, then its judge step found the budget spent.
    r.heard(1);
    assert_eq!(r.abstain(&peer(2), TERM, ROUND), Ok(1));
    assert_eq!(
        r.abstain(&peer(2), TERM, ROUND),
        Ok(1),
        "a repeated abstention is fine"
    );
    r.heard(0);
    assert!(!r.stage_complete());
    r.heard(2);
    assert!(r.stage_complete(), "the abstainer is not waited for");
    // The aggregator received client 1's stage-1 message, so it addresses it again.
    r.advance([0, 1, 2]);
    r.heard(0);
    r.heard(2);
    assert!(
        r.stage_complete(),
        "an abstainer sits out the rest of the round: stage 2 must not wait for it"
    );
    r.heard(1);
    assert!(r.stage_complete());
    // Abstentions are taken in Improve too (nothing waits there) but not once done.
    r.advance([0, 2]);
    r.advance([]);
    assert_eq!(r.abstain(&peer(3), TERM, ROUND), Ok(2));
    r.replicating(3, members(4));
    assert_eq!(r.replica(&peer(1), TERM, ROUND), Ok(false));
    assert_eq!(r.replica(&peer(2), TERM, ROUND), Ok(true));
    assert_eq!(
        r.abstain(&peer(3), TERM, ROUND),
        Err(RoundError::AlreadyDone(ROUND))
    );
}

#[test]
fn replication_completes_exactly_once_on_distinct_acks_of_this_attempt() {
    let mut r = host_round(4, [1; 4], 3);
    to_improve(&mut r, 4);
    // An ack before the checkpoint went out is not counted later.
    assert_eq!(r.replica(&peer(3), TERM, ROUND), Ok(false));
    assert_eq!(r.stage(), Stage::Improve);
    r.replicating(4, members(4));
    assert_eq!(r.stage(), Stage::Replicate);
    // Only the members the checkpoint was sent to count.
    assert_eq!(
        r.replica(&peer(9), TERM, ROUND),
        Err(RoundError::WrongSender(Sender::CheckpointTarget))
    );
    // Acks of another attempt are refused and not counted.
    assert_eq!(
        r.replica(&peer(4), TERM - 1, ROUND),
        Err(RoundError::WrongTerm {
            got: TERM - 1,
            current: TERM
        })
    );
    assert_eq!(
        r.replica(&peer(4), TERM, ROUND - 1),
        Err(RoundError::WrongRound {
            got: ROUND - 1,
            expected: ROUND
        })
    );
    let mut completions = 0;
    for (i, who) in [1, 1, 2, 1, 2, 2, 1].into_iter().enumerate() {
        assert_eq!(
            r.replica(&peer(who), TERM, ROUND),
            Ok(false),
            "ack #{i}: only two distinct members so far"
        );
    }
    assert_eq!(r.stage(), Stage::Replicate);
    if r.replica(&peer(3), TERM, ROUND) == Ok(true) {
        completions += 1;
    }
    assert_eq!(r.stage(), Stage::Complete);
    for who in [1, 2, 3, 4] {
        match r.replica(&peer(who), TERM, ROUND) {
            Ok(true) => completions += 1,
            other => assert_eq!(other, Err(RoundError::AlreadyDone(ROUND))),
        }
    }
    assert_eq!(completions, 1, "the round completes exactly once");
    // Nothing moves a completed round.
    assert!(!r.tick());
    r.replicating(2, members(4));
    r.advance([0]);
    r.heard(0);
    assert!(!r.stage_complete());
    assert_eq!(r.stage(), Stage::Complete);
    assert_eq!(
        r.accept(&peer(1), TERM, ROUND),
        Err(RoundError::AlreadyDone(ROUND))
    );
}

#[test]
fn replication_deadline_and_a_federation_that_needs_no_replica() {
    let mut r = host_round(3, [1; 4], 2);
    r.replicating(9, members(4));
    assert_eq!(
        r.stage(),
        Stage::Aggregate(0),
        "replicating only closes Improve"
    );
    to_improve(&mut r, 3);
    r.replicating(3, members(4));
    assert_eq!(r.replica(&peer(1), TERM, ROUND), Ok(false));
    assert!(!r.tick() && !r.tick());
    assert!(r.tick(), "replication deadline after 3 ticks");
    assert_eq!(
        r.stage(),
        Stage::Replicate,
        "the caller abandons, not the machine"
    );

    let mut r = host_round(3, [1; 4], 2);
    to_improve(&mut r, 3);
    r.replicating(0, members(4));
    assert!(r.tick(), "a zero replication deadline still lasts one tick");

    let mut r = host_round(3, [1; 4], 0);
    to_improve(&mut r, 3);
    r.replicating(5, members(4));
    assert_eq!(
        r.stage(),
        Stage::Complete,
        "no replica needed: complete at once"
    );
    assert_eq!(
        r.replica(&peer(1), TERM, ROUND),
        Err(RoundError::AlreadyDone(ROUND))
    );
    assert!(!r.tick());
}

#[test]
fn an_abandoned_round_rejects_everything_after() {
    for when in 0..6 {
        let mut r = host_round(3, [2; 4], 2);
        // Abandon in Aggregate(0..=3), Improve or Replicate.
        for _ in 0..when.min(4) {
            r.advance([0, 1, 2]);
        }
        if when == 5 {
            r.replicating(4, members(4));
            assert_eq!(r.replica(&peer(1), TERM, ROUND), Ok(false));
        }
        r.abandon();
        assert_eq!(r.stage(), Stage::Abandoned);
        let done = RoundError::AlreadyDone(ROUND);
        assert_eq!(r.accept(&peer(1), TERM, ROUND), Err(done.clone()));
        assert_eq!(r.abstain(&peer(1), TERM, ROUND), Err(done.clone()));
        assert_eq!(r.replica(&peer(2), TERM, ROUND), Err(done.clone()));
        assert_eq!(r.replica(&peer(3), TERM, ROUND), Err(done));
        // Another attempt's messages still say why they are refused.
        assert!(matches!(
            r.accept(&peer(1), TERM + 1, ROUND),
            Err(RoundError::WrongTerm { .. })
        ));
        for id in 0..3 {
            r.heard(id);
        }
        assert!(!r.stage_complete());
        for _ in 0..10 {
            assert!(!r.tick(), "no deadline fires in an abandoned round");
        }
        r.advance([0, 1, 2]);
        r.replicating(1, members(4));
        assert_eq!(r.stage(), Stage::Abandoned, "abandoned at step {when}");
    }
}

// ---------------------------------------------------------------------------------------------
// ClientRound, transition by transition
// ---------------------------------------------------------------------------------------------

#[test]
fn a_retry_in_the_same_term_is_a_new_attempt_not_a_duplicate() {
    let (host, me) = (peer(0), peer(2));
    let first = offer_for(TERM, ROUND, &members(3));
    let mut retry = first.clone();
    retry.attempt = 1;
    let mut c = ClientRound::<Vec<u8>>::new();
    let v = view(&me, &host, TERM, ROUND - 1);
    assert!(matches!(
        c.offer(&host, &first, v, false),
        Ok(OfferDecision::Join { .. })
    ));
    assert_eq!(
        c.offer(&host, &first, v, false),
        Ok(OfferDecision::Duplicate)
    );
    assert!(matches!(
        c.offer(&host, &retry, v, false),
        Ok(OfferDecision::Join { .. })
    ));
    assert_eq!(c.attempt(), Some(1));
    // A retry this node already answered (e.g. before a restart) is refused.
    let mut fresh = ClientRound::<Vec<u8>>::new();
    assert_eq!(
        fresh.offer(&host, &retry, v, true),
        Err(RoundError::AlreadyDone(ROUND))
    );
}

#[test]
fn client_offer_rules() {
    let (host, me) = (peer(0), peer(2));
    let o = offer_for(TERM, ROUND, &members(3));
    let mut c = ClientRound::<Vec<u8>>::new();
    let v = view(&me, &host, TERM, ROUND - 1);

    assert_eq!(
        c.offer(&peer(3), &o, v, false),
        Err(RoundError::WrongSender(Sender::CurrentHost)),
        "an offer from a member that is not the leader"
    );
    let no_leader = ClientView { leader: None, ..v };
    assert_eq!(
        c.offer(&host, &o, no_leader, false),
        Err(RoundError::WrongSender(Sender::CurrentHost))
    );
    assert_eq!(
        c.offer(&host, &o, view(&me, &host, TERM + 1, ROUND - 1), false),
        Err(RoundError::WrongTerm {
            got: TERM,
            current: TERM + 1
        })
    );
    for last in [ROUND, ROUND + 4] {
        assert_eq!(
            c.offer(&host, &o, view(&me, &host, TERM, last), false),
            Err(RoundError::AlreadyDone(ROUND)),
            "round {ROUND} with last completed {last}"
        );
    }
    assert_eq!(
        c.offer(&host, &o, v, true),
        Err(RoundError::AlreadyDone(ROUND)),
        "this node already uploaded to or abstained from this attempt"
    );
    let not_me = offer_for(TERM, ROUND, &[peer(1), peer(3), peer(4)]);
    assert_eq!(
        c.offer(&host, &not_me, v, false),
        Err(RoundError::WrongSender(Sender::InvitingHost))
    );
    assert_eq!(c.engaged(), None, "no refused offer engages the client");

    assert_eq!(
        c.offer(&host, &o, v, false),
        Ok(OfferDecision::Join { id: 1 })
    );
    assert_eq!(c.engaged(), Some((TERM, ROUND, 1)));
    // Retransmissions are acknowledged without a second Join, before or after answering.
    assert_eq!(c.offer(&host, &o, v, false), Ok(OfferDecision::Duplicate));
    assert_eq!(c.offer(&host, &o, v, true), Ok(OfferDecision::Duplicate));
    assert_eq!(c.engaged(), Some((TERM, ROUND, 1)));

    // A new term re-runs the same round number: the new attempt replaces the old one.
    let newer = offer_for(TERM + 1, ROUND, &[peer(2), peer(1), peer(3)]);
    let v2 = view(&me, &host, TERM + 1, ROUND - 1);
    assert_eq!(
        c.offer(&host, &newer, v2, false),
        Ok(OfferDecision::Join { id: 0 })
    );
    assert_eq!(c.engaged(), Some((TERM + 1, ROUND, 0)));
    assert_eq!(
        c.offer(&host, &newer, v2, false),
        Ok(OfferDecision::Duplicate)
    );
    assert_eq!(
        c.offer(&host, &o, v2, false),
        Err(RoundError::WrongTerm {
            got: TERM,
            current: TERM + 1
        }),
        "the older attempt's offer, delayed, is refused"
    );
    assert_eq!(c.engaged(), Some((TERM + 1, ROUND, 0)));

    // After the round completed, the next round of the same term is joined.
    let next = offer_for(TERM + 1, ROUND + 1, &members(3));
    let v3 = view(&me, &host, TERM + 1, ROUND);
    assert_eq!(
        c.offer(&host, &newer, v3, false),
        Err(RoundError::AlreadyDone(ROUND))
    );
    assert_eq!(
        c.offer(&host, &next, v3, false),
        Ok(OfferDecision::Join { id: 1 })
    );
    assert_eq!(c.engaged(), Some((TERM + 1, ROUND + 1, 1)));
}

#[test]
fn client_restarted_after_answering_refuses_the_same_attempt() {
    let (host, me) = (peer(0), peer(1));
    let o = offer_for(TERM, ROUND, &members(3));
    let v = view(&me, &host, TERM, ROUND - 1);
    // A fresh machine (after a restart) knows only the durable "answered" mark.
    let mut c = ClientRound::<Vec<u8>>::new();
    assert_eq!(
        c.offer(&host, &o, v, true),
        Err(RoundError::AlreadyDone(ROUND))
    );
    assert_eq!(c.engaged(), None);
    // The same round offered again in a new term is a new attempt: answered is per term.
    let newer = offer_for(TERM + 1, ROUND, &members(3));
    let v2 = view(&me, &host, TERM + 1, ROUND - 1);
    assert_eq!(
        c.offer(&host, &newer, v2, false),
        Ok(OfferDecision::Join { id: 0 })
    );
}

#[test]
fn client_secagg_checks_host_term_and_round_and_holds_input_messages() {
    let (host, me) = (peer(0), peer(3));
    let mut c = ClientRound::<Vec<u8>>::new();
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"keys".to_vec(), false),
        Err(RoundError::Unexpected(Unexpected::SecAggOutsideRound))
    );
    let o = offer_for(TERM, ROUND, &members(3));
    assert_eq!(
        c.offer(&host, &o, view(&me, &host, TERM, 0), false),
        Ok(OfferDecision::Join { id: 2 })
    );
    assert_eq!(
        c.secagg(&peer(1), TERM, ROUND, b"keys".to_vec(), false),
        Err(RoundError::WrongSender(Sender::RoundHost))
    );
    assert_eq!(
        c.secagg(&host, TERM + 1, ROUND, b"keys".to_vec(), false),
        Err(RoundError::WrongTerm {
            got: TERM + 1,
            current: TERM
        })
    );
    assert_eq!(
        c.secagg(&host, TERM, ROUND - 1, b"keys".to_vec(), false),
        Err(RoundError::WrongRound {
            got: ROUND - 1,
            expected: ROUND
        })
    );
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"keys".to_vec(), false),
        Ok(SecAggDelivery::Now(vec![b"keys".to_vec()]))
    );
    // The message that needs the upload waits; a retransmission of it is held once.
    for _ in 0..3 {
        assert_eq!(
            c.secagg(&host, TERM, ROUND, b"shares".to_vec(), true),
            Ok(SecAggDelivery::Held)
        );
    }
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"shares-2".to_vec(), true),
        Ok(SecAggDelivery::Held)
    );
    // Messages that need no input are not blocked behind held ones.
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"other".to_vec(), false),
        Ok(SecAggDelivery::Now(vec![b"other".to_vec()]))
    );
    // Readiness of another attempt releases nothing.
    assert!(c.input_ready(TERM + 1, ROUND).is_empty());
    assert!(c.input_ready(TERM, ROUND + 1).is_empty());
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"shares".to_vec(), true),
        Ok(SecAggDelivery::Held),
        "still not ready"
    );
    assert_eq!(
        c.input_ready(TERM, ROUND),
        vec![b"shares".to_vec(), b"shares-2".to_vec()],
        "each held message once, in arrival order"
    );
    assert!(
        c.input_ready(TERM, ROUND).is_empty(),
        "never delivered twice"
    );
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"shares".to_vec(), true),
        Ok(SecAggDelivery::Now(vec![b"shares".to_vec()])),
        "once ready, nothing is held"
    );

    c.leave();
    assert_eq!(c.engaged(), None);
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"unmask".to_vec(), false),
        Err(RoundError::Unexpected(Unexpected::SecAggOutsideRound))
    );
    assert!(c.input_ready(TERM, ROUND).is_empty());
}

#[test]
fn client_held_buffer_is_bounded_against_a_flood() {
    let (host, me) = (peer(0), peer(1));
    let mut c = ClientRound::<Vec<u8>>::new();
    let o = offer_for(TERM, ROUND, &members(3));
    c.offer(&host, &o, view(&me, &host, TERM, 0), false)
        .unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..10_000u32 {
        let payload = i.to_le_bytes().to_vec();
        match c.secagg(&host, TERM, ROUND, payload.clone(), true) {
            Ok(SecAggDelivery::Held) => {
                assert_eq!(refused, 0, "held after a refusal");
                held.push(payload);
            }
            Err(e) => {
                assert_eq!(e, RoundError::Unexpected(Unexpected::HeldFlood));
                refused += 1;
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        (1..=16).contains(&held.len()),
        "held {} messages: the buffer must be small",
        held.len()
    );
    assert_eq!(refused, 10_000 - held.len());
    // Retransmissions of what is held are not part of the flood.
    assert_eq!(
        c.secagg(&host, TERM, ROUND, held[0].clone(), true),
        Ok(SecAggDelivery::Held)
    );
    assert_eq!(c.input_ready(TERM, ROUND), held, "the first ones, in order");
}

#[test]
fn client_new_attempt_drops_what_the_old_one_held() {
    let (host, me) = (peer(0), peer(1));
    let mut c = ClientRound::<Vec<u8>>::new();
    let o = offer_for(TERM, ROUND, &members(3));
    c.offer(&host, &o, view(&me, &host, TERM, 0), false)
        .unwrap();
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"old".to_vec(), true),
        Ok(SecAggDelivery::Held)
    );
    let newer = offer_for(TERM + 1, ROUND, &members(3));
    assert_eq!(
        c.offer(&host, &newer, view(&me, &host, TERM + 1, 0), false),
        Ok(OfferDecision::Join { id: 0 })
    );
    assert_eq!(
        c.secagg(&host, TERM, ROUND, b"old".to_vec(), true),
        Err(RoundError::WrongTerm {
            got: TERM,
            current: TERM + 1
        })
    );
    assert!(c.input_ready(TERM, ROUND).is_empty());
    assert!(
        c.input_ready(TERM + 1, ROUND).is_empty(),
        "old held message not carried over"
    );
}

#[test]
fn client_checkpoint_rules() {
    let (host, me) = (peer(0), peer(1));
    let c = ClientRound::<Vec<u8>>::new();
    let v = view(&me, &host, TERM, ROUND - 1);
    assert_eq!(
        c.checkpoint(&peer(2), TERM, ROUND, v),
        Err(RoundError::WrongSender(Sender::CurrentHost))
    );
    assert_eq!(
        c.checkpoint(&host, TERM, ROUND, ClientView { leader: None, ..v }),
        Err(RoundError::WrongSender(Sender::CurrentHost))
    );
    assert_eq!(
        c.checkpoint(&host, TERM - 1, ROUND, v),
        Err(RoundError::WrongTerm {
            got: TERM - 1,
            current: TERM
        })
    );
    assert_eq!(
        c.checkpoint(&host, TERM + 1, ROUND, v),
        Err(RoundError::WrongTerm {
            got: TERM + 1,
            current: TERM
        })
    );
    for round in [ROUND - 1, ROUND - 5] {
        assert_eq!(
            c.checkpoint(&host, TERM, round, v),
            Err(RoundError::AlreadyDone(round))
        );
    }
    assert_eq!(c.checkpoint(&host, TERM, ROUND, v), Ok(()));
    assert_eq!(
        c.checkpoint(&host, TERM, ROUND + 3, v),
        Ok(()),
        "a member that missed rounds catches up"
    );
    // Whether or not it took part in the round.
    let mut engaged = ClientRound::<Vec<u8>>::new();
    engaged
        .offer(&host, &offer_for(TERM, ROUND, &members(3)), v, false)
        .unwrap();
    assert_eq!(engaged.checkpoint(&host, TERM, ROUND, v), Ok(()));
    assert_eq!(
        engaged.checkpoint(&host, TERM, ROUND, view(&me, &host, TERM, ROUND)),
        Err(RoundError::AlreadyDone(ROUND)),
        "a retransmitted checkpoint after it was stored"
    );
}

// ---------------------------------------------------------------------------------------------
// Wire rules
// ---------------------------------------------------------------------------------------------

fn invalid_reason(r: Result<(), ProtocolError>) -> String {
    match r {
        Err(ProtocolError::Invalid {
            kind: "round offer",
            reason,
        }) => reason,
        other => panic!("expected an invalid round offer, got {other:?}"),
    }
}

#[test]
fn offer_validate_accepts_good_offers_and_rejects_each_defect() {
    let good = offer_for(TERM, ROUND, &members(3));
    assert_eq!(good.validate(), Ok(()));
    let mut with_teacher = good.clone();
    with_teacher.start.teacher = Some(TeacherTargets {
        round: ROUND - 1,
        kept: vec![0, 4],
        probs: vec![0.25, 0.75, 1.0, 0.0],
    });
    assert_eq!(with_teacher.validate(), Ok(()));

    // Participant count.
    for n in [0, 1, 2] {
        let o = offer_for(TERM, ROUND, &members(n));
        assert!(
            invalid_reason(o.validate()).contains("participants"),
            "{n} participants"
        );
    }
    let many: Vec<Vec<u8>> = (1..=MAX_PARTICIPANTS as u32 + 1).map(peer).collect();
    let mut o = offer_for(TERM, ROUND, &many);
    o.secagg.max_clients = 4096;
    assert!(invalid_reason(o.validate()).contains("participants"));
    o.participants.pop();
    assert_eq!(o.validate(), Ok(()), "exactly the maximum");

    // Duplicates, also when not adjacent.
    let o = offer_for(TERM, ROUND, &[peer(1), peer(2), peer(1)]);
    assert!(invalid_reason(o.validate()).contains("duplicate"));
    let o = offer_for(TERM, ROUND, &[peer(3), peer(2), peer(1), peer(2)]);
    assert!(invalid_reason(o.validate()).contains("duplicate"));

    // PeerId length.
    for bad in [vec![], vec![7; MAX_PEER_ID_BYTES + 1], vec![7; 4096]] {
        let o = offer_for(TERM, ROUND, &[peer(1), bad, peer(2)]);
        assert!(invalid_reason(o.validate()).contains("length"));
    }
    let o = offer_for(TERM, ROUND, &[peer(1), vec![7; MAX_PEER_ID_BYTES], vec![8]]);
    assert_eq!(
        o.validate(),
        Ok(()),
        "1 and {MAX_PEER_ID_BYTES} bytes are fine"
    );

    // Upload dimension against the synthetic set (3 samples x 2 classes + 2).
    for dim in [0, DIM - 1, DIM + 1, 3 * 2, u32::MAX] {
        let mut o = good.clone();
        o.secagg.dim = dim;
        assert!(
            invalid_reason(o.validate()).contains("dimension"),
            "dim {dim}"
        );
    }
    let mut o = good.clone();
    o.start.classes = 3;
    assert!(
        invalid_reason(o.validate()).contains("dimension"),
        "classes change the dimension"
    );
    o.secagg.dim = 3 * 3 + 3;
    assert_eq!(o.validate(), Ok(()));
    // A latent code adds the moment block: per class a weight and 2·d moments.
    let mut o = good.clone();
    o.start.latent = Some(protocol::LatentCode {
        dim: 3,
        mean: vec![0.0; 4],
        basis: vec![0.1; 4 * 3],
        scale: vec![1.0; 3],
        clip: 8.0,
    });
    assert!(invalid_reason(o.validate()).contains("dimension"));
    o.secagg.dim = DIM + 2 * (1 + 2 * 3);
    assert_eq!(o.validate(), Ok(()));
    o.start.latent.as_mut().unwrap().scale[1] = 0.0;
    assert!(o.validate().is_err(), "a bad latent code is refused");

    // Encoding bound.
    for bound in [0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut o = good.clone();
        o.secagg.bound = bound;
        assert!(
            invalid_reason(o.validate()).contains("bound"),
            "bound {bound}"
        );
    }
    let mut o = good.clone();
    o.secagg.bound = f32::MIN_POSITIVE;
    assert_eq!(o.validate(), Ok(()));

    // Threshold and headroom.
    for (threshold, max_clients) in [(0, 8), (1, 8), (4, 8), (u32::MAX, 8), (2, 2), (2, 0)] {
        let mut o = good.clone();
        o.secagg.threshold = threshold;
        o.secagg.max_clients = max_clients;
        assert!(
            invalid_reason(o.validate()).contains("threshold"),
            "threshold {threshold}, max_clients {max_clients}"
        );
    }
    for (threshold, max_clients) in [(2, 3), (3, 3), (3, 1 << 20)] {
        let mut o = good.clone();
        o.secagg.threshold = threshold;
        o.secagg.max_clients = max_clients;
        assert_eq!(
            o.validate(),
            Ok(()),
            "threshold {threshold}, max_clients {max_clients}"
        );
    }

    // The synthetic set itself is checked first.
    let mut o = good.clone();
    o.start.round = 0;
    assert!(matches!(
        o.validate(),
        Err(ProtocolError::Invalid {
            kind: "RoundStart",
            ..
        })
    ));
    let mut o = good;
    o.start.images.pop();
    assert!(matches!(
        o.validate(),
        Err(ProtocolError::Invalid {
            kind: "RoundStart",
            ..
        })
    ));
}

fn sample_requests() -> Vec<Request> {
    let cap = Capability::new(true, 24_576);
    let mut offer = offer_for(TERM, ROUND, &members(4));
    offer.start.teacher = Some(TeacherTargets {
        round: ROUND - 1,
        kept: vec![1, 2],
        probs: vec![0.5, 0.5, 0.9, 0.1],
    });
    vec![
        Request::Election(ElectionMessage::RequestVote {
            term: TERM,
            candidate: peer(1),
            capability: cap,
            last_completed_round: ROUND,
        }),
        Request::Election(ElectionMessage::Vote {
            term: TERM,
            voter: peer(2),
            granted: true,
        }),
        Request::Election(ElectionMessage::Heartbeat {
            term: u64::MAX,
            leader: peer(0),
            capability: Capability::new(false, 0),
            last_completed_round: 0,
        }),
        Request::Election(ElectionMessage::HeartbeatAck {
            term: 1,
            from: peer(3),
            capability: cap,
            last_completed_round: u64::MAX,
        }),
        Request::Offer(Box::new(offer)),
        Request::SecAgg(SecAggPacket {
            term: TERM,
            round: ROUND,
            attempt: 3,
            payload: (0..=255).collect(),
        }),
        Request::SecAgg(SecAggPacket {
            term: 0,
            round: 0,
            attempt: u32::MAX,
            payload: vec![],
        }),
        Request::Abstain {
            term: TERM,
            round: ROUND,
            attempt: 1,
            reason: AbstainReason::BudgetExhausted,
        },
        Request::Checkpoint(CheckpointTransfer {
            term: TERM,
            round: ROUND,
            hash: [0xab; 32],
            base: Some([0xcd; 32]),
            bytes: vec![3; 5000],
        }),
        Request::Upload(protocol::wire::UploadPacket {
            term: 1,
            round: 2,
            attempt: 0,
            values: vec![0.25; 10],
        }),
        Request::Fetch(protocol::wire::FetchRequest {
            want: [7; 32],
            have: Some([6; 32]),
        }),
    ]
}

#[test]
fn every_request_variant_round_trips_within_its_kind_limit() {
    let reqs = sample_requests();
    let kinds: BTreeSet<u8> = reqs.iter().map(|r| r.kind() as u8).collect();
    assert_eq!(kinds, (1..=7).collect(), "every kind is covered");
    for req in &reqs {
        let kind = req.kind();
        assert_eq!(Kind::from_tag(kind as u8), Some(kind));
        let bytes = wire::encode(req).unwrap();
        assert_eq!(wire::encoded_len(req).unwrap(), bytes.len());
        assert_eq!(wire::decode::<Request>(&bytes, kind.limit()).unwrap(), *req);
        assert_eq!(
            wire::decode::<Request>(&bytes, bytes.len() - 1),
            Err(ProtocolError::TooLarge {
                size: bytes.len(),
                limit: bytes.len() - 1
            })
        );
        for cut in 0..bytes.len() {
            assert!(
                wire::decode::<Request>(&bytes[..cut], kind.limit()).is_err(),
                "{kind:?} truncated to {cut} of {} bytes decoded",
                bytes.len()
            );
        }
    }
    assert_eq!(Kind::from_tag(8), None);
    assert_eq!(Kind::from_tag(0), None);
    // Requests are larger than acknowledgements may be.
    assert!(Kind::Checkpoint.limit() > Kind::Offer.limit());
    assert!(Kind::Election.limit() >= MAX_RESPONSE_BYTES);

    for resp in [
        Response::Ack,
        Response::Rejected(protocol::Refusal::WrongRole(Kind::Offer)),
    ] {
        let bytes = wire::encode(&resp).unwrap();
        assert_eq!(
            wire::decode::<Response>(&bytes, MAX_RESPONSE_BYTES).unwrap(),
            resp
        );
    }
    let phases = [
        Phase::Generate,
        Phase::Learn,
        Phase::Judge,
        Phase::Aggregate,
        Phase::Improve,
        Phase::Replicate,
        Phase::Complete,
        Phase::Abandoned,
    ];
    let names: BTreeSet<&str> = phases.iter().map(|p| p.name()).collect();
    assert_eq!(names.len(), phases.len());
    for phase in phases {
        let ann = Announcement::Round {
            term: TERM,
            round: ROUND,
            phase,
            participants: 4,
        };
        let bytes = wire::encode(&ann).unwrap();
        assert_eq!(
            wire::decode::<Announcement>(&bytes, MAX_ANNOUNCEMENT_BYTES).unwrap(),
            ann
        );
    }
}

/// Decodes as everything a node decodes from a peer; must return, never panic.
fn decode_everything(bytes: &[u8]) {
    for kind in [
        Kind::Election,
        Kind::Offer,
        Kind::SecAgg,
        Kind::Abstain,
        Kind::Checkpoint,
    ] {
        if let Ok(Request::Offer(o)) = wire::decode::<Request>(bytes, kind.limit()) {
            let _ = o.validate();
        }
    }
    let _ = wire::decode::<Response>(bytes, MAX_RESPONSE_BYTES);
    let _ = wire::decode::<Announcement>(bytes, MAX_ANNOUNCEMENT_BYTES);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        versioned in any::<bool>(),
    ) {
        // With the right version prefix the bytes reach the body parser.
        let bytes = if versioned { [vec![1], bytes].concat() } else { bytes };
        decode_everything(&bytes);
        if bytes.len() > 8 {
            prop_assert!(
                matches!(
                    wire::decode::<Request>(&bytes, 8),
                    Err(ProtocolError::TooLarge { .. })
                ),
                "size limit checked first"
            );
        }
    }

    #[test]
    fn corrupted_or_truncated_encodings_never_panic(
        which in 0..9usize,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let req = &sample_requests()[which];
        let bytes = wire::encode(req).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(wire::decode::<Request>(&bytes[..cut], req.kind().limit()).is_err());
        let mut bad = bytes.clone();
        for (at, value) in flips {
            let i = at.index(bad.len());
            bad[i] = value;
        }
        decode_everything(&bad);
        decode_everything(&bad[..cut]);
    }
}
