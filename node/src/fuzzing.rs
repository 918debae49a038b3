//! Coverage-guided fuzzing of every decoder a peer or a file feeds: [`run`] hands raw bytes to
//! the real decoder of a [`Target`], the way the node calls it, and never panics (decode errors
//! are the expected outcome and are dropped). The cargo-fuzz crate in `fuzz/` calls it, one
//! fuzz target per [`Target`], and `tests/fuzz_corpus.rs` replays the committed corpus.
//!
//! Most targets take the bytes as they arrive (a frame off a stream, a file's contents). Two
//! assemble several records from one input:
//! - [`Target::Election`]: request-response frames, one after another, each election message
//!   handled by one election machine (with a tick after each); then the whole input as one
//!   gossip announcement, handled by a fresh machine.
//! - [`Target::Ledger`]: lines split on `\n`: the expected public key (hex), the `m:meta`,
//!   `m:head` and `m:budget` records, then entry records in sequence order; an empty line is
//!   an absent record (for entries: a deleted one).

use std::sync::OnceLock;

use libp2p::futures::executor::block_on;
use libp2p::futures::io::Cursor;
use libp2p::request_response::Codec;
use protocol::election::{Capability, Election, ElectionConfig, ElectionMessage, Persistent};
use protocol::wire::{
    self, Announcement, Request, Response, MAX_ANNOUNCEMENT_BYTES, MAX_RESPONSE_BYTES,
};

use crate::admin::{http::MAX_HEAD, Access, AdminState, PeerInfo, StatusReport};
use crate::net::codec::{Framed, WireCodec};
use crate::net::RR_PROTOCOL;

/// Classes of the host the [`Target::Checkpoint`] bytes are checked against (the seed
/// corpus's checkpoints come from a host of this shape).
pub const CHECKPOINT_CLASSES: usize = 2;
/// Image side (pixels per row and column) of that host.
pub const CHECKPOINT_SIDE: usize = 4;
/// The election members of [`Target::Election`]: ids `[1]` to `[5]`, this node `[1]`.
pub const ELECTION_MEMBERS: u8 = 5;

/// One decoder fed by a peer or a file; each is a fuzz target of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Request-response frames and bodies, responses and gossip announcements (`protocol::wire`).
    Wire,
    /// Secure-aggregation client and server messages (`privacy::secagg::messages`).
    Secagg,
    /// Election messages from request frames, and liveness announcements, handled by an
    /// election machine.
    Election,
    /// A host checkpoint replicated by a peer (postcard state and safetensors generator), and
    /// the same bytes split into a base and a checkpoint delta applied to it.
    Checkpoint,
    /// An IDX data file, plain or gzip (`models::data::idx::parse_idx`).
    Idx,
    /// The node's `config.toml`, parsed and validated.
    Config,
    /// The privacy ledger's stored records, verified as a chain (see the module docs).
    Ledger,
    /// A pre-shared key file.
    Psk,
    /// An HTTP request to the admin endpoint (its head as hyper would read it), routed with
    /// and without a token in force; and the same bytes as the CLI reads an answer.
    Admin,
}

impl Target {
    /// Every target, in the order the fuzz crate lists them.
    pub const ALL: [Target; 9] = [
        Target::Wire,
        Target::Secagg,
        Target::Election,
        Target::Checkpoint,
        Target::Idx,
        Target::Config,
        Target::Ledger,
        Target::Psk,
        Target::Admin,
    ];

    /// The target's name: its fuzz target and its corpus directory.
    pub fn name(self) -> &'static str {
        match self {
            Target::Wire => "wire",
            Target::Secagg => "secagg",
            Target::Election => "election",
            Target::Checkpoint => "checkpoint",
            Target::Idx => "idx",
            Target::Config => "config",
            Target::Ledger => "ledger",
            Target::Psk => "psk",
            Target::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Feeds `data` to `target`'s decoder as the node does; errors are ignored, panics are bugs.
pub fn run(target: Target, data: &[u8]) {
    match target {
        Target::Wire => wire_target(data),
        Target::Secagg => secagg_target(data),
        Target::Election => election_target(data),
        Target::Checkpoint => {
            let pixels = CHECKPOINT_SIDE * CHECKPOINT_SIDE;
            let _ = crate::learn::synthesizer::decode_checkpoint(data, CHECKPOINT_CLASSES, pixels);
            // The same bytes as a base and a delta from a peer: a 4-byte little-endian base
            // length, the base, the delta.
            if let Some((len, rest)) = data.split_first_chunk::<4>() {
                let cut = (u32::from_le_bytes(*len) as usize).min(rest.len());
                let (base, delta) = rest.split_at(cut);
                let _ = crate::learn::synthesizer::apply_checkpoint_delta(base, delta);
            }
        }
        Target::Idx => {
            let _ = models::data::idx::parse_idx(data);
        }
        Target::Config => {
            // `NodeConfig::load` reads the file as UTF-8, parses, then validates.
            if let Ok(text) = std::str::from_utf8(data) {
                if let Ok(cfg) = crate::config::NodeConfig::from_toml(text) {
                    let _ = cfg.validate();
                }
            }
        }
        Target::Ledger => ledger_target(data),
        Target::Psk => {
            // `load_psk` reads the file as UTF-8, then parses.
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = crate::net::psk::parse_psk(text);
            }
        }
        Target::Admin => admin_target(data),
    }
}

/// What the node does with a request it decoded, short of acting on it.
fn inspect_request(req: &Request) {
    let _ = wire::encoded_len(req);
    if let Request::Offer(offer) = req {
        let _ = offer.validate();
    }
}

fn wire_target(data: &[u8]) {
    // A request frame off a stream: kind tag, length checked against the kind's limit, body.
    let mut codec = WireCodec::default();
    if let Ok(Framed::Valid(req)) =
        block_on(codec.read_request(&RR_PROTOCOL, &mut Cursor::new(data)))
    {
        inspect_request(&req);
    }
    // A response frame.
    let _ = block_on(codec.read_response(&RR_PROTOCOL, &mut Cursor::new(data)));
    // The bodies alone: a request at the largest kind's limit, a response, an announcement.
    let largest = wire::Kind::Checkpoint.limit();
    if let Ok(req) = wire::decode::<Request>(data, largest) {
        inspect_request(&req);
    }
    let _ = wire::decode::<Response>(data, MAX_RESPONSE_BYTES);
    let _ = wire::decode::<Announcement>(data, MAX_ANNOUNCEMENT_BYTES);
}

fn secagg_target(data: &[u8]) {
    // A packet's payload is decoded for the packet's round; take the round the bytes declare
    // so the fuzzer reaches past the header (a mismatch is covered by the decoders' own tests).
    let round = data
        .get(2..10)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes);
    let _ = privacy::secagg::ClientMessage::decode(data, round);
    let _ = privacy::secagg::ServerMessage::decode(data, round);
}

