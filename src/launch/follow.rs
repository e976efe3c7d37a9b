//! One task: create its bare pod (retrying what is transient, and never twice), follow it to
//! its end (phase changes, the `base` container's log), and clean up after it.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::report::{Report, elapsed};
use super::{CONTAINER, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TIMEOUT, TaskSpec};

/// How a task is run.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    /// The API server's address, for messages (a create that cannot reach it names it).
    pub server: Option<String>,
    /// Keep the pod when it succeeded (a failed one is always kept).
    pub keep: bool,
    /// Return once the pod is created.
    pub detach: bool,
    /// From the launch to the pod's end; on expiry the pod is deleted.
    pub timeout: Option<Duration>,
    pub retry: Retry,
    /// Once the pod has finished, how long the rest of its log may take to arrive.
    pub log_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: "default".into(),
            server: None,
            keep: false,
            detach: false,
            timeout: None,
            retry: Retry::default(),
            log_grace: Duration::from_secs(10),
        }
    }
}

/// Retries of transient API errors (429, 500, 502, 503, 504, broken connections): at most
/// `attempts` tries in all, waiting `first_delay`, then twice as long each time, up to
/// `max_delay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 6, first_delay: Duration::from_millis(500), max_delay: Duration::from_secs(8) }
    }
}

impl Retry {
    /// The wait before try number `attempt + 1` (`attempt` counts from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `--detach`: the pod was created and left to run.
    Detached,
    /// The pod ran to its end; `exit_code` is the `base` container's (1 for a pod that
    /// failed without one).
    Finished { succeeded: bool, exit_code: i32 },
    /// `--timeout` expired: the pod was deleted.
    TimedOut,
    /// Interrupted (Ctrl-C): the pod was deleted.
    Interrupted,
}

/// What became of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub namespace: String,
    /// The pod's name, once created.
    pub pod: Option<String>,
    pub ending: Ending,
    /// From the launch to the end.
    pub elapsed: Duration,
}

impl Outcome {
    /// The process's exit code for this outcome: the container's own, 124, 130.
    pub fn exit_code(&self) -> u8 {
        match self.ending {
            Ending::Detached => 0,
            Ending::Finished { exit_code, .. } => u8::try_from(exit_code).unwrap_or(EXIT_ERROR),
            Ending::TimedOut => EXIT_TIMEOUT,
            Ending::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

/// Why a task could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// An admission webhook denied the pod: the API server's message, as it returned it.
    #[error("{0}")]
    Denied(String),
    /// The API server refused a request for a reason retrying will not change.
    #[error("{what}: {message}")]
    Api { what: String, message: String },
    /// A transient error that outlasted the retries.
    #[error("{what}: gave up after {attempts} attempts: {last}")]
    GaveUp { what: String, attempts: u32, last: String },
    /// Someone else deleted the pod while it ran.
    #[error("pod {0} was deleted before it finished")]
    Vanished(String),
}

/// A [`LaunchError`] and the pod it concerns, if one was created.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct TaskError {
    /// `namespace/name`.
    pub pod: Option<String>,
    pub error: LaunchError,
}

impl TaskError {
    pub fn is_denial(&self) -> bool {
        matches!(self.error, LaunchError::Denied(_))
    }
}

/// A kube error for people: the API server's code, reason and message, or the chain of causes.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.reason.is_empty() => format!("{} {}", s.code, s.message),
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let more = s.to_string();
                if !text.contains(&more) {
                    text.push_str(": ");
                    text.push_str(&more);
                }
                source = s.source();
            }
            text
        }
    }
}

/// An admission webhook's denial, as the API server words it.
fn is_denial(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.message.contains("admission webhook") && s.message.contains("denied the request"))
}

fn transient_code(code: u16) -> bool {
    matches!(code, 429 | 500 | 502 | 503 | 504)
}

/// Worth retrying: overload, a server error that may pass, a broken connection. Never a denial.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => transient_code(s.code) && !is_denial(e),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn watch_transient(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            is_transient(e)
        }
        watcher::Error::WatchError(s) => s.code == 410 || transient_code(s.code),
        watcher::Error::NoResourceVersion => true,
    }
}

/// Why following stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    Interrupted,
    TimedOut,
}

/// The interrupt and the deadline, watched while waiting. Once the interrupt has fired it
/// stays fired.
struct Stop<I> {
    interrupt: Pin<Box<I>>,
    interrupted: bool,
    deadline: Option<Instant>,
}

