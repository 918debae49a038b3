//! Secure aggregation end to end: round trips, dropouts, aborts, tampering and stage discipline.

mod secagg_common;

use privacy::secagg::messages::{EncryptedShare, UnmaskResponse};
use privacy::secagg::simulation::{simulate, DropStage, SimConfig};
use privacy::secagg::{
    AggregatorStage, ClientMessage, ClientStage, SecAggError, ServerMessage, Step,
};
use secagg_common::*;

fn run(cfg: &SimConfig) -> privacy::secagg::simulation::SimOutcome {
    simulate(cfg, false).unwrap_or_else(|e| panic!("{cfg:?}: {e}"))
}

#[test]
fn round_trips_across_n_k_t_and_dims() {
    // (n, k, t): complete graphs (SecAgg) and sparse ones (SecAgg+), thresholds from the minimum up to k.
    let shapes = [
        (3, 2, 2),
        (4, 3, 3),
        (5, 4, 3),
        (8, 7, 7),
        (10, 4, 3),
        (12, 6, 4),
        (16, 8, 8),
        (30, 10, 6),
    ];
    for (i, &(n, k, t)) in shapes.iter().enumerate() {
        for dim in [1u32, 7, 8193] {
            let cfg = config(n, k, Some(t), dim, 100 + i as u64);
            let out = run(&cfg);
            assert!(out.report.correct, "{cfg:?}");
            assert_eq!(out.report.included, n as usize);
            assert!(
                out.report.max_abs_error <= n as f64 * 1e-6,
                "{}",
                out.report.max_abs_error
            );
        }
    }
}

#[test]
fn wire_encoding_carries_a_whole_round() {
    let cfg = config(6, 4, None, 33, 7);
    let mut net = setup(&cfg);
    let round = net.params.round;
    let adverts = std::mem::take(&mut net.adverts);
    for m in adverts {
        let m = ClientMessage::decode(&m.encode(round), round).unwrap();
        net.agg.receive(m).unwrap();
    }
    let mut released = None;
    for _ in 0..4 {
        match net.agg.advance().unwrap() {
            Step::Send(out) => {
                let out = out
                    .into_iter()
                    .map(|(c, m)| (c, ServerMessage::decode(&m.encode(round), round).unwrap()))
                    .collect();
                let replies = answer(&mut net, out, &[true; 6]);
                for r in replies {
                    let bytes = r.encode(round);
                    assert_eq!(bytes.len(), r.encoded_len());
                    net.agg
                        .receive(ClientMessage::decode(&bytes, round).unwrap())
                        .unwrap();
                }
            }
            Step::Finished(o) => released = Some(o),
        }
    }
    let o = released.unwrap();
    let q = net.params.quantizer;
    assert_eq!(q.decode_sum(&o.sum), exact_sum(&net, &[0, 1, 2, 3, 4, 5]));
}

#[test]
fn dropouts_at_every_stage_up_to_n_minus_t() {
    let stages = [
        DropStage::BeforeAdvertise,
        DropStage::BeforeShareKeys,
        DropStage::AfterShareKeys,
        DropStage::AfterMaskedInput,
    ];
    for stage in stages {
        // Complete graph: n − t = 3 of 7 may drop.
        for drops in 1..=3u32 {
            let mut cfg = config(7, 6, Some(4), 50, 40 + u64::from(drops));
            cfg.dropout = f64::from(drops) / 7.0 + 1e-9;
            cfg.drop_stage = stage;
            let out = run(&cfg);
            assert_eq!(out.report.dropped, drops as usize);
            assert!(out.report.correct, "{stage:?} {drops}");
            let expect = if stage == DropStage::AfterMaskedInput {
                7
            } else {
                7 - drops as usize
            };
            assert_eq!(out.report.included, expect, "{stage:?}");
        }
        // Sparse graph: k − t = 3 drops per neighbourhood at most, whichever clients drop.
        let mut cfg = config(20, 8, Some(5), 300, 77);
        cfg.dropout = 0.15;
        cfg.drop_stage = stage;
        let out = run(&cfg);
        assert_eq!(out.report.dropped, 3);
        assert!(out.report.correct, "{stage:?}");
    }
}

