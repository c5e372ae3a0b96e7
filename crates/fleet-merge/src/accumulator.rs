//! The durable, exactly-once accumulator partials are folded into.
//!
//! Directory contents:
//! - `manifest.json`: format, frame size and channel rules; written once, by
//!   [`Accumulator::create`] (its presence is what makes the directory an
//!   accumulator);
//! - `layout.exr`: the frame's header (an OpenEXR file without pixels);
//! - `partials/`: the journal, one file per folded partial, named
//!   `<seq>.chunk<id>.samples<n>[.zero].exr`, plus `incoming.tmp` while a
//!   fold is under way;
//! - `sums.bin`: the running sums, never synced (see [`crate::sums`]);
//! - `lock`: held (advisory lock) while an [`Accumulator`] is open.
//!
//! **Durability.** The journal is the state: a chunk is folded exactly when
//! its partial is in `partials/` under its final name. A fold copies (or
//! moves) the partial to `partials/incoming.tmp`, checks it, syncs it (in the
//! background, while it is decoded and added to the sums), then renames it to
//! its final name and syncs the directory: that rename is the commit point.
//! The name carries the chunk's id, weight and sample-0 flag and the fold's
//! sequence number, so refolding the journal in sequence order reproduces the
//! sums exactly, and an id already in the journal is `AlreadyFolded`.
//!
//! The sums are only a cache of the journal. They are rebuilt by refolding
//! the journal whenever their stamp does not vouch for them: after a crash of
//! the machine (another boot), after a process died in the middle of a fold,
//! or when `sums.bin` is missing. Memory use is the sums (one `f64` per
//! channel per pixel, mapped from `sums.bin`) plus one partial at a time,
//! whatever the number of partials.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{MergeError, Result};
use crate::layout::{Channel, Layout, MergeRule};
use crate::partial::Partial;
use crate::state::{self, Acc, FoldParams};
use crate::sums::SumsFile;

const MANIFEST: &str = "manifest.json";
const MANIFEST_TMP: &str = "manifest.json.tmp";
const LAYOUT: &str = "layout.exr";
const LOCK: &str = "lock";
const SUMS: &str = "sums.bin";
const JOURNAL: &str = "partials";
const STAGING: &str = "incoming.tmp";
const FORMAT: u32 = 2;

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
    /// A scratch accumulator keeps no journal and cannot be reopened.
    #[serde(default)]
    scratch: bool,
    width: u32,
    height: u32,
    channels: Vec<Channel>,
}

/// One folded partial, in fold order.
#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    chunk: ChunkInfo,
    /// File name in the journal (empty for a scratch accumulator).
    name: String,
}

/// Where a partial to fold comes from.
enum Source<'a> {
    /// The caller keeps the file; it is copied.
    Borrowed(&'a Path),
    /// The file is handed over; it is moved (or copied and removed).
    Owned(&'a Path),
}

impl Source<'_> {
    fn path(&self) -> &Path {
        match self {
            Self::Borrowed(p) | Self::Owned(p) => p,
        }
    }
}

/// Test hook: where a fold stops as if the process had died there.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Crash {
    /// After this many blocks were added to the sums, before the commit.
    AfterBlocks(usize),
    /// Right after the commit (rename), before the sums are stamped.
    AfterCommit,
}

/// A frame's merge in progress, kept in a directory it owns.
///
/// Create it once per frame with [`Accumulator::create`], fold partials as
/// they arrive with [`Accumulator::fold`] or [`Accumulator::fold_owned`],
/// reopen it after a restart with [`Accumulator::open`], write the merged
/// image at any time with [`Accumulator::write_exr`] or
/// [`Accumulator::write_png`], and remove it with [`Accumulator::discard`]
/// once the merged image is safely written.
#[derive(Debug)]
pub struct Accumulator {
    dir: PathBuf,
    layout: Layout,
    rules: Vec<MergeRule>,
    /// `None` for a scratch accumulator.
    journal: Option<PathBuf>,
    entries: Vec<Entry>,
    sums: SumsFile,
    /// Whether the sums hold exactly the folds of `entries`.
    sums_ok: bool,
    _lock: File,
    #[cfg(test)]
    pub(crate) crash: Option<Crash>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> MergeError + '_ {
    move |e| MergeError::io(path, e)
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(MergeError::io(path, e)),
        _ => Ok(()),
    }
}

fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(MergeError::Accumulator {
            dir: dir.to_path_buf(),
            detail: "is in use by another accumulator (its lock file is held)".to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(MergeError::io(&path, e)),
    }
}

/// The journal file name of a fold.
fn entry_name(seq: u64, chunk: &ChunkInfo) -> String {
    let zero = if chunk.holds_sample_zero { ".zero" } else { "" };
    format!(
        "{seq:06}.chunk{}.samples{}{zero}.exr",
        chunk.id, chunk.samples
    )
}

/// Parses a journal file name written by [`entry_name`].
fn parse_entry(name: &str) -> Option<Entry> {
    let mut parts = name.strip_suffix(".exr")?.split('.');
    let seq = parts.next()?.parse().ok()?;
    let id = parts.next()?.strip_prefix("chunk")?.parse().ok()?;
    let samples = parts
        .next()?
        .strip_prefix("samples")?
        .parse()
        .ok()
        .filter(|&s| s > 0)?;
    let holds_sample_zero = match parts.next() {
        None => false,
        Some("zero") => true,
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Entry {
        seq,
        chunk: ChunkInfo {
            id,
            samples,
            holds_sample_zero,
        },
        name: name.to_owned(),
    })
}

/// FNV-1a over the journal names, in order: what the sums' stamp refers to.
fn journal_hash(entries: &[Entry]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in entries.iter().flat_map(|e| e.name.bytes().chain([b'\n'])) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
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
        let unusable = |detail: String| MergeError::Accumulator {
            dir: dir.to_path_buf(),
            detail,
        };
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(unusable(
                    "holds no accumulator (`manifest.json` is missing)".to_owned(),
                ))
            }
            Err(e) => return Err(MergeError::io(&path, e)),
        };
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let version: Version = serde_json::from_slice(&bytes)
            .map_err(|e| unusable(format!("has an unreadable `manifest.json`: {e}")))?;
        if version.format != FORMAT {
            return Err(unusable(format!(
                "was written in format {}; this build reads format {FORMAT} (format 1 kept no copy of the partials, so \
                 its frame has to be merged again)",
                version.format
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| unusable(format!("has an unreadable `manifest.json`: {e}")))
    }
}

/// Folds every block of `partial` into `sums`, in parallel.
fn add_partial(
    sums: &mut SumsFile,
    rules: &[MergeRule],
    width: usize,
    partial: &Partial,
    params: FoldParams,
    #[cfg(test)] crash: Option<Crash>,
) -> Result<()> {
    #[cfg(test)]
    let blocks_done = std::sync::atomic::AtomicUsize::new(0);
    partial.decode_into(
        sums.values_mut(),
        partial.row_values(),
        |_, values, sums| {
            #[cfg(test)]
            if let Some(Crash::AfterBlocks(n)) = crash {
                if blocks_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= n {
                    return Err(MergeError::Invalid(
                        "simulated crash in the middle of a fold".to_owned(),
                    ));
                }
            }
            state::fold_rows(rules, width, values, sums, params);
            Ok(())
        },
    )
}

impl Accumulator {
    /// Starts an empty accumulator for frames shaped like `layout` in `dir`,
    /// which is created if needed and must not already hold an accumulator.
    /// The directory belongs to the accumulator from now on.
    pub fn create(dir: &Path, layout: &Layout) -> Result<Self> {
        Self::create_in(dir, layout, false)
    }

    /// Starts an accumulator that keeps no journal: partials are folded
    /// straight from where they are and nothing is synced, so it is not
    /// crash-safe and cannot be reopened. For one-shot merges such as
    /// [`crate::merge_files`]; a fold that fails half-way leaves it unusable.
    pub fn create_scratch(dir: &Path, layout: &Layout) -> Result<Self> {
        Self::create_in(dir, layout, true)
    }

    fn create_in(dir: &Path, layout: &Layout, scratch: bool) -> Result<Self> {
        layout.check_rules()?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock(dir)?;
        if dir.join(MANIFEST).exists() {
            return Err(MergeError::Accumulator {
                dir: dir.to_path_buf(),
                detail: "already holds an accumulator; open it instead".to_owned(),
            });
        }
        // Leftovers of an accumulator that was being created or discarded.
        let journal_dir = dir.join(JOURNAL);
        match fs::remove_dir_all(&journal_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(MergeError::io(&journal_dir, e))
            }
            _ => {}
        }
        for stale in [SUMS, MANIFEST_TMP, "state-0.bin", "state-1.bin"] {
            remove_if_present(&dir.join(stale))?;
        }
        let journal = if scratch {
            None
        } else {
            fs::create_dir(&journal_dir).map_err(io_err(&journal_dir))?;
            Some(journal_dir)
        };
        layout.write_header_file(&dir.join(LAYOUT))?;
        let sums = SumsFile::open(&dir.join(SUMS), Self::value_count(layout))?;
        let manifest = Manifest {
            format: FORMAT,
            scratch,
            width: layout.width,
            height: layout.height,
            channels: layout.channels.clone(),
        };
        manifest.write(dir)?;
        let mut acc = Self {
            dir: dir.to_path_buf(),
            rules: layout.channels.iter().map(|c| c.rule).collect(),
            layout: layout.clone(),
            journal,
            entries: Vec::new(),
            sums,
            sums_ok: true,
            _lock: lock,
            #[cfg(test)]
            crash: None,
        };
        acc.sums.mark_complete(0, journal_hash(&[]));
        Ok(acc)
    }

    fn value_count(layout: &Layout) -> usize {
        layout.width as usize * layout.height as usize * layout.channels.len()
    }

    /// Reopens the accumulator in `dir` after a restart. It holds exactly the
    /// folds that returned `Ok` (and possibly the one in flight at a crash, if
    /// it got as far as its commit). When the running sums cannot be vouched
    /// for (the machine restarted, or a process died in the middle of a
    /// fold), they are rebuilt from the journal, which costs about one fold
    /// per partial.
    pub fn open(dir: &Path) -> Result<Self> {
        let lock = lock(dir)?;
        let manifest = Manifest::read(dir)?;
        let unusable = |detail: String| MergeError::Accumulator {
            dir: dir.to_path_buf(),
            detail,
        };
        if manifest.scratch {
            return Err(unusable(
                "is a scratch accumulator, which cannot be reopened".to_owned(),
            ));
        }
        remove_if_present(&dir.join(MANIFEST_TMP))?;
        let layout = Layout::read_header_file(&dir.join(LAYOUT), manifest.channels.clone())
            .map_err(|e| unusable(format!("has an unreadable `{LAYOUT}`: {e}")))?;
        if layout.width != manifest.width || layout.height != manifest.height {
            return Err(unusable(
                "has a layout that disagrees with its manifest".to_owned(),
            ));
        }
        layout.check_rules()?;

        let journal = dir.join(JOURNAL);
        let mut entries = Vec::new();
        for item in fs::read_dir(&journal).map_err(io_err(&journal))? {
            let item = item.map_err(io_err(&journal))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == STAGING {
                // A fold that did not reach its commit.
                remove_if_present(&item.path())?;
            } else if let Some(entry) = parse_entry(name) {
                entries.push(entry);
            }
        }
        entries.sort_by_key(|e| e.seq);
        for (i, e) in entries.iter().enumerate() {
            let clash = entries[..i].iter().find(|o| {
                o.seq == e.seq
                    || o.chunk.id == e.chunk.id
                    || (o.chunk.holds_sample_zero && e.chunk.holds_sample_zero)
            });
            if let Some(o) = clash {
                return Err(unusable(format!(
                    "has an inconsistent journal: `{}` and `{}`",
                    o.name, e.name
                )));
            }
        }
        let sums = SumsFile::open(&dir.join(SUMS), Self::value_count(&layout))?;
        let sums_ok = sums.is_complete_for(entries.len() as u64, journal_hash(&entries));
        let mut acc = Self {
            dir: dir.to_path_buf(),
            rules: layout.channels.iter().map(|c| c.rule).collect(),
            layout,
            journal: Some(journal),
            entries,
            sums,
            sums_ok,
            _lock: lock,
            #[cfg(test)]
            crash: None,
        };
        if !acc.sums_ok {
            acc.rebuild()?;
        }
        Ok(acc)
    }

    /// Folds one partial into the accumulator, durably, copying it into the
    /// journal (the caller keeps `partial`). See [`Accumulator::fold_owned`],
    /// which moves the file instead.
    ///
    /// When this returns `Ok(Folded)` the fold is on disk. The partial is
    /// checked completely before the fold commits, so callers need not call
    /// [`crate::validate_partial`] first: the header, size, channels and block
    /// table before anything is done, the pixel data while it is added. A bad
    /// partial returns an error for which [`MergeError::is_bad_input`] is
    /// true and changes nothing (had it been added to the running sums in
    /// part, they are rebuilt from the journal before this returns). A chunk
    /// id already folded returns `Ok(AlreadyFolded)` and changes nothing.
    pub fn fold(&mut self, partial: &Path, chunk: ChunkInfo) -> Result<FoldOutcome> {
        self.fold_from(&Source::Borrowed(partial), chunk)
    }

    /// Like [`Accumulator::fold`], but takes the file over: it is renamed into
    /// the journal (copied, then removed, when it is on another file system),
    /// which saves a copy. Whatever the outcome, `partial` is gone afterwards
    /// (a refused or already folded partial is deleted), unless it cannot be
    /// deleted.
    pub fn fold_owned(&mut self, partial: PathBuf, chunk: ChunkInfo) -> Result<FoldOutcome> {
        let source = Source::Owned(&partial);
        let result = self.fold_from(&source, chunk);
        // Already gone when it was renamed into the journal.
        let _ = fs::remove_file(&partial);
        result
    }

    fn fold_from(&mut self, source: &Source<'_>, chunk: ChunkInfo) -> Result<FoldOutcome> {
        if let Some(before) = self.entries.iter().find(|e| e.chunk.id == chunk.id) {
            if before.chunk == chunk {
                return Ok(FoldOutcome::AlreadyFolded);
            }
            return Err(MergeError::ChunkConflict {
                id: chunk.id,
                before: describe(&before.chunk),
                now: describe(&chunk),
            });
        }
        if chunk.samples == 0 {
            return Err(MergeError::ZeroSamples { id: chunk.id });
        }
        if let (true, Some(holder)) = (chunk.holds_sample_zero, self.sample_zero_chunk()) {
            return Err(MergeError::SampleZeroTwice {
                id: chunk.id,
                holder,
            });
        }
        if !self.sums_ok {
            self.rebuild()?;
        }
        let first = self.entries.is_empty();
        let params = FoldParams {
            weight: Acc::from(chunk.samples),
            first,
            take_sample_zero: chunk.holds_sample_zero || first,
        };
        let seq = self.entries.last().map_or(1, |e| e.seq + 1);
        let Some(journal) = self.journal.clone() else {
            // Scratch: straight from the caller's file, nothing to commit.
            let partial = Partial::open(source.path())?;
            partial.check_matches(&self.layout)?;
            self.sums.mark_incomplete();
            self.sums_ok = false;
            self.add(&partial, params)?;
            self.entries.push(Entry {
                seq,
                chunk,
                name: String::new(),
            });
            self.sums
                .mark_complete(self.entries.len() as u64, journal_hash(&self.entries));
            self.sums_ok = true;
            return Ok(FoldOutcome::Folded);
        };

        let staging = journal.join(STAGING);
        remove_if_present(&staging)?;
        match source {
            Source::Borrowed(path) => {
                fs::copy(path, &staging).map_err(io_err(path))?;
            }
            Source::Owned(path) => match fs::rename(path, &staging) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    fs::copy(path, &staging).map_err(io_err(path))?;
                }
                Err(e) => return Err(MergeError::io(path, e)),
            },
        }
        let result = self.fold_staged(&journal, &staging, source.path(), seq, chunk, params);
        #[cfg(test)]
        if self.crash.is_some() {
            return result;
        }
        if result.is_err() {
            let _ = fs::remove_file(&staging);
        }
        result
    }

    /// Checks, adds and commits the partial waiting in `staging`.
    fn fold_staged(
        &mut self,
        journal: &Path,
        staging: &Path,
        shown_as: &Path,
        seq: u64,
        chunk: ChunkInfo,
        params: FoldParams,
    ) -> Result<FoldOutcome> {
        let partial = Partial::open_mapped(staging, shown_as)?;
        partial.check_matches(&self.layout)?;
        // Sync the partial while it is decoded: the one is I/O, the other CPU.
        let to_sync = staging.to_path_buf();
        let syncer = std::thread::spawn(move || File::open(&to_sync).and_then(|f| f.sync_all()));
        self.sums.mark_incomplete();
        self.sums_ok = false;
        let added = self.add(&partial, params);
        drop(partial);
        let synced = syncer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread panicked")));
        #[cfg(test)]
        if self.crash.is_some() && added.is_err() {
            return added.map(|()| FoldOutcome::Folded);
        }
        let committed = added.and_then(|()| {
            synced.map_err(io_err(staging))?;
            let name = entry_name(seq, &chunk);
            fs::rename(staging, journal.join(&name)).map_err(io_err(staging))?;
            Ok(name)
        });
        let name = match committed {
            Ok(name) => name,
            Err(e) => {
                // Part of the partial may be in the sums: start them over.
                let _ = self.rebuild();
                return Err(e);
            }
        };
        #[cfg(test)]
        if let Some(Crash::AfterCommit) = self.crash {
            return Err(MergeError::Invalid(
                "simulated crash right after a commit".to_owned(),
            ));
        }
        self.entries.push(Entry { seq, chunk, name });
        self.sums
            .mark_complete(self.entries.len() as u64, journal_hash(&self.entries));
        self.sums_ok = true;
        // Until the directory is synced, the rename may not survive a crash
        // of the machine; if this fails, refolding the chunk later is
        // harmless (it is `AlreadyFolded` if the rename did survive).
        sync_dir(journal)?;
        Ok(FoldOutcome::Folded)
    }

    fn add(&mut self, partial: &Partial, params: FoldParams) -> Result<()> {
        add_partial(
            &mut self.sums,
            &self.rules,
            self.layout.width as usize,
            partial,
            params,
            #[cfg(test)]
            self.crash,
        )
    }

    /// Recomputes the sums by refolding the journal in fold order.
    fn rebuild(&mut self) -> Result<()> {
        self.sums_ok = false;
        self.sums.mark_incomplete();
        if !self.entries.is_empty() {
            let Some(journal) = self.journal.clone() else {
                return Err(self.unusable(
                    "lost its running sums, and a scratch accumulator cannot rebuild them",
                ));
            };
            let dir = self.dir.clone();
            let refold = |e: MergeError| -> MergeError {
                if e.is_bad_input() {
                    MergeError::Accumulator {
                        dir: dir.clone(),
                        detail: format!("cannot refold its journaled partial: {e}"),
                    }
                } else {
                    e
                }
            };
            for (i, entry) in self.entries.clone().iter().enumerate() {
                let path = journal.join(&entry.name);
                let partial = Partial::open_mapped(&path, &path).map_err(refold)?;
                partial.check_matches(&self.layout).map_err(refold)?;
                let params = FoldParams {
                    weight: Acc::from(entry.chunk.samples),
                    first: i == 0,
                    take_sample_zero: entry.chunk.holds_sample_zero || i == 0,
                };
                #[cfg(test)]
                let crash = self.crash.take();
                let added = self.add(&partial, params);
                #[cfg(test)]
                {
                    self.crash = crash;
                }
                added.map_err(refold)?;
            }
        }
        self.sums
            .mark_complete(self.entries.len() as u64, journal_hash(&self.entries));
        self.sums_ok = true;
        Ok(())
    }

    fn unusable(&self, detail: &str) -> MergeError {
        MergeError::Accumulator {
            dir: self.dir.clone(),
            detail: detail.to_owned(),
        }
    }

    /// Removes the accumulator and its directory, journal included: call it
    /// once the merged image is written and safe (its journal is what the
    /// accumulator needs to survive a crash, and takes as much disk as the
    /// partials). The manifest goes first, so a crash in the middle leaves a
    /// directory that [`Accumulator::open`] refuses rather than half a frame.
    pub fn discard(self) -> Result<()> {
        let Self {
            dir,
            sums,
            _lock: lock,
            ..
        } = self;
        remove_if_present(&dir.join(MANIFEST))?;
        sync_dir(&dir)?;
        drop(sums);
        let removed = fs::remove_dir_all(&dir).map_err(io_err(&dir));
        drop(lock);
        removed
    }

    /// Samples folded so far: the sum of the folded chunks' `samples`.
    pub fn total_samples(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| u64::from(e.chunk.samples))
            .sum()
    }

    /// Ids of the folded chunks, in fold order.
    pub fn folded_chunks(&self) -> Vec<i64> {
        self.entries.iter().map(|e| e.chunk.id).collect()
    }

    /// The chunk folded as holding sample 0, if it has arrived.
    pub fn sample_zero_chunk(&self) -> Option<i64> {
        self.entries
            .iter()
            .find(|e| e.chunk.holds_sample_zero)
            .map(|e| e.chunk.id)
    }

    /// The frame's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The directory the accumulator lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sums, or an error before the first fold (or if they were lost).
    pub(crate) fn sums(&self) -> Result<&[Acc]> {
        if self.entries.is_empty() {
            return Err(self.unusable("has no partial folded yet"));
        }
        if !self.sums_ok {
            return Err(
                self.unusable("lost its running sums (they could not be rebuilt); reopen it")
            );
        }
        Ok(self.sums.values())
    }

    /// Test hook: make the sums look as if they came from another boot.
    #[cfg(test)]
    pub(crate) fn forget_boot(&mut self) {
        self.sums.forget_boot();
    }

    /// Path of the sums file.
    #[cfg(test)]
    pub(crate) fn sums_path(&self) -> PathBuf {
        self.dir.join(SUMS)
    }
}

