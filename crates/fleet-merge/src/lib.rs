//! Streaming, sample-weighted merge of partial Cycles renders.
//!
//! Each partial is a Blender multilayer OpenEXR (single part, scanlines,
//! 32-bit float) of the same frame, rendered with the same seed over its own
//! `sample_offset` range. Folding them together with the right rule per pass
//! gives the image a single render of all their samples would have given, up
//! to float rounding:
//!
//! | pass | rule |
//! |---|---|
//! | most passes | sample-weighted mean `Σ w·v / Σ w` |
//! | `DiffDir/Ind`, `GlossDir/Ind`, `TransDir/Ind` | `Σ w·L·C / Σ w·C` with the matching `*Col` pass |
//! | `Depth` | minimum |
//! | `IndexOB`, `IndexMA`, `Position`, `Crypto*` | from the partial holding sample 0 |
//!
//! The caller owns the weights ([`ChunkInfo::samples`]). An [`Accumulator`]
//! folds one partial at a time with memory independent of the number of
//! partials, and is crash-safe and exactly-once: a fold that returned `Ok` is
//! durable, a fold interrupted by a crash is either fully there or not at
//! all, and a chunk id is folded once. It journals the partials themselves
//! (a synced copy, or the very file with [`Accumulator::fold_owned`]) and
//! keeps the running sums in a file it never syncs, rebuilding them from the
//! journal when a crash may have cost them; see the `accumulator` module and
//! the README.
//!
//! [`Accumulator::fold`] checks the partial completely before it commits; an
//! error for which [`MergeError::is_bad_input`] is true means the partial (or
//! its chunk information) is at fault, any other the accumulator's side.
//!
//! ```no_run
//! # use std::path::Path;
//! # fn main() -> Result<(), fleet_merge::MergeError> {
//! use fleet_merge::{read_layout, Accumulator, ChunkInfo};
//! let layout = read_layout(Path::new("chunk_1.exr"))?;
//! let mut acc = Accumulator::create(Path::new("frame_0001.acc"), &layout)?;
//! acc.fold(Path::new("chunk_2.exr"), ChunkInfo { id: 2, samples: 7, holds_sample_zero: false })?;
//! acc.fold_owned("upload_1.exr".into(), ChunkInfo { id: 1, samples: 5, holds_sample_zero: true })?;
//! acc.write_exr(Path::new("frame_0001.exr"))?;
//! acc.write_png(Path::new("frame_0001.png"), Some(512))?;
//! acc.discard()?; // the merged frame is written: the journal is no longer needed
//! # Ok(()) }
//! ```

mod accumulator;
pub mod compare;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod layout;
mod output;
mod partial;
mod state;
mod sums;
mod sys;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use accumulator::{Accumulator, ChunkInfo, FoldOutcome};
pub use error::MergeError;
pub use layout::{read_layout, Channel, Layout, MergeRule};
pub use output::ExrCodec;
pub use partial::validate_partial;

/// Merges `partials` (each with its chunk information) into `out` in one go,
/// through a temporary scratch accumulator (no journal, nothing synced but
/// `out`). The first partial's header defines the frame.
pub fn merge_files(partials: &[(PathBuf, ChunkInfo)], out: &Path) -> Result<(), MergeError> {
    let (first, _) = partials.first().ok_or_else(|| {
        MergeError::Invalid(format!("no partials to merge into `{}`", out.display()))
    })?;
    let layout = read_layout(first)?;
    let scratch_parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".merge-")
        .tempdir_in(scratch_parent)
        .map_err(|e| MergeError::io(scratch_parent, e))?;
    let mut acc = Accumulator::create_scratch(scratch.path(), &layout)?;
    for (path, chunk) in partials {
        acc.fold(path, *chunk)?;
    }
    acc.write_exr(out)
}
