//! `blendfleet cloud up | status | down`: a manager on a small on-demand instance, reached
//! with a CA fingerprint read through the cloud's own API; its agents and spend; a sweep of
//! everything the farm's tag or label names.

pub mod metadata;
mod providers;
pub mod saved;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use fleet_client::ConnectionSettings;
use fleet_cloud::{CloudConfig, Instance, InstanceRequest, Role};
use fleet_protocol::{format_usd, Secret};

pub use providers::provider;
use saved::SavedFarm;

use crate::output;

/// `blendfleet cloud …`.
#[derive(Debug, Subcommand)]
pub enum CloudAction {
    /// Start the farm's manager on an on-demand instance and save how to reach it.
    Up(UpArgs),
    /// The farm's instances and what they have cost.
    Status(CloudArgs),
    /// Terminate every instance of the farm (agents and manager).
    Down(CloudArgs),
    /// The saved connection of the farm's manager (written by `up`), to reconnect with.
    Connection(CloudArgs),
}

#[derive(Debug, Args)]
pub struct CloudArgs {
    /// The cloud config (TOML, see docs/cloud.md).
    #[arg(long, env = "BLENDFLEET_CLOUD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// A directory with another manager-startup.sh to boot the manager with. Default: the
    /// script built into this binary (provider-scripts/manager-startup.sh).
    #[arg(long, env = "BLENDFLEET_SCRIPTS")]
    pub scripts: Option<PathBuf>,
    /// Basic-auth user of the manager.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Minutes to wait for the manager to publish its CA fingerprint.
    #[arg(long, env = "BLENDFLEET_CLOUD_WAIT_MINUTES", default_value_t = 20)]
    pub wait_minutes: u64,
}

pub async fn run(action: CloudAction) -> anyhow::Result<ExitCode> {
    match action {
        CloudAction::Up(args) => up(args).await,
        CloudAction::Status(args) => status(&args).await,
        CloudAction::Down(args) => down(&args).await,
        CloudAction::Connection(args) => connection(&args),
    }
}

/// `--config`, or `~/.config/blendfleet/cloud.toml`.
fn load_config(args: &CloudArgs) -> anyhow::Result<CloudConfig> {
    let path = match &args.config {
        Some(path) => path.clone(),
        None => saved::config_dir()?.join("cloud.toml"),
    };
    if !path.exists() {
        anyhow::bail!(
            "no cloud config at `{}`: write one (see docs/cloud.md) or pass --config",
            path.display()
        );
    }
    Ok(CloudConfig::load(&path)?)
}

/// provider-scripts/manager-startup.sh, as this binary was built with it.
pub const MANAGER_SCRIPT: &str = include_str!("../../../../provider-scripts/manager-startup.sh");
/// provider-scripts/agent-startup.sh, as this binary was built with it: what the manager's
/// scaler boots agents with unless `--agent-script` names another.
pub const AGENT_SCRIPT: &str = include_str!("../../../../provider-scripts/agent-startup.sh");

fn read_script(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading `{}`: pass --scripts with the directory holding the provider scripts",
            path.display()
        )
    })
}

