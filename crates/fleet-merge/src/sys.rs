//! What this crate needs from the operating system beyond `std`: read-only
//! maps of files, reserving disk space, starting writeback early, and the
//! boot id. `unsafe` code: mapping a file, and two plain system calls.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{MergeError, Result};

/// Length of the kernel's boot id (a UUID in text).
pub(crate) const BOOT_ID_BYTES: usize = 36;

/// The kernel's boot id (changes at every boot), where the system has one.
pub(crate) fn boot_id() -> Option<[u8; BOOT_ID_BYTES]> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    text.trim().as_bytes().try_into().ok()
}

/// Reserves the file's disk space so that writes through the map never meet
/// a full disk (which would kill the process with SIGBUS).
#[cfg(target_os = "linux")]
pub(crate) fn reserve(file: &File, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(bytes)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a plain system call on a file descriptor this function borrows.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        // File systems without fallocate: the file stays sparse.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
        _ => Err(error),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn reserve(_file: &File, _bytes: usize) -> std::io::Result<()> {
    Ok(())
}

/// A read-only map of a file the accumulator owns (a journaled partial).
pub(crate) struct ReadMap(Mmap);

impl ReadMap {
    pub fn new(path: &Path, shown_as: &Path) -> Result<Self> {
        let io = |e| MergeError::io(path, e);
        let file = File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.len() == 0 {
            // Mapping an empty file fails on some systems; an empty partial
            // is simply not an OpenEXR file.
            return Err(MergeError::NotExr {
                path: shown_as.to_path_buf(),
            });
        }
        // SAFETY: the file lies in the accumulator's directory, whose lock
        // this process holds, and the accumulator never writes to a partial
        // once it is in place, so the mapped bytes do not change underneath.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(Self(map))
    }
}

impl std::ops::Deref for ReadMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Asks the kernel to start writing the file's dirty pages to disk now,
/// without waiting, so that a later sync has less left to do.
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a file descriptor this function borrows;
    // it only schedules I/O. Offset 0 and length 0 mean the whole file.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &File) {}
