//! `fedmmkt-testnet`: the local multi-node testnet. Not built yet (it needs the networked node);
//! until then it says so and points to the in-process simulation.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "fedmmkt-testnet is not available yet: the networked node it drives is still being built.\n\
         Run the same FedMMKT rounds in one process instead:\n  \
         cargo run --release --bin fedmmkt -- simulate --out out/simulate"
    );
    ExitCode::from(2)
}
