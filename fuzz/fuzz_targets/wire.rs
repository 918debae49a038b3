//! Fuzz target `wire`: see `node::fuzzing::Target::Wire`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Wire, data));
