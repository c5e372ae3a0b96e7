//! Farm overhead: one local agent against a plain single Blender run of the same frame, and
//! the cost of each chunk after an agent's first.
//!
//! `cargo bench -p blendfleet --bench farm`. Settings from the environment:
//! `BENCH_BLENDER` (default `blender`), `BENCH_RESOLUTION` (320x240), `BENCH_SAMPLES` (512),
//! `BENCH_THREADS` (2), `BENCH_REPEATS` (3). Runs alternate between the two ways so that
//! machine noise hits both alike; medians are reported.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fleet_blender::{BlenderCommand, ReferenceRender};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One chunk as the agent logged it.
#[derive(Debug)]
struct Chunk {
    loaded_scene: bool,
    render: f64,
    total: f64,
}

fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
}

fn chunks_from_log(log: &Path) -> Vec<Chunk> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains("chunk rendered"))
        .filter_map(|line| {
            Some(Chunk {
                loaded_scene: field(line, "loaded_scene")? == "true",
                render: field(line, "render_seconds")?.parse().ok()?,
                total: field(line, "total_seconds")?.parse().ok()?,
            })
        })
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let blender_path = std::env::var("BENCH_BLENDER").unwrap_or_else(|_| "blender".into());
    let blender = BlenderCommand::discover(Some(Path::new(&blender_path))).unwrap();
    let resolution: String = env_or("BENCH_RESOLUTION", "320x240".to_owned());
    let (width, height) = resolution.split_once('x').unwrap();
    let (width, height): (u32, u32) = (width.parse().unwrap(), height.parse().unwrap());
    let samples: u32 = env_or("BENCH_SAMPLES", 512);
    let threads: u32 = env_or("BENCH_THREADS", 2);
    let repeats: usize = env_or("BENCH_REPEATS", 3);

    let dir = tempfile::tempdir().unwrap();
    let blend = dir.path().join("demo.blend");
    runtime
        .block_on(fleet_blender::make_demo_scene(&blender, &blend))
        .unwrap();
    let version = runtime.block_on(blender.version()).unwrap();
    println!(
        "demo scene, {width}x{height}, {samples} samples, {threads} threads, Blender {version}, {repeats} repeats"
    );

    let (mut plain, mut farm, mut chunks) = (Vec::new(), Vec::new(), Vec::new());
    for repeat in 0..repeats {
        let started = Instant::now();
        let job = ReferenceRender {
            blend: blend.clone(),
            frame: 1,
            samples,
            seed: None,
            threads,
            resolution: Some((width, height)),
            output: dir.path().join("plain.exr"),
        };
        runtime
            .block_on(fleet_blender::render_reference(&blender, &job))
            .unwrap();
        plain.push(started.elapsed().as_secs_f64());

        let state: PathBuf = dir.path().join(format!("state{repeat}"));
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_blendfleet"))
            .arg("render")
            .arg(&blend)
            .args(["--frames", "1", "--samples", &samples.to_string()])
            .args(["--resolution", &resolution, "--agents", "1"])
            .args([
                "--agent-threads",
                &threads.to_string(),
                "--format",
                "exr",
                "--json",
            ])
            .arg("--output")
            .arg(dir.path().join("out"))
            .arg("--state-dir")
            .arg(&state)
            .arg("--blender")
            .arg(blender.program())
            .env("BLENDFLEET_LOG", "info")
            .env_remove("BLENDFLEET_MANAGER")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        farm.push(started.elapsed().as_secs_f64());
        chunks.extend(chunks_from_log(&state.join("agents/local-1.log")));
        println!(
            "repeat {repeat}: plain {:.2}s, farm {:.2}s",
            plain[repeat], farm[repeat]
        );
    }
    let plain_median = median(&mut plain);
    let farm_median = median(&mut farm);
    println!();
    println!("| | median wall time |");
    println!("|---|---:|");
    println!("| plain Blender, one process | {plain_median:.2} s |");
    println!("| `blendfleet render`, 1 local agent (start farm, upload, render, merge, download) | {farm_median:.2} s |");
    println!("| ratio farm / plain | {:.3} |", farm_median / plain_median);
    println!();
    println!("| chunk | count | loads the scene | mean render | mean overhead (total - render) |");
    println!("|---|---:|---|---:|---:|");
    for (label, first) in [("first of the agent", true), ("later", false)] {
        let selected: Vec<&Chunk> = chunks.iter().filter(|c| c.loaded_scene == first).collect();
        if selected.is_empty() {
            continue;
        }
        let count = selected.len() as f64;
        let render = selected.iter().map(|c| c.render).sum::<f64>() / count;
        let overhead = selected.iter().map(|c| c.total - c.render).sum::<f64>() / count;
        println!(
            "| {label} | {} | {first} | {render:.3} s | {overhead:.3} s |",
            selected.len()
        );
    }
}
