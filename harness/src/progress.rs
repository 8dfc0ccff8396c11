//! Progress of a long operation on stderr: a spinner on a terminal; plain lines when stderr is
//! a file or a pipe (CI logs, `devnet up > log 2>&1`), where a spinner draws nothing at all.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Plain lines are written at most this often, unless the stage changes.
const LINE_EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// The last line written in plain mode, and when.
    last: Mutex<Option<(String, Instant)>>,
}

impl Progress {
    /// A spinner when stderr is a terminal, plain lines otherwise.
    pub fn spinner() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            last: Mutex::new(None),
        }
    }

    /// Shows `message`: on the spinner, or as a line when it starts a new stage (the text before
    /// its first ':' differs from the last line's) or `LINE_EVERY` has passed since the last.
    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        if let Some(bar) = &self.bar {
            bar.set_message(message);
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if !should_print(last.as_ref(), &message, Instant::now()) {
            return;
        }
        let _ = writeln!(std::io::stderr().lock(), "{message}");
        *last = Some((message, Instant::now()));
    }

    pub fn finish_and_clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn stage(message: &str) -> &str {
    message.split(':').next().unwrap_or(message)
}

/// Whether plain mode writes `message` now, after `last` (the last line and when).
fn should_print(last: Option<&(String, Instant)>, message: &str, now: Instant) -> bool {
    match last {
        None => true,
        Some((text, _)) if text == message => false,
        Some((text, at)) => stage(text) != stage(message) || now - *at >= LINE_EVERY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_for_new_stages_and_then_every_two_seconds() {
        let start = Instant::now();
        let last = ("containers: 1/30 started".to_string(), start);
        assert!(should_print(None, "image: checking", start));
        assert!(!should_print(
            Some(&last),
            "containers: 1/30 started",
            start
        ));
        assert!(!should_print(
            Some(&last),
            "containers: 2/30 started",
            start + Duration::from_millis(500)
        ));
        assert!(should_print(
            Some(&last),
            "containers: 9/30 started",
            start + Duration::from_secs(2)
        ));
        assert!(should_print(
            Some(&last),
            "3/30 nodes at height >= 1",
            start + Duration::from_millis(10)
        ));
    }
}
