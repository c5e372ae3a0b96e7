//! Agents that joined the manager, and the join credentials they joined with.

use fleet_protocol::{AgentId, AgentInfo, AgentState, JobId};
use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// Why a join credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("unknown join credential")]
    Unknown,
    #[error("this join credential was used already; ask for a new one")]
    Used,
    #[error("this join credential expired; ask for a new one")]
    Expired,
}

/// The outcome of a join.
#[derive(Debug)]
pub enum Joined<T> {
    /// The agent joined; `T` is what the signing step returned.
    Agent(AgentId, T),
    /// The credential was refused.
    Refused(JoinRefusal),
}

/// How a certificate fingerprint relates to the agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentLookup {
    /// A current agent.
    Active(AgentId),
    /// An agent that was removed; its certificate is revoked.
    Revoked(AgentId),
    /// No agent holds this certificate.
    Unknown,
}

impl Store {
    /// Stores a join credential (by hash) that expires at `expires_at`.
    pub fn add_join_token(
        &self,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO join_tokens (token_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
            params![token_hash, now, expires_at],
        )?;
        Ok(())
    }

    /// Spends a join credential and records a new agent, in one transaction. `sign` gets
    /// the new agent's id and returns its certificate's fingerprint and whatever else the
    /// caller needs; when it fails, nothing is recorded and the credential stays unused.
    pub fn join_agent<T, E>(
        &self,
        token_hash: &str,
        now: i64,
        name: &str,
        threads: u32,
        blender_version: &str,
        sign: impl FnOnce(AgentId) -> Result<(String, T), E>,
    ) -> Result<Result<Joined<T>, E>, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let token: Option<(i64, i64, Option<i64>)> = transaction
            .query_row(
                "SELECT id, expires_at, used_at FROM join_tokens WHERE token_hash = ?1",
                [token_hash],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let token_id = match token {
            None => return Ok(Ok(Joined::Refused(JoinRefusal::Unknown))),
            Some((_, _, Some(_))) => return Ok(Ok(Joined::Refused(JoinRefusal::Used))),
            Some((_, expires_at, None)) if expires_at <= now => {
                return Ok(Ok(Joined::Refused(JoinRefusal::Expired)))
            }
            Some((id, _, None)) => id,
        };
        transaction.execute(
            "INSERT INTO agents (name, threads, blender_version, joined_at, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![name, threads, blender_version, now],
        )?;
        let agent = AgentId(transaction.last_insert_rowid());
        let (fingerprint, extra) = match sign(agent) {
            Ok(signed) => signed,
            Err(error) => return Ok(Err(error)),
        };
        transaction.execute(
            "UPDATE agents SET cert_fingerprint = ?2 WHERE id = ?1",
            params![agent.0, fingerprint],
        )?;
        transaction.execute(
            "UPDATE join_tokens SET used_at = ?2, agent_id = ?3 WHERE id = ?1",
            params![token_id, now, agent.0],
        )?;
        transaction.commit()?;
        Ok(Ok(Joined::Agent(agent, extra)))
    }

