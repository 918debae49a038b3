//! The node's libp2p stack: TCP (behind the private-network key) and QUIC, noise/TLS, yamux,
//! connection limits, an optional PeerId allowlist, identify, ping, gossipsub for
//! announcements, Kademlia and optional mDNS for discovery, and request-response for bulk traffic.

pub mod codec;
pub mod inflight;
pub mod offence;
pub mod psk;
pub mod rate;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, OrTransport};
use libp2p::core::upgrade::Version;
use libp2p::futures::future::Either;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, gossipsub, identify, kad, mdns, noise, ping, quic,
    request_response, tcp, yamux, PeerId, StreamProtocol, Swarm, Transport,
};

pub use codec::{Framed, WireCodec};

/// The identify protocol version this build speaks (peers on another version are not members).
pub const IDENTIFY_VERSION: &str = "/fedmmkt/1.0.0";
/// The request-response protocol.
pub const RR_PROTOCOL: StreamProtocol = StreamProtocol::new("/fedmmkt/rr/1.0.0");
/// The Kademlia protocol (private to fedmmkt federations).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/fedmmkt/kad/1.0.0");
/// The gossip topic of announcements.
pub const TOPIC: &str = "fedmmkt/announce/1";

/// Everything the node's swarm runs.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection limits (checked first, before any other behaviour sees a connection).
    pub limits: connection_limits::Behaviour,
    /// The PeerId allowlist, when the config names members.
    pub allow: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    /// Members banned for their offences: refused at connection time until the ban ends.
    pub banned: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Peers' keys, listen addresses and protocol versions.
    pub identify: identify::Behaviour,
    /// Liveness of connections.
    pub ping: ping::Behaviour,
    /// Announcements: liveness and round progress.
    pub gossipsub: gossipsub::Behaviour,
    /// Discovery across subnets from one bootstrap address.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// LAN discovery (opt-in: it multicasts on the real interface).
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Directed, size-limited requests.
    pub rr: request_response::Behaviour<WireCodec>,
}

/// How to build the swarm.
#[derive(Clone)]
pub struct NetConfig {
    /// The private-network key; when set, TCP runs only between holders of it.
    pub psk: Option<PreSharedKey>,
    /// PeerIds allowed to connect (empty: anyone who gets through the PSK).
    pub members: Vec<PeerId>,
    /// Enable QUIC (TLS 1.3). pnet cannot protect QUIC, so the node enables it only with an allowlist.
    pub quic: bool,
    /// Enable mDNS.
    pub mdns: bool,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections per peer.
    pub max_connections_per_peer: u32,
    /// How long a request may take before it fails (bulk payloads are large); an inbound
    /// request is given up as stalled when no byte of it arrives for half of it, or when
    /// reading it takes all of it.
    pub request_timeout: Duration,
    /// Most inbound request bytes being read at once, across every peer and stream.
    pub max_inflight_bytes: usize,
    /// Connect over in-process memory channels (`/memory/N` addresses) instead of TCP/QUIC:
    /// several nodes in one process, for tests without sockets.
    pub memory: bool,
    /// Where the request-response streams count their bytes.
    pub traffic: Arc<codec::Traffic>,
}

/// A boxed error from building the stack.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// Whether `addr` is an in-process memory address (`/memory/N`).
pub fn is_memory(addr: &libp2p::Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::Memory(_)))
}

/// TCP (+ pnet when a key is given) + noise + yamux, or'ed with QUIC when enabled; or the
/// same upgrades over in-process memory channels. Public for tools that speak to nodes with
/// their own behaviour (the hostile-member test harness).
pub fn transport(
    key: &Keypair,
    psk: Option<PreSharedKey>,
    quic_on: bool,
    memory: bool,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BuildError> {
    if memory {
        let base = libp2p::core::transport::MemoryTransport::default();
        let guarded = match psk {
            Some(psk) => either::Either::Left(
                base.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)),
            ),
            None => either::Either::Right(base),
        };
        return Ok(guarded
            .upgrade(Version::V1Lazy)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed());
    }
    let base = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let guarded = match psk {
        Some(psk) => either::Either::Left(
            base.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)),
        ),
        None => either::Either::Right(base),
    };
    let tcp = guarded
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    if !quic_on {
        return Ok(tcp.boxed());
    }
    let quic = quic::tokio::Transport::new(quic::Config::new(key))
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
    Ok(OrTransport::new(quic, tcp)
        .map(|either, _| match either {
            Either::Left(out) | Either::Right(out) => out,
        })
        .boxed())
}

/// Builds the swarm for `key` with `cfg`.
pub fn build_swarm(key: Keypair, cfg: &NetConfig) -> Result<Swarm<Behaviour>, BuildError> {
    // QUIC's rustls needs a process-wide crypto provider; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let psk = cfg.psk;
    let quic_on = cfg.quic && !cfg.memory;
    let memory = cfg.memory;
    let members: HashSet<PeerId> = cfg.members.iter().copied().collect();
    let cfg = cfg.clone();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| transport(key, psk, quic_on, memory))?
        .with_behaviour(|key| -> Result<Behaviour, BuildError> {
            let me = key.public().to_peer_id();
            let limits = connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(cfg.max_connections))
                    .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
                    .with_max_pending_incoming(Some(cfg.max_connections)),
            );
            let allow = if members.is_empty() {
                None
            } else {
                let mut list =
                    allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
                for peer in &members {
                    list.allow_peer(*peer);
                }
                Some(list)
            };
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_VERSION.into(), key.public())
                    .with_interval(Duration::from_secs(30)),
            );
            let gossip_cfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .validation_mode(gossipsub::ValidationMode::Strict)
                .max_transmit_size(protocol::wire::MAX_ANNOUNCEMENT_BYTES * 2)
                .build()?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_cfg,
            )?;
            let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
            kad_cfg.set_query_timeout(Duration::from_secs(30));
            let mut kad =
                kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), kad_cfg);
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if cfg.mdns {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), me)?)
            } else {
                None
            };
            // A body must keep arriving, and be read within the request timeout, so a stall is
            // refused (and judged against its sender) before libp2p drops the stream without
            // saying whose.
            let codec = WireCodec::new(
                Arc::new(inflight::InflightBudget::new(cfg.max_inflight_bytes)),
                cfg.request_timeout / 2,
                cfg.traffic.clone(),
            );
            let rr = request_response::Behaviour::with_codec(
                codec,
                [(RR_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(cfg.request_timeout)
                    .with_max_concurrent_streams(64),
            );
            Ok(Behaviour {
                limits,
                allow: allow.into(),
                banned: allow_block_list::Behaviour::default(),
                identify,
                ping: ping::Behaviour::new(ping::Config::new()),
                gossipsub,
                kad,
                mdns: mdns.into(),
                rr,
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}
