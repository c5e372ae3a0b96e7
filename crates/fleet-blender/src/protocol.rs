//! The protocol between [`crate::Worker`] and the worker script (`python/worker.py`).
//!
//! The worker script connects to a Unix socket this side listens on (its path is the
//! script's argument: `serve SOCKET`), and the two exchange JSON objects, one per line.
//! Blender's own chatter stays on stdout/stderr, where it is kept for error reports and
//! read for progress (`Sample N/M` lines, counted from the chunk's first sample).
//!
//! ```text
//! worker → {"event":"ready","pid":4242,"blender_version":"3.4.1","python_version":"3.11.2","stdlib_ok":true}
//!        ← {"id":1,"op":"render","blend":"/abs/shot.blend","frame":1,"sample_start":0,"sample_count":16,
//!           "seed":7,"threads":4,"resolution":[640,360],"output":"/abs/chunk.exr"}
//! worker → {"id":1,"ok":true,"result":{"samples":16,"loaded_scene":true,"prepare_seconds":0.4,
//!           "render_seconds":2.1,"save_seconds":0.1}}
//!        ← {"id":2,"op":"shutdown"}
//! worker → {"id":2,"ok":true}
//! ```
//!
//! A failed request is answered with `{"id":N,"ok":false,"error":"<Blender's message>"}`
//! and the worker stays usable (it reopens the .blend on the next request). When the
//! socket closes the worker exits at once, even in the middle of a render.
//!
//! A render request may also carry `"frame_samples": N`, the frame's total sample count.
//! Blender 4.x renders a chunk as a subset of `samples` (`use_sample_subset`), and its
//! default blue-noise pattern depends on that total; with `frame_samples` the scene's
//! pattern is kept, without it the count-independent Tabulated Sobol pattern is used.
//! Either way the chunks of a frame merge into the single render made the same way.
//! [`crate::ChunkRequest`] does not carry the total yet, so this side never sends it.

use serde::{Deserialize, Serialize};

use crate::error::BlenderError;
use crate::worker::WorkerInfo;

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request<'a> {
    Render {
        id: u64,
        blend: &'a str,
        frame: i32,
        sample_start: u32,
        sample_count: u32,
        seed: Option<u32>,
        frame_samples: Option<u32>,
        threads: u32,
        resolution: Option<(u32, u32)>,
        output: &'a str,
    },
    Shutdown {
        id: u64,
    },
}

#[derive(Deserialize)]
pub(crate) struct Reply {
    #[serde(default)]
    pub(crate) id: Option<u64>,
    #[serde(default)]
    pub(crate) ok: bool,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) result: Option<RenderReply>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RenderReply {
    pub(crate) samples: u32,
    pub(crate) loaded_scene: bool,
    pub(crate) prepare_seconds: f64,
    pub(crate) render_seconds: f64,
    pub(crate) save_seconds: f64,
}

#[derive(Deserialize)]
pub(crate) struct Ready {
    pub(crate) event: String,
    #[serde(flatten)]
    pub(crate) info: WorkerInfo,
}

/// Splits a chunk's time into scene sync and path tracing.
///
/// The worker measures its own phases (`prepare`: opening and configuring; the render
/// operator; saving). Cycles' scene synchronisation happens inside the render operator,
/// so the first `Sample` line Blender prints, timed here, marks where path tracing
/// starts. Without it, the worker's own split is used.
pub(crate) fn split_timings(
    total: f64,
    first_sample: Option<f64>,
    reply: &RenderReply,
) -> (f64, f64) {
    let prepare = reply.prepare_seconds.max(0.0);
    let operator = reply.render_seconds.max(0.0);
    match first_sample {
        Some(first) if first <= total => {
            let sync = first.max(prepare).min(prepare + operator);
            (sync, (operator - (sync - prepare)).max(0.0))
        }
        _ => (prepare, operator),
    }
}

pub(crate) fn to_line(message: &impl Serialize) -> Result<String, BlenderError> {
    let mut line =
        serde_json::to_string(message).map_err(|e| BlenderError::Protocol(e.to_string()))?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(prepare: f64, render: f64) -> RenderReply {
        RenderReply {
            samples: 8,
            loaded_scene: false,
            prepare_seconds: prepare,
            render_seconds: render,
            save_seconds: 0.01,
        }
    }

    #[test]
    fn timings_split_at_the_first_sample() {
        // Prepared in 0.1 s, Cycles synced until 0.3 s, path tracing until 1.1 s.
        let (sync, render) = split_timings(1.2, Some(0.3), &reply(0.1, 1.0));
        assert!(
            (sync - 0.3).abs() < 1e-9 && (render - 0.8).abs() < 1e-9,
            "{sync} {render}"
        );
        // No progress line: the worker's own split.
        assert_eq!(split_timings(1.2, None, &reply(0.1, 1.0)), (0.1, 1.0));
        // A progress line timed oddly never makes a phase negative.
        let (sync, render) = split_timings(1.2, Some(1.15), &reply(0.1, 1.0));
        assert!(
            (sync - 1.1).abs() < 1e-9 && render.abs() < 1e-9,
            "{sync} {render}"
        );
    }

    #[test]
    fn render_request_wire_format() {
        let message = Request::Render {
            id: 3,
            blend: "/a.blend",
            frame: 2,
            sample_start: 5,
            sample_count: 7,
            seed: None,
            frame_samples: Some(12),
            threads: 1,
            resolution: Some((64, 48)),
            output: "/o.exr",
        };
        let value: serde_json::Value =
            serde_json::from_str(&to_line(&message).expect("json")).expect("parse");
        assert_eq!(
            value,
            serde_json::json!({"op": "render", "id": 3, "blend": "/a.blend", "frame": 2, "sample_start": 5,
                "sample_count": 7, "seed": null, "frame_samples": 12, "threads": 1, "resolution": [64, 48], "output": "/o.exr"})
        );
    }
}