/// The settings a manager instance starts with (GCP metadata keys; AWS `export` lines), as
/// provider-scripts/manager-startup.sh reads them. The manager itself reads the cloud config
/// back from the metadata (`--cloud-config-from-metadata`).
pub fn manager_settings(
    config: &CloudConfig,
    user: &str,
    password_hash: &str,
) -> BTreeMap<String, String> {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let mut args = format!("--cloud-config-from-metadata {}", config.provider.as_str());
    if user != "admin" {
        args.push_str(&format!(" --user {user}"));
    }
    let mut settings = config.instance_settings();
    settings.extend([
        ("BLENDFLEET_FARM".to_owned(), config.farm.clone()),
        (
            "BLENDFLEET_PASSWORD_HASH".to_owned(),
            password_hash.to_owned(),
        ),
        (
            "BLENDFLEET_LISTEN".to_owned(),
            format!("0.0.0.0:{}", config.manager.port),
        ),
        ("BLENDFLEET_CLOUD_CONFIG".to_owned(), b64(&config.to_toml())),
        ("BLENDFLEET_MANAGER_ARGS".to_owned(), args),
    ]);
    settings
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.cloud)?;
    // With --json, stdout carries only the result; progress goes to stderr.
    let json = args.cloud.json;
    let say = |text: String| {
        if json {
            eprintln!("{text}");
        } else {
            output::line(text);
        }
    };
    let user_ok = !args.user.is_empty()
        && args
            .user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !user_ok {
        anyhow::bail!(
            "--user `{}`: use letters, digits, `.`, `_` or `-`",
            args.user
        );
    }
    let manager_script = match &args.scripts {
        Some(dir) => read_script(dir, "manager-startup.sh")?,
        None => MANAGER_SCRIPT.to_owned(),
    };
    let provider = provider(&config).await?;
    let existing: Vec<Instance> = provider
        .list(&config.farm)
        .await?
        .into_iter()
        .filter(|i| i.role == Some(Role::Manager) && i.state.is_alive())
        .collect();
    if let Some(manager) = existing.first() {
        anyhow::bail!(
            "farm `{}` already has a manager ({} in {}, {}): use `blendfleet cloud status`, or `blendfleet cloud down` first",
            config.farm, manager.name, manager.zone, manager.state
        );
    }
    provider.prepare(&config.farm).await?;

    // The password is made here and never leaves this machine; the instance gets its hash.
    let password = fleet_manager::auth::generate_secret();
    let setting = fleet_manager::auth::Credentials::new(&args.user, &password).to_setting();
    let hash = setting
        .split_once(':')
        .map(|(_, hash)| hash.to_owned())
        .context("hashing the password")?;
    let request = InstanceRequest {
        farm: config.farm.clone(),
        name: format!("{}-manager", config.farm),
        role: Role::Manager,
        machine_type: config.manager_machine_type().to_owned(),
        spot: false,
        startup_script: manager_script,
        settings: manager_settings(&config, &args.user, &hash),
    };
    let launched = fleet_cloud::launch(provider.as_ref(), &request, false).await;
    for refusal in &launched.events {
        say(format!("  {} refused: {}", refusal.zone, refusal.refused));
    }
    let instance = launched.instance?;
    say(format!(
        "started manager {} ({}) in {}; waiting for its CA fingerprint on the serial console",
        instance.name, instance.machine_type, instance.zone
    ));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_minutes * 60);
    let fingerprint = loop {
        if let Some(fingerprint) = provider.ca_fingerprint(&instance).await.ok().flatten() {
            break fingerprint;
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the manager did not publish its CA fingerprint within {} minutes; it is still running: look at its serial console, then `blendfleet cloud down`",
                args.wait_minutes
            );
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    let address = provider
        .list(&config.farm)
        .await?
        .into_iter()
        .find(|i| i.id == instance.id)
        .and_then(|i| i.public_address)
        .context("the manager instance has no public address")?;
    let url = format!("https://{address}:{}", config.manager.port);
    let settings = ConnectionSettings {
        url: url.clone(),
        user: args.user.clone(),
        password: password.clone(),
        ca_fingerprint: fingerprint.parse().map_err(|_| {
            anyhow::anyhow!("the published fingerprint `{fingerprint}` is malformed")
        })?,
    };
    let connection = settings.connection_string()?;
    let saved = SavedFarm {
        farm: config.farm.clone(),
        provider: config.provider.as_str().to_owned(),
        instance_id: instance.id.clone(),
        instance_name: instance.name.clone(),
        zone: instance.zone.clone(),
        url,
        user: args.user.clone(),
        password: password.expose().to_owned(),
        ca_fingerprint: fingerprint.clone(),
        connection: connection.clone(),
    };
    let path = saved.save()?;
    say(format!("manager up: {connection}"));
    say(format!(
        "  CA fingerprint (from the cloud API): {fingerprint}"
    ));
    if json {
        say(format!(
            "  password saved in `{}`, mode 0600",
            path.display()
        ));
    } else {
        say(format!(
            "  password: {} (saved in `{}`, mode 0600)",
            password.expose(),
            path.display()
        ));
    }
    save_client_default(&saved, &say)?;

    // Check the pinned connection (the manager may still be finishing its start).
    let client = fleet_client::Client::new(&settings)?;
    for attempt in 0..30 {
        match client.info().await {
            Ok(info) => {
                say(format!("  connected: {} {}", info.server, info.version));
                break;
            }
            Err(error) if attempt == 29 => {
                say(format!(
                    "  not reachable yet ({error}); `blendfleet cloud status` tries again"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
    if json {
        output::json(&saved_json(&saved, &path))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes the cloud manager the default of `blendfleet jobs/status/render` when no other
/// manager is configured.
fn save_client_default(saved: &SavedFarm, say: &dyn Fn(String)) -> anyhow::Result<()> {
    let path = saved::config_dir()?.join("client.toml");
    if path.exists() {
        say(format!(
            "  `{}` names another manager; use --manager with the connection above",
            path.display()
        ));
        return Ok(());
    }
    let text = toml::to_string(&BTreeMap::from([
        ("manager", saved.connection.as_str()),
        ("password", saved.password.as_str()),
    ]))?;
    saved::write_private(&path, &text)?;
    say(format!(
        "  saved as the default manager in `{}`",
        path.display()
    ));
    Ok(())
}

async fn status(args: &CloudArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args)?;
    let provider = provider(&config).await?;
    let instances = provider.list(&config.farm).await?;
    let prices = config.price_table();
    let mut manager_error = None;
    let farm = match SavedFarm::load(&config.farm)? {
        Some(saved) => {
            let settings = ConnectionSettings::from_connection_string(
                &saved.connection,
                Secret::new(saved.password.clone()),
            )?;
            match fleet_client::Client::new(&settings)?.farm().await {
                Ok(farm) => Some(farm),
                Err(error) => {
                    if args.json {
                        manager_error = Some(error.to_string());
                    } else {
                        output::line(format!("manager not reachable: {error}"));
                    }
                    None
                }
            }
        }
        None => None,
    };
    if args.json {
        output::json(&serde_json::json!({
            "instances": instances,
            "farm": farm,
            "manager_error": manager_error,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format!(
        "farm `{}` on {}: {} instances",
        config.farm,
        config.provider.as_str(),
        instances.len()
    ));
    for instance in &instances {
        let hourly = prices
            .hourly(
                config.provider.as_str(),
                &instance.machine_type,
                instance.spot,
            )
            .map_or_else(|| "price unknown".to_owned(), |p| format!("${p:.4}/h"));
        output::line(format!(
            "  {:<28} {:<8} {:<12} {:<14} {:<10} {} {}",
            instance.name,
            instance.role.map_or("?", Role::as_str),
            instance.state.to_string(),
            instance.machine_type,
            if instance.spot { "spot" } else { "on-demand" },
            instance.zone,
            hourly
        ));
    }
    if let Some(farm) = farm {
        output::line(format!(
            "spend so far: {} (prices of {})",
            format_usd(farm.total_cost_micro_usd, 4),
            farm.prices_retrieved.as_deref().unwrap_or("?")
        ));
        for job in &farm.jobs {
            output::line(format!(
                "  job {:>5}: {} for {} agent-seconds",
                job.job_id,
                format_usd(job.cost_micro_usd, 4),
                job.agent_seconds
            ));
        }
        for event in farm.events.iter().rev().take(10) {
            output::line(format!("  {event}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn down(args: &CloudArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args)?;
    let provider = provider(&config).await?;
    let swept =
        fleet_cloud::sweep(provider.as_ref(), &config.farm, Duration::from_secs(600)).await?;
    if args.json {
        output::json(&swept)?;
    } else if swept.is_empty() {
        output::line(format!("farm `{}`: nothing was running", config.farm));
    } else {
        for instance in &swept {
            output::line(format!(
                "terminated {} ({}, {}, {})",
                instance.name,
                instance.role.map_or("?", Role::as_str),
                instance.machine_type,
                instance.zone
            ));
        }
        output::line(format!(
            "farm `{}`: {} instances terminated",
            config.farm,
            swept.len()
        ));
    }
    SavedFarm::remove(&config.farm)?;
    Ok(ExitCode::SUCCESS)
}

/// What `up --json` and `connection --json` print.
fn saved_json(saved: &SavedFarm, path: &Path) -> serde_json::Value {
    serde_json::json!({
        "farm": saved.farm,
        "provider": saved.provider,
        "connection": saved.connection,
        "url": saved.url,
        "user": saved.user,
        "password": saved.password,
        "ca_fingerprint": saved.ca_fingerprint,
        "manager_instance": saved.instance_name,
        "saved": path,
    })
}

fn connection(args: &CloudArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args)?;
    let path = saved::path(&config.farm)?;
    let Some(saved) = SavedFarm::load(&config.farm)? else {
        anyhow::bail!(
            "farm `{}` has no saved manager connection (`{}` does not exist): start the farm with `blendfleet cloud up`",
            config.farm,
            path.display()
        );
    };
    if args.json {
        output::json(&saved_json(&saved, &path))?;
    } else {
        output::line(format!("connection: {}", saved.connection));
        output::line(format!("  password saved in `{}`", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}
