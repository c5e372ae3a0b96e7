//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fleet_protocol::{FrameRange, JobId, OutputFormat, Resolution};

/// Render Blender scenes on a fleet of machines: a manager splits each frame's samples
/// across agents and merges their partial renders into the image one machine would make.
#[derive(Debug, Parser)]
#[command(name = "blendfleet", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render a .blend file on a farm: a configured manager, or a local farm started for it.
    Render(RenderArgs),
    /// Render the bundled demo scene on a local farm (generated with your Blender).
    Demo(DemoArgs),
    /// Run a manager: the HTTPS API agents and clients talk to.
    Manager(ManagerArgs),
    /// Run a render agent that joins a manager.
    Agent(AgentArgs),
    /// List the jobs of the configured manager.
    Jobs(RemoteArgs),
    /// Show one job of the configured manager.
    Status {
        /// The job.
        job: JobId,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Cancel a job of the configured manager.
    Cancel {
        /// The job.
        job: JobId,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Download the finished frames of a job.
    Download {
        /// The job.
        job: JobId,
        /// Directory for the results.
        #[arg(long, short, default_value = ".")]
        output: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the agents of the configured manager, or remove one.
    Agents {
        #[command(subcommand)]
        action: Option<AgentsAction>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Join credentials for agents.
    #[command(subcommand)]
    Token(TokenAction),
    /// The manager's certificate authority.
    #[command(subcommand)]
    Ca(CaAction),
    /// A farm on AWS or GCP: start its manager, show its instances and spend, stop it all.
    #[command(subcommand)]
    Cloud(crate::cloud_cmd::CloudAction),
}

#[derive(Debug, Subcommand)]
pub enum AgentsAction {
    /// Remove an agent: its certificate is refused from now on, its chunks are requeued.
    Remove {
        /// The agent's id, as `blendfleet agents` lists it.
        agent: fleet_protocol::AgentId,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a single-use join credential for one agent.
    Create {
        /// Minutes the credential stays valid.
        #[arg(long, default_value_t = 60)]
        ttl_minutes: u64,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// Print the CA certificate's SHA-256 fingerprint: what clients and agents pin.
    Show {
        /// The manager's state directory.
        #[arg(long, env = "BLENDFLEET_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
}

impl Command {
    /// Log level when `BLENDFLEET_LOG` is not set: long-running services log their work,
    /// interactive commands only warnings.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Self::Manager(_) | Self::Agent(_) => "info",
            _ => "warn",
        }
    }
}

/// Which manager to talk to, when not a local farm.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Connection string `https://USER@HOST:PORT/#ca=sha256:…` as printed by `blendfleet
    /// manager`; the password comes from `BLENDFLEET_PASSWORD`.
    #[arg(long, env = "BLENDFLEET_MANAGER")]
    pub manager: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The .blend file.
    pub file: PathBuf,
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub farm: FarmArgs,
    /// Directory for the results: `<name>_<frame>.exr` (merged multilayer) and `.png`.
    #[arg(long, short, default_value = ".")]
    pub output: PathBuf,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Frames: `7`, `1-10` or `1-10x2`. Default: the scene's current frame.
    #[arg(long, short)]
    pub frames: Option<FrameRange>,
    /// Render the scene's whole frame range (start to end, with its step).
    #[arg(long, short, conflicts_with = "frames")]
    pub animation: bool,
    /// Samples per pixel. Default: the scene's.
    #[arg(long, short)]
    pub samples: Option<u32>,
    /// Output size `WIDTHxHEIGHT`. Default: the scene's.
    #[arg(long)]
    pub resolution: Option<Resolution>,
    /// Flat image written beside each merged EXR: `png` or `exr` (none).
    #[arg(long, default_value = "png")]
    pub format: OutputFormat,
    /// Cycles seed for every chunk. Default: the scene's.
    #[arg(long)]
    pub seed: Option<u32>,
    /// Largest chunk of samples one agent renders at a time.
    #[arg(long)]
    pub max_chunk: Option<u32>,
    /// Smallest chunk of samples (except a frame's last).
    #[arg(long)]
    pub min_chunk: Option<u32>,
    /// How frames are spread over agents: `auto` (whole frames while there are more frames
    /// than agents, then split), `split` (every frame's samples split) or `whole`.
    #[arg(long, default_value = "auto")]
    pub frame_mode: fleet_protocol::FrameMode,
}

#[derive(Debug, Args)]
pub struct FarmArgs {
    /// Local agents to start when no manager is configured.
    #[arg(long, default_value_t = 2)]
    pub agents: u32,
    /// Render threads per local agent. Default: the cores divided among the agents.
    #[arg(long)]
    pub agent_threads: Option<u32>,
    /// The Blender to render with: a `blender` executable, or a Python with pip `bpy`.
    #[arg(long, env = "BLENDFLEET_BLENDER")]
    pub blender: Option<PathBuf>,
    /// Keep the local farm's state directory (logs, database) in this directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub farm: FarmArgs,
    /// Directory for the demo scene and the results.
    #[arg(long, short, default_value = "blendfleet-demo")]
    pub output: PathBuf,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ManagerArgs {
    /// State directory: CA, database, uploads, results.
    #[arg(long, env = "BLENDFLEET_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address to listen on. Use 0.0.0.0:8443 to serve other machines.
    #[arg(long, default_value = "127.0.0.1:8443", env = "BLENDFLEET_LISTEN")]
    pub listen: SocketAddr,
    /// Another host name or address clients use; added to the server certificate.
    #[arg(long = "public-name")]
    pub public_names: Vec<String>,
    /// Basic-auth user name.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Local agents to run as child processes.
    #[arg(long, default_value_t = 0)]
    pub local_agents: u32,
    /// Render threads per local agent. Default: the cores divided among the agents.
    #[arg(long)]
    pub agent_threads: Option<u32>,
    /// The Blender local agents render with.
    #[arg(long, env = "BLENDFLEET_BLENDER")]
    pub blender: Option<PathBuf>,
    /// The Blender that post-processes finished frames (denoise, compositor, the scene's
    /// output format); a `blender` executable or a Python with pip `bpy`. Default: the
    /// agents' Blender. One with OpenImageDenoise is needed for denoising.
    #[arg(long, env = "BLENDFLEET_POST_BLENDER")]
    pub post_blender: Option<PathBuf>,
    /// Seconds without a heartbeat after which a lease lapses and its chunk is requeued.
    #[arg(long, default_value_t = 30)]
    pub lease_timeout: u64,
    /// A file holding the argon2 hash (`$argon2id$…`) of the password to set; the password
    /// itself stays with whoever made the hash (`blendfleet cloud up`).
    #[arg(long, env = "BLENDFLEET_PASSWORD_HASH_FILE")]
    pub password_hash_file: Option<PathBuf>,
    /// Scale cloud agents with the queue as this cloud config says (see docs/cloud.md).
    #[arg(long, env = "BLENDFLEET_CLOUD_CONFIG")]
    pub cloud_config: Option<PathBuf>,
    /// On a cloud instance started by `blendfleet cloud up`: read the cloud config and this
    /// instance's private address from the `gcp` or `aws` metadata server.
    #[arg(long, conflicts_with = "cloud_config")]
    pub cloud_config_from_metadata: Option<String>,
    /// Another start-up script for agents than the provider-scripts/agent-startup.sh built in.
    #[arg(long, env = "BLENDFLEET_AGENT_SCRIPT_FILE")]
    pub agent_script: Option<PathBuf>,
    /// The URL cloud agents reach this manager at, `https://PRIVATE-ADDRESS:PORT`. Default:
    /// the cloud config's `manager.url`.
    #[arg(long, env = "BLENDFLEET_AGENT_URL")]
    pub agent_url: Option<String>,
    /// What an idle cloud manager does after terminating its agents: `terminate` its own
    /// instance, `poweroff`, or `none`.
    #[arg(long, default_value = "terminate", value_parser = ["terminate", "poweroff", "none"])]
    pub self_shutdown: String,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The manager, `https://HOST:PORT`.
    #[arg(long, env = "BLENDFLEET_MANAGER_URL")]
    pub manager: String,
    /// SHA-256 fingerprint of the manager's CA, as `blendfleet manager` prints it.
    #[arg(long, env = "BLENDFLEET_CA_FINGERPRINT")]
    pub ca_fingerprint: fleet_tls::Fingerprint,
    /// Name shown in the manager's agent list. Default: the host name.
    #[arg(long)]
    pub name: Option<String>,
    /// Render threads; 0 uses every core.
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// The Blender to render with: a `blender` executable, or a Python with pip `bpy`.
    #[arg(long, env = "BLENDFLEET_BLENDER")]
    pub blender: Option<PathBuf>,
    /// Cache and scratch directory.
    #[arg(long, env = "BLENDFLEET_AGENT_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Seconds of rendering between uploads: a preemption loses at most one such piece.
    #[arg(long, default_value_t = 10.0)]
    pub piece_seconds: f64,
    /// Seconds the agent may take, on SIGTERM, to upload what it rendered and hand the rest
    /// of its lease back before it exits.
    #[arg(long, default_value_t = 20.0)]
    pub stop_deadline: f64,
    /// Watch the cloud's metadata server for a Spot preemption notice and stop as on
    /// SIGTERM when it comes: `gcp`, `aws` or `none`.
    #[arg(long, default_value = "none")]
    pub preemption_notice: fleet_agent::preemption::NoticeSource,
    /// The metadata server to watch instead of the provider's own (`http://HOST:PORT`).
    #[arg(long)]
    pub metadata_url: Option<String>,
}

/// Runs a command.
pub async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Render(args) => crate::render::render(args).await,
        Command::Demo(args) => crate::render::demo(args).await,
        Command::Manager(args) => crate::manager_cmd::run(args).await,
        Command::Agent(args) => crate::agent_cmd::run(args).await,
        Command::Jobs(remote) => crate::jobs_cmd::jobs(&remote).await,
        Command::Status { job, remote } => crate::jobs_cmd::status(job, &remote).await,
        Command::Cancel { job, remote } => crate::jobs_cmd::cancel(job, &remote).await,
        Command::Download {
            job,
            output,
            remote,
        } => crate::jobs_cmd::download(job, &output, &remote).await,
        Command::Agents {
            action: None,
            remote,
        } => crate::jobs_cmd::agents(&remote).await,
        Command::Agents {
            action: Some(AgentsAction::Remove { agent }),
            remote,
        } => crate::jobs_cmd::remove_agent(agent, &remote).await,
        Command::Token(TokenAction::Create {
            ttl_minutes,
            remote,
        }) => crate::jobs_cmd::create_token(ttl_minutes, &remote).await,
        Command::Ca(CaAction::Show { state_dir }) => crate::manager_cmd::show_ca(state_dir),
        Command::Cloud(action) => crate::cloud_cmd::run(action).await,
    }
}

/// Frames to render from the arguments and the scene.
impl JobArgs {
    pub fn frame_range(
        &self,
        scene: Option<&fleet_blender::SceneInfo>,
    ) -> anyhow::Result<FrameRange> {
        if let Some(frames) = self.frames {
            return Ok(frames);
        }
        let Some(scene) = scene else {
            anyhow::bail!("cannot read the scene here; say which frames to render with --frames");
        };
        Ok(if self.animation {
            FrameRange {
                start: scene.frame_start,
                end: scene.frame_end,
                step: scene.frame_step.max(1),
            }
        } else {
            FrameRange::single(scene.frame_current)
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn render_arguments_parse() {
        let cli = Cli::try_parse_from([
            "blendfleet",
            "render",
            "shot.blend",
            "--frames",
            "1-3",
            "--samples",
            "48",
            "--agents",
            "3",
            "--agent-threads",
            "1",
            "--output",
            "out",
            "--resolution",
            "64x48",
        ])
        .unwrap();
        let Command::Render(args) = cli.command else {
            panic!("not a render command");
        };
        assert_eq!(
            args.job.frames,
            Some(FrameRange {
                start: 1,
                end: 3,
                step: 1
            })
        );
        assert_eq!(args.job.samples, Some(48));
        assert_eq!(args.farm.agents, 3);
        assert_eq!(
            args.job.resolution,
            Some(Resolution {
                width: 64,
                height: 48
            })
        );
    }

    #[test]
    fn bad_values_are_explained() {
        let error = Cli::try_parse_from(["blendfleet", "render", "a.blend", "--frames", "x"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("frame range"), "{error}");
    }
}
