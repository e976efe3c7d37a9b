//! `podtailor launch -f tasks.yaml`: a batch of tasks, at most N running at once, and a
//! summary table at the end.
//!
//! The file is a mapping with one key, `tasks`, a list of tasks:
//!
//! ```yaml
//! tasks:
//! - name: extract                  # required: the task's name and its pods' name prefix
//!   command: [python, -m, etl.extract]
//!   image: registry.example/etl:1.4  # optional: the template's otherwise
//!   env: {SOURCE: s3://bucket/raw}   # optional
//!   labels: {stage: extract}         # optional
//!   overrides: [large-memory]        # optional: PodOverride names, in order
//! ```
//!
//! Unknown fields are errors that name the file and the field.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::follow::{Ending, Options, Outcome, TaskError, run_one};
use super::report::{Report, elapsed, result_word};
use super::{EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, TaskSpec};
use crate::{Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksFile {
    tasks: Vec<TaskEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskEntry {
    name: String,
    command: Vec<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    env: Map<String, Value>,
    #[serde(default)]
    labels: Map<String, Value>,
    #[serde(default)]
    overrides: Vec<String>,
}

fn strings(field: &str, map: Map<String, Value>) -> std::result::Result<Vec<(String, String)>, String> {
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(format!("{field}.{k}: must be a string, not {other} (quote it)")),
        })
        .collect()
}

/// Reads and checks a tasks file: every task valid, names unique.
pub fn load(path: &Path) -> Result<Vec<TaskSpec>> {
    let text = std::fs::read_to_string(path).map_err(|error| Error::Read { path: path.to_owned(), error })?;
    parse(&text).map_err(|message| Error::Config { path: path.to_owned(), message })
}

/// Parses the text of a tasks file.
pub fn parse(text: &str) -> std::result::Result<Vec<TaskSpec>, String> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let file: TasksFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde_yaml_ng's message starts with the part of the path it knows (`tasks[1]: `):
        // the whole path is said first, once
        let inner = match inner.split_once(": ") {
            Some((known, rest)) if path.starts_with(known) => rest.to_owned(),
            _ => inner,
        };
        if path == "." { inner } else { format!("{path}: {inner}") }
    })?;
    if file.tasks.is_empty() {
        return Err("tasks: is empty: there is nothing to run".into());
    }
    let mut specs: Vec<TaskSpec> = Vec::with_capacity(file.tasks.len());
    for (i, t) in file.tasks.into_iter().enumerate() {
        let at = |m: String| format!("tasks[{i}] ({:?}): {m}", t.name);
        if let Some(other) = specs.iter().position(|s| s.task == t.name) {
            return Err(at(format!("name: the same as tasks[{other}]'s")));
        }
        let spec = TaskSpec {
            task: t.name.clone(),
            prefix: t.name.clone(),
            command: t.command.clone(),
            image: t.image.clone(),
            env: strings("env", t.env.clone()).map_err(at)?,
            labels: strings("labels", t.labels.clone()).map_err(at)?,
            overrides: t.overrides.clone(),
        };
        spec.validate().map_err(at)?;
        specs.push(spec);
    }
    Ok(specs)
}

/// One task's line in the summary.
#[derive(Debug)]
pub struct TaskResult {
    pub task: String,
    /// `None`: the batch was interrupted before the task started.
    pub outcome: Option<std::result::Result<Outcome, TaskError>>,
}

