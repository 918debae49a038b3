//! The client side of a round as a sans-IO state machine.

use std::collections::BTreeMap;

use ring::{aead, signature};
use x25519_dalek::StaticSecret;

use super::error::SecAggError;
use super::graph::NeighborGraph;
use super::keys;
use super::masking::{apply_masks, Mask, MaskSign};
use super::messages::{
    AdvertiseKeys, ClientMessage, EncryptedShare, EncryptedShares, KeyDirectory, MaskedInput,
    RevealedShare, ServerMessage, ShareDelivery, UnmaskRequest, UnmaskResponse,
    SHARE_CIPHERTEXT_LEN,
};
use super::shamir::{self, Share, SHARE_LEN};
use super::{ClientId, RoundParams};

/// Where a client is in the round; each stage accepts exactly one kind of server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStage {
    /// Keys advertised; waiting for the key directory.
    AwaitKeyDirectory,
    /// Shares sent; waiting for the neighbours' shares.
    AwaitShares,
    /// Masked input sent; waiting for the unmask request.
    AwaitUnmask,
    /// Unmask response sent; the client's part is over.
    Done,
    /// The client refused to continue (e.g. it was asked to reveal both shares of a peer).
    Aborted,
}

impl ClientStage {
    /// The stage's name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ClientStage::AwaitKeyDirectory => "await-key-directory",
            ClientStage::AwaitShares => "await-shares",
            ClientStage::AwaitUnmask => "await-unmask",
            ClientStage::Done => "done",
            ClientStage::Aborted => "aborted",
        }
    }
}

/// What the client knows about a live neighbour after the key directory.
struct Peer {
    share_key: aead::LessSafeKey,
    mask_seed: [u8; 32],
}

/// Stage-specific state; the data a stage no longer needs is dropped on transition.
enum State {
    AwaitKeyDirectory,
    AwaitShares {
        peers: BTreeMap<ClientId, Peer>,
    },
    AwaitUnmask {
        held: BTreeMap<ClientId, (Share, Share)>,
    },
    Done,
    Aborted(SecAggError),
}

/// One client's participation in one round.
pub struct SecAggClient {
    id: ClientId,
    params: RoundParams,
    context: [u8; 32],
    graph: NeighborGraph,
    /// N(id), sorted; a neighbour's share point is its index here plus one.
    neighbors: Vec<ClientId>,
    /// Identity public keys of the neighbours, in `neighbors` order.
    identities: Vec<[u8; 32]>,
    enc_secret: StaticSecret,
    mask_secret: StaticSecret,
    advert: AdvertiseKeys,
    self_seed: [u8; 32],
    /// Shares of (self-mask seed, masking key) for each neighbour, in `neighbors` order.
    outgoing: Vec<(Share, Share)>,
    /// The client's own share of its self-mask seed (point k + 1), revealed at unmask time.
    own_seed_share: Share,
    input: Option<Vec<u32>>,
    state: State,
}

