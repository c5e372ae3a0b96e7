//! The BlendFleet manager.
pub mod store;
