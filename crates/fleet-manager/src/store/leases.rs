//! Handing out sample chunks as leases, and taking the results back.

use fleet_protocol::{AgentId, ChunkId, ChunkPolicy, FrameMode, JobId, JobSpec, LeaseId};
use rusqlite::{params, OptionalExtension, Transaction};

use super::{Store, StoreError};

/// A lease just granted, with what the agent needs to render it.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub lease_id: LeaseId,
    pub chunk_id: ChunkId,
    pub job_id: JobId,
    pub frame: i32,
    pub sample_start: u32,
    pub sample_count: u32,
    pub spec: JobSpec,
}

/// What happened to a lease the agent gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// The lease was not active (expired, revoked, someone else's).
    Gone,
    /// The chunk goes back to the queue.
    Requeued,
    /// The chunk failed too often; the job failed with this message.
    JobFailed(JobId),
}

/// Split chunks hold about this much of an agent's work once its speed is known.
pub const DEFAULT_CHUNK_SECONDS: f64 = 120.0;
/// Failures of one agent on one job after which it gets no more of that job.
pub const BLOCK_AFTER_FAILURES: u32 = 2;

/// How many samples the next chunk of a frame gets.
///
/// Guided self-scheduling: each chunk takes a share of what is left, `remaining / (2 ×
/// agents)`, so early chunks are large (little overhead) and late ones small (little idle
/// time at the end of a frame), bounded by the job's [`ChunkPolicy`] and by a floor of an
/// eighth of an even share, so that chunks never shrink to a handful of samples.
pub fn chunk_size(samples: u32, remaining: u32, agents_online: u32, policy: ChunkPolicy) -> u32 {
    let agents = agents_online.max(1);
    let automatic_min = samples.div_ceil(8 * agents).max(1);
    let min = policy.min_samples.unwrap_or(automatic_min).max(1);
    let max = policy.max_samples.unwrap_or(u32::MAX).max(min);
    remaining
        .div_ceil(2 * agents)
        .clamp(min, max)
        .min(remaining)
}

impl Store {
    /// Gives `agent` the next chunk of work, if there is any, sized for chunks of about
    /// [`DEFAULT_CHUNK_SECONDS`].
    pub fn acquire_lease(
        &self,
        agent: AgentId,
        now: i64,
        lease_timeout_ms: i64,
    ) -> Result<Option<LeaseGrant>, StoreError> {
        self.acquire_lease_with(agent, now, lease_timeout_ms, DEFAULT_CHUNK_SECONDS)
    }

    /// Gives `agent` the next chunk of work, if there is any. Once the agent's speed on a
    /// job is known, a split chunk holds at most about `chunk_seconds` of its work.
    pub fn acquire_lease_with(
        &self,
        agent: AgentId,
        now: i64,
        lease_timeout_ms: i64,
        chunk_seconds: f64,
    ) -> Result<Option<LeaseGrant>, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        expire(&transaction, now)?;
        let agents_online: u32 = transaction.query_row(
            "SELECT COUNT(*) FROM agents WHERE last_seen >= ?1 AND revoked_at IS NULL",
            [now - lease_timeout_ms],
            |row| row.get(0),
        )?;
        let jobs: Vec<(i64, String)> = {
            let mut query = transaction.prepare(
                "SELECT id, spec FROM jobs WHERE state IN ('queued', 'running')
                 AND id NOT IN (SELECT job_id FROM agent_jobs WHERE agent_id = ?1 AND failures >= ?2)
                 ORDER BY id",
            )?;
            let rows = query.query_map(params![agent.0, BLOCK_AFTER_FAILURES], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (job_id, spec_text) in jobs {
            let spec: JobSpec = serde_json::from_str(&spec_text)?;
            let speed = super::uploads::speed_in(&transaction, agent, JobId(job_id))?;
            let sizing = Sizing {
                agents_online,
                speed,
                chunk_seconds,
            };
            let Some((chunk_id, frame, sample_start, sample_count)) =
                next_chunk(&transaction, job_id, &spec, &sizing)?
            else {
                continue;
            };
            transaction.execute(
                "INSERT INTO leases (chunk_id, agent_id, state, created_at, expires_at)
                 VALUES (?1, ?2, 'active', ?3, ?4)",
                params![chunk_id, agent.0, now, now + lease_timeout_ms],
            )?;
            let lease_id = transaction.last_insert_rowid();
            transaction.execute(
                "UPDATE chunks SET state = 'leased' WHERE id = ?1",
                [chunk_id],
            )?;
            transaction.execute(
                "UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, ?2)
                 WHERE id = ?1",
                params![job_id, now],
            )?;
            transaction.commit()?;
            return Ok(Some(LeaseGrant {
                lease_id: LeaseId(lease_id),
                chunk_id: ChunkId(chunk_id),
                job_id: JobId(job_id),
                frame,
                sample_start,
                sample_count,
                spec,
            }));
        }
        transaction.commit()?;
        Ok(None)
    }

    /// Extends an active lease. `None` when the lease is no longer the agent's to work on.
    pub fn heartbeat(
        &self,
        lease: LeaseId,
        agent: AgentId,
        now: i64,
        lease_timeout_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let connection = self.lock();
        let updated = connection.execute(
            "UPDATE leases SET expires_at = ?3
             WHERE id = ?1 AND agent_id = ?2 AND state = 'active' AND expires_at >= ?4",
            params![lease.0, agent.0, now + lease_timeout_ms, now],
        )?;
        Ok((updated > 0).then_some(lease_timeout_ms))
    }

    /// Returns expired leases' chunks to the queue. Returns how many leases expired.
    pub fn expire_leases(&self, now: i64) -> Result<usize, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let expired = expire(&transaction, now)?;
        transaction.commit()?;
        Ok(expired)
    }

