//! The durable, exactly-once accumulator partials are folded into.
//!
//! Directory contents:
//! - `layout.exr`: the frame's header (an OpenEXR file without pixels);
//! - `manifest.json`: generation, folded chunks, total samples, which state
//!   file is current, and the channel rules;
//! - `state-0.bin`, `state-1.bin`: two state files used in turn;
//! - `lock`: held (advisory lock) while an [`Accumulator`] is open.
//!
//! A fold reads the current state file and the partial, and writes the other
//! state file; it then syncs that file and commits by atomically replacing the
//! manifest (write temp, sync, rename, sync directory). Until the rename the
//! old manifest still names the old, untouched state, so a crash or a bad
//! partial at any point leaves either the state before the fold or the state
//! after it. Memory use is a few pixel blocks, whatever the number of partials.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{MergeError, Result};
use crate::layout::{Channel, Layout};
use crate::partial::Partial;
use crate::state::{self, Acc, FoldParams, Shape};

const MANIFEST: &str = "manifest.json";
const MANIFEST_TMP: &str = "manifest.json.tmp";
const LAYOUT: &str = "layout.exr";
const LOCK: &str = "lock";
const FORMAT: u32 = 1;

/// One partial to fold, as the caller (the manager) knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Unique id of the chunk within the frame; folding an id twice is refused.
    pub id: i64,
    /// Samples the partial really rendered: its weight. (The EXR header's
    /// `cycles.<layer>.samples` holds the configured count, which is wrong
    /// for interrupted chunks, so it is not used.)
    pub samples: u32,
    /// Whether the partial's sample range starts at absolute sample 0, so it
    /// holds Depth, index, Cryptomatte and the other sample-0-only passes.
    pub holds_sample_zero: bool,
}

/// What [`Accumulator::fold`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldOutcome {
    /// The partial is now part of the durable state.
    Folded,
    /// A chunk with this id (and the same sample information) was folded
    /// before; nothing changed.
    AlreadyFolded,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// Bytes per accumulated value in the state files.
    value_bytes: usize,
    generation: u64,
    /// Which state file holds the current state; `None` before the first fold.
    slot: Option<u8>,
    total_samples: u64,
    sample_zero_chunk: Option<i64>,
    chunks: Vec<ChunkInfo>,
    width: u32,
    height: u32,
    channels: Vec<Channel>,
}

/// A frame's merge in progress, kept in a directory it owns.
///
/// Create it once per frame with [`Accumulator::create`], fold partials as
/// they arrive with [`Accumulator::fold`], reopen it after a restart with
/// [`Accumulator::open`], and write the merged image at any time with
/// [`Accumulator::write_exr`] or [`Accumulator::write_png`].
#[derive(Debug)]
pub struct Accumulator {
    dir: PathBuf,
    layout: Layout,
    manifest: Manifest,
    _lock: File,
    #[cfg(test)]
    pub(crate) fail_after_blocks: Option<usize>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> MergeError + '_ {
    move |e| MergeError::io(path, e)
}

fn state_path(dir: &Path, slot: u8) -> PathBuf {
    dir.join(format!("state-{slot}.bin"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(MergeError::Accumulator {
            dir: dir.to_path_buf(),
            detail: "is in use by another accumulator (its lock file is held)".to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(MergeError::io(&path, e)),
    }
}

impl Manifest {
    fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(MANIFEST_TMP);
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| MergeError::Invalid(format!("the manifest cannot be encoded: {e}")))?;
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&json).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        let path = dir.join(MANIFEST);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(dir)
    }

    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MergeError::Accumulator {
                    dir: dir.to_path_buf(),
                    detail: "holds no accumulator (`manifest.json` is missing)".to_owned(),
                })
            }
            Err(e) => return Err(MergeError::io(&path, e)),
        };
        let manifest: Self = serde_json::from_slice(&bytes).map_err(|e| MergeError::Accumulator {
            dir: dir.to_path_buf(),
            detail: format!("has an unreadable `manifest.json`: {e}"),
        })?;
        if manifest.format != FORMAT || manifest.value_bytes != state::ACC_BYTES {
            return Err(MergeError::Accumulator {
                dir: dir.to_path_buf(),
                detail: format!(
                    "was written in format {} with {}-byte values; this build reads format {FORMAT} with {}-byte values",
                    manifest.format,
                    manifest.value_bytes,
                    state::ACC_BYTES
                ),
            });
        }
        Ok(manifest)
    }
}

