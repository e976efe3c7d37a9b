//! `podtailor launch`: submits bare pods that opt in, follows them to completion and reports.
//!
//! A bare pod carries only what is specific to the task: `generateName`, one container named
//! `base` with the command (and the image, env and labels when given) and the annotation
//! `podtailor.dev/override`. The template and the overrides fill in the rest in the cluster.
//!
//! [`follow::run_one`] runs one task against any [`kube::Client`] (the tests give it a mock API
//! server); [`batch::run`] runs many with a bound on how many run at once; [`run`] is the CLI.

pub mod batch;
pub mod follow;
pub mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::merge::{OVERRIDE_ANNOTATION, Want, parse_override_names};
use crate::mutate::{Decision, decide};
use crate::{store, validate};

pub use follow::{Ending, LaunchError, Options, Outcome, Retry, TaskError, run_one};
use report::Report;

/// The container of a bare pod: the one the template and the overrides fill in.
pub const CONTAINER: &str = "base";
/// The pod name prefix when `--name` is not given.
pub const DEFAULT_PREFIX: &str = "task";

/// Exit codes, also in `podtailor launch --help`.
pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_TIMEOUT: u8 = 124;
pub const EXIT_INTERRUPTED: u8 = 130;

const AFTER_HELP: &str = "\
Output: the task's log on standard output; progress (phase changes with the elapsed time, a
spinner when standard error is a terminal), the pod's fate and a batch's summary table on
standard error. --detach prints the pod's name (without the namespace) on standard output.

Exit codes:
  0    the task succeeded (a batch: every task succeeded; --detach, --dry-run: done)
  N    the task's container exited with N (a single task)
  1    a podtailor error: the pod was denied or could not be created or followed, a bad
       tasks file, a pod that failed without an exit code; a batch with a failed task
  2    usage: unknown flag, bad -n/--env/--label/--name/--override value
  124  --timeout expired: the pod was deleted
  130  interrupted (Ctrl-C or SIGTERM): the pod was deleted (a second one exits at once)

Retries: 429, 500, 502, 503, 504 and broken connections, 6 tries with backoff (0.5 s
doubling up to 8 s: about 15 s in all; a connection must be made within 5 s). The pod
carries the label podtailor.dev/launch-id (random): before it tries a create again, the
launcher looks for the pod by it, so a create whose answer was lost does not run the task twice.

