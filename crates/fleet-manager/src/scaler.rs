//! Cloud scaling: starts spot agents while work is queued (up to `max_agents`), each with its
//! own join credential; terminates agents idle longer than `agent_idle_timeout` and
//! instances that never joined; records instance time × price as spend per job and stops
//! starting agents for a job whose budget is used up; when nothing is queued or running and
//! no client has called for `manager_idle_timeout`, terminates every agent and then runs the
//! self-shutdown action (on a cloud manager: terminate its own instance).
//!
//! [`Scaler::tick`] is one pass, with the time passed in, so tests drive it with short
//! timeouts; [`run`] calls it every `interval_secs`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_cloud::{
    instance_name, launch, CloudConfig, CloudError, Instance, InstanceRequest, InstanceState,
    PriceTable, Provider, Role,
};
use fleet_protocol::{
    AgentInfo, AgentState, FarmInstance, FarmStatus, JobId, JobSpend, JobSpendLine, JobState,
};
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::store::{Store, StoreError};

/// How many scaling events the farm status keeps.
const EVENTS_KEPT: usize = 50;

/// What the farm endpoint and job statuses read; updated by the scaler, touched by clients.
#[derive(Debug, Default)]
pub struct FarmState {
    status: Mutex<FarmStatus>,
    budget_usd: Mutex<Option<f64>>,
    /// Last authenticated client request, milliseconds since the epoch.
    client_activity_ms: AtomicI64,
}

