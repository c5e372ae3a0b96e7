//! `blendfleet render` and `blendfleet demo`: submit a .blend, follow it, fetch the frames.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fleet_blender::{BlenderCommand, SceneInfo};
use fleet_client::Client;
use fleet_protocol::{
    ChunkPolicy, FrameState, FrameStatus, JobId, JobSpec, JobState, JobStatus, OutputFormat,
};
use serde::Serialize;

use crate::cli::{DemoArgs, FarmArgs, JobArgs, RenderArgs};
use crate::farm::LocalFarm;
use crate::{connection, output};

/// How often the job's status is read while it renders.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What a render produced, printed with `--json`.
#[derive(Debug, Serialize)]
struct Summary {
    job: JobId,
    state: JobState,
    seconds: f64,
    frames: Vec<FrameFiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The manager's notes on the results (e.g. denoising unavailable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct FrameFiles {
    frame: i32,
    exr: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<PathBuf>,
}

pub async fn render(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let remote = connection::configured(&args.remote)?;
    run(
        &args.file,
        &args.job,
        &args.farm,
        &args.output,
        remote,
        args.remote.json,
    )
    .await
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let blender = BlenderCommand::discover(args.farm.blender.as_deref())?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating `{}`", args.output.display()))?;
    let scene = std::path::absolute(args.output.join("demo.blend"))?;
    if !args.json {
        output::line(format!("generating the demo scene `{}`", scene.display()));
    }
    fleet_blender::make_demo_scene(&blender, &scene).await?;
    run(&scene, &args.job, &args.farm, &args.output, None, args.json).await
}