Kubeconfig: KUBECONFIG, else ~/.kube/config (its current context, or --context), else the
in-cluster service account. The namespace is -n, else the context's, else `default`.
--dry-run contacts nothing and reads no kubeconfig: with -n its pods carry that namespace
(apply them as they are); without, they carry none and --template makes the pod for `default`.";

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct LaunchArgs {
    /// The namespace of the pods (default: the kubeconfig context's, else `default`).
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// PodOverride names, comma-separated, applied in order (repeatable; none: the template only).
    #[arg(long = "override", value_name = "NAMES", conflicts_with = "file")]
    pub override_names: Vec<String>,
    /// The container's image (default: the template's).
    #[arg(long, value_name = "IMAGE", conflicts_with = "file")]
    pub image: Option<String>,
    /// The pod name prefix: the pod is named PREFIX-xxxxx by the API server.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_PREFIX, conflicts_with = "file")]
    pub name: String,
    /// An environment variable of the container (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_env, conflicts_with = "file")]
    pub env: Vec<(String, String)>,
    /// A label of the pod (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_label, conflicts_with = "file")]
    pub label: Vec<(String, String)>,
    /// Give up after this long (like 90s, 10m, 1h 30m): the pod is deleted, exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Keep the pod when it succeeded (a failed pod is always kept, for inspection).
    #[arg(long)]
    pub keep: bool,
    /// Create the pod, print its name and return without following it.
    #[arg(long, conflicts_with_all = ["file", "dry_run", "timeout", "keep"])]
    pub detach: bool,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "CTX")]
    pub context: Option<String>,
    /// Run a batch of tasks from a YAML file (see docs/cli.md: `tasks:`, a list of tasks).
    #[arg(long, short = 'f', value_name = "TASKS_FILE")]
    pub file: Option<PathBuf>,
    /// At most N tasks of a batch run at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..), requires = "file")]
    pub parallelism: u16,
    /// Print the bare pod(s) that would be created, and contact nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The format of --dry-run's output.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT", requires = "dry_run")]
    pub output: Option<Output>,
    /// With --dry-run: also show the pod the webhook would make, with this template (and the
    /// overrides of --overrides; none: the template alone).
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub template: Option<PathBuf>,
    /// With --dry-run and --template: a directory of PodOverride files.
    #[arg(long = "overrides", value_name = "DIR", requires_all = ["dry_run", "template"])]
    pub overrides_dir: Option<PathBuf>,
    /// With --dry-run and --template: a directory of PodTemplate files; the one named
    /// --namespace-template-name in the namespace replaces --template.
    #[arg(long, value_name = "DIR", requires_all = ["dry_run", "template"])]
    pub namespace_templates: Option<PathBuf>,
    /// The name of a namespace's own PodTemplate.
    #[arg(long, value_name = "NAME", default_value = store::files::NAMESPACE_TEMPLATE_NAME, requires = "namespace_templates")]
    pub namespace_template_name: String,
    /// The container's command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND", required_unless_present = "file", conflicts_with = "file")]
    pub command: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Yaml,
    Json,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None => Err("expected KEY=VALUE".into()),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = parse_pair(s)?;
    validate::env_name(&k).map_err(|why| format!("{k:?} is not an environment variable name: it {why}"))?;
    Ok((k, v))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = parse_pair(s)?;
    validate::label_key(&k).map_err(|why| format!("{k:?} is not a label key: it {why}"))?;
    validate::label_value(&v).map_err(|why| format!("{v:?} is not a label value: it {why}"))?;
    Ok((k, v))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (expected a duration like 90s, 10m or 1h 30m)")),
    }
}

/// One task: what its bare pod carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// The task's name in reports (a batch's task name; the prefix for a single task).
    pub task: String,
    /// `generateName` is this and `-`.
    pub prefix: String,
    pub command: Vec<String>,
    pub image: Option<String>,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    /// PodOverride names, in order; empty: the template only.
    pub overrides: Vec<String>,
}

