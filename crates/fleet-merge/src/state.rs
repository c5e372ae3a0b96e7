//! The accumulator's pixel state on disk and the arithmetic of folding and
//! finishing it.
//!
//! A state file holds one value per channel per pixel, laid out exactly like
//! an uncompressed OpenEXR scanline: row after row, and within a row channel
//! after channel (file order), `width` values each. Any block of rows of a
//! partial therefore maps to one contiguous byte range of the state file,
//! whatever block size the partial's compression uses. Values are
//! little-endian [`Acc`]:
//! - `WeightedMean`: `Σ w·v`;
//! - `LightOverColor`: `Σ w·L·C` (the denominator `Σ w·C` is the colour
//!   channel's own sum);
//! - `Min`, `FromSampleZero`: the value itself.

use std::fs::File;
use std::path::Path;

use crate::error::{MergeError, Result};
use crate::layout::{Layout, MergeRule};

/// The accumulator's number type. `f64` keeps `Σ w·v` exact to well below the
/// partials' own float32 rounding for any number of partials; see BENCH.md for
/// the cost compared with `f32`.
pub(crate) type Acc = f64;

/// Bytes of one [`Acc`] on disk.
pub(crate) const ACC_BYTES: usize = std::mem::size_of::<Acc>();

/// Geometry of a state file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

impl Shape {
    pub fn of(layout: &Layout) -> Self {
        Self { width: layout.width as usize, height: layout.height as usize, channels: layout.channels.len() }
    }

    /// Values in one row (all channels).
    pub fn row_values(self) -> usize {
        self.width * self.channels
    }

    /// Size of the whole state file in bytes.
    pub fn file_bytes(self) -> u64 {
        (self.row_values() * self.height * ACC_BYTES) as u64
    }

    fn offset(self, y: usize) -> u64 {
        (y * self.row_values() * ACC_BYTES) as u64
    }
}

/// Reads rows `y0 .. y0 + rows` of a state file into `values`.
pub(crate) fn read_rows(
    file: &File,
    path: &Path,
    shape: Shape,
    y0: usize,
    rows: usize,
    bytes: &mut Vec<u8>,
    values: &mut Vec<Acc>,
) -> Result<()> {
    bytes.resize(rows * shape.row_values() * ACC_BYTES, 0);
    read_at(file, bytes, shape.offset(y0)).map_err(|e| MergeError::io(path, e))?;
    values.clear();
    values.extend(bytes.chunks_exact(ACC_BYTES).map(|b| {
        let mut raw = [0_u8; ACC_BYTES];
        raw.copy_from_slice(b);
        Acc::from_le_bytes(raw)
    }));
    Ok(())
}

/// Writes `values` as rows starting at `y0` of a state file.
pub(crate) fn write_rows(
    file: &File,
    path: &Path,
    shape: Shape,
    y0: usize,
    values: &[Acc],
    bytes: &mut Vec<u8>,
) -> Result<()> {
    bytes.resize(values.len() * ACC_BYTES, 0);
    for (b, v) in bytes.chunks_exact_mut(ACC_BYTES).zip(values) {
        b.copy_from_slice(&v.to_le_bytes());
    }
    write_at(file, bytes, shape.offset(y0)).map_err(|e| MergeError::io(path, e))
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

/// What one fold does besides adding weighted values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FoldParams {
    /// Samples the partial rendered.
    pub weight: Acc,
    /// Whether `FromSampleZero` channels take this partial's values.
    pub take_sample_zero: bool,
}

/// Folds decoded partial rows into the state: `prev` holds the state of the
/// same rows before the fold (`None` for the first fold), `out` receives it
/// after. All three use the same layout (see the module docs).
pub(crate) fn fold_rows(
    rules: &[MergeRule],
    width: usize,
    values: &[f32],
    prev: Option<&[Acc]>,
    out: &mut Vec<Acc>,
    params: FoldParams,
) {
    out.clear();
    out.resize(values.len(), 0.0);
    let w = params.weight;
    let row_len = rules.len() * width;
    for (row, (vrow, orow)) in values.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)).enumerate() {
        let prow = prev.map(|p| &p[row * row_len..(row + 1) * row_len]);
        for (c, rule) in rules.iter().enumerate() {
            let span = c * width..(c + 1) * width;
            let v = &vrow[span.clone()];
            let o = &mut orow[span.clone()];
            let p = prow.map(|p| &p[span]);
            match (*rule, p) {
                (MergeRule::WeightedMean, None) => {
                    o.iter_mut().zip(v).for_each(|(o, &v)| *o = w * Acc::from(v));
                }
                (MergeRule::WeightedMean, Some(p)) => {
                    o.iter_mut().zip(v).zip(p).for_each(|((o, &v), &p)| *o = p + w * Acc::from(v));
                }
                (MergeRule::LightOverColor { color }, p) => {
                    let col = &vrow[color * width..(color + 1) * width];
                    for x in 0..width {
                        let add = w * Acc::from(v[x]) * Acc::from(col[x]);
                        o[x] = p.map_or(add, |p| p[x] + add);
                    }
                }
                (MergeRule::Min, None) | (MergeRule::FromSampleZero, None) => {
                    o.iter_mut().zip(v).for_each(|(o, &v)| *o = Acc::from(v));
                }
                (MergeRule::Min, Some(p)) => {
                    o.iter_mut().zip(v).zip(p).for_each(|((o, &v), &p)| *o = p.min(Acc::from(v)));
                }
                (MergeRule::FromSampleZero, Some(p)) => {
                    if params.take_sample_zero {
                        o.iter_mut().zip(v).for_each(|(o, &v)| *o = Acc::from(v));
                    } else {
                        o.copy_from_slice(p);
                    }
                }
            }
        }
    }
}

