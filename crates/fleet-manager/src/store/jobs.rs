//! Jobs and frames.

use fleet_protocol::{
    FrameRange, FrameState, FrameStatus, JobId, JobSpec, JobState, JobStatus, JobSummary,
};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{Store, StoreError};

/// The result of asking a job to change state.
#[derive(Debug, PartialEq, Eq)]
pub enum JobChange {
    /// No such job.
    NotFound,
    /// The job is in a state that does not allow the change.
    Conflict(JobState),
    /// Done; the job is now in this state.
    Changed(JobState),
}

/// A frame whose samples are all merged but whose result is not written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedFrame {
    /// Row id of the frame.
    pub frame_id: i64,
    /// Its job.
    pub job_id: JobId,
    /// Blender frame number.
    pub frame: i32,
}

const SUMMARY_COLUMNS: &str = "j.id, j.name, j.state, j.spec, j.samples, j.error, j.created_at,
     (SELECT COALESCE(SUM(f.samples_done), 0) FROM frames f WHERE f.job_id = j.id),
     (SELECT COALESCE(SUM(f.samples), 0) FROM frames f WHERE f.job_id = j.id),
     j.started_at, j.finished_at";

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<(JobSummary, Option<i64>, Option<i64>)> {
    let spec: String = row.get(3)?;
    let frames = serde_json::from_str::<JobSpec>(&spec)
        .map(|spec| spec.frames)
        .unwrap_or(FrameRange::single(0));
    let state: String = row.get(2)?;
    let summary = JobSummary {
        id: JobId(row.get(0)?),
        name: row.get(1)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        frame_range: frames,
        samples: row.get(4)?,
        error: row.get(5)?,
        created_at_ms: row.get(6)?,
        samples_done: super::get_u64(row, 7)?,
        samples_total: super::get_u64(row, 8)?,
    };
    Ok((summary, row.get(9)?, row.get(10)?))
}

