//! Uploads of rendered sample ranges, progressively, while a lease is held.
//!
//! An agent renders its leased range in pieces and uploads each piece as soon as it is
//! rendered: `start` must be where the unrendered rest of the lease begins. Each piece gets a
//! chunk row of its own (`merging` while it is folded, then `merged`), so every fold has a
//! unique id and a piece is never counted twice; the lease keeps the rest. A preempted agent
//! therefore loses only the piece it was rendering, and `release` hands the rest back at once.

use fleet_protocol::{AgentId, ChunkId, JobId, LeaseId};
use rusqlite::{params, OptionalExtension, Transaction};

use super::{Store, StoreError};

/// A piece about to be folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub job_id: JobId,
    pub frame_id: i64,
    pub frame: i32,
    /// The chunk row of this piece: the fold's id.
    pub chunk_id: ChunkId,
    pub sample_start: u32,
    pub samples: u32,
    /// Whether this piece completes the lease.
    pub completes_lease: bool,
}

/// What an upload request amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadPlan {
    /// Fold this piece, then call [`Store::finish_upload`] or [`Store::reject_upload`].
    Fold(Piece),
    /// This exact piece was uploaded before (a retry); nothing to do.
    Duplicate { frame_id: i64 },
    /// The lease is not this agent's to upload for (expired, revoked, finished).
    Gone,
    /// The request does not fit the lease; the message says why.
    Invalid(String),
}

/// The frame's progress after a piece was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameProgress {
    pub frame_samples_done: u32,
    pub frame_samples: u32,
}

impl FrameProgress {
    /// Whether the frame has all its samples now.
    pub fn complete(&self) -> bool {
        self.frame_samples_done >= self.frame_samples
    }
}

impl Store {
    /// Checks an upload of samples `[start, start + samples)` for `lease` and splits that
    /// piece off the lease's chunk; `start` defaults to where the lease's rest begins. The
    /// lease is extended, as by a heartbeat.
    pub fn begin_upload(
        &self,
        lease: LeaseId,
        agent: AgentId,
        start: Option<u32>,
        samples: u32,
        now: i64,
        lease_timeout_ms: i64,
    ) -> Result<UploadPlan, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let current: Option<(i64, i64, i64, i32, u32, u32, String)> = transaction
            .query_row(
                "SELECT c.id, f.id, f.job_id, f.frame, c.sample_start, c.sample_count, c.state
                 FROM leases l JOIN chunks c ON c.id = l.chunk_id JOIN frames f ON f.id = c.frame_id
                 WHERE l.id = ?1 AND l.agent_id = ?2 AND l.state = 'active' AND l.expires_at >= ?3",
                params![lease.0, agent.0, now],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((chunk, frame_id, job_id, frame, head, left, state)) = current else {
            return Ok(UploadPlan::Gone);
        };
        let start = start.unwrap_or(head);
        if state != "leased" {
            // The lease's last piece was merged (before a restart, say) or is being merged.
            if state == "merged" {
                transaction.execute("UPDATE leases SET state = 'done' WHERE id = ?1", [lease.0])?;
            }
            transaction.commit()?;
            return Ok(if state == "merged" && start == head && samples == left {
                UploadPlan::Duplicate { frame_id }
            } else {
                UploadPlan::Gone
            });
        }
        transaction.execute(
            "UPDATE leases SET expires_at = ?2 WHERE id = ?1",
            params![lease.0, now + lease_timeout_ms],
        )?;
        if start < head {
            let earlier = earlier_piece(&transaction, frame_id, start, samples)?;
            transaction.commit()?;
            return Ok(if earlier {
                UploadPlan::Duplicate { frame_id }
            } else {
                UploadPlan::Invalid(format!(
                    "samples {start}..{} were not uploaded before, and this lease now starts at {head}",
                    u64::from(start) + u64::from(samples)
                ))
            });
        }
        if start != head || samples == 0 || samples > left {
            transaction.commit()?;
            return Ok(UploadPlan::Invalid(format!(
                "this lease's remaining samples are {head}..{}; an upload must start at {head} \
                 and hold 1 to {left} samples, not {start}..{}",
                head + left,
                u64::from(start) + u64::from(samples)
            )));
        }
        let completes_lease = samples == left;
        let piece = if completes_lease {
            transaction.execute("UPDATE chunks SET state = 'merging' WHERE id = ?1", [chunk])?;
            chunk
        } else {
            transaction.execute(
                "INSERT INTO chunks (frame_id, sample_start, sample_count, state)
                 VALUES (?1, ?2, ?3, 'merging')",
                params![frame_id, head, samples],
            )?;
            let piece = transaction.last_insert_rowid();
            transaction.execute(
                "UPDATE chunks SET sample_start = ?2, sample_count = ?3 WHERE id = ?1",
                params![chunk, head + samples, left - samples],
            )?;
            piece
        };
        transaction.commit()?;
        Ok(UploadPlan::Fold(Piece {
            job_id: JobId(job_id),
            frame_id,
            frame,
            chunk_id: ChunkId(piece),
            sample_start: head,
            samples,
            completes_lease,
        }))
    }