/// Runs a 5-client complete-graph round (t = 3) where only `alive[stage]` answer at each stage.
fn abort_case(alive: [[bool; 5]; 4]) -> (Net, SecAggError) {
    let cfg = config(5, 4, Some(3), 10, 9);
    let mut net = setup(&cfg);
    let adverts: Vec<_> = std::mem::take(&mut net.adverts)
        .into_iter()
        .enumerate()
        .filter(|(c, _)| alive[0][*c])
        .map(|(_, m)| m)
        .collect();
    feed(&mut net, adverts);
    for alive_now in &alive[1..] {
        match net.agg.advance() {
            Ok(step) => {
                let out = sent(step);
                let replies = answer(&mut net, out, alive_now);
                feed(&mut net, replies);
            }
            Err(e) => return (net, e),
        }
    }
    match net.agg.advance() {
        Ok(_) => panic!("released a sum below threshold"),
        Err(e) => (net, e),
    }
}

#[test]
fn below_threshold_aborts_at_every_stage_and_releases_nothing() {
    let all = [true; 5];
    let two = [true, true, false, false, false];
    let cases = [
        ([two, two, two, two], "collect-keys"),
        ([all, two, two, two], "collect-shares"),
        ([all, all, two, two], "collect-masked-inputs"),
        ([all, all, all, two], "collect-unmask"),
    ];
    for (alive, stage) in cases {
        let (mut net, err) = abort_case(alive);
        match &err {
            SecAggError::BelowThreshold {
                stage: s,
                have,
                need,
                ..
            } => {
                assert_eq!(*s, stage);
                assert!(have < need);
            }
            other => panic!("expected BelowThreshold at {stage}, got {other}"),
        }
        assert_eq!(net.agg.stage(), AggregatorStage::Aborted);
        assert!(matches!(net.agg.advance(), Err(SecAggError::Aborted(_))));
        let late = net.adverts.first().cloned();
        if let Some(m) = late {
            assert!(matches!(net.agg.receive(m), Err(SecAggError::Aborted(_))));
        }
    }
}

/// Drives a full-participation round of `n` clients up to the unmask requests.
fn to_unmask(n: u32) -> (Net, Vec<(u32, ServerMessage)>) {
    let cfg = config(n, n - 1, None, 16, 21);
    let mut net = setup(&cfg);
    let adverts = std::mem::take(&mut net.adverts);
    feed(&mut net, adverts);
    let alive = vec![true; n as usize];
    for _ in 0..2 {
        let out = sent(net.agg.advance().unwrap());
        let replies = answer(&mut net, out, &alive);
        feed(&mut net, replies);
    }
    let out = sent(net.agg.advance().unwrap());
    (net, out)
}

#[test]
fn a_client_never_reveals_both_shares_of_a_peer() {
    let (mut net, out) = to_unmask(4);
    let (c, msg) = out[0].clone();
    let ServerMessage::Unmask(mut req) = msg else {
        panic!("expected unmask request")
    };
    let victim = req.survivors[0];
    req.dropped.push(victim);
    let client = &mut net.clients[c as usize];
    assert_eq!(
        client.handle(ServerMessage::Unmask(req.clone())),
        Err(SecAggError::RevealBoth(victim))
    );
    assert_eq!(client.stage(), ClientStage::Aborted);
    // Aborted for good: even an honest request is refused now.
    req.dropped.pop();
    assert!(matches!(
        client.handle(ServerMessage::Unmask(req)),
        Err(SecAggError::Aborted(_))
    ));
}

#[test]
fn the_aggregator_rejects_responses_that_reveal_what_was_not_asked() {
    let (mut net, out) = to_unmask(4);
    let (c, msg) = out[0].clone();
    let reply = net.clients[c as usize].handle(msg).unwrap();
    let ClientMessage::Unmask(resp) = reply else {
        panic!()
    };
    // Moving a self-mask share into the key-share list (a both-shares leak) is refused.
    let mut bad: UnmaskResponse = resp.clone();
    let moved = bad.self_mask_shares.pop().unwrap();
    bad.key_shares.push(moved);
    assert!(matches!(
        net.agg.receive(ClientMessage::Unmask(bad)),
        Err(SecAggError::WrongRecipients { .. })
    ));
    // A share at the wrong evaluation point is refused.
    let mut wrong_point = resp.clone();
    wrong_point.self_mask_shares[0].share[0] ^= 0x80;
    assert!(matches!(
        net.agg.receive(ClientMessage::Unmask(wrong_point)),
        Err(SecAggError::WrongShareId { .. })
    ));
    net.agg
        .receive(ClientMessage::Unmask(resp.clone()))
        .unwrap();
    assert!(matches!(
        net.agg.receive(ClientMessage::Unmask(resp)),
        Err(SecAggError::Duplicate { .. })
    ));
}