    /// Finds the agent holding a certificate and, when it is current, notes that it was
    /// seen now.
    pub fn touch_agent(&self, fingerprint: &str, now: i64) -> Result<AgentLookup, StoreError> {
        let connection = self.lock();
        let found: Option<(i64, Option<i64>)> = connection
            .query_row(
                "SELECT id, revoked_at FROM agents WHERE cert_fingerprint = ?1",
                [fingerprint],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(match found {
            None => AgentLookup::Unknown,
            Some((id, Some(_))) => AgentLookup::Revoked(AgentId(id)),
            Some((id, None)) => {
                connection.execute(
                    "UPDATE agents SET last_seen = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
                AgentLookup::Active(AgentId(id))
            }
        })
    }

    /// Removes an agent: its certificate is refused from now on and its leases go back to
    /// the queue. Returns whether there was such a current agent.
    pub fn revoke_agent(&self, id: AgentId, now: i64) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let revoked = transaction.execute(
            "UPDATE agents SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id.0, now],
        )? > 0;
        if revoked {
            let chunks: Vec<i64> = {
                let mut query = transaction.prepare(
                    "UPDATE leases SET state = 'revoked' WHERE agent_id = ?1 AND state = 'active'
                     RETURNING chunk_id",
                )?;
                let rows = query.query_map([id.0], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for chunk in chunks {
                transaction.execute(
                    "UPDATE chunks SET state = 'queued' WHERE id = ?1 AND state = 'leased'",
                    [chunk],
                )?;
            }
        }
        transaction.commit()?;
        Ok(revoked)
    }

    /// The current agents, with their state as of `now`.
    pub fn list_agents(&self, now: i64, lost_after_ms: i64) -> Result<Vec<AgentInfo>, StoreError> {
        let connection = self.lock();
        let mut query = connection.prepare(
            "SELECT a.id, a.name, a.threads, a.blender_version, a.last_seen, a.samples_rendered,
                    (SELECT f.job_id FROM leases l JOIN chunks c ON c.id = l.chunk_id
                     JOIN frames f ON f.id = c.frame_id
                     WHERE l.agent_id = a.id AND l.state = 'active' LIMIT 1)
             FROM agents a WHERE a.revoked_at IS NULL ORDER BY a.id",
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
}

#[cfg(test)]
pub(crate) mod tests {
    use std::convert::Infallible;

    use super::*;

    /// Joins an agent with a fresh credential and the given certificate fingerprint.
    pub fn join(store: &Store, name: &str, fingerprint: &str, now: i64) -> AgentId {
        let token = format!("token-{name}-{fingerprint}");
        store.add_join_token(&token, now, now + 60_000).unwrap();
        let joined = store
            .join_agent(&token, now, name, 1, "3.4.1", |_| {
                Ok::<_, Infallible>((fingerprint.to_owned(), ()))
            })
            .unwrap()
            .unwrap();
        match joined {
            Joined::Agent(id, ()) => id,
            Joined::Refused(refusal) => panic!("join refused: {refusal}"),
        }
    }

    #[test]
    fn agents_are_found_by_certificate_and_go_lost() {
        let store = Store::in_memory().unwrap();
        let id = join(&store, "render-1", "fp1", 1_000);
        assert_eq!(
            store.touch_agent("fp1", 2_000).unwrap(),
            AgentLookup::Active(id)
        );
        assert_eq!(
            store.touch_agent("nope", 2_000).unwrap(),
            AgentLookup::Unknown
        );
        let agents = store.list_agents(3_000, 5_000).unwrap();
        assert_eq!(agents[0].state, AgentState::Idle);
        assert_eq!(agents[0].last_seen_ms, 2_000);
        let agents = store.list_agents(10_000, 5_000).unwrap();
        assert_eq!(agents[0].state, AgentState::Lost);
    }

    #[test]
    fn join_credentials_are_single_use_and_expire() {
        let store = Store::in_memory().unwrap();
        store.add_join_token("t", 0, 100).unwrap();
        let sign = |_| Ok::<_, Infallible>(("fp".to_owned(), ()));
        let first = store
            .join_agent("t", 10, "a", 1, "v", sign)
            .unwrap()
            .unwrap();
        assert!(matches!(first, Joined::Agent(..)));
        let again = store
            .join_agent("t", 11, "b", 1, "v", sign)
            .unwrap()
            .unwrap();
        assert!(matches!(again, Joined::Refused(JoinRefusal::Used)));
        store.add_join_token("late", 0, 100).unwrap();
        let late = store
            .join_agent("late", 100, "c", 1, "v", sign)
            .unwrap()
            .unwrap();
        assert!(matches!(late, Joined::Refused(JoinRefusal::Expired)));
        let unknown = store
            .join_agent("nope", 1, "d", 1, "v", sign)
            .unwrap()
            .unwrap();
        assert!(matches!(unknown, Joined::Refused(JoinRefusal::Unknown)));
        assert_eq!(store.list_agents(100, 1000).unwrap().len(), 1);
    }

    #[test]
    fn a_failed_signature_leaves_the_credential_unused() {
        let store = Store::in_memory().unwrap();
        store.add_join_token("t", 0, 100).unwrap();
        let failed = store
            .join_agent("t", 1, "a", 1, "v", |_| {
                Err::<(String, ()), _>("bad request")
            })
            .unwrap();
        assert_eq!(failed.unwrap_err(), "bad request");
        assert!(store.list_agents(1, 1000).unwrap().is_empty());
        let sign = |_| Ok::<_, Infallible>(("fp".to_owned(), ()));
        let retry = store
            .join_agent("t", 2, "a", 1, "v", sign)
            .unwrap()
            .unwrap();
        assert!(matches!(retry, Joined::Agent(..)));
    }

    #[test]
    fn revoked_agents_are_refused_and_lose_their_leases() {
        let store = Store::in_memory().unwrap();
        let id = join(&store, "a", "fp", 0);
        store
            .create_job(
                &crate::store::test_support::spec(fleet_protocol::FrameRange::single(1), 4),
                0,
            )
            .unwrap();
        let lease = store.acquire_lease(id, 0, 10_000).unwrap().unwrap();
        assert!(store.revoke_agent(id, 1).unwrap());
        assert!(!store.revoke_agent(id, 2).unwrap());
        assert_eq!(
            store.touch_agent("fp", 3).unwrap(),
            AgentLookup::Revoked(id)
        );
        assert_eq!(
            store.heartbeat(lease.lease_id, id, 3, 10_000).unwrap(),
            None
        );
        assert!(store.list_agents(3, 10_000).unwrap().is_empty());
        let other = join(&store, "b", "fp2", 4);
        let again = store.acquire_lease(other, 4, 10_000).unwrap().unwrap();
        assert_eq!(again.chunk_id, lease.chunk_id);
    }
}
