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
