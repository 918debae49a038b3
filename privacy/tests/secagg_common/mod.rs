//! Shared harness for the secure-aggregation integration tests (included with `mod`).

#![allow(dead_code)]

use privacy::secagg::simulation::{identity, input, params, DropStage, SimConfig};
use privacy::secagg::{
    ClientId, ClientMessage, RoundParams, SecAggAggregator, SecAggClient, ServerMessage, Step,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use ring::signature::KeyPair;

/// A round's parties, with messages passed by hand.
pub struct Net {
    pub params: RoundParams,
    pub clients: Vec<SecAggClient>,
    pub agg: SecAggAggregator,
    pub inputs: Vec<Vec<f32>>,
    pub adverts: Vec<ClientMessage>,
}

pub fn config(n: u32, k: u32, t: Option<u32>, dim: u32, seed: u64) -> SimConfig {
    SimConfig {
        clients: n,
        dim,
        neighbors: k,
        threshold: t,
        dropout: 0.0,
        drop_stage: DropStage::AfterShareKeys,
        seed,
        bound: 1.0,
    }
}

pub fn setup(cfg: &SimConfig) -> Net {
    let params = params(cfg).unwrap();
    let ids: Vec<_> = (0..cfg.clients)
        .map(|c| identity(cfg.seed, c).unwrap())
        .collect();
    let membership: Vec<[u8; 32]> = ids
        .iter()
        .map(|k| k.public_key().as_ref().try_into().unwrap())
        .collect();
    let mut clients = Vec::new();
    let mut adverts = Vec::new();
    for (c, id) in ids.iter().enumerate() {
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed.wrapping_mul(31) + c as u64);
        let (client, adv) =
            SecAggClient::new(params.clone(), c as ClientId, id, &membership, &mut rng).unwrap();
        clients.push(client);
        adverts.push(adv);
    }
    let inputs = (0..cfg.clients)
        .map(|c| input(cfg.seed, c, cfg.dim, cfg.bound))
        .collect();
    let agg = SecAggAggregator::new(params.clone(), membership).unwrap();
    Net {
        params,
        clients,
        agg,
        inputs,
        adverts,
    }
}

/// Messages the aggregator sent when it closed a stage.
pub fn sent(step: Step) -> Vec<(ClientId, ServerMessage)> {
    match step {
        Step::Send(m) => m,
        Step::Finished(_) => panic!("round finished early"),
    }
}

/// Drives clients: each client in `alive` answers its message; returns the replies.
pub fn answer(
    net: &mut Net,
    out: Vec<(ClientId, ServerMessage)>,
    alive: &[bool],
) -> Vec<ClientMessage> {
    let mut replies = Vec::new();
    for (c, msg) in out {
        if !alive[c as usize] {
            continue;
        }
        if matches!(msg, ServerMessage::Shares(_)) {
            let x = net.inputs[c as usize].clone();
            net.clients[c as usize].set_input(&x).unwrap();
        }
        replies.push(net.clients[c as usize].handle(msg).unwrap());
    }
    replies
}

pub fn feed(net: &mut Net, msgs: Vec<ClientMessage>) {
    for m in msgs {
        net.agg.receive(m).unwrap();
    }
}

/// The exact integer sum of the given clients' quantized inputs.
pub fn exact_sum(net: &Net, included: &[ClientId]) -> Vec<i64> {
    let q = net.params.quantizer;
    let mut s = vec![0i64; net.params.dim as usize];
    for &c in included {
        for (a, x) in s
            .iter_mut()
            .zip(q.quantize(&net.inputs[c as usize]).unwrap())
        {
            *a += i64::from(x as i32);
        }
    }
    s
}
