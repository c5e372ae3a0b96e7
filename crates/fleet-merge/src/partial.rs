//! Reading one partial render: structural checks on the header, comparison
//! with the frame's layout, a check of its block table, and decoding its pixel
//! blocks in parallel.
//!
//! The whole file is held in memory (read, or mapped when it is the
//! accumulator's own journal file). Opening a partial checks everything that
//! can be checked without decompressing: the header, the channels, and that
//! every pixel block the header implies is listed, lies inside the file and
//! sits at the right line. Only damaged compressed data is left to be found
//! while decoding.
//!
//! ZIP (Blender's default) and uncompressed blocks are decoded here, with
//! libdeflate and a word-parallel version of OpenEXR's byte predictor; other
//! codecs go through the `exr` crate block by block.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use exr::compression::Compression;
use exr::math::Vec2;
use exr::meta::attribute::{IntegerBounds, SampleType};
use exr::meta::header::Header;
use exr::meta::{BlockDescription, MetaData};
use rayon::prelude::*;

use crate::error::{MergeError, Result};
use crate::layout::Layout;

/// The bytes of a partial: read into memory, or mapped.
enum Bytes {
    Owned(Vec<u8>),
    Mapped(crate::sys::ReadMap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped(m) => m,
        }
    }
}

/// One pixel block of a partial: rows `y0 .. y0 + rows` (relative to the
/// data window), stored at `data` in the file.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub y0: usize,
    pub rows: usize,
    data: Range<usize>,
}

/// An opened partial whose header and block table passed the checks.
pub(crate) struct Partial {
    path: PathBuf,
    bytes: Bytes,
    header: Header,
    blocks: Vec<Block>,
}

/// Per-thread buffers for decoding.
pub(crate) struct Scratch {
    inflater: libdeflater::Decompressor,
    bytes: Vec<u8>,
    values: Vec<f32>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            inflater: libdeflater::Decompressor::new(),
            bytes: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Runs `f` with this thread's scratch buffers, which live as long as the
    /// thread (rayon's workers), so blocks do not allocate.
    fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => f(slot.get_or_insert_with(Self::new)),
            // Re-entered on this thread (a visitor that decodes): use fresh buffers.
            Err(_) => f(&mut Self::new()),
        })
    }
}

/// Checks that a parsed file is a single-part, flat, scanline OpenEXR file
/// whose channels all hold 32-bit floats at full resolution, and returns its
/// header.
fn single_scanline_header(path: &Path, meta: MetaData) -> Result<Header> {
    let unsupported = |detail: String| MergeError::Unsupported {
        path: path.to_path_buf(),
        detail,
    };
    let mut headers = meta.headers;
    if headers.len() != 1 {
        return Err(unsupported(format!(
            "has {} parts; only single-part files can be merged",
            headers.len()
        )));
    }
    let header = headers.swap_remove(0);
    if header.deep {
        return Err(unsupported(
            "holds deep data; only flat images can be merged".to_owned(),
        ));
    }
    if let BlockDescription::Tiles(_) = header.blocks {
        return Err(unsupported(
            "is tiled; only scanline files can be merged".to_owned(),
        ));
    }
    for channel in &header.channels.list {
        if channel.sample_type != SampleType::F32 {
            return Err(MergeError::NotFloat {
                path: path.to_path_buf(),
                channel: channel.name.to_string(),
                found: match channel.sample_type {
                    SampleType::F16 => "16-bit float",
                    SampleType::U32 => "32-bit unsigned integer",
                    SampleType::F32 => "32-bit float",
                },
            });
        }
        if channel.sampling.x() != 1 || channel.sampling.y() != 1 {
            return Err(unsupported(format!(
                "subsamples channel `{}`",
                channel.name
            )));
        }
    }
    // The header was only parsed so far. The merged frame is written with it
    // (`Accumulator::write_exr`, which validates strictly), so check it as
    // strictly here: channels present, sorted and unique, sane windows and
    // pixel aspect, a line order, no custom attribute under a reserved name.
    // A header that could not be written back is bad input, refused before
    // a frame starts from it or folds it.
    MetaData::validate(std::slice::from_ref(&header), true)
        .map_err(|e| MergeError::from_exr(path, e))?;
    Ok(header)
}