impl SecAggClient {
    /// Starts a round: draws keys and the self-mask seed from `rng`, shares them, and returns the advertisement.
    ///
    /// `identity` is this node's Ed25519 key; `membership[c]` is client c's Ed25519 public key.
    pub fn new<R: rand::CryptoRng + ?Sized>(
        params: RoundParams,
        id: ClientId,
        identity: &signature::Ed25519KeyPair,
        membership: &[[u8; 32]],
        rng: &mut R,
    ) -> Result<(Self, ClientMessage), SecAggError> {
        let graph = params.validate()?;
        if membership.len() != params.num_clients as usize {
            return Err(SecAggError::InvalidParams(format!(
                "membership lists {} keys for {} clients",
                membership.len(),
                params.num_clients
            )));
        }
        let own_identity = membership
            .get(id as usize)
            .ok_or(SecAggError::UnknownClient(id))?;
        if signature::KeyPair::public_key(identity).as_ref() != own_identity.as_slice() {
            return Err(SecAggError::InvalidParams(format!(
                "identity key does not match membership entry of client {id}"
            )));
        }
        let context = params.context();
        let neighbors = graph.neighbors(id);
        let identities = neighbors
            .iter()
            .map(|&v| {
                membership
                    .get(v as usize)
                    .copied()
                    .ok_or(SecAggError::UnknownClient(v))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (enc_secret, enc_public) = keys::generate(rng);
        let (mask_secret, mask_public) = keys::generate(rng);
        let mut self_seed = [0u8; 32];
        rng.fill_bytes(&mut self_seed);
        // k + 1 holders: the neighbours (points 1..=k) and the client itself (point k + 1).
        let holders = neighbors.len() as u32 + 1;
        let mut seed_shares = shamir::split(&self_seed, params.threshold, holders, rng)?;
        let mut key_shares =
            shamir::split(&mask_secret.to_bytes(), params.threshold, holders, rng)?;
        let own_seed_share = seed_shares
            .pop()
            .ok_or(SecAggError::Shamir("no share for the owner".into()))?;
        // The owner never reveals its own key share, so it is not kept.
        key_shares.pop();
        let outgoing = seed_shares.into_iter().zip(key_shares).collect();
        let signature = keys::sign_advert(identity, &context, id, &enc_public, &mask_public);
        let advert = AdvertiseKeys {
            sender: id,
            enc_public,
            mask_public,
            signature,
        };
        let client = Self {
            id,
            params,
            context,
            graph,
            neighbors,
            identities,
            enc_secret,
            mask_secret,
            advert: advert.clone(),
            self_seed,
            outgoing,
            own_seed_share,
            input: None,
            state: State::AwaitKeyDirectory,
        };
        Ok((client, ClientMessage::Advertise(advert)))
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The current stage.
    pub fn stage(&self) -> ClientStage {
        match self.state {
            State::AwaitKeyDirectory => ClientStage::AwaitKeyDirectory,
            State::AwaitShares { .. } => ClientStage::AwaitShares,
            State::AwaitUnmask { .. } => ClientStage::AwaitUnmask,
            State::Done => ClientStage::Done,
            State::Aborted(_) => ClientStage::Aborted,
        }
    }

    /// This client's neighbours (sorted).
    pub fn neighbors(&self) -> &[ClientId] {
        &self.neighbors
    }

    /// Sets the upload (already clipped and noised by the caller): checked against the bound and quantized now.
    ///
    /// Allowed until the masked input is sent; an out-of-bound input is rejected and nothing is stored.
    pub fn set_input(&mut self, input: &[f32]) -> Result<(), SecAggError> {
        match self.state {
            State::AwaitKeyDirectory | State::AwaitShares { .. } => {}
            _ => {
                return Err(SecAggError::UnexpectedMessage {
                    role: "client",
                    stage: self.stage().name(),
                    message: "input",
                })
            }
        }
        if input.len() != self.params.dim as usize {
            return Err(SecAggError::WrongLength {
                what: "input vector",
                expected: self.params.dim as usize,
                got: input.len(),
            });
        }
        self.input = Some(self.params.quantizer.quantize(input)?);
        Ok(())
    }

    /// Handles one message from the aggregator and returns the reply.
    ///
    /// A rejected message leaves the state unchanged, except a request to reveal both shares of a
    /// peer, which aborts the client for good.
    pub fn handle(&mut self, msg: ServerMessage) -> Result<ClientMessage, SecAggError> {
        let stage = self.stage();
        match (&self.state, msg) {
            (State::AwaitKeyDirectory, ServerMessage::Keys(dir)) => self.on_key_directory(dir),
            (State::AwaitShares { .. }, ServerMessage::Shares(delivery)) => {
                self.on_share_delivery(delivery)
            }
            (State::AwaitUnmask { .. }, ServerMessage::Unmask(req)) => self.on_unmask(req),
            (State::Aborted(e), _) => Err(SecAggError::Aborted(e.to_string())),
            (
                State::AwaitKeyDirectory
                | State::AwaitShares { .. }
                | State::AwaitUnmask { .. }
                | State::Done,
                msg,
            ) => Err(SecAggError::UnexpectedMessage {
                role: "client",
                stage: stage.name(),
                message: msg.kind(),
            }),
        }
    }

    /// Position of `peer` among this client's neighbours.
    fn neighbor_index(&self, peer: ClientId) -> Result<usize, SecAggError> {
        self.neighbors
            .binary_search(&peer)
            .map_err(|_| SecAggError::NotNeighbor { peer, of: self.id })
    }

    fn on_key_directory(&mut self, dir: KeyDirectory) -> Result<ClientMessage, SecAggError> {
        let max = self.neighbors.len() + 1;
        if dir.entries.len() > max {
            return Err(SecAggError::TooMany {
                what: "key directory",
                max,
                got: dir.entries.len(),
            });
        }
        let mut peers = BTreeMap::new();
        let mut seen_self = false;
        for e in &dir.entries {
            if e.sender == self.id {
                if seen_self {
                    return Err(SecAggError::Duplicate {
                        client: e.sender,
                        what: "key directory entry",
                    });
                }
                if *e != self.advert {
                    return Err(SecAggError::KeysSubstituted(self.id));
                }
                seen_self = true;
                continue;
            }
            let i = self.neighbor_index(e.sender)?;
            if peers.contains_key(&e.sender) {
                return Err(SecAggError::Duplicate {
                    client: e.sender,
                    what: "key directory entry",
                });
            }
            let identity = self
                .identities
                .get(i)
                .ok_or(SecAggError::UnknownClient(e.sender))?;
            keys::verify_advert(
                identity,
                &self.context,
                e.sender,
                &e.enc_public,
                &e.mask_public,
                &e.signature,
            )?;
            let enc_shared = keys::agree(&self.enc_secret, e.sender, &e.enc_public)?;
            let mask_shared = keys::agree(&self.mask_secret, e.sender, &e.mask_public)?;
            peers.insert(
                e.sender,
                Peer {
                    share_key: keys::share_key(&self.context, &enc_shared, self.id, e.sender)?,
                    mask_seed: keys::pairwise_seed(&self.context, &mask_shared, self.id, e.sender)?,
                },
            );
        }
        // With its own share, t − 1 live neighbours can recover this client's secrets.
        let need = self.params.threshold as usize - 1;
        if peers.len() < need {
            return Err(SecAggError::BelowThreshold {
                stage: ClientStage::AwaitKeyDirectory.name(),
                what: format!("client {}'s live neighbourhood", self.id),
                have: peers.len(),
                need,
            });
        }
        let mut shares = Vec::with_capacity(peers.len());
        for (&v, peer) in &peers {
            let i = self.neighbor_index(v)?;
            let (seed_share, key_share) = self.outgoing.get(i).ok_or(SecAggError::NotNeighbor {
                peer: v,
                of: self.id,
            })?;
            let plaintext = [seed_share.as_slice(), key_share.as_slice()].concat();
            shares.push(EncryptedShare {
                peer: v,
                ciphertext: keys::seal(&peer.share_key, &self.context, self.id, v, &plaintext)?,
            });
        }
        self.outgoing.clear();
        self.state = State::AwaitShares { peers };
        Ok(ClientMessage::Shares(EncryptedShares {
            sender: self.id,
            shares,
        }))
    }

    fn on_share_delivery(&mut self, delivery: ShareDelivery) -> Result<ClientMessage, SecAggError> {
        let State::AwaitShares { peers } = &self.state else {
            return Err(SecAggError::Aborted("internal: wrong state".into()));
        };
        if self.input.is_none() {
            return Err(SecAggError::MissingInput);
        }
        if delivery.shares.len() > peers.len() {
            return Err(SecAggError::TooMany {
                what: "share delivery",
                max: peers.len(),
                got: delivery.shares.len(),
            });
        }
        let mut held = BTreeMap::new();
        for s in &delivery.shares {
            let peer = peers.get(&s.peer).ok_or(SecAggError::NotNeighbor {
                peer: s.peer,
                of: self.id,
            })?;
            if held.contains_key(&s.peer) {
                return Err(SecAggError::Duplicate {
                    client: s.peer,
                    what: "share ciphertext",
                });
            }
            if s.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
                return Err(SecAggError::WrongLength {
                    what: "share ciphertext",
                    expected: SHARE_CIPHERTEXT_LEN,
                    got: s.ciphertext.len(),
                });
            }
            let plain = keys::open(
                &peer.share_key,
                &self.context,
                s.peer,
                self.id,
                &s.ciphertext,
            )?;
            let (a, b) = plain.split_at(SHARE_LEN.min(plain.len()));
            let seed_share: Share = a.try_into().map_err(|_| SecAggError::WrongLength {
                what: "share plaintext",
                expected: 2 * SHARE_LEN,
                got: plain.len(),
            })?;
            let key_share: Share = b.try_into().map_err(|_| SecAggError::WrongLength {
                what: "share plaintext",
                expected: 2 * SHARE_LEN,
                got: plain.len(),
            })?;
            let expected = share_point(&self.graph.neighbors(s.peer), s.peer, self.id)?;
            for share in [&seed_share, &key_share] {
                if share[0] != expected {
                    return Err(SecAggError::WrongShareId {
                        owner: s.peer,
                        holder: self.id,
                        got: share[0],
                        expected,
                    });
                }
            }
            held.insert(s.peer, (seed_share, key_share));
        }
        let need = self.params.threshold as usize - 1;
        if held.len() < need {
            return Err(SecAggError::BelowThreshold {
                stage: ClientStage::AwaitShares.name(),
                what: format!("shares delivered to client {}", self.id),
                have: held.len(),
                need,
            });
        }
        // Everything checked: from here on nothing fails, so the state changes only on success.
        let mut masks = Vec::with_capacity(held.len() + 1);
        masks.push(Mask {
            seed: self.self_seed,
            sign: MaskSign::Add,
        });
        for v in held.keys() {
            if let Some(peer) = peers.get(v) {
                masks.push(Mask {
                    seed: peer.mask_seed,
                    sign: if self.id < *v {
                        MaskSign::Add
                    } else {
                        MaskSign::Sub
                    },
                });
            }
        }
        let mut masked = self.input.take().unwrap_or_default();
        apply_masks(&mut masked, &masks);
        self.state = State::AwaitUnmask { held };
        Ok(ClientMessage::Masked(MaskedInput {
            sender: self.id,
            masked,
        }))
    }

    fn on_unmask(&mut self, req: UnmaskRequest) -> Result<ClientMessage, SecAggError> {
        let State::AwaitUnmask { held } = &self.state else {
            return Err(SecAggError::Aborted("internal: wrong state".into()));
        };
        let max = self.neighbors.len();
        for list in [&req.survivors, &req.dropped] {
            if list.len() > max {
                return Err(SecAggError::TooMany {
                    what: "unmask request",
                    max,
                    got: list.len(),
                });
            }
        }
        // The never-both rule first: a request that asks for both shares of anyone aborts.
        if let Some(&both) = req.survivors.iter().find(|c| req.dropped.contains(c)) {
            let err = SecAggError::RevealBoth(both);
            self.state = State::Aborted(err.clone());
            return Err(err);
        }
        let reveal = |ids: &[ClientId], pick: fn(&(Share, Share)) -> Share| {
            let mut out: Vec<RevealedShare> = Vec::with_capacity(ids.len());
            for &c in ids {
                let pair = held.get(&c).ok_or(SecAggError::NoShares {
                    peer: c,
                    holder: self.id,
                })?;
                if out.iter().any(|r| r.owner == c) {
                    return Err(SecAggError::Duplicate {
                        client: c,
                        what: "unmask request entry",
                    });
                }
                out.push(RevealedShare {
                    owner: c,
                    share: pick(pair),
                });
            }
            Ok(out)
        };
        let mut self_mask_shares = reveal(&req.survivors, |p| p.0)?;
        // The client is alive, so its own self-mask share goes too (never its own key share).
        self_mask_shares.push(RevealedShare {
            owner: self.id,
            share: self.own_seed_share,
        });
        let key_shares = reveal(&req.dropped, |p| p.1)?;
        self.state = State::Done;
        Ok(ClientMessage::Unmask(UnmaskResponse {
            sender: self.id,
            self_mask_shares,
            key_shares,
        }))
    }
}

/// The evaluation point of `holder`'s share of `owner`'s secrets: its index in N(owner) plus one,
/// or k + 1 for the owner itself.
pub(crate) fn share_point(
    owner_neighbors: &[ClientId],
    owner: ClientId,
    holder: ClientId,
) -> Result<u8, SecAggError> {
    let idx = if holder == owner {
        owner_neighbors.len()
    } else {
        owner_neighbors
            .binary_search(&holder)
            .map_err(|_| SecAggError::NotNeighbor {
                peer: holder,
                of: owner,
            })?
    };
    u8::try_from(idx + 1)
        .map_err(|_| SecAggError::Shamir(format!("share point {} exceeds 255", idx + 1)))
}
