//! Progress of the long client commands (`sluice tpch gen`, `sluice run`,
//! `sluice bench`): an indicatif bar on stderr when it is a terminal, and
//! otherwise a plain line every few seconds (logs and CI output stay
//! readable).

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// One progress display.
pub struct Progress {
    /// The bar, on a terminal.
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl Progress {
    fn new(label: &str, bar: impl FnOnce() -> ProgressBar, template: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = bar();
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            label: label.to_string(),
            started: now,
            last_line: Mutex::new(now),
        }
    }

    /// Counting rows made (`tpch gen`): rows and rows per second.
    pub fn rows(label: &str) -> Self {
        Self::new(
            label,
            ProgressBar::new_spinner,
            "{spinner} {prefix}: {human_pos} rows ({per_sec}) [{elapsed}]",
        )
    }

    /// `total` steps (`bench`: queries), with the current one as message.
    pub fn steps(label: &str, total: u64) -> Self {
        Self::new(
            label,
            || ProgressBar::new(total),
            "{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed}]",
        )
    }

    /// Waiting for one piece of work (`run`: a statement), with what is
    /// known of it as message.
    pub fn waiting(label: &str) -> Self {
        Self::new(
            label,
            ProgressBar::new_spinner,
            "{spinner} {prefix} [{elapsed}] {wide_msg}",
        )
    }

    /// A plain line, at most every [`PLAIN_INTERVAL`], when there is no bar.
    fn plain(&self, line: impl FnOnce() -> String) {
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= PLAIN_INTERVAL {
            *last = Instant::now();
            eprintln!(
                "{}: {} [{:.0} s]",
                self.label,
                line(),
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// `rows` made so far.
    pub fn set_rows(&self, rows: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(rows),
            None => self.plain(|| {
                let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                format!("{rows} rows ({rate:.0} rows/s)")
            }),
        }
    }

    /// What is going on now.
    pub fn set_message(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_string()),
            None => self.plain(|| message.to_string()),
        }
    }

    /// One more step done.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Prints `line` to stderr (above the bar on a terminal).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Runs `work`, showing `label` and the latest of the server's progress
/// `notices` (`sluice.progress`) while it runs.
pub async fn while_running<T>(
    label: &str,
    notices: &watch::Receiver<Option<String>>,
    work: impl Future<Output = T>,
) -> T {
    let progress = Progress::waiting(label);
    // Only notices sent from now on are about `work`.
    let mut notices = notices.clone();
    notices.borrow_and_update();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => {
                if notices.has_changed().unwrap_or(false) {
                    if let Some(notice) = notices.borrow_and_update().clone() {
                        progress.set_message(notice.strip_prefix("progress: ").unwrap_or(&notice));
                    }
                }
            }
        }
    }
}
