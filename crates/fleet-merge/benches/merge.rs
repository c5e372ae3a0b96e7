//! Merge benchmark: 4 (and 8) synthetic partials of 1920×1080 with 30 float
//! channels named and classified like a Cycles multilayer EXR.
//!
//! `cargo bench -p fleet-merge` generates the partials into a temp dir (or
//! reuses them from `$BENCH_PARTIALS`), then runs each measurement in a child
//! process of this binary, so that its peak RSS (VmHWM) and CPU time belong to
//! that measurement alone, and prints tables. `BENCH_DIR` chooses where the
//! accumulators and outputs go (default: the temp dir).
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
    for p in [
        "DiffDir", "DiffInd", "DiffCol", "GlossDir", "GlossInd", "GlossCol", "Emit",
    ] {
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
                    let v: Vec<f32> = (0..WIDTH * HEIGHT)
                        .map(|p| value(i, n, p % WIDTH, p / WIDTH, &mut state))
                        .collect();
                    AnyChannel::new(n.as_str(), FlatSamples::F32(v))
                })
                .collect();
            let mut attributes = LayerAttributes::default();
            attributes.other.insert(
                Text::from("BlenderMultiChannel"),
                AttributeValue::Text(Text::from("Blender V2.55.1 and newer")),
            );
            attributes.other.insert(
                Text::from("cycles.ViewLayer.samples"),
                AttributeValue::Text(Text::from("16")),
            );
            let layer = Layer::new(
                (WIDTH, HEIGHT),
                attributes,
                Encoding::SMALL_LOSSLESS,
                AnyChannels::sort(channels),
            );
            Image::from_layer(layer).write().to_file(&path).unwrap();
            path
        })
        .collect()
}

/// `(peak RSS, current anonymous RSS, current file-backed RSS)` in MiB.
fn memory_mib() -> (f64, f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:") + field("RssShmem:"),
    )
}

/// CPU seconds (user + system, all threads) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn chunk(i: usize) -> ChunkInfo {
    ChunkInfo {
        id: i as i64,
        samples: 4 + i as u32,
        holds_sample_zero: i == 0,
    }
}

