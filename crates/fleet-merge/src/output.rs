//! Writing the merged frame: a multilayer OpenEXR Blender reads, and an 8-bit
//! sRGB PNG preview of the Combined pass. Both finish the sums and compress
//! in parallel, a window of blocks at a time.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use exr::block::chunk::{Chunk, CompressedBlock, CompressedScanLineBlock};
use exr::block::writer::ChunksWriter;
use exr::block::{BlockIndex, UncompressedBlock};
use exr::compression::Compression;
use exr::math::Vec2;
use exr::meta::Headers;
use rayon::prelude::*;

use crate::accumulator::Accumulator;
use crate::error::{MergeError, Result};
use crate::layout::{Layout, MergeRule};
use crate::partial::zip_prepare;
use crate::state::{self, Acc};

/// libdeflate level for ZIP output. On rendered frames, whose noise is what
/// takes the bytes, level 1 gives the same size as levels 4 to 6 (and as the
/// `exr` crate's own ZIP) in a third less time; see BENCH.md.
const ZIP_LEVEL: i32 = 1;

/// Lossless codecs the merged OpenEXR file can be written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExrCodec {
    /// ZIP over blocks of 16 scanlines: what Blender writes by default.
    #[default]
    Zip,
    /// ZIP over single scanlines.
    Zips,
    /// Run-length encoding: fast, compresses flat areas only.
    Rle,
    /// Wavelet + Huffman: good on noisy renders, slower to write.
    Piz,
    /// No compression: fastest, largest.
    None,
}

impl ExrCodec {
    fn compression(self) -> Compression {
        match self {
            Self::Zip => Compression::ZIP16,
            Self::Zips => Compression::ZIP1,
            Self::Rle => Compression::RLE,
            Self::Piz => Compression::PIZ,
            Self::None => Compression::Uncompressed,
        }
    }
}

/// What every block of one output file needs.
struct Job<'a> {
    layout: &'a Layout,
    headers: &'a Headers,
    triples: &'a [[usize; 3]],
    sums: &'a [Acc],
    total: Acc,
    codec: ExrCodec,
    rows_per_block: usize,
}

/// Per-thread buffers for encoding blocks.
struct Encoder {
    compressor: Option<libdeflater::Compressor>,
    values: Vec<f32>,
    split: Vec<u8>,
    prepared: Vec<u8>,
    compressed: Vec<u8>,
}

impl Encoder {
    /// Runs `f` with this thread's encoder, which lives as long as the thread
    /// (rayon's workers), so blocks do not allocate.
    fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R {
        thread_local! {
            static ENCODER: std::cell::RefCell<Option<Encoder>> = const { std::cell::RefCell::new(None) };
        }
        let new = || Self {
            compressor: None,
            values: Vec::new(),
            split: Vec::new(),
            prepared: Vec::new(),
            compressed: Vec::new(),
        };
        ENCODER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => f(slot.get_or_insert_with(new)),
            Err(_) => f(&mut new()),
        })
    }

    /// Finishes and compresses block `index` (in increasing y).
    fn encode(&mut self, job: &Job<'_>, index: usize) -> Result<Chunk> {
        let layout = job.layout;
        let (width, height) = (layout.width as usize, layout.height as usize);
        let row_len = width * layout.channels.len();
        let y0 = index * job.rows_per_block;
        let rows = job.rows_per_block.min(height - y0);
        let state = &job.sums[y0 * row_len..(y0 + rows) * row_len];
        state::finish_rows(
            layout,
            job.triples,
            job.total,
            state,
            None,
            &mut self.values,
        );
        let raw = |values: &[f32]| {
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let data = match job.codec {
            ExrCodec::Zip | ExrCodec::Zips => {
                let compressor = self.compressor.get_or_insert_with(|| {
                    libdeflater::Compressor::new(
                        libdeflater::CompressionLvl::new(ZIP_LEVEL).unwrap_or_default(),
                    )
                });
                zip_prepare(&self.values, &mut self.split, &mut self.prepared);
                // One byte less than raw: if it does not fit, store raw, as
                // OpenEXR does.
                self.compressed
                    .resize(self.prepared.len().saturating_sub(1), 0);
                match compressor.zlib_compress(&self.prepared, &mut self.compressed) {
                    Ok(n) if n > 0 => self.compressed[..n].to_vec(),
                    _ => raw(&self.values),
                }
            }
            ExrCodec::None => raw(&self.values),
            ExrCodec::Rle | ExrCodec::Piz => {
                let block = UncompressedBlock {
                    index: BlockIndex {
                        layer: 0,
                        pixel_position: Vec2(0, y0),
                        pixel_size: Vec2(width, rows),
                        level: Vec2(0, 0),
                    },
                    data: self.values.iter().flat_map(|v| v.to_ne_bytes()).collect(),
                };
                return block.compress_to_chunk(job.headers).map_err(|e| {
                    MergeError::Invalid(format!("a block cannot be compressed: {e}"))
                });
            }
        };
        let origin = job.headers[0].own_attributes.layer_position.y();
        Ok(Chunk {
            layer_index: 0,
            compressed_block: CompressedBlock::ScanLine(CompressedScanLineBlock {
                y_coordinate: origin + y0 as i32,
                compressed_pixels_le: data,
            }),
        })
    }
}

