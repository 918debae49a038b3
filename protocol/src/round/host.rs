//! The host's side of one round attempt: who may send what, and when each stage may close.

use std::collections::BTreeSet;

use super::{RoundError, Sender, Unexpected, MIN_OTHER_CONTRIBUTORS};
use crate::wire::PeerBytes;

/// Where the host's round is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStage {
    /// Collecting one secure-aggregation stage's client messages (which one is the
    /// aggregator's state: see `session::HostSession::secagg_stage`).
    Aggregate,
    /// The sum is out; the generator is being improved.
    Improve,
    /// Waiting for a majority of the members to hold the new checkpoint.
    Replicate,
    /// The round counts as completed.
    Complete,
    /// Given up; nothing more is accepted.
    Abandoned,
}

/// The host's bookkeeping for one round attempt (one term, one round number).
#[derive(Debug, Clone)]
pub struct HostRound {
    term: u64,
    round: u64,
    participants: Vec<PeerBytes>,
    stage: HostStage,
    /// Participants whose message the current stage still waits for.
    expected: BTreeSet<u32>,
    /// Participants heard from in the current stage.
    heard: BTreeSet<u32>,
    /// Participants that sat the round out: no later stage waits for them either.
    abstained: BTreeSet<u32>,
    ticks_left: u64,
    /// Members the checkpoint was sent to: only their acknowledgements count.
    replica_targets: BTreeSet<PeerBytes>,
    /// Members (besides the host) that hold the checkpoint, and how many make a majority.
    replicas: BTreeSet<PeerBytes>,
    replicas_needed: usize,
}

impl HostRound {
    /// A round whose first secure-aggregation stage may last `first_stage_ticks` ticks;
    /// replication needs `replicas_needed` acknowledgements (a majority of the members minus
    /// the host itself).
    pub fn new(
        term: u64,
        round: u64,
        participants: Vec<PeerBytes>,
        first_stage_ticks: u64,
        replicas_needed: usize,
    ) -> Self {
        let expected = (0..participants.len() as u32).collect();
        Self {
            term,
            round,
            participants,
            stage: HostStage::Aggregate,
            expected,
            heard: BTreeSet::new(),
            abstained: BTreeSet::new(),
            ticks_left: first_stage_ticks.max(1),
            replica_targets: BTreeSet::new(),
            replicas: BTreeSet::new(),
            replicas_needed,
        }
    }

    /// The term of this attempt.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The round number.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The current stage.
    pub fn stage(&self) -> HostStage {
        self.stage
    }

    /// Participants in secure-aggregation id order.
    pub fn participants(&self) -> &[PeerBytes] {
        &self.participants
    }

    /// Validates a client's secure-aggregation message and returns the sender's id; the caller
    /// hands the payload to the aggregator and then calls [`HostRound::heard`].
    pub fn accept(&self, from: &[u8], term: u64, round: u64) -> Result<u32, RoundError> {
        self.check(term, round)?;
        if self.stage != HostStage::Aggregate {
            return Err(RoundError::Unexpected(Unexpected::SecAggMessage));
        }
        self.id_of(from)
    }

    /// Records that participant `id`'s message of the current stage was accepted.
    pub fn heard(&mut self, id: u32) {
        if self.expected.contains(&id) {
            self.heard.insert(id);
        }
    }

    /// A participant sits the round out: neither the current stage nor any later one waits for it.
    pub fn abstain(&mut self, from: &[u8], term: u64, round: u64) -> Result<u32, RoundError> {
        self.check(term, round)?;
        let id = self.id_of(from)?;
        self.abstained.insert(id);
        self.expected.remove(&id);
        self.heard.remove(&id);
        Ok(id)
    }

    /// True when the current aggregation stage has heard every participant it waits for.
    pub fn stage_complete(&self) -> bool {
        self.stage == HostStage::Aggregate && self.heard.len() >= self.expected.len()
    }

