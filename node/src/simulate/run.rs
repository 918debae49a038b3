//! One simulated run: a method (or ablation) driven round by round over in-process clients.

use std::time::Instant;

use models::classifier::Arch;
use models::data::Dataset;
use models::generator::Generator;
use models::train::{accuracy, DistillSet};
use privacy::PrivacyUnit;
use protocol::session::release::Release;
use serde::Serialize;

use super::baselines::{fedavg_round, fedmd_round};
use super::config::{run_name, Ablation, Method, SimConfig};
use super::dp::DpClients;
use super::fedavg::copy_from_first;
use super::federation::{Federation, RoundEnd};
use super::setup::Setup;
use crate::learn::{Learner, LearnerConfig, Synthesizer};
use crate::world::{eval_rng, sub_seed};

/// Seconds spent in each phase of a round. Its fields are [`protocol::wire::Phase`] names (a
/// test in `crate::metrics` checks it) plus `evaluate`; a struct so the report shows every one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseSeconds {
    /// Host samples the synthetic set.
    pub generate: f64,
    /// Clients train.
    pub learn: f64,
    /// Clients judge the synthetic (or public) set.
    pub judge: f64,
    /// Uploads summed and read as a teacher.
    pub aggregate: f64,
    /// Generator fine-tuning.
    pub improve: f64,
    /// Metrics (not part of the protocol).
    pub evaluate: f64,
}

/// Numbers of one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// Round number (1-based).
    pub round: usize,
    /// Mean client accuracy on the real test set.
    pub client_acc_mean: f64,
    /// Worst client accuracy.
    pub client_acc_min: f64,
    /// Every client's accuracy.
    pub client_acc: Vec<f64>,
    /// Oracle conditional accuracy of the generator's samples (methods with a generator).
    pub gen_oracle_acc: Option<f64>,
    /// Fréchet distance of the generator's samples in oracle feature space.
    pub gen_frechet: Option<f64>,
    /// Per-class oracle accuracy of the generator's samples.
    pub gen_per_class_acc: Option<Vec<f64>>,
    /// Synthetic samples kept by the reward filter.
    pub kept: Option<usize>,
    /// Mean reward ρ.
    pub mean_reward: Option<f32>,
    /// Wall time of the round's protocol phases (evaluation excluded).
    pub seconds: f64,
    /// Per-phase wall time.
    pub phases: PhaseSeconds,
    /// Bytes host → clients (all clients).
    pub downlink_bytes: usize,
    /// Bytes clients → host (all clients).
    pub uplink_bytes: usize,
    /// Clients whose upload entered the aggregate.
    pub participants: usize,
    /// Clients that told the host they sit the round out (privacy budget exhausted).
    pub abstained: usize,
    /// ε spent by each client so far (DP runs).
    pub epsilon: Option<Vec<f64>>,
    /// Mean accuracy of the same clients trained on their own data alone for as many rounds
    /// (the local-only reference; None in a local run, which is its own reference).
    pub local_acc_mean: Option<f64>,
    /// Worst client of the local-only reference.
    pub local_acc_min: Option<f64>,
    /// Every client's local-only accuracy.
    pub local_acc: Option<Vec<f64>>,
}

/// Everything a run produced; serialised as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Method, or the ablation's name.
    pub method: String,
    /// Seed.
    pub seed: u64,
    /// Per-round numbers.
    pub rounds: Vec<RoundReport>,
    /// Oracle accuracy of the pre-trained generator's samples.
    pub gen_oracle_acc_start: f64,
    /// Fréchet distance of the pre-trained generator's samples.
    pub gen_frechet_start: f64,
    /// Per-class oracle accuracy of the pre-trained generator.
    pub gen_per_class_acc_start: Vec<f64>,
    /// Oracle's accuracy on real test images.
    pub oracle_acc_real: f64,
    /// Architecture of each client.
    pub client_archs: Vec<Arch>,
    /// Private images of each client.
    pub client_sizes: Vec<usize>,
    /// Where the data came from.
    pub data: String,
    /// Side of the (square) images.
    pub image_side: usize,
    /// The full configuration.
    pub config: SimConfig,
    /// Total wall time of the run.
    pub total_seconds: f64,
    /// Noise multiplier z (DP runs): of the uploads (client-level), or the largest of the
    /// clients' DP-SGD plans (record-level).
    pub dp_noise_multiplier: Option<f64>,
    /// The privacy unit of the run's DP (`None`: no DP).
    pub privacy_unit: Option<privacy::PrivacyUnit>,
    /// How each client's last round used its private records.
    pub private_use: Vec<Option<crate::learn::PrivateUse>>,
    /// Whether every client's ledger chain verified at the end (DP runs).
    pub ledgers_verified: Option<bool>,
}

