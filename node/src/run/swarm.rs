//! What the libp2p swarm reports, translated into the node's events: connections, identify,
//! Kademlia, mDNS, gossip and request-response traffic; and the node's gossip out.

use super::*;

impl Node {
    pub(super) fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                println!("listening on {address}/p2p/{}", self.me);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                if !self.is_member(&peer_id) {
                    tracing::warn!(peer = %peer_id, "refusing a peer that is not a member");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return Ok(());
                }
                let addr = endpoint.get_remote_address().clone();
                let p = self.peer_mut(peer_id);
                p.connected = true;
                p.last_seen = Some(Instant::now());
                if endpoint.is_dialer() && !p.addrs.contains(&addr) {
                    p.addrs.push(addr);
                }
                tracing::info!(peer = %peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.frames.remove(&connection_id);
                }
                if num_established > 0 {
                    return Ok(());
                }
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connected = false;
                }
                tracing::info!(peer = %peer_id, "disconnected");
                self.participant_gone(peer_id)?;
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::warn!(from = %send_back_addr, "refused incoming connection: {error}");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, "outgoing connection failed: {error}");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event)?,
            _ => {}
        }
        Ok(())
    }

    pub(super) fn on_behaviour(&mut self, event: BehaviourEvent) -> anyhow::Result<()> {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.public_key.to_peer_id() != peer_id
                    || info.protocol_version != net::IDENTIFY_VERSION
                {
                    tracing::warn!(peer = %peer_id, version = %info.protocol_version, "identify does not match the peer or our version: disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return Ok(());
                }
                let identity = ed25519_bytes(&info.public_key);
                let first = self
                    .peers
                    .get(&peer_id)
                    .is_none_or(|p| p.identity.is_none());
                for addr in &info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                let p = self.peer_mut(peer_id);
                p.identity = identity;
                for addr in info.listen_addrs.into_iter().take(8) {
                    if !p.addrs.contains(&addr) {
                        p.addrs.push(addr);
                    }
                }
                p.addrs.truncate(8);
                self.remember(peer_id)?;
                self.grow_membership(peer_id)?;
                if first {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. })
                if peer != self.me && !self.swarm.is_connected(&peer) && self.is_member(&peer) =>
            {
                let _ = self.swarm.dial(peer);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                let Some(source) = message.source else {
                    return Ok(());
                };
                if !self.is_member(&source) {
                    tracing::warn!(peer = %source, "ignoring gossip from a non-member");
                    return Ok(());
                }
                match protocol::wire::decode::<Announcement>(
                    &message.data,
                    protocol::wire::MAX_ANNOUNCEMENT_BYTES,
                ) {
                    Ok(Announcement::Alive {
                        capability,
                        last_completed_round,
                        checkpoint,
                    }) => {
                        self.on_alive(source, capability, last_completed_round)?;
                        self.note_held_checkpoint(source, last_completed_round, checkpoint)?;
                    }
                    Ok(Announcement::Round { .. }) => {}
                    Err(e) => {
                        tracing::warn!(peer = %source, "bad announcement: {e}");
                        self.offence(source, &format!("bad announcement: {e}"))?;
                    }
                }
            }
            BehaviourEvent::Rr(request_response::Event::Message {
                peer,
                connection_id,
                message,
            }) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_request(peer, connection_id, request, channel)?,
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_response(peer, request_id, response)?,
            },
            BehaviourEvent::Rr(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                let pending = self.pending.remove(&request_id);
                tracing::debug!(peer = %peer, "request failed: {error}");
                if let Some(pending) = pending {
                    let failed = Response::Rejected(Refusal::local(error));
                    self.settle(peer, pending, failed)?;
                }
            }
            BehaviourEvent::Rr(request_response::Event::InboundFailure { peer, error, .. }) => {
                // Bad frames arrive as `Framed::Invalid` requests and are counted there; what
                // is left here (our response timing out, a closed connection) is no offence.
                tracing::warn!(peer = %peer, "inbound request failed: {error}");
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn redial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            let peer = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
                _ => None,
            });
            if peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, "cannot dial bootstrap peer: {e}");
            }
        }
    }

    /// Sends an election broadcast to every connected member, each as its own request. Not
    /// over gossip: gossip is best effort, and after a partition heals it can go on dropping a
    /// peer's messages for minutes, so a healed member missed every heartbeat, stood for
    /// election again and again, and refused the live host's offers. A request goes over
    /// whichever connection is up, and a lost one fails alone.
    pub(super) fn broadcast(&mut self, msg: ElectionMessage<Vec<u8>>) {
        let targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, info)| info.connected && self.is_member(p))
            .map(|(p, _)| *p)
            .collect();
        for peer in targets {
            self.request(peer, Request::Election(msg.clone()), Pending::Other);
        }
    }

    /// Announces the round's progress (best effort).
    pub(super) fn announce(&mut self, term: u64, round: u64, phase: Phase, participants: u32) {
        self.publish(&Announcement::Round {
            term,
            round,
            phase,
            participants,
        });
    }

    /// Publishes an announcement (best effort: gossip may have no subscribed peer yet).
    pub(super) fn publish(&mut self, ann: &Announcement) {
        if let Ok(bytes) = protocol::wire::encode(ann) {
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), bytes);
        }
    }
}
