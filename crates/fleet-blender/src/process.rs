//! Starting Blender processes: output capture, progress parsing, and making sure a
//! Blender never outlives the process that started it.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::BlenderError;

/// How many lines of output are kept for error reports.
pub(crate) const RECENT_LINES: usize = 200;
/// Longer lines are cut (Blender can print very long lines, e.g. Python reprs).
const MAX_LINE_CHARS: usize = 2000;
/// How long to wait for the output pipes to drain after a process ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Blender's output (stdout and stderr interleaved) and the render progress read from it.
#[derive(Clone)]
pub(crate) struct OutputLog {
    state: Arc<Mutex<OutputState>>,
    progress: Arc<watch::Sender<u32>>,
}

#[derive(Default)]
struct OutputState {
    lines: VecDeque<String>,
    /// When the first `Sample N/M` line of the current chunk was seen.
    first_sample_at: Option<Instant>,
}

impl OutputLog {
    pub(crate) fn new() -> Self {
        Self {
            state: Arc::default(),
            progress: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, line: &str) {
        let line: String = line.chars().take(MAX_LINE_CHARS).collect();
        tracing::trace!(target: "fleet_blender::output", "{line}");
        let samples = parse_sample_progress(&line);
        let mut state = self.lock();
        if state.lines.len() == RECENT_LINES {
            state.lines.pop_front();
        }
        state.lines.push_back(line);
        if let Some(done) = samples {
            state.first_sample_at.get_or_insert_with(Instant::now);
            drop(state);
            self.progress.send_replace(done);
        }
    }

    /// The last `count` lines.
    pub(crate) fn tail(&self, count: usize) -> Vec<String> {
        let state = self.lock();
        let skip = state.lines.len().saturating_sub(count);
        state.lines.iter().skip(skip).cloned().collect()
    }

    /// Resets the progress for a new chunk.
    pub(crate) fn begin_chunk(&self) {
        self.lock().first_sample_at = None;
        self.progress.send_replace(0);
    }

    pub(crate) fn first_sample_at(&self) -> Option<Instant> {
        self.lock().first_sample_at
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u32> {
        self.progress.subscribe()
    }
}

/// The samples done, from a Cycles status line such as
/// `Fra:1 Mem:10.36M (Peak 10.61M) | Time:00:00.05 | ... | Scene, ViewLayer | Sample 5/16`.
/// Blender counts from the chunk's own first sample, not from `sample_offset`.
pub(crate) fn parse_sample_progress(line: &str) -> Option<u32> {
    let start = line.rfind("| Sample ")? + "| Sample ".len();
    let (done, rest) = line[start..].split_once('/')?;
    let total_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if total_digits == 0 {
        return None;
    }
    done.parse().ok()
}

/// A started process, its output readers, and its lifeline (see [`spawn`]).
pub(crate) struct Spawned {
    pub(crate) child: Child,
    readers: Vec<JoinHandle<()>>,
    _lifeline: std::sync::mpsc::Sender<()>,
}

impl Spawned {
    /// Waits for the process to end and for its output to be read.
    pub(crate) async fn wait(&mut self) -> Result<ExitStatus, BlenderError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| BlenderError::io("could not wait for Blender", source))?;
        self.drain().await;
        Ok(status)
    }

    /// Waits (briefly) until the output readers have seen the end of both pipes.
    pub(crate) async fn drain(&mut self) {
        let readers = std::mem::take(&mut self.readers);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            for reader in readers {
                let _ = reader.await;
            }
        })
        .await;
    }
}

