//! Progress of the CLI's long-running steps (packing, publishing, compiling): a spinner
//! with the step's name and elapsed time on stderr when stderr is a terminal, and nothing
//! otherwise (in scripts, logs and CI output stays as it was).

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// One step under way; the spinner goes away when it is dropped.
pub(crate) struct Step {
    bar: Option<ProgressBar>,
}

impl Step {
    /// Starts `message` (e.g. "publishing hello.tar.zst").
    pub(crate) fn start(message: impl Into<Cow<'static, str>>) -> Step {
        Self::start_on(std::io::stderr().is_terminal(), message)
    }

    fn start_on(terminal: bool, message: impl Into<Cow<'static, str>>) -> Step {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new_spinner().with_message(message);
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Step { bar }
    }

    /// Whether a spinner is shown.
    #[cfg(test)]
    fn is_shown(&self) -> bool {
        self.bar.is_some()
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spinner_only_on_a_terminal() {
        assert!(!Step::start_on(false, "publishing").is_shown());
        let step = Step::start_on(true, "publishing");
        assert!(step.is_shown());
        drop(step);
    }
}