/// Times `f`: `(wall seconds, CPU seconds)`.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    f();
    (t.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

/// One measurement, run in a child process: prints `RESULT key=value ...`.
fn child(what: &str, work: &Path, partials: &[PathBuf]) {
    let mut line = String::new();
    let mut put = |key: &str, value: f64| line.push_str(&format!(" {key}={value:.4}"));
    let n = partials.len();
    // Sample 0 arrives last.
    let order: Vec<usize> = (0..n).rev().collect();
    // Kept open until memory is measured.
    let open: Option<Accumulator> = match what {
        "decode" => {
            let layout = read_layout(&partials[0]).unwrap();
            let (wall, cpu) = timed(|| {
                partials
                    .iter()
                    .for_each(|p| validate_partial(p, &layout).unwrap())
            });
            put("wall", wall / n as f64);
            put("cpu", cpu / n as f64);
            None
        }
        "scratch" => {
            let layout = read_layout(&partials[0]).unwrap();
            let mut acc = Accumulator::create_scratch(&work.join("scratch"), &layout).unwrap();
            let (wall, cpu) = timed(|| {
                order.iter().for_each(|&i| {
                    acc.fold(&partials[i], chunk(i)).unwrap();
                })
            });
            put("wall", wall / n as f64);
            put("cpu", cpu / n as f64);
            Some(acc)
        }
        "owned" | "copied" => {
            let layout = read_layout(&partials[0]).unwrap();
            // Fresh uploads, as the manager has them: just written, not synced.
            let uploads: Vec<PathBuf> = (0..n)
                .map(|i| {
                    let p = work.join(format!("upload_{i}.exr"));
                    std::fs::copy(&partials[i], &p).unwrap();
                    p
                })
                .collect();
            let mut acc = Accumulator::create(&work.join(format!("acc_{what}")), &layout).unwrap();
            let mut slowest: f64 = 0.0;
            let (wall, cpu) = timed(|| {
                for &i in &order {
                    let t = Instant::now();
                    if what == "owned" {
                        acc.fold_owned(uploads[i].clone(), chunk(i)).unwrap();
                    } else {
                        acc.fold(&uploads[i], chunk(i)).unwrap();
                    }
                    slowest = slowest.max(t.elapsed().as_secs_f64());
                }
            });
            put("wall", wall / n as f64);
            put("cpu", cpu / n as f64);
            put("total", wall);
            put("slowest", slowest);
            let (zip, zip_cpu) =
                timed(|| acc.write_exr(&work.join("merged_end_to_end.exr")).unwrap());
            put("zip", zip);
            put("zip_cpu", zip_cpu);
            Some(acc)
        }
        "reopen" => {
            let dir = work.join("acc_owned");
            let (wall, _) = timed(|| drop(Accumulator::open(&dir).unwrap()));
            put("open", wall);
            // As after a crash of the machine: the sums must be rebuilt.
            std::fs::remove_file(dir.join("sums.bin")).unwrap();
            let mut acc = None;
            let (wall, cpu) = timed(|| acc = Some(Accumulator::open(&dir).unwrap()));
            put("rebuild", wall);
            put("rebuild_cpu", cpu);
            acc
        }
        codec => {
            let acc = Accumulator::open(&work.join("acc_owned")).unwrap();
            let out = work.join(format!("merged_{codec}"));
            let (wall, cpu) = timed(|| match codec {
                "png" => acc.write_png(&out, None).unwrap(),
                "png512" => acc.write_png(&out, Some(512)).unwrap(),
                _ => {
                    let codec = match codec {
                        "zip" => ExrCodec::Zip,
                        "zips" => ExrCodec::Zips,
                        "piz" => ExrCodec::Piz,
                        "rle" => ExrCodec::Rle,
                        _ => ExrCodec::None,
                    };
                    acc.write_exr_with(&out, codec).unwrap();
                }
            });
            put("wall", wall);
            put("cpu", cpu);
            put(
                "size",
                std::fs::metadata(&out).unwrap().len() as f64 / (1 << 20) as f64,
            );
            Some(acc)
        }
    };
    let (peak, anon, file) = memory_mib();
    put("rss_peak", peak);
    put("rss_anon", anon);
    put("rss_file", file);
    drop(open);
    println!("RESULT{line}");
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn run(exe: &Path, what: &str, work: &Path, partials: &[PathBuf]) -> String {
    let output = Command::new(exe)
        .arg("--child")
        .arg(what)
        .arg(work)
        .args(partials)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .unwrap_or_else(|| {
            panic!(
                "child `{what}` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        });
    line.to_owned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let partials: Vec<PathBuf> = args[pos + 3..].iter().map(PathBuf::from).collect();
        child(&args[pos + 1], Path::new(&args[pos + 2]), &partials);
        return;
    }
    let dir = tempfile::tempdir_in(
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .unwrap();
    let t = Instant::now();
    let partials = match std::env::var("BENCH_PARTIALS") {
        Ok(keep) => {
            let keep = PathBuf::from(keep);
            let paths: Vec<PathBuf> = (0..8)
                .map(|i| keep.join(format!("partial_{i}.exr")))
                .collect();
            if !paths.iter().all(|p| p.exists()) {
                std::fs::create_dir_all(&keep).unwrap();
                generate(&keep, 8);
            }
            paths
        }
        Err(_) => generate(dir.path(), 8),
    };
    let input_mib = std::fs::metadata(&partials[0]).unwrap().len() as f64 / (1 << 20) as f64;
    println!(
        "{} partials of {WIDTH}x{HEIGHT}, {} float channels, {input_mib:.1} MiB each (ZIP), ready in {:.1} s; {} threads",
        partials.len(),
        channel_names().len(),
        t.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let exe = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for n in [4_usize, 8] {
        let work = dir.path().join(format!("work_{n}"));
        std::fs::create_dir_all(&work).unwrap();
        let mut results = std::collections::BTreeMap::new();
        for what in [
            "decode", "scratch", "copied", "owned", "reopen", "zip", "zips", "piz", "rle", "none",
            "png", "png512",
        ] {
            results.insert(what, run(&exe, what, &work, &partials[..n]));
        }
        rows.push((n, results));
        std::fs::remove_dir_all(&work).unwrap();
    }
    let ms = |v: f64| format!("{:.0} ms", v * 1000.0);
    println!();
    println!("Per partial (wall, with CPU time in parentheses; sample 0 folded last):");
    println!();
    println!("| partials | decode only (validate_partial) | fold, scratch accumulator (decode + add) | fold (copied into the journal) | fold_owned (moved into the journal) | slowest fold_owned |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (n, r) in &rows {
        let cell = |what: &str| {
            format!(
                "{} ({})",
                ms(field(&r[what], "wall")),
                ms(field(&r[what], "cpu"))
            )
        };
        println!(
            "| {n} | {} | {} | {} | {} | {} |",
            cell("decode"),
            cell("scratch"),
            cell("copied"),
            cell("owned"),
            ms(field(&r["owned"], "slowest"))
        );
    }
    println!();
    println!("Whole merge (fold_owned of every partial, then write_exr ZIP), reopening, peak RSS:");
    println!();
    println!("| partials | fold all | write ZIP (CPU) | merge total | open (sums valid) | open after a crash (rebuild) | peak RSS fold_owned (anon + file at end) | peak RSS decode only |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, r) in &rows {
        let o = &r["owned"];
        println!(
            "| {n} | {} | {} ({}) | **{}** | {:.1} ms | {} | {:.0} MiB ({:.0} + {:.0}) | {:.0} MiB |",
            ms(field(o, "total")),
            ms(field(o, "zip")),
            ms(field(o, "zip_cpu")),
            ms(field(o, "total") + field(o, "zip")),
            field(&r["reopen"], "open") * 1000.0,
            ms(field(&r["reopen"], "rebuild")),
            field(o, "rss_peak"),
            field(o, "rss_anon"),
            field(o, "rss_file"),
            field(&r["decode"], "rss_peak"),
        );
    }
    println!();
    println!("Writing the merged frame (each in its own process, after Accumulator::open; synced and renamed into place):");
    println!();
    println!(
        "| partials | ZIP | ZIPS | PIZ | RLE | none | PNG full | PNG 512 px | peak RSS (ZIP) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, r) in &rows {
        let cell = |what: &str| {
            let size = field(&r[what], "size");
            if what.starts_with("png") {
                format!("{} ({:.1} MiB)", ms(field(&r[what], "wall")), size)
            } else {
                format!("{} ({:.0} MiB)", ms(field(&r[what], "wall")), size)
            }
        };
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {:.0} MiB |",
            cell("zip"),
            cell("zips"),
            cell("piz"),
            cell("rle"),
            cell("none"),
            cell("png"),
            cell("png512"),
            field(&r["zip"], "rss_peak")
        );
    }
}
