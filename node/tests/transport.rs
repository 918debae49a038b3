//! The libp2p stack in-process on 127.0.0.1: a request crosses TCP (behind the pre-shared
//! key) and QUIC; a peer with another key, or outside the allowlist, never gets a connection.

use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{Event, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use node::net::{build_swarm, Behaviour, BehaviourEvent, NetConfig};
use protocol::messages::AbstainReason;
use protocol::wire::{Request, Response};

fn config(psk: Option<[u8; 32]>, members: Vec<PeerId>, quic: bool) -> NetConfig {
    NetConfig {
        psk: psk.map(PreSharedKey::new),
        members,
        quic,
        mdns: false,
        max_connections: 8,
        max_connections_per_peer: 2,
        request_timeout: Duration::from_secs(5),
        max_inflight_bytes: node::net::inflight::DEFAULT_INFLIGHT_BYTES,
        memory: false,
        traffic: Default::default(),
    }
}

fn swarm(key: &Keypair, cfg: &NetConfig) -> Swarm<Behaviour> {
    build_swarm(key.clone(), cfg).unwrap()
}

async fn listen(s: &mut Swarm<Behaviour>, addr: &str) -> Multiaddr {
    s.listen_on(addr.parse().unwrap()).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            return address;
        }
    }
}

/// Dials `b` from `a` and sends one request; true when `b` answered it.
async fn exchange(mut a: Swarm<Behaviour>, mut b: Swarm<Behaviour>, listen_on: &str) -> bool {
    let addr = listen(&mut b, listen_on).await;
    let b_id = *b.local_peer_id();
    a.dial(addr).unwrap();
    let request = Request::Abstain {
        term: 1,
        round: 2,
        attempt: 0,
        reason: AbstainReason::BudgetExhausted,
    };
    let mut sent = false;
    let run = async {
        loop {
            tokio::select! {
                ev = a.select_next_some() => match ev {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == b_id && !sent => {
                        a.behaviour_mut().rr.send_request(&b_id, node::net::Framed::Valid(request.clone()));
                        sent = true;
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Rr(Event::Message {
                        message: Message::Response { response, .. }, ..
                    })) => return response == Response::Ack,
                    SwarmEvent::OutgoingConnectionError { .. } => return false,
                    _ => {}
                },
                ev = b.select_next_some() => {
                    if let SwarmEvent::Behaviour(BehaviourEvent::Rr(Event::Message {
                        message: Message::Request { request: got, channel, .. }, ..
                    })) = ev {
                        assert_eq!(got, node::net::Framed::Valid(request.clone()));
                        b.behaviour_mut().rr.send_response(channel, Response::Ack).unwrap();
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap_or(false)
}

#[tokio::test]
async fn tcp_with_the_shared_key_carries_requests() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let cfg = config(Some([7; 32]), vec![], false);
    assert!(exchange(swarm(&ka, &cfg), swarm(&kb, &cfg), "/ip4/127.0.0.1/tcp/0").await);
}

#[tokio::test]
async fn quic_carries_requests_between_members() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let members = vec![ka.public().to_peer_id(), kb.public().to_peer_id()];
    let cfg = config(None, members, true);
    assert!(
        exchange(
            swarm(&ka, &cfg),
            swarm(&kb, &cfg),
            "/ip4/127.0.0.1/udp/0/quic-v1"
        )
        .await
    );
}

#[tokio::test]
async fn a_peer_with_another_key_never_connects() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let a = swarm(&ka, &config(Some([1; 32]), vec![], false));
    let b = swarm(&kb, &config(Some([2; 32]), vec![], false));
    assert!(!exchange(a, b, "/ip4/127.0.0.1/tcp/0").await);
}

#[tokio::test]
async fn a_peer_outside_the_allowlist_never_connects() {
    let (ka, kb, kc) = (
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
    );
    // b admits only itself and c; a holds the same key but is not a member.
    let members = vec![kb.public().to_peer_id(), kc.public().to_peer_id()];
    let a = swarm(&ka, &config(Some([3; 32]), vec![], false));
    let b = swarm(&kb, &config(Some([3; 32]), members, false));
    assert!(!exchange(a, b, "/ip4/127.0.0.1/tcp/0").await);
}