impl FarmState {
    /// Notes a client request.
    pub fn touch(&self, now_ms: i64) {
        self.client_activity_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// The farm overview as of the scaler's last pass.
    pub fn status(&self) -> FarmStatus {
        lock(&self.status).clone()
    }

    /// A job's spend and budget; `None` when nothing was spent and no budget applies.
    pub fn job_spend(&self, store: &Store, job: JobId) -> Result<Option<JobSpend>, StoreError> {
        let spend = store.job_spend(job)?;
        let budget = *lock(&self.budget_usd);
        if spend.seconds == 0.0 && budget.is_none() {
            return Ok(None);
        }
        Ok(Some(JobSpend {
            cost_micro_usd: micro(spend.cost_usd),
            agent_seconds: whole_seconds(spend.seconds),
            budget_micro_usd: budget.map(micro),
            budget_reached: budget.is_some_and(|budget| spend.cost_usd >= budget),
        }))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn micro(usd: f64) -> u64 {
    (usd * 1e6).round().max(0.0) as u64
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole_seconds(seconds: f64) -> u64 {
    seconds.round().max(0.0) as u64
}

/// What the manager does once it has been idle too long and its agents are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownAction {
    /// Only stop scaling (a manager on the user's own machine).
    Nothing,
    /// Terminate the farm's manager instance through the provider.
    TerminateManagerInstance,
    /// Run a command (e.g. `poweroff`: AWS managers start with shutdown = terminate).
    Command(Vec<String>),
}

/// Everything the scaler needs.
pub struct ScalerSetup {
    pub provider: Arc<dyn Provider>,
    pub config: CloudConfig,
    /// The agents' start-up script (provider-scripts/agent-startup.sh).
    pub agent_script: String,
    /// The URL agents reach the manager at.
    pub manager_url: String,
    /// The manager's CA fingerprint, which agents pin.
    pub ca_fingerprint: String,
    pub shutdown: ShutdownAction,
}

/// What a pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// Names of the instances started.
    pub started: Vec<String>,
    /// Names of the instances terminated.
    pub terminated: Vec<String>,
    /// The manager was idle too long: agents are gone and the shutdown action ran.
    pub shut_down: bool,
}

/// The scaler's memory between passes.
pub struct Scaler {
    setup: ScalerSetup,
    prices: PriceTable,
    idle_since: HashMap<String, i64>,
    /// When instances that have not joined yet were created (or first seen).
    booting_since: HashMap<String, i64>,
    last_tick_ms: Option<i64>,
    last_activity_ms: i64,
    over_budget: HashSet<JobId>,
    events: VecDeque<String>,
    stopped: bool,
}

impl Scaler {
    /// A scaler that counts the manager active from `now_ms`.
    pub fn new(setup: ScalerSetup, now_ms: i64) -> Self {
        let prices = setup.config.price_table();
        Self {
            setup,
            prices,
            idle_since: HashMap::new(),
            booting_since: HashMap::new(),
            last_tick_ms: None,
            last_activity_ms: now_ms,
            over_budget: HashSet::new(),
            events: VecDeque::new(),
            stopped: false,
        }
    }

    fn event(&mut self, now_ms: i64, text: String) {
        tracing::info!(target: "fleet_manager::scaler", "{text}");
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        let when = time_text(now_ms);
        self.events.push_back(format!("{when} {text}"));
    }

    fn hourly(&self, instance: &Instance) -> Option<f64> {
        self.prices.hourly(
            self.setup.config.provider.as_str(),
            &instance.machine_type,
            instance.spot,
        )
    }

    /// One pass at `now_ms`.
    pub async fn tick(
        &mut self,
        store: &Store,
        farm: &FarmState,
        lost_after_ms: i64,
        now_ms: i64,
    ) -> Result<TickOutcome, ScalerError> {
        let mut outcome = TickOutcome::default();
        if self.stopped {
            return Ok(outcome);
        }
        *lock(&farm.budget_usd) = self.setup.config.job_budget_usd;
        let config = self.setup.config.clone();
        let scaling = &config.scaling;
        let provider = Arc::clone(&self.setup.provider);
        let instances = provider.list(&config.farm).await?;
        let agents: BTreeMap<String, AgentInfo> = store
            .list_agents(now_ms, lost_after_ms)?
            .into_iter()
            .map(|agent| (agent.name.clone(), agent))
            .collect();

        self.record_spend(store, &instances, &agents, now_ms)?;

        // Work left, leaving out jobs whose budget is used up.
        let mut remaining: u64 = 0;
        let mut busy = false;
        for job in store.list_jobs()? {
            if !matches!(job.state, JobState::Queued | JobState::Running) {
                continue;
            }
            let spend = store.job_spend(job.id)?;
            if config
                .job_budget_usd
                .is_some_and(|budget| spend.cost_usd >= budget)
            {
                if self.over_budget.insert(job.id) {
                    self.event(
                        now_ms,
                        format!(
                            "job {} reached its budget (${:.2} spent); no more agents start for it",
                            job.id, spend.cost_usd
                        ),
                    );
                }
                continue;
            }
            busy = true;
            remaining += job.samples_total.saturating_sub(job.samples_done);
        }
        let desired = if remaining == 0 {
            0
        } else {
            remaining
                .div_ceil(u64::from(scaling.samples_per_agent))
                .min(u64::from(scaling.max_agents))
        };

        // The manager's own idleness.
        self.last_activity_ms = self
            .last_activity_ms
            .max(farm.client_activity_ms.load(Ordering::Relaxed));
        if busy {
            self.last_activity_ms = now_ms;
        }
        let idle_for = now_ms - self.last_activity_ms;
        if idle_for >= millis(scaling.manager_idle_timeout_secs) {
            self.shut_down(store, &agents, &instances, now_ms, &mut outcome)
                .await?;
            self.publish(farm, store, &instances)?;
            return Ok(outcome);
        }

        // Idle agents, and instances that never joined.
        let mut alive: Vec<&Instance> = Vec::new();
        let mut doomed: Vec<Instance> = Vec::new();
        for instance in instances.iter().filter(|i| i.role == Some(Role::Agent)) {
            if going(instance) {
                continue;
            }
            if agents.contains_key(&instance.name) {
                self.booting_since.remove(&instance.name);
            }
            match agents.get(&instance.name) {
                Some(agent) if agent.state == AgentState::Busy => {
                    self.idle_since.remove(&instance.name);
                    alive.push(instance);
                }
                Some(agent) => {
                    let since = *self
                        .idle_since
                        .entry(instance.name.clone())
                        .or_insert(now_ms);
                    if now_ms - since >= millis(scaling.agent_idle_timeout_secs) {
                        let why = if agent.state == AgentState::Lost {
                            "silent"
                        } else {
                            "idle"
                        };
                        self.event(
                            now_ms,
                            format!(
                                "terminating agent {}: {why} for {}s",
                                instance.name,
                                (now_ms - since) / 1000
                            ),
                        );
                        store.revoke_agent(agent.id, now_ms)?;
                        doomed.push(instance.clone());
                    } else {
                        alive.push(instance);
                    }
                }
                None => {
                    // A clock ahead of ours must not postpone the timeout forever.
                    let created = instance.created_at_ms.unwrap_or(now_ms).min(now_ms);
                    let since = *self
                        .booting_since
                        .entry(instance.name.clone())
                        .or_insert(created);
                    if now_ms - since >= millis(scaling.agent_boot_timeout_secs) {
                        self.event(
                            now_ms,
                            format!(
                                "terminating agent {}: did not join within {}s",
                                instance.name, scaling.agent_boot_timeout_secs
                            ),
                        );
                        doomed.push(instance.clone());
                    } else {
                        alive.push(instance);
                    }
                }
            }
        }
        if !doomed.is_empty() {
            provider.terminate(&doomed).await?;
            for instance in &doomed {
                self.idle_since.remove(&instance.name);
                self.booting_since.remove(&instance.name);
                outcome.terminated.push(instance.name.clone());
            }
        }

        // Start what the queue needs.
        let have = alive.len() as u64;
        for _ in have..desired {
            match self.start_agent(store, now_ms).await {
                Ok(name) => outcome.started.push(name),
                Err(error) => {
                    self.event(now_ms, format!("could not start an agent: {error}"));
                    break;
                }
            }
        }
        let current = provider.list(&config.farm).await?;
        self.publish(farm, store, &current)?;
        Ok(outcome)
    }

    fn record_spend(
        &mut self,
        store: &Store,
        instances: &[Instance],
        agents: &BTreeMap<String, AgentInfo>,
        now_ms: i64,
    ) -> Result<(), ScalerError> {
        let Some(last) = self.last_tick_ms.replace(now_ms) else {
            return Ok(());
        };
        for instance in instances {
            if !matches!(
                instance.state,
                InstanceState::Pending | InstanceState::Running
            ) {
                continue;
            }
            let from = instance
                .created_at_ms
                .map_or(last, |created| created.max(last));
            #[allow(clippy::cast_precision_loss)]
            let seconds = (now_ms - from).max(0) as f64 / 1000.0;
            if seconds == 0.0 {
                continue;
            }
            let cost = self.hourly(instance).unwrap_or(0.0) * seconds / 3600.0;
            let job = match instance.role {
                Some(Role::Agent) => agents.get(&instance.name).and_then(|agent| agent.job_id),
                _ => None,
            };
            store.add_spend(job, &instance.name, &instance.machine_type, seconds, cost)?;
        }
        Ok(())
    }

    async fn start_agent(&mut self, store: &Store, now_ms: i64) -> Result<String, CloudError> {
        let config = self.setup.config.clone();
        let name = instance_name(&format!("{}-agent", config.farm));
        let ttl = Duration::from_secs(config.scaling.agent_boot_timeout_secs.max(60));
        let token = crate::new_join_token(store, ttl).map_err(|error| CloudError::Api {
            provider: "manager",
            call: "create_join_token",
            message: error.to_string(),
        })?;
        let mut settings = config.instance_settings();
        settings.extend([
            (
                "BLENDFLEET_MANAGER".to_owned(),
                self.setup.manager_url.clone(),
            ),
            (
                "BLENDFLEET_CA_FINGERPRINT".to_owned(),
                self.setup.ca_fingerprint.clone(),
            ),
            (
                "BLENDFLEET_JOIN_TOKEN".to_owned(),
                token.token.expose().to_owned(),
            ),
            ("BLENDFLEET_AGENT_NAME".to_owned(), name.clone()),
        ]);
        let request = InstanceRequest {
            farm: config.farm.clone(),
            name: name.clone(),
            role: Role::Agent,
            machine_type: config.agent_machine_type().to_owned(),
            spot: config.agents.spot,
            startup_script: self.setup.agent_script.clone(),
            settings,
        };
        let launched = launch(
            self.setup.provider.as_ref(),
            &request,
            config.agents.on_demand_fallback,
        )
        .await;
        for refusal in &launched.events {
            let market = if refusal.spot { "spot" } else { "on-demand" };
            self.event(
                now_ms,
                format!(
                    "{} {market} refused in {}: {}",
                    name, refusal.zone, refusal.refused
                ),
            );
        }
        let instance = launched.instance?;
        let market = if instance.spot { "spot" } else { "on-demand" };
        self.event(
            now_ms,
            format!(
                "started agent {} ({} {market}) in {}",
                instance.name, instance.machine_type, instance.zone
            ),
        );
        Ok(instance.name)
    }

    async fn shut_down(
        &mut self,
        store: &Store,
        agents: &BTreeMap<String, AgentInfo>,
        instances: &[Instance],
        now_ms: i64,
        outcome: &mut TickOutcome,
    ) -> Result<(), ScalerError> {
        let idle_secs = self.setup.config.scaling.manager_idle_timeout_secs;
        self.event(
            now_ms,
            format!("manager idle for {idle_secs}s: terminating every agent, then shutting down"),
        );
        let doomed: Vec<Instance> = instances
            .iter()
            .filter(|i| i.role == Some(Role::Agent) && !going(i))
            .cloned()
            .collect();
        for instance in &doomed {
            if let Some(agent) = agents.get(&instance.name) {
                store.revoke_agent(agent.id, now_ms)?;
            }
        }
        self.setup.provider.terminate(&doomed).await?;
        outcome.terminated = doomed.iter().map(|i| i.name.clone()).collect();
        self.stopped = true;
        outcome.shut_down = true;
        match self.setup.shutdown.clone() {
            ShutdownAction::Nothing => {
                self.event(
                    now_ms,
                    "agents terminated; the manager keeps running (no self-shutdown action)".into(),
                );
            }
            ShutdownAction::TerminateManagerInstance => {
                let managers: Vec<Instance> = instances
                    .iter()
                    .filter(|i| i.role == Some(Role::Manager) && !going(i))
                    .cloned()
                    .collect();
                self.event(
                    now_ms,
                    format!("terminating the manager instance ({})", managers.len()),
                );
                self.setup.provider.terminate(&managers).await?;
                outcome
                    .terminated
                    .extend(managers.into_iter().map(|i| i.name));
            }
            ShutdownAction::Command(argv) => {
                self.event(now_ms, format!("running {argv:?}"));
                if let Some((program, args)) = argv.split_first() {
                    if let Err(error) = tokio::process::Command::new(program)
                        .args(args)
                        .status()
                        .await
                    {
                        tracing::error!(%error, "the self-shutdown command failed");
                    }
                }
            }
        }
        Ok(())
    }

    fn publish(
        &self,
        farm: &FarmState,
        store: &Store,
        instances: &[Instance],
    ) -> Result<(), ScalerError> {
        let (total, jobs) = store.farm_spend()?;
        let config = &self.setup.config;
        let status = FarmStatus {
            provider: Some(self.setup.provider.kind().to_owned()),
            farm: Some(config.farm.clone()),
            max_agents: config.scaling.max_agents,
            instances: instances
                .iter()
                .map(|i| FarmInstance {
                    name: i.name.clone(),
                    role: i.role.map_or("unknown", Role::as_str).to_owned(),
                    zone: i.zone.clone(),
                    state: i.state.to_string(),
                    machine_type: i.machine_type.clone(),
                    spot: i.spot,
                    hourly_micro_usd: self.hourly(i).map(micro),
                })
                .collect(),
            total_cost_micro_usd: micro(total.cost_usd),
            jobs: jobs
                .into_iter()
                .map(|(job_id, spend)| JobSpendLine {
                    job_id,
                    cost_micro_usd: micro(spend.cost_usd),
                    agent_seconds: whole_seconds(spend.seconds),
                })
                .collect(),
            events: self.events.iter().cloned().collect(),
            prices_retrieved: Some(self.prices.retrieved.clone()),
        };
        *lock(&farm.status) = status;
        Ok(())
    }
}

/// Already shutting down or gone.
fn going(instance: &Instance) -> bool {
    matches!(
        instance.state,
        InstanceState::Stopping | InstanceState::Terminated
    )
}

fn millis(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn time_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A pass failed; the next one tries again.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs the scaler until the manager shuts down or the scaler has shut the farm down.
pub async fn run(state: AppState, setup: ScalerSetup, shutdown: CancellationToken) {
    let interval = Duration::from_secs(setup.config.scaling.interval_secs.max(1));
    let mut scaler = Scaler::new(setup, crate::store::now_ms());
    let lost_after = i64::try_from(state.limits.lease_timeout.as_millis()).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
        }
        match scaler
            .tick(
                &state.store,
                &state.farm,
                lost_after,
                crate::store::now_ms(),
            )
            .await
        {
            Ok(outcome) if outcome.shut_down => break,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(error = %crate::api::error_chain(&error), "scaler pass failed")
            }
        }
    }
}

#[cfg(test)]
mod tests;
