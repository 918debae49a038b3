//! Fuzz target `election`: see `node::fuzzing::Target::Election`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Election, data));
