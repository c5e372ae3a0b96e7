//! The `Client` and `UploadReport` classes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_client::{ClientError, ConnectionSettings};
use fleet_protocol::{JobId, Secret};
use fleet_tls::Fingerprint;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::convert::{from_python, to_python};
use super::exceptions::raise;
use super::runtime::{run, wait, TICK};
use crate::errors::{Failure, Kind};
use crate::spec::fill_files;
use crate::upload::{self, Progress};

/// The longest timeout accepted (a day); longer ones are almost certainly a unit mistake.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// What an upload sent.
#[pyclass(frozen, module = "blendfleet_py", get_all)]
#[derive(Clone, Copy, Debug)]
pub struct UploadReport {
    /// Entries in the file map.
    pub files_total: u64,
    /// Distinct contents sent.
    pub files_uploaded: u64,
    /// Bytes sent.
    pub bytes_uploaded: u64,
    /// Entries not sent: already on the manager, or the same content as another entry.
    pub files_skipped: u64,
}

#[pymethods]
impl UploadReport {
    fn __repr__(&self) -> String {
        format!(
            "UploadReport(files_total={}, files_uploaded={}, bytes_uploaded={}, files_skipped={})",
            self.files_total, self.files_uploaded, self.bytes_uploaded, self.files_skipped
        )
    }
}

impl From<upload::UploadReport> for UploadReport {
    fn from(report: upload::UploadReport) -> Self {
        Self {
            files_total: report.files_total,
            files_uploaded: report.files_uploaded,
            bytes_uploaded: report.bytes_uploaded,
            files_skipped: report.files_skipped,
        }
    }
}

/// A client of one manager. Constructing it sends nothing; every call blocks the calling
/// thread (never the GIL) until the manager answers.
#[pyclass(frozen, module = "blendfleet_py")]
pub struct Client {
    inner: fleet_client::Client,
    user: String,
    last_upload: Mutex<Option<UploadReport>>,
}

/// Parses a connection string; the password is not part of it.
pub fn parse_connection_string(text: &str) -> Result<ConnectionSettings, ClientError> {
    ConnectionSettings::from_connection_string(text, Secret::new(""))
}