#[test]
fn tampered_share_ciphertexts_are_rejected_without_corrupting_state() {
    let cfg = config(5, 4, None, 8, 3);
    let mut net = setup(&cfg);
    let adverts = std::mem::take(&mut net.adverts);
    feed(&mut net, adverts);
    let out = sent(net.agg.advance().unwrap());
    let replies = answer(&mut net, out, &[true; 5]);
    feed(&mut net, replies);
    let out = sent(net.agg.advance().unwrap());
    let (c, msg) = out[0].clone();
    let ServerMessage::Shares(good) = msg else {
        panic!()
    };
    let x = net.inputs[c as usize].clone();
    let client = &mut net.clients[c as usize];
    client.set_input(&x).unwrap();
    for byte in [0usize, 40, 81] {
        let mut bad = good.clone();
        bad.shares[1].ciphertext[byte] ^= 1;
        assert!(matches!(
            client.handle(ServerMessage::Shares(bad)),
            Err(SecAggError::DecryptionFailed { .. })
        ));
    }
    // A ciphertext relabelled as coming from another neighbour does not authenticate either.
    let mut swapped = good.clone();
    let other = swapped.shares[1].peer;
    swapped.shares[0] = EncryptedShare {
        peer: swapped.shares[0].peer,
        ciphertext: swapped.shares[1].ciphertext.clone(),
    };
    let _ = other;
    assert!(matches!(
        client.handle(ServerMessage::Shares(swapped)),
        Err(SecAggError::DecryptionFailed { .. })
    ));
    let mut short = good.clone();
    short.shares[0].ciphertext.pop();
    assert!(matches!(
        client.handle(ServerMessage::Shares(short)),
        Err(SecAggError::WrongLength { .. })
    ));
    let mut dup = good.clone();
    dup.shares.push(dup.shares[0].clone());
    assert!(client.handle(ServerMessage::Shares(dup)).is_err());
    assert_eq!(client.stage(), ClientStage::AwaitShares);
    // The untampered delivery still works, and the round still sums correctly.
    let reply = client.handle(ServerMessage::Shares(good)).unwrap();
    net.agg.receive(reply).unwrap();
    let rest: Vec<_> = out[1..].to_vec();
    let replies = answer(&mut net, rest, &[true; 5]);
    feed(&mut net, replies);
    let out = sent(net.agg.advance().unwrap());
    let replies = answer(&mut net, out, &[true; 5]);
    feed(&mut net, replies);
    let Step::Finished(o) = net.agg.advance().unwrap() else {
        panic!()
    };
    assert_eq!(
        net.params.quantizer.decode_sum(&o.sum),
        exact_sum(&net, &[0, 1, 2, 3, 4])
    );
}

