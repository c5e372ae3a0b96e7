//! Per-frame merge state on disk: the accumulator, the preview, the final results.
//!
//! Layout under the state directory: `jobs/<job>/frame_<n>/` holds `acc/` (the
//! [`fleet_merge::Accumulator`]), `preview.png`, and once the frame is complete
//! `result.exr` and `result.png`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fleet_merge::{Accumulator, ChunkInfo, FoldOutcome, Layout};
use fleet_protocol::{JobId, OutputFormat, Resolution};

/// Longest side of the live preview PNG.
const PREVIEW_MAX_SIDE: u32 = 1024;

/// Why a partial could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    /// The partial itself is bad: corrupt, wrong size, wrong channels. The agent's fault.
    #[error("{0}")]
    Rejected(String),
    /// Something failed on the manager.
    #[error("merging failed")]
    Internal(#[source] anyhow_like::Error),
}

/// A boxed error with context, without pulling `anyhow` into a library.
pub mod anyhow_like {
    /// Any error, boxed.
    pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
}

/// One lock per frame, so that folds and the final write of a frame never overlap.
type FrameLocks = Arc<Mutex<HashMap<(JobId, i32), Arc<tokio::sync::Mutex<()>>>>>;

/// The frames' directories and the locks that serialise work on each frame.
#[derive(Clone)]
pub struct Frames {
    root: PathBuf,
    locks: FrameLocks,
}

