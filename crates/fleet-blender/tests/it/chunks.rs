//! The demo scene, inspection, the resident worker and reference renders.

use std::path::Path;

use fleet_blender::{
    inspect, render_reference, ChunkRequest, ReferenceRender, Worker, WorkerOptions,
};

use crate::common::{both_blenders, exr_channel, exr_info, Variant};

const DEMO_PASSES: [&str; 11] = [
    "Combined", "Depth", "Normal", "DiffDir", "DiffInd", "DiffCol", "GlossDir", "GlossInd",
    "GlossCol", "Emit", "AO",
];

/// Channels every chunk of the demo must hold: its passes plus the denoising data.
const CHUNK_CHANNELS: [&str; 15] = [
    "ViewLayer.Combined.R",
    "ViewLayer.Combined.A",
    "ViewLayer.Depth.Z",
    "ViewLayer.Normal.X",
    "ViewLayer.DiffDir.R",
    "ViewLayer.DiffInd.G",
    "ViewLayer.DiffCol.B",
    "ViewLayer.GlossDir.R",
    "ViewLayer.GlossInd.R",
    "ViewLayer.GlossCol.R",
    "ViewLayer.Emit.R",
    "ViewLayer.AO.R",
    "ViewLayer.Denoising Albedo.R",
    "ViewLayer.Denoising Normal.X",
    "ViewLayer.Denoising Depth.Z",
];

both_blenders!(demo_scene_inspects_as_built);
async fn demo_scene_inspects_as_built(v: Variant) {
    let info = inspect(&v.cmd, &v.demo).await.expect("inspect");
    assert_eq!(info.engine, "CYCLES");
    assert_eq!(info.samples, 64);
    assert_eq!(
        (info.frame_start, info.frame_end, info.frame_step),
        (1, 6, 1)
    );
    assert_eq!(info.frame_current, 1);
    assert_eq!(info.resolution, (320, 240));
    assert_eq!(info.view_layers, ["ViewLayer"]);
    assert_eq!(info.passes, DEMO_PASSES, "passes in Blender's order");
    assert_eq!(info.camera.as_deref(), Some("Camera"));
    assert_eq!(info.blender_version, v.version);
    assert!(info.dependencies.is_empty(), "{:?}", info.dependencies);
    let expected_major = match v.kind {
        crate::common::Kind::Executable => "3.",
        crate::common::Kind::PythonBpy => "4.",
    };
    // Not a requirement of the crate, only of this machine's test setup.
    if !v.version.starts_with(expected_major) {
        eprintln!("note: {:?} is Blender {}", v.kind, v.version);
    }
}

fn chunk(blend: &Path, output: &Path, frame: i32, start: u32, count: u32) -> ChunkRequest {
    ChunkRequest {
        blend: blend.to_owned(),
        frame,
        sample_start: start,
        sample_count: count,
        seed: Some(11),
        // Every range these tests render lies within the first 24 samples of the frame.
        frame_samples: Some(24),
        resolution: Some((64, 48)),
        output: output.to_owned(),
    }
}

