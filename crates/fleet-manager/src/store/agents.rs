//! Agents that joined the manager.

use fleet_protocol::{AgentId, AgentInfo, AgentState, JobId};
use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

impl Store {
    /// Records a new agent; `secret_hash` identifies it from now on.
    pub fn add_agent(
        &self,
        name: &str,
        secret_hash: &str,
        threads: u32,
        blender_version: &str,
        now: i64,
    ) -> Result<AgentId, StoreError> {
        let connection = self.lock();
        connection.execute(
            "INSERT INTO agents (name, secret_hash, threads, blender_version, joined_at, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![name, secret_hash, threads, blender_version, now],
        )?;
        Ok(AgentId(connection.last_insert_rowid()))
    }

    /// Finds the agent a secret belongs to and notes that it was seen now.
    pub fn touch_agent(&self, secret_hash: &str, now: i64) -> Result<Option<AgentId>, StoreError> {
        let connection = self.lock();
        let id = connection
            .query_row(
                "UPDATE agents SET last_seen = ?2 WHERE secret_hash = ?1 RETURNING id",
                params![secret_hash, now],
                |row| row.get(0),
            )
            .optional()?;
        Ok(id.map(AgentId))
    }

    /// All agents, with their state as of `now`.
    pub fn list_agents(&self, now: i64, lost_after_ms: i64) -> Result<Vec<AgentInfo>, StoreError> {
        let connection = self.lock();
        let mut query = connection.prepare(
            "SELECT a.id, a.name, a.threads, a.blender_version, a.last_seen, a.samples_rendered,
                    (SELECT f.job_id FROM leases l JOIN chunks c ON c.id = l.chunk_id
                     JOIN frames f ON f.id = c.frame_id
                     WHERE l.agent_id = a.id AND l.state = 'active' LIMIT 1)
             FROM agents a ORDER BY a.id",
        )?;
        let rows = query.query_map([], |row| {
            let last_seen: i64 = row.get(4)?;
            let job: Option<i64> = row.get(6)?;
            let state = if job.is_some() {
                AgentState::Busy
            } else if last_seen >= now - lost_after_ms {
                AgentState::Idle
            } else {
                AgentState::Lost
            };
            Ok(AgentInfo {
                id: AgentId(row.get(0)?),
                name: row.get(1)?,
                threads: row.get(2)?,
                blender_version: row.get(3)?,
                last_seen_ms: last_seen,
                samples_rendered: super::get_u64(row, 5)?,
                job_id: job.map(JobId),
                state,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The name of an agent.
    pub fn agent_name(&self, id: AgentId) -> Result<Option<String>, StoreError> {
        let connection = self.lock();
        Ok(connection
            .query_row("SELECT name FROM agents WHERE id = ?1", [id.0], |row| {
                row.get(0)
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_found_by_secret_and_go_lost() {
        let store = Store::in_memory().unwrap();
        let id = store
            .add_agent("render-1", "h1", 2, "3.4.1", 1_000)
            .unwrap();
        assert_eq!(store.touch_agent("h1", 2_000).unwrap(), Some(id));
        assert_eq!(store.touch_agent("nope", 2_000).unwrap(), None);
        let agents = store.list_agents(3_000, 5_000).unwrap();
        assert_eq!(agents[0].state, AgentState::Idle);
        assert_eq!(agents[0].last_seen_ms, 2_000);
        let agents = store.list_agents(10_000, 5_000).unwrap();
        assert_eq!(agents[0].state, AgentState::Lost);
    }
}