fn timeout_of(seconds: f64) -> Result<Duration, Failure> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_TIMEOUT_SECS {
        return Err(Failure::invalid(format!(
            "the timeout must be more than 0 and at most {MAX_TIMEOUT_SECS} seconds, not {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl Client {
    fn from_settings(settings: &ConnectionSettings, timeout: f64) -> Result<Self, Failure> {
        let timeout = timeout_of(timeout)?;
        let inner = fleet_client::Client::with_timeout(settings, timeout)
            .map_err(|error| Failure::from(&error))?;
        Ok(Self {
            inner,
            user: settings.user.clone(),
            last_upload: Mutex::new(None),
        })
    }

    /// Runs a call of the inner client without the GIL and raises its failure.
    fn call<T, F, Fut>(&self, py: Python<'_>, call: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: FnOnce(fleet_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
    {
        let future = call(self.inner.clone());
        wait(py, future)?.map_err(|error| raise(py, &Failure::from(&error)))
    }

    /// Uploads what the manager lacks, reporting progress through `progress`.
    fn upload(
        &self,
        py: Python<'_>,
        files: BTreeMap<String, PathBuf>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<(UploadReport, BTreeMap<String, fleet_protocol::BlobHash>)> {
        let shared = Arc::new(Progress::default());
        let client = self.inner.clone();
        let task_progress = Arc::clone(&shared);
        let future = async move { upload::upload(&client, &files, task_progress).await };
        let mut reporter = ProgressReporter::new(progress, Arc::clone(&shared));
        let outcome = run(py, future, |py| reporter.report(py, false))?;
        let (report, hashes) = outcome.map_err(|error| raise(py, &Failure::from(&error)))?;
        reporter.report(py, true)?;
        let report = UploadReport::from(report);
        if let Ok(mut last) = self.last_upload.lock() {
            *last = Some(report);
        }
        Ok((report, hashes))
    }
}

/// Calls the user's progress callback with the GIL held, only when something changed,
/// at most once per tick.
struct ProgressReporter<'py> {
    callback: Option<Bound<'py, PyAny>>,
    shared: Arc<Progress>,
    last: Option<(u64, u64)>,
    last_at: Option<Instant>,
}

impl<'py> ProgressReporter<'py> {
    fn new(callback: Option<Bound<'py, PyAny>>, shared: Arc<Progress>) -> Self {
        Self {
            callback,
            shared,
            last: None,
            last_at: None,
        }
    }

    fn report(&mut self, _py: Python<'_>, finished: bool) -> PyResult<()> {
        let Some(callback) = &self.callback else {
            return Ok(());
        };
        let now = Instant::now();
        let (mut done, total) = self.shared.get();
        if finished {
            done = total;
        } else if self.last_at.is_some_and(|at| now - at < TICK) {
            return Ok(());
        }
        if self.last == Some((done, total)) {
            return Ok(());
        }
        callback.call1((done.min(total), total))?;
        self.last = Some((done, total));
        self.last_at = Some(now);
        Ok(())
    }
}

fn failure_to_py(py: Python<'_>) -> impl Fn(Failure) -> PyErr + '_ {
    move |failure| raise(py, &failure)
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (url, user, password, ca_fingerprint, timeout = 30.0))]
    fn py_new(
        py: Python<'_>,
        url: &str,
        user: &str,
        password: &str,
        ca_fingerprint: &str,
        timeout: f64,
    ) -> PyResult<Self> {
        let fingerprint: Fingerprint = ca_fingerprint.parse().map_err(|error| {
            raise(
                py,
                &Failure::invalid(format!("invalid CA fingerprint: {error}")),
            )
        })?;
        if user.is_empty() {
            return Err(raise(py, &Failure::invalid("the user name is empty")));
        }
        let settings = ConnectionSettings {
            url: url.to_owned(),
            user: user.to_owned(),
            password: Secret::new(password),
            ca_fingerprint: fingerprint,
        };
        Self::from_settings(&settings, timeout).map_err(failure_to_py(py))
    }

    /// A client for a connection string (`https://USER@HOST:PORT/#ca=sha256:…`).
    #[staticmethod]
    #[pyo3(signature = (text, password, timeout = 30.0))]
    fn from_connection_string(
        py: Python<'_>,
        text: &str,
        password: &str,
        timeout: f64,
    ) -> PyResult<Self> {
        let settings = ConnectionSettings::from_connection_string(text, Secret::new(password))
            .map_err(|error| raise(py, &Failure::from(&error)))?;
        Self::from_settings(&settings, timeout).map_err(failure_to_py(py))
    }

    /// The manager's base URL, `https://host:port`.
    #[getter]
    fn url(&self) -> String {
        self.inner.url().to_owned()
    }

    /// The user this client signs in as.
    #[getter]
    fn user(&self) -> String {
        self.user.clone()
    }

    /// What the last `upload_files` or `submit` of this client sent, or None.
    #[getter]
    fn last_upload(&self) -> Option<UploadReport> {
        self.last_upload.lock().ok().and_then(|last| *last)
    }

    fn __repr__(&self) -> String {
        format!("Client(url={:?}, user={:?})", self.inner.url(), self.user)
    }

    /// The manager's name, version and the number of agents online.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let info = self.call(py, |client| async move { client.info().await })?;
        json_to_python(py, &info)
    }

    /// Hashes `files` (job path → local path), uploads the contents the manager lacks.
    #[pyo3(signature = (files, progress = None))]
    fn upload_files(
        &self,
        py: Python<'_>,
        files: BTreeMap<String, PathBuf>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<UploadReport> {
        self.upload(py, files, progress).map(|(report, _)| report)
    }

    /// Uploads the project and creates the job; returns its id.
    #[pyo3(signature = (spec, files, progress = None))]
    fn submit(
        &self,
        py: Python<'_>,
        spec: &Bound<'_, PyAny>,
        files: BTreeMap<String, PathBuf>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        if !spec.is_instance_of::<PyDict>() {
            return Err(raise(
                py,
                &Failure::invalid("the job spec must be a dict of the task spec's fields"),
            ));
        }
        let spec = from_python(spec, "spec").map_err(failure_to_py(py))?;
        // Checked before anything is uploaded.
        fill_files(spec.clone(), &BTreeMap::new())
            .map_err(|error| raise(py, &Failure::invalid(error.to_string())))?;
        let (_, hashes) = self.upload(py, files, progress)?;
        let spec = fill_files(spec, &hashes)
            .map_err(|error| raise(py, &Failure::invalid(error.to_string())))?;
        let created = self.call(
            py,
            |client| async move { client.create_job_json(&spec).await },
        )?;
        Ok(created.id.0)
    }

    /// One job in detail.
    fn job<'py>(&self, py: Python<'py>, job_id: i64) -> PyResult<Bound<'py, PyAny>> {
        let status = self.call(py, |client| async move { client.job(JobId(job_id)).await })?;
        json_to_python(py, &status)
    }

    /// All jobs, newest first.
    fn jobs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = self.call(py, |client| async move { client.jobs().await })?;
        json_to_python(py, &list.jobs)
    }

    /// The agents the manager knows.
    fn agents<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let agents = self.call(py, |client| async move { client.agents().await })?;
        json_to_python(py, &agents)
    }

    /// Stops a job; returns its status.
    fn cancel<'py>(&self, py: Python<'py>, job_id: i64) -> PyResult<Bound<'py, PyAny>> {
        let status = self.call(py, |client| async move {
            client.cancel_job(JobId(job_id)).await
        })?;
        json_to_python(py, &status)
    }

    /// Removes a job and its results.
    fn delete(&self, py: Python<'_>, job_id: i64) -> PyResult<()> {
        self.call(py, |client| async move {
            client.delete_job(JobId(job_id)).await
        })
    }

    /// PNG bytes of what is merged of a frame so far; None while nothing is.
    fn preview<'py>(
        &self,
        py: Python<'py>,
        job_id: i64,
        frame: i32,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let answer = self.call(py, |client| async move {
            let id = JobId(job_id);
            match client.frame_preview(id, frame).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(error @ ClientError::Api { status: 404, .. }) => {
                    // 404 also means "nothing merged yet": tell it from an unknown job or
                    // frame by asking for the job.
                    let status = client.job(id).await?;
                    if status.frames.iter().any(|entry| entry.frame == frame) {
                        Ok(None)
                    } else {
                        Err(error)
                    }
                }
                Err(error) => Err(error),
            }
        })?;
        Ok(answer.map(|bytes| PyBytes::new(py, &bytes)))
    }

    /// Saves a finished frame's merged multilayer EXR to `path`.
    fn download_exr(&self, py: Python<'_>, job_id: i64, frame: i32, path: PathBuf) -> PyResult<()> {
        self.call(py, |client| async move {
            client.download_frame_exr(JobId(job_id), frame, &path).await
        })
    }

    /// Saves a finished frame's flat image to `path`.
    fn download_image(
        &self,
        py: Python<'_>,
        job_id: i64,
        frame: i32,
        path: PathBuf,
    ) -> PyResult<()> {
        self.call(py, |client| async move {
            client
                .download_frame_image(JobId(job_id), frame, &path)
                .await
        })
    }
}

fn json_to_python<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(value).map_err(|error| {
        raise(
            py,
            &Failure::new(
                Kind::ServerError,
                format!("cannot convert the answer: {error}"),
            ),
        )
    })?;
    to_python(py, &value)
}
