//! The partial-EXR validator: `read_layout`, `validate_partial` and folding into an
//! accumulator. The checks live in `fleet_merge::fuzzing`, where the corpus replay test runs
//! them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleet_merge::fuzzing::check_partial(data));
