//! The live status line of `lockctl run` while it waits on a terminal.

use crate::show::{holders_summary, short_duration};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lock::{LockKind, Locker};
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinHandle;

/// How often the holders are inspected again.
const REFRESH: Duration = Duration::from_secs(1);

/// One spinner line on stderr: what lockctl waits for, for how long, and who holds it
/// (refreshed about every second by `inspect`, each call within the request timeout). Cleared
/// when dropped.
pub(crate) struct StatusLine {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl StatusLine {
    /// Shows the line when stderr is a terminal; `None` (nothing shown) otherwise.
    pub(crate) fn start(
        locker: &Locker,
        name: &str,
        kind: LockKind,
        what: String,
        timeout: Option<Duration>,
    ) -> Option<StatusLine> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let started = Instant::now();
        let waited = move || {
            let waited = short_duration(started.elapsed());
            match timeout {
                Some(timeout) => format!("{waited} of {}", short_duration(timeout)),
                None => waited,
            }
        };
        bar.set_message(format!("waiting for {what} ({})", waited()));
        let task = tokio::spawn({
            let bar = bar.clone();
            let locker = locker.clone();
            let name = name.to_owned();
            async move {
                let mut holders = String::from("looking up the holders");
                let mut next_lookup = Instant::now();
                loop {
                    if Instant::now() >= next_lookup {
                        holders = match locker.inspect(&name).await {
                            Ok(all) => {
                                let ours: Vec<_> = all.iter().filter(|h| h.kind == kind).collect();
                                holders_summary(&ours, SystemTime::now())
                            }
                            Err(e) => format!("cannot inspect: {}", crate::exit::chain(&e)),
                        };
                        next_lookup = Instant::now() + REFRESH;
                    }
                    bar.set_message(format!("waiting for {what} ({}): {holders}", waited()));
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
        Some(StatusLine { bar, task })
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// `mutex "NAME"`, `read lock "NAME"`, ... for messages; the name quoted and escaped as the
/// library's errors do.
pub(crate) fn describe(kind: &str, name: &str) -> String {
    format!("{kind} {name:?}")
}
