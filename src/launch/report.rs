//! What a running task shows: progress on standard error (a spinner on a terminal, plain
//! lines otherwise) and the task's log on standard output.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{Ending, Outcome, TaskError, TaskSpec};

/// Where a task's progress and log go. [`super::run_one`] calls it; the CLI prints, tests record.
pub trait Report: Send + Sync {
    /// The pod was created (`namespace/name`).
    fn created(&self, pod: &str);
    /// The pod's state changed (phase, and why when there is more to say), `elapsed` after
    /// the launch began.
    fn state(&self, state: &str, elapsed: Duration);
    /// Something to tell: a retry, a warning, what became of the pod.
    fn note(&self, line: &str);
    /// A line of the task's log.
    fn log(&self, line: &str);
    /// The task is over.
    fn finished(&self, _outcome: &Result<Outcome, TaskError>) {}
}

/// `2.1s`, `3m07s`, `1h02m03s`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    }
}

/// A short result for a finished task: `succeeded`, `failed (exit code 2)`, `timed out`...
pub fn result_word(outcome: &Result<Outcome, TaskError>) -> String {
    match outcome {
        Ok(o) => match &o.ending {
            Ending::Detached => "created".into(),
            Ending::Finished { succeeded: true, .. } => "succeeded".into(),
            Ending::Finished { succeeded: false, .. } => "failed".into(),
            Ending::TimedOut => "timed out".into(),
            Ending::Interrupted => "interrupted".into(),
        },
        Err(e) if e.is_denial() => "denied".into(),
        Err(_) => "error".into(),
    }
}

fn write_line(mut out: impl Write, line: &str) {
    // A closed pipe (`| head`) is not a reason to stop following the pod.
    let _ignored = writeln!(out, "{line}");
}

/// Plain lines: for logs, pipes and CI. In a batch, progress lines start with `[task] ` and
/// log lines with `task | `.
pub struct Lines {
    task: Option<String>,
}

impl Lines {
    pub fn new(task: Option<String>) -> Self {
        Lines { task }
    }

    fn progress(&self, line: &str) {
        match &self.task {
            Some(t) => write_line(std::io::stderr().lock(), &format!("[{t}] {line}")),
            None => write_line(std::io::stderr().lock(), line),
        }
    }
}

impl Report for Lines {
    fn created(&self, pod: &str) {
        self.progress(&format!("pod {pod} created"));
    }
    fn state(&self, state: &str, at: Duration) {
        match &self.task {
            Some(_) => self.progress(&format!("{}  {state}", elapsed(at))),
            None => self.progress(&format!("{:>8}  {state}", elapsed(at))),
        }
    }
    fn note(&self, line: &str) {
        self.progress(line);
    }
    fn log(&self, line: &str) {
        match &self.task {
            Some(t) => write_line(std::io::stdout().lock(), &format!("{t} | {line}")),
            None => write_line(std::io::stdout().lock(), line),
        }
    }
}

/// An indicatif spinner: for a single task, every state change stays printed above it; in a
/// batch, one spinner per task shows its current state.
pub struct Spinner {
    bar: ProgressBar,
    task: Option<String>,
    /// In a batch, the message starts with the pod's name.
    pod: std::sync::Mutex<String>,
    /// In a batch, the width of the task names.
    width: usize,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Spinner {
    fn single() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(style("{spinner} {prefix} {wide_msg} {elapsed}"));
        bar.set_message("creating the pod");
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner { bar, task: None, pod: std::sync::Mutex::default(), width: 0 }
    }
}

impl Report for Spinner {
    fn created(&self, pod: &str) {
        if self.task.is_none() {
            self.bar.set_prefix(pod.to_owned());
            self.bar.println(format!("pod {pod} created"));
        } else {
            if let Ok(mut p) = self.pod.lock() {
                *p = format!("{pod}  ");
            }
            self.bar.set_message(format!("{pod}  created"));
        }
    }
    fn state(&self, state: &str, at: Duration) {
        if self.task.is_none() {
            self.bar.println(format!("{:>8}  {state}", elapsed(at)));
            self.bar.set_message(state.to_owned());
        } else {
            let pod = self.pod.lock().map(|p| p.clone()).unwrap_or_default();
            self.bar.set_message(format!("{pod}{state}"));
        }
    }
    fn note(&self, line: &str) {
        match &self.task {
            Some(t) => self.bar.println(format!("[{t}] {line}")),
            None => self.bar.println(line),
        }
    }
    fn log(&self, line: &str) {
        self.bar.suspend(|| match &self.task {
            Some(t) => write_line(std::io::stdout().lock(), &format!("{t} | {line}")),
            None => write_line(std::io::stdout().lock(), line),
        });
    }
    fn finished(&self, outcome: &Result<Outcome, TaskError>) {
        if self.task.is_none() {
            self.bar.finish_and_clear();
            return;
        }
        let code = match outcome {
            Ok(Outcome { ending: Ending::Finished { exit_code, .. }, .. }) => format!(" (exit code {exit_code})"),
            _ => String::new(),
        };
        let mark = if matches!(outcome, Ok(Outcome { ending: Ending::Finished { succeeded: true, .. }, .. })) {
            "✓"
        } else {
            "✗"
        };
        self.bar.set_style(style(&format!("{mark} {{prefix:{}}} {{wide_msg}} {{elapsed}}", self.width)));
        let pod = self.pod.lock().map(|p| p.clone()).unwrap_or_default();
        self.bar.finish_with_message(format!("{pod}{}{code}", result_word(outcome)));
    }
}

/// The report of a single task: a spinner when standard error is a terminal.
pub fn for_single(terminal: bool) -> Arc<dyn Report> {
    if terminal { Arc::new(Spinner::single()) } else { Arc::new(Lines::new(None)) }
}

/// One report per task of a batch: spinners under one [`MultiProgress`] when standard error
/// is a terminal, each waiting until its task starts.
pub fn for_batch(tasks: &[TaskSpec], terminal: bool) -> Vec<Arc<dyn Report>> {
    if !terminal {
        return tasks.iter().map(|t| Arc::new(Lines::new(Some(t.task.clone()))) as Arc<dyn Report>).collect();
    }
    let multi = MultiProgress::new();
    let width = tasks.iter().map(|t| t.task.len()).max().unwrap_or(0);
    tasks
        .iter()
        .map(|t| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style(&format!("{{spinner}} {{prefix:{width}}} {{wide_msg}} {{elapsed}}")));
            bar.set_prefix(t.task.clone());
            bar.set_message("waiting");
            bar.enable_steady_tick(Duration::from_millis(120));
            Arc::new(Spinner { bar, task: Some(t.task.clone()), pod: std::sync::Mutex::default(), width })
                as Arc<dyn Report>
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_well() {
        assert_eq!(elapsed(Duration::from_millis(2140)), "2.1s");
        assert_eq!(elapsed(Duration::from_secs(187)), "3m07s");
        assert_eq!(elapsed(Duration::from_secs(3723)), "1h02m03s");
    }
}
