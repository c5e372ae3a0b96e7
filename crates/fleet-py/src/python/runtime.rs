//! The tokio runtime the module owns, and running a call on it without holding the GIL.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;

use super::exceptions::fleet_error;

/// How often a waiting call looks for signals (Ctrl-C) and reports progress.
pub const TICK: Duration = Duration::from_millis(100);

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("blendfleet-py")
                .enable_all()
                .build()
                .map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(|error| fleet_error(format!("cannot start the network runtime: {error}")))
}

/// Aborts the task when the waiting Python call gives up (an exception in `tick`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `future` on the module's runtime. The calling thread waits without the GIL,
/// waking every [`TICK`] to check for signals and to call `tick` with the GIL held; an
/// error from either cancels the call.
pub fn run<T, F>(
    py: Python<'_>,
    future: F,
    mut tick: impl FnMut(Python<'_>) -> PyResult<()>,
) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (sender, mut receiver) = mpsc::sync_channel(1);
    let _task = AbortOnDrop(runtime()?.spawn(async move {
        let _ = sender.send(future.await);
    }));
    loop {
        let (back, answer) = py.detach(move || {
            let answer = receiver.recv_timeout(TICK);
            (receiver, answer)
        });
        receiver = back;
        match answer {
            Ok(value) => return Ok(value),
            Err(RecvTimeoutError::Timeout) => {
                py.check_signals()?;
                tick(py)?;
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(fleet_error(
                    "the call stopped without an answer (a failure inside the module)",
                ))
            }
        }
    }
}

/// [`run`] without a tick.
pub fn wait<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    run(py, future, |_| Ok(()))
}
