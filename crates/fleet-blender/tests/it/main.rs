//! Integration tests against real Blender: Debian's `blender` executable and a Python
//! with pip `bpy` (see `common` for how they are found and when tests are skipped).

mod common;

mod chunks;
mod failures;
mod post;
mod protocol;
