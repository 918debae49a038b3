//! The aggregator side of a round as a sans-IO state machine.
//!
//! The driver calls [`SecAggAggregator::receive`] for every client message and
//! [`SecAggAggregator::advance`] when a stage's deadline passes (or all expected messages are in).
//! Masked inputs are summed on arrival, so memory stays O(dim) whatever the number of clients.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::{PublicKey, StaticSecret};

use super::client::share_point;
use super::error::SecAggError;
use super::graph::NeighborGraph;
use super::keys;
use super::masking::{apply_masks, Mask, MaskSign};
use super::messages::{
    AdvertiseKeys, ClientMessage, EncryptedShare, EncryptedShares, KeyDirectory, MaskedInput,
    ServerMessage, ShareDelivery, UnmaskRequest, UnmaskResponse, SHARE_CIPHERTEXT_LEN,
};
use super::shamir::{self, Share};
use super::{ClientId, RoundParams};

/// Where the aggregator is in the round; each stage accepts one kind of client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregatorStage {
    /// Collecting advertised keys.
    CollectKeys,
    /// Collecting encrypted shares.
    CollectShares,
    /// Collecting (and summing) masked inputs.
    CollectMaskedInputs,
    /// Collecting unmask responses.
    CollectUnmask,
    /// The sum was released.
    Done,
    /// The round aborted; nothing was released.
    Aborted,
}

impl AggregatorStage {
    /// The stage's name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            AggregatorStage::CollectKeys => "collect-keys",
            AggregatorStage::CollectShares => "collect-shares",
            AggregatorStage::CollectMaskedInputs => "collect-masked-inputs",
            AggregatorStage::CollectUnmask => "collect-unmask",
            AggregatorStage::Done => "done",
            AggregatorStage::Aborted => "aborted",
        }
    }
}

/// What closing a stage produced.
#[derive(Debug)]
pub enum Step {
    /// Messages for the next stage, one per addressed client.
    Send(Vec<(ClientId, ServerMessage)>),
    /// The round is complete.
    Finished(AggregateOutput),
}

/// The result of a round: the sum of the included clients' quantized inputs, and nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateOutput {
    /// The sum mod 2^32 of the included clients' quantized inputs.
    pub sum: Vec<u32>,
    /// The clients whose inputs are in the sum (sorted).
    pub included: Vec<ClientId>,
    /// The sum read back as real numbers (exact in the quantized domain, no wrap-around).
    pub values: Vec<f64>,
}

enum State {
    CollectKeys,
    CollectShares {
        shares: BTreeMap<ClientId, Vec<EncryptedShare>>,
    },
    CollectMaskedInputs {
        acc: Vec<u32>,
        u3: BTreeSet<ClientId>,
    },
    CollectUnmask {
        acc: Vec<u32>,
        u3: BTreeSet<ClientId>,
        requests: BTreeMap<ClientId, UnmaskRequest>,
        responses: BTreeMap<ClientId, UnmaskResponse>,
    },
    Done,
    Aborted(SecAggError),
}

/// The aggregator of one round.
pub struct SecAggAggregator {
    params: RoundParams,
    context: [u8; 32],
    membership: Vec<[u8; 32]>,
    /// N(c) for every client c, sorted.
    neighbors: Vec<Vec<ClientId>>,
    /// U1: verified advertisements (after pruning clients with too few live neighbours).
    adverts: BTreeMap<ClientId, AdvertiseKeys>,
    /// U2: clients whose shares were forwarded.
    u2: BTreeSet<ClientId>,
    state: State,
}

impl SecAggAggregator {
    /// Starts collecting keys for a round; `membership[c]` is client c's Ed25519 identity key.
    pub fn new(params: RoundParams, membership: Vec<[u8; 32]>) -> Result<Self, SecAggError> {
        let graph: NeighborGraph = params.validate()?;
        if membership.len() != params.num_clients as usize {
            return Err(SecAggError::InvalidParams(format!(
                "membership lists {} keys for {} clients",
                membership.len(),
                params.num_clients
            )));
        }
        let neighbors = (0..params.num_clients)
            .map(|c| graph.neighbors(c))
            .collect();
        Ok(Self {
            context: params.context(),
            params,
            membership,
            neighbors,
            adverts: BTreeMap::new(),
            u2: BTreeSet::new(),
            state: State::CollectKeys,
        })
    }

