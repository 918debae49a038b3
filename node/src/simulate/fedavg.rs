//! FedAvg's server step: the data-weighted average of identically shaped client models.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::learn::Learner;

/// Replaces every client's parameters by their average weighted by `weights`.
pub fn average_into(clients: &mut [Learner], weights: &[f64]) -> anyhow::Result<()> {
    let total: f64 = weights.iter().sum();
    anyhow::ensure!(
        total > 0.0 && weights.len() == clients.len(),
        "FedAvg needs positive weights, one per client"
    );
    let mut avg: HashMap<String, Tensor> = HashMap::new();
    for (client, &w) in clients.iter().zip(weights) {
        let data = client
            .model()
            .varmap()
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
        for (name, var) in data.iter() {
            let scaled = (var.as_tensor() * (w / total))?;
            let entry = match avg.remove(name) {
                Some(acc) => (acc + scaled)?,
                None => scaled,
            };
            avg.insert(name.clone(), entry);
        }
    }
    for client in clients.iter_mut() {
        let data = client
            .model()
            .varmap()
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
        for (name, var) in data.iter() {
            let value = avg
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("client models differ in parameter {name}"))?;
            var.set(value)?;
        }
    }
    Ok(())
}

/// Copies the first client's parameters into every other client (FedAvg's common initialisation).
pub fn copy_from_first(clients: &mut [Learner]) -> anyhow::Result<()> {
    let weights: Vec<f64> = (0..clients.len())
        .map(|i| if i == 0 { 1.0 } else { 0.0 })
        .collect();
    average_into(clients, &weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::classifier::Arch;
    use models::data::Dataset;

    fn learner(seed: u64) -> Learner {
        let data = Dataset {
            images: vec![128; 4 * 784],
            labels: vec![0, 1, 0, 1],
            rows: 28,
            cols: 28,
            classes: vec!["a".into(), "b".into()],
        };
        let encoder = crate::world::bow_encoder(&data.classes, 4, 0);
        Learner::new(0, Arch::SmallCnn, data, &encoder, Default::default(), seed).unwrap()
    }

    fn params(l: &Learner) -> Vec<f32> {
        l.model().flat_params().unwrap()
    }

    #[test]
    fn every_client_gets_the_weighted_average() {
        let mut clients = vec![learner(1), learner(2), learner(3)];
        let before: Vec<Vec<f32>> = clients.iter().map(params).collect();
        let weights = [1.0, 3.0, 0.0];
        average_into(&mut clients, &weights).unwrap();
        let want: Vec<f32> = (0..before[0].len())
            .map(|i| (before[0][i] + 3.0 * before[1][i]) / 4.0)
            .collect();
        for c in &clients {
            let got = params(c);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-6, "max error {err}");
        }
        assert!(average_into(&mut clients, &[0.0, 0.0, 0.0]).is_err());
        assert!(average_into(&mut clients, &[1.0]).is_err());
    }
}
