//! Small command-line front end to the crate, for experiments by hand.
//!
//! ```text
//! fleet_merge_tool layout FILE
//! fleet_merge_tool merge OUT FILE:SAMPLES[:zero] ...   (folded in the order given)
//! fleet_merge_tool merge-mean OUT FILE:SAMPLES[:zero] ... (every channel as a weighted mean)
//! fleet_merge_tool compare A B
//! fleet_merge_tool stats FILE
//! fleet_merge_tool pixel X Y CHANNEL-SUBSTRING FILE...
//! ```
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use fleet_merge::{compare, read_layout, Accumulator, ChunkInfo, MergeError, MergeRule};

fn parse_parts(args: &[String]) -> Vec<(PathBuf, ChunkInfo)> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            let mut it = a.split(':');
            let path = PathBuf::from(it.next().unwrap_or_default());
            let samples = it.next().and_then(|s| s.parse().ok()).unwrap_or(1);
            let zero = it.next() == Some("zero");
            (
                path,
                ChunkInfo {
                    id: i as i64,
                    samples,
                    holds_sample_zero: zero,
                },
            )
        })
        .collect()
}

fn merge(out: &Path, parts: &[(PathBuf, ChunkInfo)], all_mean: bool) -> Result<(), MergeError> {
    let mut layout = read_layout(&parts[0].0)?;
    if all_mean {
        for c in &mut layout.channels {
            c.rule = MergeRule::WeightedMean;
        }
    }
    let dir = tempfile::tempdir().map_err(|e| MergeError::Invalid(e.to_string()))?;
    let mut acc = Accumulator::create_scratch(&dir.path().join("acc"), &layout)?;
    for (p, c) in parts {
        acc.fold(p, *c)?;
    }
    acc.write_exr(out)
}

fn main() -> Result<(), MergeError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("layout") => {
            let layout = read_layout(Path::new(&args[1]))?;
            println!("{}x{}", layout.width, layout.height);
            for c in &layout.channels {
                println!("{:<40} {:?}", c.name, c.rule);
            }
            println!("attributes: {:?}", layout.attribute_names());
        }
        Some("merge") => merge(Path::new(&args[1]), &parse_parts(&args[2..]), false)?,
        Some("merge-mean") => merge(Path::new(&args[1]), &parse_parts(&args[2..]), true)?,
        Some("compare") => {
            let report = compare::compare(Path::new(&args[1]), Path::new(&args[2]))?;
            print!("{}", report.table());
        }
        Some("stats") => {
            let report = compare::compare(Path::new(&args[1]), Path::new(&args[1]))?;
            for c in &report.channels {
                println!("{:<40} peak {:.4e}", c.name, c.peak);
            }
        }
        Some("pixel") => {
            let (x, y): (usize, usize) =
                (args[1].parse().unwrap_or(0), args[2].parse().unwrap_or(0));
            for file in &args[4..] {
                let planes = compare::read_planes(Path::new(file))?;
                print!("{file:<28}");
                for (name, plane) in planes.names.iter().zip(&planes.planes) {
                    if name.contains(args[3].as_str()) {
                        print!(
                            " {}={:.7e}",
                            name.rsplit('.').next().unwrap_or(""),
                            plane[y * planes.width + x]
                        );
                    }
                }
                println!();
            }
        }
        _ => println!("usage: see the doc comment of examples/fleet_merge_tool.rs"),
    }
    Ok(())
}
