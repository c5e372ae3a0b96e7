//! `blendfleet manager` and `blendfleet ca`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fleet_client::ConnectionSettings;
use fleet_manager::{Limits, ManagerConfig, RunningManager};
use fleet_protocol::Secret;

use crate::cli::ManagerArgs;
use crate::connection::ENV_PASSWORD;
use crate::farm::LocalAgents;
use crate::output;

/// How long the join credential printed at start-up is valid.
const BANNER_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// `$XDG_DATA_HOME/blendfleet` or `~/.local/share/blendfleet`.
pub fn data_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set; pass --state-dir")?;
    Ok(base.join("blendfleet"))
}

fn state_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir),
        None => Ok(data_dir()?.join("manager")),
    }
}

pub async fn run(args: ManagerArgs) -> anyhow::Result<ExitCode> {
    let state_dir = state_dir(args.state_dir)?;
    let mut config = ManagerConfig::new(state_dir.clone());
    config.listen = args.listen;
    config.public_names = args.public_names;
    config.user = args.user;
    config.password = std::env::var(ENV_PASSWORD).ok().map(Secret::new);
    config.limits = Limits {
        lease_timeout: Duration::from_secs(args.lease_timeout.max(1)),
        ..Limits::default()
    };
    if let Some(path) = &args.password_hash_file {
        let hash = std::fs::read_to_string(path)
            .with_context(|| format!("reading the password hash `{}`", path.display()))?;
        config.password_hash = Some(hash.trim().to_owned());
    }
    config.post_blender =
        crate::farm::post_blender(args.post_blender.as_deref(), args.blender.as_deref());
    let mut agent_url = args.agent_url.clone();
    let cloud = match (&args.cloud_config, &args.cloud_config_from_metadata) {
        (Some(path), _) => Some(
            fleet_cloud::CloudConfig::load(path)
                .with_context(|| format!("loading the cloud config `{}`", path.display()))?,
        ),
        (None, Some(provider)) => {
            let found = crate::cloud_cmd::metadata::read(provider)
                .await
                .context("reading the cloud config from the instance metadata")?;
            agent_url = agent_url.or(Some(found.agent_url));
            Some(found.config)
        }
        (None, None) => None,
    };
    let mut manager = fleet_manager::start(config)
        .await
        .with_context(|| format!("starting the manager in `{}`", state_dir.display()))?;
    print_welcome(&manager)?;
    if let Some(cloud) = cloud {
        start_scaler(
            &mut manager,
            cloud,
            args.agent_script.as_deref(),
            agent_url,
            &args.self_shutdown,
        )
        .await?;
    }

    let mut agents = if args.local_agents > 0 {
        let agents = LocalAgents::spawn(
            &manager,
            args.local_agents,
            args.agent_threads,
            args.blender.as_deref(),
            &state_dir.join("agents"),
            false,
        )?;
        output::line(format!("started {} local agents", args.local_agents));
        Some(agents)
    } else {
        None
    };
    let shutdown = fleet_agent::shutdown_on_signals();
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    if let Some(agents) = agents.take() {
        agents.stop().await;
    }
    manager.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn start_scaler(
    manager: &mut RunningManager,
    cloud: fleet_cloud::CloudConfig,
    agent_script: Option<&std::path::Path>,
    agent_url: Option<String>,
    self_shutdown: &str,
) -> anyhow::Result<()> {
    use fleet_manager::scaler::{ScalerSetup, ShutdownAction};
    let agent_script = match agent_script {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading `{}`", path.display()))?,
        None => crate::cloud_cmd::AGENT_SCRIPT.to_owned(),
    };
    let manager_url = agent_url
        .or_else(|| Some(cloud.manager.url.clone()).filter(|url| !url.is_empty()))
        .context(
            "say where agents reach this manager: --agent-url or manager.url in the cloud config",
        )?;
    let shutdown = match self_shutdown {
        "terminate" => ShutdownAction::TerminateManagerInstance,
        "poweroff" => ShutdownAction::Command(vec!["poweroff".into()]),
        _ => ShutdownAction::Nothing,
    };
    let provider = crate::cloud_cmd::provider(&cloud).await?;
    provider.prepare(&cloud.farm).await?;
    output::line(format!(
        "  scaling {} agents of farm `{}` on {} (at most {})",
        cloud.agent_machine_type(),
        cloud.farm,
        cloud.provider.as_str(),
        cloud.scaling.max_agents
    ));
    manager.start_scaler(ScalerSetup {
        provider,
        config: cloud,
        agent_script,
        manager_url,
        ca_fingerprint: manager.fingerprint.to_string(),
        shutdown,
    });
    Ok(())
}

fn print_welcome(manager: &RunningManager) -> anyhow::Result<()> {
    let settings = ConnectionSettings {
        url: manager.url(),
        user: manager.user.clone(),
        password: Secret::new(""),
        ca_fingerprint: manager.fingerprint,
    };
    output::line(format!("BlendFleet manager listening on {}", manager.url()));
    output::line(format!("  CA fingerprint: {}", manager.fingerprint));
    output::line(format!("  user:           {}", manager.user));
    match &manager.generated_password {
        Some(password) => output::line(format!(
            "  password:       {} (generated now and shown only once; stored hashed)",
            password.expose()
        )),
        None => output::line(format!(
            "  password:       unchanged (set {ENV_PASSWORD} when starting to replace it)"
        )),
    }
    output::line(format!(
        "  connection:     {}",
        settings.connection_string()?
    ));
    let token = manager.create_join_token(BANNER_TOKEN_TTL)?;
    output::line(format!(
        "  agents join with: BLENDFLEET_JOIN_TOKEN={} blendfleet agent --manager {} --ca-fingerprint {}",
        token.token.expose(),
        manager.url(),
        manager.fingerprint
    ));
    output::line(
        "  (that join credential admits one agent within an hour; `blendfleet token create` makes more)",
    );
    Ok(())
}

pub fn show_ca(explicit: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = state_dir(explicit)?.join("tls");
    let cert = dir.join("ca.pem");
    if !cert.exists() {
        anyhow::bail!(
            "no certificate authority in `{}`: start `blendfleet manager` once to create it",
            dir.display()
        );
    }
    let ca = fleet_tls::CertificateAuthority::load(&cert, &dir.join("ca.key"))
        .with_context(|| format!("reading the CA in `{}`", dir.display()))?;
    output::line(ca.fingerprint());
    Ok(ExitCode::SUCCESS)
}