impl<I: Future<Output = ()>> Stop<I> {
    /// Resolves when interrupted or past the deadline.
    async fn wait(&mut self) -> Halt {
        if self.interrupted {
            return Halt::Interrupted;
        }
        let deadline = self.deadline;
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut self.interrupt => {
                self.interrupted = true;
                Halt::Interrupted
            }
            () = timer => Halt::TimedOut,
        }
    }

    /// Sleeps `delay`, unless halted first.
    async fn pause(&mut self, delay: Duration) -> Result<(), Halt> {
        tokio::select! {
            biased;
            halt = self.wait() => Err(halt),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

enum Failure {
    Halt(Halt),
    Error(LaunchError),
}

/// Calls `call` until it succeeds, fails for good, or the transient errors outlast `retry`;
/// a wait between tries ends early if `stop` halts.
async fn retrying<T, F, Fut, I>(
    what: &str,
    retry: Retry,
    report: &dyn Report,
    stop: &mut Stop<I>,
    mut call: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
    I: Future<Output = ()>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if is_denial(&e) => {
                let message = match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => describe(other),
                };
                return Err(Failure::Error(LaunchError::Denied(message)));
            }
            Err(e) if is_transient(&e) && attempt < retry.attempts.max(1) => {
                let delay = retry.delay(attempt);
                report.note(&format!(
                    "{what}: {}; retrying in {} (attempt {} of {})",
                    describe(&e),
                    elapsed(delay),
                    attempt + 1,
                    retry.attempts
                ));
                stop.pause(delay).await.map_err(Failure::Halt)?;
                attempt += 1;
            }
            Err(e) if is_transient(&e) => {
                return Err(Failure::Error(LaunchError::GaveUp {
                    what: what.to_owned(),
                    attempts: attempt,
                    last: describe(&e),
                }));
            }
            Err(e) => return Err(Failure::Error(LaunchError::Api { what: what.to_owned(), message: describe(&e) })),
        }
    }
}

/// The label by which the launcher finds the pod of a create whose answer was lost: one
/// random value for each pod it creates.
pub const LAUNCH_ID_LABEL: &str = "podtailor.dev/launch-id";

/// A value for [`LAUNCH_ID_LABEL`]: 16 hexadecimal digits from the standard library's
/// random hash keys, which differ at each call (random for each thread, then counted), and
/// the time (unique, not secret).
fn launch_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", h.finish())
}

/// Creates the pod `body`, whose [`LAUNCH_ID_LABEL`] is `id`. On a try after the first, the
/// pod is looked for first: a create whose answer was lost (a timeout, a broken connection)
/// may have made it, and the task must not run twice.
async fn create_once(
    client: &kube::Client,
    namespace: &str,
    body: &Value,
    id: &str,
    again: bool,
    report: &dyn Report,
) -> Result<Pod, kube::Error> {
    if again {
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let selector = format!("{LAUNCH_ID_LABEL}={id}");
        // an API error keeps its code (so whether it is retried), and says it was the look
        let found = api.list(&ListParams::default().labels(&selector)).await.map_err(|e| match e {
            kube::Error::Api(mut s) => {
                s.message = format!("looking for a pod an earlier try may have made ({selector}): {}", s.message);
                kube::Error::Api(s)
            }
            other => other,
        })?;
        if let Some(pod) = found.items.into_iter().next() {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            report.note(&format!(
                "pod {namespace}/{name} was created by an earlier try whose answer was lost: following it"
            ));
            return Ok(pod);
        }
    }
    create(client, namespace, body).await
}

/// POSTs `body` exactly as given.
async fn create(client: &kube::Client, namespace: &str, body: &Value) -> Result<Pod, kube::Error> {
    let bytes = serde_json::to_vec(body).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .create(&PostParams::default(), bytes)
        .map_err(kube::Error::BuildRequest)?;
    client.request::<Pod>(request).await
}

