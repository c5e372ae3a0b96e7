//! Post-processing a merged frame: the scene's compositor and format with both Blenders,
//! OIDN denoising with pip bpy, and a clear note where the Blender has no denoiser.

use std::path::Path;

use fleet_blender::{
    postprocess, render_finished_reference, render_reference, PostOutcome, PostRequest,
    ReferenceRender,
};

use crate::common::{both_blenders, edited_demo, Kind, Variant};

const SIZE: (u32, u32) = (96, 72);
const SAMPLES: u32 = 16;

/// The demo with an Invert node after the render layers and PNG output; `denoise` sets
/// the scene's `cycles.use_denoising`.
async fn composited_demo(v: &Variant, dir: &Path, denoise: bool) -> std::path::PathBuf {
    let edit = format!(
        "scene.cycles.use_denoising = {}\n\
         scene.render.use_compositing = True\n\
         scene.render.image_settings.file_format = 'PNG'\n\
         scene.use_nodes = True\n\
         tree = scene.node_tree\n\
         rl = next(n for n in tree.nodes if n.bl_idname == 'CompositorNodeRLayers')\n\
         out = next(n for n in tree.nodes if n.bl_idname == 'CompositorNodeComposite')\n\
         invert = tree.nodes.new('CompositorNodeInvert')\n\
         tree.links.new(rl.outputs['Image'], invert.inputs['Color'])\n\
         tree.links.new(invert.outputs['Color'], out.inputs['Image'])",
        if denoise { "True" } else { "False" }
    );
    let name = if denoise { "denoised" } else { "composited" };
    edited_demo(v, dir, name, &edit).await
}

fn reference(blend: &Path, output: &Path) -> ReferenceRender {
    ReferenceRender {
        blend: blend.to_owned(),
        frame: 1,
        samples: SAMPLES,
        seed: Some(5),
        threads: 1,
        resolution: Some(SIZE),
        output: output.to_owned(),
    }
}

/// The noisy merged frame stands in for a farm's merge: a split render equals the single
/// render up to float rounding (the farm tests check that), so this is the same input.
async fn merged(v: &Variant, blend: &Path, dir: &Path) -> std::path::PathBuf {
    let exr = dir.join("merged.exr");
    render_reference(&v.cmd, &reference(blend, &exr))
        .await
        .expect("noisy render");
    exr
}

/// Post-processes frame 1 of `blend` from `merged`, writing the image at `stem`.
async fn post(v: &Variant, blend: &Path, merged: std::path::PathBuf, stem: &Path) -> PostOutcome {
    let request = PostRequest {
        blend: blend.to_owned(),
        merged,
        resolution: SIZE,
        frame: 1,
        output_stem: stem.to_owned(),
    };
    postprocess(&v.cmd, &request).await.expect("post-process")
}

/// 8-bit RGB pixels of a PNG.
fn rgb(path: &Path) -> ((u32, u32), Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        fs_err::File::open(path).expect("open PNG"),
    ));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buffer = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buffer).expect("PNG data");
    let channels = info.color_type.samples();
    let pixels = buffer[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|pixel| pixel[..3].to_vec())
        .collect();
    ((info.width, info.height), pixels)
}

/// Root-mean-square difference of two 8-bit images, in [0, 1].
fn rmse(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    (sum / a.len() as f64).sqrt() / 255.0
}

both_blenders!(the_scene_compositor_and_format_run_on_the_merged_frame);
async fn the_scene_compositor_and_format_run_on_the_merged_frame(v: Variant) {
    let dir = v.scratch();
    let blend = composited_demo(&v, dir.path(), false).await;
    let merged = merged(&v, &blend, dir.path()).await;
    let outcome = post(&v, &blend, merged, &dir.path().join("final")).await;
    assert_eq!(outcome.output, Some(dir.path().join("final.png")));
    assert_eq!(outcome.file_format, "PNG");
    assert!(outcome.composited && !outcome.denoised, "{outcome:?}");
    assert!(outcome.notes.is_empty(), "{outcome:?}");

    // Blender rendering the scene itself, compositor and all.
    let single = dir.path().join("single.png");
    render_finished_reference(&v.cmd, &reference(&blend, &single))
        .await
        .expect("single render");
    let (size, ours) = rgb(outcome.output.as_ref().expect("an image"));
    let (_, theirs) = rgb(&single);
    assert_eq!(size, SIZE);
    let difference = rmse(&ours, &theirs);
    eprintln!(
        "{:?}: composited merge vs single render, RMSE {difference:.5}",
        v.kind
    );
    // Single-threaded renders of the same samples: equal up to 8-bit rounding.
    assert!(difference < 0.002, "RMSE {difference}");
    // The compositor really ran: the uninverted image is nothing like it.
    let inverted: Vec<u8> = theirs.iter().map(|&value| 255 - value).collect();
    assert!(rmse(&ours, &inverted) > 0.2);

    // The demo itself writes multilayer EXR with no denoising and no compositor: the
    // merged EXR already is its output, and no other image is made.
    let plain = post(
        &v,
        &v.demo,
        dir.path().join("merged.exr"),
        &dir.path().join("plain"),
    )
    .await;
    assert_eq!(plain.output, None, "{plain:?}");
    assert_eq!(plain.file_format, "OPEN_EXR_MULTILAYER");
    assert!(!plain.denoised && !plain.composited && plain.notes.is_empty());
}

both_blenders!(denoising_runs_where_blender_has_oidn_and_is_reported_where_not);
async fn denoising_runs_where_blender_has_oidn_and_is_reported_where_not(v: Variant) {
    let dir = v.scratch();
    let blend = composited_demo(&v, dir.path(), true).await;
    let merged = merged(&v, &blend, dir.path()).await;
    let outcome = post(&v, &blend, merged, &dir.path().join("final")).await;
    assert!(outcome.composited, "{outcome:?}");
    let (size, ours) = rgb(outcome.output.as_ref().expect("an image"));
    assert_eq!(size, SIZE);
    match v.kind {
        Kind::Executable => {
            // Debian's Blender has no OIDN: the image is delivered, not denoised, and the
            // outcome says why.
            assert!(!outcome.denoised);
            assert_eq!(outcome.notes.len(), 1, "{outcome:?}");
            assert!(
                outcome.notes[0].contains("denoising unavailable")
                    && outcome.notes[0].contains("OpenImageDenoise"),
                "{outcome:?}"
            );
        }
        Kind::PythonBpy => {
            assert!(outcome.denoised && outcome.notes.is_empty(), "{outcome:?}");
            // Blender denoising a single render of the same samples, then compositing.
            let single = dir.path().join("single.png");
            render_finished_reference(&v.cmd, &reference(&blend, &single))
                .await
                .expect("single denoised render");
            let (_, denoised) = rgb(&single);
            // The same scene without denoising: how far the noise alone is from it.
            let noisy_blend = composited_demo(&v, dir.path(), false).await;
            let noisy_png = dir.path().join("noisy.png");
            render_finished_reference(&v.cmd, &reference(&noisy_blend, &noisy_png))
                .await
                .expect("single noisy render");
            let (_, noisy) = rgb(&noisy_png);
            let ours_error = rmse(&ours, &denoised);
            let noise_error = rmse(&noisy, &denoised);
            eprintln!(
                "denoised merge vs Blender's denoised render: RMSE {ours_error:.5}; \
                 undenoised: {noise_error:.5}"
            );
            assert!(
                ours_error < noise_error / 3.0,
                "denoising after the merge is far from Blender's: {ours_error} vs {noise_error}"
            );
            assert!(ours_error < 0.02, "RMSE {ours_error}");
        }
    }
}
