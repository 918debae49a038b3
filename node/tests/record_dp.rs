//! Record-level DP in the learner: each round's private training is paid for in the ledger
//! before it starts, a crash between the charge and the training never leads to training that
//! round again (nor to training one that was not charged), a spent budget leaves synthetic-only
//! participation, and bad privacy arguments are refused with exit code 2.

use std::process::Command;
use std::sync::Arc;

use models::classifier::Arch;
use models::data::DataSource;
use models::train::DistillSet;
use node::learn::{Learner, LearnerConfig, PrivateUse, RecordDp};
use node::world::bow_encoder;
use privacy::ledger::{Budget, Ledger, Spend};
use protocol::session::training::RecordTrainer;
use protocol::{LatentCode, RoundStart, TeacherTargets, UploadLayout};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn learner(epsilon: f64, ledger: Arc<Ledger>) -> Learner {
    let data = DataSource::embedded().unwrap().test;
    let idx: Vec<usize> = (0..200).collect();
    let data = data.subset(&idx);
    let encoder = bow_encoder(&data.classes, 16, 1);
    let mut cfg = LearnerConfig::default();
    cfg.train.epochs = 1;
    let l = Learner::new(0, Arch::Mlp, data, &encoder, cfg, 3).unwrap();
    let plan = l.record_plan(epsilon, 1e-5, 1.0, 3).unwrap();
    let trainer = RecordTrainer::new(plan, "node-records".into()).unwrap();
    l.with_record_dp(RecordDp {
        trainer,
        ledger,
        noise: ChaCha20Rng::seed_from_u64(9),
    })
}

fn weights(l: &Learner) -> Vec<f32> {
    l.model().flat_params().unwrap()
}

fn training_rounds(ledger: &Ledger) -> Vec<u64> {
    ledger
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.cost, Spend::Training(_)))
        .map(|e| e.round)
        .collect()
}

fn open(dir: &std::path::Path) -> Arc<Ledger> {
    let ledger = Ledger::open(dir).unwrap();
    if ledger.budget().unwrap().is_none() {
        ledger.set_budget(Budget::new(4.0, 1e-5).unwrap()).unwrap();
    }
    Arc::new(ledger)
}

#[test]
fn a_charged_round_is_trained_at_most_once_even_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let mut a = learner(4.0, ledger.clone());
    let before = weights(&a);
    a.train(1, None).unwrap();
    assert_eq!(a.last_use(), Some(PrivateUse::DpSgd));
    assert_ne!(weights(&a), before, "round 1 trained");
    assert_eq!(training_rounds(&ledger), vec![1]);
    // A crash after round 2's entry became durable and before its training finished: the
    // entry is charged as the permit is handed out; the process dies with it.
    let permit = a.record_dp().unwrap().trainer.permit(&ledger, 2).unwrap();
    assert!(matches!(
        permit,
        protocol::session::training::Permit::Train(_)
    ));
    drop(a);
    drop(ledger);
    // Restarted: the ledger is read back from disk; round 2 is not trained again, round 3 is.
    let ledger = open(dir.path());
    assert_eq!(training_rounds(&ledger), vec![1, 2]);
    let mut b = learner(4.0, ledger.clone());
    let fresh = weights(&b);
    b.train(2, None).unwrap();
    assert_eq!(b.last_use(), Some(PrivateUse::AlreadyTrained));
    assert_eq!(
        weights(&b),
        fresh,
        "a charged round must not be trained twice"
    );
    b.train(3, None).unwrap();
    assert_eq!(b.last_use(), Some(PrivateUse::DpSgd));
    assert_ne!(weights(&b), fresh);
    // Every private training had its entry first: one entry per trained round, no more.
    assert_eq!(training_rounds(&ledger), vec![1, 2, 3]);
    assert!(ledger.verify().is_ok());
}

#[test]
fn a_spent_budget_leaves_synthetic_only_participation() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let mut l = learner(4.0, ledger.clone());
    for r in 1..=3 {
        l.train(r, None).unwrap();
        assert_eq!(l.last_use(), Some(PrivateUse::DpSgd));
    }
    let spent = ledger.epsilon_spent(1e-5).unwrap().epsilon;
    assert!(spent <= 4.0 && spent > 3.0, "spent {spent}");
    let entries = ledger.len().unwrap();
    // Round 4: no private training, but the synthetic samples are still learned from.
    let p = 28 * 28;
    let set = DistillSet {
        images: (0..40 * p).map(|i| (i % 251) as u8).collect(),
        teacher: vec![0.1; 40 * 10],
        labels: Some((0..40).map(|i| (i % 10) as u8).collect()),
        emb: Some(vec![0.5; 40 * 16]),
    };
    let before = weights(&l);
    let stats = l.train(4, Some(&set)).unwrap();
    assert_eq!(l.last_use(), Some(PrivateUse::BudgetSpent));
    assert!(stats.steps > 0);
    assert_ne!(weights(&l), before, "synthetic-only training still learns");
    assert_eq!(ledger.len().unwrap(), entries, "nothing more is charged");
    assert!(ledger.epsilon_spent(1e-5).unwrap().epsilon <= 4.0);
}