/// Images a run hands back for grids: (pixels, labels) at the start and the end.
pub struct RunImages {
    /// Generator samples before round 1.
    pub start: Option<(Vec<u8>, Vec<u8>)>,
    /// Generator samples after the last round.
    pub end: Option<(Vec<u8>, Vec<u8>)>,
}

/// Progress callback: (round, phase).
pub type Progress<'a> = &'a (dyn Fn(usize, &str) + Sync);

/// The architecture of each client in a run of `method`: FedAvg's one architecture, else
/// round-robin over the heterogeneous mix.
pub fn client_archs(cfg: &SimConfig, method: Method) -> Vec<Arch> {
    (0..cfg.clients)
        .map(|k| {
            if method == Method::Fedavg {
                cfg.fedavg.arch
            } else {
                Arch::MIXED[k % Arch::MIXED.len()]
            }
        })
        .collect()
}

/// The clients' knobs in a run of `method`: FedAvg's optimiser, learning rate and alignment
/// weight (its own, tuned on the validation split), everyone else's the config's.
pub fn learner_config(cfg: &SimConfig, method: Method) -> LearnerConfig {
    let mut c = cfg.client;
    if method == Method::Fedavg {
        c.optimizer = cfg.fedavg.optimizer;
        c.lr = cfg.fedavg.lr;
        c.momentum = cfg.fedavg.momentum;
        c.train.align_weight = cfg.fedavg.align_weight;
    }
    c
}

/// What client `k` trains on in a run of `method`: its private data, and under `host-data`
/// the host's labelled public set after it.
pub fn client_data(setup: &Setup, k: usize, method: Method) -> Dataset {
    let own = setup.client_data(k);
    if method != Method::HostData {
        return own;
    }
    let host = &setup.splits.host;
    let mut data = own;
    data.images.extend_from_slice(&host.images);
    data.labels.extend_from_slice(&host.labels);
    data
}

/// Runs `method` (with `ablation`) for `cfg.rounds` rounds on the shared `setup`.
pub fn run(
    cfg: &SimConfig,
    setup: &Setup,
    method: Method,
    ablation: Option<Ablation>,
    progress: Progress,
) -> anyhow::Result<(RunReport, RunImages)> {
    let clients = Clients {
        archs: client_archs(cfg, method),
        learner: learner_config(cfg, method),
        data_of: method,
    };
    run_clients(cfg, setup, method, ablation, clients, progress)
}

/// The local-only reference of a run of `method`: the same clients (architectures, knobs,
/// seeds, private data) trained on their own data alone for as many rounds, i.e. a `local`
/// run with the architectures and knobs of `method`.
pub fn local_reference(
    cfg: &SimConfig,
    setup: &Setup,
    method: Method,
    progress: Progress,
) -> anyhow::Result<RunReport> {
    let clients = Clients {
        archs: client_archs(cfg, method),
        learner: learner_config(cfg, method),
        data_of: Method::Local,
    };
    Ok(run_clients(cfg, setup, Method::Local, None, clients, progress)?.0)
}

/// Who the clients of a run are: architectures, knobs, and the method whose training data
/// they hold ([`client_data`]).
struct Clients {
    archs: Vec<Arch>,
    learner: LearnerConfig,
    data_of: Method,
}