/// `<out>.partial` beside `out`: written first, then renamed over `out`.
fn temp_beside(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// Syncs `tmp`, renames it to `out` and syncs the directory, so that `out`
/// survives a crash once this returns (the caller may then discard the
/// accumulator).
fn finish_file(tmp: &Path, out: &Path, file: File) -> Result<()> {
    file.sync_all().map_err(|e| MergeError::io(tmp, e))?;
    drop(file);
    fs::rename(tmp, out).map_err(|e| MergeError::io(out, e))?;
    #[cfg(unix)]
    {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| MergeError::io(parent, e))?;
    }
    Ok(())
}

impl Accumulator {
    /// Writes the merged frame as a multilayer OpenEXR file with ZIP
    /// compression (see [`Accumulator::write_exr_with`]).
    pub fn write_exr(&self, out: &Path) -> Result<()> {
        self.write_exr_with(out, ExrCodec::Zip)
    }

    /// Writes the merged frame as a multilayer OpenEXR file: 32-bit float
    /// channels, the partials' header attributes (`BlenderMultiChannel`,
    /// ...) with every `cycles.<layer>.samples` set to the samples folded.
    /// The file appears under `out` only once complete and synced (its
    /// directory entry too).
    pub fn write_exr_with(&self, out: &Path, codec: ExrCodec) -> Result<()> {
        let sums = self.sums()?;
        let layout = self.layout();
        let triples = layout.light_triples();
        let compression = codec.compression();
        let headers = smallvec_of(layout.output_header(compression, self.total_samples()));
        let job = Job {
            layout,
            headers: &headers,
            triples: &triples,
            sums,
            total: self.total_samples() as Acc,
            codec,
            rows_per_block: compression.scan_lines_per_block(),
        };
        let blocks = (layout.height as usize).div_ceil(job.rows_per_block);
        let tmp = temp_beside(out);
        let file = File::create(&tmp).map_err(|e| MergeError::io(&tmp, e))?;
        let hint = file.try_clone().map_err(|e| MergeError::io(&tmp, e))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let mut failure: Option<MergeError> = None;
        let written = exr::block::write(&mut writer, headers.clone(), true, |_meta, chunks| {
            debug_assert_eq!(chunks.total_chunks_count(), blocks);
            // Enough blocks in flight to keep every thread busy, few enough
            // to bound memory.
            let window = rayon::current_num_threads() * 4;
            for start in (0..blocks).step_by(window) {
                let end = (start + window).min(blocks);
                let encoded: Vec<Result<Chunk>> = (start..end)
                    .into_par_iter()
                    .map(|i| Encoder::with(|e| e.encode(&job, i)))
                    .collect();
                for (i, chunk) in (start..end).zip(encoded) {
                    match chunk {
                        Ok(chunk) => chunks.write_chunk(i, chunk)?,
                        Err(e) => {
                            failure = Some(e);
                            return Err(exr::error::Error::Aborted);
                        }
                    }
                }
                // Let the disk work while the next window is compressed, so
                // that the final sync has little left to wait for.
                crate::sys::start_writeback(&hint);
            }
            Ok(())
        });
        if let Some(e) = failure {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(match e {
                exr::error::Error::Io(e) => MergeError::io(&tmp, e),
                e => MergeError::Invalid(format!("`{}` cannot be written: {e}", out.display())),
            });
        }
        writer.flush().map_err(|e| MergeError::io(&tmp, e))?;
        let file = writer
            .into_inner()
            .map_err(|e| MergeError::io(&tmp, e.into_error()))?;
        finish_file(&tmp, out, file)
    }

