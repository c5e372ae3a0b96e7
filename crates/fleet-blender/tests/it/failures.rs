//! Failing renders, dying workers, orphaned workers.

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_blender::{
    inspect, render_reference, BlenderError, ChunkRequest, ReferenceRender, Worker, WorkerOptions,
};

use crate::common::{both_blenders, edited_demo, exr_info, Kind, Variant};

fn tiny(blend: &Path, output: &Path) -> ChunkRequest {
    ChunkRequest {
        blend: blend.to_owned(),
        frame: 1,
        sample_start: 0,
        sample_count: 2,
        seed: Some(1),
        frame_samples: None,
        resolution: Some((32, 24)),
        output: output.to_owned(),
    }
}

fn blender_message(result: Result<impl std::fmt::Debug, BlenderError>) -> String {
    match result.expect_err("the render must fail") {
        BlenderError::Blender {
            message, context, ..
        } => {
            assert!(context.starts_with("Blender could not"), "{context}");
            message
        }
        other => panic!("expected Blender's own error, got {other:?}"),
    }
}

both_blenders!(failing_renders_carry_blenders_message);
async fn failing_renders_carry_blenders_message(v: Variant) {
    let dir = v.scratch();
    let no_camera = edited_demo(
        &v,
        dir.path(),
        "no_camera",
        "bpy.data.objects.remove(bpy.data.objects['Camera'])",
    )
    .await;
    let eevee_engine = match v.kind {
        Kind::Executable => "BLENDER_EEVEE",
        Kind::PythonBpy => "BLENDER_EEVEE_NEXT",
    };
    let eevee = edited_demo(
        &v,
        dir.path(),
        "eevee",
        &format!("scene.render.engine = '{eevee_engine}'"),
    )
    .await;
    let denoise = edited_demo(
        &v,
        dir.path(),
        "denoise",
        "scene.cycles.use_denoising = True\nscene.cycles.use_adaptive_sampling = True\nscene.render.use_compositing = True",
    )
    .await;

    let mut worker = Worker::spawn(
        &v.cmd,
        WorkerOptions {
            threads: 1,
            extra_env: vec![],
        },
    )
    .await
    .expect("spawn");
    let output = dir.path().join("out.exr");

    let missing = dir.path().join("missing.blend");
    let result = worker.render_chunk(&tiny(&missing, &output)).await;
    let error = result
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    let message = blender_message(result);
    assert!(message.contains("Cannot read file"), "{message}");
    assert!(
        error.contains("missing.blend") && error.contains("Cannot read file"),
        "{error}"
    );

    let message = blender_message(worker.render_chunk(&tiny(&no_camera, &output)).await);
    assert!(message.contains("no camera"), "{message}");
    assert!(!output.exists(), "a failed render leaves no file");

    let message = blender_message(worker.render_chunk(&tiny(&eevee, &output)).await);
    assert_eq!(
        message,
        format!("BlendFleet splits Cycles renders; this scene uses {eevee_engine}")
    );

    // A scene that asks for denoising renders: chunks turn it off (Debian's Blender has
    // no OpenImageDenoise and would fail the render otherwise).
    let outcome = worker
        .render_chunk(&tiny(&denoise, &output))
        .await
        .expect("denoise scene renders");
    assert!(outcome.loaded_scene);
    assert_eq!(exr_info(&output).samples.as_deref(), Some("2"));

    // The worker survived every failure.
    let outcome = worker
        .render_chunk(&tiny(&v.demo, &output))
        .await
        .expect("demo renders");
    assert!(outcome.loaded_scene);
    worker.shutdown().await.expect("shutdown");

    // One-shot runs report Blender's message too.
    let message = blender_message(inspect(&v.cmd, &missing).await);
    assert!(message.contains("Cannot read file"), "{message}");
    let job = |blend: &Path| ReferenceRender {
        blend: blend.to_owned(),
        frame: 1,
        samples: 2,
        seed: None,
        threads: 1,
        resolution: Some((32, 24)),
        output: dir.path().join("ref.exr"),
    };
    let message = blender_message(render_reference(&v.cmd, &job(&no_camera)).await);
    assert!(message.contains("no camera"), "{message}");
    render_reference(&v.cmd, &job(&denoise))
        .await
        .expect("reference of the denoise scene");
}

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

