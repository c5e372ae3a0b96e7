//! End to end: a local farm of real `blendfleet` processes renders the demo scene with real
//! Blender, and the merged frame is compared with a plain single render of the same samples.

#![allow(clippy::unwrap_used)]

mod support;

use fleet_blender::BlenderCommand;
use support::reference::{assert_matches_reference, Rule};
use support::{blendfleet, merged_chunks, run_ok};

#[tokio::test]
async fn three_agents_match_a_single_render_with_blender_3_4() {
    let Some(blender) = support::blender_34() else {
        return;
    };
    farm_matches_a_single_render(&blender).await;
}

#[tokio::test]
async fn three_agents_match_a_single_render_with_bpy_4_5() {
    let Some(blender) = support::bpy_45() else {
        return;
    };
    farm_matches_a_single_render(&blender).await;
}

async fn farm_matches_a_single_render(blender: &BlenderCommand) {
    let dir = support::TestDir::new();
    let blend = support::demo_scene(blender, dir.path()).await;
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    let output = run_ok(
        blendfleet()
            .args(["render"])
            .arg(&blend)
            .args([
                "--frames",
                "1",
                "--samples",
                "48",
                "--resolution",
                "64x48",
                "--agents",
                "3",
                "--agent-threads",
                "1",
                "--json",
            ])
            .arg("--output")
            .arg(&out)
            .arg("--state-dir")
            .arg(&state)
            .arg("--blender")
            .arg(blender.program()),
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["state"], "done", "{summary}");
    let merged = out.join("demo_0001.exr");
    assert_eq!(summary["frames"][0]["exr"], merged.to_str().unwrap());
    assert!(out.join("demo_0001.png").is_file());

    // The frame was split into at least six chunks of unequal size that tile [0, 48).
    let chunks = merged_chunks(&state.join("manager/state.db"));
    assert!(chunks.len() >= 6, "{chunks:?}");
    assert!(chunks.iter().any(|c| c.1 != chunks[0].1), "{chunks:?}");
    let mut next = 0;
    for &(start, count) in &chunks {
        assert_eq!(start, next, "{chunks:?}");
        next += count;
    }
    assert_eq!(next, 48);

    assert_matches_reference(
        blender,
        &blend,
        &merged,
        48,
        (64, 48),
        dir.path(),
        Rule::Both,
    )
    .await;
}
