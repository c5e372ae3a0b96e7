//! Progress display for a job: a bar on a terminal, plain lines otherwise.

use std::cell::Cell;
use std::path::Path;

use fleet_protocol::{JobId, JobSpec, JobStatus};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;

/// Shows how far a job is.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    last_percent: Cell<u64>,
}

impl Progress {
    pub fn new(id: JobId, spec: &JobSpec, quiet: bool) -> Self {
        let total = u64::from(spec.samples) * spec.frames.count();
        let bar = (!quiet && output::interactive()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} samples · {msg} · {elapsed} (eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("job {id}"));
            bar
        });
        if !quiet && bar.is_none() {
            output::line(format!(
                "job {id}: {} frame(s) × {} samples",
                spec.frames.count(),
                spec.samples
            ));
        }
        Self {
            bar,
            quiet,
            last_percent: Cell::new(u64::MAX),
        }
    }

    pub fn update(&self, status: &JobStatus) {
        let done = status.summary.samples_done;
        let total = status.summary.samples_total.max(1);
        let agents = status.agents.len();
        let frames_done = status
            .frames
            .iter()
            .filter(|frame| frame.state == fleet_protocol::FrameState::Done)
            .count();
        let message = format!(
            "{} · {frames_done}/{} frames · {agents} agent(s)",
            status.summary.state.as_str(),
            status.frames.len()
        );
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(message);
        } else if !self.quiet {
            let percent = done * 100 / total;
            if percent / 10 != self.last_percent.get() / 10 || self.last_percent.get() == u64::MAX {
                self.last_percent.set(percent);
                output::line(format!("{percent:3}% · {done}/{total} samples · {message}"));
            }
        }
    }

    pub fn frame_saved(&self, frame: i32, path: &Path) {
        let text = format!("frame {frame} saved to {}", path.display());
        match &self.bar {
            Some(bar) => bar.println(text),
            None if !self.quiet => output::line(text),
            None => {}
        }
    }

    pub fn finish(&self, state: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(state.to_owned());
        }
    }
}