/// A follower among [`ELECTION_MEMBERS`] members with the node's default timing.
fn fresh_election() -> Option<Election<Vec<u8>>> {
    let members = (1..=ELECTION_MEMBERS).map(|i| vec![i]).collect();
    Election::new(
        vec![1],
        Capability::new(false, 1024),
        members,
        Persistent::default(),
        ElectionConfig::default(),
        7,
    )
    .ok()
}

/// Handles `msg` as if the transport authenticated its claimed sender (what an honest
/// member's message looks like; a forged one is refused before the machine sees it).
fn handle_election(election: &mut Election<Vec<u8>>, msg: ElectionMessage<Vec<u8>>) {
    let from = msg.claimed_sender().clone();
    let _ = election.handle(&from, msg);
}

fn election_target(data: &[u8]) {
    if let Some(mut election) = fresh_election() {
        let mut codec = WireCodec::default();
        let mut stream = Cursor::new(data);
        // Each valid frame consumes at least its five header bytes, and the first invalid one
        // ends the stream (as it does the node's), so this ends.
        while let Ok(Framed::Valid(req)) = block_on(codec.read_request(&RR_PROTOCOL, &mut stream)) {
            if let Request::Election(msg) = req {
                handle_election(&mut election, msg);
            }
            let _ = election.tick();
        }
    }
    if let Ok(announcement) = wire::decode::<Announcement>(data, MAX_ANNOUNCEMENT_BYTES) {
        let Some(mut election) = fresh_election() else {
            return;
        };
        match announcement {
            Announcement::Alive {
                capability,
                last_completed_round,
                ..
            } => {
                let _ = election.observe(&vec![2], capability, last_completed_round);
            }
            Announcement::Round { .. } => {}
        }
    }
}

/// Lower- or upper-case hex to bytes; `None` for anything else.
fn from_hex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

fn ledger_target(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let key_line = lines.next().unwrap_or_default();
    let key = from_hex(key_line).unwrap_or_else(|| key_line.to_vec());
    let mut record = || lines.next().filter(|l| !l.is_empty());
    let meta = record();
    let head = record();
    if let Some(budget) = record() {
        let _ = privacy::ledger::decode_budget(budget);
    }
    let entries: Vec<(u64, &[u8])> = (0u64..)
        .zip(lines)
        .filter(|(_, line)| !line.is_empty())
        .collect();
    let _ = privacy::ledger::verify_raw(meta, &entries, head, &key);
}

/// A small state for the admin endpoint to answer from, built once.
fn admin_state() -> &'static AdminState {
    static STATE: OnceLock<AdminState> = OnceLock::new();
    STATE.get_or_init(|| AdminState {
        status: StatusReport {
            peer_id: "12D3KooWfuzz".into(),
            running: true,
            term: 3,
            round: 2,
            peers: vec!["12D3KooWpeer".into()],
            epsilon_spent: 0.5,
            epsilon_budget: 8.0,
            delta: 1e-5,
            ..StatusReport::default()
        },
        peers: vec![PeerInfo {
            peer_id: "12D3KooWpeer".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            memory_mb: 2048,
            ..PeerInfo::default()
        }],
        audit: Some(serde_json::json!({ "entries": 0, "valid": true })),
        ..AdminState::default()
    })
}

fn admin_target(data: &[u8]) {
    crate::admin::parse_reply_for_fuzzing(data);
    let data = &data[..data.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(data), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut builder = hyper::Request::builder()
        .method(req.method.unwrap_or("GET"))
        .uri(req.path.unwrap_or("/"));
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let parts = request.into_parts().0;
    let guarded = Access {
        token: Some("f".repeat(64)),
        metrics_need_token: true,
    };
    for access in [Access::default(), guarded] {
        let _ = crate::admin::http::node_route(&parts, &access, admin_state());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_inputs_do_not_panic() {
        for t in Target::ALL {
            run(t, &[]);
            run(t, &[0xff; 64]);
        }
        assert_eq!(from_hex(b"0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(from_hex(b"0g"), None);
        assert_eq!(from_hex(b"abc"), None);
    }
}