    /// The agent could not render its chunk. After `max_attempts` failures of one chunk the
    /// job fails with the agent's message.
    pub fn fail_lease(
        &self,
        lease: LeaseId,
        agent: AgentId,
        message: &str,
        now: i64,
        max_attempts: u32,
    ) -> Result<FailOutcome, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let row: Option<(i64, i64)> = transaction
            .query_row(
                "SELECT l.chunk_id, f.job_id FROM leases l
                 JOIN chunks c ON c.id = l.chunk_id JOIN frames f ON f.id = c.frame_id
                 WHERE l.id = ?1 AND l.agent_id = ?2 AND l.state = 'active'",
                params![lease.0, agent.0],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((chunk_id, job_id)) = row else {
            return Ok(FailOutcome::Gone);
        };
        transaction.execute(
            "UPDATE leases SET state = 'failed' WHERE id = ?1",
            [lease.0],
        )?;
        let chunk_state: String = transaction.query_row(
            "SELECT state FROM chunks WHERE id = ?1",
            [chunk_id],
            |row| row.get(0),
        )?;
        if chunk_state == "merged" {
            // Another render of this chunk was merged already: nothing to retry.
            transaction.commit()?;
            return Ok(FailOutcome::Gone);
        }
        let attempts: u32 = transaction.query_row(
            "UPDATE chunks SET attempts = attempts + 1, last_error = ?2, state = 'queued'
             WHERE id = ?1 RETURNING attempts",
            params![chunk_id, message],
            |row| row.get(0),
        )?;
        let blocked_everywhere =
            count_agent_failure(&transaction, agent, JobId(job_id), message, now)?;
        let outcome = if blocked_everywhere {
            FailOutcome::JobFailed(JobId(job_id))
        } else if attempts >= max_attempts {
            let text = format!("chunk failed {attempts} times; last error: {message}");
            fail_job_in(&transaction, JobId(job_id), &text, now)?;
            FailOutcome::JobFailed(JobId(job_id))
        } else {
            FailOutcome::Requeued
        };
        transaction.commit()?;
        Ok(outcome)
    }
}

