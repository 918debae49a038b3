//! The node's model work on its own thread, so training never stalls the network loop:
//! jobs go in over a channel, results come back over another.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Instant;

use models::classifier::Arch;
use models::train::accuracy;
use protocol::RoundStart;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::sync::mpsc::UnboundedSender;

use crate::learn::{
    Learner, LearnerConfig, PretrainCache, Pretraining, PrivateUse, RecordSettings, Synthesizer,
    SynthesizerConfig,
};
use crate::world::{sub_seed, World};

/// Work for the model thread.
pub enum Job {
    /// Become the host: pre-train (or load the pre-training from the cache), or resume from
    /// a checkpoint of a completed round.
    HostInit {
        /// (round, checkpoint bytes) of the last completed round, if any.
        checkpoint: Option<(u64, Vec<u8>)>,
        /// Directory of the pre-training cache.
        cache_dir: PathBuf,
    },
    /// Step 1: sample round `round`'s synthetic set.
    Generate {
        /// Round number.
        round: u64,
    },
    /// Steps 4–5 from the aggregate; returns the new checkpoint.
    Improve {
        /// The round's synthetic set.
        start: Box<RoundStart>,
        /// The (noised) sum of the uploads.
        sum: Vec<f64>,
    },
    /// Stop hosting (another node was elected).
    DropHost,
    /// Steps 2–3 as a client: learn, judge, report the upload.
    Learn {
        /// The host's term.
        term: u64,
        /// The attempt at the round.
        attempt: u32,
        /// The round's synthetic set.
        start: Box<RoundStart>,
    },
}

/// What the model thread reports.
pub enum Outcome {
    /// The host is ready to run round `next_round`.
    HostReady {
        /// Last completed round the generator reflects.
        resumed_from: u64,
        /// True when the pre-training came from the cache.
        cached: bool,
        /// Seconds spent.
        seconds: f64,
    },
    /// A synthetic set.
    Generated {
        /// The round's synthetic set.
        start: Box<RoundStart>,
        /// Seconds spent.
        seconds: f64,
    },
    /// The generator was improved.
    Improved {
        /// Round number.
        round: u64,
        /// The host checkpoint after the round.
        checkpoint: Vec<u8>,
        /// Samples kept by the reward filter.
        kept: usize,
        /// Mean reward.
        mean_reward: f32,
        /// Seconds spent.
        seconds: f64,
    },
    /// A client's upload (before DP).
    Judged {
        /// The host's term.
        term: u64,
        /// The attempt at the round.
        attempt: u32,
        /// Round number.
        round: u64,
        /// The upload vector.
        upload: Vec<f32>,
        /// Accuracy on the node's test split after learning.
        test_acc: f64,
        /// How the learning used the private records.
        private_use: Option<PrivateUse>,
        /// Seconds spent.
        seconds: f64,
    },
    /// A job failed.
    Failed {
        /// Which job.
        job: &'static str,
        /// Why.
        error: String,
    },
}

/// What the host's model work is doing before its first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPrep {
    /// Pre-training the generator on the public set.
    Pretraining,
    /// Loading the pre-trained generator from the cache.
    Cached,
    /// Resuming from the checkpoint of a completed round.
    Resuming,
}

impl HostPrep {
    /// How the status report names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pretraining => "pre-training",
            Self::Cached => "pre-training (cached)",
            Self::Resuming => "resuming",
        }
    }
}

/// What the model thread is preparing, shared with the handle for the status report.
type Preparing = Arc<Mutex<Option<HostPrep>>>;

/// The learner a node trains on its own data (its architecture from its embedded shard, or
/// the first one with a dataset of its own); the testnet's local-only reference builds the same.
pub fn node_client(world: &World, cfg: LearnerConfig, seed: u64) -> anyhow::Result<Learner> {
    let shard = world.shard.unwrap_or(0);
    let arch = match shard % 3 {
        0 => Arch::Mlp,
        1 => Arch::SmallCnn,
        _ => Arch::WideCnn,
    };
    Learner::new(
        shard,
        arch,
        world.private.clone(),
        &world.encoder,
        cfg,
        sub_seed(seed, 5),
    )
}

/// The handle the network loop keeps.
pub struct Ml {
    jobs: mpsc::Sender<Job>,
    preparing: Preparing,
}