fn check_magic(path: &Path, start: &[u8]) -> Result<()> {
    if start.len() < 4 || start[..4] != exr::meta::magic_number::BYTES {
        return Err(MergeError::NotExr {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Reads only the header of `path` and checks its structure.
pub(crate) fn read_header(path: &Path) -> Result<Header> {
    let io = |e| MergeError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let mut magic = [0_u8; 4];
    match file.read_exact(&mut magic) {
        Ok(()) => check_magic(path, &magic)?,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => check_magic(path, &[])?,
        Err(e) => return Err(io(e)),
    }
    let file = File::open(path).map_err(io)?;
    let meta = MetaData::read_from_buffered(BufReader::with_capacity(1 << 16, file), false)
        .map_err(|e| MergeError::from_exr(path, e))?;
    single_scanline_header(path, meta)
}

/// The most pixel bytes one stored byte of a block can decode to with
/// `compression`: none for uncompressed blocks; 64 for RLE (a two-byte run of
/// 128 bytes); 1032 for ZIP (deflate's limit: a 258-byte match in two bits).
/// Other codecs get a bound far above what they reach on real data. A block
/// claiming more pixels than this is damaged or forged (a few bytes announcing
/// gigabytes), and is refused before a buffer of that size is allocated.
fn max_expansion(compression: Compression) -> usize {
    match compression {
        Compression::Uncompressed => 1,
        Compression::RLE => 64,
        Compression::ZIP1 | Compression::ZIP16 => 1032,
        _ => 1 << 17,
    }
}

/// Little-endian reads at a position, `None` past the end.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Position of the first byte after the header(s): attribute lists end with
/// an empty name; in multi-part files the list of headers ends with another
/// empty name.
fn end_of_headers(bytes: &[u8], multipart: bool) -> Option<usize> {
    let cstr_end = |at: usize| {
        bytes
            .get(at..)?
            .iter()
            .position(|&b| b == 0)
            .map(|n| at + n)
    };
    let mut at = 8;
    loop {
        loop {
            let name_end = cstr_end(at)?;
            if name_end == at {
                at += 1;
                break;
            }
            let type_end = cstr_end(name_end + 1)?;
            let size = usize::try_from(u32_at(bytes, type_end + 1)? as i32).ok()?;
            at = (type_end + 5).checked_add(size)?;
        }
        if !multipart {
            return Some(at);
        }
        if *bytes.get(at)? == 0 {
            return Some(at + 1);
        }
    }
}

impl Partial {
    /// Reads `path` into memory and checks it (see the module docs).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| MergeError::io(path, e))?;
        Self::from_bytes(path, Bytes::Owned(bytes))
    }

    /// Maps `path`, a file that belongs to the accumulator and that nobody
    /// else changes while it is open, and checks it. Errors about its
    /// contents name `shown_as` (the file the caller handed in).
    pub fn open_mapped(path: &Path, shown_as: &Path) -> Result<Self> {
        let map = crate::sys::ReadMap::new(path, shown_as)?;
        Self::from_bytes(shown_as, Bytes::Mapped(map))
    }

    fn from_bytes(path: &Path, bytes: Bytes) -> Result<Self> {
        check_magic(path, &bytes)?;
        let meta = MetaData::read_from_buffered(Cursor::new(&bytes[..]), false)
            .map_err(|e| MergeError::from_exr(path, e))?;
        let header = single_scanline_header(path, meta)?;
        let mut partial = Self {
            path: path.to_path_buf(),
            bytes,
            header,
            blocks: Vec::new(),
        };
        partial.blocks = partial.block_table()?;
        Ok(partial)
    }

    fn corrupt(&self, detail: impl Into<String>) -> MergeError {
        MergeError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn truncated(&self) -> MergeError {
        MergeError::Truncated {
            path: self.path.clone(),
        }
    }

    /// Reads the offset table and checks every block's position, line and
    /// size against the file.
    fn block_table(&self) -> Result<Vec<Block>> {
        let bytes = &self.bytes[..];
        let flags = u32_at(bytes, 4).ok_or_else(|| self.truncated())?;
        let multipart = flags & 0x1000 != 0;
        let table = end_of_headers(bytes, multipart)
            .ok_or_else(|| self.corrupt("its header cannot be delimited"))?;
        let header = &self.header;
        let height = header.layer_size.height();
        let per_block = header.compression.scan_lines_per_block();
        let count = height.div_ceil(per_block);
        if header.chunk_count != count {
            return Err(self.corrupt(format!(
                "its header announces {} pixel blocks instead of {count}",
                header.chunk_count
            )));
        }
        let table_end = table + 8 * count;
        if table_end > bytes.len() {
            return Err(self.truncated());
        }
        let row_bytes = header.layer_size.width() * header.channels.list.len() * 4;
        let min_y = i64::from(header.own_attributes.layer_position.y());
        let prefix = if multipart { 12 } else { 8 };
        let mut blocks = Vec::with_capacity(count);
        for i in 0..count {
            let y0 = i * per_block;
            let rows = per_block.min(height - y0);
            let offset = u64_at(bytes, table + 8 * i).unwrap_or(0);
            // OpenEXR leaves zeros in the table for blocks it never wrote.
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            if offset == 0 || offset >= bytes.len() {
                return Err(self.truncated());
            }
            if offset < table_end {
                return Err(self.corrupt(format!(
                    "the pixel block at line {y0} points into the header"
                )));
            }
            let field = |at: usize| u32_at(bytes, offset + at).ok_or_else(|| self.truncated());
            if multipart && field(0)? != 0 {
                return Err(self.corrupt(format!(
                    "the pixel block at line {y0} belongs to another part"
                )));
            }
            let y = i64::from(field(prefix - 8)? as i32);
            if y != min_y + y0 as i64 {
                return Err(self.corrupt(format!(
                    "the pixel block at line {y0} is misplaced or repeated"
                )));
            }
            let size = field(prefix - 4)? as i32;
            let size = usize::try_from(size).map_err(|_| {
                self.corrupt(format!("the pixel block at line {y0} has a negative size"))
            })?;
            if size > rows * row_bytes {
                return Err(self.corrupt(format!(
                    "the pixel block at line {y0} is larger than its pixels"
                )));
            }
            // Checked before anything is decoded: a block is decoded into a
            // buffer of its pixels' size, which the header alone sets.
            if rows * row_bytes > size.saturating_mul(max_expansion(header.compression)) {
                return Err(self.corrupt(format!(
                    "the pixel block at line {y0} is too small to hold its pixels \
                     ({size} bytes for {} bytes of pixels)",
                    rows * row_bytes
                )));
            }
            let start = offset + prefix;
            let end = start
                .checked_add(size)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| self.truncated())?;
            blocks.push(Block {
                y0,
                rows,
                data: start..end,
            });
        }
        Ok(blocks)
    }

    /// The (single) header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Values (all channels) in one row.
    pub fn row_values(&self) -> usize {
        self.header.layer_size.width() * self.header.channels.list.len()
    }

    /// Rows per pixel block.
    pub fn rows_per_block(&self) -> usize {
        self.header.compression.scan_lines_per_block()
    }

    /// Checks that this partial has the frame's size, data window and channels.
    pub fn check_matches(&self, layout: &Layout) -> Result<()> {
        let header = self.header();
        let expected = layout.header();
        let size = header.layer_size;
        let path = || self.path.clone();
        if size != expected.layer_size {
            return Err(MergeError::SizeMismatch {
                path: path(),
                found: format!("{}x{}", size.width(), size.height()),
                expected: format!("{}x{}", layout.width, layout.height),
            });
        }
        let origin = header.own_attributes.layer_position;
        let expected_origin = expected.own_attributes.layer_position;
        if origin != expected_origin {
            return Err(MergeError::SizeMismatch {
                path: path(),
                found: format!(
                    "{}x{} at ({}, {})",
                    size.width(),
                    size.height(),
                    origin.x(),
                    origin.y()
                ),
                expected: format!(
                    "{}x{} at ({}, {})",
                    layout.width,
                    layout.height,
                    expected_origin.x(),
                    expected_origin.y()
                ),
            });
        }
        let names: Vec<String> = header
            .channels
            .list
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        for channel in &layout.channels {
            if !names.contains(&channel.name) {
                return Err(MergeError::MissingChannel {
                    path: path(),
                    channel: channel.name.clone(),
                });
            }
        }
        for name in &names {
            if layout.channel_index(name).is_none() {
                return Err(MergeError::ExtraChannel {
                    path: path(),
                    channel: name.clone(),
                });
            }
        }
        // OpenEXR keeps channel lists sorted, so equal sets mean equal order;
        // check anyway, since the block layout relies on it.
        if names
            .iter()
            .zip(&layout.channels)
            .any(|(a, b)| *a != b.name)
        {
            return Err(MergeError::Corrupt {
                path: path(),
                detail: "its channels are not in sorted order".to_owned(),
            });
        }
        Ok(())
    }

    /// Decodes one block into `scratch.values`: for each row, for each
    /// channel in file order, `width` values.
    fn decode<'s>(&self, block: &Block, scratch: &'s mut Scratch) -> Result<&'s [f32]> {
        let data = &self.bytes[block.data.clone()];
        let count = block.rows * self.row_values();
        let expected = count * 4;
        let compression = self.header.compression;
        let values = &mut scratch.values;
        if data.len() == expected {
            values.clear();
            // Uncompressed, or stored raw because compression did not help.
            values.extend(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        } else if matches!(compression, Compression::ZIP1 | Compression::ZIP16) {
            let damaged = || {
                self.corrupt(format!(
                    "the ZIP data of the pixel block at line {} is damaged",
                    block.y0
                ))
            };
            scratch.bytes.resize(expected, 0);
            let n = scratch
                .inflater
                .zlib_decompress(data, &mut scratch.bytes)
                .map_err(|_| damaged())?;
            if n != expected {
                return Err(damaged());
            }
            // Every value is overwritten: no need to clear.
            values.resize(count, 0.0);
            unzip_values(&scratch.bytes, values);
        } else {
            let bounds = IntegerBounds::new(
                Vec2(0, block.y0 as i32),
                Vec2(self.header.layer_size.width(), block.rows),
            );
            let bytes = compression
                .decompress_image_section_from_le(&self.header, data.to_vec(), bounds, false)
                .map_err(|e| MergeError::from_exr(&self.path, e))?;
            if bytes.len() != expected {
                return Err(self.corrupt(format!(
                    "the pixel block at line {} decodes to the wrong size",
                    block.y0
                )));
            }
            values.clear();
            values.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(values)
    }

    /// Decodes every block in parallel and hands each, with its rows of
    /// `target` (`per_row` items per row), to `visit`. Blocks run in any
    /// order; the first error stops the rest.
    pub fn decode_into<T, F>(&self, target: &mut [T], per_row: usize, visit: F) -> Result<()>
    where
        T: Send,
        F: Fn(&Block, &[f32], &mut [T]) -> Result<()> + Sync,
    {
        let rows = self.rows_per_block() * per_row;
        target
            .par_chunks_mut(rows.max(1))
            .zip(self.blocks.par_iter())
            .try_for_each(|(rows, block)| {
                Scratch::with(|scratch| {
                    let values = self.decode(block, scratch)?;
                    visit(block, values, rows)
                })
            })
    }

    /// Decodes every block in parallel, checking it, and hands it to `visit`.
    pub fn decode_all<F>(&self, visit: F) -> Result<()>
    where
        F: Fn(&Block, &[f32]) -> Result<()> + Sync,
    {
        self.blocks.par_iter().try_for_each(|block| {
            Scratch::with(|scratch| {
                let values = self.decode(block, scratch)?;
                visit(block, values)
            })
        })
    }
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH1: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;

/// Adds the eight bytes of `a` and `b` lane by lane, modulo 256.
#[inline(always)]
fn add_bytes(a: u64, b: u64) -> u64 {
    ((a & LOW7) + (b & LOW7)) ^ ((a ^ b) & HIGH1)
}

/// Running sums of eight bytes (lowest first) starting from `carry`.
#[inline(always)]
fn prefix8(mut x: u64, carry: u8) -> u64 {
    x = add_bytes(x, x << 8);
    x = add_bytes(x, x << 16);
    x = add_bytes(x, x << 32);
    add_bytes(x, u64::from(carry) * ONES)
}

/// Undoes OpenEXR's ZIP preprocessing of `t` (inflated bytes) into `values`
/// (`t.len() / 4` of them): the bytes are deltas (`s[i] = s[i-1] + t[i] -
/// 128`, `s[0] = t[0]`), and the first half of `s` holds the even bytes of the
/// little-endian samples, the second half the odd ones.
///
/// Both halves are summed at once, 16 bytes at a time with SSE2 where there is
/// SSE2 and 8 at a time in a `u64` otherwise: the `- 128` is `^ 0x80`, and
/// starting from 128 makes the first byte come out as itself; the second half
/// starts from the first half's total, found with a plain byte sum.
pub(crate) fn unzip_values(t: &[u8], values: &mut [f32]) {
    debug_assert_eq!(t.len(), values.len() * 4);
    let half = t.len() / 2;
    let (lo, hi) = t.split_at(half);
    let total_lo = lo.iter().fold(0_u8, |a, &b| a.wrapping_add(b));
    // s[half-1] = 128 + Σ (lo[i] ^ 0x80) = Σ lo[i] + 128 · (half + 1), half even.
    let mut carry = [0x80_u8, total_lo.wrapping_add(0x80)];
    let done = unzip_simd(lo, hi, values, &mut carry);
    let (lo, hi, values) = (&lo[2 * done..], &hi[2 * done..], &mut values[done..]);
    let [mut carry_lo, mut carry_hi] = carry;
    let word = |b: &[u8]| {
        let mut w = [0_u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w) ^ HIGH1
    };
    for ((l, h), out) in lo.chunks(8).zip(hi.chunks(8)).zip(values.chunks_mut(4)) {
        let x = prefix8(word(l), carry_lo).to_le_bytes();
        let y = prefix8(word(h), carry_hi).to_le_bytes();
        carry_lo = x[l.len() - 1];
        carry_hi = y[h.len() - 1];
        for (j, v) in out.iter_mut().enumerate() {
            *v = f32::from_le_bytes([x[2 * j], y[2 * j], x[2 * j + 1], y[2 * j + 1]]);
        }
    }
}

/// The SSE2 part of [`unzip_values`]: as many values as fit in whole 16-byte
/// steps; returns how many it did and leaves the running sums in `carry`.
#[cfg(target_arch = "x86_64")]
fn unzip_simd(lo: &[u8], hi: &[u8], values: &mut [f32], carry: &mut [u8; 2]) -> usize {
    // SAFETY: SSE2 is part of the x86_64 baseline, so every x86_64 processor
    // has the one target feature `unzip_sse2` enables.
    #[allow(unsafe_code)]
    unsafe {
        unzip_sse2(lo, hi, values, carry)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn unzip_simd(_lo: &[u8], _hi: &[u8], _values: &mut [f32], _carry: &mut [u8; 2]) -> usize {
    0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn unzip_sse2(lo: &[u8], hi: &[u8], values: &mut [f32], carry: &mut [u8; 2]) -> usize {
    use std::arch::x86_64::*;
    let bias = _mm_set1_epi8(i8::MIN);
    let load = |b: &[u8]| {
        let mut w = [0_u64; 2];
        for (w, b) in w.iter_mut().zip(b.chunks_exact(8)) {
            *w = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
        _mm_xor_si128(_mm_set_epi64x(w[1] as i64, w[0] as i64), bias)
    };
    // Running byte sums of a 16-byte vector, plus a carry in every byte.
    let prefix = |mut x: __m128i, carry: __m128i| {
        x = _mm_add_epi8(x, _mm_slli_si128::<1>(x));
        x = _mm_add_epi8(x, _mm_slli_si128::<2>(x));
        x = _mm_add_epi8(x, _mm_slli_si128::<4>(x));
        x = _mm_add_epi8(x, _mm_slli_si128::<8>(x));
        _mm_add_epi8(x, carry)
    };
    // The last byte in every byte.
    let broadcast_last = |x: __m128i| {
        let words = _mm_unpackhi_epi8(x, x);
        _mm_shuffle_epi32::<0xFF>(_mm_shufflehi_epi16::<0xFF>(words))
    };
    let mut carry_lo = _mm_set1_epi8(carry[0] as i8);
    let mut carry_hi = _mm_set1_epi8(carry[1] as i8);
    let steps = values.len() / 8;
    for ((l, h), out) in lo
        .chunks_exact(16)
        .zip(hi.chunks_exact(16))
        .zip(values.chunks_exact_mut(8))
        .take(steps)
    {
        let x = prefix(load(l), carry_lo);
        let y = prefix(load(h), carry_hi);
        carry_lo = broadcast_last(x);
        carry_hi = broadcast_last(y);
        // Interleaving even and odd bytes gives the samples' bytes in order.
        let (a, b) = (_mm_unpacklo_epi8(x, y), _mm_unpackhi_epi8(x, y));
        let words = [
            _mm_cvtsi128_si64(a),
            _mm_cvtsi128_si64(_mm_unpackhi_epi64(a, a)),
            _mm_cvtsi128_si64(b),
            _mm_cvtsi128_si64(_mm_unpackhi_epi64(b, b)),
        ];
        for (pair, w) in out.chunks_exact_mut(2).zip(words) {
            pair[0] = f32::from_bits(w as u32);
            pair[1] = f32::from_bits((w as u64 >> 32) as u32);
        }
    }
    carry[0] = _mm_cvtsi128_si32(carry_lo) as u8;
    carry[1] = _mm_cvtsi128_si32(carry_hi) as u8;
    steps * 8
}

/// OpenEXR's ZIP preprocessing of `values` into `out`: little-endian bytes,
/// even bytes first then odd bytes, then deltas (`t[i] = s[i] - s[i-1] +
/// 128`).
pub(crate) fn zip_prepare(values: &[f32], split: &mut Vec<u8>, out: &mut Vec<u8>) {
    let n = values.len() * 4;
    let half = n / 2;
    split.resize(n, 0);
    let (lo, hi) = split.split_at_mut(half);
    for ((v, l), h) in values
        .iter()
        .zip(lo.chunks_exact_mut(2))
        .zip(hi.chunks_exact_mut(2))
    {
        let b = v.to_le_bytes();
        l[0] = b[0];
        l[1] = b[2];
        h[0] = b[1];
        h[1] = b[3];
    }
    out.resize(n, 0);
    if n == 0 {
        return;
    }
    out[0] = split[0];
    for ((o, &cur), &prev) in out[1..].iter_mut().zip(&split[1..]).zip(&split[..n - 1]) {
        *o = cur.wrapping_sub(prev) ^ 0x80;
    }
}

/// Checks a partial completely: OpenEXR magic, header structure, 32-bit
/// float channels, the frame's size and channel set, and that every pixel
/// block is present and decodes. [`crate::Accumulator::fold`] does all of this
/// itself before it commits; this is for callers that want the check alone.
pub fn validate_partial(path: &Path, expected: &Layout) -> Result<()> {
    let partial = Partial::open(path)?;
    partial.check_matches(expected)?;
    partial.decode_all(|_, _| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::{unzip_values, zip_prepare};

    /// The straightforward version of the ZIP preprocessing, as in OpenEXR.
    fn reference_unzip(t: &[u8]) -> Vec<f32> {
        let mut s = t.to_vec();
        for i in 1..s.len() {
            s[i] = s[i - 1].wrapping_add(s[i]).wrapping_sub(128);
        }
        let half = s.len() / 2;
        let mut bytes = Vec::with_capacity(s.len());
        for k in 0..half {
            bytes.push(s[k]);
            bytes.push(s[half + k]);
        }
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn zip_preprocessing_round_trips_and_matches_openexr() {
        let mut state = 0x1234_5678_u32;
        for count in [
            0_usize, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 64, 1001,
        ] {
            let t: Vec<u8> = (0..count * 4)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let mut values = vec![0.0_f32; count];
            unzip_values(&t, &mut values);
            let expected = reference_unzip(&t);
            assert_eq!(
                values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{count} values"
            );
            let (mut split, mut back) = (Vec::new(), Vec::new());
            zip_prepare(&values, &mut split, &mut back);
            assert_eq!(back, t, "{count} values");
        }
    }
}