impl TaskSpec {
    /// Checks what the API server or the webhook would otherwise refuse, naming the value.
    pub fn validate(&self) -> Result<(), String> {
        validate::dns_subdomain(&self.prefix)
            .map_err(|why| format!("{:?} is not a valid pod name prefix: it {why}", self.prefix))?;
        if self.prefix.len() > 57 {
            return Err(format!(
                "{:?} is not a valid pod name prefix: it must be at most 57 characters (the API server keeps at \
                 most 58 of generateName, the prefix and '-', and adds 5)",
                self.prefix
            ));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("the command is empty".into());
        }
        if self.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return Err("the image is empty".into());
        }
        for (i, (k, _)) in self.env.iter().enumerate() {
            validate::env_name(k).map_err(|why| format!("{k:?} is not an environment variable name: it {why}"))?;
            if self.env[..i].iter().any(|(other, _)| other == k) {
                return Err(format!("the environment variable {k:?} is given twice"));
            }
        }
        for (i, (k, v)) in self.labels.iter().enumerate() {
            validate::label_key(k).map_err(|why| format!("{k:?} is not a label key: it {why}"))?;
            validate::label_value(v).map_err(|why| format!("{v:?} is not a label value: it {why}"))?;
            if self.labels[..i].iter().any(|(other, _)| other == k) {
                return Err(format!("the label {k:?} is given twice"));
            }
        }
        for (i, name) in self.overrides.iter().enumerate() {
            validate::dns_subdomain(name)
                .map_err(|why| format!("{name:?} is not a valid PodOverride name: it {why}"))?;
            if self.overrides[..i].contains(name) {
                return Err(format!("the override {name:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// The bare pod, exactly as it is posted: apiVersion, kind, metadata (generateName,
    /// labels, the override annotation) and one container; nothing else.
    pub fn pod(&self) -> Value {
        let mut metadata = Map::new();
        metadata.insert("generateName".into(), json!(format!("{}-", self.prefix)));
        if !self.labels.is_empty() {
            let labels: Map<String, Value> = self.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            metadata.insert("labels".into(), Value::Object(labels));
        }
        metadata.insert("annotations".into(), json!({ OVERRIDE_ANNOTATION: self.overrides.join(",") }));
        let mut container = Map::new();
        container.insert("name".into(), json!(CONTAINER));
        if let Some(image) = &self.image {
            container.insert("image".into(), json!(image));
        }
        container.insert("command".into(), json!(self.command));
        if !self.env.is_empty() {
            let env: Vec<Value> = self.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
            container.insert("env".into(), Value::Array(env));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": [container]},
        })
    }
}

/// The task the command line describes (without `-f`).
pub fn single_task(args: &LaunchArgs) -> Result<TaskSpec, String> {
    let mut overrides = Vec::new();
    for names in &args.override_names {
        overrides.extend(parse_override_names(names).map_err(|e| format!("--override: {e}"))?);
    }
    let spec = TaskSpec {
        task: args.name.clone(),
        prefix: args.name.clone(),
        command: args.command.clone(),
        image: args.image.clone(),
        env: args.env.clone(),
        labels: args.label.clone(),
        overrides,
    };
    spec.validate()?;
    Ok(spec)
}

/// What `--dry-run` prints: each task's bare pod and, with a configuration, the pod the
/// webhook would make of it in `namespace` (`-n`, else `default`); and the webhook's warnings
/// (a value the task set itself, its image say, that an override replaced), each naming its
/// task. With `-n` the pods carry `metadata.namespace`, so the output applies as it is; without
/// it they carry none, and `kubectl apply` puts them in its context's namespace, as launch would.
pub fn dry_run(
    tasks: &[TaskSpec],
    config: Option<&store::Config>,
    namespace: Option<&str>,
    output: Output,
) -> Result<(String, Vec<String>), String> {
    let mut docs: Vec<(String, Value)> = Vec::new();
    let mut warnings = Vec::new();
    let given = namespace;
    let namespace = match (given, config) {
        (Some(ns), _) => ns,
        (None, Some(config)) => crate::render::unknown_namespace(config)?,
        (None, None) => "default",
    };
    for t in tasks {
        let mut bare = t.pod();
        if let (Some(ns), Some(metadata)) = (given, bare.get_mut("metadata").and_then(Value::as_object_mut)) {
            // after generateName, where `kubectl get -o yaml` shows it
            metadata.shift_insert(1, "namespace".into(), json!(ns));
        }
        if let Some(config) = config {
            let desired = match decide(config, namespace, &bare, Want::Desired) {
                Ok(Decision::Mutated { outcome, .. }) => {
                    warnings.extend(outcome.warnings.iter().map(|w| format!("task {:?}: {w}", t.task)));
                    outcome.desired.unwrap_or_default()
                }
                Ok(Decision::NotOptedIn) => bare.clone(),
                Err(denial) => {
                    return Err(format!("task {:?}: the webhook would deny its pod: {denial}", t.task));
                }
            };
            docs.push((format!("task {}: the bare pod", t.task), bare));
            docs.push((format!("task {}: the pod the webhook would make (namespace {namespace})", t.task), desired));
        } else {
            docs.push((format!("task {}: the bare pod", t.task), bare));
        }
    }
    let text = match output {
        Output::Json => {
            let value = if docs.len() == 1 {
                docs.remove(0).1
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": docs.into_iter().map(|(_, v)| v).collect::<Vec<_>>()})
            };
            let mut s = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
            s.push('\n');
            s
        }
        Output::Yaml => {
            let mut s = String::new();
            let several = docs.len() > 1;
            for (i, (title, doc)) in docs.iter().enumerate() {
                if i > 0 {
                    s.push_str("---\n");
                }
                if several {
                    s.push_str(&format!("# {title}\n"));
                }
                s.push_str(&crate::yaml::to_string(doc).map_err(|e| e.to_string())?);
            }
            s
        }
    };
    Ok((text, warnings))
}

/// Runs `podtailor launch` and returns the exit code. Messages go to standard error.
pub fn run(args: LaunchArgs) -> u8 {
    let fail = |code: u8, message: String| {
        eprintln!("podtailor launch: {message}");
        code
    };
    if let Some(ns) = &args.namespace
        && let Err(why) = validate::dns_label(ns)
    {
        return fail(EXIT_USAGE, format!("-n {ns:?} is not a namespace name: it {why}"));
    }
    let tasks = match &args.file {
        Some(path) => match batch::load(path) {
            Ok(tasks) => tasks,
            Err(e) => return fail(EXIT_ERROR, e.to_string()),
        },
        None => match single_task(&args) {
            Ok(task) => vec![task],
            Err(e) => return fail(EXIT_USAGE, e),
        },
    };
    if args.dry_run {
        let config = match &args.template {
            Some(template) => match store::files::load_flags(store::files::Flags {
                template,
                overrides: args.overrides_dir.as_deref(),
                namespace_templates: args.namespace_templates.as_deref(),
                namespace_template_name: &args.namespace_template_name,
            }) {
                Ok(config) => Some(config),
                Err(e) => return fail(EXIT_ERROR, e.to_string()),
            },
            None => None,
        };
        return match dry_run(&tasks, config.as_ref(), args.namespace.as_deref(), args.output.unwrap_or(Output::Yaml)) {
            Ok((text, warnings)) => {
                for warning in &warnings {
                    eprintln!("podtailor launch: warning: {warning}");
                }
                print!("{text}");
                EXIT_OK
            }
            Err(e) => fail(EXIT_ERROR, e),
        };
    }
    crate::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_ERROR, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let (client, namespace, server) = match connect(args.context.as_deref(), args.namespace.as_deref()).await {
            Ok(c) => c,
            Err(e) => return fail(EXIT_ERROR, e),
        };
        let interrupt = interrupt_on_signals();
        let opts = Options {
            namespace,
            server: Some(server),
            keep: args.keep,
            detach: args.detach,
            timeout: args.timeout,
            ..Options::default()
        };
        let terminal = std::io::stderr().is_terminal();
        if args.file.is_some() {
            let reports = report::for_batch(&tasks, terminal);
            let results = batch::run(&client, &tasks, &opts, usize::from(args.parallelism), &reports, &interrupt).await;
            drop(reports);
            if terminal {
                // The last spinner's line is not ended.
                eprintln!();
            }
            eprint!("{}", batch::summary(&results));
            return batch::exit_code(&results);
        }
        let Some(task) = tasks.first() else { return EXIT_OK };
        let report: Arc<dyn Report> = report::for_single(terminal);
        let outcome = run_one(&client, task, &opts, report.as_ref(), interrupt.cancelled_owned()).await;
        report.finished(&outcome);
        match outcome {
            Ok(outcome) => {
                if outcome.ending == Ending::Detached
                    && let Some(pod) = &outcome.pod
                {
                    use std::io::Write;
                    let _closed_pipe = writeln!(std::io::stdout(), "{pod}");
                }
                outcome.exit_code()
            }
            Err(e) => fail(EXIT_ERROR, e.to_string()),
        }
    })
}

/// A client from the standard kubeconfig resolution, the namespace to use and the API
/// server's address. kube's own retry layer is turned off: [`follow`] retries what is
/// transient, visibly and boundedly; and a connection must be made within
/// [`CONNECT_TIMEOUT`], not kube's 30 s, so an API server that cannot be reached at all is
/// given up on after about 45 s (6 tries), not 3 minutes.
async fn connect(context: Option<&str>, namespace: Option<&str>) -> Result<(kube::Client, String, String), String> {
    let config = match context {
        Some(ctx) => {
            let options = kube::config::KubeConfigOptions { context: Some(ctx.to_owned()), ..Default::default() };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| format!("cannot use the kubeconfig context {ctx:?}: {e}"))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration (KUBECONFIG, ~/.kube/config, in-cluster): {e}"))?,
    };
    let mut config = config;
    config.default_retry = false;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_owned);
    let server = config.cluster_url.to_string();
    let client =
        kube::Client::try_from(config).map_err(|e| format!("cannot make a Kubernetes client for {server}: {e}"))?;
    Ok((client, namespace, server))
}