impl RunReport {
    /// Copies the client accuracies of `local` (a local run of the same clients) into this
    /// run's rounds as the local-only reference, round by round.
    pub fn set_local_reference(&mut self, local: &RunReport) {
        for r in &mut self.rounds {
            let same = local.rounds.iter().find(|l| l.round == r.round);
            r.local_acc_mean = same.map(|l| l.client_acc_mean);
            r.local_acc_min = same.map(|l| l.client_acc_min);
            r.local_acc = same.map(|l| l.client_acc.clone());
        }
    }
}

/// [`run`] with the clients given.
fn run_clients(
    cfg: &SimConfig,
    setup: &Setup,
    method: Method,
    ablation: Option<Ablation>,
    who: Clients,
    progress: Progress,
) -> anyhow::Result<(RunReport, RunImages)> {
    let t0 = Instant::now();
    let mut host_cfg = cfg.host;
    let mut client_cfg = who.learner;
    let archs = who.archs;
    match ablation {
        Some(Ablation::FrozenGenerator) => host_cfg.improve_generator = false,
        Some(Ablation::NoFilter) => host_cfg.keep_threshold = 0.0,
        Some(Ablation::NoAlign) => client_cfg.train.align_weight = 0.0,
        Some(Ablation::NoDistill) | None => {}
    }
    if let Some(dp) = &cfg.dp {
        host_cfg.prompt_mix = dp.prompt_mix;
        if dp.unit == PrivacyUnit::Record {
            // Record-level clients withhold their latent moments (no DP release of them yet).
            host_cfg.moment_strength = 0.0;
        }
    }
    let distill = ablation != Some(Ablation::NoDistill);
    // Record-level DP trains every method's clients by DP-SGD; client-level DP noises
    // FedMMKT's uploads.
    let mut dp = match (&cfg.dp, method) {
        (Some(dp), _) if dp.unit == PrivacyUnit::Record || method == Method::Fedmmkt => {
            let name = run_name(method, ablation);
            let dir = setup
                .work_dir
                .join("ledgers")
                .join(format!("{name}-{}-eps-{}", dp.unit, dp.epsilon));
            Some(DpClients::new(
                dp,
                cfg.clients,
                dp.calibration_rounds.unwrap_or(cfg.rounds),
                &dir,
            )?)
        }
        _ => None,
    };
    let mut clients = Vec::with_capacity(cfg.clients);
    for (k, &arch) in archs.iter().enumerate() {
        let seed = sub_seed(cfg.seed, 100 + k as u64);
        let learner = Learner::new(
            k,
            arch,
            client_data(setup, k, who.data_of),
            &setup.encoder,
            client_cfg,
            seed,
        )?;
        clients.push(match dp.as_mut() {
            Some(dp) => dp.attach(k, learner, seed)?,
            None => learner,
        });
    }
    if method == Method::Fedavg {
        // FedAvg starts every client from the same global model.
        copy_from_first(&mut clients)?;
    }
    // Private images per client (FedAvg's weights); host-data's shared set is not private.
    let client_sizes: Vec<usize> = setup.partition.iter().map(Vec::len).collect();
    let mut host = if method == Method::Fedmmkt {
        let mut h = Synthesizer::new(
            host_cfg,
            setup.encoder.clone(),
            &setup.splits.host,
            sub_seed(cfg.seed, 4),
        )?;
        h.generator_mut().load(&setup.pretrained)?;
        Some(h)
    } else {
        None
    };
    let mut images = RunImages {
        start: None,
        end: None,
    };
    if let Some(h) = &host {
        images.start = Some(h.sample_per_class(10, &mut eval_rng(cfg.seed, u64::MAX))?);
    }
    let public = &setup.splits.public;
    let mut public_teacher: Option<Vec<f32>> = None;
    let clip = cfg.dp.as_ref().map_or(1.0, |dp| dp.clip);
    let z = dp
        .as_mut()
        .map(DpClients::upload_noise_multiplier)
        .transpose()?
        .unwrap_or(0.0);
    let mut fed = Federation::new(cfg.clients, cfg.secagg, clip, z, sub_seed(cfg.seed, 5))?;
    let mut rounds = Vec::with_capacity(cfg.rounds);
    for r in 1..=cfg.rounds {
        let mut ph = PhaseSeconds::default();
        let traffic = match method {
            Method::Fedmmkt => {
                let host = host.as_mut().ok_or_else(|| anyhow::anyhow!("no host"))?;
                fedmmkt_round(
                    r,
                    cfg,
                    host,
                    &mut clients,
                    &mut fed,
                    dp.as_mut(),
                    distill,
                    &mut ph,
                    progress,
                )?
            }
            Method::Local | Method::HostData => {
                progress(r, "learn");
                let t = Instant::now();
                for_each_client(&mut clients, cfg.threads, |c| {
                    c.train(r as u64, None).map(|_| ())
                })?;
                ph.learn = t.elapsed().as_secs_f64();
                Traffic::default()
            }
            Method::Fedavg => fedavg_round(r, cfg, &mut clients, &client_sizes, &mut ph, progress)?,
            Method::Fedmd => {
                let set = public_teacher
                    .as_ref()
                    .filter(|_| distill)
                    .map(|q| DistillSet {
                        images: public.images.clone(),
                        teacher: q.clone(),
                        labels: None,
                        emb: None,
                    });
                let (teacher, traffic) = fedmd_round(
                    r,
                    cfg,
                    &mut clients,
                    public,
                    set.as_ref(),
                    &mut ph,
                    progress,
                )?;
                public_teacher = Some(teacher);
                traffic
            }
        };
        let seconds = ph.generate + ph.learn + ph.judge + ph.aggregate + ph.improve;
        progress(r, "evaluate");
        let t = Instant::now();
        let eval_set = if cfg.validation {
            &setup.splits.oracle
        } else {
            &setup.splits.test
        };
        let client_acc = if method == Method::Fedavg {
            // After averaging every client holds the global model: score it once.
            let first = clients
                .first()
                .ok_or_else(|| anyhow::anyhow!("no clients"))?;
            vec![accuracy(first.model(), eval_set)?; clients.len()]
        } else {
            map_clients(&mut clients, cfg.threads, |c| {
                Ok(accuracy(c.model(), eval_set)?)
            })?
        };
        let (mut gen_oracle_acc, mut gen_frechet, mut gen_per_class_acc) = (None, None, None);
        if let Some(h) = &host {
            // The same noise every round (common random numbers): changes are the generator's.
            let (imgs, labels) =
                h.sample_per_class(cfg.eval_per_class, &mut eval_rng(cfg.seed, 0))?;
            let s = setup.oracle.score(&imgs, &labels)?;
            gen_oracle_acc = Some(s.oracle_acc);
            gen_frechet = Some(s.frechet);
            gen_per_class_acc = Some(s.per_class_acc);
        }
        ph.evaluate = t.elapsed().as_secs_f64();
        let mean = client_acc.iter().sum::<f64>() / client_acc.len() as f64;
        let min = client_acc.iter().copied().fold(f64::INFINITY, f64::min);
        tracing::debug!(round = r, mean, min, ?gen_oracle_acc, "round done");
        rounds.push(RoundReport {
            round: r,
            client_acc_mean: mean,
            client_acc_min: min,
            client_acc,
            gen_oracle_acc,
            gen_frechet,
            gen_per_class_acc,
            kept: traffic.kept,
            mean_reward: traffic.mean_reward,
            seconds,
            phases: ph,
            downlink_bytes: traffic.down,
            uplink_bytes: traffic.up,
            participants: traffic.participants.unwrap_or(cfg.clients),
            abstained: traffic.abstained,
            epsilon: dp.as_ref().map(DpClients::epsilon_spent).transpose()?,
            local_acc_mean: None,
            local_acc_min: None,
            local_acc: None,
        });
    }
    if let Some(h) = &host {
        images.end = Some(h.sample_per_class(10, &mut eval_rng(cfg.seed, u64::MAX))?);
    }
    let name = run_name(method, ablation).to_string();
    let report = RunReport {
        method: name,
        seed: cfg.seed,
        rounds,
        gen_oracle_acc_start: setup.gen_start.oracle_acc,
        gen_frechet_start: setup.gen_start.frechet,
        gen_per_class_acc_start: setup.gen_start.per_class_acc.clone(),
        oracle_acc_real: setup.oracle_acc_real,
        client_archs: archs,
        client_sizes,
        data: setup.data_origin.clone(),
        image_side: setup.splits.test.rows,
        config: cfg.clone(),
        total_seconds: t0.elapsed().as_secs_f64(),
        privacy_unit: cfg.dp.map(|d| d.unit),
        dp_noise_multiplier: dp.as_ref().and_then(|d| {
            d.noise_multipliers()
                .iter()
                .flatten()
                .copied()
                .reduce(f64::max)
        }),
        private_use: clients.iter().map(Learner::last_use).collect(),
        ledgers_verified: dp.as_ref().map(DpClients::verify_all),
    };
    Ok((report, images))
}