    /// The current stage.
    pub fn stage(&self) -> AggregatorStage {
        match self.state {
            State::CollectKeys => AggregatorStage::CollectKeys,
            State::CollectShares { .. } => AggregatorStage::CollectShares,
            State::CollectMaskedInputs { .. } => AggregatorStage::CollectMaskedInputs,
            State::CollectUnmask { .. } => AggregatorStage::CollectUnmask,
            State::Done => AggregatorStage::Done,
            State::Aborted(_) => AggregatorStage::Aborted,
        }
    }

    /// The round's parameters.
    pub fn params(&self) -> &RoundParams {
        &self.params
    }

    fn nbrs(&self, c: ClientId) -> &[ClientId] {
        self.neighbors
            .get(c as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Accepts one client message for the current stage; a rejected message changes nothing.
    pub fn receive(&mut self, msg: ClientMessage) -> Result<(), SecAggError> {
        let sender = msg.sender();
        if sender >= self.params.num_clients {
            return Err(SecAggError::UnknownClient(sender));
        }
        let stage = self.stage();
        match (&mut self.state, msg) {
            (State::CollectKeys, ClientMessage::Advertise(m)) => {
                if self.adverts.contains_key(&sender) {
                    return Err(SecAggError::Duplicate {
                        client: sender,
                        what: "advertise-keys",
                    });
                }
                let identity = self
                    .membership
                    .get(sender as usize)
                    .ok_or(SecAggError::UnknownClient(sender))?;
                keys::verify_advert(
                    identity,
                    &self.context,
                    sender,
                    &m.enc_public,
                    &m.mask_public,
                    &m.signature,
                )?;
                self.adverts.insert(sender, m);
                Ok(())
            }
            (State::CollectShares { shares }, ClientMessage::Shares(m)) => {
                let nb = self
                    .neighbors
                    .get(sender as usize)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                check_shares(&m, &self.adverts, nb, shares)?;
                shares.insert(sender, m.shares);
                Ok(())
            }
            (State::CollectMaskedInputs { acc, u3 }, ClientMessage::Masked(m)) => {
                check_masked(&m, &self.u2, u3, acc.len())?;
                acc.iter_mut()
                    .zip(&m.masked)
                    .for_each(|(a, x)| *a = a.wrapping_add(*x));
                u3.insert(sender);
                Ok(())
            }
            (
                State::CollectUnmask {
                    requests,
                    responses,
                    ..
                },
                ClientMessage::Unmask(m),
            ) => {
                let req = requests.get(&sender).ok_or(SecAggError::NotASurvivor {
                    client: sender,
                    stage: AggregatorStage::CollectMaskedInputs.name(),
                    message: "unmask-response",
                })?;
                if responses.contains_key(&sender) {
                    return Err(SecAggError::Duplicate {
                        client: sender,
                        what: "unmask-response",
                    });
                }
                check_response(&m, req, &self.neighbors)?;
                responses.insert(sender, m);
                Ok(())
            }
            (State::Aborted(e), _) => Err(SecAggError::Aborted(e.to_string())),
            (
                State::CollectKeys
                | State::CollectShares { .. }
                | State::CollectMaskedInputs { .. }
                | State::CollectUnmask { .. }
                | State::Done,
                msg,
            ) => Err(SecAggError::UnexpectedMessage {
                role: "aggregator",
                stage: stage.name(),
                message: msg.kind(),
            }),
        }
    }

    /// Closes the current stage: returns the next stage's messages, or the final sum, or aborts.
    ///
    /// Falling below threshold aborts the round for good and releases nothing.
    pub fn advance(&mut self) -> Result<Step, SecAggError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let result = match state {
            State::CollectKeys => self.close_keys(),
            State::CollectShares { shares } => self.close_shares(shares),
            State::CollectMaskedInputs { acc, u3 } => self.close_masked(acc, u3),
            State::CollectUnmask {
                acc,
                u3,
                requests,
                responses,
            } => self.close_unmask(acc, u3, requests, responses),
            State::Done => {
                self.state = State::Done;
                return Err(SecAggError::UnexpectedMessage {
                    role: "aggregator",
                    stage: AggregatorStage::Done.name(),
                    message: "advance",
                });
            }
            State::Aborted(e) => {
                let msg = e.to_string();
                self.state = State::Aborted(e);
                return Err(SecAggError::Aborted(msg));
            }
        };
        match result {
            Ok((next, step)) => {
                self.state = next;
                Ok(step)
            }
            Err(e) => {
                self.state = State::Aborted(e.clone());
                Err(e)
            }
        }
    }

    /// Repeatedly drops clients with fewer than t − 1 live neighbours in `live` (their secrets
    /// could never be recovered); returns the survivors.
    fn prune(&self, mut live: BTreeSet<ClientId>) -> BTreeSet<ClientId> {
        let t = self.params.threshold as usize - 1;
        loop {
            let weak: Vec<ClientId> = live
                .iter()
                .copied()
                .filter(|&c| self.nbrs(c).iter().filter(|v| live.contains(v)).count() < t)
                .collect();
            if weak.is_empty() {
                return live;
            }
            for c in weak {
                live.remove(&c);
            }
        }
    }

    fn require(&self, stage: AggregatorStage, what: &str, have: usize) -> Result<(), SecAggError> {
        let need = self.params.threshold as usize;
        if have < need {
            return Err(SecAggError::BelowThreshold {
                stage: stage.name(),
                what: what.to_string(),
                have,
                need,
            });
        }
        Ok(())
    }

    fn close_keys(&mut self) -> Result<(State, Step), SecAggError> {
        let live = self.prune(self.adverts.keys().copied().collect());
        self.adverts.retain(|c, _| live.contains(c));
        self.require(
            AggregatorStage::CollectKeys,
            "clients that advertised keys",
            live.len(),
        )?;
        let mut out = Vec::with_capacity(live.len());
        for &c in &live {
            let entries = std::iter::once(c)
                .chain(self.nbrs(c).iter().copied())
                .filter_map(|v| self.adverts.get(&v).cloned())
                .collect();
            out.push((c, ServerMessage::Keys(KeyDirectory { entries })));
        }
        Ok((
            State::CollectShares {
                shares: BTreeMap::new(),
            },
            Step::Send(out),
        ))
    }

    fn close_shares(
        &mut self,
        mut shares: BTreeMap<ClientId, Vec<EncryptedShare>>,
    ) -> Result<(State, Step), SecAggError> {
        let live = self.prune(shares.keys().copied().collect());
        shares.retain(|c, _| live.contains(c));
        self.require(
            AggregatorStage::CollectShares,
            "clients that shared keys",
            live.len(),
        )?;
        let mut inbox: BTreeMap<ClientId, Vec<EncryptedShare>> =
            live.iter().map(|&c| (c, Vec::new())).collect();
        for (sender, list) in shares {
            for s in list {
                if let Some(box_) = inbox.get_mut(&s.peer) {
                    box_.push(EncryptedShare {
                        peer: sender,
                        ciphertext: s.ciphertext,
                    });
                }
            }
        }
        self.u2 = live;
        let out = inbox
            .into_iter()
            .map(|(c, shares)| (c, ServerMessage::Shares(ShareDelivery { shares })))
            .collect();
        Ok((
            State::CollectMaskedInputs {
                acc: vec![0u32; self.params.dim as usize],
                u3: BTreeSet::new(),
            },
            Step::Send(out),
        ))
    }

    fn close_masked(
        &mut self,
        acc: Vec<u32>,
        u3: BTreeSet<ClientId>,
    ) -> Result<(State, Step), SecAggError> {
        let stage = AggregatorStage::CollectMaskedInputs;
        self.require(stage, "clients that sent masked inputs", u3.len())?;
        let mut requests = BTreeMap::new();
        for &c in &self.u2 {
            // Every secret still needed must have t holders that could answer the unmask request
            // (a surviving client holds a share of its own self-mask seed too).
            let live_neighbours = self.nbrs(c).iter().filter(|v| u3.contains(v)).count();
            let (what, holders) = if u3.contains(&c) {
                (
                    format!("holders of client {c}'s self-mask seed"),
                    live_neighbours + 1,
                )
            } else {
                (
                    format!("holders of dropped client {c}'s masking key"),
                    live_neighbours,
                )
            };
            self.require(stage, &what, holders)?;
        }
        for &w in &u3 {
            let (survivors, dropped): (Vec<ClientId>, Vec<ClientId>) = self
                .nbrs(w)
                .iter()
                .copied()
                .filter(|v| self.u2.contains(v))
                .partition(|v| u3.contains(v));
            requests.insert(w, UnmaskRequest { survivors, dropped });
        }
        let out = requests
            .iter()
            .map(|(&w, r)| (w, ServerMessage::Unmask(r.clone())))
            .collect();
        Ok((
            State::CollectUnmask {
                acc,
                u3,
                requests,
                responses: BTreeMap::new(),
            },
            Step::Send(out),
        ))
    }

    fn close_unmask(
        &mut self,
        mut acc: Vec<u32>,
        u3: BTreeSet<ClientId>,
        _requests: BTreeMap<ClientId, UnmaskRequest>,
        responses: BTreeMap<ClientId, UnmaskResponse>,
    ) -> Result<(State, Step), SecAggError> {
        let stage = AggregatorStage::CollectUnmask;
        let t = self.params.threshold;
        let mut seed_shares: BTreeMap<ClientId, Vec<Share>> = BTreeMap::new();
        let mut key_shares: BTreeMap<ClientId, Vec<Share>> = BTreeMap::new();
        for r in responses.values() {
            for s in &r.self_mask_shares {
                seed_shares.entry(s.owner).or_default().push(s.share);
            }
            for s in &r.key_shares {
                key_shares.entry(s.owner).or_default().push(s.share);
            }
        }
        let mut masks = Vec::new();
        for &v in &u3 {
            let shares = seed_shares.get(&v).map(Vec::as_slice).unwrap_or(&[]);
            self.require(
                stage,
                &format!("shares of client {v}'s self-mask seed"),
                shares.len(),
            )?;
            masks.push(Mask {
                seed: shamir::combine(shares, t)?,
                sign: MaskSign::Sub,
            });
        }
        for &u in self.u2.difference(&u3) {
            let shares = key_shares.get(&u).map(Vec::as_slice).unwrap_or(&[]);
            self.require(
                stage,
                &format!("shares of dropped client {u}'s masking key"),
                shares.len(),
            )?;
            let secret = StaticSecret::from(shamir::combine(shares, t)?);
            let advert = self.adverts.get(&u).ok_or(SecAggError::UnknownClient(u))?;
            if PublicKey::from(&secret).to_bytes() != advert.mask_public {
                return Err(SecAggError::ReconstructionMismatch(u));
            }
            for &v in self.nbrs(u).iter().filter(|v| u3.contains(v)) {
                let peer = self.adverts.get(&v).ok_or(SecAggError::UnknownClient(v))?;
                let shared = keys::agree(&secret, v, &peer.mask_public)?;
                masks.push(Mask {
                    seed: keys::pairwise_seed(&self.context, &shared, u, v)?,
                    // v added the mask if v < u and subtracted it otherwise: undo that.
                    sign: if v < u { MaskSign::Sub } else { MaskSign::Add },
                });
            }
        }
        apply_masks(&mut acc, &masks);
        let values = self.params.quantizer.dequantize_sum(&acc);
        Ok((
            State::Done,
            Step::Finished(AggregateOutput {
                sum: acc,
                included: u3.into_iter().collect(),
                values,
            }),
        ))
    }
}

/// A client's shares go to exactly its neighbours in U1, one well-sized ciphertext each.
fn check_shares(
    m: &EncryptedShares,
    adverts: &BTreeMap<ClientId, AdvertiseKeys>,
    neighbors: &[ClientId],
    collected: &BTreeMap<ClientId, Vec<EncryptedShare>>,
) -> Result<(), SecAggError> {
    let sender = m.sender;
    if !adverts.contains_key(&sender) {
        return Err(SecAggError::NotASurvivor {
            client: sender,
            stage: AggregatorStage::CollectKeys.name(),
            message: "encrypted-shares",
        });
    }
    if collected.contains_key(&sender) {
        return Err(SecAggError::Duplicate {
            client: sender,
            what: "encrypted-shares",
        });
    }
    let expected: Vec<ClientId> = neighbors
        .iter()
        .copied()
        .filter(|v| adverts.contains_key(v))
        .collect();
    if m.shares.len() > expected.len() {
        return Err(SecAggError::TooMany {
            what: "encrypted shares",
            max: expected.len(),
            got: m.shares.len(),
        });
    }
    let mut got: Vec<ClientId> = Vec::with_capacity(m.shares.len());
    for s in &m.shares {
        if s.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
            return Err(SecAggError::WrongLength {
                what: "share ciphertext",
                expected: SHARE_CIPHERTEXT_LEN,
                got: s.ciphertext.len(),
            });
        }
        got.push(s.peer);
    }
    got.sort_unstable();
    if got.windows(2).any(|w| w[0] == w[1]) || got != expected {
        return Err(SecAggError::WrongRecipients {
            client: sender,
            detail: format!("addressed to {got:?}, live neighbours are {expected:?}"),
        });
    }
    Ok(())
}

