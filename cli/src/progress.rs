//! Progress on stderr while a job or a fleet job runs: its state for a job, a
//! bar with counts for a fleet. `dbroles run --all` and `--watch` share them.
//! Where stderr is no terminal (a pipe, a CI log) each change is a line instead.

use std::sync::Mutex;

use dbroles_core::model::fleet::FleetCounts;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar, or plain lines where it cannot be drawn.
struct Shown {
    bar: ProgressBar,
    /// The last line printed in place of the bar.
    last: Mutex<String>,
}

impl Shown {
    fn new(length: Option<u64>, template: &str, prefix: &str) -> Self {
        let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
        bar.set_prefix(prefix.to_string());
        Self { bar, last: Mutex::default() }
    }

    /// Sets the message, and prints it as a line if the bar is not drawn and it changed.
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            let mut last = self.last.lock().expect("never poisoned");
            if *last != line {
                eprintln!("dbroles: {line}");
                *last = line.clone();
            }
        }
        self.bar.set_message(line);
        self.bar.tick();
    }
}

/// A job's state, as a spinner line.
pub struct JobProgress(Shown);

impl JobProgress {
    pub fn new(id: &str) -> Self {
        Self(Shown::new(None, "{spinner} job {prefix}: {msg}", id))
    }

    pub fn update(&self, phase: &str, message: &str) {
        let id = self.0.bar.prefix();
        self.0.say(format!("job {id}: {phase}: {message}"));
    }

    pub fn finish(&self) {
        self.0.bar.finish();
    }
}

/// A fleet job's instances: a bar of those that ended, and the counts.
pub struct FleetProgress(Shown);

impl FleetProgress {
    pub fn new(id: &str) -> Self {
        Self(Shown::new(Some(0), "fleet job {prefix} [{bar:30}] {pos}/{len} {msg}", id))
    }

    pub fn update(&self, counts: &FleetCounts) {
        self.0.bar.set_length(counts.total);
        self.0.bar.set_position(counts.completed + counts.failed + counts.skipped);
        let id = self.0.bar.prefix();
        let ended = counts.completed + counts.failed + counts.skipped;
        self.0.say(format!("fleet job {id}: {ended}/{} ({})", counts.total, summary(counts)));
    }

    /// The bar's last state, and the fleet job's message on its own line.
    pub fn finish(&self, message: &str) {
        self.0.bar.finish();
        eprintln!("dbroles: {message}");
    }
}

/// `3 completed, 1 failed, 0 skipped, 2 running, 4 pending`.
pub fn summary(counts: &FleetCounts) -> String {
    format!(
        "{} completed, {} failed, {} skipped, {} running, {} pending",
        counts.completed, counts.failed, counts.skipped, counts.running, counts.pending
    )
}
