//! Local agents as child processes, and the throwaway local farm `render` starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleet_client::{Client, ConnectionSettings};
use fleet_manager::{ManagerConfig, RunningManager};
use tokio::process::{Child, Command};

use crate::agent_cmd::ENV_JOIN_TOKEN;

/// How long a local agent's join credential is valid: long enough for a slow start.
const LOCAL_TOKEN_TTL: Duration = Duration::from_secs(600);

/// How long local agents get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `blendfleet agent` processes started by this process.
pub struct LocalAgents {
    children: Vec<LocalAgent>,
}

struct LocalAgent {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

/// Render threads for each of `agents` agents sharing this machine.
pub fn threads_per_agent(agents: u32, explicit: Option<u32>) -> u32 {
    explicit.unwrap_or_else(|| {
        let cores =
            std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1));
        (cores / agents.max(1)).max(1)
    })
}

impl LocalAgents {
    /// Starts `count` agents joined to `manager`, each with its own work directory under
    /// `root`. With `log_to_files` their logs go to `root/agent-N.log`, else to stderr.
    pub fn spawn(
        manager: &RunningManager,
        count: u32,
        threads: Option<u32>,
        blender: Option<&Path>,
        root: &Path,
        log_to_files: bool,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the blendfleet executable")?;
        let threads = threads_per_agent(count, threads);
        std::fs::create_dir_all(root).with_context(|| format!("creating `{}`", root.display()))?;
        let mut children = Vec::new();
        for index in 1..=count {
            let name = format!("local-{index}");
            let mut command = Command::new(&exe);
            command
                .arg("agent")
                .arg("--manager")
                .arg(manager.url())
                .arg("--ca-fingerprint")
                .arg(manager.fingerprint.to_string())
                .arg("--name")
                .arg(&name)
                .arg("--threads")
                .arg(threads.to_string())
                .arg("--work-dir")
                .arg(root.join(&name))
                .env(
                    ENV_JOIN_TOKEN,
                    manager.create_join_token(LOCAL_TOKEN_TTL)?.token.expose(),
                )
                .stdin(Stdio::null())
                .kill_on_drop(true);
            if let Some(blender) = blender {
                command.arg("--blender").arg(blender);
            }
            let log = if log_to_files {
                let path = root.join(format!("{name}.log"));
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("creating `{}`", path.display()))?;
                command.stdout(file.try_clone()?).stderr(file);
                Some(path)
            } else {
                None
            };
            // SIGTERM, not SIGKILL: an agent told so stops its Blender on the way out.
            fleet_blender::die_with_parent(&mut command, libc::SIGTERM);
            let child = command
                .spawn()
                .with_context(|| format!("starting agent `{name}`"))?;
            children.push(LocalAgent { name, child, log });
        }
        Ok(Self { children })
    }

    /// Waits until `count` agents have joined, failing early when one of them exits.
    pub async fn wait_joined(&mut self, client: &Client, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let wanted = self.children.len();
        loop {
            for agent in &mut self.children {
                if let Some(status) = agent.child.try_wait()? {
                    let tail = agent.log_tail();
                    anyhow::bail!(
                        "agent `{}` exited ({status}) before joining{tail}",
                        agent.name
                    );
                }
            }
            let joined = client.agents().await?.len();
            if joined >= wanted {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("only {joined} of {wanted} local agents joined within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Names and log files of the agents.
    pub fn logs(&self) -> Vec<(String, Option<PathBuf>)> {
        self.children
            .iter()
            .map(|agent| (agent.name.clone(), agent.log.clone()))
            .collect()
    }

    /// Asks every agent to stop (SIGTERM), then kills those still running after a grace
    /// period.
    pub async fn stop(mut self) {
        for agent in &self.children {
            if let Some(pid) = agent.child.id().and_then(|pid| i32::try_from(pid).ok()) {
                // SAFETY: kill(2) with a pid of our own child process and a valid signal.
                #[expect(unsafe_code, reason = "sending SIGTERM needs libc::kill")]
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for agent in &mut self.children {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(remaining, agent.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(agent = %agent.name, "agent did not stop in time; killing it");
                let _ = agent.child.kill().await;
            }
        }
    }
}

impl LocalAgent {
    fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!(":\n{tail}")
    }
}

/// A manager with local agents, started for one `render` and torn down after it.
pub struct LocalFarm {
    pub manager: RunningManager,
    pub agents: LocalAgents,
    pub settings: ConnectionSettings,
    _temporary: Option<tempfile::TempDir>,
}

impl LocalFarm {
    /// Starts the farm: a manager on a free loopback port with fresh certificates and
    /// credentials, and `count` agents.
    pub async fn start(
        count: u32,
        threads: Option<u32>,
        blender: Option<&Path>,
        state_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let (root, temporary) = match state_dir {
            Some(dir) => (dir.to_owned(), None),
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("blendfleet-farm-")
                    .tempdir()
                    .context("creating a directory for the local farm")?;
                (temporary.path().to_owned(), Some(temporary))
            }
        };
        let password = fleet_manager::auth::generate_secret();
        let mut config = ManagerConfig::new(root.join("manager"));
        config.listen = "127.0.0.1:0".parse()?;
        config.password = Some(password.clone());
        config.post_blender = post_blender(None, blender);
        let manager = fleet_manager::start(config)
            .await
            .context("starting the local manager")?;
        let settings = ConnectionSettings {
            url: manager.url(),
            user: manager.user.clone(),
            password,
            ca_fingerprint: manager.fingerprint,
        };
        let agents = LocalAgents::spawn(
            &manager,
            count,
            threads,
            blender,
            &root.join("agents"),
            true,
        )?;
        Ok(Self {
            manager,
            agents,
            settings,
            _temporary: temporary,
        })
    }

    /// Stops the agents, then the manager, and removes a temporary state directory.
    pub async fn stop(self) {
        self.agents.stop().await;
        self.manager.shutdown().await;
    }
}

/// The Blender that post-processes finished frames on the manager: `explicit`, else
/// `BLENDFLEET_POST_BLENDER`, else the agents' Blender as [`BlenderCommand::discover`] finds
/// it. `None`, with a warning, when there is none: frames are then delivered as merged.
pub fn post_blender(
    explicit: Option<&Path>,
    agents: Option<&Path>,
) -> Option<fleet_blender::BlenderCommand> {
    let from_env = std::env::var_os(ENV_POST_BLENDER).map(std::path::PathBuf::from);
    let chosen = explicit.or(from_env.as_deref()).or(agents);
    match fleet_blender::BlenderCommand::discover(chosen) {
        Ok(command) => Some(command),
        Err(error) => {
            tracing::warn!(%error, "no Blender for post-processing; frames are delivered as merged");
            None
        }
    }
}

/// Names the Blender that post-processes frames, when it is not the agents' Blender.
pub const ENV_POST_BLENDER: &str = "BLENDFLEET_POST_BLENDER";
