//! Writing the merged frame: a multilayer OpenEXR Blender reads, and an 8-bit
//! sRGB PNG preview of the Combined pass.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use exr::block::writer::{ChunksWriter, ParallelBlocksCompressor, SequentialBlocksCompressor};
use exr::block::UncompressedBlock;
use exr::compression::Compression;

use crate::accumulator::Accumulator;
use crate::error::{MergeError, Result};
use crate::layout::MergeRule;
use crate::state::{self, Acc, Shape};

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

/// `<out>.partial` beside `out`: written first, then renamed over `out`.
fn temp_beside(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

fn finish_file(tmp: &Path, out: &Path, file: File) -> Result<()> {
    file.sync_all().map_err(|e| MergeError::io(tmp, e))?;
    drop(file);
    fs::rename(tmp, out).map_err(|e| MergeError::io(out, e))
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
    /// The file appears under `out` only once complete and synced.
    pub fn write_exr_with(&self, out: &Path, codec: ExrCodec) -> Result<()> {
        let (state_file, state_path) = self.current_state()?;
        let layout = self.layout();
        let shape = Shape::of(layout);
        let triples = layout.light_triples();
        let total = self.total_samples() as Acc;
        let header = layout.output_header(codec.compression(), self.total_samples());
        let tmp = temp_beside(out);
        let file = File::create(&tmp).map_err(|e| MergeError::io(&tmp, e))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let mut failure: Option<MergeError> = None;
        let written = exr::block::write(&mut writer, smallvec_of(header), true, |meta, chunks| {
            let blocks: Vec<_> = meta.enumerate_ordered_header_block_indices().collect();
            let (mut bytes, mut acc, mut values) = (Vec::new(), Vec::new(), Vec::new());
            let mut make_block = |index: exr::block::BlockIndex| -> Result<UncompressedBlock> {
                let (y0, rows) = (index.pixel_position.y(), index.pixel_size.height());
                state::read_rows(&state_file, &state_path, shape, y0, rows, &mut bytes, &mut acc)?;
                state::finish_rows(layout, &triples, total, &acc, None, &mut values);
                let data = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
                Ok(UncompressedBlock { index, data })
            };
            let total_chunks = chunks.total_chunks_count();
            debug_assert_eq!(total_chunks, blocks.len());
            if let Some(mut parallel) = ParallelBlocksCompressor::new(&meta, chunks) {
                for (i, index) in blocks {
                    match make_block(index) {
                        Ok(block) => parallel.add_block_to_compression_queue(i, block)?,
                        Err(e) => {
                            failure = Some(e);
                            return Err(exr::error::Error::Aborted);
                        }
                    }
                }
            } else {
                let mut sequential = SequentialBlocksCompressor::new(&meta, chunks);
                for (i, index) in blocks {
                    match make_block(index) {
                        Ok(block) => sequential.compress_block(i, block)?,
                        Err(e) => {
                            failure = Some(e);
                            return Err(exr::error::Error::Aborted);
                        }
                    }
                }
            }
            Ok(())
        });
        if let Some(e) = failure {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(MergeError::Invalid(format!("`{}` cannot be written: {e}", out.display())));
        }
        writer.flush().map_err(|e| MergeError::io(&tmp, e))?;
        let file = writer.into_inner().map_err(|e| MergeError::io(&tmp, e.into_error()))?;
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
            MergeError::Invalid(format!("the frame has no Combined pass to preview in `{}`", out.display()))
        })?;
        let (state_file, state_path) = self.current_state()?;
        let shape = Shape::of(layout);
        let (w, h) = (shape.width, shape.height);
        let longest = w.max(h);
        let limit = max_side.map_or(longest, |m| (m as usize).max(1));
        let (ow, oh) = if longest > limit {
            ((w * limit).div_ceil(longest).max(1), (h * limit).div_ceil(longest).max(1))
        } else {
            (w, h)
        };
        let picked: Vec<usize> = [Some(r), Some(g), Some(b), a].into_iter().flatten().collect();
        let mut wanted = vec![false; layout.channels.len()];
        for &c in &picked {
            wanted[c] = true;
            if let MergeRule::LightOverColor { color } = layout.channels[c].rule {
                wanted[color] = true;
            }
        }
        let triples = layout.light_triples();
        let total = self.total_samples() as Acc;
        let mut sums = vec![0.0_f64; ow * oh * 4];
        let mut counts = vec![0_u32; ow * oh];
        let (mut bytes, mut acc, mut values) = (Vec::new(), Vec::new(), Vec::new());
        const ROWS: usize = 16;
        for y0 in (0..h).step_by(ROWS) {
            let rows = ROWS.min(h - y0);
            state::read_rows(&state_file, &state_path, shape, y0, rows, &mut bytes, &mut acc)?;
            state::finish_rows(layout, &triples, total, &acc, Some(&wanted), &mut values);
            for row in 0..rows {
                let oy = (y0 + row) * oh / h;
                let base = row * shape.row_values();
                for x in 0..w {
                    let o = oy * ow + x * ow / w;
                    let px = |c: usize| f64::from(values[base + c * w + x]);
                    sums[o * 4] += px(r);
                    sums[o * 4 + 1] += px(g);
                    sums[o * 4 + 2] += px(b);
                    sums[o * 4 + 3] += a.map_or(1.0, px);
                    counts[o] += 1;
                }
            }
        }
        let channels = if a.is_some() { 4 } else { 3 };
        let mut pixels = Vec::with_capacity(ow * oh * channels);
        for (o, &n) in counts.iter().enumerate() {
            let n = f64::from(n.max(1));
            let alpha = sums[o * 4 + 3] / n;
            for c in 0..3 {
                let premultiplied = sums[o * 4 + c] / n;
                let straight = if a.is_some() && alpha > 0.0 { premultiplied / alpha } else { premultiplied };
                pixels.push(to_srgb8(straight));
            }
            if a.is_some() {
                pixels.push((alpha.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        let tmp = temp_beside(out);
        let file = File::create(&tmp).map_err(|e| MergeError::io(&tmp, e))?;
        let mut buffered = BufWriter::new(file);
        {
            let mut encoder = png::Encoder::new(&mut buffered, ow as u32, oh as u32);
            encoder.set_color(if a.is_some() { png::ColorType::Rgba } else { png::ColorType::Rgb });
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_source_srgb(png::SrgbRenderingIntent::Perceptual);
            let png_err = |e: png::EncodingError| MergeError::Invalid(format!("`{}` cannot be written: {e}", out.display()));
            let mut png_writer = encoder.write_header().map_err(png_err)?;
            png_writer.write_image_data(&pixels).map_err(png_err)?;
            png_writer.finish().map_err(png_err)?;
        }
        let file = buffered.into_inner().map_err(|e| MergeError::io(&tmp, e.into_error()))?;
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
    let c = if linear.is_nan() { 0.0 } else { linear.clamp(0.0, 1.0) };
    let encoded = if c <= 0.003_130_8 { 12.92 * c } else { 1.055 * c.powf(1.0 / 2.4) - 0.055 };
    (encoded * 255.0).round() as u8
}
