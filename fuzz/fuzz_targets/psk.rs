//! Fuzz target `psk`: see `node::fuzzing::Target::Psk`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Psk, data));
