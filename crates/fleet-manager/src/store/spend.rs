//! Cloud spend: instance seconds × hourly price, attributed to the job the agent worked on.

use fleet_protocol::JobId;
use rusqlite::params;

use super::{Store, StoreError};

/// Spend of one job, or of the whole farm.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spend {
    pub seconds: f64,
    pub cost_usd: f64,
}

impl Store {
    /// Adds instance time to a job (`None`: the instance worked on no job).
    pub fn add_spend(
        &self,
        job: Option<JobId>,
        instance: &str,
        machine_type: &str,
        seconds: f64,
        cost_usd: f64,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO spend (job_id, instance, machine_type, seconds, cost_usd)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (job_id, instance) DO UPDATE
             SET seconds = seconds + excluded.seconds, cost_usd = cost_usd + excluded.cost_usd",
            params![
                job.map_or(0, |job| job.0),
                instance,
                machine_type,
                seconds,
                cost_usd
            ],
        )?;
        Ok(())
    }

    /// What one job cost.
    pub fn job_spend(&self, job: JobId) -> Result<Spend, StoreError> {
        Ok(self.lock().query_row(
            "SELECT COALESCE(SUM(seconds), 0), COALESCE(SUM(cost_usd), 0) FROM spend WHERE job_id = ?1",
            [job.0],
            |row| {
                Ok(Spend {
                    seconds: row.get(0)?,
                    cost_usd: row.get(1)?,
                })
            },
        )?)
    }

    /// Everything spent, and the spend per job (jobs with any).
    pub fn farm_spend(&self) -> Result<(Spend, Vec<(JobId, Spend)>), StoreError> {
        let connection = self.lock();
        let total = connection.query_row(
            "SELECT COALESCE(SUM(seconds), 0), COALESCE(SUM(cost_usd), 0) FROM spend",
            [],
            |row| {
                Ok(Spend {
                    seconds: row.get(0)?,
                    cost_usd: row.get(1)?,
                })
            },
        )?;
        let mut query = connection.prepare(
            "SELECT job_id, SUM(seconds), SUM(cost_usd) FROM spend WHERE job_id != 0
             GROUP BY job_id ORDER BY job_id",
        )?;
        let jobs = query
            .query_map([], |row| {
                Ok((
                    JobId(row.get(0)?),
                    Spend {
                        seconds: row.get(1)?,
                        cost_usd: row.get(2)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok((total, jobs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_adds_up_per_job_and_in_total() {
        let store = Store::in_memory().unwrap();
        store
            .add_spend(Some(JobId(3)), "a-1", "m", 10.0, 0.5)
            .unwrap();
        store
            .add_spend(Some(JobId(3)), "a-1", "m", 5.0, 0.25)
            .unwrap();
        store
            .add_spend(Some(JobId(3)), "a-2", "m", 1.0, 0.05)
            .unwrap();
        store.add_spend(None, "a-1", "m", 2.0, 0.1).unwrap();
        let job = store.job_spend(JobId(3)).unwrap();
        assert!((job.seconds - 16.0).abs() < 1e-9 && (job.cost_usd - 0.8).abs() < 1e-9);
        assert_eq!(store.job_spend(JobId(4)).unwrap(), Spend::default());
        let (total, jobs) = store.farm_spend().unwrap();
        assert!((total.cost_usd - 0.9).abs() < 1e-9);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].0, JobId(3));
    }
}
