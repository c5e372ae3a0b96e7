//! Drives Blender for BlendFleet's render agent and command line.
//!
//! - [`BlenderCommand`] finds Blender: a `blender` executable (e.g. Debian's 3.4.1) or a
//!   Python interpreter with the pip `bpy` module (4.x/5.x). Both run the same scripts.
//! - [`Worker`] keeps one Blender process resident. It opens a .blend once and renders
//!   many sample chunks of it with persistent data, so only the first chunk pays for
//!   start-up and scene synchronisation. Chunks of a frame share a seed and differ in
//!   `sample_offset`; merged by sample weight they equal a single render of all samples.
//! - [`inspect`] describes a .blend, [`render_reference`] renders a frame the plain way,
//!   and [`make_demo_scene`] writes the bundled demo scene.
//! - [`postprocess`] finishes a merged frame once: the scene's denoiser (OIDN, where this
//!   Blender has it), its compositor and its output format.
//!
//! Every chunk is rendered with adaptive sampling, denoising, path guiding, compositing
//! and the sequencer off, denoising data passes stored, `time_limit` 0, and written as a
//! 32-bit float multilayer EXR (ZIP) with all of the scene's passes and view layers. Only
//! Cycles scenes can be split; other engines fail with a message saying so. Blender 3.x
//! renders a chunk with `sample_offset`/`samples`; 4.x needs `use_sample_subset` and a
//! sampling pattern that does not depend on the total (see `src/protocol.rs`
//! and `python/worker.py`). [`render_reference`] uses the same rules, so the chunks of a
//! frame, merged by sample weight, equal its single render up to float rounding.
//!
//! Blender processes never outlive the process that started them: the worker script
//! exits when its control connection closes, and on Linux the kernel kills Blender when
//! its parent dies (`PR_SET_PDEATHSIG`).
//!
//! The Python scripts live in `python/` and are embedded in the binary.

mod chunk;
mod command;
mod error;
mod oneshot;
mod post;
mod process;
mod protocol;
mod scripts;
mod worker;

pub use chunk::{ChunkOutcome, ChunkRequest};
pub use command::{BlenderCommand, ENV_BLENDER, ENV_BPY_PYTHON};
pub use error::BlenderError;
pub use oneshot::{inspect, make_demo_scene, render_reference, ReferenceRender, SceneInfo};
pub use post::{postprocess, render_finished_reference, PostOutcome, PostRequest};
pub use process::die_with_parent;
pub use worker::{Worker, WorkerInfo, WorkerOptions};