fn describe(chunk: &ChunkInfo) -> String {
    format!(
        "{} samples{}",
        chunk.samples,
        if chunk.holds_sample_zero {
            " including sample 0"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_round_trip() {
        for chunk in [
            ChunkInfo {
                id: 7,
                samples: 12,
                holds_sample_zero: false,
            },
            ChunkInfo {
                id: -3,
                samples: 1,
                holds_sample_zero: true,
            },
            ChunkInfo {
                id: i64::MAX,
                samples: u32::MAX,
                holds_sample_zero: false,
            },
        ] {
            let name = entry_name(42, &chunk);
            let entry = parse_entry(&name).expect("parses");
            assert_eq!((entry.seq, entry.chunk), (42, chunk), "{name}");
        }
        assert_eq!(
            entry_name(
                3,
                &ChunkInfo {
                    id: 9,
                    samples: 5,
                    holds_sample_zero: true
                }
            ),
            "000003.chunk9.samples5.zero.exr"
        );
        for bad in [
            "incoming.tmp",
            "x.chunk1.samples2.exr",
            "1.chunk1.samples0.exr",
            "1.chunk1.samples2.one.exr",
            "1.chunk1.exr",
        ] {
            assert!(parse_entry(bad).is_none(), "{bad}");
        }
    }
}
