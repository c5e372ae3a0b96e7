//! Post-processing once per frame, on the merged image: a farm renders a scene that asks
//! for denoising and has a compositor, and the manager delivers the scene's image.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_blender::BlenderCommand;
use fleet_protocol::{
    FrameMode, FrameRange, JobId, JobSpec, JobState, JobStatus, OutputFormat, Resolution,
};
use support::farm::Farm;
use support::jobs::wait_final;
use support::TestDir;

const SAMPLES: u32 = 24;
const SIZE: (u32, u32) = (96, 72);

/// The demo scene asking for denoising, with an Invert node after the render layers and
/// JPEG output, so that every step of post-processing shows in the image.
async fn finished_scene(blender: &BlenderCommand, dir: &Path, denoise: bool) -> PathBuf {
    let demo = support::demo_scene(blender, dir).await;
    let blend = dir.join(if denoise {
        "denoise.blend"
    } else {
        "plain.blend"
    });
    let edit = format!(
        "scene = bpy.context.scene\n\
         scene.cycles.use_denoising = {}\n\
         scene.render.use_compositing = True\n\
         scene.render.image_settings.file_format = 'JPEG'\n\
         scene.render.image_settings.quality = 100\n\
         scene.use_nodes = True\n\
         tree = scene.node_tree\n\
         rl = next(n for n in tree.nodes if n.bl_idname == 'CompositorNodeRLayers')\n\
         out = next(n for n in tree.nodes if n.bl_idname == 'CompositorNodeComposite')\n\
         invert = tree.nodes.new('CompositorNodeInvert')\n\
         tree.links.new(rl.outputs['Image'], invert.inputs['Color'])\n\
         tree.links.new(invert.outputs['Color'], out.inputs['Image'])",
        if denoise { "True" } else { "False" }
    );
    support::edit_scene(blender, &demo, &blend, &edit).await;
    blend
}

async fn render(farm: &Farm, blend: &Path) -> (JobId, JobStatus) {
    let client = farm.client();
    let hash = fleet_client::hash_file(blend).unwrap();
    client.upload_blob(&hash, blend).await.unwrap();
    let spec = JobSpec {
        name: None,
        main_file: "scene.blend".into(),
        files: [("scene.blend".to_owned(), hash)].into(),
        frames: FrameRange::single(1),
        samples: SAMPLES,
        resolution: Some(Resolution {
            width: SIZE.0,
            height: SIZE.1,
        }),
        output_format: OutputFormat::Png,
        seed: None,
        chunking: Default::default(),
        frame_mode: FrameMode::Split,
        start: true,
    };
    let id = client.create_job(&spec).await.unwrap().id;
    (id, wait_final(&client, id, Duration::from_secs(300)).await)
}

/// 8-bit RGB pixels of a JPEG.
fn rgb_jpeg(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(&[0xFF, 0xD8]),
        "{} is not a JPEG",
        path.display()
    );
    jpeg_decoder::Decoder::new(bytes.as_slice())
        .decode()
        .unwrap()
}

fn rmse(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    (sum / a.len() as f64).sqrt() / 255.0
}

async fn single_render(blender: &BlenderCommand, blend: &Path, output: &Path) -> Vec<u8> {
    let job = fleet_blender::ReferenceRender {
        blend: blend.to_owned(),
        frame: 1,
        samples: SAMPLES,
        seed: None,
        threads: 1,
        resolution: Some(SIZE),
        output: output.to_owned(),
    };
    fleet_blender::render_finished_reference(blender, &job)
        .await
        .expect("single render");
    rgb_jpeg(output)
}

#[tokio::test]
async fn a_farm_denoises_and_composites_the_merged_frame_like_a_single_render() {
    let Some(blender) = support::bpy_45() else {
        return;
    };
    let dir = TestDir::new();
    let blend = finished_scene(&blender, dir.path(), true).await;
    let mut farm = Farm::start_posting(dir.path(), 10, &blender);
    for index in 1..=2 {
        farm.add_agent(&format!("post-{index}"), &blender, &[])
            .await;
    }
    farm.wait_for_agents(2).await;
    let (job, status) = render(&farm, &blend).await;
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert!(status.notes.is_empty(), "{:?}", status.notes);
    assert_eq!(status.frames[0].image_format.as_deref(), Some("jpg"));
    assert!(status.frames[0].chunks_merged >= 2, "{status:?}");

    let ours_path = dir.path().join("farm.jpg");
    farm.client()
        .download_frame_image(job, 1, &ours_path)
        .await
        .unwrap();
    let ours = rgb_jpeg(&ours_path);
    let denoised = single_render(&blender, &blend, &dir.path().join("single.jpg")).await;
    let plain = finished_scene(&blender, dir.path(), false).await;
    let noisy = single_render(&blender, &plain, &dir.path().join("noisy.jpg")).await;
    let error = rmse(&ours, &denoised);
    let noise = rmse(&noisy, &denoised);
    eprintln!("farm vs single denoised render: RMSE {error:.5}; undenoised: {noise:.5}");
    assert!(error < noise / 3.0, "{error} vs {noise}");
    assert!(error < 0.02, "RMSE {error}");
}

#[tokio::test]
async fn without_a_denoiser_the_job_says_so_and_still_delivers() {
    let Some(blender) = support::blender_34() else {
        return;
    };
    let dir = TestDir::new();
    let blend = finished_scene(&blender, dir.path(), true).await;
    let mut farm = Farm::start_posting(dir.path(), 10, &blender);
    farm.add_agent("post-1", &blender, &[]).await;
    farm.wait_for_agents(1).await;
    let (job, status) = render(&farm, &blend).await;
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert_eq!(status.notes.len(), 1, "{:?}", status.notes);
    assert!(
        status.notes[0].contains("denoising unavailable"),
        "{:?}",
        status.notes
    );
    assert_eq!(status.frames[0].image_format.as_deref(), Some("jpg"));
    let ours_path = dir.path().join("farm.jpg");
    farm.client()
        .download_frame_image(job, 1, &ours_path)
        .await
        .unwrap();
    let ours = rgb_jpeg(&ours_path);
    // Composited, not denoised: Blender's own single render of the scene without denoising.
    let plain = finished_scene(&blender, dir.path(), false).await;
    let single = single_render(&blender, &plain, &dir.path().join("single.jpg")).await;
    let error = rmse(&ours, &single);
    eprintln!("farm vs single undenoised render: RMSE {error:.5}");
    assert!(error < 0.01, "RMSE {error}");
    // The CLI shows the note.
    let output = support::run_ok(
        support::blendfleet()
            .args(["status", &job.to_string()])
            .env(
                "BLENDFLEET_MANAGER",
                farm.settings.connection_string().unwrap(),
            )
            .env("BLENDFLEET_PASSWORD", support::farm::PASSWORD),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("note: denoising unavailable"), "{text}");
}