async fn run(
    file: &Path,
    job: &JobArgs,
    farm: &FarmArgs,
    output_dir: &Path,
    remote: Option<fleet_client::ConnectionSettings>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let file = std::path::absolute(file)?;
    if !file.is_file() {
        bail!("`{}` does not exist", file.display());
    }
    std::fs::create_dir_all(output_dir)
        .with_context(|| format!("creating `{}`", output_dir.display()))?;
    // A local farm starts (manager, agents, their Blender) while the scene is inspected.
    let inspection = inspect(&file, farm.blender.as_deref());
    let (scene, connected) = match remote {
        Some(settings) => (
            inspection.await,
            Client::new(&settings)
                .map(|c| (c, None))
                .map_err(Into::into),
        ),
        None => {
            if !json {
                output::line(format!("starting a local farm with {} agents", farm.agents));
            }
            let (scene, local) = tokio::join!(inspection, start_local(farm));
            (scene, local.map(|(client, local)| (client, Some(local))))
        }
    };
    let (client, local) = connected?;
    let prepared = scene.and_then(|scene| {
        let files = project_files(&file, scene.as_ref())?;
        let spec = build_spec(&file, &files, job, scene.as_ref())?;
        Ok((files, spec))
    });
    let (spec_files, spec) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            if let Some(local) = local {
                local.stop().await;
            }
            return Err(error);
        }
    };
    let started = Instant::now();
    let result = submit_and_follow(&client, &spec, &spec_files, output_dir, json).await;
    if let Some(local) = local {
        if result
            .as_ref()
            .map_or(true, |summary| summary.state != JobState::Done)
        {
            for (name, log) in local.agents.logs() {
                if let Some(log) = log {
                    tracing::warn!(agent = %name, log = %log.display(), "agent log");
                }
            }
        }
        local.stop().await;
    }
    let mut summary = result?;
    summary.seconds = started.elapsed().as_secs_f64();
    report(&summary, json)?;
    Ok(if summary.state == JobState::Done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn start_local(farm: &FarmArgs) -> anyhow::Result<(Client, LocalFarm)> {
    let mut local = LocalFarm::start(
        farm.agents,
        farm.agent_threads,
        farm.blender.as_deref(),
        farm.state_dir.as_deref(),
    )
    .await?;
    let client = Client::new(&local.settings)?;
    if let Err(error) = local
        .agents
        .wait_joined(&client, Duration::from_secs(120))
        .await
    {
        local.stop().await;
        return Err(error);
    }
    Ok((client, local))
}

/// Reads the scene with the local Blender, when there is one.
async fn inspect(file: &Path, blender: Option<&Path>) -> anyhow::Result<Option<SceneInfo>> {
    let Ok(command) = BlenderCommand::discover(blender) else {
        return Ok(None);
    };
    let scene = fleet_blender::inspect(&command, file)
        .await
        .with_context(|| format!("reading `{}` with Blender", file.display()))?;
    if scene.engine != "CYCLES" {
        bail!(
            "`{}` renders with {}; BlendFleet splits Cycles renders only",
            file.display(),
            scene.engine
        );
    }
    Ok(Some(scene))
}

/// The files to upload: the .blend and the dependencies that live beside it, keyed by their
/// path relative to the .blend's directory.
fn project_files(
    file: &Path,
    scene: Option<&SceneInfo>,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let root = file
        .parent()
        .context("the .blend has no parent directory")?;
    let name = file
        .file_name()
        .and_then(|name| name.to_str())
        .context("the .blend's name is not UTF-8")?;
    let mut files = BTreeMap::from([(name.to_owned(), file.to_owned())]);
    for dependency in scene
        .map(|scene| scene.dependencies.as_slice())
        .unwrap_or_default()
    {
        let relative = dependency
            .strip_prefix(root)
            .ok()
            .and_then(|path| path.to_str())
            .and_then(|path| fleet_protocol::validate_relative_path(path).ok());
        match relative {
            Some(relative) if dependency.is_file() => {
                files.insert(relative, dependency.clone());
            }
            _ => tracing::warn!(
                file = %dependency.display(),
                "not uploaded: only files inside the .blend's directory are sent"
            ),
        }
    }
    Ok(files)
}

fn build_spec(
    file: &Path,
    files: &BTreeMap<String, PathBuf>,
    job: &JobArgs,
    scene: Option<&SceneInfo>,
) -> anyhow::Result<JobSpec> {
    let main_file = file
        .file_name()
        .and_then(|name| name.to_str())
        .context("the .blend's name is not UTF-8")?
        .to_owned();
    let samples = match (job.samples, scene) {
        (Some(samples), _) => samples,
        (None, Some(scene)) => scene.samples,
        (None, None) => bail!("cannot read the scene here; give the samples with --samples"),
    };
    let mut hashes = BTreeMap::new();
    for (relative, path) in files {
        hashes.insert(relative.clone(), fleet_client::hash_file(path)?);
    }
    let spec = JobSpec {
        name: None,
        main_file,
        files: hashes,
        frames: job.frame_range(scene)?,
        samples,
        resolution: job.resolution,
        output_format: job.format,
        seed: job.seed,
        chunking: ChunkPolicy {
            min_samples: job.min_chunk,
            max_samples: job.max_chunk,
        },
        frame_mode: job.frame_mode,
        start: true,
    };
    spec.validate()?;
    Ok(spec)
}

async fn submit_and_follow(
    client: &Client,
    spec: &JobSpec,
    files: &BTreeMap<String, PathBuf>,
    output_dir: &Path,
    json: bool,
) -> anyhow::Result<Summary> {
    let hashes: Vec<_> = spec.files.values().cloned().collect();
    let missing: BTreeSet<_> = client.missing_blobs(&hashes).await?.into_iter().collect();
    for (relative, hash) in &spec.files {
        if missing.contains(hash) {
            let path = &files[relative];
            if !json {
                output::line(format!("uploading {relative}"));
            }
            client
                .upload_blob(hash, path)
                .await
                .with_context(|| format!("uploading `{}`", path.display()))?;
        }
    }
    let id = client.create_job(spec).await?.id;
    let progress = crate::render_progress::Progress::new(id, spec, json);
    let name = spec.display_name();
    let mut fetched = Vec::new();
    let mut fetched_frames = BTreeSet::new();
    let cancel = fleet_agent::shutdown_on_signals();
    let status = loop {
        let status = client.job(id).await?;
        progress.update(&status);
        for frame in &status.frames {
            if frame.state == FrameState::Done && fetched_frames.insert(frame.frame) {
                fetched.push(
                    fetch_frame(client, id, frame, &name, spec.output_format, output_dir).await?,
                );
                progress.frame_saved(frame.frame, &fetched[fetched.len() - 1].exr);
            }
        }
        if status.summary.state.is_final() {
            break status;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = cancel.cancelled() => {
                progress.finish("cancelling");
                client.cancel_job(id).await?;
                bail!("interrupted; job {id} was cancelled");
            }
        }
    };
    progress.finish(status.summary.state.as_str());
    Ok(Summary {
        job: id,
        state: status.summary.state,
        seconds: 0.0,
        frames: fetched,
        error: failure(&status),
        notes: status.notes.clone(),
    })
}

fn failure(status: &JobStatus) -> Option<String> {
    match status.summary.state {
        JobState::Done => None,
        _ => Some(
            status
                .summary
                .error
                .clone()
                .unwrap_or_else(|| format!("the job ended {}", status.summary.state.as_str())),
        ),
    }
}

async fn fetch_frame(
    client: &Client,
    id: JobId,
    status: &FrameStatus,
    name: &str,
    format: OutputFormat,
    output_dir: &Path,
) -> anyhow::Result<FrameFiles> {
    let frame = status.frame;
    let exr = output_dir.join(format!("{name}_{frame:04}.exr"));
    client
        .download_frame_exr(id, frame, &exr)
        .await
        .with_context(|| format!("downloading frame {frame}"))?;
    let image = if format == OutputFormat::Png {
        let path = output_dir.join(image_file_name(name, frame, status.image_format.as_deref()));
        client.download_frame_image(id, frame, &path).await?;
        Some(path)
    } else {
        None
    };
    Ok(FrameFiles { frame, exr, image })
}

/// `<name>_<frame:04>.<ext>` for a frame's flat image, in the format the manager delivered
/// (the scene's output format once post-processed). An EXR image gets `_final` so that it
/// does not replace the merged multilayer EXR of the same frame.
pub fn image_file_name(name: &str, frame: i32, extension: Option<&str>) -> String {
    match extension.unwrap_or("png") {
        "exr" => format!("{name}_{frame:04}_final.exr"),
        extension => format!("{name}_{frame:04}.{extension}"),
    }
}

fn report(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(summary);
    }
    match &summary.error {
        None => output::line(format!(
            "job {} done in {:.1}s: {} frame(s) written",
            summary.job,
            summary.seconds,
            summary.frames.len()
        )),
        Some(error) => output::line(format!(
            "job {} {}: {error}",
            summary.job,
            summary.state.as_str()
        )),
    }
    for note in &summary.notes {
        output::line(format!("note: {note}"));
    }
    Ok(())
}