    /// Records a folded piece: the frame's and the agent's counts grow, the agent's speed
    /// on the job is updated, and a lease that is complete is finished.
    pub fn finish_upload(
        &self,
        lease: LeaseId,
        piece: &Piece,
        render_seconds: Option<f64>,
    ) -> Result<FrameProgress, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let newly = transaction.execute(
            "UPDATE chunks SET state = 'merged' WHERE id = ?1 AND state != 'merged'",
            [piece.chunk_id.0],
        )? > 0;
        if newly {
            transaction.execute(
                "UPDATE frames SET samples_done = samples_done + ?2,
                     chunks_merged = chunks_merged + 1 WHERE id = ?1",
                params![piece.frame_id, piece.samples],
            )?;
            let agent: Option<i64> = transaction
                .query_row(
                    "SELECT agent_id FROM leases WHERE id = ?1",
                    [lease.0],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(agent) = agent {
                transaction.execute(
                    "UPDATE agents SET samples_rendered = samples_rendered + ?2 WHERE id = ?1",
                    params![agent, piece.samples],
                )?;
                if let Some(seconds) = render_seconds.filter(|s| s.is_finite() && *s > 0.0) {
                    transaction.execute(
                        "INSERT INTO agent_jobs (agent_id, job_id, samples, seconds)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (agent_id, job_id) DO UPDATE SET
                             samples = samples + excluded.samples,
                             seconds = seconds + excluded.seconds",
                        params![agent, piece.job_id.0, piece.samples, seconds],
                    )?;
                }
            }
        }
        if piece.completes_lease {
            transaction.execute(
                "UPDATE leases SET state = 'done' WHERE id = ?1 AND state = 'active'",
                [lease.0],
            )?;
        }
        let progress = frame_progress(&transaction, piece.frame_id)?;
        transaction.commit()?;
        Ok(progress)
    }