/// Starts `command` with its output captured into `output`.
///
/// The process is killed when the returned [`Spawned`] is dropped (`kill_on_drop`) and,
/// on Linux, when this process dies in any way, SIGKILL included: the child asks the
/// kernel for SIGKILL when its parent thread ends (`PR_SET_PDEATHSIG`). That "parent" is
/// the thread that forked, so the fork happens on a dedicated thread that lives exactly as
/// long as the returned value, never on a runtime thread that might go away first.
pub(crate) async fn spawn(
    mut command: Command,
    program: &Path,
    output: &OutputLog,
) -> Result<Spawned, BlenderError> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    die_with_parent(&mut command, libc::SIGKILL);

    let handle = tokio::runtime::Handle::current();
    let (child_tx, child_rx) = tokio::sync::oneshot::channel();
    let (lifeline, keep_alive) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("blender-lifeline".into())
        .spawn(move || {
            let spawned = {
                let _context = handle.enter();
                command.spawn()
            };
            drop(handle);
            let started = spawned.is_ok();
            if child_tx.send(spawned).is_ok() && started {
                // Returns when the Sender is dropped; then this thread ends, and with it
                // the child if it is still running.
                let _ = keep_alive.recv();
            }
        })
        .map_err(|source| BlenderError::io("could not start a thread for Blender", source))?;
    let spawn_error = |source| BlenderError::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = child_rx
        .await
        .map_err(|_| spawn_error(std::io::Error::other("the spawning thread ended")))?
        .map_err(spawn_error)?;

    let mut readers = Vec::with_capacity(2);
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(stdout, output.clone())));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(stderr, output.clone())));
    }
    Ok(Spawned {
        child,
        readers,
        _lifeline: lifeline,
    })
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "pre_exec is the only way to set PR_SET_PDEATHSIG in the child"
)]
/// Makes the child receive `signal` when the thread that spawns it ends, and refuses to
/// start it when this process is already gone. Spawn from a thread that lives as long as
/// the child should (the kernel ties the signal to the spawning thread, not the process).
pub fn die_with_parent(command: &mut Command, signal: i32) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It calls only prctl and
    // getppid, which are async-signal-safe, and builds its error without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
/// Elsewhere the child is only killed on drop.
pub fn die_with_parent(_command: &mut Command, _signal: i32) {}

async fn read_lines(pipe: impl AsyncRead + Unpin, output: OutputLog) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buffer);
                for line in text.split(['\n', '\r']).filter(|line| !line.is_empty()) {
                    output.push(line);
                }
            }
        }
    }
}

/// How a process ended, in words: "exited with code 1", "was killed by signal 9 (SIGKILL)".
pub(crate) fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL; out of memory, or killed)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGSEGV => " (SIGSEGV; Blender crashed)",
                libc::SIGABRT => " (SIGABRT; Blender aborted)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            format!("was killed by signal {signal}{name}")
        }
        None => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines() {
        let line = "Fra:1 Mem:10.36M (Peak 10.61M) | Time:00:00.05 | Mem:0.76M, Peak:0.76M | Scene, ViewLayer | Sample 0/16";
        assert_eq!(parse_sample_progress(line), Some(0));
        let line = "Fra:1 Mem:10.41M | Time:00:00.06 | Remaining:00:00.04 | Scene, ViewLayer | Sample 12/200";
        assert_eq!(parse_sample_progress(line), Some(12));
        assert_eq!(
            parse_sample_progress("Fra:1 | Scene, ViewLayer | Sample 3/8, Tile 1/4"),
            Some(3)
        );
        assert_eq!(
            parse_sample_progress("Fra:1 | Scene, ViewLayer | Updating Film"),
            None
        );
        assert_eq!(
            parse_sample_progress("Sample 3/8 without a separator"),
            None
        );
        assert_eq!(parse_sample_progress("| Sample x/8"), None);
        assert_eq!(parse_sample_progress("| Sample 3/"), None);
    }

    #[test]
    fn log_keeps_the_last_lines_and_tracks_progress() {
        let log = OutputLog::new();
        let progress = log.subscribe();
        for i in 0..(RECENT_LINES + 5) {
            log.push(&format!("line {i}"));
        }
        let tail = log.tail(usize::MAX);
        assert_eq!(tail.len(), RECENT_LINES);
        assert_eq!(tail[0], "line 5");
        assert_eq!(log.tail(2), ["line 203", "line 204"]);
        assert_eq!(log.first_sample_at(), None);
        log.push("Fra:1 | Scene, ViewLayer | Sample 7/9");
        assert_eq!(*progress.borrow(), 7);
        assert!(log.first_sample_at().is_some());
        log.begin_chunk();
        assert_eq!(*progress.borrow(), 0);
        assert_eq!(log.first_sample_at(), None);
        let long = "x".repeat(MAX_LINE_CHARS * 2);
        log.push(&long);
        assert_eq!(log.tail(1)[0].len(), MAX_LINE_CHARS);
    }

    #[test]
    fn statuses_in_words() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(1 << 8)),
            "exited with code 1"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(libc::SIGKILL)),
            "was killed by signal 9 (SIGKILL; out of memory, or killed)"
        );
    }
}