impl Accumulator {
    /// Starts an empty accumulator for frames shaped like `layout` in `dir`,
    /// which is created if needed and must not already hold an accumulator.
    /// The directory belongs to the accumulator from now on.
    pub fn create(dir: &Path, layout: &Layout) -> Result<Self> {
        layout.check_rules()?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock(dir)?;
        if dir.join(MANIFEST).exists() {
            return Err(MergeError::Accumulator {
                dir: dir.to_path_buf(),
                detail: "already holds an accumulator; open it instead".to_owned(),
            });
        }
        for slot in [0, 1] {
            let _ = fs::remove_file(state_path(dir, slot));
        }
        layout.write_header_file(&dir.join(LAYOUT))?;
        let manifest = Manifest {
            format: FORMAT,
            value_bytes: state::ACC_BYTES,
            generation: 0,
            slot: None,
            total_samples: 0,
            sample_zero_chunk: None,
            chunks: Vec::new(),
            width: layout.width,
            height: layout.height,
            channels: layout.channels.clone(),
        };
        manifest.write(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            layout: layout.clone(),
            manifest,
            _lock: lock,
            #[cfg(test)]
            fail_after_blocks: None,
        })
    }

    /// Reopens the accumulator in `dir` after a restart. It holds exactly the
    /// folds that returned `Ok` (and possibly the one in flight at a crash, if
    /// it got as far as its commit).
    pub fn open(dir: &Path) -> Result<Self> {
        let lock = lock(dir)?;
        let manifest = Manifest::read(dir)?;
        let _ = fs::remove_file(dir.join(MANIFEST_TMP));
        let layout = Layout::read_header_file(&dir.join(LAYOUT), manifest.channels.clone())?;
        if layout.width != manifest.width || layout.height != manifest.height {
            return Err(MergeError::Accumulator {
                dir: dir.to_path_buf(),
                detail: "has a layout that disagrees with its manifest".to_owned(),
            });
        }
        layout.check_rules()?;
        if let Some(slot) = manifest.slot {
            let path = state_path(dir, slot);
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            if len != Shape::of(&layout).file_bytes() {
                return Err(MergeError::Accumulator {
                    dir: dir.to_path_buf(),
                    detail: format!("has a state file of {len} bytes instead of {}", Shape::of(&layout).file_bytes()),
                });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            layout,
            manifest,
            _lock: lock,
            #[cfg(test)]
            fail_after_blocks: None,
        })
    }

    /// Folds one partial into the accumulator, durably: when this returns
    /// `Ok(Folded)` the fold is on disk. The partial is checked completely
    /// while it is folded; a bad partial (truncated, wrong size, missing
    /// channel, ...) returns an error and changes nothing. A chunk id already
    /// folded returns `Ok(AlreadyFolded)` and changes nothing.
    pub fn fold(&mut self, partial: &Path, chunk: ChunkInfo) -> Result<FoldOutcome> {
        if let Some(before) = self.manifest.chunks.iter().find(|c| c.id == chunk.id) {
            if *before == chunk {
                return Ok(FoldOutcome::AlreadyFolded);
            }
            return Err(MergeError::ChunkConflict {
                id: chunk.id,
                before: describe(before),
                now: describe(&chunk),
            });
        }
        if chunk.samples == 0 {
            return Err(MergeError::ZeroSamples { id: chunk.id });
        }
        if let (true, Some(holder)) = (chunk.holds_sample_zero, self.manifest.sample_zero_chunk) {
            return Err(MergeError::SampleZeroTwice { id: chunk.id, holder });
        }
        let reader = Partial::open(partial)?;
        reader.check_matches(&self.layout)?;

        let shape = Shape::of(&self.layout);
        let target = self.manifest.slot.map_or(0, |s| 1 - s);
        let target_path = state_path(&self.dir, target);
        let prev_path = self.manifest.slot.map(|s| state_path(&self.dir, s));
        let prev = match &prev_path {
            Some(p) => Some(File::open(p).map_err(io_err(p))?),
            None => None,
        };
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target_path)
            .map_err(io_err(&target_path))?;
        out.set_len(shape.file_bytes()).map_err(io_err(&target_path))?;

        let params = FoldParams {
            weight: Acc::from(chunk.samples),
            take_sample_zero: chunk.holds_sample_zero || self.manifest.chunks.is_empty(),
        };
        let rules: Vec<_> = self.layout.channels.iter().map(|c| c.rule).collect();
        let (mut bytes, mut prev_values, mut out_values) = (Vec::new(), Vec::new(), Vec::new());
        #[cfg(test)]
        let mut blocks_left = self.fail_after_blocks;
        reader.for_each_block(|rows| {
            #[cfg(test)]
            if let Some(left) = blocks_left.as_mut() {
                if *left == 0 {
                    return Err(MergeError::Invalid("injected failure in the middle of a fold".to_owned()));
                }
                *left -= 1;
            }
            if let (Some(file), Some(path)) = (&prev, &prev_path) {
                state::read_rows(file, path, shape, rows.y0, rows.rows, &mut bytes, &mut prev_values)?;
            }
            let prev_rows = prev.as_ref().map(|_| prev_values.as_slice());
            state::fold_rows(&rules, shape.width, rows.values, prev_rows, &mut out_values, params);
            state::write_rows(&out, &target_path, shape, rows.y0, &out_values, &mut bytes)
        })?;
        out.sync_data().map_err(io_err(&target_path))?;
        drop(out);

        let mut next = self.manifest.clone();
        next.generation += 1;
        next.slot = Some(target);
        next.total_samples += u64::from(chunk.samples);
        if chunk.holds_sample_zero {
            next.sample_zero_chunk = Some(chunk.id);
        }
        next.chunks.push(chunk);
        next.write(&self.dir)?;
        self.manifest = next;
        Ok(FoldOutcome::Folded)
    }

    /// Samples folded so far: the sum of the folded chunks' `samples`.
    pub fn total_samples(&self) -> u64 {
        self.manifest.total_samples
    }

    /// Ids of the folded chunks, in fold order.
    pub fn folded_chunks(&self) -> Vec<i64> {
        self.manifest.chunks.iter().map(|c| c.id).collect()
    }

    /// The chunk folded as holding sample 0, if it has arrived.
    pub fn sample_zero_chunk(&self) -> Option<i64> {
        self.manifest.sample_zero_chunk
    }

    /// The frame's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The directory the accumulator lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current state file, or an error before the first fold.
    pub(crate) fn current_state(&self) -> Result<(File, PathBuf)> {
        let slot = self.manifest.slot.ok_or_else(|| MergeError::Accumulator {
            dir: self.dir.clone(),
            detail: "has no partial folded yet".to_owned(),
        })?;
        let path = state_path(&self.dir, slot);
        let file = File::open(&path).map_err(io_err(&path))?;
        Ok((file, path))
    }
}

fn describe(chunk: &ChunkInfo) -> String {
    format!(
        "{} samples{}",
        chunk.samples,
        if chunk.holds_sample_zero { " including sample 0" } else { "" }
    )
}
