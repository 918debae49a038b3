//! A hostile member: a rust-libp2p peer that holds the pre-shared key and is on the member
//! list, built here with its own behaviour (raw request frames, gossip of its choosing), runs
//! every attack of issue 14 against a federation of three honest `fedmmkt run` processes.
//!
//! After each attack every honest node must have banned it (its offences crossed the
//! threshold); after all of them every honest node is alive, rounds went on completing, no
//! log holds a panic, and resident memory stayed within the stated bound. Traffic stays on
//! 127.0.0.1; mDNS is off. Prints a table: attack → offender banned after, per node.

mod support;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{request_response, Multiaddr, PeerId, StreamProtocol, Swarm};
use protocol::election::{Capability, ElectionMessage};
use protocol::messages::AbstainReason;
use protocol::wire::{self, CheckpointTransfer, Kind, Request, SecAggPacket};
use rand::{Rng, SeedableRng};
use support::{configure_with, init, round_of, round_offer, wait_for, Proc, PSK};

/// Offences within the window that ban a member, in this federation.
const THRESHOLD: u32 = 5;
/// How long a ban lasts here: short, so the one hostile identity can come back for the next
/// attack.
const BAN_SECS: u64 = 3;
/// How long an honest node waits on a stalled body (`request_timeout`: 2 × stage timeout).
const STAGE_TIMEOUT_SECS: u64 = 4;
/// Per-peer request rate limit here (honest members of three send far fewer).
const RATE_LIMIT: u32 = 20;
/// Each offending attack sends this many messages to every honest node.
const REPEAT: usize = THRESHOLD as usize + 2;
/// A stall on a connection that carries nothing else: what a partition looks like.
const SILENT_STALL: &str = "stall just under the largest limit, 40 streams, link otherwise silent";
/// The same stall while the connection carries a harmless request a second: deliberate.
const TALKING_STALL: &str =
    "stall just under the largest limit, 40 streams, while the link carries other requests";
/// Resident memory an honest node may gain over the whole attack run (its in-flight bound is
/// 256 MiB; stalls must cost far less, since bodies are read in reserved 64 KiB chunks).
const RSS_BOUND_MB: u64 = 128;

/// A request frame written as is, and how long to keep the stream open after it.
#[derive(Debug, Clone)]
struct Raw {
    bytes: Vec<u8>,
    stall: Duration,
}

/// Writes raw frames on the node's request-response protocol; reads whatever comes back.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Raw;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Raw>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("the hostile member takes no requests"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut out = Vec::new();
        io.take(1 << 16).read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Raw) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req.bytes).await?;
        io.flush().await?;
        if !req.stall.is_zero() {
            tokio::time::sleep(req.stall).await;
        }
        Ok(())
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

#[derive(NetworkBehaviour)]
struct HostileBehaviour {
    gossipsub: gossipsub::Behaviour,
    rr: request_response::Behaviour<RawCodec>,
}

/// The hostile member's swarm and the honest nodes it attacks.
struct Hostile {
    swarm: Swarm<HostileBehaviour>,
    me: PeerId,
    targets: Vec<(PeerId, Multiaddr)>,
    topic: IdentTopic,
}

impl Hostile {
    fn new(key: Keypair, targets: Vec<(PeerId, Multiaddr)>) -> Hostile {
        let psk: [u8; 32] = (0..32)
            .map(|i| u8::from_str_radix(&PSK[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap();
        let me = key.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| {
                node::net::transport(key, Some(PreSharedKey::new(psk)), false, false)
            })
            .unwrap()
            .with_behaviour(|key| {
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossipsub::ConfigBuilder::default()
                        .heartbeat_interval(Duration::from_millis(500))
                        .validation_mode(gossipsub::ValidationMode::Strict)
                        .build()
                        .unwrap(),
                )
                .unwrap();
                let rr = request_response::Behaviour::with_codec(
                    RawCodec,
                    [(
                        node::net::RR_PROTOCOL,
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(60))
                        .with_max_concurrent_streams(256),
                );
                HostileBehaviour { gossipsub, rr }
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        let topic = IdentTopic::new(node::net::TOPIC);
        swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        Hostile {
            swarm,
            me,
            targets,
            topic,
        }
    }

    /// Drives the swarm for `d` (connections, responses, gossip).
    async fn run_for(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = self.swarm.select_next_some() => {}
            }
        }
    }

    /// Dials every honest node until connected to all of them (they refuse while it is banned).
    async fn connect_all(&mut self, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let missing: Vec<Multiaddr> = self
                .targets
                .iter()
                .filter(|(p, _)| !self.swarm.is_connected(p))
                .map(|(_, a)| a.clone())
                .collect();
            if missing.is_empty() {
                // Let gossipsub exchange subscriptions before anything is published.
                self.run_for(Duration::from_millis(1500)).await;
                return;
            }
            assert!(
                t0.elapsed() < timeout,
                "could not reconnect to every honest node"
            );
            for a in missing {
                let _ = self.swarm.dial(a);
            }
            self.run_for(Duration::from_millis(500)).await;
        }
    }

    /// Sends every frame to every honest node.
    fn send_all(&mut self, frames: &[Raw]) {
        for (peer, _) in self.targets.clone() {
            for f in frames {
                self.swarm.behaviour_mut().rr.send_request(&peer, f.clone());
            }
        }
    }
}

/// A frame: kind tag, little-endian length, body.
fn frame(tag: u8, len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(len.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A well-formed request's frame.
fn request_frame(req: &Request) -> Vec<u8> {
    let body = wire::encode(req).unwrap();
    frame(req.kind() as u8, body.len() as u32, &body)
}

fn raw(bytes: Vec<u8>) -> Raw {
    Raw {
        bytes,
        stall: Duration::ZERO,
    }
}

fn repeat(frames: Vec<Vec<u8>>) -> Vec<Raw> {
    frames
        .into_iter()
        .cycle()
        .take(REPEAT.max(1))
        .map(raw)
        .collect()
}

/// Resident memory of a process, MiB.
fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Whether node `dir` currently bans `peer`.
fn bans(dir: &Path, peer: &str) -> bool {
    node::admin::query_peers(dir)
        .ok()
        .flatten()
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p.peer_id == peer && p.banned_until_unix_ms.is_some())
        })
}

