//! Table definitions and schema versioning.

use rusqlite::Connection;

/// Each entry brings the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    samples     INTEGER NOT NULL,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER
);
CREATE TABLE frames (
    id            INTEGER PRIMARY KEY,
    job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    frame         INTEGER NOT NULL,
    samples       INTEGER NOT NULL,
    next_sample   INTEGER NOT NULL DEFAULT 0,
    samples_done  INTEGER NOT NULL DEFAULT 0,
    chunks_merged INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL DEFAULT 'pending',
    UNIQUE (job_id, frame)
);
CREATE TABLE chunks (
    id           INTEGER PRIMARY KEY,
    frame_id     INTEGER NOT NULL REFERENCES frames (id) ON DELETE CASCADE,
    sample_start INTEGER NOT NULL,
    sample_count INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX chunks_by_frame ON chunks (frame_id, state);
CREATE TABLE agents (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL,
    secret_hash      TEXT NOT NULL UNIQUE,
    threads          INTEGER NOT NULL,
    blender_version  TEXT NOT NULL,
    joined_at        INTEGER NOT NULL,
    last_seen        INTEGER NOT NULL,
    samples_rendered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE leases (
    id         INTEGER PRIMARY KEY,
    chunk_id   INTEGER NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    agent_id   INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX leases_active ON leases (state, expires_at);
",
    r"
-- Agents are identified by the fingerprint of the client certificate the CA signed for them,
-- not by a bearer secret; agents that joined with a secret are revoked and must join again.
CREATE TABLE agents_new (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL,
    cert_fingerprint TEXT UNIQUE,
    threads          INTEGER NOT NULL,
    blender_version  TEXT NOT NULL,
    joined_at        INTEGER NOT NULL,
    last_seen        INTEGER NOT NULL,
    samples_rendered INTEGER NOT NULL DEFAULT 0,
    revoked_at       INTEGER
);
INSERT INTO agents_new (id, name, threads, blender_version, joined_at, last_seen,
                        samples_rendered, revoked_at)
    SELECT id, name, threads, blender_version, joined_at, last_seen, samples_rendered, joined_at
    FROM agents;
DROP TABLE agents;
ALTER TABLE agents_new RENAME TO agents;
CREATE TABLE join_tokens (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    agent_id   INTEGER
);
",
    r"
-- What each agent rendered on each job and how long it took: its speed, for chunk sizes.
CREATE TABLE agent_speed (
    agent_id INTEGER NOT NULL,
    job_id   INTEGER NOT NULL,
    samples  REAL NOT NULL,
    seconds  REAL NOT NULL,
    PRIMARY KEY (agent_id, job_id)
);
",
    r"
-- Failures per agent and job: an agent that keeps failing a job gets no more of it.
ALTER TABLE agent_speed RENAME TO agent_jobs;
ALTER TABLE agent_jobs ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
",
    r"
-- Cloud instance time and its estimated cost, per job (0: not working on a job) and instance.
CREATE TABLE spend (
    job_id       INTEGER NOT NULL,
    instance     TEXT NOT NULL,
    machine_type TEXT NOT NULL,
    seconds      REAL NOT NULL DEFAULT 0,
    cost_usd     REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, instance)
);
",
];

/// Applies every migration the database has not seen yet.
///
/// Foreign keys are off while migrations run, so that a table can be rebuilt (SQLite's way
/// to change a column) without its dependents being deleted by the cascade; the keys are
/// checked afterwards.
pub fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    let version: usize = connection.pragma_query_value(None, "user_version", |row| {
        row.get::<_, i64>(0)
            .map(|v| usize::try_from(v).unwrap_or(0))
    })?;
    if version >= MIGRATIONS.len() {
        return Ok(());
    }
    connection.pragma_update(None, "foreign_keys", "OFF")?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        connection.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            index + 1
        ))?;
    }
    let violations: i64 =
        connection.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    if violations > 0 {
        return Err(rusqlite::Error::InvalidQuery);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_databases_keep_their_leases_and_their_agents_must_join_again() {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .unwrap();
        connection
            .execute_batch(&format!("{}; PRAGMA user_version = 1;", MIGRATIONS[0]))
            .unwrap();
        connection
            .execute_batch(
                "INSERT INTO jobs (id, name, spec, state, samples, created_at)
                     VALUES (1, 'j', '{}', 'running', 4, 0);
                 INSERT INTO frames (id, job_id, frame, samples) VALUES (1, 1, 1, 4);
                 INSERT INTO chunks (id, frame_id, sample_start, sample_count, state)
                     VALUES (1, 1, 0, 4, 'leased');
                 INSERT INTO agents (id, name, secret_hash, threads, blender_version, joined_at, last_seen)
                     VALUES (1, 'old', 'h', 1, '3.4.1', 5, 5);
                 INSERT INTO leases (chunk_id, agent_id, state, created_at, expires_at)
                     VALUES (1, 1, 'active', 0, 10);",
            )
            .unwrap();
        migrate(&connection).unwrap();
        let revoked: Option<i64> = connection
            .query_row(
                "SELECT revoked_at FROM agents WHERE name = 'old'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(revoked, Some(5));
        let leases: i64 = connection
            .query_row("SELECT COUNT(*) FROM leases", [], |row| row.get(0))
            .unwrap();
        assert_eq!(leases, 1, "rebuilding the agents table kept the leases");
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(usize::try_from(version).unwrap(), MIGRATIONS.len());
        let foreign_keys: i64 = connection
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!(foreign_keys, 1);
        // Migrating again changes nothing.
        migrate(&connection).unwrap();
    }
}