/// How long the launcher waits for a TCP connection to the API server (which accepts in
/// milliseconds when it is up).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A token cancelled by the first SIGINT (Ctrl-C) or SIGTERM; a second one exits at once
/// with 130. The handlers are installed before this returns, so no signal is missed.
fn interrupt_on_signals() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let (sigint, sigterm) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("podtailor launch: cannot handle Ctrl-C ({e}): an interrupted pod will not be deleted");
            return token;
        }
    };
    let cancel = token.clone();
    tokio::spawn(async move {
        let (mut sigint, mut sigterm) = (sigint, sigterm);
        let mut signals = 0;
        loop {
            tokio::select! {
                Some(()) = sigint.recv() => {}
                Some(()) = sigterm.recv() => {}
                else => return,
            }
            signals += 1;
            if signals == 1 {
                cancel.cancel();
            } else {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskSpec {
        TaskSpec {
            task: "task".into(),
            prefix: "task".into(),
            command: vec!["echo".into(), "hi".into()],
            image: None,
            env: vec![],
            labels: vec![],
            overrides: vec![],
        }
    }

    #[test]
    fn the_barest_pod() {
        assert_eq!(
            task().pod(),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"generateName": "task-", "annotations": {"podtailor.dev/override": ""}},
                   "spec": {"containers": [{"name": "base", "command": ["echo", "hi"]}]}})
        );
    }

    #[test]
    fn checks_names_env_labels_and_overrides() {
        let bad = |f: fn(&mut TaskSpec)| {
            let mut t = task();
            f(&mut t);
            t.validate().err().unwrap_or_default()
        };
        assert!(bad(|t| t.prefix = "Task".into()).contains("pod name prefix"));
        assert!(bad(|t| t.prefix = "a".repeat(58)).contains("at most 57"));
        assert!(bad(|t| t.command = vec![]).contains("command is empty"));
        assert!(bad(|t| t.env = vec![("1X".into(), "v".into())]).contains("environment variable name"));
        assert!(bad(|t| t.env = vec![("X".into(), "1".into()), ("X".into(), "2".into())]).contains("twice"));
        assert!(bad(|t| t.labels = vec![("a b".into(), "v".into())]).contains("label key"));
        assert!(bad(|t| t.labels = vec![("a".into(), "-v".into())]).contains("label value"));
        assert!(bad(|t| t.overrides = vec!["Big".into()]).contains("not a valid PodOverride name"));
        assert!(bad(|t| t.overrides = vec!["a".into(), "a".into()]).contains("listed twice"));
        assert_eq!(bad(|_| {}), "");
    }

    #[test]
    fn pairs_and_durations() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("A").is_err_and(|e| e.contains("KEY=VALUE")));
        assert!(parse_label("team=Data Eng").is_err_and(|e| e.contains("label value")));
        assert_eq!(parse_timeout("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
