//! Fuzz target `config`: see `node::fuzzing::Target::Config`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Config, data));
