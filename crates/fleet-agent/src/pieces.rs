//! How many samples the agent renders before it uploads: a piece.
//!
//! Pieces bound what a preemption costs (only the piece in progress is lost) and keep the
//! manager's preview fresh; each costs one EXR save and one upload, so a piece lasts at
//! least `target` and at least twenty times as long as saving it takes.

use std::collections::HashMap;
use std::time::Duration;

use fleet_protocol::JobId;

/// A piece never costs more than 1/`SAVE_FACTOR` of its time in saving.
const SAVE_FACTOR: f64 = 20.0;
/// The first piece of a job, before the agent's speed on it is known, holds this share of
/// the frame's samples.
const PROBE_SHARE: u32 = 16;

/// Measured speed per job, and the piece sizes that follow from it.
#[derive(Debug)]
pub struct PieceSizer {
    target: Duration,
    measured: HashMap<JobId, Measured>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Measured {
    samples: f64,
    render_seconds: f64,
    save_seconds: f64,
    pieces: f64,
}

impl PieceSizer {
    /// Pieces of about `target` of rendering each.
    pub fn new(target: Duration) -> Self {
        Self {
            target,
            measured: HashMap::new(),
        }
    }

    /// The next piece: at most `remaining` samples of a frame of `frame_samples`.
    pub fn next(&self, job: JobId, remaining: u32, frame_samples: u32) -> u32 {
        let Some(measured) = self.measured.get(&job).filter(|m| m.render_seconds > 0.0) else {
            return frame_samples
                .div_ceil(PROBE_SHARE)
                .clamp(1, remaining.max(1));
        };
        let speed = measured.samples / measured.render_seconds;
        let save = measured.save_seconds / measured.pieces.max(1.0);
        let seconds = self.target.as_secs_f64().max(SAVE_FACTOR * save);
        let wanted = (speed * seconds).ceil().clamp(1.0, f64::from(u32::MAX));
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped above"
        )]
        let wanted = wanted as u32;
        let piece = wanted.min(remaining).max(1);
        // A last piece of a few samples would cost a save and an upload for little: take it
        // along.
        if remaining - piece < piece / 4 {
            remaining
        } else {
            piece
        }
    }

    /// Samples per second measured on `job`, once known.
    pub fn speed(&self, job: JobId) -> Option<f64> {
        self.measured
            .get(&job)
            .filter(|m| m.render_seconds > 0.0)
            .map(|m| m.samples / m.render_seconds)
    }

    /// Notes how long a piece took.
    pub fn record(&mut self, job: JobId, samples: u32, render_seconds: f64, save_seconds: f64) {
        let entry = self.measured.entry(job).or_default();
        entry.samples += f64::from(samples);
        entry.render_seconds += render_seconds.max(0.0);
        entry.save_seconds += save_seconds.max(0.0);
        entry.pieces += 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_then_pieces_of_the_target_duration() {
        let mut sizer = PieceSizer::new(Duration::from_secs(10));
        let job = JobId(1);
        assert_eq!(
            sizer.next(job, 1000, 1024),
            64,
            "a sixteenth of the frame first"
        );
        assert_eq!(sizer.next(job, 10, 1024), 10);
        sizer.record(job, 64, 32.0, 0.1);
        // 2 samples per second: 20 samples make 10 s.
        assert_eq!(sizer.next(job, 500, 1024), 20);
        // Another job starts with a probe again.
        assert_eq!(sizer.next(JobId(2), 500, 160), 10);
    }

    #[test]
    fn slow_saves_make_longer_pieces_and_tiny_tails_are_taken_along() {
        let mut sizer = PieceSizer::new(Duration::from_secs(10));
        let job = JobId(1);
        // 1 sample per second, 2 s per save: pieces of 40 s.
        sizer.record(job, 10, 10.0, 2.0);
        assert_eq!(sizer.next(job, 1000, 1000), 40);
        assert_eq!(
            sizer.next(job, 45, 1000),
            45,
            "a 5-sample tail is not worth a piece"
        );
        assert_eq!(sizer.next(job, 60, 1000), 40);
    }
}
