//! Preemptions: a local farm renders a frame while agents are stopped with SIGTERM at a
//! fixed rate (as a cloud stops Spot machines) and replaced; against the same frame without
//! preemptions, in the same run.
//!
//! `cargo bench -p blendfleet --bench preemption`. Settings from the environment:
//! `BENCH_BLENDER` (default `blender`), `BENCH_RESOLUTION` (320x240), `BENCH_SAMPLES` (384),
//! `BENCH_AGENTS` (3), `BENCH_PIECE_SECONDS` (2), `BENCH_PREEMPT_EVERY` (6 seconds),
//! `BENCH_REPEATS` (2). Each agent renders with one thread.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_blender::BlenderCommand;
use fleet_protocol::{FrameMode, FrameRange, JobSpec, OutputFormat, Resolution};
use support::farm::{signal, Farm};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Numbers after `name=` on the log lines that contain `marker`.
fn logged(text: &str, marker: &str, name: &str) -> Vec<f64> {
    text.lines()
        .filter(|line| line.contains(marker))
        .filter_map(|line| {
            let start = line.find(&format!(" {name}="))? + name.len() + 2;
            line[start..]
                .split_whitespace()
                .next()?
                .trim_matches('"')
                .parse()
                .ok()
        })
        .collect()
}

struct Run {
    seconds: f64,
    preemptions: usize,
    lost: Vec<f64>,
    lease_sizes: Vec<f64>,
}

struct Settings {
    blend: std::path::PathBuf,
    blender: BlenderCommand,
    resolution: (u32, u32),
    samples: u32,
    agents: usize,
    piece: String,
    every: Duration,
}

async fn run(settings: &Settings, preempt: bool, dir: &Path) -> Run {
    let mut farm = Farm::start(dir, 10);
    let pieces = ["--piece-seconds", settings.piece.as_str()];
    let mut names: Vec<String> = (1..=settings.agents)
        .map(|i| format!("agent-{i}"))
        .collect();
    for name in &names {
        farm.add_agent(name, &settings.blender, &pieces).await;
    }
    farm.wait_for_agents(settings.agents).await;
    let client = farm.client();
    let hash = fleet_client::hash_file(&settings.blend).unwrap();
    client.upload_blob(&hash, &settings.blend).await.unwrap();
    let spec = JobSpec {
        name: None,
        main_file: "demo.blend".into(),
        files: [("demo.blend".to_owned(), hash)].into(),
        frames: FrameRange::single(1),
        samples: settings.samples,
        resolution: Some(Resolution {
            width: settings.resolution.0,
            height: settings.resolution.1,
        }),
        output_format: OutputFormat::Exr,
        seed: None,
        chunking: Default::default(),
        frame_mode: FrameMode::Split,
        start: true,
    };
    let started = Instant::now();
    let job = client.create_job(&spec).await.unwrap().id;
    let mut next_preemption = started + settings.every;
    let mut preemptions = 0;
    loop {
        let status = client.job(job).await.unwrap();
        if status.summary.state.is_final() {
            assert_eq!(status.summary.state, fleet_protocol::JobState::Done);
            break;
        }
        if preempt && Instant::now() >= next_preemption {
            if let Some(victim) = status.agents.first().cloned() {
                signal(farm.pid(&victim), "TERM");
                while farm.agent(&victim).try_wait().unwrap().is_none() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                preemptions += 1;
                let replacement = format!("agent-r{preemptions}");
                farm.add_agent(&replacement, &settings.blender, &pieces)
                    .await;
                names.push(replacement);
                next_preemption = Instant::now() + settings.every;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let logs: Vec<String> = names.iter().map(|name| farm.log(name)).collect();
    let lost = logs
        .iter()
        .flat_map(|log| logged(log, "stopped in the middle of a piece", "lost_samples"))
        .collect();
    let lease_sizes = logs
        .iter()
        .flat_map(|log| logged(log, "working on a lease", "count"))
        .collect();
    Run {
        seconds,
        preemptions,
        lost,
        lease_sizes,
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let blender_path = std::env::var("BENCH_BLENDER").unwrap_or_else(|_| "blender".into());
    let blender = BlenderCommand::discover(Some(Path::new(&blender_path))).unwrap();
    let resolution: String = env_or("BENCH_RESOLUTION", "320x240".to_owned());
    let (width, height) = resolution.split_once('x').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blend = dir.path().join("demo.blend");
    runtime
        .block_on(fleet_blender::make_demo_scene(&blender, &blend))
        .unwrap();
    let settings = Settings {
        blend,
        blender,
        resolution: (width.parse().unwrap(), height.parse().unwrap()),
        samples: env_or("BENCH_SAMPLES", 384),
        agents: env_or("BENCH_AGENTS", 3),
        piece: env_or("BENCH_PIECE_SECONDS", "2".to_owned()),
        every: Duration::from_secs_f64(env_or("BENCH_PREEMPT_EVERY", 6.0)),
    };
    let repeats: usize = env_or("BENCH_REPEATS", 2);
    println!(
        "demo scene, {resolution}, {} samples, {} agents × 1 thread, pieces of {} s, a preemption every {:?}, {repeats} repeats",
        settings.samples, settings.agents, settings.piece, settings.every
    );
    let (mut calm, mut preempted) = (Vec::new(), Vec::new());
    let (mut lost, mut leases, mut preemptions) = (Vec::new(), Vec::new(), 0);
    for repeat in 0..repeats {
        for preempt in [false, true] {
            let run_dir = dir.path().join(format!("run-{repeat}-{preempt}"));
            std::fs::create_dir_all(&run_dir).unwrap();
            let result = runtime.block_on(run(&settings, preempt, &run_dir));
            println!(
                "repeat {repeat}, {}: {:.1} s, {} preemptions, lost samples {:?}",
                if preempt {
                    "with preemptions"
                } else {
                    "without"
                },
                result.seconds,
                result.preemptions,
                result.lost.iter().map(|x| x.round()).collect::<Vec<_>>()
            );
            if preempt {
                preempted.push(result.seconds);
                lost.extend(result.lost);
                preemptions += result.preemptions;
            } else {
                calm.push(result.seconds);
            }
            leases.extend(result.lease_sizes);
        }
    }
    let calm = median(&mut calm);
    let slow = median(&mut preempted);
    let mean_lost = lost.iter().sum::<f64>() / lost.len().max(1) as f64;
    let mean_lease = leases.iter().sum::<f64>() / leases.len().max(1) as f64;
    println!();
    println!("| | value |");
    println!("|---|---:|");
    println!("| frame without preemptions (median) | {calm:.1} s |");
    println!("| frame with preemptions (median) | {slow:.1} s |");
    println!(
        "| overhead of the preemptions | {:+.1} % |",
        (slow / calm - 1.0) * 100.0
    );
    println!("| preemptions | {preemptions} |");
    println!("| samples lost per preemption (mean) | {mean_lost:.1} |");
    println!("| lease (chunk) size (mean) | {mean_lease:.1} samples |");
    println!(
        "| lost per preemption / chunk | {:.3} |",
        mean_lost / mean_lease.max(1.0)
    );
}
