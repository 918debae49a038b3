//! Fuzz target `admin`: see `node::fuzzing::Target::Admin`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| run(Target::Admin, data));
