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
];

/// Applies every migration the database has not seen yet.
pub fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    let version: usize = connection.pragma_query_value(None, "user_version", |row| {
        row.get::<_, i64>(0)
            .map(|v| usize::try_from(v).unwrap_or(0))
    })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        connection.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            index + 1
        ))?;
    }
    Ok(())
}