/// A masked input comes once from a client in U2 and has the round's length.
fn check_masked(
    m: &MaskedInput,
    u2: &BTreeSet<ClientId>,
    u3: &BTreeSet<ClientId>,
    dim: usize,
) -> Result<(), SecAggError> {
    if !u2.contains(&m.sender) {
        return Err(SecAggError::NotASurvivor {
            client: m.sender,
            stage: AggregatorStage::CollectShares.name(),
            message: "masked-input",
        });
    }
    if u3.contains(&m.sender) {
        return Err(SecAggError::Duplicate {
            client: m.sender,
            what: "masked-input",
        });
    }
    if m.masked.len() != dim {
        return Err(SecAggError::WrongLength {
            what: "masked input",
            expected: dim,
            got: m.masked.len(),
        });
    }
    Ok(())
}

/// An unmask response answers exactly its request, with shares at the holder's evaluation point.
fn check_response(
    m: &UnmaskResponse,
    req: &UnmaskRequest,
    neighbors: &[Vec<ClientId>],
) -> Result<(), SecAggError> {
    // The responder's own self-mask share comes with the requested ones.
    let mut seed_owners = req.survivors.clone();
    seed_owners.push(m.sender);
    seed_owners.sort_unstable();
    for (got, want, what) in [
        (&m.self_mask_shares, &seed_owners, "self-mask shares"),
        (&m.key_shares, &req.dropped, "key shares"),
    ] {
        let mut owners: Vec<ClientId> = got.iter().map(|s| s.owner).collect();
        owners.sort_unstable();
        if owners != *want {
            return Err(SecAggError::WrongRecipients {
                client: m.sender,
                detail: format!("{what} for {owners:?}, requested {want:?}"),
            });
        }
        for s in got {
            let nb = neighbors
                .get(s.owner as usize)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let expected = share_point(nb, s.owner, m.sender)?;
            if s.share[0] != expected {
                return Err(SecAggError::WrongShareId {
                    owner: s.owner,
                    holder: m.sender,
                    got: s.share[0],
                    expected,
                });
            }
        }
    }
    Ok(())
}