/// Round `round`'s synthetic set of `n` samples, prompted with class `j % 10`, carrying
/// `teacher` for the round before.
fn round_start(round: u64, n: usize, teacher: Option<TeacherTargets>) -> RoundStart {
    RoundStart {
        round,
        side: 28,
        classes: 10,
        emb_dim: 16,
        images: (0..n * 28 * 28).map(|i| (i % 253) as u8).collect(),
        prompt_class: (0..n).map(|j| (j % 10) as u16).collect(),
        prompt_template: vec![0; n],
        text_emb: vec![0.25; n * 16],
        teacher,
        latent: None,
    }
}

#[test]
fn under_record_dp_the_samples_the_filter_dropped_are_distilled_against_their_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = learner(4.0, open(dir.path()));
    l.judge(&round_start(1, 6, None)).unwrap();
    let host = vec![0.1f32; 2 * 10];
    let teacher = TeacherTargets {
        round: 1,
        kept: vec![4, 1],
        probs: host.clone(),
    };
    let next = round_start(2, 6, Some(teacher));
    let set = l.distill_set(&next).unwrap();
    // The kept samples first, with the host's teacher; then the four dropped ones, each
    // against its prompted class, one-hot.
    assert_eq!(set.labels.as_deref(), Some(&[4u8, 1, 0, 2, 3, 5][..]));
    assert_eq!(set.images.len(), 6 * 28 * 28);
    assert_eq!(set.emb.as_ref().map(Vec::len), Some(6 * 16));
    assert_eq!(&set.teacher[..20], &host[..]);
    for (row, y) in set.teacher[20..].chunks(10).zip([0usize, 2, 3, 5]) {
        let onehot: Vec<f32> = (0..10).map(|k| f32::from(u8::from(k == y))).collect();
        assert_eq!(row, &onehot[..]);
    }
    // Without record-level DP only the kept samples are distilled.
    let data = DataSource::embedded().unwrap().test.subset(&[0, 1, 2, 3]);
    let encoder = bow_encoder(&data.classes, 16, 1);
    let mut plain =
        Learner::new(1, Arch::Mlp, data, &encoder, LearnerConfig::default(), 3).unwrap();
    plain.judge(&round_start(1, 6, None)).unwrap();
    assert_eq!(plain.distill_set(&next).unwrap().labels, Some(vec![4, 1]));
}

#[test]
fn moments_of_real_images_are_shared_without_record_dp_and_withheld_under_it() {
    let dir = tempfile::tempdir().unwrap();
    // A 4-wide code: the first four pixels, unscaled.
    let pixels = 28 * 28;
    let mut basis = vec![0f32; pixels * 4];
    for k in 0..4 {
        basis[k * 4 + k] = 1.0;
    }
    let code = LatentCode {
        dim: 4,
        mean: vec![0.0; pixels],
        basis,
        scale: vec![1.0; 4],
        clip: 100.0,
    };
    let start = RoundStart {
        latent: Some(code.clone()),
        ..round_start(1, 6, None)
    };
    let layout = UploadLayout::of(&start);
    assert_eq!(layout.moments, 4);
    // Under record-level DP the block is there but empty: nothing pays for such a release.
    let mut private = learner(4.0, open(dir.path()));
    let upload = private.judge(&start).unwrap();
    assert_eq!(upload.len(), layout.len());
    let block = 6 * 10 + 10;
    assert!(upload[block..].iter().all(|&v| v == 0.0));
    // Without it, the learner's own images give its class means, which the host reads back.
    let data = DataSource::embedded()
        .unwrap()
        .test
        .subset(&(0..50).collect::<Vec<_>>());
    let encoder = bow_encoder(&data.classes, 16, 1);
    let mut plain = Learner::new(
        1,
        Arch::Mlp,
        data.clone(),
        &encoder,
        LearnerConfig::default(),
        3,
    )
    .unwrap();
    let upload = plain.judge(&start).unwrap();
    let sum: Vec<f64> = upload.iter().map(|&v| f64::from(v)).collect();
    let read = layout.moments(&sum, code.clip, 1e-6).unwrap().unwrap();
    for (c, class) in read.classes.iter().enumerate() {
        let rows: Vec<usize> = (0..data.len())
            .filter(|&i| data.labels[i] as usize == c)
            .collect();
        let Some((mean, _)) = class else {
            assert!(rows.is_empty(), "class {c} has images but no moments");
            continue;
        };
        for (k, m) in mean.iter().enumerate() {
            let want = rows
                .iter()
                .map(|&i| data.images[i * pixels + k] as f32 / 127.5 - 1.0)
                .sum::<f32>()
                / rows.len() as f32;
            assert!((m - want).abs() < 1e-3, "class {c} dim {k}: {m} vs {want}");
        }
    }
}

fn fedmmkt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedmmkt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_privacy_arguments_exit_2_with_a_clear_message() {
    for (args, needle) in [
        (&["--dp-epsilon", "0"][..], "--dp-epsilon"),
        (&["--dp-epsilon=-1"][..], "--dp-epsilon"),
        (
            &["--dp-epsilon", "8", "--dp-delta", "1.5"][..],
            "--dp-delta",
        ),
        (&["--dp-epsilon", "8", "--dp-delta", "0"][..], "--dp-delta"),
        (&["--dp-epsilon", "8", "--dp-clip", "0"][..], "--dp-clip"),
        (
            &["--dp-epsilon", "8", "--privacy-unit", "person"][..],
            "person",
        ),
        (
            &["--dp-epsilon", "8", "--privacy-unit", "record,client"][..],
            "--dp-sweep",
        ),
    ] {
        let mut all = vec!["simulate", "--out", "/nonexistent/never-written"];
        all.extend_from_slice(args);
        let out = fedmmkt(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