both_blenders!(killed_worker_fails_promptly);
async fn killed_worker_fails_promptly(v: Variant) {
    let dir = v.scratch();
    let mut worker = Worker::spawn(
        &v.cmd,
        WorkerOptions {
            threads: 1,
            extra_env: vec![],
        },
    )
    .await
    .expect("spawn");
    let pid = worker.pid().expect("pid");
    let mut progress = worker.progress();
    // Far more samples than the test will ever wait for.
    let request = ChunkRequest {
        sample_count: 1_000_000,
        resolution: Some((160, 120)),
        ..tiny(&v.demo, &dir.path().join("long.exr"))
    };
    let killer = async {
        // Kill once Blender is path tracing.
        tokio::time::timeout(Duration::from_secs(60), progress.wait_for(|&done| done > 0))
            .await
            .expect("Blender started sampling")
            .expect("progress");
        kill9(pid);
        Instant::now()
    };
    let (result, killed_at) = tokio::join!(worker.render_chunk(&request), killer);
    let waited = killed_at.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "render_chunk took {waited:?} to notice"
    );
    let error = result.expect_err("the chunk fails");
    match &error {
        BlenderError::Exited { status, .. } => assert!(status.contains("signal 9"), "{status}"),
        other => panic!("expected Exited, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains("Blender could not render frame 1"), "{text}");
    assert!(
        text.contains("Sample"),
        "the message shows Blender's last output: {text}"
    );

    // Later requests fail at once.
    let started = Instant::now();
    let again = worker
        .render_chunk(&tiny(&v.demo, &dir.path().join("x.exr")))
        .await;
    assert!(again.expect_err("dead").to_string().contains("not running"));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(worker.pid(), None);
    worker.shutdown().await.expect("shutdown of a dead worker");
}

/// Whether `pid` is gone or a zombie (a zombie has exited; only its reaping is left).
fn exited(pid: u32) -> bool {
    match fs_err::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

async fn wait_exited(pid: u32, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if exited(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Not a test on its own: the process that `orphaned_worker_dies_with_its_parent` starts
/// and kills. It spawns a worker, writes its pid, and waits to be killed.
#[tokio::test]
#[ignore = "helper process for orphaned_worker_dies_with_its_parent"]
async fn orphan_parent() {
    let Some(pid_file) = std::env::var_os("FLEET_BLENDER_TEST_PID_FILE") else {
        return;
    };
    let kind = if std::env::var("FLEET_BLENDER_TEST_KIND").as_deref() == Ok("PythonBpy") {
        Kind::PythonBpy
    } else {
        Kind::Executable
    };
    let cmd = match kind {
        Kind::Executable => fleet_blender::BlenderCommand::discover(Some(Path::new(
            &std::env::var_os("BLENDFLEET_TEST_BLENDER").unwrap_or_else(|| "blender".into()),
        )))
        .expect("blender"),
        Kind::PythonBpy => fleet_blender::BlenderCommand::PythonBpy(
            std::env::var_os("BLENDFLEET_TEST_BPY_PYTHON")
                .expect("bpy python")
                .into(),
        ),
    };
    let worker = Worker::spawn(&cmd, WorkerOptions::default())
        .await
        .expect("spawn");
    let pid = worker.pid().expect("pid");
    fs_err::write(&pid_file, pid.to_string()).expect("write pid");
    tokio::time::sleep(Duration::from_secs(300)).await;
    drop(worker);
}

both_blenders!(orphaned_worker_dies_with_its_parent);
async fn orphaned_worker_dies_with_its_parent(v: Variant) {
    let dir = v.scratch();
    let pid_file = dir.path().join("pid");
    let mut parent = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "failures::orphan_parent",
            "--nocapture",
        ])
        .env("FLEET_BLENDER_TEST_PID_FILE", &pid_file)
        .env("FLEET_BLENDER_TEST_KIND", format!("{:?}", v.kind))
        .env("BLENDFLEET_TEST_BLENDER", v.cmd.program())
        .env("BLENDFLEET_TEST_BPY_PYTHON", v.cmd.program())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the parent process");
    let started = Instant::now();
    let pid: u32 = loop {
        if let Some(pid) = fs_err::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the parent never started a worker"
        );
        assert!(
            parent.try_wait().expect("try_wait").is_none(),
            "the parent process ended early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!exited(pid), "the worker runs");
    parent.kill().await.expect("SIGKILL the parent");
    assert!(
        wait_exited(pid, Duration::from_secs(10)).await,
        "Blender {pid} outlived its killed parent"
    );
}

#[tokio::test]
async fn debian_blender_gets_its_own_python_first_on_path() {
    let Some(v) = crate::common::variant(
        Kind::Executable,
        "debian_blender_gets_its_own_python_first_on_path",
    )
    .await
    else {
        return;
    };
    // A pyenv interpreter ahead of /usr/bin breaks `import ssl` inside Debian's Blender.
    let home = std::env::var("HOME").unwrap_or_default();
    let foreign = fs_err::read_dir(Path::new(&home).join(".pyenv/versions"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("python3").exists())
        .find(|bin| bin.to_string_lossy().contains("/3.11"));
    let path = std::env::var("PATH").unwrap_or_default();
    let path = match &foreign {
        Some(bin) => format!("{}:{path}", bin.display()),
        None => {
            eprintln!("note: no pyenv Python 3.11 here; checking with the inherited PATH only");
            path
        }
    };
    let options = WorkerOptions {
        threads: 1,
        extra_env: vec![("PATH".into(), path)],
    };
    let worker = Worker::spawn(&v.cmd, options).await.expect("spawn");
    assert!(
        worker.info().stdlib_ok,
        "Blender could not import ssl with {foreign:?} first on PATH"
    );
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn python_without_bpy_fails_with_a_clear_message() {
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        eprintln!("SKIPPED python_without_bpy_fails_with_a_clear_message: no /usr/bin/python3");
        return;
    }
    let cmd = fleet_blender::BlenderCommand::PythonBpy(python.to_owned());
    let error = match Worker::spawn(&cmd, WorkerOptions::default()).await {
        Ok(_) => {
            eprintln!(
                "SKIPPED python_without_bpy_fails_with_a_clear_message: /usr/bin/python3 has bpy"
            );
            return;
        }
        Err(error) => error,
    };
    assert!(matches!(error, BlenderError::Startup { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("before the worker script connected"),
        "{text}"
    );
    assert!(text.contains("No module named 'bpy'"), "{text}");
}
