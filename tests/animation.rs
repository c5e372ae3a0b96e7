//! Animations in every frame mode, and scenes Blender cannot render.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use fleet_blender::BlenderCommand;
use support::{blendfleet, leases_per_frame, TestDir};

/// Renders frames 1–6 of the demo scene on three local agents in `mode`.
fn render_animation(
    blender: &BlenderCommand,
    blend: &Path,
    out: &Path,
    state: &Path,
    mode: &str,
) -> serde_json::Value {
    let output = support::run_ok(
        blendfleet()
            .arg("render")
            .arg(blend)
            .args([
                "--frames",
                "1-6",
                "--samples",
                "16",
                "--resolution",
                "32x24",
                "--agents",
                "3",
            ])
            .args(["--agent-threads", "1", "--frame-mode", mode, "--json"])
            .arg("--output")
            .arg(out)
            .arg("--state-dir")
            .arg(state)
            .arg("--blender")
            .arg(blender.program()),
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn animation(mode: &str) -> Vec<(i32, u32)> {
    let Some(blender) = support::blender_34() else {
        return Vec::new();
    };
    let dir = TestDir::new();
    let blend = support::demo_scene(&blender, dir.path()).await;
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    let summary = render_animation(&blender, &blend, &out, &state, mode);
    assert_eq!(summary["state"], "done", "{summary}");
    let frames: Vec<i64> = summary["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| frame["frame"].as_i64().unwrap())
        .collect();
    let mut sorted = frames.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![1, 2, 3, 4, 5, 6]);
    let mut images = Vec::new();
    for frame in 1..=6 {
        let exr = out.join(format!("demo_{frame:04}.exr"));
        let png = out.join(format!("demo_{frame:04}.png"));
        assert!(exr.is_file(), "{} is missing", exr.display());
        assert!(png.is_file(), "{} is missing", png.display());
        images.push(std::fs::read(&png).unwrap());
    }
    // The demo scene moves: every frame is a different image.
    for (index, image) in images.iter().enumerate().skip(1) {
        assert_ne!(image, &images[0], "frame {} equals frame 1", index + 1);
    }
    leases_per_frame(&state.join("manager/state.db"))
}

#[tokio::test]
async fn whole_frame_mode_gives_each_frame_to_one_agent() {
    let leases = animation("whole").await;
    if leases.is_empty() {
        return;
    }
    assert!(leases.iter().all(|&(_, count)| count == 1), "{leases:?}");
}

#[tokio::test]
async fn split_mode_splits_every_frame() {
    let leases = animation("split").await;
    if leases.is_empty() {
        return;
    }
    assert_eq!(leases.len(), 6);
    assert!(leases.iter().all(|&(_, count)| count >= 2), "{leases:?}");
}

#[tokio::test]
async fn auto_mode_renders_whole_frames_then_splits_the_tail() {
    let leases = animation("auto").await;
    if leases.is_empty() {
        return;
    }
    // Six frames on three agents: whole frames while at least three are untouched (1–4),
    // then the last two are split so that no agent waits for the others.
    assert!(
        leases[..4].iter().all(|&(_, count)| count == 1),
        "{leases:?}"
    );
    assert!(
        leases[4..].iter().all(|&(_, count)| count >= 2),
        "{leases:?}"
    );
}

#[tokio::test]
async fn a_scene_blender_cannot_render_fails_the_job_with_blenders_message() {
    let Some(blender) = support::blender_34() else {
        return;
    };
    let dir = TestDir::new();
    let demo = support::demo_scene(&blender, dir.path()).await;
    let broken = dir.path().join("nocamera.blend");
    support::edit_scene(
        &blender,
        &demo,
        &broken,
        "for obj in [o for o in bpy.data.objects if o.type == 'CAMERA']:\n    bpy.data.objects.remove(obj)\nbpy.context.scene.camera = None",
    )
    .await;
    let output = blendfleet()
        .arg("render")
        .arg(&broken)
        .args([
            "--frames",
            "1",
            "--samples",
            "4",
            "--resolution",
            "32x24",
            "--agents",
            "2",
        ])
        .args(["--agent-threads", "1", "--json"])
        .arg("--output")
        .arg(dir.path().join("out"))
        .arg("--blender")
        .arg(blender.program())
        .output()
        .unwrap();
    assert!(!output.status.success(), "a failed job fails the command");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["state"], "failed", "{summary}");
    let error = summary["error"].as_str().unwrap();
    assert!(
        error.contains("no camera"),
        "Blender's own words reach the user: {error}"
    );
}