#[test]
fn a_hostile_member_is_banned_for_every_offence_and_the_federation_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let psk = tmp.path().join("psk.hex");
    std::fs::write(&psk, PSK).unwrap();
    let n = 3;
    let dirs: Vec<PathBuf> = (0..n).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let mut ids: Vec<String> = dirs.iter().map(|d| init(d, &psk)).collect();
    let hostile_dir = tmp.path().join("hostile");
    let hostile_id = init(&hostile_dir, &psk);
    ids.push(hostile_id.clone());
    let tweak = |c: &mut node::config::NodeConfig| {
        c.network.ban_after_offences = THRESHOLD;
        c.network.offence_window_secs = 60;
        c.network.ban_secs = BAN_SECS;
        c.network.requests_per_second = RATE_LIMIT;
        c.round.stage_timeout_secs = STAGE_TIMEOUT_SECS;
        c.round.min_contributors = 3;
        // The hostile member never contributes: the first round starts with the three others.
        c.round.start_share = 0.75;
    };
    configure_with(&dirs[0], &ids, None, 1_000, tweak);
    let mut procs = vec![Proc::start(&dirs[0])];
    let boot = procs[0].addr.clone();
    for d in &dirs[1..] {
        configure_with(d, &ids, Some(&boot), 1_000, tweak);
        procs.push(Proc::start(d));
    }
    wait_for("round 1", Duration::from_secs(90), || {
        procs.iter().all(|p| round_of(p) >= 1)
    });

    let targets: Vec<(PeerId, Multiaddr)> = procs
        .iter()
        .map(|p| {
            let addr: Multiaddr = p.addr.parse().unwrap();
            let peer = match addr.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(peer)) => peer,
                _ => panic!("{addr} names no peer"),
            };
            (peer, addr)
        })
        .collect();
    let key = node::store::load_identity(&hostile_dir).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut hostile = Hostile::new(key, targets);
    let me = hostile.me.to_bytes();
    rt.block_on(hostile.connect_all(Duration::from_secs(30)));

    let rss_before: Vec<u64> = procs.iter().map(|p| rss_mb(p.child.id())).collect();
    let round_before: Vec<u64> = procs.iter().map(round_of).collect();
    let t_attacks = Instant::now();
    let status = procs[0].status().unwrap();
    let (term, round) = (status.term, status.round);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
    let mut random = |len: usize| -> Vec<u8> { (0..len).map(|_| rng.random()).collect() };

    let abstain = |term: u64, round: u64| Request::Abstain {
        term,
        round,
        attempt: 0,
        reason: AbstainReason::BudgetExhausted,
    };
    let abstain_body = wire::encode(&abstain(term, round + 1)).unwrap();
    let cap = Capability::new(true, u64::MAX);
    let checkpoint = {
        let bytes = random(4096);
        let hash = node::store::sha256(&bytes);
        Request::Checkpoint(CheckpointTransfer {
            term,
            round: round + 1,
            hash,
            base: None,
            bytes,
        })
    };
    // A length just under the largest limit, 1000 bytes, then nothing, on 40 streams.
    let stalls: Vec<Raw> = (0..40)
        .map(|_| Raw {
            bytes: frame(
                Kind::Checkpoint as u8,
                Kind::largest_limit() as u32 - 1,
                &[7; 1000],
            ),
            stall: Duration::from_secs(3 * STAGE_TIMEOUT_SECS),
        })
        .collect();
    // A harmless request (a refused pre-vote answer), for attacks that keep the link busy.
    let harmless = raw(request_frame(&Request::Election(
        ElectionMessage::PreVoteReply {
            term: 1,
            voter: me.clone(),
            granted: false,
        },
    )));
    // (attack, what it sends to every honest node, or None for gossip / a flood).
    let attacks: Vec<(&str, Option<Vec<Raw>>)> = vec![
        (
            "unknown kind tag",
            Some(repeat(vec![frame(99, 8, &[0; 8])])),
        ),
        (
            "length over the kind's limit",
            Some(repeat(vec![frame(
                Kind::Election as u8,
                Kind::Election.limit() as u32 + 1,
                &[],
            )])),
        ),
        (SILENT_STALL, Some(stalls.clone())),
        (TALKING_STALL, Some(stalls)),
        (
            "random bodies",
            Some(repeat(
                (0..REPEAT)
                    .map(|_| {
                        let body = random(2000);
                        frame(Kind::SecAgg as u8, body.len() as u32, &body)
                    })
                    .collect(),
            )),
        ),
        (
            "truncated bodies",
            Some(repeat(vec![{
                let f = request_frame(&Request::SecAgg(SecAggPacket {
                    term,
                    round: round + 1,
                    attempt: 0,
                    payload: random(500),
                }));
                f[..f.len() / 2].to_vec()
            }])),
        ),
        (
            "body whose kind differs from its tag",
            Some(repeat(vec![frame(
                Kind::Election as u8,
                abstain_body.len() as u32,
                &abstain_body,
            )])),
        ),
        (
            "past and future rounds and terms",
            Some(repeat(vec![
                request_frame(&abstain(term.saturating_sub(1).max(1), 0)),
                request_frame(&abstain(term + 7, round + 50)),
                request_frame(&Request::SecAgg(SecAggPacket {
                    term: term + 7,
                    round: round + 50,
                    attempt: 3,
                    payload: random(64),
                })),
            ])),
        ),
        (
            "election messages with huge terms",
            Some(repeat(vec![
                request_frame(&Request::Election(ElectionMessage::Heartbeat {
                    term: u64::MAX - 1,
                    leader: me.clone(),
                    capability: cap,
                    last_completed_round: u64::MAX,
                })),
                request_frame(&Request::Election(ElectionMessage::RequestVote {
                    term: u64::MAX,
                    candidate: me.clone(),
                    capability: cap,
                    last_completed_round: u64::MAX,
                })),
            ])),
        ),
        (
            "checkpoint claiming to come from the host",
            Some(repeat(vec![request_frame(&checkpoint)])),
        ),
        (
            "round offers from a non-host",
            Some(repeat(vec![request_frame(&Request::Offer(Box::new(
                round_offer(term, round + 1),
            )))])),
        ),
        ("garbage on the gossipsub topic", None),
        ("request flood", None),
    ];

    let mut table = Vec::new();
    for (name, frames) in attacks {
        let t0 = Instant::now();
        let rounds_at = round_of(&procs[0]);
        let rss_at: u64 = procs
            .iter()
            .map(|p| rss_mb(p.child.id()))
            .max()
            .unwrap_or(0);
        // When each honest node was first seen banning it.
        let mut banned_after = vec![None; n];
        let note_bans = |banned_after: &mut Vec<Option<Duration>>| {
            for (i, d) in dirs.iter().enumerate() {
                if banned_after[i].is_none() && bans(d, &hostile_id) {
                    banned_after[i] = Some(t0.elapsed());
                }
            }
        };
        match (name, frames) {
            (_, Some(frames)) => {
                hostile.send_all(&frames);
                rt.block_on(hostile.run_for(Duration::from_millis(500)));
            }
            ("garbage on the gossipsub topic", None) => {
                for _ in 0..REPEAT {
                    let junk = random(300);
                    let _ = hostile
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(hostile.topic.clone(), junk);
                    rt.block_on(hostile.run_for(Duration::from_millis(100)));
                }
            }
            (_, None) => {
                // 200 harmless requests a second until banned: each second over the rate
                // limit counts one offence.
                // Until every node banned it: a loaded node reads fewer of them a second (it
                // drops streams over its 64 concurrent), and only what it reads counts. Each
                // ban is noted when seen: the nodes need not ban at the same moment, and a
                // 3 s ban can end before the last one comes.
                while t0.elapsed() < Duration::from_secs(30)
                    && banned_after.iter().any(Option::is_none)
                {
                    hostile.send_all(&vec![harmless.clone(); 20]);
                    rt.block_on(hostile.run_for(Duration::from_millis(100)));
                    note_bans(&mut banned_after);
                }
            }
        }
        // Every honest node bans it (stalls need the honest side's idle deadline first),
        // except for a stall on a connection that carries nothing else: from the receiving
        // side that is a partition, and it only times out.
        let expect_ban = name != SILENT_STALL;
        let deadline = Duration::from_secs(if expect_ban {
            4 * STAGE_TIMEOUT_SECS + 20
        } else {
            // Past the total deadline (2 × the idle one) and a second more.
            2 * STAGE_TIMEOUT_SECS + 1
        });
        let mut talked = Instant::now();
        while (!expect_ban || banned_after.iter().any(Option::is_none)) && t0.elapsed() < deadline {
            note_bans(&mut banned_after);
            if name == TALKING_STALL && talked.elapsed() >= Duration::from_secs(1) {
                hostile.send_all(std::slice::from_ref(&harmless));
                talked = Instant::now();
            }
            rt.block_on(hostile.run_for(Duration::from_millis(100)));
        }
        for (i, p) in procs.iter_mut().enumerate() {
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "honest node {i} died during '{name}'"
            );
        }
        if !expect_ban {
            assert!(
                banned_after.iter().all(Option::is_none),
                "'{name}': banned by {banned_after:?}"
            );
            table.push((
                name,
                banned_after,
                (rounds_at, round_of(&procs[0])),
                (
                    rss_at,
                    procs
                        .iter()
                        .map(|p| rss_mb(p.child.id()))
                        .max()
                        .unwrap_or(0),
                ),
            ));
            continue;
        }
        assert!(
            banned_after.iter().all(Option::is_some),
            "'{name}': banned by {banned_after:?}"
        );
        // The ban runs out; the same identity comes back for the next attack.
        wait_for("the ban to end", Duration::from_secs(BAN_SECS + 10), || {
            !dirs.iter().any(|d| bans(d, &hostile_id))
        });
        rt.block_on(hostile.connect_all(Duration::from_secs(30)));
        let rss_now: u64 = procs
            .iter()
            .map(|p| rss_mb(p.child.id()))
            .max()
            .unwrap_or(0);
        table.push((
            name,
            banned_after,
            (rounds_at, round_of(&procs[0])),
            (rss_at, rss_now),
        ));
    }
    let attack_secs = t_attacks.elapsed().as_secs_f64();

    // The federation went on: rounds completed during the attacks and after them.
    let target: Vec<u64> = round_before.iter().map(|r| r + 2).collect();
    wait_for("two more rounds", Duration::from_secs(90), || {
        procs.iter().zip(&target).all(|(p, t)| round_of(p) >= *t)
    });
    let round_after: Vec<u64> = procs.iter().map(round_of).collect();
    let rss_after: Vec<u64> = procs.iter().map(|p| rss_mb(p.child.id())).collect();
    for (i, p) in procs.iter_mut().enumerate() {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "honest node {i} died"
        );
        let log = std::fs::read_to_string(p.dir.with_extension("log")).unwrap();
        assert!(!log.contains("panicked"), "node {i} panicked:\n{log}");
        assert!(
            rss_after[i] <= rss_before[i] + RSS_BOUND_MB,
            "node {i}: RSS {} → {} MiB, more than {RSS_BOUND_MB} MiB gained",
            rss_before[i],
            rss_after[i]
        );
        let audit = p.audit();
        assert_eq!(audit["chain"]["valid"], true, "node {i}: {audit}");
        // Honest members never crossed the ban threshold against one another.
        for peer in node::admin::query_peers(&p.dir).unwrap().unwrap() {
            if peer.peer_id != hostile_id {
                assert!(
                    peer.banned_until_unix_ms.is_none() && peer.offences < u64::from(THRESHOLD),
                    "node {i} holds offences against an honest member: {peer:?}"
                );
            }
        }
    }
    eprintln!(
        "| attack | banned by nodes 0, 1, 2 after (s) | node 0's round before → after | \
         largest honest RSS before → after (MiB) |"
    );
    for (name, after, (r0, r1), (m0, m1)) in &table {
        let secs: Vec<String> = after
            .iter()
            .map(|d| d.map_or("not banned".into(), |d| format!("{:.1}", d.as_secs_f64())))
            .collect();
        eprintln!(
            "| {name} | {} | {r0} → {r1} | {m0} → {m1} |",
            secs.join(", ")
        );
    }
    eprintln!(
        "{} attacks in {attack_secs:.0} s; rounds {round_before:?} → {round_after:?}; \
         RSS MiB {rss_before:?} → {rss_after:?}",
        table.len()
    );
}