both_blenders!(resident_worker_renders_chunks);
async fn resident_worker_renders_chunks(v: Variant) {
    let dir = v.scratch();
    let options = WorkerOptions {
        threads: 1,
        extra_env: vec![],
    };
    let mut worker = Worker::spawn(&v.cmd, options).await.expect("spawn worker");
    assert!(worker.pid().is_some());
    assert_eq!(worker.info().blender_version, v.version);
    assert!(
        worker.info().stdlib_ok,
        "Blender's Python lacks its standard library"
    );
    let progress = worker.progress();

    // Three chunks of one frame: samples [0, 5), [5, 12), [12, 24).
    let ranges = [(0, 5), (5, 7), (12, 12)];
    let mut outputs = Vec::new();
    for (index, (start, count)) in ranges.into_iter().enumerate() {
        let output = dir.path().join(format!("chunk{index}.exr"));
        let outcome = worker
            .render_chunk(&chunk(&v.demo, &output, 2, start, count))
            .await
            .expect("render chunk");
        eprintln!("{:?} chunk {index}: {outcome:?}", v.kind);
        assert_eq!(outcome.samples, count);
        assert_eq!(
            outcome.loaded_scene,
            index == 0,
            "only the first chunk opens the scene"
        );
        assert!(
            outcome.sync_seconds >= 0.0
                && outcome.render_seconds >= 0.0
                && outcome.save_seconds >= 0.0
        );
        let phases = outcome.sync_seconds + outcome.render_seconds + outcome.save_seconds;
        assert!(phases <= outcome.total_seconds + 1e-3, "{outcome:?}");
        if index > 0 {
            eprintln!(
                "{:?} overhead of chunk {index} (total - render): {:.3} s",
                v.kind,
                outcome.total_seconds - outcome.render_seconds
            );
        }
        assert_eq!(
            *progress.borrow(),
            count,
            "progress ends at the chunk's sample count"
        );

        let info = exr_info(&output);
        assert_eq!(info.size, (64, 48));
        for channel in CHUNK_CHANNELS {
            assert!(
                info.channels.contains(channel),
                "{channel} missing from {:?}",
                info.channels
            );
        }
        // The header holds the configured `samples`: the chunk's count in 3.x, the frame's
        // total in 4.x (which renders a subset of `samples`).
        let configured = if v.version.starts_with("3.") {
            count
        } else {
            24
        };
        assert_eq!(
            info.samples.as_deref(),
            Some(configured.to_string().as_str())
        );
        outputs.push(output);
    }

    // Depth is written at absolute sample 0 only: a chunk that starts later holds the
    // "no hit" value everywhere, which shows that the sample range took effect.
    let depth_first = exr_channel(&outputs[0], "ViewLayer.Depth.Z");
    let depth_later = exr_channel(&outputs[1], "ViewLayer.Depth.Z");
    assert!(
        depth_first.iter().any(|&z| z < 100.0),
        "the first chunk has depth"
    );
    assert!(
        depth_later.iter().all(|&z| z > 1e9),
        "a later chunk has no depth"
    );

    // The sample-weighted chunks equal one render of all 24 samples with the same seed.
    let reference = dir.path().join("reference.exr");
    let job = ReferenceRender {
        blend: v.demo.clone(),
        frame: 2,
        samples: 24,
        seed: Some(11),
        threads: 1,
        resolution: Some((64, 48)),
        output: reference.clone(),
    };
    render_reference(&v.cmd, &job)
        .await
        .expect("reference render");
    let info = exr_info(&reference);
    assert_eq!(info.samples.as_deref(), Some("24"));
    for channel in CHUNK_CHANNELS {
        assert!(
            info.channels.contains(channel),
            "{channel} missing from the reference"
        );
    }
    for channel in ["R", "G", "B", "A"] {
        let name = format!("ViewLayer.Combined.{channel}");
        let single = exr_channel(&reference, &name);
        let parts: Vec<Vec<f32>> = outputs
            .iter()
            .map(|path| exr_channel(path, &name))
            .collect();
        let merged: Vec<f64> = (0..single.len())
            .map(|i| {
                let sum: f64 = ranges
                    .iter()
                    .zip(&parts)
                    .map(|((_, count), part)| f64::from(*count) * f64::from(part[i]))
                    .sum();
                sum / 24.0
            })
            .collect();
        let peak = single
            .iter()
            .fold(0.0_f64, |peak, &x| peak.max(f64::from(x).abs()));
        for (i, (&a, &b)) in single.iter().zip(&merged).enumerate() {
            let a = f64::from(a);
            let scale = a.abs().max(b.abs()).max(0.1 * peak);
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{name} pixel {i}: single {a}, merged {b}"
            );
        }
    }

    // A chunk without a resolution override renders at the scene's own size again.
    let full = dir.path().join("full.exr");
    let mut request = chunk(&v.demo, &full, 2, 0, 1);
    request.resolution = None;
    request.seed = None;
    let outcome = worker
        .render_chunk(&request)
        .await
        .expect("full size chunk");
    assert!(!outcome.loaded_scene);
    assert_eq!(exr_info(&full).size, (320, 240));

    // The animation makes frames differ.
    let frame6 = dir.path().join("frame6.exr");
    worker
        .render_chunk(&chunk(&v.demo, &frame6, 6, 0, 5))
        .await
        .expect("frame 6");
    assert_ne!(
        exr_channel(&frame6, "ViewLayer.Combined.R"),
        exr_channel(&outputs[0], "ViewLayer.Combined.R"),
        "frames 2 and 6 differ"
    );

    // Another .blend is opened; so is the same path once the file changed on disk.
    let other = dir.path().join("other.blend");
    fs_err::copy(&v.demo, &other).expect("copy");
    let output = dir.path().join("other.exr");
    let outcome = worker
        .render_chunk(&chunk(&other, &output, 2, 0, 2))
        .await
        .expect("other");
    assert!(outcome.loaded_scene, "a different .blend is opened");
    let outcome = worker
        .render_chunk(&chunk(&other, &output, 2, 2, 2))
        .await
        .expect("again");
    assert!(!outcome.loaded_scene);
    let replacement = dir.path().join("replacement.blend");
    fs_err::copy(&v.demo, &replacement).expect("copy");
    fs_err::rename(&replacement, &other).expect("replace");
    let outcome = worker
        .render_chunk(&chunk(&other, &output, 2, 4, 2))
        .await
        .expect("changed");
    assert!(outcome.loaded_scene, "a changed .blend is opened again");

    assert!(!worker.recent_output().is_empty());
    worker.shutdown().await.expect("shutdown");
}

both_blenders!(reference_render_writes_a_file);
async fn reference_render_writes_a_file(v: Variant) {
    let dir = v.scratch();
    let output = dir.path().join("nested/ref.exr");
    let job = ReferenceRender {
        blend: v.demo.clone(),
        frame: 3,
        samples: 4,
        seed: None,
        threads: 0,
        resolution: Some((32, 24)),
        output: output.clone(),
    };
    render_reference(&v.cmd, &job)
        .await
        .expect("reference render");
    let info = exr_info(&output);
    assert_eq!(info.size, (32, 24));
    assert_eq!(info.samples.as_deref(), Some("4"));
    assert!(info.channels.contains("ViewLayer.Combined.R"));
}