/// What one round moved and kept, for its report.
#[derive(Default)]
pub(super) struct Traffic {
    pub(super) down: usize,
    pub(super) up: usize,
    pub(super) kept: Option<usize>,
    pub(super) mean_reward: Option<f32>,
    /// Uploads in the aggregate (None: every client).
    pub(super) participants: Option<usize>,
    pub(super) abstained: usize,
}

/// One FedMMKT round through the node's round sessions: generate, offer, learn, judge,
/// release (through each client's ledger when DP is on), aggregate, improve.
#[allow(clippy::too_many_arguments)]
fn fedmmkt_round(
    r: usize,
    cfg: &SimConfig,
    host: &mut Synthesizer,
    clients: &mut [Learner],
    fed: &mut Federation,
    mut dp: Option<&mut DpClients>,
    distill: bool,
    ph: &mut PhaseSeconds,
    progress: Progress,
) -> anyhow::Result<Traffic> {
    let mut traffic = Traffic::default();
    progress(r, "generate");
    let t = Instant::now();
    let start = host.start_round(r as u64)?;
    ph.generate = t.elapsed().as_secs_f64();
    progress(r, "learn");
    let t = Instant::now();
    let invited = fed.open(start.clone())?;
    anyhow::ensure!(
        invited.len() == clients.len(),
        "{} of {} clients joined the round",
        invited.len(),
        clients.len()
    );
    for_each_client(clients, cfg.threads, |c| {
        c.learn(&start, distill).map(|_| ())
    })?;
    ph.learn = t.elapsed().as_secs_f64();
    progress(r, "judge");
    let t = Instant::now();
    let uploads = map_clients(clients, cfg.threads, |c| c.judge(&start))?;
    let mut releases = Vec::with_capacity(uploads.len());
    for (k, upload) in uploads.into_iter().enumerate() {
        let plan = fed.plan(k)?;
        let release = match dp.as_deref_mut() {
            Some(dp) => dp.release(k, &plan, upload)?,
            None => Release::Noised(upload),
        };
        if release == Release::BudgetExhausted {
            traffic.abstained += 1;
        }
        releases.push((k, plan, release));
    }
    ph.judge = t.elapsed().as_secs_f64();
    progress(r, "aggregate");
    let t = Instant::now();
    for (k, plan, release) in releases {
        fed.released(k, &plan, release)?;
    }
    let end = fed.end();
    ph.aggregate = t.elapsed().as_secs_f64();
    let bytes = fed.bytes();
    traffic.down = bytes.down;
    traffic.up = bytes.up;
    progress(r, "improve");
    match end {
        Some(RoundEnd::Sum { sum, included }) => {
            traffic.participants = Some(included);
            let t = Instant::now();
            let outcome = host.finish_round(&start, &sum)?;
            ph.improve = t.elapsed().as_secs_f64();
            traffic.kept = Some(outcome.kept);
            traffic.mean_reward = Some(outcome.mean_reward);
        }
        other => {
            let reason = match other {
                Some(RoundEnd::Abandoned(reason)) => reason,
                _ => "the round did not end".to_string(),
            };
            tracing::warn!(round = r, "no aggregate released this round: {reason}");
            traffic.participants = Some(0);
            traffic.kept = Some(0);
        }
    }
    Ok(traffic)
}

