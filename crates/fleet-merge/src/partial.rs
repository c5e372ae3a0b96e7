//! Reading one partial render: structural checks on the header, comparison with
//! the frame's layout, and streaming its pixels block by block.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use exr::block::reader::{ChunksReader, Reader};
use exr::block::UncompressedBlock;
use exr::meta::attribute::SampleType;
use exr::meta::header::Header;
use exr::meta::BlockDescription;

use crate::error::{MergeError, Result};
use crate::layout::Layout;

/// An opened partial whose header passed the structural checks.
pub(crate) struct Partial {
    path: PathBuf,
    reader: Reader<BufReader<File>>,
}

/// Rows `y0 .. y0 + rows` of a partial: for each row, for each channel in file
/// order, `width` values.
pub(crate) struct Rows<'a> {
    pub y0: usize,
    pub rows: usize,
    pub values: &'a [f32],
}

impl Partial {
    /// Opens `path` and checks that it is a single-part, flat, scanline
    /// OpenEXR file whose channels all hold 32-bit floats at full resolution.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |e| MergeError::io(path, e);
        let mut file = File::open(path).map_err(io)?;
        let mut magic = [0_u8; 4];
        match file.read_exact(&mut magic) {
            Ok(()) if magic == exr::meta::magic_number::BYTES => {}
            Ok(()) => return Err(MergeError::NotExr { path: path.to_path_buf() }),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(MergeError::NotExr { path: path.to_path_buf() })
            }
            Err(e) => return Err(io(e)),
        }
        let file = File::open(path).map_err(io)?;
        let reader = exr::block::read(BufReader::with_capacity(1 << 20, file), false)
            .map_err(|e| MergeError::from_exr(path, e))?;
        let partial = Self { path: path.to_path_buf(), reader };
        partial.check_structure()?;
        Ok(partial)
    }

    fn unsupported(&self, detail: impl Into<String>) -> MergeError {
        MergeError::Unsupported { path: self.path.clone(), detail: detail.into() }
    }

    fn check_structure(&self) -> Result<()> {
        let headers = self.reader.headers();
        if headers.len() != 1 {
            return Err(self.unsupported(format!(
                "has {} parts; only single-part files can be merged",
                headers.len()
            )));
        }
        let header = &headers[0];
        if header.deep {
            return Err(self.unsupported("holds deep data; only flat images can be merged"));
        }
        if let BlockDescription::Tiles(_) = header.blocks {
            return Err(self.unsupported("is tiled; only scanline files can be merged"));
        }
        for channel in &header.channels.list {
            if channel.sample_type != SampleType::F32 {
                return Err(MergeError::NotFloat {
                    path: self.path.clone(),
                    channel: channel.name.to_string(),
                    found: match channel.sample_type {
                        SampleType::F16 => "16-bit float",
                        SampleType::U32 => "32-bit unsigned integer",
                        SampleType::F32 => "32-bit float",
                    },
                });
            }
            if channel.sampling.x() != 1 || channel.sampling.y() != 1 {
                return Err(self.unsupported(format!("subsamples channel `{}`", channel.name)));
            }
        }
        Ok(())
    }

    /// The (single) header.
    pub fn header(&self) -> &Header {
        &self.reader.headers()[0]
    }

    /// Consumes the partial, keeping its header.
    pub fn into_header(self) -> Header {
        self.reader.into_meta_data().headers.swap_remove(0)
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
                found: format!("{}x{} at ({}, {})", size.width(), size.height(), origin.x(), origin.y()),
                expected: format!(
                    "{}x{} at ({}, {})",
                    layout.width,
                    layout.height,
                    expected_origin.x(),
                    expected_origin.y()
                ),
            });
        }
        let names: Vec<String> = header.channels.list.iter().map(|c| c.name.to_string()).collect();
        for channel in &layout.channels {
            if !names.contains(&channel.name) {
                return Err(MergeError::MissingChannel { path: path(), channel: channel.name.clone() });
            }
        }
        for name in &names {
            if layout.channel_index(name).is_none() {
                return Err(MergeError::ExtraChannel { path: path(), channel: name.clone() });
            }
        }
        // OpenEXR keeps channel lists sorted, so equal sets mean equal order;
        // check anyway, since the block layout relies on it.
        if names.iter().zip(&layout.channels).any(|(a, b)| *a != b.name) {
            return Err(MergeError::Corrupt { path: path(), detail: "its channels are not in sorted order".to_owned() });
        }
        Ok(())
    }

    /// Decodes every pixel block (in parallel where the file is compressed)
    /// and hands each to `visit`, in whatever order blocks finish. Fails if a
    /// block is damaged, missing or present twice, or the file is truncated.
    pub fn for_each_block(self, mut visit: impl FnMut(Rows<'_>) -> Result<()>) -> Result<()> {
        let path = self.path;
        let header = self.reader.headers()[0].clone();
        let height = header.layer_size.height();
        let lines_per_block = header.compression.scan_lines_per_block();
        let mut seen = vec![false; height.div_ceil(lines_per_block)];
        let chunks = self.reader.all_chunks(false).map_err(|e| MergeError::from_exr(&path, e))?;
        let expected_chunks = chunks.expected_chunk_count();
        let blocks: Box<dyn Iterator<Item = exr::error::Result<UncompressedBlock>>> =
            match chunks.parallel_decompressor(false) {
                Ok(parallel) => Box::new(parallel),
                Err(chunks) => Box::new(chunks.sequential_decompressor(false)),
            };
        let mut values: Vec<f32> = Vec::new();
        let mut count = 0_usize;
        for block in blocks {
            let block = block.map_err(|e| MergeError::from_exr(&path, e))?;
            let y0 = block.index.pixel_position.y();
            let rows = block.index.pixel_size.height();
            let slot = y0 / lines_per_block;
            if y0 % lines_per_block != 0 || slot >= seen.len() || seen[slot] {
                return Err(MergeError::Corrupt {
                    path,
                    detail: format!("the pixel block at line {y0} is misplaced or repeated"),
                });
            }
            seen[slot] = true;
            count += 1;
            values.clear();
            values.extend(
                block.data.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            );
            visit(Rows { y0, rows, values: &values })?;
        }
        if count != expected_chunks || seen.iter().any(|s| !s) {
            return Err(MergeError::Truncated { path });
        }
        Ok(())
    }
}

/// Checks a partial completely before merging: OpenEXR magic, header
/// structure, 32-bit float channels, the frame's size and channel set, and
/// that every pixel block is present and decodes.
pub fn validate_partial(path: &Path, expected: &Layout) -> Result<()> {
    let partial = Partial::open(path)?;
    partial.check_matches(expected)?;
    partial.for_each_block(|_| Ok(()))
}