/// Expires overdue leases inside a transaction; their chunks go back to the queue.
fn expire(transaction: &Transaction<'_>, now: i64) -> Result<usize, StoreError> {
    let chunks: Vec<i64> = {
        let mut query = transaction.prepare(
            "UPDATE leases SET state = 'expired' WHERE state = 'active' AND expires_at < ?1
             RETURNING chunk_id",
        )?;
        let rows = query.query_map([now], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for chunk in &chunks {
        transaction.execute(
            "UPDATE chunks SET state = 'queued' WHERE id = ?1 AND state = 'leased'
             AND NOT EXISTS (SELECT 1 FROM leases WHERE chunk_id = ?1 AND state = 'active')",
            [chunk],
        )?;
    }
    Ok(chunks.len())
}

/// What a new chunk's size depends on.
struct Sizing {
    agents_online: u32,
    /// The agent's samples per second on this job, once known.
    speed: Option<f64>,
    chunk_seconds: f64,
}

/// Picks the job's next chunk: a requeued one first; else, by the job's frame mode, a whole
/// untouched frame, or a share of the lowest frame that still has unassigned samples.
fn next_chunk(
    transaction: &Transaction<'_>,
    job_id: i64,
    spec: &JobSpec,
    sizing: &Sizing,
) -> Result<Option<(i64, i32, u32, u32)>, StoreError> {
    let requeued = transaction
        .query_row(
            "SELECT c.id, f.frame, c.sample_start, c.sample_count FROM chunks c
             JOIN frames f ON f.id = c.frame_id
             WHERE f.job_id = ?1 AND c.state = 'queued'
             ORDER BY f.frame, c.sample_start LIMIT 1",
            [job_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    if requeued.is_some() {
        return Ok(requeued);
    }
    let untouched: u32 = transaction.query_row(
        "SELECT COUNT(*) FROM frames WHERE job_id = ?1 AND next_sample = 0",
        [job_id],
        |row| row.get(0),
    )?;
    let whole_frames = match spec.frame_mode {
        FrameMode::Whole => true,
        FrameMode::Split => false,
        FrameMode::Auto => untouched > 0 && untouched >= sizing.agents_online.max(1),
    };
    let condition = if whole_frames {
        "next_sample = 0"
    } else {
        "next_sample < samples"
    };
    let open_frame: Option<(i64, i32, u32, u32)> = transaction
        .query_row(
            &format!(
                "SELECT id, frame, samples, next_sample FROM frames
                 WHERE job_id = ?1 AND {condition} ORDER BY frame LIMIT 1"
            ),
            [job_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    let Some((frame_id, frame, samples, next_sample)) = open_frame else {
        return Ok(None);
    };
    let remaining = samples - next_sample;
    let count = if whole_frames {
        remaining
    } else {
        let guided = chunk_size(samples, remaining, sizing.agents_online, spec.chunking);
        match sizing.speed {
            // Enough for about `chunk_seconds` of this agent's work, never below the floor.
            Some(speed) => {
                let timed = (speed * sizing.chunk_seconds)
                    .ceil()
                    .clamp(1.0, f64::from(u32::MAX));
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "clamped above"
                )]
                let timed = timed as u32;
                let floor = spec.chunking.min_samples.unwrap_or(1).min(remaining);
                guided.min(timed.max(floor))
            }
            None => guided,
        }
    };
    transaction.execute(
        "UPDATE frames SET next_sample = ?2 WHERE id = ?1",
        params![frame_id, next_sample + count],
    )?;
    transaction.execute(
        "INSERT INTO chunks (frame_id, sample_start, sample_count, state) VALUES (?1, ?2, ?3, 'queued')",
        params![frame_id, next_sample, count],
    )?;
    Ok(Some((
        transaction.last_insert_rowid(),
        frame,
        next_sample,
        count,
    )))
}

/// Counts a failure of `agent` on `job`. An agent that failed a job
/// [`BLOCK_AFTER_FAILURES`] times gets no more of it; when no other agent is left to take
/// it, the job fails with `message`. Returns whether the job failed.
pub(super) fn count_agent_failure(
    transaction: &Transaction<'_>,
    agent: AgentId,
    job: JobId,
    message: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let failures: u32 = transaction.query_row(
        "INSERT INTO agent_jobs (agent_id, job_id, samples, seconds, failures)
         VALUES (?1, ?2, 0, 0, 1)
         ON CONFLICT (agent_id, job_id) DO UPDATE SET failures = failures + 1
         RETURNING failures",
        params![agent.0, job.0],
        |row| row.get(0),
    )?;
    if failures < BLOCK_AFTER_FAILURES {
        return Ok(false);
    }
    let others: u32 = transaction.query_row(
        "SELECT COUNT(*) FROM agents a WHERE a.revoked_at IS NULL AND a.id NOT IN (
             SELECT agent_id FROM agent_jobs WHERE job_id = ?1 AND failures >= ?2)",
        params![job.0, BLOCK_AFTER_FAILURES],
        |row| row.get(0),
    )?;
    if others > 0 {
        return Ok(false);
    }
    let text =
        format!("every agent failed this job {BLOCK_AFTER_FAILURES} times; last error: {message}");
    fail_job_in(transaction, job, &text, now)?;
    Ok(true)
}

/// Fails a job with a message inside a transaction and revokes its active leases.
pub(super) fn fail_job_in(
    transaction: &Transaction<'_>,
    job: JobId,
    message: &str,
    now: i64,
) -> Result<(), StoreError> {
    transaction.execute(
        "UPDATE jobs SET state = 'failed', error = ?2, finished_at = ?3
         WHERE id = ?1 AND state NOT IN ('done', 'failed', 'cancelled')",
        params![job.0, message, now],
    )?;
    transaction.execute(
        "UPDATE leases SET state = 'revoked' WHERE state = 'active' AND chunk_id IN (
             SELECT c.id FROM chunks c JOIN frames f ON f.id = c.frame_id WHERE f.job_id = ?1)",
        [job.0],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use fleet_protocol::FrameRange;

    use super::*;
    use crate::store::test_support::spec;

    const TIMEOUT: i64 = 10_000;

    fn store_with_agents(count: usize) -> (Store, Vec<AgentId>) {
        let store = Store::in_memory().unwrap();
        let agents = (0..count)
            .map(|index| {
                crate::store::agents::tests::join(
                    &store,
                    &format!("a{index}"),
                    &format!("fp{index}"),
                    0,
                )
            })
            .collect();
        (store, agents)
    }

    #[test]
    fn guided_sizes_shrink_and_cover_the_frame() {
        let policy = ChunkPolicy::default();
        let mut remaining = 48;
        let mut sizes = Vec::new();
        while remaining > 0 {
            let size = chunk_size(48, remaining, 3, policy);
            sizes.push(size);
            remaining -= size;
        }
        assert_eq!(sizes.iter().sum::<u32>(), 48);
        assert!(sizes.len() >= 6, "{sizes:?}");
        assert!(sizes.windows(2).all(|pair| pair[0] >= pair[1]), "{sizes:?}");
        assert!(sizes[0] > *sizes.last().unwrap());
    }

    #[test]
    fn policy_bounds_are_respected() {
        let policy = ChunkPolicy {
            min_samples: Some(10),
            max_samples: Some(12),
        };
        assert_eq!(chunk_size(1000, 1000, 1, policy), 12);
        assert_eq!(chunk_size(1000, 30, 4, policy), 10);
        assert_eq!(chunk_size(1000, 7, 4, policy), 7);
    }

    #[test]
    fn leases_cover_every_sample_once_in_frame_order() {
        let (store, agents) = store_with_agents(2);
        let job = store
            .create_job(
                &spec(
                    FrameRange {
                        start: 1,
                        end: 2,
                        step: 1,
                    },
                    20,
                ),
                0,
            )
            .unwrap();
        let mut covered: Vec<(i32, u32, u32)> = Vec::new();
        let mut turn = 0;
        while let Some(grant) = store.acquire_lease(agents[turn % 2], 0, TIMEOUT).unwrap() {
            assert_eq!(grant.job_id, job);
            covered.push((grant.frame, grant.sample_start, grant.sample_count));
            turn += 1;
        }
        let frames: Vec<i32> = covered.iter().map(|c| c.0).collect();
        let mut sorted = frames.clone();
        sorted.sort_unstable();
        assert_eq!(frames, sorted, "frames are handed out in order");
        for frame in [1, 2] {
            let mut next = 0;
            for &(_, start, count) in covered.iter().filter(|c| c.0 == frame) {
                assert_eq!(start, next);
                next += count;
            }
            assert_eq!(next, 20);
        }
        assert_eq!(
            store.list_jobs().unwrap()[0].state,
            fleet_protocol::JobState::Running
        );
    }

    #[test]
    fn expired_lease_is_requeued_and_handed_to_another_agent() {
        let (store, agents) = store_with_agents(2);
        store
            .create_job(&spec(FrameRange::single(1), 8), 0)
            .unwrap();
        let first = store.acquire_lease(agents[0], 0, TIMEOUT).unwrap().unwrap();
        assert_eq!(
            store
                .heartbeat(first.lease_id, agents[0], 5_000, TIMEOUT)
                .unwrap(),
            Some(TIMEOUT)
        );
        // Another agent cannot heartbeat someone else's lease.
        assert_eq!(
            store
                .heartbeat(first.lease_id, agents[1], 5_000, TIMEOUT)
                .unwrap(),
            None
        );
        assert_eq!(store.expire_leases(14_000).unwrap(), 0);
        assert_eq!(store.expire_leases(15_001).unwrap(), 1);
        assert_eq!(
            store
                .heartbeat(first.lease_id, agents[0], 15_002, TIMEOUT)
                .unwrap(),
            None
        );
        let again = store
            .acquire_lease(agents[1], 15_003, TIMEOUT)
            .unwrap()
            .unwrap();
        assert_eq!(again.chunk_id, first.chunk_id);
        assert_eq!(
            (again.sample_start, again.sample_count),
            (first.sample_start, first.sample_count)
        );
    }

    #[test]
    fn repeated_failures_fail_the_job_with_the_message() {
        // Three agents, each failing once: the chunk's retry cap ends the job.
        let (store, agents) = store_with_agents(3);
        let job = store
            .create_job(&spec(FrameRange::single(1), 4), 0)
            .unwrap();
        for attempt in 1..=3 {
            let agent = agents[attempt - 1];
            let grant = store.acquire_lease(agent, 0, TIMEOUT).unwrap().unwrap();
            let outcome = store
                .fail_lease(grant.lease_id, agent, "Error: out of memory", 1, 3)
                .unwrap();
            if attempt < 3 {
                assert_eq!(outcome, FailOutcome::Requeued);
            } else {
                assert_eq!(outcome, FailOutcome::JobFailed(job));
            }
        }
        let status = store.job_status(job).unwrap().unwrap();
        assert_eq!(status.summary.state, fleet_protocol::JobState::Failed);
        assert!(status.summary.error.unwrap().contains("out of memory"));
        assert!(store
            .acquire_lease(agents[0], 2, TIMEOUT)
            .unwrap()
            .is_none());
    }

    fn leases_until_empty(store: &Store, agents: &[AgentId]) -> Vec<(i32, u32, u32)> {
        let mut handed = Vec::new();
        let mut turn = 0;
        while let Some(grant) = store
            .acquire_lease(agents[turn % agents.len()], 0, TIMEOUT)
            .unwrap()
        {
            handed.push((grant.frame, grant.sample_start, grant.sample_count));
            turn += 1;
        }
        handed
    }

    #[test]
    fn whole_frame_mode_hands_out_whole_frames() {
        let (store, agents) = store_with_agents(2);
        let mut job = spec(
            FrameRange {
                start: 1,
                end: 3,
                step: 1,
            },
            16,
        );
        job.frame_mode = FrameMode::Whole;
        store.create_job(&job, 0).unwrap();
        assert_eq!(
            leases_until_empty(&store, &agents),
            vec![(1, 0, 16), (2, 0, 16), (3, 0, 16)]
        );
    }

    #[test]
    fn auto_mode_splits_only_the_tail() {
        let (store, agents) = store_with_agents(2);
        store
            .create_job(
                &spec(
                    FrameRange {
                        start: 1,
                        end: 4,
                        step: 1,
                    },
                    16,
                ),
                0,
            )
            .unwrap();
        let handed = leases_until_empty(&store, &agents);
        assert_eq!(
            &handed[..3],
            &[(1, 0, 16), (2, 0, 16), (3, 0, 16)],
            "{handed:?}"
        );
        let tail: Vec<_> = handed[3..].iter().collect();
        assert!(tail.len() >= 2, "the last frame is split: {handed:?}");
        assert!(tail.iter().all(|chunk| chunk.0 == 4));
        assert_eq!(tail.iter().map(|chunk| chunk.2).sum::<u32>(), 16);
    }

    #[test]
    fn split_mode_splits_every_frame() {
        let (store, agents) = store_with_agents(2);
        let mut job = spec(
            FrameRange {
                start: 1,
                end: 3,
                step: 1,
            },
            16,
        );
        job.frame_mode = FrameMode::Split;
        store.create_job(&job, 0).unwrap();
        let handed = leases_until_empty(&store, &agents);
        for frame in 1..=3 {
            let chunks = handed.iter().filter(|c| c.0 == frame).count();
            assert!(chunks >= 2, "frame {frame} is split: {handed:?}");
        }
    }

    #[test]
    fn a_known_speed_caps_the_chunk_at_the_target_duration() {
        let (store, agents) = store_with_agents(1);
        let mut job = spec(FrameRange::single(1), 1000);
        job.frame_mode = FrameMode::Split;
        let id = store.create_job(&job, 0).unwrap();
        let first = store.acquire_lease(agents[0], 0, TIMEOUT).unwrap().unwrap();
        assert_eq!(first.sample_count, 500, "no speed yet: the guided share");
        let piece = match store
            .begin_upload(first.lease_id, agents[0], None, 20, 1, TIMEOUT)
            .unwrap()
        {
            crate::store::UploadPlan::Fold(piece) => piece,
            other => panic!("{other:?}"),
        };
        // 20 samples in 10 s: 2 samples per second.
        store
            .finish_upload(first.lease_id, &piece, Some(10.0))
            .unwrap();
        assert_eq!(store.agent_speed(agents[0], id).unwrap(), Some(2.0));
        store.release_lease(first.lease_id, agents[0]).unwrap();
        let _requeued = store
            .acquire_lease_with(agents[0], 2, TIMEOUT, 15.0)
            .unwrap()
            .unwrap();
        let next = store
            .acquire_lease_with(agents[0], 2, TIMEOUT, 15.0)
            .unwrap()
            .unwrap();
        assert_eq!(next.sample_count, 30, "2 samples/s × 15 s");
    }

    #[test]
    fn an_agent_that_keeps_failing_a_job_gets_no_more_of_it() {
        let (store, agents) = store_with_agents(2);
        let job = store
            .create_job(&spec(FrameRange::single(1), 8), 0)
            .unwrap();
        for _ in 0..BLOCK_AFTER_FAILURES {
            let grant = store.acquire_lease(agents[0], 0, TIMEOUT).unwrap().unwrap();
            let outcome = store
                .fail_lease(grant.lease_id, agents[0], "Error: broken GPU", 1, 10)
                .unwrap();
            assert_eq!(outcome, FailOutcome::Requeued);
        }
        assert!(store
            .acquire_lease(agents[0], 2, TIMEOUT)
            .unwrap()
            .is_none());
        let other = store.acquire_lease(agents[1], 2, TIMEOUT).unwrap().unwrap();
        assert_eq!(other.job_id, job);
    }

    #[test]
    fn a_job_every_agent_failed_fails_with_the_message() {
        let (store, agents) = store_with_agents(1);
        let job = store
            .create_job(&spec(FrameRange::single(1), 8), 0)
            .unwrap();
        let mut last = FailOutcome::Gone;
        for _ in 0..BLOCK_AFTER_FAILURES {
            let grant = store.acquire_lease(agents[0], 0, TIMEOUT).unwrap().unwrap();
            last = store
                .fail_lease(
                    grant.lease_id,
                    agents[0],
                    "Error: Cannot render, no camera",
                    1,
                    10,
                )
                .unwrap();
        }
        assert_eq!(last, FailOutcome::JobFailed(job));
        let status = store.job_status(job).unwrap().unwrap();
        assert!(status.summary.error.unwrap().contains("no camera"));
    }

    #[test]
    fn cancelled_jobs_revoke_leases() {
        let (store, agents) = store_with_agents(1);
        let job = store
            .create_job(&spec(FrameRange::single(1), 4), 0)
            .unwrap();
        let grant = store.acquire_lease(agents[0], 0, TIMEOUT).unwrap().unwrap();
        store.cancel_job(job, 1).unwrap();
        assert_eq!(
            store
                .heartbeat(grant.lease_id, agents[0], 2, TIMEOUT)
                .unwrap(),
            None
        );
        assert!(store
            .acquire_lease(agents[0], 2, TIMEOUT)
            .unwrap()
            .is_none());
    }
}