impl Ml {
    /// Starts the model thread; results arrive on `out`. With `record`, the node's learner
    /// trains its private records by DP-SGD only, paid for round by round in its ledger.
    pub fn spawn(
        world: World,
        host_cfg: SynthesizerConfig,
        client_cfg: LearnerConfig,
        seed: u64,
        record: Option<RecordSettings>,
        out: UnboundedSender<Outcome>,
    ) -> anyhow::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let mut client = node_client(&world, client_cfg, seed)?;
        if let Some(r) = record {
            // The noise must be secret: from the OS, never from the run's seed.
            client = client.with_record_level(r, ChaCha20Rng::from_os_rng())?;
            if let Some(t) = client.record_dp().map(|d| &d.trainer) {
                tracing::info!(
                    z = t.noise_multiplier(),
                    q = t.plan().sample_rate(),
                    steps_per_round = t.plan().steps_per_round,
                    "record-level DP-SGD planned"
                );
            }
        }
        let preparing = Preparing::default();
        let shared = preparing.clone();
        std::thread::Builder::new()
            .name("fedmmkt-models".into())
            .spawn(move || worker(world, host_cfg, client, seed, rx, out, shared))?;
        Ok(Self { jobs, preparing })
    }

    /// What the host is doing before its first round, while it does it (`None` otherwise).
    pub fn preparing(&self) -> Option<HostPrep> {
        *self
            .preparing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a job (dropped silently when the thread is gone: the node is shutting down).
    pub fn send(&self, job: Job) {
        let _ = self.jobs.send(job);
    }
}

fn worker(
    world: World,
    host_cfg: SynthesizerConfig,
    mut client: Learner,
    seed: u64,
    rx: mpsc::Receiver<Job>,
    out: UnboundedSender<Outcome>,
    preparing: Preparing,
) {
    let set_preparing =
        |p: Option<HostPrep>| *preparing.lock().unwrap_or_else(PoisonError::into_inner) = p;
    let mut host: Option<Synthesizer> = None;
    while let Ok(job) = rx.recv() {
        let t0 = Instant::now();
        let name = match &job {
            Job::HostInit { .. } => "host init",
            Job::Generate { .. } => "generate",
            Job::Improve { .. } => "improve",
            Job::DropHost => "drop host",
            Job::Learn { .. } => "learn",
        };
        let result: anyhow::Result<Option<Outcome>> = (|| match job {
            Job::HostInit {
                checkpoint,
                cache_dir,
            } => {
                let seed = sub_seed(seed, 4);
                let (h, resumed_from, cached) = match checkpoint {
                    Some((round, bytes)) => {
                        set_preparing(Some(HostPrep::Resuming));
                        let mut h = Synthesizer::new(
                            host_cfg,
                            world.encoder.clone(),
                            &world.host_public,
                            seed,
                        )?;
                        h.restore(&bytes)?;
                        (h, round, false)
                    }
                    None => {
                        let cache = PretrainCache::new(cache_dir);
                        let prep = Pretraining::start(
                            host_cfg,
                            world.encoder.clone(),
                            &world.host_public,
                            seed,
                            Some(&cache),
                        )?;
                        let cached = prep.cached();
                        set_preparing(Some(if cached {
                            HostPrep::Cached
                        } else {
                            HostPrep::Pretraining
                        }));
                        (prep.finish()?, 0, cached)
                    }
                };
                host = Some(h);
                Ok(Some(Outcome::HostReady {
                    resumed_from,
                    cached,
                    seconds: t0.elapsed().as_secs_f64(),
                }))
            }
            Job::Generate { round } => {
                let h = host
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("not hosting"))?;
                let start = h.start_round(round)?;
                Ok(Some(Outcome::Generated {
                    start: Box::new(start),
                    seconds: t0.elapsed().as_secs_f64(),
                }))
            }
            Job::Improve { start, sum } => {
                let h = host
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("not hosting"))?;
                let outcome = h.finish_round(&start, &sum)?;
                let checkpoint = h.checkpoint()?;
                Ok(Some(Outcome::Improved {
                    round: start.round,
                    checkpoint,
                    kept: outcome.kept,
                    mean_reward: outcome.mean_reward,
                    seconds: t0.elapsed().as_secs_f64(),
                }))
            }
            Job::DropHost => {
                host = None;
                Ok(None)
            }
            Job::Learn {
                term,
                attempt,
                start,
            } => {
                client.learn(&start, true)?;
                let upload = client.judge(&start)?;
                let test_acc = accuracy(client.model(), &world.test)?;
                Ok(Some(Outcome::Judged {
                    term,
                    attempt,
                    round: start.round,
                    upload,
                    test_acc,
                    private_use: client.last_use(),
                    seconds: t0.elapsed().as_secs_f64(),
                }))
            }
        })();
        set_preparing(None);
        let report = match result {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e) => Outcome::Failed {
                job: name,
                error: format!("{e:#}"),
            },
        };
        if out.send(report).is_err() {
            return;
        }
    }
}
