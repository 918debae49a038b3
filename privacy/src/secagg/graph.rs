//! The SecAgg+ neighbourhood graph: a Harary graph H(k, n) relabelled by a permutation from the round seed.
//!
//! Everyone who knows the round seed derives the same graph, so the aggregator cannot choose
//! neighbourhoods. With k ≥ n − 1 the graph is complete and the protocol is the original SecAgg.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::error::SecAggError;
use super::ClientId;

/// Domain separation for the permutation seed.
const GRAPH_DOMAIN: &[u8] = b"fedmmkt/secagg/v1/graph";

/// A k-regular graph on clients 0..n, derived from a public round seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborGraph {
    degree: u32,
    /// `position[client]`: where the client sits on the Harary ring.
    position: Vec<u32>,
    /// `client_at[position]`: the inverse permutation.
    client_at: Vec<ClientId>,
}

impl NeighborGraph {
    /// Derives the graph on `n` clients with degree `k` (clamped to n − 1; must be even below that).
    pub fn new(n: u32, k: u32, seed: &[u8; 32]) -> Result<Self, SecAggError> {
        if n < 2 {
            return Err(SecAggError::InvalidParams(format!(
                "need at least 2 clients, got {n}"
            )));
        }
        let degree = k.min(n - 1);
        if degree < n - 1 && degree % 2 == 1 {
            return Err(SecAggError::InvalidParams(format!(
                "neighbourhood size {k} must be even when smaller than n - 1 = {}",
                n - 1
            )));
        }
        if degree == 0 {
            return Err(SecAggError::InvalidParams(
                "neighbourhood size must be positive".into(),
            ));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &[GRAPH_DOMAIN, seed].concat());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let mut rng = ChaCha20Rng::from_seed(key);
        let mut client_at: Vec<ClientId> = (0..n).collect();
        // Fisher–Yates with exact rejection sampling, written out so the graph never depends on
        // a library's shuffle algorithm.
        for i in (1..n as usize).rev() {
            let j = uniform_below(&mut rng, i as u64 + 1) as usize;
            client_at.swap(i, j);
        }
        let mut position = vec![0u32; n as usize];
        for (p, &c) in client_at.iter().enumerate() {
            position[c as usize] = p as u32;
        }
        Ok(Self {
            degree,
            position,
            client_at,
        })
    }

    /// The number of clients.
    pub fn len(&self) -> u32 {
        self.client_at.len() as u32
    }

    /// Whether the graph has no clients (never true for a constructed graph).
    pub fn is_empty(&self) -> bool {
        self.client_at.is_empty()
    }

    /// Every client's number of neighbours.
    pub fn degree(&self) -> u32 {
        self.degree
    }

    /// Whether the graph is complete (the original SecAgg).
    pub fn is_complete(&self) -> bool {
        self.degree == self.len() - 1
    }

    /// The neighbours of `client`, sorted by id; empty for a client outside the graph.
    pub fn neighbors(&self, client: ClientId) -> Vec<ClientId> {
        let n = self.len();
        let Some(&p) = self.position.get(client as usize) else {
            return Vec::new();
        };
        let mut out: Vec<ClientId> = if self.is_complete() {
            (0..n).filter(|&c| c != client).collect()
        } else {
            let half = self.degree / 2;
            (1..=half)
                .flat_map(|d| [(p + d) % n, (p + n - d) % n])
                .map(|q| self.client_at[q as usize])
                .collect()
        };
        out.sort_unstable();
        out
    }

    /// Whether `a` and `b` are neighbours.
    pub fn are_neighbors(&self, a: ClientId, b: ClientId) -> bool {
        let n = self.len();
        match (self.position.get(a as usize), self.position.get(b as usize)) {
            (Some(&pa), Some(&pb)) if a != b => {
                let d = (pa + n - pb) % n;
                let ring_distance = d.min(n - d);
                self.is_complete() || ring_distance <= self.degree / 2
            }
            _ => false,
        }
    }
}

/// A uniform integer in 0..bound from `rng`, by rejection (bound > 0).
fn uniform_below(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_symmetric_and_deterministic() {
        for (n, k) in [
            (2, 1),
            (5, 4),
            (10, 4),
            (10, 9),
            (33, 8),
            (100, 16),
            (7, 100),
        ] {
            let g = NeighborGraph::new(n, k, &[7; 32]).unwrap();
            assert_eq!(g, NeighborGraph::new(n, k, &[7; 32]).unwrap());
            for c in 0..n {
                let nb = g.neighbors(c);
                assert_eq!(nb.len() as u32, k.min(n - 1), "n={n} k={k}");
                assert!(!nb.contains(&c));
                for &v in &nb {
                    assert!(g.neighbors(v).contains(&c));
                    assert!(g.are_neighbors(c, v));
                }
                let others = (0..n).filter(|v| *v != c && !nb.contains(v));
                for v in others {
                    assert!(!g.are_neighbors(c, v));
                }
            }
        }
    }

    #[test]
    fn seed_changes_the_graph() {
        let a = NeighborGraph::new(50, 6, &[1; 32]).unwrap();
        let b = NeighborGraph::new(50, 6, &[2; 32]).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_odd_sparse_degree_and_tiny_rounds() {
        assert!(NeighborGraph::new(10, 3, &[0; 32]).is_err());
        assert!(NeighborGraph::new(1, 1, &[0; 32]).is_err());
        assert!(NeighborGraph::new(10, 0, &[0; 32]).is_err());
        assert!(NeighborGraph::new(10, 9, &[0; 32]).is_ok());
        assert!(NeighborGraph::new(10, 0, &[0; 32]).is_err());
        assert!(NeighborGraph::new(5, 4, &[0; 32])
            .unwrap()
            .neighbors(5)
            .is_empty());
    }
}
