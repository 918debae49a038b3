//! The baselines' rounds: FedAvg (local training, then the data-weighted average of the
//! parameters) and FedMD/FedDF-style distillation on a public set. FedMMKT's round runs the
//! node's sessions (`run.rs`, `federation.rs`); `local` and `host-data` are local training
//! alone (on the client's data, or on it plus the host's labelled public set).
//!
//! **Which FedMD this is.** FedMD (Li & Wang 2019) first trains every party on a *labelled*
//! public set, then on its private data; each round the parties score a subset of the public
//! set, the server averages the scores into a consensus, and each party *digests* it (trains
//! its logits towards the consensus on the public subset) and then *revisits* its private
//! data for a few epochs, with no temperature. Ours is the FedDF-flavoured variant of the same
//! consensus distillation: the public set (`splits.public`, `--public-per-class`, 50 real
//! images per class) is *unlabelled* and nobody pre-trains on it; the consensus is the clients' mean
//! softmax on the whole public set; and digest and revisit are one phase: every local step of
//! round r + 1 adds, to the private cross-entropy (and the alignment loss every method's
//! clients have), the KL divergence at temperature τ = 2 (`ClientTrainConfig::tau`) between
//! round r's consensus and the client's prediction on a batch of public images. A round has
//! as many local steps as FedMMKT's with a synthetic set of that size (`epochs` passes over
//! the larger of the private and public sets), and the same number of rounds. The original's separate
//! digest and revisit phases and its labelled public pre-training are not implemented.

use std::time::Instant;

use models::data::Dataset;
use models::train::DistillSet;

use super::config::SimConfig;
use super::fedavg::average_into;
use super::run::PhaseSeconds;
use super::run::{for_each_client, map_clients, Progress, Traffic};
use crate::learn::Learner;

/// One FedAvg round: local training from the global model (with a fresh optimiser unless
/// `cfg.fedavg.reset_optimizer` is off), then the data-weighted average of the parameters.
pub(super) fn fedavg_round(
    r: usize,
    cfg: &SimConfig,
    clients: &mut [Learner],
    client_sizes: &[usize],
    ph: &mut PhaseSeconds,
    progress: Progress,
) -> anyhow::Result<Traffic> {
    progress(r, "learn");
    let t = Instant::now();
    let reset = cfg.fedavg.reset_optimizer;
    for_each_client(clients, cfg.threads, |c| {
        if reset {
            c.reset_optimizer()?;
        }
        c.train(r as u64, None).map(|_| ())
    })?;
    ph.learn = t.elapsed().as_secs_f64();
    progress(r, "aggregate");
    let t = Instant::now();
    let weights: Vec<f64> = client_sizes.iter().map(|&n| n as f64).collect();
    average_into(clients, &weights)?;
    ph.aggregate = t.elapsed().as_secs_f64();
    let params: usize = clients.first().map_or(0, |c| {
        c.model()
            .varmap()
            .all_vars()
            .iter()
            .map(|v| v.elem_count())
            .sum()
    });
    Ok(Traffic {
        down: params * 4 * cfg.clients,
        up: params * 4 * cfg.clients,
        ..Traffic::default()
    })
}

/// One FedMD/FedDF round: local training with distillation on the public set, then the
/// clients' mean prediction on it becomes the next round's consensus teacher.
pub(super) fn fedmd_round(
    r: usize,
    cfg: &SimConfig,
    clients: &mut [Learner],
    public: &Dataset,
    distill: Option<&DistillSet>,
    ph: &mut PhaseSeconds,
    progress: Progress,
) -> anyhow::Result<(Vec<f32>, Traffic)> {
    progress(r, "learn");
    let t = Instant::now();
    for_each_client(clients, cfg.threads, |c| {
        c.train(r as u64, distill).map(|_| ())
    })?;
    ph.learn = t.elapsed().as_secs_f64();
    progress(r, "judge");
    let t = Instant::now();
    let preds = map_clients(clients, cfg.threads, |c| {
        Ok(c.model().predict_proba(&public.images, public.len())?)
    })?;
    ph.judge = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let teacher = sum_uploads(&preds)
        .iter()
        .map(|v| (*v / cfg.clients as f64) as f32)
        .collect();
    ph.aggregate = t.elapsed().as_secs_f64();
    let traffic = Traffic {
        // The public images travel once; each round carries the consensus teacher.
        down: public.len() * public.num_classes() * 4 * cfg.clients,
        up: preds.iter().map(|p| p.len() * 4).sum(),
        ..Traffic::default()
    };
    Ok((teacher, traffic))
}

/// The aggregate: the element-wise sum of equally long uploads, in f64.
pub fn sum_uploads(uploads: &[Vec<f32>]) -> Vec<f64> {
    let len = uploads.first().map_or(0, Vec::len);
    let mut sum = vec![0f64; len];
    for u in uploads {
        for (s, v) in sum.iter_mut().zip(u) {
            *s += *v as f64;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_is_the_elementwise_sum() {
        let uploads = vec![
            vec![1.0f32, 2.0, -3.0],
            vec![0.5, 0.25, 3.0],
            vec![0.0, 1.0, 1.0],
        ];
        assert_eq!(sum_uploads(&uploads), vec![1.5, 3.25, 1.0]);
        assert!(sum_uploads(&[]).is_empty());
    }
}
