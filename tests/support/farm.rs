//! A manager process and agent processes that a test starts, stops and kills one by one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fleet_blender::BlenderCommand;
use fleet_client::{Client, ConnectionSettings};
use fleet_protocol::Secret;

use super::{blendfleet, blendfleet_via};

/// The password every test manager gets.
pub const PASSWORD: &str = "e2e-password";

pub struct Farm {
    pub manager: Child,
    pub agents: Vec<(String, Child)>,
    pub settings: ConnectionSettings,
    /// The join credential the manager printed when it last started.
    pub join_token: String,
    pub state: PathBuf,
    dir: PathBuf,
    host: String,
    port: u16,
    lease_timeout_secs: u32,
    starts: u32,
    /// Extra arguments of every manager start.
    manager_args: Vec<std::ffi::OsString>,
}

impl Farm {
    /// Starts a manager on a free loopback port, its state and logs in `dir`.
    pub fn start(dir: &Path, lease_timeout_secs: u32) -> Self {
        Self::start_on(dir, lease_timeout_secs, "127.0.0.1")
    }

    /// Starts a manager that post-processes finished frames with `blender`.
    pub fn start_posting(dir: &Path, lease_timeout_secs: u32, blender: &BlenderCommand) -> Self {
        Self::start_with(
            dir,
            lease_timeout_secs,
            "127.0.0.1",
            vec!["--post-blender".into(), blender.program().into()],
        )
    }

    /// Starts a manager listening on `host`.
    pub fn start_on(dir: &Path, lease_timeout_secs: u32, host: &str) -> Self {
        Self::start_with(dir, lease_timeout_secs, host, Vec::new())
    }

    fn start_with(
        dir: &Path,
        lease_timeout_secs: u32,
        host: &str,
        manager_args: Vec<std::ffi::OsString>,
    ) -> Self {
        let port = std::net::TcpListener::bind((host, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut farm = Self {
            manager: spawn_placeholder(),
            agents: Vec::new(),
            settings: ConnectionSettings {
                url: String::new(),
                user: "admin".into(),
                password: Secret::new(PASSWORD),
                ca_fingerprint: fleet_tls::Fingerprint::of_der(b""),
            },
            join_token: String::new(),
            state: dir.join("state"),
            dir: dir.to_owned(),
            host: host.to_owned(),
            port,
            lease_timeout_secs,
            starts: 0,
            manager_args,
        };
        farm.spawn_manager();
        farm
    }

    fn spawn_manager(&mut self) {
        self.starts += 1;
        let log_name = if self.starts == 1 {
            "manager".to_owned()
        } else {
            format!("manager-{}", self.starts)
        };
        let mut manager = blendfleet()
            .args([
                "manager",
                "--listen",
                &format!("{}:{}", self.host, self.port),
            ])
            .args(["--lease-timeout", &self.lease_timeout_secs.to_string()])
            .arg("--state-dir")
            .arg(&self.state)
            .args(&self.manager_args)
            .env("BLENDFLEET_PASSWORD", PASSWORD)
            .stdout(Stdio::piped())
            .stderr(log(&self.dir, &log_name))
            .spawn()
            .unwrap();
        let stdout = BufReader::new(manager.stdout.take().unwrap());
        let (mut url, mut fingerprint, mut token) = (None, None, None);
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("BlendFleet manager listening on ") {
                url = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.trim().strip_prefix("CA fingerprint:") {
                fingerprint = Some(rest.trim().parse().unwrap());
            } else if let Some(rest) = line
                .trim()
                .strip_prefix("agents join with: BLENDFLEET_JOIN_TOKEN=")
            {
                token = rest.split_whitespace().next().map(str::to_owned);
                break;
            }
        }
        self.settings.url = url.expect("the manager printed its address");
        self.settings.ca_fingerprint = fingerprint.expect("the manager printed its fingerprint");
        self.join_token = token.expect("the manager printed a join credential");
        // The previous manager was waited for (it is the placeholder or was killed).
        let mut previous = std::mem::replace(&mut self.manager, manager);
        let _ = previous.wait();
    }

    /// Kills the manager with SIGKILL and starts it again on the same port and state.
    pub fn restart_manager(&mut self) {
        self.manager.kill().unwrap();
        self.manager.wait().unwrap();
        self.spawn_manager();
    }

    pub fn client(&self) -> Client {
        Client::new(&self.settings).unwrap()
    }

    /// Starts an agent process (one render thread) with extra arguments.
    pub async fn add_agent(&mut self, name: &str, blender: &BlenderCommand, extra: &[&str]) {
        self.add_agent_via(name, blender, extra, &[]).await;
    }

    /// Starts an agent process through `wrapper` (e.g. `ip netns exec NAME`).
    pub async fn add_agent_via(
        &mut self,
        name: &str,
        blender: &BlenderCommand,
        extra: &[&str],
        wrapper: &[&str],
    ) {
        let token = self
            .client()
            .create_join_token(Duration::from_secs(300))
            .await
            .unwrap();
        let child = blendfleet_via(wrapper)
            .args(["agent", "--manager", &self.settings.url, "--ca-fingerprint"])
            .arg(self.settings.ca_fingerprint.to_string())
            .args(["--name", name, "--threads", "1", "--blender"])
            .arg(blender.program())
            .arg("--work-dir")
            .arg(self.dir.join(name))
            .args(extra)
            .env("BLENDFLEET_JOIN_TOKEN", token.token.expose())
            .stdout(Stdio::null())
            .stderr(log(&self.dir, name))
            .spawn()
            .unwrap();
        self.agents.push((name.to_owned(), child));
    }

    /// Waits until `count` agents have joined.
    pub async fn wait_for_agents(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.client().agents().await.unwrap().len() < count {
            assert!(Instant::now() < deadline, "agents did not join");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.agents.iter().find(|(n, _)| n == name).unwrap().1.id()
    }

    pub fn agent(&mut self, name: &str) -> &mut Child {
        &mut self.agents.iter_mut().find(|(n, _)| n == name).unwrap().1
    }

    /// The log of a process of this farm.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        for (_, child) in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.manager.kill();
        let _ = self.manager.wait();
    }
}

/// A finished child to hold the place of the manager until it is spawned.
fn spawn_placeholder() -> Child {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let _ = child.wait();
    child
}

/// A log file in the test's directory, kept for a failing test's post-mortem.
fn log(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()
}

/// Processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let parent = status
            .lines()
            .find_map(|line| line.strip_prefix("PPid:"))
            .and_then(|value| value.trim().parse::<u32>().ok());
        if parent == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Whether a process is alive (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| !status.contains("State:\tZ"))
        .unwrap_or(false)
}

/// Sends a signal to a process with `kill`.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}
