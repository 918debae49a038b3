//! Fuzz target `idx`: see `node::fuzzing::Target::Idx`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Idx, data));
