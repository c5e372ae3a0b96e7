//! `blendfleet_py`: the manager's user API for Python, made for the Blender add-on.
//!
//! The logic that needs no interpreter (error classification, spec filling, the upload
//! plan) lives in plain modules and is tested with `cargo test`. The bindings are in
//! [`python`], compiled with the `python` feature; maturin builds them with
//! `extension-module` into an abi3 wheel (Python 3.11 and later).

pub mod errors;
pub mod spec;
pub mod upload;

#[cfg(feature = "python")]
mod python;