/// Runs one task: creates its bare pod in `opts.namespace` and, unless `opts.detach`, follows
/// it to its end, reporting to `report`. When `interrupt` resolves, the pod is deleted and the
/// outcome is [`Ending::Interrupted`].
pub async fn run_one(
    client: &kube::Client,
    task: &TaskSpec,
    opts: &Options,
    report: &dyn Report,
    interrupt: impl Future<Output = ()>,
) -> Result<Outcome, TaskError> {
    let start = Instant::now();
    let ns = opts.namespace.as_str();
    let mut stop =
        Stop { interrupt: Box::pin(interrupt), interrupted: false, deadline: opts.timeout.map(|t| start + t) };
    let outcome = |pod: Option<String>, ending: Ending| Outcome {
        namespace: ns.to_owned(),
        pod,
        ending,
        elapsed: start.elapsed(),
    };
    let id = launch_id();
    let mut labelled = task.clone();
    labelled.labels.push((LAUNCH_ID_LABEL.to_owned(), id.clone()));
    let body = labelled.pod();
    let what = match &opts.server {
        Some(server) => format!("creating the pod in namespace {ns:?} on {server}"),
        None => format!("creating the pod in namespace {ns:?}"),
    };
    let mut tries = 0;
    let create = || {
        tries += 1;
        create_once(client, ns, &body, &id, tries > 1, report)
    };
    let created = match retrying(&what, opts.retry, report, &mut stop, create).await {
        Ok(pod) => pod,
        Err(Failure::Halt(halt)) => {
            report.note(&halted_before_creation(halt, opts));
            return Ok(outcome(None, ending_of(halt)));
        }
        Err(Failure::Error(error)) => return Err(TaskError { pod: None, error }),
    };
    let Some(name) = created.metadata.name.clone() else {
        let error = LaunchError::Api { what, message: "the API server returned a pod without a name".into() };
        return Err(TaskError { pod: None, error });
    };
    let full = format!("{ns}/{name}");
    report.created(&full);
    if opts.detach {
        return Ok(outcome(Some(name), Ending::Detached));
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let followed = follow(&api, &name, start, opts, report, &mut stop).await;
    let ending = match followed {
        Err(error) => {
            if !matches!(error, LaunchError::Vanished(_)) {
                report.note(&format!("pod {full} is left as it is"));
            }
            return Err(TaskError { pod: Some(full), error });
        }
        Ok(Err(halt)) => {
            report.note(&match halt {
                Halt::Interrupted => format!("interrupted: deleting pod {full}"),
                Halt::TimedOut => format!(
                    "timed out after {}: deleting pod {full}",
                    humantime::format_duration(opts.timeout.unwrap_or_default())
                ),
            });
            delete(&api, &name, &full, opts.retry, report).await;
            ending_of(halt)
        }
        Ok(Ok(finished)) => {
            if !finished.succeeded {
                report.note(&format!(
                    "pod {full} failed and is kept for inspection: kubectl -n {ns} describe pod {name}; \
                     kubectl -n {ns} logs {name}"
                ));
            } else if opts.keep {
                report.note(&format!("pod {full} kept (--keep)"));
            } else {
                delete(&api, &name, &full, opts.retry, report).await;
            }
            Ending::Finished { succeeded: finished.succeeded, exit_code: finished.exit_code }
        }
    };
    Ok(outcome(Some(name), ending))
}

fn ending_of(halt: Halt) -> Ending {
    match halt {
        Halt::Interrupted => Ending::Interrupted,
        Halt::TimedOut => Ending::TimedOut,
    }
}

fn halted_before_creation(halt: Halt, opts: &Options) -> String {
    match halt {
        Halt::Interrupted => "interrupted before the pod was created".into(),
        Halt::TimedOut => format!(
            "timed out after {} before the pod was created",
            humantime::format_duration(opts.timeout.unwrap_or_default())
        ),
    }
}

/// Deletes the pod, retrying what is transient; a pod already gone is fine.
async fn delete(api: &Api<Pod>, name: &str, full: &str, retry: Retry, report: &dyn Report) {
    let mut never = Stop { interrupt: Box::pin(std::future::pending::<()>()), interrupted: false, deadline: None };
    let what = format!("deleting pod {full}");
    let params = DeleteParams::default();
    match retrying(&what, retry, report, &mut never, || api.delete(name, &params)).await {
        Ok(_) => report.note(&format!("pod {full} deleted")),
        Err(Failure::Error(LaunchError::Api { message, .. })) if message.starts_with("404") => {
            report.note(&format!("pod {full} was already gone"));
        }
        Err(Failure::Error(e)) => report.note(&format!("{e}: the pod is left behind")),
        Err(Failure::Halt(_)) => {}
    }
}

/// The pod's end: whether it succeeded, and the exit code to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Finished {
    succeeded: bool,
    exit_code: i32,
}

/// What a pod's status says, for people, and whether the task is over.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    state: String,
    finished: Option<Finished>,
    /// The `base` container has started (its log can be read).
    started: bool,
}

fn base_status(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find(|c| c.name == CONTAINER).or_else(|| statuses.first())
}

fn with_detail(phase: &str, reason: Option<&str>, message: Option<&str>) -> String {
    match (reason.filter(|r| !r.is_empty()), message.filter(|m| !m.is_empty())) {
        (Some(r), Some(m)) => format!("{phase} ({r}: {m})"),
        (Some(r), None) => format!("{phase} ({r})"),
        (None, Some(m)) => format!("{phase} ({m})"),
        (None, None) => phase.to_owned(),
    }
}