    /// One clock tick; true when the current aggregation stage's deadline has passed.
    pub fn tick(&mut self) -> bool {
        if !matches!(self.stage, HostStage::Aggregate | HostStage::Replicate) {
            return false;
        }
        self.ticks_left = self.ticks_left.saturating_sub(1);
        self.ticks_left == 0
    }

    /// Closes the current aggregation stage. `next` is the length in ticks of the stage the
    /// aggregator opened, whose messages `addressed` must answer (less any that abstained);
    /// `None` when the aggregator released the sum: Improve.
    pub fn advance(&mut self, next: Option<u64>, addressed: impl IntoIterator<Item = u32>) {
        if self.stage != HostStage::Aggregate {
            return;
        }
        self.heard.clear();
        match next {
            Some(ticks) => {
                self.expected = addressed
                    .into_iter()
                    .filter(|id| !self.abstained.contains(id))
                    .collect();
                self.ticks_left = ticks.max(1);
            }
            None => {
                self.stage = HostStage::Improve;
                self.expected.clear();
            }
        }
    }

    /// Checks that the masked inputs of `inputs` (participant ids) may be unmasked: at least
    /// [`MIN_OTHER_CONTRIBUTORS`] of them are not `host`, so the sum never exposes one node's
    /// upload to a host that subtracts its own. Returns how many others contributed.
    pub fn check_contributors(
        &self,
        host: &[u8],
        inputs: impl IntoIterator<Item = u32>,
    ) -> Result<usize, RoundError> {
        let others = inputs
            .into_iter()
            .filter_map(|id| self.participants.get(id as usize))
            .filter(|p| p.as_slice() != host)
            .count();
        if others < MIN_OTHER_CONTRIBUTORS {
            return Err(RoundError::TooFewContributors { others });
        }
        Ok(others)
    }

    /// The generator was improved and the checkpoint sent to `targets`: wait for their
    /// acknowledgements for `ticks`.
    pub fn replicating(&mut self, ticks: u64, targets: impl IntoIterator<Item = PeerBytes>) {
        if self.stage == HostStage::Improve {
            self.replica_targets = targets.into_iter().collect();
            self.stage = if self.replicas_needed == 0 {
                HostStage::Complete
            } else {
                HostStage::Replicate
            };
            self.ticks_left = ticks.max(1);
        }
    }

    /// Sends the checkpoint to one more member (a spare, when a target failed or is silent).
    pub fn add_replica_target(&mut self, target: PeerBytes) {
        if self.stage == HostStage::Replicate {
            self.replica_targets.insert(target);
        }
    }

    /// Acknowledgements still missing before the round counts.
    pub fn replicas_missing(&self) -> usize {
        self.replicas_needed.saturating_sub(self.replicas.len())
    }

    /// Whether `peer` already acknowledged holding the checkpoint.
    pub fn is_replica(&self, peer: &[u8]) -> bool {
        self.replicas.contains(peer)
    }

    /// A member acknowledged holding the checkpoint; true when the round just became complete.
    /// Only a member the checkpoint was sent to counts toward the majority.
    pub fn replica(&mut self, from: &[u8], term: u64, round: u64) -> Result<bool, RoundError> {
        self.check(term, round)?;
        if self.stage != HostStage::Replicate {
            return Ok(false);
        }
        if !self.replica_targets.contains(from) {
            return Err(RoundError::WrongSender(Sender::CheckpointTarget));
        }
        self.replicas.insert(from.to_vec());
        if self.replicas.len() >= self.replicas_needed {
            self.stage = HostStage::Complete;
            return Ok(true);
        }
        Ok(false)
    }

    /// Gives the round up (too few clients, lost quorum, deadline of replication).
    pub fn abandon(&mut self) {
        self.stage = HostStage::Abandoned;
    }

    fn check(&self, term: u64, round: u64) -> Result<(), RoundError> {
        if term != self.term {
            return Err(RoundError::WrongTerm {
                got: term,
                current: self.term,
            });
        }
        if round != self.round {
            return Err(RoundError::WrongRound {
                got: round,
                expected: self.round,
            });
        }
        if matches!(self.stage, HostStage::Complete | HostStage::Abandoned) {
            return Err(RoundError::AlreadyDone(round));
        }
        Ok(())
    }