#[test]
fn tampered_signatures_and_substituted_keys_are_rejected() {
    let cfg = config(5, 4, None, 8, 4);
    let mut net = setup(&cfg);
    // The aggregator checks signatures on arrival.
    let ClientMessage::Advertise(a0) = net.adverts[0].clone() else {
        panic!()
    };
    let mut forged = a0.clone();
    forged.signature[5] ^= 1;
    assert_eq!(
        net.agg.receive(ClientMessage::Advertise(forged)),
        Err(SecAggError::BadSignature(0))
    );
    let mut swapped = a0.clone();
    swapped.mask_public = [9u8; 32];
    assert_eq!(
        net.agg.receive(ClientMessage::Advertise(swapped)),
        Err(SecAggError::BadSignature(0))
    );
    let mut impostor = a0.clone();
    impostor.sender = 1;
    assert_eq!(
        net.agg.receive(ClientMessage::Advertise(impostor)),
        Err(SecAggError::BadSignature(1))
    );
    let adverts = std::mem::take(&mut net.adverts);
    feed(&mut net, adverts);
    let out = sent(net.agg.advance().unwrap());
    // Clients check them again, so a malicious aggregator cannot substitute keys.
    let (c, msg) = out[0].clone();
    let ServerMessage::Keys(dir) = msg else {
        panic!()
    };
    let client = &mut net.clients[c as usize];
    let neighbour = dir.entries.iter().position(|e| e.sender != c).unwrap();
    let mut bad = dir.clone();
    bad.entries[neighbour].enc_public = [7u8; 32];
    assert!(matches!(
        client.handle(ServerMessage::Keys(bad)),
        Err(SecAggError::BadSignature(_))
    ));
    let mut bad = dir.clone();
    bad.entries[neighbour].signature[0] ^= 1;
    assert!(matches!(
        client.handle(ServerMessage::Keys(bad)),
        Err(SecAggError::BadSignature(_))
    ));
    let own = dir.entries.iter().position(|e| e.sender == c).unwrap();
    let mut bad = dir.clone();
    bad.entries[own].mask_public = [7u8; 32];
    assert_eq!(
        client.handle(ServerMessage::Keys(bad)),
        Err(SecAggError::KeysSubstituted(c))
    );
    let mut bad = dir.clone();
    bad.entries.push(bad.entries[neighbour].clone());
    assert!(client.handle(ServerMessage::Keys(bad)).is_err());
    assert_eq!(client.stage(), ClientStage::AwaitKeyDirectory);
    assert!(client.handle(ServerMessage::Keys(dir)).is_ok());
}

#[test]
fn malformed_duplicate_and_out_of_place_client_messages_do_not_corrupt_the_sum() {
    let cfg = config(6, 4, None, 20, 5);
    let mut net = setup(&cfg);
    let adverts = std::mem::take(&mut net.adverts);
    let first = adverts[0].clone();
    feed(&mut net, adverts);
    assert!(matches!(
        net.agg.receive(first),
        Err(SecAggError::Duplicate { .. })
    ));
    let out = sent(net.agg.advance().unwrap());
    let replies = answer(&mut net, out, &[true; 6]);
    // Shares addressed to the wrong set of clients, or from an unknown id, are refused.
    let ClientMessage::Shares(s0) = replies[0].clone() else {
        panic!()
    };
    let mut missing = s0.clone();
    missing.shares.pop();
    assert!(matches!(
        net.agg.receive(ClientMessage::Shares(missing)),
        Err(SecAggError::WrongRecipients { .. })
    ));
    let mut cut = s0.clone();
    cut.shares[0].ciphertext.truncate(10);
    assert!(matches!(
        net.agg.receive(ClientMessage::Shares(cut)),
        Err(SecAggError::WrongLength { .. })
    ));
    let mut stranger = s0.clone();
    stranger.sender = 99;
    assert_eq!(
        net.agg.receive(ClientMessage::Shares(stranger)),
        Err(SecAggError::UnknownClient(99))
    );
    feed(&mut net, replies);
    let out = sent(net.agg.advance().unwrap());
    let replies = answer(&mut net, out, &[true; 6]);
    let ClientMessage::Masked(m0) = replies[0].clone() else {
        panic!()
    };
    let mut long = m0.clone();
    long.masked.push(0);
    assert!(matches!(
        net.agg.receive(ClientMessage::Masked(long)),
        Err(SecAggError::WrongLength { .. })
    ));
    feed(&mut net, replies);
    assert!(matches!(
        net.agg.receive(ClientMessage::Masked(m0)),
        Err(SecAggError::Duplicate { .. })
    ));
    let out = sent(net.agg.advance().unwrap());
    let replies = answer(&mut net, out, &[true; 6]);
    feed(&mut net, replies);
    let Step::Finished(o) = net.agg.advance().unwrap() else {
        panic!()
    };
    assert_eq!(
        net.params.quantizer.decode_sum(&o.sum),
        exact_sum(&net, &[0, 1, 2, 3, 4, 5])
    );
}

