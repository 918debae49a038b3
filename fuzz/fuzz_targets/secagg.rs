//! Fuzz target `secagg`: see `node::fuzzing::Target::Secagg`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Secagg, data));