    fn id_of(&self, from: &[u8]) -> Result<u32, RoundError> {
        self.participants
            .iter()
            .position(|p| p.as_slice() == from)
            .map(|i| i as u32)
            .ok_or(RoundError::WrongSender(Sender::Participant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round() -> HostRound {
        let peers = (0..3u8).map(|i| vec![i]).collect();
        HostRound::new(4, 7, peers, 3, 2)
    }

    #[test]
    fn stages_close_when_all_heard_or_at_the_deadline() {
        let mut r = round();
        assert_eq!(
            r.accept(&[9], 4, 7),
            Err(RoundError::WrongSender(Sender::Participant))
        );
        assert!(matches!(
            r.accept(&[0], 3, 7),
            Err(RoundError::WrongTerm { .. })
        ));
        assert!(matches!(
            r.accept(&[0], 4, 6),
            Err(RoundError::WrongRound { .. })
        ));
        for p in 0..3u8 {
            let id = r.accept(&[p], 4, 7).unwrap();
            assert!(!r.stage_complete());
            r.heard(id);
            r.heard(id); // a duplicate changes nothing
        }
        assert!(r.stage_complete());
        r.advance(Some(3), [0, 2]);
        assert_eq!(r.stage(), HostStage::Aggregate);
        r.heard(1); // not addressed in this stage: ignored
        r.heard(0);
        assert!(!r.stage_complete());
        assert!(!r.tick() && !r.tick());
        assert!(r.tick(), "deadline after 3 ticks");
        r.advance(Some(10), [0, 2]);
        assert_eq!(r.abstain(&[2], 4, 7), Ok(2));
        r.heard(0);
        assert!(r.stage_complete(), "an abstaining client is not waited for");
        r.advance(Some(3), [0]);
        r.advance(None, []);
        assert_eq!(r.stage(), HostStage::Improve);
        assert!(r.accept(&[0], 4, 7).is_err());
    }

    #[test]
    fn a_sum_is_released_only_with_two_contributors_besides_the_host() {
        let r = round();
        // Participant 0 is the host: itself plus one other could be subtracted to one upload.
        assert_eq!(
            r.check_contributors(&[0], [0, 1]),
            Err(RoundError::TooFewContributors { others: 1 })
        );
        assert_eq!(r.check_contributors(&[0], [0, 1, 2]), Ok(2));
        assert_eq!(r.check_contributors(&[0], [1, 2]), Ok(2));
        // A host outside the participants: every input counts; ids past the end do not.
        assert_eq!(r.check_contributors(&[9], [0, 2]), Ok(2));
        assert_eq!(
            r.check_contributors(&[9], [0, 7]),
            Err(RoundError::TooFewContributors { others: 1 })
        );
    }

    #[test]
    fn complete_after_a_majority_of_replicas_and_never_twice() {
        let mut r = round();
        for _ in 0..3 {
            r.advance(Some(3), [0, 1, 2]);
        }
        r.advance(None, []);
        assert_eq!(r.replica(&[1], 4, 7), Ok(false), "not replicating yet");
        r.replicating(5, [vec![1], vec![2]]);
        assert_eq!(
            r.replica(&[9], 4, 7),
            Err(RoundError::WrongSender(Sender::CheckpointTarget)),
            "not sent the checkpoint: not a replica"
        );
        assert_eq!(r.replica(&[1], 4, 7), Ok(false));
        assert_eq!(
            r.replica(&[1], 4, 7),
            Ok(false),
            "a duplicate ack is one replica"
        );
        assert_eq!(r.replica(&[2], 4, 7), Ok(true));
        assert_eq!(r.stage(), HostStage::Complete);
        assert_eq!(r.replica(&[0], 4, 7), Err(RoundError::AlreadyDone(7)));
    }
}