fn view(pod: &Pod) -> View {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let base = base_status(pod);
    let state = base.and_then(|c| c.state.as_ref());
    let waiting = state.and_then(|s| s.waiting.as_ref());
    let terminated = state.and_then(|s| s.terminated.as_ref());
    let started = state.is_some_and(|s| s.running.is_some() || s.terminated.is_some());
    let exit = |code: i32, reason: Option<&str>| match reason.filter(|r| !r.is_empty() && *r != "Completed") {
        Some(r) => format!("{r}, exit code {code}"),
        None => format!("exit code {code}"),
    };
    let never_restarts = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never");
    match phase {
        "Succeeded" => {
            let code = terminated.map_or(0, |t| t.exit_code);
            View {
                state: format!("Succeeded ({})", exit(code, terminated.and_then(|t| t.reason.as_deref()))),
                finished: Some(Finished { succeeded: true, exit_code: code }),
                started,
            }
        }
        "Failed" => match terminated {
            Some(t) => View {
                state: format!("Failed ({})", exit(t.exit_code, t.reason.as_deref())),
                finished: Some(Finished {
                    succeeded: false,
                    exit_code: if t.exit_code == 0 { 1 } else { t.exit_code },
                }),
                started,
            },
            None => View {
                state: with_detail(
                    "Failed",
                    status.and_then(|s| s.reason.as_deref()),
                    status.and_then(|s| s.message.as_deref()),
                ),
                finished: Some(Finished { succeeded: false, exit_code: 1 }),
                started,
            },
        },
        "Running" if never_restarts && terminated.is_some() => {
            // The base container is done; other containers (sidecars) may still run.
            let code = terminated.map_or(1, |t| t.exit_code);
            let reason = terminated.and_then(|t| t.reason.as_deref());
            View {
                state: format!("Running ({CONTAINER} exited: {})", exit(code, reason)),
                finished: Some(Finished { succeeded: code == 0, exit_code: code }),
                started,
            }
        }
        "Pending" => {
            let scheduling = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False"));
            let state = match (waiting, scheduling) {
                (Some(w), _)
                    if w.reason.as_deref().is_some_and(|r| r != "ContainerCreating" && r != "PodInitializing") =>
                {
                    with_detail("Pending", w.reason.as_deref(), w.message.as_deref())
                }
                (Some(w), _) => with_detail("Pending", w.reason.as_deref(), None),
                (None, Some(c)) => with_detail("Pending", c.reason.as_deref(), c.message.as_deref()),
                (None, None) => "Pending".to_owned(),
            };
            View { state, finished: None, started }
        }
        other => match waiting {
            Some(w) => {
                View { state: with_detail(other, w.reason.as_deref(), w.message.as_deref()), finished: None, started }
            }
            None => View {
                state: with_detail(other, status.and_then(|s| s.reason.as_deref()), None),
                finished: None,
                started,
            },
        },
    }
}

enum LogItem {
    Line(String),
    Error(String),
}