    /// A piece that could not be folded (a bad partial): the lease fails, the piece and the
    /// rest of the lease go back to the queue, and after `max_attempts` refusals of one piece
    /// the job fails with `message`. Returns the job when it failed.
    pub fn reject_upload(
        &self,
        lease: LeaseId,
        piece: &Piece,
        message: &str,
        now: i64,
        max_attempts: u32,
    ) -> Result<Option<JobId>, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let attempts: u32 = transaction.query_row(
            "UPDATE chunks SET state = 'queued', attempts = attempts + 1, last_error = ?2
             WHERE id = ?1 RETURNING attempts",
            params![piece.chunk_id.0, message],
            |row| row.get(0),
        )?;
        let agent: Option<i64> = transaction
            .query_row(
                "SELECT agent_id FROM leases WHERE id = ?1",
                [lease.0],
                |row| row.get(0),
            )
            .optional()?;
        release(&transaction, lease, "failed")?;
        let blocked_everywhere = match agent {
            Some(agent) => super::leases::count_agent_failure(
                &transaction,
                AgentId(agent),
                piece.job_id,
                message,
                now,
            )?,
            None => false,
        };
        let failed = blocked_everywhere || attempts >= max_attempts;
        if failed && !blocked_everywhere {
            super::leases::fail_job_in(
                &transaction,
                piece.job_id,
                &format!("a partial render was refused {attempts} times; last: {message}"),
                now,
            )?;
        }
        transaction.commit()?;
        Ok(failed.then_some(piece.job_id))
    }

    /// The agent gives the rest of its lease back (it is stopping): the rest is queued again
    /// at once. Returns false when the lease was not the agent's active lease.
    pub fn release_lease(&self, lease: LeaseId, agent: AgentId) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let owned: Option<i64> = transaction
            .query_row(
                "SELECT id FROM leases WHERE id = ?1 AND agent_id = ?2 AND state = 'active'",
                params![lease.0, agent.0],
                |row| row.get(0),
            )
            .optional()?;
        if owned.is_none() {
            return Ok(false);
        }
        release(&transaction, lease, "released")?;
        transaction.commit()?;
        Ok(true)
    }

    /// Samples per second `agent` has rendered on `job`, once it has rendered some.
    pub fn agent_speed(&self, agent: AgentId, job: JobId) -> Result<Option<f64>, StoreError> {
        let connection = self.lock();
        speed_in(&connection, agent, job)
    }

    /// After a restart: pieces that were being folded when the manager stopped are merged
    /// when `folded` says the accumulator has them, and queued again otherwise.
    pub fn settle_pieces(
        &self,
        folded: impl Fn(JobId, i32, i64) -> bool,
    ) -> Result<Vec<(LeaseId, Piece)>, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let pieces: Vec<(i64, i64, i64, i32, u32, u32)> = {
            let mut query = transaction.prepare(
                "SELECT c.id, f.id, f.job_id, f.frame, c.sample_start, c.sample_count
                 FROM chunks c JOIN frames f ON f.id = c.frame_id WHERE c.state = 'merging'",
            )?;
            let rows = query.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut merged = Vec::new();
        for (chunk, frame_id, job_id, frame, start, samples) in pieces {
            if folded(JobId(job_id), frame, chunk) {
                // A lease whose last piece this was is finished.
                let lease: i64 = transaction
                    .query_row(
                        "SELECT id FROM leases WHERE chunk_id = ?1 ORDER BY id DESC LIMIT 1",
                        [chunk],
                        |row| row.get(0),
                    )
                    .optional()?
                    .unwrap_or(0);
                transaction.execute(
                    "UPDATE leases SET state = 'done' WHERE chunk_id = ?1 AND state = 'active'",
                    [chunk],
                )?;
                merged.push((
                    LeaseId(lease),
                    Piece {
                        job_id: JobId(job_id),
                        frame_id,
                        frame,
                        chunk_id: ChunkId(chunk),
                        sample_start: start,
                        samples,
                        completes_lease: false,
                    },
                ));
            } else {
                transaction.execute("UPDATE chunks SET state = 'queued' WHERE id = ?1", [chunk])?;
                transaction.execute(
                    "UPDATE leases SET state = 'expired' WHERE chunk_id = ?1 AND state = 'active'",
                    [chunk],
                )?;
            }
        }
        transaction.commit()?;
        Ok(merged)
    }
}

pub(super) fn speed_in(
    connection: &rusqlite::Connection,
    agent: AgentId,
    job: JobId,
) -> Result<Option<f64>, StoreError> {
    let row: Option<(f64, f64)> = connection
        .query_row(
            "SELECT samples, seconds FROM agent_jobs WHERE agent_id = ?1 AND job_id = ?2",
            params![agent.0, job.0],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(samples, seconds)| (seconds > 0.0).then(|| samples / seconds)))
}

/// Ends a lease with `state` and puts the rest of its range back in the queue.
fn release(transaction: &Transaction<'_>, lease: LeaseId, state: &str) -> Result<(), StoreError> {
    transaction.execute(
        "UPDATE chunks SET state = 'queued'
         WHERE id = (SELECT chunk_id FROM leases WHERE id = ?1) AND state = 'leased'",
        [lease.0],
    )?;
    transaction.execute(
        "UPDATE leases SET state = ?2 WHERE id = ?1 AND state = 'active'",
        params![lease.0, state],
    )?;
    Ok(())
}