/// Turns state rows into final float values, in the same layout. Channels not
/// in `wanted` are left at zero (pass `None` to finish all of them).
pub(crate) fn finish_rows(
    layout: &Layout,
    triples: &[[usize; 3]],
    total_weight: Acc,
    state: &[Acc],
    wanted: Option<&[bool]>,
    out: &mut Vec<f32>,
) {
    let width = layout.width as usize;
    let row_len = layout.channels.len() * width;
    out.clear();
    out.resize(state.len(), 0.0);
    for (srow, orow) in state.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        for (c, channel) in layout.channels.iter().enumerate() {
            if wanted.is_some_and(|w| !w[c]) {
                continue;
            }
            let s = &srow[c * width..(c + 1) * width];
            let o = &mut orow[c * width..(c + 1) * width];
            match channel.rule {
                MergeRule::WeightedMean => {
                    // Divide rather than multiply by the inverse: the exact
                    // quotient keeps a merge of identical partials bit-exact.
                    o.iter_mut().zip(s).for_each(|(o, &s)| *o = (s / total_weight) as f32);
                }
                MergeRule::LightOverColor { color } => {
                    let d = &srow[color * width..(color + 1) * width];
                    o.iter_mut().zip(s).zip(d).for_each(|((o, &n), &d)| {
                        *o = if d == 0.0 { 0.0 } else { (n / d) as f32 };
                    });
                }
                MergeRule::Min | MergeRule::FromSampleZero => {
                    o.iter_mut().zip(s).for_each(|(o, &s)| *o = s as f32);
                }
            }
        }
        for &[r, g, b] in triples {
            if wanted.is_some_and(|w| !(w[r] && w[g] && w[b])) {
                continue;
            }
            let color_of = |c: usize| match layout.channels[c].rule {
                MergeRule::LightOverColor { color } => color,
                _ => c,
            };
            let (cr, cg, cb) = (color_of(r), color_of(g), color_of(b));
            for x in 0..width {
                let zero = [srow[cr * width + x] == 0.0, srow[cg * width + x] == 0.0, srow[cb * width + x] == 0.0];
                if zero.iter().any(|z| *z) {
                    let mut rgb = [orow[r * width + x], orow[g * width + x], orow[b * width + x]];
                    even_color(&mut rgb, zero);
                    orow[r * width + x] = rgb[0];
                    orow[g * width + x] = rgb[1];
                    orow[b * width + x] = rgb[2];
                }
            }
        }
    }
}

/// Cycles' "even colour" division fix-up: a component whose colour is zero
/// takes the other components' value (or their mean), so that light passes
/// stay grey where a surface reflects nothing in some component.
fn even_color(rgb: &mut [f32; 3], zero: [bool; 3]) {
    let [x, y, z] = *rgb;
    *rgb = match zero {
        [true, true, _] => [z, z, z],
        [true, false, true] => [y, y, y],
        [true, false, false] => [0.5 * (y + z), y, z],
        [false, true, true] => [x, x, x],
        [false, true, false] => [x, 0.5 * (x + z), z],
        [false, false, true] => [x, y, 0.5 * (x + y)],
        [false, false, false] => [x, y, z],
    };
}

#[cfg(test)]
mod tests {
    use super::even_color;

    #[test]
    fn even_color_matches_cycles() {
        let mut a = [0.0, 2.0, 4.0];
        even_color(&mut a, [true, false, false]);
        assert_eq!(a, [3.0, 2.0, 4.0]);
        let mut b = [0.0, 0.0, 4.0];
        even_color(&mut b, [true, true, false]);
        assert_eq!(b, [4.0, 4.0, 4.0]);
        let mut c = [1.0, 0.0, 0.0];
        even_color(&mut c, [false, true, true]);
        assert_eq!(c, [1.0, 1.0, 1.0]);
        let mut d = [0.0, 0.0, 0.0];
        even_color(&mut d, [true, true, true]);
        assert_eq!(d, [0.0, 0.0, 0.0]);
    }
}
