//! The arithmetic of folding partials into the running sums and of turning
//! the sums into the merged image.
//!
//! The sums hold one value per channel per pixel, laid out exactly like an
//! uncompressed OpenEXR scanline: row after row, and within a row channel
//! after channel (file order), `width` values each. Any block of rows of a
//! partial therefore maps to one contiguous range of the sums, whatever block
//! size the partial's compression uses, and blocks can be folded in parallel.
//! Values are [`Acc`]:
//! - `WeightedMean`: `Σ w·v`;
//! - `LightOverColor`: `Σ w·L·C` (the denominator `Σ w·C` is the colour
//!   channel's own sum);
//! - `Min`, `FromSampleZero`: the value itself.

use crate::layout::{Layout, MergeRule};

/// The accumulator's number type. With `f64`, each `w·v` (a float32 times a
/// sample count) is exact and the sums of any realistic number of partials
/// carry far more precision than the partials themselves, so the merge does
/// not depend on the order of the partials beyond the last bit, and a merge
/// of identical partials gives them back bit for bit.
pub(crate) type Acc = f64;

/// What one fold does besides adding weighted values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FoldParams {
    /// Samples the partial rendered.
    pub weight: Acc,
    /// Whether this is the first partial: the sums are overwritten, not added to.
    pub first: bool,
    /// Whether `FromSampleZero` channels take this partial's values.
    pub take_sample_zero: bool,
}

/// Folds decoded rows of a partial (`values`) into the same rows of the sums.
pub(crate) fn fold_rows(
    rules: &[MergeRule],
    width: usize,
    values: &[f32],
    sums: &mut [Acc],
    params: FoldParams,
) {
    debug_assert_eq!(values.len(), sums.len());
    let w = params.weight;
    let row_len = rules.len() * width;
    for (vrow, srow) in values
        .chunks_exact(row_len)
        .zip(sums.chunks_exact_mut(row_len))
    {
        for (c, rule) in rules.iter().enumerate() {
            let v = &vrow[c * width..(c + 1) * width];
            let s = &mut srow[c * width..(c + 1) * width];
            match *rule {
                MergeRule::WeightedMean if params.first => {
                    s.iter_mut()
                        .zip(v)
                        .for_each(|(s, &v)| *s = w * Acc::from(v));
                }
                MergeRule::WeightedMean => {
                    s.iter_mut()
                        .zip(v)
                        .for_each(|(s, &v)| *s += w * Acc::from(v));
                }
                MergeRule::LightOverColor { color } => {
                    let col = &vrow[color * width..(color + 1) * width];
                    if params.first {
                        s.iter_mut()
                            .zip(v)
                            .zip(col)
                            .for_each(|((s, &v), &c)| *s = w * Acc::from(v) * Acc::from(c));
                    } else {
                        s.iter_mut()
                            .zip(v)
                            .zip(col)
                            .for_each(|((s, &v), &c)| *s += w * Acc::from(v) * Acc::from(c));
                    }
                }
                MergeRule::Min if params.first => {
                    s.iter_mut().zip(v).for_each(|(s, &v)| *s = Acc::from(v));
                }
                MergeRule::Min => {
                    s.iter_mut()
                        .zip(v)
                        .for_each(|(s, &v)| *s = s.min(Acc::from(v)));
                }
                MergeRule::FromSampleZero => {
                    if params.first || params.take_sample_zero {
                        s.iter_mut().zip(v).for_each(|(s, &v)| *s = Acc::from(v));
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
    for (srow, orow) in state
        .chunks_exact(row_len)
        .zip(out.chunks_exact_mut(row_len))
    {
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
                    o.iter_mut()
                        .zip(s)
                        .for_each(|(o, &s)| *o = (s / total_weight) as f32);
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
                let zero = [
                    srow[cr * width + x] == 0.0,
                    srow[cg * width + x] == 0.0,
                    srow[cb * width + x] == 0.0,
                ];
                if zero.iter().any(|z| *z) {
                    let mut rgb = [
                        orow[r * width + x],
                        orow[g * width + x],
                        orow[b * width + x],
                    ];
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
