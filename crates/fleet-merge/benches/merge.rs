//! Merge benchmark: 4 (and 8) synthetic partials of 1920×1080 with 30 float
//! channels named and classified like a Cycles multilayer EXR.
//!
//! `cargo bench -p fleet-merge` generates the partials into a temp dir, then
//! runs each measurement in a child process of this binary so that peak RSS
//! (VmHWM) belongs to that measurement alone, and prints a table.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use exr::prelude::*;
use fleet_merge::{read_layout, validate_partial, Accumulator, ChunkInfo, ExrCodec};

const WIDTH: usize = 1920;
const HEIGHT: usize = 1080;

fn channel_names() -> Vec<String> {
    let mut names = Vec::new();
    let mut pass = |pass: &str, components: &str| {
        for c in components.chars() {
            names.push(format!("ViewLayer.{pass}.{c}"));
        }
    };
    pass("Combined", "RGBA");
    pass("Depth", "Z");
    pass("Normal", "XYZ");
    for p in ["DiffDir", "DiffInd", "DiffCol", "GlossDir", "GlossInd", "GlossCol", "Emit"] {
        pass(p, "RGB");
    }
    pass("IndexOB", "X");
    names
}

/// Render-like values: a flat background on the left quarter, smooth
/// gradients with per-sample noise elsewhere (noise is what real renders
/// spend their bits on).
fn value(partial: u32, name: &str, x: usize, y: usize, state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let noise = (*state >> 40) as f32 / (1u64 << 24) as f32;
    let background = x < WIDTH / 4;
    match name.rsplit('.').nth(1).unwrap_or("") {
        "Depth" => {
            if partial > 0 || background {
                1.0e10
            } else {
                3.0 + y as f32 * 0.01
            }
        }
        "IndexOB" => {
            if partial > 0 || background {
                0.0
            } else {
                (1 + x / 300) as f32
            }
        }
        "DiffCol" | "GlossCol" => {
            if background {
                0.0
            } else {
                0.2 + (x as f32 / WIDTH as f32) * 0.6
            }
        }
        "Normal" => {
            if background {
                0.0
            } else {
                (x as f32 / WIDTH as f32 - 0.5) + 0.01 * noise
            }
        }
        _ if name.ends_with("Combined.A") => 1.0,
        "Emit" => {
            if (x / 64 + y / 64).is_multiple_of(7) {
                4.0
            } else {
                0.0
            }
        }
        _ => {
            if background {
                0.05
            } else if x < WIDTH / 2 {
                // Converged-looking area: smooth, few distinct values.
                ((y as f32 / HEIGHT as f32) * 64.0).round() / 64.0
            } else {
                // Noisy area: 12 significant bits of noise.
                ((y as f32 / HEIGHT as f32) * noise * 2.0 * 4096.0).round() / 4096.0
            }
        }
    }
}

