//! The manager's durable state in SQLite: jobs, frames, chunks, leases, agents, settings.
//!
//! All access goes through one connection behind a mutex; every operation is a short
//! transaction, so the lock is held for microseconds.

pub mod agents;
pub mod jobs;
pub mod leases;
mod schema;
pub mod spend;
pub mod uploads;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension};

pub use leases::LeaseGrant;
pub use uploads::{FrameProgress, Piece, UploadPlan};

/// A database failure. These are bugs or disk problems, never user errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored job spec is unreadable")]
    Spec(#[from] serde_json::Error),
}

/// The state database.
pub struct Store {
    connection: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        Self::from_connection(connection)
    }

    /// A database that lives in memory only, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(connection: Connection) -> Result<Self, StoreError> {
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&connection)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (transactions
        // roll back on drop), so a poisoned lock is safe to reuse.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A value from the settings table.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let connection = self.lock();
        let value = connection
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?;
        Ok(value)
    }

    /// Stores a value in the settings table.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }
}

/// Reads a non-negative integer column (SQLite stores every integer as `i64`).
fn get_u64(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    row.get::<_, i64>(index)
        .map(|value| u64::try_from(value).unwrap_or(0))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use fleet_protocol::{ChunkPolicy, FrameRange, JobSpec, OutputFormat};

    pub fn spec(frames: FrameRange, samples: u32) -> JobSpec {
        JobSpec {
            name: None,
            main_file: "scene.blend".into(),
            files: BTreeMap::from([("scene.blend".into(), "1".repeat(64).parse().unwrap())]),
            frames,
            samples,
            resolution: None,
            output_format: OutputFormat::Png,
            seed: None,
            chunking: ChunkPolicy::default(),
            frame_mode: fleet_protocol::FrameMode::Auto,
            start: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.setting("k").unwrap(), None);
            store.set_setting("k", "v1").unwrap();
            store.set_setting("k", "v2").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.setting("k").unwrap().as_deref(), Some("v2"));
    }
}
