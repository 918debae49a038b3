//! Fuzz target `ledger`: see `node::fuzzing::Target::Ledger`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Ledger, data));
