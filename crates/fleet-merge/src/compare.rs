//! Channel-by-channel comparison of two OpenEXR files, for tests and
//! benchmarks: how far is a merged frame from a single render?
//!
//! Two relative measures are reported per channel:
//! - `max_rel`: `|a−b| / max(|a|, |b|, 1e-6)`, strict, dominated by values
//!   near zero;
//! - `max_rel_design`: `|a−b| / max(|a|, |b|, 0.1·peak)`, the project's
//!   acceptance rule, where `peak` is the channel's largest magnitude in
//!   either file, leaving out Depth's 1e10 "no hit" background.

use std::path::Path;

use crate::error::{MergeError, Result};
use crate::partial::Partial;

/// Values at or above this magnitude are "no hit" backgrounds (Depth holds
/// 1e10 where the camera ray hit nothing) and do not count towards a peak.
const BACKGROUND: f32 = 1.0e10;

/// How one channel differs between the two files.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelDiff {
    /// Channel name.
    pub name: String,
    /// Largest `|a−b|`.
    pub max_abs: f64,
    /// Largest `|a−b| / max(|a|, |b|, 1e-6)`.
    pub max_rel: f64,
    /// Largest `|a−b| / max(|a|, |b|, 0.1·peak)`.
    pub max_rel_design: f64,
    /// The channel's largest magnitude in either file (backgrounds left out).
    pub peak: f64,
    /// Pixels that differ at all.
    pub differing: usize,
    /// `(x, y)` of the pixel with the largest `max_rel_design`.
    pub worst_pixel: (usize, usize),
}

/// Per-channel differences of two files of equal size and channel set.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// One entry per channel, in file order.
    pub channels: Vec<ChannelDiff>,
}

impl Report {
    /// The channel with the largest `max_rel_design`.
    pub fn worst_design(&self) -> Option<&ChannelDiff> {
        self.worst_by(|c| c.max_rel_design)
    }

    /// The channel with the largest `max_rel` (1e-6 floor).
    pub fn worst_rel(&self) -> Option<&ChannelDiff> {
        self.worst_by(|c| c.max_rel)
    }

    /// The channel with the largest `max_abs`.
    pub fn worst_abs(&self) -> Option<&ChannelDiff> {
        self.worst_by(|c| c.max_abs)
    }

    /// The channel with the largest value of `key`.
    pub fn worst_by(&self, key: impl Fn(&ChannelDiff) -> f64) -> Option<&ChannelDiff> {
        self.channels
            .iter()
            .max_by(|a, b| key(a).total_cmp(&key(b)))
    }

    /// Channels whose `max_rel_design` exceeds `tolerance`.
    pub fn failing_design(&self, tolerance: f64) -> Vec<&ChannelDiff> {
        self.channels
            .iter()
            .filter(|c| c.max_rel_design.is_nan() || c.max_rel_design > tolerance)
            .collect()
    }

    /// A plain-text table, one channel per line.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<40} {:>12} {:>12} {:>12} {:>12} {:>10}\n",
            "channel", "max abs", "rel 1e-6", "rel design", "peak", "worst at"
        );
        for c in &self.channels {
            out.push_str(&format!(
                "{:<40} {:>12.3e} {:>12.3e} {:>12.3e} {:>12.4e} {:>10}\n",
                c.name,
                c.max_abs,
                c.max_rel,
                c.max_rel_design,
                c.peak,
                format!("{},{}", c.worst_pixel.0, c.worst_pixel.1)
            ));
        }
        out
    }
}

/// A whole file in memory, channel-major.
#[derive(Clone, Debug)]
pub struct Planes {
    /// Channel names in file order.
    pub names: Vec<String>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `planes[c][y * width + x]`.
    pub planes: Vec<Vec<f32>>,
}

