//! Typed HTTPS client for the BlendFleet manager.
//!
//! [`Client`] speaks the user API with basic auth; [`AgentClient`] speaks the agent API with
//! the secret an agent receives when it joins. Both verify the manager against a pinned CA
//! fingerprint ([`fleet_tls::pinned_client_config`]).

mod agent;
mod error;
mod hash;
mod http;
mod user;

pub use agent::AgentClient;
pub use error::ClientError;
pub use hash::hash_file;
pub use user::{Client, ConnectionSettings};
