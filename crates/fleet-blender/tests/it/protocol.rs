//! The worker script driven by hand over its control socket.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Child;

use crate::common::{both_blenders, exr_channel, Variant};

struct RawWorker {
    child: Child,
    replies: Lines<BufReader<OwnedReadHalf>>,
    requests: OwnedWriteHalf,
}

impl RawWorker {
    async fn start(v: &Variant, dir: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/worker.py");
        let socket = dir.join("control.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let mut command = v
            .cmd
            .python_command(&script, &["serve".into(), socket.into()]);
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().expect("spawn");
        let (stream, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
            .await
            .expect("connects")
            .expect("accept");
        let (read, requests) = stream.into_split();
        let mut replies = BufReader::new(read).lines();
        let ready: serde_json::Value = serde_json::from_str(
            &replies
                .next_line()
                .await
                .expect("read")
                .expect("ready line"),
        )
        .expect("json");
        assert_eq!(ready["event"], "ready");
        assert_eq!(ready["blender_version"], v.version.as_str());
        Self {
            child,
            replies,
            requests,
        }
    }

    async fn send(&mut self, request: &serde_json::Value) {
        self.requests
            .write_all(format!("{request}\n").as_bytes())
            .await
            .expect("send");
    }

    async fn call(&mut self, request: serde_json::Value) -> serde_json::Value {
        self.send(&request).await;
        let line = self
            .replies
            .next_line()
            .await
            .expect("read")
            .expect("reply");
        let reply: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(reply["id"], request["id"]);
        reply
    }
}

fn render(
    v: &Variant,
    id: u32,
    start: u32,
    count: u32,
    frame_samples: u32,
    output: &Path,
) -> serde_json::Value {
    serde_json::json!({
        "id": id, "op": "render", "blend": v.demo, "frame": 4, "sample_start": start,
        "sample_count": count, "frame_samples": frame_samples, "seed": 3, "threads": 1,
        "resolution": [48, 36], "output": output,
    })
}

both_blenders!(worker_script_exits_when_its_connection_closes);
async fn worker_script_exits_when_its_connection_closes(v: Variant) {
    let dir = v.scratch();
    let mut worker = RawWorker::start(&v, dir.path()).await;
    // Start a long render, then hang up while it runs: only the script's own watchdog
    // can end it (this test process stays alive).
    let mut request = render(&v, 1, 0, 1_000_000, 1_000_000, &dir.path().join("long.exr"));
    request["resolution"] = serde_json::json!([160, 120]);
    worker.send(&request).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        worker.child.try_wait().expect("try_wait").is_none(),
        "still rendering"
    );
    let RawWorker {
        mut child,
        replies,
        requests,
    } = worker;
    drop(requests);
    drop(replies);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the worker exits once its connection closes")
        .expect("wait");
    assert!(status.success(), "{status}");
}

both_blenders!(chunks_that_know_the_frame_total_keep_the_scene_pattern);
async fn chunks_that_know_the_frame_total_keep_the_scene_pattern(v: Variant) {
    // With the frame's total sample count, 4.x renders chunks as subsets of it and keeps
    // the scene's (count-dependent, blue-noise) sampling pattern.
    let dir = v.scratch();
    let mut worker = RawWorker::start(&v, dir.path()).await;
    let parts = [(0, 5), (5, 7)];
    let mut outputs = Vec::new();
    for (index, (start, count)) in parts.into_iter().enumerate() {
        let output = dir.path().join(format!("part{index}.exr"));
        let reply = worker
            .call(render(&v, 1 + index as u32, start, count, 12, &output))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["result"]["samples"], count);
        outputs.push(output);
    }
    let single = dir.path().join("single.exr");
    let reply = worker.call(render(&v, 9, 0, 12, 12, &single)).await;
    assert_eq!(reply["ok"], true, "{reply}");

    let reply = worker
        .call(render(&v, 10, 8, 8, 12, &dir.path().join("x.exr")))
        .await;
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or_default()
            .contains("beyond"),
        "{reply}"
    );

    let reference = exr_channel(&single, "ViewLayer.Combined.G");
    let first = exr_channel(&outputs[0], "ViewLayer.Combined.G");
    let second = exr_channel(&outputs[1], "ViewLayer.Combined.G");
    let peak = reference
        .iter()
        .fold(0.0_f64, |peak, &x| peak.max(f64::from(x).abs()));
    for i in 0..reference.len() {
        let merged = (5.0 * f64::from(first[i]) + 7.0 * f64::from(second[i])) / 12.0;
        let single = f64::from(reference[i]);
        let scale = single.abs().max(merged.abs()).max(0.1 * peak);
        assert!(
            (single - merged).abs() <= 1e-5 * scale,
            "pixel {i}: single {single}, merged {merged}"
        );
    }
    // Without the total, 4.2+ switches from the scene's blue-noise pattern to Tabulated
    // Sobol, which gives a different (equally valid) image; 3.x keeps its pattern.
    let without_total = dir.path().join("without_total.exr");
    let mut request = render(&v, 11, 0, 12, 0, &without_total);
    request["frame_samples"] = serde_json::Value::Null;
    assert_eq!(worker.call(request).await["ok"], true);
    let other = exr_channel(&without_total, "ViewLayer.Combined.G");
    if v.version.starts_with("3.") {
        assert_eq!(other, reference);
    } else {
        assert_ne!(other, reference, "the scene's pattern was not kept");
    }

    let reply = worker
        .call(serde_json::json!({"id": 12, "op": "shutdown"}))
        .await;
    assert_eq!(reply["ok"], true);
    let status = worker.child.wait().await.expect("wait");
    assert!(status.success());
}