/// Runs `f` on every client, `threads` clients at a time; results in client order.
pub(super) fn map_clients<T: Send>(
    clients: &mut [Learner],
    threads: usize,
    f: impl Fn(&mut Learner) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let chunk = clients.len().div_ceil(threads.max(1)).max(1);
    let results: Vec<anyhow::Result<Vec<T>>> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .chunks_mut(chunk)
            .map(|part| s.spawn(|| part.iter_mut().map(&f).collect::<anyhow::Result<Vec<T>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(clients.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

pub(super) fn for_each_client(
    clients: &mut [Learner],
    threads: usize,
    f: impl Fn(&mut Learner) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    map_clients(clients, threads, f).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::data::DataSource;

    /// Tiny models and data ([`SimConfig::tiny`], as node/tests/simulate.rs) and a setup in
    /// `dir`.
    fn tiny(dir: &std::path::Path) -> (SimConfig, Setup) {
        let full = DataSource::embedded().unwrap();
        let idx: Vec<usize> = (0..1400).collect();
        let src = DataSource {
            train: None,
            test: full.test.subset(&idx),
            origin: "tiny".into(),
        };
        let cfg = SimConfig::tiny();
        let setup = Setup::build(&cfg, &src, dir, &|_| {}).unwrap();
        (cfg, setup)
    }

    #[test]
    fn local_reference_is_the_same_clients_without_the_federation() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, setup) = tiny(dir.path());
        let reference = local_reference(&cfg, &setup, Method::Fedmmkt, &|_, _| {}).unwrap();
        assert_eq!(reference.method, "local");
        assert_eq!(reference.client_archs, client_archs(&cfg, Method::Fedmmkt));
        assert!(reference.rounds.iter().all(|r| r.local_acc.is_none()));
        // Deterministic for a seed, and exactly `--method local`.
        let again = run(&cfg, &setup, Method::Local, None, &|_, _| {})
            .unwrap()
            .0;
        for (a, b) in reference.rounds.iter().zip(&again.rounds) {
            assert_eq!(a.client_acc, b.client_acc);
        }
        // Without distillation a FedMMKT client learns exactly what it would alone...
        let (no_distill, _) = run(
            &cfg,
            &setup,
            Method::Fedmmkt,
            Some(Ablation::NoDistill),
            &|_, _| {},
        )
        .unwrap();
        for (a, b) in reference.rounds.iter().zip(&no_distill.rounds) {
            assert_eq!(a.client_acc, b.client_acc, "round {}", a.round);
        }
        // ...and so does every FedMMKT client in round 1, before any teacher exists.
        let (mut fedmmkt, _) = run(&cfg, &setup, Method::Fedmmkt, None, &|_, _| {}).unwrap();
        assert_eq!(fedmmkt.rounds[0].client_acc, reference.rounds[0].client_acc);
        fedmmkt.set_local_reference(&reference);
        for (r, l) in fedmmkt.rounds.iter().zip(&reference.rounds) {
            assert_eq!(r.local_acc.as_ref(), Some(&l.client_acc));
            assert_eq!(r.local_acc_mean, Some(l.client_acc_mean));
            assert_eq!(r.local_acc_min, Some(l.client_acc_min));
        }
        // FedAvg's reference trains FedAvg's one architecture.
        let fedavg = local_reference(&cfg, &setup, Method::Fedavg, &|_, _| {}).unwrap();
        assert!(fedavg.client_archs.iter().all(|&a| a == cfg.fedavg.arch));
        let knobs = learner_config(&cfg, Method::Fedavg);
        assert_eq!(
            (knobs.optimizer, knobs.lr, knobs.momentum),
            (cfg.fedavg.optimizer, cfg.fedavg.lr, cfg.fedavg.momentum)
        );
        assert_ne!(fedavg.rounds[0].client_acc, reference.rounds[0].client_acc);
    }
}
