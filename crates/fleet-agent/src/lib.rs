//! The BlendFleet render agent.
//!
//! [`run`] joins the manager and works until cancelled: it leases sample chunks, prepares
//! the job's project tree from a content-addressed cache ([`files`]), renders each chunk in
//! a resident Blender ([`fleet_blender::Worker`]) while heartbeating, and uploads the result.

mod files;
mod identity;
mod lease;
mod pieces;
pub mod preemption;
mod work;

use std::path::PathBuf;
use std::time::Duration;

use fleet_blender::BlenderCommand;
use fleet_protocol::Secret;
use fleet_tls::Fingerprint;
use tokio_util::sync::CancellationToken;

use work::chain;
pub use work::run;

/// How an agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The manager, `https://host:port`.
    pub manager_url: String,
    /// Fingerprint of the manager's CA.
    pub ca_fingerprint: Fingerprint,
    /// The join credential; needed only when the work directory holds no certificate for
    /// this farm yet.
    pub join_token: Option<Secret>,
    /// A name shown in the manager's agent list.
    pub name: String,
    /// Render threads; 0 uses every core.
    pub threads: u32,
    /// The Blender to render with.
    pub blender: BlenderCommand,
    /// Where the file cache, job trees and partial renders live.
    pub work_dir: PathBuf,
    /// How long one lease request waits for work.
    pub lease_wait: Duration,
    /// How long to keep trying to reach the manager before giving up.
    pub connect_patience: Duration,
    /// A lease is rendered and uploaded in pieces of about this much rendering each, so that
    /// a preemption loses at most one piece.
    pub piece_seconds: Duration,
    /// On SIGTERM or a preemption notice, how long the agent may take to upload what is
    /// rendered and release the rest of its lease.
    pub stop_deadline: Duration,
}

/// Why an agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Blender(#[from] fleet_blender::BlenderError),
    #[error("the manager refused this agent: {0}")]
    Refused(String),
    #[error(
        "this agent has not joined the farm yet: set BLENDFLEET_JOIN_TOKEN to a join credential \
         (`blendfleet token create` on a machine that can reach the manager)"
    )]
    NoJoinToken,
    #[error(transparent)]
    Tls(#[from] fleet_tls::TlsError),
    #[error("gave up reaching the manager")]
    Unreachable(#[source] fleet_client::ClientError),
    #[error(transparent)]
    Client(#[from] fleet_client::ClientError),
    #[error("failed to prepare `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A cancellation token that fires on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        trigger.cancel();
    });
    token
}
