//! The accumulator's running sums (`sums.bin`), mapped into memory.
//!
//! `sums.bin` is a 4 KiB stamp followed by the sums (native-endian
//! [`Acc`]). It is never synced: it lives in the page cache, which every
//! process of the machine sees until the machine restarts, and it can always
//! be rebuilt from the journal. The stamp says whether the sums are complete
//! and for which journal:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0..8 | magic `FMSUMS01` |
//! | 8..16 | 1 when the sums are complete, 0 while a fold or rebuild is under way |
//! | 16..24 | number of journaled partials folded in |
//! | 24..32 | hash of their journal names |
//! | 32..40 | number of values |
//! | 40..76 | the kernel's boot id when the stamp was written |
//!
//! A stamp from another boot means the machine went down, and what reached
//! the disk of a never-synced file is anyone's guess: the sums are rebuilt.
//! Within one boot, whatever a process wrote is in the page cache, even if it
//! died: a complete stamp for the current journal means complete sums.
//!
//! `unsafe` code: mapping the file, and viewing the mapped bytes as [`Acc`]
//! values.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::path::Path;

use memmap2::MmapMut;

use crate::error::{MergeError, Result};
use crate::state::Acc;
use crate::sys::{boot_id, reserve, BOOT_ID_BYTES};

const MAGIC: &[u8; 8] = b"FMSUMS01";
const STAMP_BYTES: usize = 4096;

/// What the stamp of `sums.bin` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub complete: bool,
    pub entries: u64,
    pub journal_hash: u64,
    pub values: u64,
    pub boot_id: [u8; BOOT_ID_BYTES],
}

/// The running sums, mapped from `sums.bin`.
#[derive(Debug)]
pub(crate) struct SumsFile {
    map: MmapMut,
    values: usize,
}

impl SumsFile {
    /// Opens (or creates) `path` for `values` sums. A file of the wrong size
    /// is recreated, which leaves a stamp that is not complete.
    pub fn open(path: &Path, values: usize) -> Result<Self> {
        let io = |e| MergeError::io(path, e);
        let bytes = values
            .checked_mul(std::mem::size_of::<Acc>())
            .and_then(|b| b.checked_add(STAMP_BYTES))
            .ok_or_else(|| {
                MergeError::Invalid(format!("`{}`: the frame is too large", path.display()))
            })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() != bytes as u64 {
            file.set_len(0).map_err(io)?;
            file.set_len(bytes as u64).map_err(io)?;
            reserve(&file, bytes).map_err(io)?;
        }
        // SAFETY: the file belongs to the accumulator, whose directory lock
        // this process holds, so no other accumulator maps, resizes or
        // truncates it while the map lives; its size was just checked, and
        // its disk space reserved so writing to the map cannot fail for lack
        // of space.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
        Ok(Self { map, values })
    }

    /// The sums, read-only.
    pub fn values(&self) -> &[Acc] {
        let bytes = &self.map[STAMP_BYTES..];
        // SAFETY: every bit pattern is a valid `Acc`, and `align_to` only
        // yields the part of the slice that is suitably aligned (all of it:
        // the map is page-aligned and the stamp is 4096 bytes).
        let (head, values, tail) = unsafe { bytes.align_to::<Acc>() };
        debug_assert!(head.is_empty() && tail.is_empty());
        &values[..self.values]
    }

    /// The sums, to fold into.
    pub fn values_mut(&mut self) -> &mut [Acc] {
        let bytes = &mut self.map[STAMP_BYTES..];
        // SAFETY: as in `values`.
        let (head, values, tail) = unsafe { bytes.align_to_mut::<Acc>() };
        debug_assert!(head.is_empty() && tail.is_empty());
        &mut values[..self.values]
    }

    /// Reads the stamp.
    pub fn stamp(&self) -> Stamp {
        let field = |at: usize| {
            let mut raw = [0_u8; 8];
            raw.copy_from_slice(&self.map[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        let mut boot_id = [0_u8; BOOT_ID_BYTES];
        boot_id.copy_from_slice(&self.map[40..40 + BOOT_ID_BYTES]);
        Stamp {
            complete: &self.map[..8] == MAGIC && field(8) == 1,
            entries: field(16),
            journal_hash: field(24),
            values: field(32),
            boot_id,
        }
    }

    /// Marks the sums incomplete; done before they are changed.
    pub fn mark_incomplete(&mut self) {
        self.map[8..16].copy_from_slice(&0_u64.to_le_bytes());
        // Keep the compiler from moving the sums' stores before this one (the
        // threads that fold are started after it, which orders them too).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Marks the sums complete for a journal of `entries` partials whose
    /// names hash to `journal_hash`.
    pub fn mark_complete(&mut self, entries: u64, journal_hash: u64) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let boot = boot_id().unwrap_or([0; BOOT_ID_BYTES]);
        let map = &mut self.map;
        map[..8].copy_from_slice(MAGIC);
        map[16..24].copy_from_slice(&entries.to_le_bytes());
        map[24..32].copy_from_slice(&journal_hash.to_le_bytes());
        map[32..40].copy_from_slice(&(self.values as u64).to_le_bytes());
        map[40..40 + BOOT_ID_BYTES].copy_from_slice(&boot);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        map[8..16].copy_from_slice(&1_u64.to_le_bytes());
    }

    /// Whether the stamp vouches for sums of this journal in this boot.
    pub fn is_complete_for(&self, entries: u64, journal_hash: u64) -> bool {
        let stamp = self.stamp();
        let Some(boot) = boot_id() else { return false };
        stamp.complete
            && stamp.entries == entries
            && stamp.journal_hash == journal_hash
            && stamp.values == self.values as u64
            && stamp.boot_id == boot
    }

    /// Overwrites the stamp's boot id, as if the sums came from another boot.
    #[cfg(test)]
    pub fn forget_boot(&mut self) {
        self.map[40..40 + BOOT_ID_BYTES].copy_from_slice(&[b'x'; BOOT_ID_BYTES]);
    }
}
