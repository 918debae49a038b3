//! Requests between members: what an outbound request was for, requests between this node's
//! own host and client sides, and dispatching an inbound request to the role it is for.

use super::*;

/// What an outbound request was for, to act on its response.
#[derive(Debug, Clone)]
pub(super) enum Pending {
    Offer {
        peer: PeerId,
        term: u64,
        round: u64,
        attempt: u32,
    },
    Checkpoint {
        peer: PeerId,
        term: u64,
        round: u64,
    },
    /// This node asked `peer` for a checkpoint.
    Fetch {
        peer: PeerId,
    },
    /// This node sends `peer` the checkpoint it asked for.
    Served {
        peer: PeerId,
    },
    Other,
}

/// A request between this node's own host and client sides (the host is a participant of its
/// own rounds): carried out by the event loop after the current event, never over the network.
#[derive(Debug)]
pub(super) enum Local {
    /// From the host side to this node's client side; the response goes to `Pending`.
    ToClient(Request, Pending),
    /// From the client side to this node's host side.
    ToHost(Request),
}

impl Node {
    /// Sends a request to `peer`; one addressed to this node goes to its own client side.
    pub(super) fn request(&mut self, peer: PeerId, req: Request, pending: Pending) {
        if peer == self.me {
            self.local.push_back(Local::ToClient(req, pending));
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .rr
            .send_request(&peer, Framed::Valid(req));
        self.pending.insert(id, pending);
    }

    /// Sends a client-side request to the round's host, which may be this node itself.
    pub(super) fn request_host(&mut self, host: PeerId, req: Request) {
        if host == self.me {
            self.local.push_back(Local::ToHost(req));
        } else {
            self.request(host, req, Pending::Other);
        }
    }

    /// Carries out the requests between this node's own host and client sides, as a peer's
    /// would be (each may queue more: the secure-aggregation stages follow one another).
    pub(super) fn drain_local(&mut self) -> anyhow::Result<()> {
        let me = self.me;
        while let Some(local) = self.local.pop_front() {
            match local {
                Local::ToClient(req, pending) => {
                    let result = match req {
                        Request::Offer(offer) => self.on_offer(me, *offer),
                        Request::SecAgg(packet) => self.client_secagg(me, packet),
                        other => Err(Refusal::WrongRole(other.kind())),
                    };
                    let response = match result {
                        Ok(()) => Response::Ack,
                        Err(reason) => {
                            tracing::warn!(
                                "this node's client side refused its own host: {reason}"
                            );
                            Response::Rejected(reason)
                        }
                    };
                    self.settle(me, pending, response)?;
                }
                Local::ToHost(req) => {
                    let size = protocol::wire::encoded_len(&req).unwrap_or(0);
                    let result = match req {
                        Request::SecAgg(packet) => self.host_secagg(me, packet, size),
                        Request::Abstain {
                            term,
                            round,
                            attempt,
                            ..
                        } => self.host_abstain(me, term, round, attempt),
                        Request::Upload(packet) => self.host_upload(me, packet),
                        other => Err(Refusal::WrongRole(other.kind())),
                    };
                    if let Err(reason) = result {
                        tracing::warn!("this node's host side refused its own client: {reason}");
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn respond(&mut self, channel: ResponseChannel<Response>, res: Response) {
        let _ = self.swarm.behaviour_mut().rr.send_response(channel, res);
    }

    /// Per-peer request rate limit; true when the request may proceed. Each second in which
    /// a peer goes over the limit counts as one offence (a flood, not one burst, gets it banned).
    pub(super) fn within_rate(&mut self, peer: PeerId) -> anyhow::Result<bool> {
        let limit = self.cfg.network.requests_per_second.max(1);
        let window = &mut self.peer_mut(peer).window;
        if window.allow(Instant::now(), limit) {
            return Ok(true);
        }
        if window.count() == limit.saturating_add(1) {
            self.offence(peer, &format!("over {limit} requests in one second"))?;
        }
        Ok(false)
    }

    pub(super) fn on_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: Framed,
        channel: ResponseChannel<Response>,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let request = match request {
            Framed::Stalled { idle } => return self.on_stalled(peer, connection, idle, channel),
            Framed::Valid(request) => {
                self.peer_mut(peer).frames.insert(connection, now);
                request
            }
            Framed::Invalid(why) => {
                self.peer_mut(peer).frames.insert(connection, now);
                tracing::warn!(peer = %peer, "invalid request frame refused: {why}");
                self.respond(channel, Response::Rejected(Refusal::Invalid(why.clone())));
                return self.offence(peer, &format!("invalid request frame: {why}"));
            }
        };
        if !self.is_member(&peer) {
            tracing::warn!(peer = %peer, kind = ?request.kind(), "request from a non-member refused");
            self.respond(channel, Response::Rejected(Refusal::NotMember));
            return Ok(());
        }
        if !self.within_rate(peer)? {
            tracing::warn!(peer = %peer, "rate limit exceeded: request refused");
            self.respond(channel, Response::Rejected(Refusal::RateLimited));
            return Ok(());
        }
        let size = protocol::wire::encoded_len(&request).unwrap_or(0);
        let result = match request {
            Request::Election(msg) => {
                self.on_election(peer, msg)?;
                Ok(())
            }
            Request::Offer(offer) => self.on_offer(peer, *offer),
            Request::SecAgg(packet) => {
                if self.host.is_some() {
                    self.host_secagg(peer, packet, size)
                } else {
                    self.client_secagg(peer, packet)
                }
            }
            Request::Abstain { .. } if self.host.is_none() => {
                Err(Refusal::WrongRole(Kind::Abstain))
            }
            Request::Upload(packet) => match self.host {
                Some(_) => self.host_upload(peer, packet),
                None => Err(Refusal::WrongRole(Kind::Upload)),
            },
            Request::Abstain {
                term,
                round,
                attempt,
                ..
            } => self.host_abstain(peer, term, round, attempt),
            Request::Checkpoint(transfer) => self.on_checkpoint(peer, transfer),
            Request::Fetch(fetch) => self.serve_fetch(peer, fetch),
        };
        match result {
            Ok(()) => self.respond(channel, Response::Ack),
            Err(reason) => {
                tracing::warn!(peer = %peer, "request refused: {reason}");
                let offence = reason.is_offence().then(|| reason.to_string());
                self.respond(channel, Response::Rejected(reason));
                if let Some(what) = offence {
                    self.offence(peer, &format!("request refused: {what}"))?;
                }
            }
        }
        Ok(())
    }

    /// A request from `peer` whose bytes stopped arriving `idle` ago. It counts as an offence
    /// only when the same connection delivered another whole request since: the link was up
    /// and the sender held this one back. A partition, a dead link or a starved sender stalls
    /// every stream of the connection alike, and is no one's offence.
    fn on_stalled(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        idle: Duration,
        channel: ResponseChannel<Response>,
    ) -> anyhow::Result<()> {
        let secs = idle.as_secs_f64();
        let why = format!("the request stalled: no byte of it for {secs:.1} s");
        self.respond(channel, Response::Rejected(Refusal::Invalid(why.clone())));
        let last_byte = Instant::now().checked_sub(idle);
        let moving = self
            .peers
            .get(&peer)
            .and_then(|p| p.frames.get(&connection))
            .is_some_and(|frame| last_byte.is_none_or(|t| *frame > t));
        if !moving {
            tracing::debug!(
                peer = %peer,
                "{why}, and its connection carried nothing else meanwhile: the link, not counted"
            );
            return Ok(());
        }
        tracing::warn!(peer = %peer, "{why} while its connection carried other requests");
        self.offence(
            peer,
            &format!("{why} while its connection carried other requests"),
        )
    }

    pub(super) fn on_response(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        response: Response,
    ) -> anyhow::Result<()> {
        let pending = self.pending.remove(&id).unwrap_or(Pending::Other);
        self.settle(peer, pending, response)
    }

    /// Acts on `from`'s response (a peer's, or this node's own client side) to a request made
    /// for `pending`.
    pub(super) fn settle(
        &mut self,
        from: PeerId,
        pending: Pending,
        response: Response,
    ) -> anyhow::Result<()> {
        match (pending, response) {
            (Pending::Checkpoint { peer, term, round }, Response::Ack) => {
                self.host_replica(peer, term, round)
            }
            (Pending::Checkpoint { peer, .. }, Response::Rejected(reason)) => {
                tracing::info!(peer = %peer, "a replica target did not take the checkpoint: {reason}");
                self.host_replica_failed(peer)
            }
            (Pending::Fetch { peer }, Response::Rejected(reason)) => {
                tracing::info!(peer = %peer, "a holder did not serve the checkpoint: {reason}");
                self.catch_up.on_failed(&peer.to_bytes());
                Ok(())
            }
            (Pending::Served { peer }, response) => {
                self.serving.remove(&peer);
                if let Response::Rejected(reason) = response {
                    tracing::info!(peer = %peer, "the checkpoint served was refused: {reason}");
                }
                Ok(())
            }
            (
                Pending::Offer {
                    peer,
                    term,
                    round,
                    attempt,
                },
                Response::Rejected(reason),
            ) => self.offer_refused(peer, term, round, attempt, &reason.to_string()),
            (_, Response::Rejected(reason)) => {
                tracing::debug!(peer = %from, "peer refused a request: {reason}");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
