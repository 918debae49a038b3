//! fedmmkt protocol: the versioned wire messages of a FedMMKT round, their codec and
//! validation, and the layout of the client upload. No sockets: the node drives it.

pub mod election;
pub mod error;
pub mod messages;
pub mod refusal;
pub mod round;
pub mod session;
pub mod simnet;
pub mod sum_check;
pub mod upload;
pub mod wire;

pub use error::ProtocolError;
pub use messages::{AbstainReason, LatentCode, RoundStart, TeacherTargets, PROTOCOL_VERSION};
pub use refusal::Refusal;
pub use sum_check::SumCheck;
pub use upload::{ClassMoments, Teacher, UploadLayout};