/// Aborts the log reader when following ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Streams the `base` container's log, line by line, into a channel that closes at its end.
fn read_log(api: Api<Pod>, name: String, retry: Retry) -> (mpsc::Receiver<LogItem>, AbortOnDrop) {
    let (tx, rx) = mpsc::channel(256);
    let task = tokio::spawn(async move {
        let params = LogParams { container: Some(CONTAINER.into()), follow: true, ..LogParams::default() };
        let mut attempt = 1;
        let stream = loop {
            match api.log_stream(&name, &params).await {
                Ok(s) => break s,
                Err(e) if is_transient(&e) && attempt < retry.attempts => {
                    tokio::time::sleep(retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    let _closed = tx.send(LogItem::Error(describe(&e))).await;
                    return;
                }
            }
        };
        let mut stream = Box::pin(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stream.read_until(b'\n', &mut buf).await {
                Ok(0) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches('\n').trim_end_matches('\r').to_owned();
                    if tx.send(LogItem::Line(line)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _closed = tx.send(LogItem::Error(e.to_string())).await;
                    return;
                }
            }
        }
    });
    (rx, AbortOnDrop(task))
}

async fn next_log(logs: &mut Option<mpsc::Receiver<LogItem>>) -> Option<LogItem> {
    match logs {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Follows the pod until it finishes (then until its log has ended, at most
/// `opts.log_grace` more), or `stop` halts.
async fn follow<I: Future<Output = ()>>(
    api: &Api<Pod>,
    name: &str,
    start: Instant,
    opts: &Options,
    report: &dyn Report,
    stop: &mut Stop<I>,
) -> Result<Result<Finished, Halt>, LaunchError> {
    let full = format!("{}/{name}", opts.namespace);
    let mut watch = watcher::watch_object(api.clone(), name).default_backoff().boxed();
    let mut last_state: Option<String> = None;
    let mut watch_errors = 0;
    let mut logs: Option<mpsc::Receiver<LogItem>> = None;
    let mut log_reader: Option<AbortOnDrop> = None;
    let mut finished: Option<Finished> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        if let Some(f) = finished
            && logs.is_none()
        {
            return Ok(Ok(f));
        }
        tokio::select! {
            biased;
            halt = stop.wait() => return Ok(Err(halt)),
            item = next_log(&mut logs) => match item {
                Some(LogItem::Line(line)) => report.log(&line),
                Some(LogItem::Error(e)) => report.note(&format!("the log of pod {full} could not be read: {e}")),
                None => logs = None,
            },
            () = until(drain_until), if drain_until.is_some() => {
                report.note(&format!("the rest of the log of pod {full} did not arrive in time"));
                logs = None;
            }
            event = watch.next(), if finished.is_none() => match event {
                None => return Err(LaunchError::Api { what: format!("following pod {full}"), message: "the watch ended".into() }),
                Some(Err(e)) => {
                    watch_errors += 1;
                    if !watch_transient(&e) {
                        return Err(LaunchError::Api { what: format!("following pod {full}"), message: e.to_string() });
                    }
                    if watch_errors >= opts.retry.attempts {
                        return Err(LaunchError::GaveUp { what: format!("following pod {full}"), attempts: watch_errors, last: e.to_string() });
                    }
                    report.note(&format!("following pod {full}: {e}; watching again"));
                }
                Some(Ok(None)) => return Err(LaunchError::Vanished(full)),
                Some(Ok(Some(pod))) => {
                    watch_errors = 0;
                    let view = view(&pod);
                    if last_state.as_deref() != Some(view.state.as_str()) {
                        report.state(&view.state, start.elapsed());
                        last_state = Some(view.state);
                    }
                    if view.started && log_reader.is_none() {
                        let (rx, reader) = read_log(api.clone(), name.to_owned(), opts.retry);
                        logs = Some(rx);
                        log_reader = Some(reader);
                    }
                    if let Some(f) = view.finished {
                        finished = Some(f);
                        drain_until = Some(Instant::now() + opts.log_grace);
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "base"}], "restartPolicy": "Never"}, "status": status}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn states_for_people() {
        let v = view(&pod(json!({"phase": "Pending"})));
        assert_eq!((v.state.as_str(), v.finished, v.started), ("Pending", None, false));
        let v = view(&pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "base", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]}),
        ));
        assert_eq!(v.state, "Pending (ImagePullBackOff: Back-off pulling image \"nope\")");
        let v = view(&pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        ));
        assert_eq!(v.state, "Pending (Unschedulable: 0/3 nodes are available)");
        let v = view(&pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "base", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        ));
        assert_eq!(
            (v.state.as_str(), v.finished, v.started),
            ("Failed (OOMKilled, exit code 137)", Some(Finished { succeeded: false, exit_code: 137 }), true)
        );
        let v = view(&pod(json!({"phase": "Failed", "reason": "DeadlineExceeded", "message": "too long"})));
        assert_eq!(
            (v.state.as_str(), v.finished),
            ("Failed (DeadlineExceeded: too long)", Some(Finished { succeeded: false, exit_code: 1 }))
        );
        let v = view(&pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "base", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        ));
        assert_eq!(
            (v.state.as_str(), v.finished),
            ("Running (base exited: exit code 0)", Some(Finished { succeeded: true, exit_code: 0 }))
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry { attempts: 9, first_delay: Duration::from_millis(500), max_delay: Duration::from_secs(3) };
        let delays: Vec<u128> = (1..6).map(|a| r.delay(a).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
    }

    #[test]
    fn exit_codes() {
        let o = |ending| Outcome { namespace: "n".into(), pod: None, ending, elapsed: Duration::ZERO };
        assert_eq!(o(Ending::Finished { succeeded: false, exit_code: 3 }).exit_code(), 3);
        assert_eq!(o(Ending::Finished { succeeded: false, exit_code: 300 }).exit_code(), 1);
        assert_eq!(o(Ending::TimedOut).exit_code(), 124);
        assert_eq!(o(Ending::Interrupted).exit_code(), 130);
        assert_eq!(o(Ending::Detached).exit_code(), 0);
    }
}