impl Store {
    /// Stores a validated spec as a new job with one row per frame.
    pub fn create_job(&self, spec: &JobSpec, now: i64) -> Result<JobId, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let state = if spec.start {
            JobState::Queued
        } else {
            JobState::Created
        };
        transaction.execute(
            "INSERT INTO jobs (name, spec, state, samples, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                spec.display_name(),
                serde_json::to_string(spec)?,
                state.as_str(),
                spec.samples,
                now
            ],
        )?;
        let job_id = transaction.last_insert_rowid();
        {
            let mut insert = transaction
                .prepare("INSERT INTO frames (job_id, frame, samples) VALUES (?1, ?2, ?3)")?;
            for frame in spec.frames.frames() {
                insert.execute(params![job_id, frame, spec.samples])?;
            }
        }
        transaction.commit()?;
        Ok(JobId(job_id))
    }

    /// The spec a job was created with.
    pub fn job_spec(&self, id: JobId) -> Result<Option<JobSpec>, StoreError> {
        let connection = self.lock();
        let text: Option<String> = connection
            .query_row("SELECT spec FROM jobs WHERE id = ?1", [id.0], |row| {
                row.get(0)
            })
            .optional()?;
        Ok(text.map(|text| serde_json::from_str(&text)).transpose()?)
    }

    /// All jobs, newest first.
    pub fn list_jobs(&self) -> Result<Vec<JobSummary>, StoreError> {
        let connection = self.lock();
        let mut query = connection.prepare(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM jobs j ORDER BY j.id DESC"
        ))?;
        let rows = query.query_map([], summary_from_row)?;
        Ok(rows
            .map(|row| row.map(|(summary, _, _)| summary))
            .collect::<Result<_, _>>()?)
    }

    /// Everything about one job.
    pub fn job_status(&self, id: JobId) -> Result<Option<JobStatus>, StoreError> {
        let connection = self.lock();
        let Some((summary, started, finished)) = connection
            .query_row(
                &format!("SELECT {SUMMARY_COLUMNS} FROM jobs j WHERE j.id = ?1"),
                [id.0],
                summary_from_row,
            )
            .optional()?
        else {
            return Ok(None);
        };
        let frames = frame_statuses(&connection, id)?;
        let mut agents_query = connection.prepare(
            "SELECT DISTINCT a.name FROM leases l
             JOIN agents a ON a.id = l.agent_id
             JOIN chunks c ON c.id = l.chunk_id
             JOIN frames f ON f.id = c.frame_id
             WHERE f.job_id = ?1 AND l.state = 'active' ORDER BY a.name",
        )?;
        let agents = agents_query
            .query_map([id.0], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(JobStatus {
            summary,
            frames,
            agents,
            started_at_ms: started,
            finished_at_ms: finished,
            spend: None,
            notes: Vec::new(),
        }))
    }

    /// Moves a created job to the queue.
    pub fn start_job(&self, id: JobId) -> Result<JobChange, StoreError> {
        self.change_state(id, |state| {
            (state == JobState::Created).then_some(JobState::Queued)
        })
    }

    /// Cancels a job that has not finished; its active leases are revoked.
    pub fn cancel_job(&self, id: JobId, now: i64) -> Result<JobChange, StoreError> {
        let change = self.change_state(id, |state| {
            (!state.is_final()).then_some(JobState::Cancelled)
        })?;
        if let JobChange::Changed(_) = change {
            let connection = self.lock();
            revoke_job_leases(&connection, id)?;
            connection.execute(
                "UPDATE jobs SET finished_at = ?2 WHERE id = ?1",
                params![id.0, now],
            )?;
        }
        Ok(change)
    }

    /// Removes a job and everything that belongs to it. Returns whether it existed.
    pub fn delete_job(&self, id: JobId) -> Result<bool, StoreError> {
        let connection = self.lock();
        revoke_job_leases(&connection, id)?;
        Ok(connection.execute("DELETE FROM jobs WHERE id = ?1", [id.0])? > 0)
    }

    /// Marks a job failed with a message, revoking its leases.
    pub fn fail_job(&self, id: JobId, message: &str, now: i64) -> Result<(), StoreError> {
        let connection = self.lock();
        connection.execute(
            "UPDATE jobs SET state = 'failed', error = ?2, finished_at = ?3
             WHERE id = ?1 AND state NOT IN ('done', 'failed', 'cancelled')",
            params![id.0, message, now],
        )?;
        revoke_job_leases(&connection, id)?;
        Ok(())
    }

    /// Marks a frame's result as written; finishes the job when it was the last frame.
    /// Returns whether the job is now done.
    pub fn finish_frame(&self, frame_id: i64, now: i64) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        transaction.execute("UPDATE frames SET state = 'done' WHERE id = ?1", [frame_id])?;
        let job_id: i64 = transaction.query_row(
            "SELECT job_id FROM frames WHERE id = ?1",
            [frame_id],
            |row| row.get(0),
        )?;
        let remaining: i64 = transaction.query_row(
            "SELECT COUNT(*) FROM frames WHERE job_id = ?1 AND state != 'done'",
            [job_id],
            |row| row.get(0),
        )?;
        let job_done = remaining == 0
            && transaction.execute(
                "UPDATE jobs SET state = 'done', finished_at = ?2
                 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![job_id, now],
            )? > 0;
        transaction.commit()?;
        Ok(job_done)
    }

    /// Frames whose samples are all merged but which are not marked done: after a crash
    /// between the last merge and writing the result.
    pub fn unfinished_frames(&self) -> Result<Vec<UnfinishedFrame>, StoreError> {
        let connection = self.lock();
        let mut query = connection.prepare(
            "SELECT f.id, f.job_id, f.frame FROM frames f JOIN jobs j ON j.id = f.job_id
             WHERE f.samples_done >= f.samples AND f.state != 'done'
               AND j.state IN ('queued', 'running')",
        )?;
        let rows = query.query_map([], |row| {
            Ok(UnfinishedFrame {
                frame_id: row.get(0)?,
                job_id: JobId(row.get(1)?),
                frame: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The row id of a job's frame.
    pub fn frame_id(&self, job: JobId, frame: i32) -> Result<Option<i64>, StoreError> {
        let connection = self.lock();
        Ok(connection
            .query_row(
                "SELECT id FROM frames WHERE job_id = ?1 AND frame = ?2",
                params![job.0, frame],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn change_state(
        &self,
        id: JobId,
        next: impl FnOnce(JobState) -> Option<JobState>,
    ) -> Result<JobChange, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let current: Option<String> = transaction
            .query_row("SELECT state FROM jobs WHERE id = ?1", [id.0], |row| {
                row.get(0)
            })
            .optional()?;
        let Some(current) = current.and_then(|text| JobState::parse(&text)) else {
            return Ok(JobChange::NotFound);
        };
        let Some(new_state) = next(current) else {
            return Ok(JobChange::Conflict(current));
        };
        transaction.execute(
            "UPDATE jobs SET state = ?2 WHERE id = ?1",
            params![id.0, new_state.as_str()],
        )?;
        transaction.commit()?;
        Ok(JobChange::Changed(new_state))
    }
}

fn frame_statuses(connection: &Connection, id: JobId) -> Result<Vec<FrameStatus>, StoreError> {
    let mut query = connection.prepare(
        "SELECT frame, state, samples, samples_done, chunks_merged FROM frames
         WHERE job_id = ?1 ORDER BY frame",
    )?;
    let rows = query.query_map([id.0], |row| {
        let state: String = row.get(1)?;
        let chunks_merged: u32 = row.get(4)?;
        Ok(FrameStatus {
            frame: row.get(0)?,
            state: match state.as_str() {
                "done" => FrameState::Done,
                _ if chunks_merged > 0 => FrameState::Rendering,
                _ => FrameState::Pending,
            },
            samples: row.get(2)?,
            samples_done: row.get(3)?,
            chunks_merged,
            preview_available: chunks_merged > 0,
            image_format: None,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn revoke_job_leases(connection: &Connection, id: JobId) -> Result<(), StoreError> {
    connection.execute(
        "UPDATE leases SET state = 'revoked' WHERE state = 'active' AND chunk_id IN (
             SELECT c.id FROM chunks c JOIN frames f ON f.id = c.frame_id WHERE f.job_id = ?1)",
        [id.0],
    )?;
    connection.execute(
        "UPDATE chunks SET state = 'queued' WHERE state = 'leased' AND frame_id IN (
             SELECT id FROM frames WHERE job_id = ?1)",
        [id.0],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use fleet_protocol::FrameRange;

    use super::*;
    use crate::store::test_support::spec;

    #[test]
    fn create_list_status() {
        let store = Store::in_memory().unwrap();
        let id = store
            .create_job(
                &spec(
                    FrameRange {
                        start: 1,
                        end: 5,
                        step: 2,
                    },
                    16,
                ),
                1000,
            )
            .unwrap();
        let jobs = store.list_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].state, JobState::Queued);
        assert_eq!(jobs[0].samples_total, 48);
        let status = store.job_status(id).unwrap().unwrap();
        let frames: Vec<i32> = status.frames.iter().map(|f| f.frame).collect();
        assert_eq!(frames, vec![1, 3, 5]);
        assert_eq!(status.summary.name, "scene");
        assert!(store.job_status(JobId(99)).unwrap().is_none());
    }

    #[test]
    fn state_changes() {
        let store = Store::in_memory().unwrap();
        let mut created = spec(FrameRange::single(1), 4);
        created.start = false;
        let id = store.create_job(&created, 0).unwrap();
        assert_eq!(store.list_jobs().unwrap()[0].state, JobState::Created);
        assert_eq!(
            store.start_job(id).unwrap(),
            JobChange::Changed(JobState::Queued)
        );
        assert_eq!(
            store.start_job(id).unwrap(),
            JobChange::Conflict(JobState::Queued)
        );
        assert_eq!(
            store.cancel_job(id, 5).unwrap(),
            JobChange::Changed(JobState::Cancelled)
        );
        assert_eq!(
            store.cancel_job(id, 6).unwrap(),
            JobChange::Conflict(JobState::Cancelled)
        );
        assert_eq!(store.start_job(JobId(42)).unwrap(), JobChange::NotFound);
        assert!(store.delete_job(id).unwrap());
        assert!(!store.delete_job(id).unwrap());
        assert!(store.list_jobs().unwrap().is_empty());
    }
}