impl Frames {
    /// Frames stored under `root`.
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("incoming"))?;
        Ok(Self {
            root,
            locks: Arc::default(),
        })
    }

    /// Where uploads are written before they are merged.
    pub fn incoming_dir(&self) -> PathBuf {
        self.root.join("incoming")
    }

    /// Everything stored for a job.
    pub fn job_dir(&self, job: JobId) -> PathBuf {
        self.root.join(job.to_string())
    }

    /// Everything stored for one frame of a job.
    pub fn frame_dir(&self, job: JobId, frame: i32) -> PathBuf {
        self.job_dir(job).join(format!("frame_{frame}"))
    }

    /// The merged multilayer EXR of a finished frame.
    pub fn result_exr(&self, job: JobId, frame: i32) -> PathBuf {
        self.frame_dir(job, frame).join("result.exr")
    }

    /// The flat PNG of a finished frame.
    pub fn result_png(&self, job: JobId, frame: i32) -> PathBuf {
        self.frame_dir(job, frame).join("result.png")
    }

    /// The latest preview of a frame.
    pub fn preview_png(&self, job: JobId, frame: i32) -> PathBuf {
        self.frame_dir(job, frame).join("preview.png")
    }

    fn lock(&self, job: JobId, frame: i32) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry((job, frame)).or_default())
    }

    /// Validates `partial` and folds it into the frame's accumulator, then refreshes the
    /// preview. The first partial of a frame fixes its layout; `resolution`, when the job
    /// sets one, must match.
    pub async fn fold(
        &self,
        job: JobId,
        frame: i32,
        partial: PathBuf,
        chunk: ChunkInfo,
        resolution: Option<Resolution>,
    ) -> Result<FoldOutcome, FoldError> {
        let lock = self.lock(job, frame);
        let _guard = lock.lock().await;
        let dir = self.frame_dir(job, frame);
        let preview = self.preview_png(job, frame);
        tokio::task::spawn_blocking(move || {
            fold_blocking(&dir, partial, chunk, resolution, &preview)
        })
        .await
        .map_err(|error| FoldError::Internal(Box::new(error)))?
    }

    /// Writes a complete frame's results: the merged EXR, and the PNG when asked for.
    pub async fn finalize(
        &self,
        job: JobId,
        frame: i32,
        format: OutputFormat,
    ) -> Result<(), FoldError> {
        let lock = self.lock(job, frame);
        let _guard = lock.lock().await;
        let dir = self.frame_dir(job, frame);
        let exr = self.result_exr(job, frame);
        let png = self.result_png(job, frame);
        tokio::task::spawn_blocking(move || -> Result<(), FoldError> {
            let internal = |error: fleet_merge::MergeError| FoldError::Internal(Box::new(error));
            let acc_dir = dir.join("acc");
            if !acc_dir.join("manifest.json").exists() && exr.exists() {
                // Written before a restart; the accumulator was already discarded.
                return Ok(());
            }
            let accumulator = Accumulator::open(&acc_dir).map_err(internal)?;
            // The PNG first: the EXR's presence marks the frame's results as complete.
            if format == OutputFormat::Png {
                write_atomically(&png, |path| accumulator.write_png(path, None))
                    .map_err(internal)?;
            }
            write_atomically(&exr, |path| accumulator.write_exr(path)).map_err(internal)?;
            // The journal of partials is only needed until the merged EXR exists.
            accumulator.discard().map_err(internal)
        })
        .await
        .map_err(|error| FoldError::Internal(Box::new(error)))?
    }

    /// The chunk ids folded into a frame's accumulator (empty when it has none).
    pub fn folded_chunks(&self, job: JobId, frame: i32) -> Vec<i64> {
        let acc = self.frame_dir(job, frame).join("acc");
        if !acc.join("manifest.json").exists() {
            return Vec::new();
        }
        match Accumulator::open(&acc) {
            Ok(accumulator) => accumulator.folded_chunks(),
            Err(error) => {
                tracing::error!(job = %job, frame, %error, "cannot open a frame's accumulator");
                Vec::new()
            }
        }
    }

    /// Removes everything stored for a job.
    pub async fn remove_job(&self, job: JobId) -> std::io::Result<()> {
        match tokio::fs::remove_dir_all(self.root.join(job.to_string())).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

fn fold_blocking(
    dir: &Path,
    partial: PathBuf,
    chunk: ChunkInfo,
    resolution: Option<Resolution>,
    preview: &Path,
) -> Result<FoldOutcome, FoldError> {
    let classify = |error: fleet_merge::MergeError| {
        if error.is_bad_input() {
            FoldError::Rejected(error.to_string())
        } else {
            FoldError::Internal(Box::new(error))
        }
    };
    let acc_dir = dir.join("acc");
    if dir.join("result.exr").exists() {
        // The frame is finished and its journal discarded: this is a late duplicate.
        let _ = std::fs::remove_file(&partial);
        return Ok(FoldOutcome::AlreadyFolded);
    }
    // The accumulator writes its manifest last when it is created.
    let mut accumulator = if acc_dir.join("manifest.json").exists() {
        Accumulator::open(&acc_dir).map_err(classify)?
    } else {
        let layout = fleet_merge::read_layout(&partial)
            .map_err(|error| FoldError::Rejected(error.to_string()))?;
        check_resolution(&layout, resolution)?;
        std::fs::create_dir_all(dir).map_err(|error| FoldError::Internal(Box::new(error)))?;
        Accumulator::create(&acc_dir, &layout).map_err(classify)?
    };
    // `fold_owned` validates the whole partial before it changes anything, and moves the
    // file into the accumulator's journal.
    let outcome = accumulator.fold_owned(partial, chunk).map_err(classify)?;
    write_atomically(preview, |path| {
        accumulator.write_png(path, Some(PREVIEW_MAX_SIDE))
    })
    .map_err(|error| FoldError::Internal(Box::new(error)))?;
    Ok(outcome)
}

fn check_resolution(layout: &Layout, resolution: Option<Resolution>) -> Result<(), FoldError> {
    match resolution {
        Some(Resolution { width, height }) if (layout.width, layout.height) != (width, height) => {
            Err(FoldError::Rejected(format!(
                "the partial is {}x{} but the job renders {width}x{height}",
                layout.width, layout.height
            )))
        }
        _ => Ok(()),
    }
}

/// Writes through a temporary name and renames, so readers never see half a file.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), fleet_merge::MergeError>,
) -> Result<(), fleet_merge::MergeError> {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or("tmp");
    let temporary = path.with_extension(format!("partial.{extension}"));
    write(&temporary)?;
    std::fs::rename(&temporary, path).map_err(|source| fleet_merge::MergeError::Io {
        path: path.to_owned(),
        source,
    })
}