    /// Writes an 8-bit sRGB PNG of the first view layer's Combined pass
    /// (RGBA when it has alpha): premultiplied values are averaged when
    /// downscaling, alpha is divided out, then the linear values go through
    /// the sRGB transfer function and are clamped to [0, 1]. With
    /// `max_side`, the image is box-filtered down so neither side exceeds it.
    pub fn write_png(&self, out: &Path, max_side: Option<u32>) -> Result<()> {
        let layout = self.layout();
        let ([r, g, b], a) = layout.combined_channels().ok_or_else(|| {
            MergeError::Invalid(format!(
                "the frame has no Combined pass to preview in `{}`",
                out.display()
            ))
        })?;
        let sums = self.sums()?;
        let (w, h) = (layout.width as usize, layout.height as usize);
        let row_len = w * layout.channels.len();
        let longest = w.max(h);
        let limit = max_side.map_or(longest, |m| (m as usize).max(1));
        let (ow, oh) = if longest > limit {
            (
                (w * limit).div_ceil(longest).max(1),
                (h * limit).div_ceil(longest).max(1),
            )
        } else {
            (w, h)
        };
        let picked: Vec<usize> = [Some(r), Some(g), Some(b), a]
            .into_iter()
            .flatten()
            .collect();
        let mut wanted = vec![false; layout.channels.len()];
        for &c in &picked {
            wanted[c] = true;
            if let MergeRule::LightOverColor { color } = layout.channels[c].rule {
                wanted[color] = true;
            }
        }
        let triples = layout.light_triples();
        let total = self.total_samples() as Acc;
        let channels = if a.is_some() { 4 } else { 3 };
        // Output row `oy` averages the input rows `y` with `y * oh / h == oy`.
        let pixel_rows: Vec<Vec<u8>> = (0..oh)
            .into_par_iter()
            .map_init(Vec::new, |values, oy| {
                let mut sums_row = vec![0.0_f64; ow * 4];
                let mut counts = vec![0_u32; ow];
                for y in (oy * h).div_ceil(oh)..((oy + 1) * h).div_ceil(oh).min(h) {
                    let state = &sums[y * row_len..(y + 1) * row_len];
                    state::finish_rows(layout, &triples, total, state, Some(&wanted), values);
                    for x in 0..w {
                        let o = x * ow / w;
                        let px = |c: usize| f64::from(values[c * w + x]);
                        sums_row[o * 4] += px(r);
                        sums_row[o * 4 + 1] += px(g);
                        sums_row[o * 4 + 2] += px(b);
                        sums_row[o * 4 + 3] += a.map_or(1.0, px);
                        counts[o] += 1;
                    }
                }
                let mut pixels = Vec::with_capacity(ow * channels);
                for (o, &n) in counts.iter().enumerate() {
                    let n = f64::from(n.max(1));
                    let alpha = sums_row[o * 4 + 3] / n;
                    for c in 0..3 {
                        let premultiplied = sums_row[o * 4 + c] / n;
                        let straight = if a.is_some() && alpha > 0.0 {
                            premultiplied / alpha
                        } else {
                            premultiplied
                        };
                        pixels.push(to_srgb8(straight));
                    }
                    if a.is_some() {
                        pixels.push((alpha.clamp(0.0, 1.0) * 255.0).round() as u8);
                    }
                }
                pixels
            })
            .collect();
        let pixels = pixel_rows.concat();
        let tmp = temp_beside(out);
        let file = File::create(&tmp).map_err(|e| MergeError::io(&tmp, e))?;
        let mut buffered = BufWriter::new(file);
        {
            let mut encoder = png::Encoder::new(&mut buffered, ow as u32, oh as u32);
            encoder.set_color(if a.is_some() {
                png::ColorType::Rgba
            } else {
                png::ColorType::Rgb
            });
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_source_srgb(png::SrgbRenderingIntent::Perceptual);
            encoder.set_compression(png::Compression::Fast);
            let png_err = |e: png::EncodingError| {
                MergeError::Invalid(format!("`{}` cannot be written: {e}", out.display()))
            };
            let mut png_writer = encoder.write_header().map_err(png_err)?;
            png_writer.write_image_data(&pixels).map_err(png_err)?;
            png_writer.finish().map_err(png_err)?;
        }
        let file = buffered
            .into_inner()
            .map_err(|e| MergeError::io(&tmp, e.into_error()))?;
        finish_file(&tmp, out, file)
    }
}

fn smallvec_of(header: exr::meta::header::Header) -> exr::meta::Headers {
    let mut headers = exr::meta::Headers::new();
    headers.push(header);
    headers
}

/// Linear value to 8-bit sRGB, clamped.
pub(crate) fn to_srgb8(linear: f64) -> u8 {
    let c = if linear.is_nan() {
        0.0
    } else {
        linear.clamp(0.0, 1.0)
    };
    let encoded = if c <= 0.003_130_8 {
        12.92 * c
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    };
    (encoded * 255.0).round() as u8
}
