//! The manager's API over real TLS on loopback, driven through `fleet-client`.

#![allow(clippy::unwrap_used)]

mod agents;
mod hostile;
mod jobs;
mod support;
mod trust;
