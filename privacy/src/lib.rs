//! fedmmkt privacy.
//!
//! # Differential privacy: mechanisms, accountant, ledger
//!
//! Privacy units ([`PrivacyUnit`]): **record** (the default whenever DP is on) protects every
//! record of a node (an image with its caption and label) through DP-SGD on the node's local
//! training, recorded in the ledger as [`ledger::TrainingCost`]; **client** protects a node's whole
//! contribution in one round (add/remove one client) through noised uploads. What each protects,
//! what it does not, and the distributed-noise rule are spelled out in `privacy/README.md`.
//!
//! - [`mechanism`]: L2 clip + OpenDP Gaussian ([`mechanism::GaussianRelease`], f32/f64) or
//!   discrete Gaussian on the quantized integers ([`mechanism::DiscreteGaussianRelease`]); each
//!   client adds std z·Δ/√n so the sum of n carries z·Δ. The cost ([`mechanism::ReleaseCost`])
//!   comes from OpenDP's privacy maps and is charged for the `min_participants` noise shares
//!   that are guaranteed to be in the released sum.
//! - [`accountant`]: RDP of the Poisson-subsampled Gaussian (integer and fractional orders),
//!   composition, Balle et al. 2020 conversion over a dense order grid, bisection inverse.
//! - [`ledger`]: per-node sled ledger, one SHA-256-chained, Ed25519-signed entry per spend (a
//!   release, or a round's DP-SGD training), written and flushed *before* the release or the
//!   training runs; a budget (ε_max at δ) refuses spends over it.
//! - [`audit`]: the empirical lower bound on ε of one-run privacy auditing (Steinke, Nasr and
//!   Jagielski 2023) from canary membership guesses.
//!
//! One client's round, as the simulation runs it:
//!
//! ```
//! use privacy::error::PrivacyError;
//! use privacy::ledger::{Budget, ChargeContext, Ledger, NodeKey};
//! use privacy::mechanism::{calibrate_noise_multiplier, GaussianRelease, NoiseSpec, ReleaseConfig};
//! use privacy::PrivacyUnit;
//!
//! # fn main() -> Result<(), PrivacyError> {
//! // Host, once: the z that meets ε = 4 at δ = 1e-5 over 3 rounds, exactly as ledgers charge it.
//! let shape = ReleaseConfig {
//!     clip: 1.0,                 // L2 bound C on the whole flat upload
//!     noise_multiplier: 1.0,     // replaced by the calibrated z below
//!     expected_participants: 10, // n: each client adds std z·C/√n
//!     min_participants: 8,       // m: secure-aggregation threshold; charged as if only m add noise
//!     sample_rate: 1.0,          // q: Poisson client sampling rate (1 = everyone, every round)
//!     dimension: 500,
//! };
//! let spec = NoiseSpec::Gaussian { granularity_exp: GaussianRelease::DEFAULT_GRANULARITY_EXP };
//! let z = calibrate_noise_multiplier(4.0, 1e-5, 3, &shape, spec)?;
//! let config = ReleaseConfig { noise_multiplier: z, ..shape };
//!
//! // Client: its own ledger (in memory here; `Ledger::open(data_dir)` on a node) and its cap.
//! let db = sled::Config::new().temporary(true).open()?;
//! let ledger = Ledger::with_db(db, NodeKey::generate()?)?;
//! ledger.set_budget(Budget::new(4.0, 1e-5)?)?;
//!
//! let upload = vec![0.01f32; 500];
//! let mut sent = 0;
//! for round in 0..4 {
//!     let release = GaussianRelease::new(&config)?; // (1) cost from OpenDP, no data touched
//!     let ctx = ChargeContext { round, dataset_id: "client-3".into(), unit: PrivacyUnit::Client };
//!     match ledger.charge(release, &ctx) {          // (2) budget check + (3) durable record
//!         Ok(charged) => {
//!             let noised: Vec<f32> = charged.noise_f32(&upload)?; // (4) clip + noise share
//!             assert_eq!(noised.len(), 500);
//!             sent += 1;
//!         }
//!         Err(e) if e.is_budget_exceeded() => { /* abstain: tell the host */ }
//!         Err(e) => return Err(e),
//!     }
//! }
//! assert_eq!(sent, 3); // the 4th round would exceed ε = 4
//! assert!(ledger.epsilon_spent(1e-5)?.epsilon <= 4.0);
//! # Ok(())
//! # }
//! ```

pub mod accountant;
pub mod audit;
pub mod error;
pub mod ledger;
pub mod mechanism;
pub mod secagg;
pub mod unit;

pub use unit::PrivacyUnit;
