//! Fuzz target `checkpoint`: see `node::fuzzing::Target::Checkpoint`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Checkpoint, data));