#[test]
fn out_of_bound_inputs_are_rejected_before_masking() {
    let cfg = config(4, 3, None, 3, 6);
    let mut net = setup(&cfg);
    let client = &mut net.clients[0];
    assert!(matches!(
        client.set_input(&[0.0, 1.5, 0.0]),
        Err(SecAggError::OutOfBound { index: 1, .. })
    ));
    assert!(matches!(
        client.set_input(&[0.0, f32::INFINITY, 0.0]),
        Err(SecAggError::NotFinite(1))
    ));
    assert!(matches!(
        client.set_input(&[0.0, 0.0]),
        Err(SecAggError::WrongLength { .. })
    ));
    assert!(client.set_input(&[0.0, 1.0, -1.0]).is_ok());
}

/// Collects one real message of every kind from a full round (client → aggregator and back).
fn one_of_each() -> (Vec<ClientMessage>, Vec<ServerMessage>) {
    let cfg = config(4, 3, None, 4, 8);
    let mut net = setup(&cfg);
    let adverts = std::mem::take(&mut net.adverts);
    let mut cm = vec![adverts[0].clone()];
    let mut sm = Vec::new();
    feed(&mut net, adverts);
    for _ in 0..3 {
        let out = sent(net.agg.advance().unwrap());
        sm.push(out[0].1.clone());
        let replies = answer(&mut net, out, &[true; 4]);
        cm.push(replies[0].clone());
        feed(&mut net, replies);
    }
    (cm, sm)
}

#[test]
fn every_invalid_client_stage_transition_is_rejected() {
    let (_, sm) = one_of_each();
    let cfg = config(4, 3, None, 4, 8);
    // Walk a client through every stage; in each, offer every message but the one it expects.
    let mut net = setup(&cfg);
    let adverts = std::mem::take(&mut net.adverts);
    feed(&mut net, adverts);
    let mut checked = 0;
    let expect = [Some(0usize), Some(1), Some(2), None];
    let stages = [
        ClientStage::AwaitKeyDirectory,
        ClientStage::AwaitShares,
        ClientStage::AwaitUnmask,
        ClientStage::Done,
    ];
    for (i, stage) in stages.iter().enumerate() {
        assert_eq!(net.clients[0].stage(), *stage);
        for (j, m) in sm.iter().enumerate() {
            if expect[i] == Some(j) {
                continue;
            }
            let err = net.clients[0].handle(m.clone()).unwrap_err();
            assert!(
                matches!(err, SecAggError::UnexpectedMessage { role: "client", .. }),
                "{stage:?} {}: {err}",
                m.kind()
            );
            assert_eq!(net.clients[0].stage(), *stage, "state changed");
            checked += 1;
        }
        if i < 3 {
            let out = sent(net.agg.advance().unwrap());
            let replies = answer(&mut net, out, &[true; 4]);
            feed(&mut net, replies);
        }
    }
    // Input after the masked input was sent is refused too.
    assert!(net.clients[0].set_input(&[0.0; 4]).is_err());
    assert_eq!(checked, 3 * 2 + 3);
}

#[test]
fn every_invalid_aggregator_stage_transition_is_rejected() {
    let (cm, _) = one_of_each();
    let cfg = config(4, 3, None, 4, 8);
    let mut net = setup(&cfg);
    let adverts = std::mem::take(&mut net.adverts);
    let stages = [
        AggregatorStage::CollectKeys,
        AggregatorStage::CollectShares,
        AggregatorStage::CollectMaskedInputs,
        AggregatorStage::CollectUnmask,
        AggregatorStage::Done,
    ];
    let mut pending = adverts;
    let mut checked = 0;
    for (i, stage) in stages.iter().enumerate() {
        assert_eq!(net.agg.stage(), *stage);
        for (j, m) in cm.iter().enumerate() {
            if i == j {
                continue;
            }
            let err = net.agg.receive(m.clone()).unwrap_err();
            assert!(
                matches!(
                    err,
                    SecAggError::UnexpectedMessage {
                        role: "aggregator",
                        ..
                    }
                ),
                "{stage:?} {}: {err}",
                m.kind()
            );
            assert_eq!(net.agg.stage(), *stage, "state changed");
            checked += 1;
        }
        feed(&mut net, std::mem::take(&mut pending));
        if i < 4 {
            match net.agg.advance().unwrap() {
                Step::Send(out) => pending = answer(&mut net, out, &[true; 4]),
                Step::Finished(_) => assert_eq!(i, 3),
            }
        }
    }
    assert!(net.agg.advance().is_err(), "advance after done");
    assert_eq!(checked, 4 * 3 + 4);
}