/// Runs `tasks` with at most `parallelism` at once, `reports[i]` showing task i. When
/// `interrupt` is cancelled, running tasks delete their pods and the rest do not start.
/// Results are in the tasks' order.
pub async fn run(
    client: &kube::Client,
    tasks: &[TaskSpec],
    opts: &Options,
    parallelism: usize,
    reports: &[Arc<dyn Report>],
    interrupt: &CancellationToken,
) -> Vec<TaskResult> {
    let mut results: Vec<(usize, TaskResult)> = futures::stream::iter(tasks.iter().enumerate())
        .map(|(i, task)| async move {
            let outcome = if interrupt.is_cancelled() {
                None
            } else {
                let report: &dyn Report = match reports.get(i) {
                    Some(r) => r.as_ref(),
                    None => &Quiet,
                };
                let outcome = run_one(client, task, opts, report, interrupt.clone().cancelled_owned()).await;
                report.finished(&outcome);
                Some(outcome)
            };
            (i, TaskResult { task: task.task.clone(), outcome })
        })
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Reports nothing (a task without a report).
struct Quiet;

impl Report for Quiet {
    fn created(&self, _: &str) {}
    fn state(&self, _: &str, _: Duration) {}
    fn note(&self, _: &str) {}
    fn log(&self, _: &str) {}
}

/// The summary table: task, pod, result, duration, exit code; then each error in full.
pub fn summary(results: &[TaskResult]) -> String {
    let mut rows = vec![["TASK".to_owned(), "POD".into(), "RESULT".into(), "DURATION".into(), "EXIT".into()]];
    let mut errors = Vec::new();
    for r in results {
        let row = match &r.outcome {
            None => [r.task.clone(), "-".into(), "not started".into(), "-".into(), "-".into()],
            Some(Ok(o)) => {
                let pod = o.pod.as_ref().map_or_else(|| "-".to_owned(), |p| format!("{}/{p}", o.namespace));
                let exit = match o.ending {
                    Ending::Finished { exit_code, .. } => exit_code.to_string(),
                    _ => "-".into(),
                };
                [r.task.clone(), pod, result_word(&Ok(o.clone())), elapsed(o.elapsed), exit]
            }
            Some(Err(e)) => {
                errors.push(format!("{}: {e}", r.task));
                let word = if e.is_denial() { "denied" } else { "error" };
                [r.task.clone(), e.pod.clone().unwrap_or_else(|| "-".into()), word.into(), "-".into(), "-".into()]
            }
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for e in errors {
        out.push_str(&e);
        out.push('\n');
    }
    out
}

/// 0 when every task succeeded, 130 when the batch was interrupted, else 1.
pub fn exit_code(results: &[TaskResult]) -> u8 {
    let interrupted = results
        .iter()
        .any(|r| r.outcome.is_none() || matches!(&r.outcome, Some(Ok(Outcome { ending: Ending::Interrupted, .. }))));
    let all_ok = results
        .iter()
        .all(|r| matches!(&r.outcome, Some(Ok(Outcome { ending: Ending::Finished { succeeded: true, .. }, .. }))));
    if interrupted {
        EXIT_INTERRUPTED
    } else if all_ok {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tasks_file() {
        let tasks = parse(
            "tasks:\n- name: a\n  command: [echo, a]\n  env: {X: '1'}\n  labels: {team: data}\n  overrides: [big]\n\
             - name: b\n  command: [\"true\"]\n  image: busybox\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].env, [("X".to_owned(), "1".to_owned())]);
        assert_eq!(tasks[0].overrides, ["big"]);
        assert_eq!(tasks[1].image.as_deref(), Some("busybox"));
    }

    #[test]
    fn errors_name_the_task_and_the_field() {
        let err = |text: &str| parse(text).err().unwrap_or_default();
        assert!(
            err("tasks:\n- name: a\n  comand: [x]\n").contains("unknown field `comand`"),
            "{}",
            err("tasks:\n- name: a\n  comand: [x]\n")
        );
        assert!(err("tasks:\n- name: a\n  comand: [x]\n").starts_with("tasks[0]"));
        assert!(err("task: []\n").contains("unknown field `task`"));
        assert_eq!(err("tasks: []\n"), "tasks: is empty: there is nothing to run");
        assert!(err("tasks:\n- name: a\n  command: [x]\n  env: {X: 1}\n").contains("env.X: must be a string"));
        assert!(
            err("tasks:\n- name: a\n  command: [x]\n- name: a\n  command: [y]\n")
                .contains("tasks[1] (\"a\"): name: the same")
        );
        assert!(err("tasks:\n- name: A\n  command: [x]\n").contains("pod name prefix"));
        assert!(err("tasks:\n- name: a\n").contains("missing field `command`"));
        assert!(
            err("tasks:\n- name: a\n  command: [x]\n  overrides: [a, 'b,c']\n")
                .contains("\"b,c\" is not a valid PodOverride name")
        );
    }
}
