//! The learning behind the two roles of a FedMMKT round, over protocol messages: the
//! [`Synthesizer`] the host runs (its generator and critic: sample, read the aggregate,
//! improve) and the [`Learner`] every node runs (its task model on its private data: learn,
//! judge). The round sessions in `protocol::session` decide when; these do the learning. The
//! simulation and the network node drive the same code.

pub mod learner;
pub mod pretrain_cache;
pub mod synthesizer;

pub use learner::{Learner, LearnerConfig, PrivateUse, RecordDp, RecordSettings};
pub use pretrain_cache::{pretrained_synthesizer, PretrainCache, Pretraining};
pub use synthesizer::{RoundOutcome, Synthesizer, SynthesizerConfig};
