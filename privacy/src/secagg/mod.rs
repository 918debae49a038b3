//! Secure aggregation (SecAgg+, Bell et al. 2020; SecAgg, Bonawitz et al. 2017): the aggregator
//! learns only the sum of the clients' quantized uploads, even when clients drop out mid-round.
//!
//! Sans-IO: [`SecAggClient`] and [`SecAggAggregator`] take messages and return messages; the
//! network layer carries them (encoded with [`ClientMessage::encode`] / [`ServerMessage::encode`])
//! and decides when a stage's deadline has passed ([`SecAggAggregator::advance`]).
//!
//! A round, from a client's side (noise first, then quantize, then mask):
//! 1. `SecAggClient::new` → [`ClientMessage::Advertise`] (two X25519 keys, Ed25519-signed).
//! 2. On [`ServerMessage::Keys`] → [`ClientMessage::Shares`] (t-of-k Shamir shares of the
//!    self-mask seed and masking key, ChaCha20-Poly1305-encrypted to each neighbour).
//! 3. `set_input(noised_clipped_upload)`; on [`ServerMessage::Shares`] → [`ClientMessage::Masked`].
//! 4. On [`ServerMessage::Unmask`] → [`ClientMessage::Unmask`] (never both shares of one peer).
//!
//! The aggregator mirrors it: `receive` each client message, `advance` at each deadline, and
//! the last `advance` returns the sum ([`AggregateOutput`]) or aborts below threshold.

pub mod aggregator;
pub mod client;
pub mod error;
pub mod graph;
pub mod keys;
pub mod masking;
pub mod messages;
pub mod quantize;
pub mod shamir;
pub mod simulation;

pub use aggregator::{AggregateOutput, AggregatorStage, SecAggAggregator, Step};
pub use client::{ClientStage, SecAggClient};
pub use error::SecAggError;
pub use graph::NeighborGraph;
pub use messages::{ClientMessage, ServerMessage};
pub use quantize::{ClipBound, Quantizer};

/// A client's index in the round's membership list (0..num_clients).
pub type ClientId = u32;

/// The largest round the protocol accepts (bounds memory in the aggregator).
pub const MAX_CLIENTS: u32 = 1 << 16;
/// The largest vector length the protocol accepts (2^28 words = 1 GiB per vector).
pub const MAX_DIM: u32 = 1 << 28;

const CONTEXT_DOMAIN: &[u8] = b"fedmmkt/secagg/v1/round";

/// Everything all parties must agree on before a round starts; its hash binds every signature and ciphertext.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundParams {
    /// Round number (messages of other rounds are rejected).
    pub round: u64,
    /// Public seed of the neighbourhood graph (e.g. from the round's randomness beacon).
    pub graph_seed: [u8; 32],
    /// Members of the round; client ids are 0..num_clients.
    pub num_clients: u32,
    /// Neighbourhood size k (even; ≥ num_clients − 1 gives the complete graph, i.e. SecAgg).
    pub neighbors: u32,
    /// Shamir threshold t: shares needed to recover a secret; must satisfy (k+1)/2 < t ≤ k.
    ///
    /// Each secret has k + 1 holders (the neighbours and the owner itself, as in SecAgg), so
    /// with t > (k+1)/2 nobody can collect t shares of both of a client's secrets.
    pub threshold: u32,
    /// Length of every client's upload.
    pub dim: u32,
    /// The fixed-point encoding of uploads.
    pub quantizer: Quantizer,
}

impl RoundParams {
    /// The smallest threshold that keeps the never-both rule meaningful for neighbourhood size `k`.
    pub fn min_threshold(k: u32) -> u32 {
        k.div_ceil(2) + 1
    }

    /// Checks the parameters and derives the neighbourhood graph.
    pub fn validate(&self) -> Result<NeighborGraph, SecAggError> {
        let bad = |m: String| Err(SecAggError::InvalidParams(m));
        if self.num_clients < 3 || self.num_clients > MAX_CLIENTS {
            return bad(format!(
                "num_clients {} outside 3..={MAX_CLIENTS}",
                self.num_clients
            ));
        }
        if self.num_clients > self.quantizer.max_clients() {
            return bad(format!(
                "num_clients {} exceeds the quantizer's max_clients {}: the sum could wrap",
                self.num_clients,
                self.quantizer.max_clients()
            ));
        }
        if self.dim == 0 || self.dim > MAX_DIM {
            return bad(format!("dim {} outside 1..={MAX_DIM}", self.dim));
        }
        let graph = NeighborGraph::new(self.num_clients, self.neighbors, &self.graph_seed)?;
        let k = graph.degree();
        if k + 1 > shamir::MAX_HOLDERS {
            return bad(format!(
                "{k} neighbours plus the owner exceed the {} share holders GF(256) supports",
                shamir::MAX_HOLDERS
            ));
        }
        if self.threshold < Self::min_threshold(k).max(2) || self.threshold > k {
            return bad(format!(
                "threshold {} must lie in {}..={k} for {k} neighbours",
                self.threshold,
                Self::min_threshold(k).max(2)
            ));
        }
        Ok(graph)
    }

    /// SHA-256 of every parameter: the context that binds signatures, keys and ciphertexts to this round.
    pub fn context(&self) -> [u8; 32] {
        let q = &self.quantizer;
        let (tag, bound) = match q.bound() {
            ClipBound::LInf(b) => (0u8, b),
            ClipBound::L2(b) => (1u8, b),
        };
        let bytes = [
            CONTEXT_DOMAIN,
            &self.round.to_le_bytes(),
            &self.graph_seed,
            &self.num_clients.to_le_bytes(),
            &self.neighbors.to_le_bytes(),
            &self.threshold.to_le_bytes(),
            &self.dim.to_le_bytes(),
            &[tag],
            &bound.to_bits().to_le_bytes(),
            &q.max_clients().to_le_bytes(),
        ]
        .concat();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }
}
