//! The `fedmmkt` command line: simulation, privacy tools and benchmarks.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use node::cli;

// candle allocates a fresh buffer for every tensor op; glibc's malloc returns large ones to
// the OS each time, which halves training speed (see DEPENDENCIES.md). mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// fedmmkt: privacy-preserving federated multi-modal knowledge transfer.
#[derive(Parser)]
#[command(name = "fedmmkt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run FedMMKT (or a baseline) in-process on one machine and write a report.
    Simulate(Box<cli::simulate::SimulateArgs>),
    /// Privacy accounting and the node's budget ledger.
    Privacy(cli::privacy::PrivacyArgs),
    /// Benchmarks of the protocol's building blocks.
    Bench(cli::bench::BenchArgs),
    /// Create a node's data directory: identity, config, pre-shared key, privacy ledger, store.
    Init(cli::init::InitArgs),
    /// Run a node: join the federation, elect a host, take part in rounds.
    Run(cli::run::RunArgs),
    /// The node's term, host, round, phase, peers and privacy spend.
    Status(cli::status::StatusArgs),
    /// The peers a node knows and their capabilities.
    Peers(cli::peers::PeersArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    node::logging::init("info");
    let result = match cli.command {
        Command::Simulate(args) => cli::simulate::run(*args),
        Command::Privacy(args) => cli::privacy::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Init(args) => cli::init::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Peers(args) => cli::peers::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
