//! The committed fuzz corpus (`fuzz/corpus/<target>/`, see `node::fuzzing`), replayed on
//! stable: every input of every target must decode (or be refused) without a panic, every
//! target must have a non-empty corpus and a fuzz target, and nothing else may.
//!
//! `write_seed_corpus` (ignored) writes the seed inputs from the real encoders:
//! `cargo test -p node --test fuzz_corpus -- --ignored write_seed_corpus`.

mod support;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use node::fuzzing::{run, Target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The regular files of `dir`, sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// File or directory names under `dir` (without the `.rs` of a fuzz target).
fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            Some(name.strip_suffix(".rs").unwrap_or(name).to_string())
        })
        .collect()
}

#[test]
fn every_target_has_a_corpus_that_replays_without_panicking() {
    let corpus = fuzz_dir().join("corpus");
    let all: BTreeSet<String> = Target::ALL.iter().map(|t| t.name().to_string()).collect();
    assert_eq!(
        names_in(&corpus),
        all,
        "fuzz/corpus/ must hold exactly one directory per node::fuzzing::Target"
    );
    assert_eq!(
        names_in(&fuzz_dir().join("fuzz_targets")),
        all,
        "fuzz/fuzz_targets/ must hold exactly one target per node::fuzzing::Target"
    );
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for target in Target::ALL {
        let dir = corpus.join(target.name());
        assert!(dir.is_dir(), "no corpus directory {}", dir.display());
        let files = files_in(&dir);
        assert!(!files.is_empty(), "the corpus of {target} is empty");
        let mut bytes = 0;
        for file in &files {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            bytes += data.len();
            if catch_unwind(AssertUnwindSafe(|| run(target, &data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
        summary.push(format!("{target}: {} inputs, {bytes} bytes", files.len()));
    }
    eprintln!("fuzz corpus replayed:\n  {}", summary.join("\n  "));
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

/// Seed inputs from the real encoders (plus a few short invalid ones), deterministic except
/// for the ledger's key and timestamps.
mod seeds {
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec;
    use node::fuzzing::{CHECKPOINT_CLASSES, CHECKPOINT_SIDE, ELECTION_MEMBERS};
    use node::net::codec::WireCodec;
    use privacy::secagg::messages::{
        AdvertiseKeys, ClientMessage, EncryptedShare, EncryptedShares, KeyDirectory, MaskedInput,
        RevealedShare, ServerMessage, ShareDelivery, UnmaskRequest, UnmaskResponse,
        SHARE_CIPHERTEXT_LEN,
    };
    use privacy::secagg::shamir::SHARE_LEN;
    use protocol::election::{Capability, ElectionMessage};
    use protocol::wire::{
        self, Announcement, CheckpointTransfer, FetchRequest, Phase, Request, Response,
        SecAggPacket, UploadPacket,
    };
    use protocol::{AbstainReason, Refusal};

    /// Writes `fuzz/corpus/<target>/seed-<name>`.
    fn put(target: &str, name: &str, bytes: &[u8]) {
        let dir = super::fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
    }

    fn request_frame(req: Request) -> Vec<u8> {
        let mut out = Vec::new();
        block_on(WireCodec::default().write_request(
            &node::net::RR_PROTOCOL,
            &mut Cursor::new(&mut out),
            node::net::Framed::Valid(req),
        ))
        .expect("request frame");
        out
    }

    fn response_frame(res: Response) -> Vec<u8> {
        let mut out = Vec::new();
        block_on(WireCodec::default().write_response(
            &node::net::RR_PROTOCOL,
            &mut Cursor::new(&mut out),
            res,
        ))
        .expect("response frame");
        out
    }

    fn election_messages() -> Vec<ElectionMessage<Vec<u8>>> {
        let cap = Capability::new(false, 2048);
        vec![
            ElectionMessage::RequestVote {
                term: 1,
                candidate: vec![2],
                capability: cap,
                last_completed_round: 0,
            },
            ElectionMessage::Vote {
                term: 1,
                voter: vec![3],
                granted: true,
            },
            ElectionMessage::Heartbeat {
                term: 1,
                leader: vec![2],
                capability: cap,
                last_completed_round: 4,
            },
            ElectionMessage::HeartbeatAck {
                term: 1,
                from: vec![ELECTION_MEMBERS],
                capability: Capability::new(true, 1),
                last_completed_round: 1,
            },
        ]
    }

    fn wire_seeds() {
        let requests = vec![
            ("election", Request::Election(election_messages().remove(0))),
            (
                "offer",
                Request::Offer(Box::new(crate::support::round_offer(2, 3))),
            ),
            (
                "secagg",
                Request::SecAgg(SecAggPacket {
                    term: 2,
                    round: 3,
                    attempt: 0,
                    payload: vec![1, 2, 3, 4],
                }),
            ),
            (
                "abstain",
                Request::Abstain {
                    term: 2,
                    round: 3,
                    attempt: 1,
                    reason: AbstainReason::BudgetExhausted,
                },
            ),
            (
                "checkpoint",
                Request::Checkpoint(CheckpointTransfer {
                    term: 2,
                    round: 3,
                    hash: [7; 32],
                    base: None,
                    bytes: vec![0; 16],
                }),
            ),
            (
                "checkpoint-delta",
                Request::Checkpoint(CheckpointTransfer {
                    term: 2,
                    round: 4,
                    hash: [8; 32],
                    base: Some([7; 32]),
                    bytes: vec![1; 16],
                }),
            ),
            (
                "fetch",
                Request::Fetch(FetchRequest {
                    want: [8; 32],
                    have: Some([7; 32]),
                }),
            ),
            (
                "upload",
                Request::Upload(UploadPacket {
                    term: 2,
                    round: 3,
                    attempt: 0,
                    values: vec![0.5, -1.0, 2.0],
                }),
            ),
        ];
        for (name, req) in requests {
            put(
                "wire",
                &format!("body-{name}"),
                &wire::encode(&req).expect("body"),
            );
            put("wire", &format!("frame-{name}"), &request_frame(req));
        }
        put("wire", "frame-ack", &response_frame(Response::Ack));
        put(
            "wire",
            "frame-rejected",
            &response_frame(Response::Rejected(Refusal::Invalid("bad".into()))),
        );
        let announcements = [
            (
                "alive",
                Announcement::Alive {
                    capability: Capability::new(true, 4096),
                    last_completed_round: 3,
                    checkpoint: Some([7; 32]),
                },
            ),
            (
                "round",
                Announcement::Round {
                    term: 2,
                    round: 3,
                    phase: Phase::Aggregate,
                    participants: 3,
                },
            ),
        ];
        for (name, a) in announcements {
            put(
                "wire",
                &format!("gossip-{name}"),
                &wire::encode(&a).expect("gossip"),
            );
        }
        put("wire", "invalid-empty", b"");
        put(
            "wire",
            "invalid-huge-length",
            &[3, 0xff, 0xff, 0xff, 0x7f, 1],
        );
        put("wire", "invalid-version", &[9, 0, 0]);
    }

    fn secagg_seeds() {
        let advert = AdvertiseKeys {
            sender: 3,
            enc_public: [1; 32],
            mask_public: [2; 32],
            signature: [3; 64],
        };
        let share = EncryptedShare {
            peer: 1,
            ciphertext: vec![7; SHARE_CIPHERTEXT_LEN],
        };
        let client = [
            ("advertise", ClientMessage::Advertise(advert.clone())),
            (
                "shares",
                ClientMessage::Shares(EncryptedShares {
                    sender: 3,
                    shares: vec![share.clone(), share.clone()],
                }),
            ),
            (
                "masked",
                ClientMessage::Masked(MaskedInput {
                    sender: 3,
                    masked: vec![1, 2, u32::MAX],
                }),
            ),
            (
                "unmask",
                ClientMessage::Unmask(UnmaskResponse {
                    sender: 3,
                    self_mask_shares: vec![RevealedShare {
                        owner: 1,
                        share: [5; SHARE_LEN],
                    }],
                    key_shares: vec![RevealedShare {
                        owner: 2,
                        share: [6; SHARE_LEN],
                    }],
                }),
            ),
        ];
        for (name, m) in client {
            put("secagg", &format!("client-{name}"), &m.encode(3));
        }
        let server = [
            (
                "keys",
                ServerMessage::Keys(KeyDirectory {
                    entries: vec![advert.clone(), advert],
                }),
            ),
            (
                "shares",
                ServerMessage::Shares(ShareDelivery {
                    shares: vec![share],
                }),
            ),
            (
                "unmask",
                ServerMessage::Unmask(UnmaskRequest {
                    survivors: vec![1, 2],
                    dropped: vec![4],
                }),
            ),
        ];
        for (name, m) in server {
            put("secagg", &format!("server-{name}"), &m.encode(3));
        }
        put("secagg", "invalid-short", &[1, 0x01, 3]);
        put(
            "secagg",
            "invalid-count",
            &[
                1, 0x03, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
            ],
        );
    }

    fn election_seeds() {
        let msgs = election_messages();
        let mut all = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let frame = request_frame(Request::Election(m.clone()));
            put("election", &format!("frame-{i}"), &frame);
            all.extend(frame);
        }
        put("election", "frames-all", &all);
        // A vote request, a heartbeat of the next term, then a stale vote.
        let mut sequence = Vec::new();
        for i in [0, 2, 1] {
            sequence.extend(request_frame(Request::Election(msgs[i].clone())));
        }
        put("election", "frames-sequence", &sequence);
        let alive = Announcement::Alive {
            capability: Capability::new(true, 1),
            last_completed_round: 9,
            checkpoint: None,
        };
        put(
            "election",
            "gossip-alive",
            &wire::encode(&alive).expect("gossip"),
        );
        put("election", "invalid-kind", &[1, 1, 0, 0, 0, 0xff]);
    }

    fn checkpoint_seeds() {
        use models::data::Dataset;
        use models::text::BowTextEncoder;
        use node::learn::SynthesizerConfig;
        let side = CHECKPOINT_SIDE;
        let classes = CHECKPOINT_CLASSES;
        let n = 8;
        let public = Dataset {
            images: (0..n * side * side).map(|i| (i * 37 % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % classes) as u8).collect(),
            rows: side,
            cols: side,
            classes: (0..classes).map(|c| format!("class{c}")).collect(),
        };
        let corpus: Vec<(usize, String)> = public.classes.iter().cloned().enumerate().collect();
        let encoder = std::sync::Arc::new(BowTextEncoder::new(4, 0, &corpus));
        // No critic: its task model needs larger images than the target's hosts have (the
        // memory it would learn from still fills).
        let cfg = SynthesizerConfig {
            critic_steps: 0,
            ..SynthesizerConfig::default().tiny()
        };
        let mut host = node::learn::Synthesizer::new(cfg, encoder, &public, 1).expect("host");
        let bytes = host.checkpoint().expect("checkpoint");
        let pixels = side * side;
        node::learn::synthesizer::decode_checkpoint(&bytes, classes, pixels)
            .expect("the seed checkpoint decodes");
        put("checkpoint", "fresh-host", &bytes);
        // A round later: the delta from the fresh host's checkpoint, after the base and its
        // length (how the target splits its input).
        host.pretrain().expect("pre-training");
        let start = host.start_round(1).expect("round");
        let layout = protocol::UploadLayout::of(&start);
        let sum = vec![0.5; layout.len()];
        host.finish_round(&start, &sum).expect("finish");
        let next = host.checkpoint().expect("checkpoint");
        let delta = node::learn::synthesizer::checkpoint_delta(&bytes, &next)
            .expect("delta")
            .expect("a delta continues its base");
        let applied = node::learn::synthesizer::apply_checkpoint_delta(&bytes, &delta);
        assert_eq!(applied.expect("the seed delta applies"), next);
        let len = (bytes.len() as u32).to_le_bytes();
        put(
            "checkpoint",
            "base-and-delta",
            &[&len[..], &bytes, &delta].concat(),
        );
        put("checkpoint", "invalid-truncated", &bytes[..bytes.len() / 2]);
        put("checkpoint", "invalid-empty", b"");
    }

    fn idx_seeds() {
        use models::data::idx::{encode_idx, IdxArray};
        let labels = IdxArray {
            dims: vec![6],
            data: vec![0, 1, 2, 3, 4, 5],
        };
        let images = IdxArray {
            dims: vec![2, 3, 3],
            data: (0..18).collect(),
        };
        let labels = encode_idx(&labels).expect("idx");
        put("idx", "labels", &labels);
        put("idx", "images", &encode_idx(&images).expect("idx"));
        put("idx", "labels-gzip", &gzip_stored(&labels));
        put("idx", "invalid-magic", &[0, 1, 8, 1, 0, 0, 0, 1, 0]);
        put("idx", "invalid-dims", &[0, 0, 8, 4, 0xff, 0xff, 0xff, 0xff]);
    }

    /// A gzip member holding `data` in one stored (uncompressed) deflate block.
    fn gzip_stored(data: &[u8]) -> Vec<u8> {
        let len = u16::try_from(data.len()).expect("short data");
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(data);
        out.extend(crc32(data).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn config_seeds() {
        let cfg = node::config::NodeConfig::default();
        let documented = cfg.to_toml_documented().expect("documented config");
        put("config", "documented", documented.as_bytes());
        let plain = toml::to_string(&cfg).expect("config toml");
        put("config", "default", plain.as_bytes());
        let member = libp2p::identity::Keypair::ed25519_from_bytes([7; 32])
            .expect("key")
            .public()
            .to_peer_id();
        let members = format!(
            "[network]\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\nmembers = [\"{member}\"]\n\
             [privacy]\nepsilon = 2.5\ndelta = 1e-6\n"
        );
        put("config", "members", members.as_bytes());
        put("config", "invalid-syntax", b"[network\nlisten = ");
        put("config", "invalid-range", b"[privacy]\nepsilon = -1.0\n");
    }

    fn ledger_seeds() {
        use privacy::ledger::{Budget, ChargeContext, Ledger, TrainingCost, DB_DIR, TREE};
        use privacy::mechanism::{GaussianRelease, ReleaseConfig};
        use privacy::PrivacyUnit;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = {
            let ledger = Ledger::open(dir.path()).expect("ledger");
            let release = GaussianRelease::new(&ReleaseConfig {
                clip: 1.0,
                noise_multiplier: 3.0,
                expected_participants: 5,
                min_participants: 4,
                sample_rate: 1.0,
                dimension: 16,
            })
            .expect("release");
            let ctx = |round, unit| ChargeContext {
                round,
                dataset_id: "seed".into(),
                unit,
            };
            ledger
                .charge(release, &ctx(1, PrivacyUnit::Client))
                .expect("charge");
            let training = TrainingCost {
                records: 100,
                sample_rate: 0.1,
                noise_multiplier: 1.1,
                clip: 1.0,
                steps: 5,
            };
            ledger
                .charge_training(&training, &ctx(2, PrivacyUnit::Record))
                .expect("training");
            ledger
                .set_budget(Budget::new(8.0, 1e-5).expect("budget"))
                .expect("set");
            ledger.public_key_hex()
        };
        let db = sled::open(dir.path().join(DB_DIR)).expect("db");
        let tree = db.open_tree(TREE).expect("tree");
        let get = |k: &[u8]| {
            tree.get(k)
                .expect("get")
                .map(|v| v.to_vec())
                .unwrap_or_default()
        };
        let entries: Vec<Vec<u8>> = tree
            .scan_prefix(b"e:")
            .map(|kv| kv.expect("entry").1.to_vec())
            .collect();
        let (meta, head, budget) = (get(b"m:meta"), get(b"m:head"), get(b"m:budget"));
        let input = |entries: &[Vec<u8>], head: &[u8]| {
            let mut lines = vec![key.as_bytes().to_vec(), meta.clone(), head.to_vec()];
            lines.push(budget.clone());
            lines.extend(entries.iter().cloned());
            lines.join(&b'\n')
        };
        let valid = input(&entries, &head);
        let report = privacy::ledger::verify_raw(
            Some(&meta),
            &entries
                .iter()
                .enumerate()
                .map(|(i, e)| (i as u64, &e[..]))
                .collect::<Vec<_>>(),
            Some(&head),
            &key_bytes(&key),
        );
        assert!(report.valid, "{report:?}");
        put("ledger", "chain", &valid);
        put("ledger", "chain-truncated", &input(&entries[..1], &head));
        put("ledger", "chain-no-head", &input(&entries, b""));
        put(
            "ledger",
            "invalid-meta",
            b"00\n{\"body\":\"{}\",\"signature\":\"zz\"}\n\n{\"epsilon\":-1,\"delta\":2}",
        );
    }

    fn key_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect()
    }

    fn psk_seeds() {
        let hex: String = (0..32).map(|i| format!("{:02x}", i * 7 % 256)).collect();
        put(
            "psk",
            "swarm-key",
            format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n").as_bytes(),
        );
        put(
            "psk",
            "swarm-key-crlf",
            format!("/key/swarm/psk/1.0.0/\r\n/base16/\r\n{hex}\r\n").as_bytes(),
        );
        put("psk", "hex", format!("{hex}\n").as_bytes());
        put(
            "psk",
            "invalid-digit",
            format!("{}zz", &hex[..62]).as_bytes(),
        );
        put("psk", "invalid-lines", b"/key/swarm/psk/1.0.0/\n/base16/\n");
    }

    fn admin_seeds() {
        put(
            "admin",
            "status",
            b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        );
        put(
            "admin",
            "metrics-bearer",
            b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer ffff\r\n\r\n",
        );
        put(
            "admin",
            "page-token",
            b"GET /?token=ffff&x=1 HTTP/1.1\r\n\r\n",
        );
        put(
            "admin",
            "reply",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        );
        put(
            "admin",
            "invalid-method",
            b"DELETE /status HTTP/1.1\r\n\r\n",
        );
        put("admin", "invalid-utf8", b"\xff\xfe\n");
    }

    /// Writes every target's seed inputs (overwriting earlier seeds, keeping other inputs).
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand when an encoder changes"]
    fn write_seed_corpus() {
        wire_seeds();
        secagg_seeds();
        election_seeds();
        checkpoint_seeds();
        idx_seeds();
        config_seeds();
        ledger_seeds();
        psk_seeds();
        admin_seeds();
    }
}
