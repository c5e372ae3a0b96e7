//! The task-spec parser: JSON into a `JobSpec`, then `normalized()`. The checks live in
//! `fleet_protocol::fuzzing`, where the corpus replay test runs them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleet_protocol::fuzzing::check_spec(data));