/// Reads every channel of a (single-part, float) OpenEXR file.
pub fn read_planes(path: &Path) -> Result<Planes> {
    let partial = Partial::open(path)?;
    let header = partial.header();
    let names: Vec<String> = header
        .channels
        .list
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    let (width, height) = (header.layer_size.width(), header.layer_size.height());
    let channels = names.len();
    // Decode in file layout (row, channel, x), then split into planes.
    let mut rows = vec![0.0_f32; width * height * channels];
    partial.decode_into(&mut rows, width * channels, |_, values, rows| {
        rows.copy_from_slice(values);
        Ok(())
    })?;
    let mut planes = vec![vec![0.0_f32; width * height]; channels];
    for (y, row) in rows.chunks_exact((width * channels).max(1)).enumerate() {
        for (c, plane) in planes.iter_mut().enumerate() {
            plane[y * width..][..width].copy_from_slice(&row[c * width..][..width]);
        }
    }
    Ok(Planes {
        names,
        width,
        height,
        planes,
    })
}

fn magnitude(v: f32) -> f64 {
    if v.is_finite() && v.abs() < BACKGROUND {
        f64::from(v.abs())
    } else {
        0.0
    }
}

/// Compares `a` and `b` channel by channel. Fails when their sizes or channel
/// sets differ.
pub fn compare(a: &Path, b: &Path) -> Result<Report> {
    let pa = read_planes(a)?;
    let pb = read_planes(b)?;
    if (pa.width, pa.height) != (pb.width, pb.height) {
        return Err(MergeError::Invalid(format!(
            "`{}` is {}x{} but `{}` is {}x{}",
            a.display(),
            pa.width,
            pa.height,
            b.display(),
            pb.width,
            pb.height
        )));
    }
    if pa.names != pb.names {
        let only_a: Vec<_> = pa.names.iter().filter(|n| !pb.names.contains(n)).collect();
        let only_b: Vec<_> = pb.names.iter().filter(|n| !pa.names.contains(n)).collect();
        return Err(MergeError::Invalid(format!(
            "`{}` and `{}` have different channels (only in the first: {only_a:?}; only in the second: {only_b:?})",
            a.display(),
            b.display()
        )));
    }
    let channels = pa
        .names
        .iter()
        .zip(pa.planes.iter().zip(&pb.planes))
        .map(|(name, (xa, xb))| diff_channel(name, pa.width, xa, xb))
        .collect();
    Ok(Report { channels })
}

fn diff_channel(name: &str, width: usize, a: &[f32], b: &[f32]) -> ChannelDiff {
    let peak = a.iter().chain(b).map(|&v| magnitude(v)).fold(0.0, f64::max);
    let floor = 0.1 * peak;
    let mut d = ChannelDiff {
        name: name.to_owned(),
        max_abs: 0.0,
        max_rel: 0.0,
        max_rel_design: 0.0,
        peak,
        differing: 0,
        worst_pixel: (0, 0),
    };
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if x == y || (x.is_nan() && y.is_nan()) {
            continue;
        }
        d.differing += 1;
        let (x, y) = (f64::from(x), f64::from(y));
        let diff = (x - y).abs();
        let diff = if diff.is_nan() { f64::INFINITY } else { diff };
        let scale = x.abs().max(y.abs());
        d.max_abs = d.max_abs.max(diff);
        d.max_rel = d.max_rel.max(diff / scale.max(1e-6));
        let design = if floor > 0.0 {
            diff / scale.max(floor)
        } else {
            diff / scale.max(1e-6)
        };
        if design > d.max_rel_design {
            d.max_rel_design = design;
            d.worst_pixel = (i % width.max(1), i / width.max(1));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::diff_channel;

    #[test]
    fn floors_and_background() {
        // Peak 10 (1e10 background ignored): floor 1.0.
        let a = [10.0, 0.0, 1e10, 0.5];
        let b = [10.0, 1e-5, 1e10, 0.5 + 1e-4];
        let d = diff_channel("L.Depth.Z", 2, &a, &b);
        assert_eq!(d.worst_pixel, (1, 1));
        assert_eq!(d.peak, 10.0);
        assert_eq!(d.differing, 2);
        assert!((d.max_rel - 1.0).abs() < 1e-6, "{d:?}"); // 1e-5 vs 0 at floor 1e-6 caps at 1
        assert!((d.max_rel_design - 1e-4).abs() < 1e-7, "{d:?}");
        assert!((d.max_abs - 1e-4).abs() < 1e-7, "{d:?}");
    }
}