fn earlier_piece(
    transaction: &Transaction<'_>,
    frame_id: i64,
    start: u32,
    samples: u32,
) -> Result<bool, StoreError> {
    let found: Option<i64> = transaction
        .query_row(
            "SELECT id FROM chunks WHERE frame_id = ?1 AND sample_start = ?2 AND sample_count = ?3
             AND state IN ('merging', 'merged')",
            params![frame_id, start, samples],
            |row| row.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

fn frame_progress(
    transaction: &Transaction<'_>,
    frame_id: i64,
) -> Result<FrameProgress, StoreError> {
    let (frame_samples_done, frame_samples) = transaction.query_row(
        "SELECT samples_done, samples FROM frames WHERE id = ?1",
        [frame_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(FrameProgress {
        frame_samples_done,
        frame_samples,
    })
}

/// The progress of a frame, by id.
impl Store {
    pub fn frame_progress(&self, frame_id: i64) -> Result<FrameProgress, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let progress = frame_progress(&transaction, frame_id)?;
        transaction.commit()?;
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use fleet_protocol::FrameRange;

    use super::*;
    use crate::store::agents::tests::join;
    use crate::store::leases::FailOutcome;
    use crate::store::test_support::spec;

    const TIMEOUT: i64 = 10_000;

    fn one_chunk_job(store: &Store, samples: u32) -> (AgentId, crate::store::LeaseGrant) {
        let agent = join(store, "a", "fp-a", 0);
        let mut job = spec(FrameRange::single(1), samples);
        job.chunking.min_samples = Some(samples);
        store.create_job(&job, 0).unwrap();
        let grant = store.acquire_lease(agent, 0, TIMEOUT).unwrap().unwrap();
        assert_eq!(grant.sample_count, samples);
        (agent, grant)
    }

    fn fold(plan: UploadPlan) -> Piece {
        match plan {
            UploadPlan::Fold(piece) => piece,
            other => panic!("expected a piece to fold, got {other:?}"),
        }
    }

    #[test]
    fn pieces_are_uploaded_in_order_and_retries_count_once() {
        let store = Store::in_memory().unwrap();
        let (agent, grant) = one_chunk_job(&store, 10);
        let lease = grant.lease_id;
        let first = fold(
            store
                .begin_upload(lease, agent, Some(0), 3, 1, TIMEOUT)
                .unwrap(),
        );
        assert_ne!(
            first.chunk_id, grant.chunk_id,
            "a piece gets its own chunk row"
        );
        assert!(!first.completes_lease);
        let progress = store.finish_upload(lease, &first, Some(1.5)).unwrap();
        assert_eq!(progress.frame_samples_done, 3);

        // A retry of the same piece is recognised; a gap or an overlap is refused.
        assert_eq!(
            store
                .begin_upload(lease, agent, Some(0), 3, 2, TIMEOUT)
                .unwrap(),
            UploadPlan::Duplicate {
                frame_id: first.frame_id
            }
        );
        assert!(matches!(
            store
                .begin_upload(lease, agent, Some(5), 2, 2, TIMEOUT)
                .unwrap(),
            UploadPlan::Invalid(_)
        ));
        assert!(matches!(
            store
                .begin_upload(lease, agent, Some(1), 4, 2, TIMEOUT)
                .unwrap(),
            UploadPlan::Invalid(_)
        ));
        assert!(matches!(
            store
                .begin_upload(lease, agent, Some(3), 8, 2, TIMEOUT)
                .unwrap(),
            UploadPlan::Invalid(_)
        ));

        let rest = fold(
            store
                .begin_upload(lease, agent, Some(3), 7, 3, TIMEOUT)
                .unwrap(),
        );
        assert!(rest.completes_lease);
        let progress = store.finish_upload(lease, &rest, Some(3.5)).unwrap();
        assert!(progress.complete());
        assert_eq!(
            store.heartbeat(lease, agent, 4, TIMEOUT).unwrap(),
            None,
            "the lease is done"
        );
        let speed = store.agent_speed(agent, grant.job_id).unwrap().unwrap();
        assert!((speed - 2.0).abs() < 1e-9, "10 samples in 5 s: {speed}");
        // Finishing a piece twice does not count it twice.
        assert_eq!(
            store
                .finish_upload(lease, &rest, None)
                .unwrap()
                .frame_samples_done,
            10
        );
    }

    #[test]
    fn released_leases_hand_back_only_the_rest() {
        let store = Store::in_memory().unwrap();
        let (agent, grant) = one_chunk_job(&store, 10);
        let piece = fold(
            store
                .begin_upload(grant.lease_id, agent, Some(0), 4, 1, TIMEOUT)
                .unwrap(),
        );
        store.finish_upload(grant.lease_id, &piece, None).unwrap();
        assert!(store.release_lease(grant.lease_id, agent).unwrap());
        assert!(!store.release_lease(grant.lease_id, agent).unwrap());
        let other = join(&store, "b", "fp-b", 2);
        let rest = store.acquire_lease(other, 2, TIMEOUT).unwrap().unwrap();
        assert_eq!((rest.sample_start, rest.sample_count), (4, 6));
        assert_eq!(
            store
                .begin_upload(grant.lease_id, agent, Some(4), 6, 3, TIMEOUT)
                .unwrap(),
            UploadPlan::Gone
        );
    }

    #[test]
    fn rejected_pieces_are_requeued_until_the_job_fails() {
        let store = Store::in_memory().unwrap();
        let (agent, grant) = one_chunk_job(&store, 10);
        let piece = fold(
            store
                .begin_upload(grant.lease_id, agent, Some(0), 4, 1, TIMEOUT)
                .unwrap(),
        );
        assert_eq!(
            store
                .reject_upload(grant.lease_id, &piece, "truncated", 1, 2)
                .unwrap(),
            None
        );
        // Both the piece and the rest of the lease are in the queue again.
        let again = store.acquire_lease(agent, 2, TIMEOUT).unwrap().unwrap();
        assert_eq!((again.sample_start, again.sample_count), (0, 4));
        let piece = fold(
            store
                .begin_upload(again.lease_id, agent, Some(0), 4, 3, TIMEOUT)
                .unwrap(),
        );
        let failed = store
            .reject_upload(again.lease_id, &piece, "truncated", 3, 2)
            .unwrap();
        assert_eq!(failed, Some(grant.job_id));
        let status = store.job_status(grant.job_id).unwrap().unwrap();
        assert!(status.summary.error.unwrap().contains("truncated"));
    }

    #[test]
    fn pieces_caught_mid_fold_by_a_restart_are_settled() {
        let store = Store::in_memory().unwrap();
        let (agent, grant) = one_chunk_job(&store, 10);
        let kept = fold(
            store
                .begin_upload(grant.lease_id, agent, Some(0), 4, 1, TIMEOUT)
                .unwrap(),
        );
        store.finish_upload(grant.lease_id, &kept, None).unwrap();
        let folded = fold(
            store
                .begin_upload(grant.lease_id, agent, Some(4), 3, 2, TIMEOUT)
                .unwrap(),
        );
        let lost = fold(
            store
                .begin_upload(grant.lease_id, agent, Some(7), 3, 3, TIMEOUT)
                .unwrap(),
        );
        // The manager stops here; the accumulator holds `folded` but not `lost`.
        let settled = store
            .settle_pieces(|_, _, chunk| chunk == folded.chunk_id.0)
            .unwrap();
        assert_eq!(settled.len(), 1);
        let progress = store
            .finish_upload(settled[0].0, &settled[0].1, None)
            .unwrap();
        assert_eq!(progress.frame_samples_done, 7);
        let other = join(&store, "b", "fp-b", 4);
        let requeued = store.acquire_lease(other, 4, TIMEOUT).unwrap().unwrap();
        assert_eq!(
            (requeued.sample_start, requeued.sample_count),
            (lost.sample_start, 3)
        );
        // A failure reported on the finished lease changes nothing.
        assert_eq!(
            store
                .fail_lease(grant.lease_id, agent, "late", 5, 3)
                .unwrap(),
            FailOutcome::Gone
        );
    }
}