fn generate(dir: &Path, count: u32) -> Vec<PathBuf> {
    let names = channel_names();
    (0..count)
        .map(|i| {
            let path = dir.join(format!("partial_{i}.exr"));
            let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::from(i + 1);
            let channels: SmallVec<[AnyChannel<FlatSamples>; 4]> = names
                .iter()
                .map(|n| {
                    let v: Vec<f32> =
                        (0..WIDTH * HEIGHT).map(|p| value(i, n, p % WIDTH, p / WIDTH, &mut state)).collect();
                    AnyChannel::new(n.as_str(), FlatSamples::F32(v))
                })
                .collect();
            let mut attributes = LayerAttributes::default();
            attributes.other.insert(Text::from("BlenderMultiChannel"), AttributeValue::Text(Text::from("Blender V2.55.1 and newer")));
            attributes.other.insert(Text::from("cycles.ViewLayer.samples"), AttributeValue::Text(Text::from("16")));
            let layer = Layer::new((WIDTH, HEIGHT), attributes, Encoding::SMALL_LOSSLESS, AnyChannels::sort(channels));
            Image::from_layer(layer).write().to_file(&path).unwrap();
            path
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One measurement, run in a child process: prints `key=value` pairs.
fn child(partials: &[PathBuf], work: &Path) {
    let layout = read_layout(&partials[0]).unwrap();
    let t = Instant::now();
    for p in partials {
        validate_partial(p, &layout).unwrap();
    }
    let read = t.elapsed().as_secs_f64();
    let rss_read = peak_rss_mib();

    let mut acc = Accumulator::create(&work.join("acc"), &layout).unwrap();
    let mut folds = Vec::new();
    // Sample 0 arrives last.
    for (i, p) in partials.iter().enumerate().rev() {
        let t = Instant::now();
        acc.fold(p, ChunkInfo { id: i as i64, samples: 4 + i as u32, holds_sample_zero: i == 0 }).unwrap();
        folds.push(t.elapsed().as_secs_f64());
    }
    let fold: f64 = folds.iter().sum();
    let rss_fold = peak_rss_mib();

    let mut line = format!("read={read:.3} fold={fold:.3} fold_max={:.3}", folds.iter().copied().fold(0.0, f64::max));
    for (name, codec) in [("zip", ExrCodec::Zip), ("piz", ExrCodec::Piz), ("rle", ExrCodec::Rle), ("none", ExrCodec::None)] {
        let out = work.join(format!("merged_{name}.exr"));
        let t = Instant::now();
        acc.write_exr_with(&out, codec).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let mib = std::fs::metadata(&out).unwrap().len() as f64 / (1 << 20) as f64;
        line.push_str(&format!(" write_{name}={secs:.3} size_{name}={mib:.1}"));
    }
    let t = Instant::now();
    acc.write_png(&work.join("preview.png"), None).unwrap();
    let png = t.elapsed().as_secs_f64();
    let t = Instant::now();
    acc.write_png(&work.join("preview_512.png"), Some(512)).unwrap();
    let png_small = t.elapsed().as_secs_f64();
    line.push_str(&format!(
        " png={png:.3} png512={png_small:.3} rss_read={rss_read:.0} rss_fold={rss_fold:.0} rss_peak={:.0}",
        peak_rss_mib()
    ));
    println!("RESULT {line}");
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let work = PathBuf::from(&args[pos + 1]);
        let partials: Vec<PathBuf> = args[pos + 2..].iter().map(PathBuf::from).collect();
        child(&partials, &work);
        return;
    }
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string())).unwrap();
    let t = Instant::now();
    let partials = generate(dir.path(), 8);
    let input_mib = std::fs::metadata(&partials[0]).unwrap().len() as f64 / (1 << 20) as f64;
    println!(
        "generated 8 partials of {WIDTH}x{HEIGHT}, {} channels, {input_mib:.1} MiB each (ZIP) in {:.1} s",
        channel_names().len(),
        t.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for n in [4_usize, 8] {
        let work = dir.path().join(format!("work_{n}"));
        std::fs::create_dir_all(&work).unwrap();
        let output = Command::new(&exe).arg("--child").arg(&work).args(&partials[..n]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().find(|l| l.starts_with("RESULT")).unwrap_or_else(|| {
            panic!("child failed: {}", String::from_utf8_lossy(&output.stderr));
        });
        rows.push((n, line.to_owned()));
        std::fs::remove_dir_all(&work).unwrap();
    }
    println!();
    println!("| partials | validate/read all | fold all (max one) | write_exr ZIP | PIZ | RLE | none | write_png full / 512 | total (read+fold+ZIP) | peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, line) in &rows {
        let f = |k: &str| field(line, k);
        println!(
            "| {n} | {:.2} s | {:.2} s ({:.2} s) | {:.2} s ({:.0} MiB) | {:.2} s ({:.0} MiB) | {:.2} s ({:.0} MiB) | {:.2} s ({:.0} MiB) | {:.2} / {:.2} s | {:.2} s | {:.0} MiB |",
            f("read"),
            f("fold"),
            f("fold_max"),
            f("write_zip"),
            f("size_zip"),
            f("write_piz"),
            f("size_piz"),
            f("write_rle"),
            f("size_rle"),
            f("write_none"),
            f("size_none"),
            f("png"),
            f("png512"),
            f("read") + f("fold") + f("write_zip"),
            f("rss_peak"),
        );
    }
    println!();
    println!("fold = decode + validate + fold + durable commit (fsync) of each partial; read = validate_partial alone (a full decode).");
}
