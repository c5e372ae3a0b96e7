//! Measures what the resident worker costs and saves, on the demo scene.
//!
//! ```text
//! cargo run -p fleet-blender --example overhead -- [BLENDER] [--size WxH] [--samples N] [--chunks K] [--threads T] [--rounds R]
//! ```
//!
//! BLENDER is a `blender` executable or a Python with `bpy` (default: discovered). It
//! prints the worker's start and first chunk of N samples, then, as medians over R
//! rounds: a plain one-process render of N samples (the `blender -b` baseline), the
//! resident worker rendering the N samples as one chunk, and as K chunks, with the
//! overhead of each chunk after the first (total − render).
#![expect(clippy::print_stdout, reason = "an example that reports measurements")]

use std::path::PathBuf;
use std::time::Instant;

use fleet_blender::{
    make_demo_scene, render_reference, BlenderCommand, ChunkRequest, ReferenceRender, Worker,
    WorkerOptions,
};

struct Args {
    blender: Option<PathBuf>,
    size: (u32, u32),
    samples: u32,
    chunks: u32,
    threads: u32,
    rounds: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        blender: None,
        size: (320, 240),
        samples: 64,
        chunks: 4,
        threads: 0,
        rounds: 3,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => {
                let text = value()?;
                let (w, h) = text.split_once('x').ok_or("--size is WxH")?;
                args.size = (
                    w.parse().map_err(|_| "bad width")?,
                    h.parse().map_err(|_| "bad height")?,
                );
            }
            "--samples" => args.samples = value()?.parse().map_err(|_| "bad --samples")?,
            "--chunks" => args.chunks = value()?.parse().map_err(|_| "bad --chunks")?,
            "--threads" => args.threads = value()?.parse().map_err(|_| "bad --threads")?,
            "--rounds" => args.rounds = value()?.parse().map_err(|_| "bad --rounds")?,
            _ if !arg.starts_with('-') => args.blender = Some(arg.into()),
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    if args.rounds == 0 || args.chunks == 0 || args.chunks > args.samples {
        return Err("--rounds must be positive, --chunks between 1 and --samples".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let cmd = BlenderCommand::discover(args.blender.as_deref())?;
    let version = cmd.version().await?;
    let dir = tempfile::tempdir()?;
    let demo = dir.path().join("demo.blend");
    make_demo_scene(&cmd, &demo).await?;
    let (width, height) = args.size;
    println!(
        "Blender {version} ({}), demo scene {width}x{height}, {} samples, threads {}",
        cmd.program().display(),
        args.samples,
        args.threads
    );

    let started = Instant::now();
    let options = WorkerOptions {
        threads: args.threads,
        extra_env: Vec::new(),
    };
    let mut worker = Worker::spawn(&cmd, options).await?;
    let spawn = started.elapsed().as_secs_f64();
    let request = |start: u32, count: u32, name: &str| ChunkRequest {
        blend: demo.clone(),
        frame: 1,
        sample_start: start,
        sample_count: count,
        seed: Some(1),
        frame_samples: Some(args.samples),
        resolution: Some(args.size),
        output: dir.path().join(name),
    };
    let first = worker
        .render_chunk(&request(0, args.samples, "first.exr"))
        .await?;
    println!(
        "worker start + first chunk (all samples): {:.3} s (start {spawn:.3}, sync {:.3}, render {:.3}, save {:.3})",
        spawn + first.total_seconds,
        first.sync_seconds,
        first.render_seconds,
        first.save_seconds
    );

    // Rounds interleave the three ways so that machine noise hits them alike.
    let mut plain = Vec::new();
    let mut warm = Vec::new();
    let mut split = Vec::new();
    let mut overheads = Vec::new();
    let mut saves = Vec::new();
    for round in 0..args.rounds {
        let started = Instant::now();
        let job = ReferenceRender {
            blend: demo.clone(),
            frame: 1,
            samples: args.samples,
            seed: Some(1),
            threads: args.threads,
            resolution: Some(args.size),
            output: dir.path().join("reference.exr"),
        };
        render_reference(&cmd, &job).await?;
        plain.push(started.elapsed().as_secs_f64());

        let outcome = worker
            .render_chunk(&request(0, args.samples, "warm.exr"))
            .await?;
        assert!(!outcome.loaded_scene);
        warm.push(outcome.total_seconds);

        let mut total = 0.0;
        let mut start = 0;
        for index in 0..args.chunks {
            let count = args.samples / args.chunks + u32::from(index < args.samples % args.chunks);
            let outcome = worker
                .render_chunk(&request(start, count, &format!("chunk{index}.exr")))
                .await?;
            total += outcome.total_seconds;
            overheads.push(outcome.total_seconds - outcome.render_seconds);
            saves.push(outcome.save_seconds);
            if round == 0 {
                println!(
                    "  chunk {index}, samples {start}..{}: total {:.3} s, render {:.3} s, total - render {:.3} s (sync {:.3}, save {:.3})",
                    start + count,
                    outcome.total_seconds,
                    outcome.render_seconds,
                    outcome.total_seconds - outcome.render_seconds,
                    outcome.sync_seconds,
                    outcome.save_seconds
                );
            }
            start += count;
        }
        split.push(total);
    }
    worker.shutdown().await?;

    let (plain, warm, split) = (median(&mut plain), median(&mut warm), median(&mut split));
    println!("medians over {} rounds:", args.rounds);
    println!("  plain one-process render (blender -b):   {plain:.3} s");
    println!(
        "  resident worker, one chunk of all:       {warm:.3} s ({:+.1} % vs plain)",
        100.0 * (warm / plain - 1.0)
    );
    println!(
        "  resident worker, {} chunks:               {split:.3} s ({:+.1} % vs plain, {:+.1} % vs one chunk)",
        args.chunks,
        100.0 * (split / plain - 1.0),
        100.0 * (split / warm - 1.0)
    );
    println!(
        "  per chunk after the first: total - render {:.3} s, of which saving the EXR {:.3} s",
        median(&mut overheads),
        median(&mut saves)
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
