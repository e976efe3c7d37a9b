//! `podtailor launch` against a mock API server (`tower_test::mock::pair` behind a real
//! `kube::Client`), every test under a timeout; and the CLI's dry run and usage errors.

mod common;

use std::collections::{HashMap, VecDeque};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use podtailor::launch::batch::{self, TaskResult};
use podtailor::launch::report::Report;
use podtailor::launch::{Ending, Options, Outcome, Retry, TaskError, TaskSpec, run_one};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- the mock API server

fn container_status(state: Value) -> Value {
    json!([{"name": "base", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0, "state": state}])
}

fn pending() -> Value {
    json!({"phase": "Pending"})
}

fn running() -> Value {
    json!({"phase": "Running", "containerStatuses": container_status(json!({"running": {"startedAt": "2026-11-28T10:00:00Z"}}))})
}

fn ended(phase: &str, code: i32) -> Value {
    let reason = if code == 0 { "Completed" } else { "Error" };
    json!({"phase": phase, "containerStatuses": container_status(json!({"terminated": {"exitCode": code, "reason": reason}}))})
}

/// A Kubernetes Status, as the API server sends errors.
fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

#[derive(Default)]
struct State {
    /// Every request: `METHOD path?query`.
    requests: Vec<String>,
    /// Every POST: its path and query, and its body.
    posts: Vec<(String, Option<String>, Value)>,
    /// Answers to POSTs before pods are created for real.
    post_replies: VecDeque<(u16, Value)>,
    /// The statuses each new pod goes through: the first in the list, then one per watch.
    script: Vec<Value>,
    log: String,
    /// How long each watch answer takes.
    step_delay: Duration,
    /// Watches answered with a 500 before the script goes on.
    failing_watches: usize,
    /// Creates that make the pod but answer 504 (the answer lost), before the others.
    lost_answers: usize,
    /// Answers to lists by label selector before they are answered for real.
    list_replies: VecDeque<(u16, Value)>,
    /// name → the labels it was created with
    labels: HashMap<String, Value>,
    /// name → (namespace, step)
    pods: HashMap<String, (String, usize)>,
    deleted: Vec<String>,
    next_id: u32,
    active: usize,
    max_active: usize,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| panic!("mock state poisoned: {e}"))
}

fn pod_json(name: &str, ns: &str, step: usize, status: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": (step + 1).to_string(), "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "base", "image": "busybox"}], "restartPolicy": "Never"},
        "status": status,
    })
}

/// An answer: status code and body.
type Reply = (u16, Vec<u8>);

fn reply(code: u16, body: Vec<u8>) -> Reply {
    (code, body)
}

fn json_reply(code: u16, v: &Value) -> Reply {
    reply(code, v.to_string().into_bytes())
}

/// The pod a field selector names.
fn selected(query: &str) -> Option<String> {
    let at = query.find("fieldSelector=metadata.name%3D")? + "fieldSelector=metadata.name%3D".len();
    Some(query[at..].split('&').next().unwrap_or_default().to_owned())
}

/// The `key=value` of a `labelSelector` in a query, decoded.
fn label_selected(query: &str) -> Option<(String, String)> {
    let at = query.find("labelSelector=")? + "labelSelector=".len();
    let selector = query[at..].split('&').next().unwrap_or_default().replace("%2F", "/").replace("%3D", "=");
    let (k, v) = selector.split_once('=')?;
    Some((k.to_owned(), v.to_owned()))
}

/// `None`: never answer (a watch with nothing more to say).
async fn serve(state: Shared, method: Method, path: String, query: Option<String>, body: Vec<u8>) -> Option<Reply> {
    let q = query.clone().unwrap_or_default();
    lock(&state).requests.push(format!("{method} {path}?{q}"));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // api v1 namespaces NS pods [NAME [log]]
    let ns = parts.get(3).copied().unwrap_or_default().to_owned();
    match (method, parts.as_slice()) {
        (Method::POST, ["api", "v1", "namespaces", _, "pods"]) => {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut s = lock(&state);
            s.posts.push((path.clone(), query.clone(), body.clone()));
            if let Some((code, v)) = s.post_replies.pop_front() {
                return Some(json_reply(code, &v));
            }
            s.next_id += 1;
            let prefix = body.pointer("/metadata/generateName").and_then(Value::as_str).unwrap_or("pod-");
            let name = format!("{prefix}{:05}", s.next_id);
            s.pods.insert(name.clone(), (ns.clone(), 0));
            s.active += 1;
            s.max_active = s.max_active.max(s.active);
            s.labels.insert(name.clone(), body.pointer("/metadata/labels").cloned().unwrap_or(Value::Null));
            if s.lost_answers > 0 {
                s.lost_answers -= 1;
                let lost = status(504, "Timeout", "Timeout: request did not complete within requested timeout");
                return Some(json_reply(lost.0, &lost.1));
            }
            let first = s.script.first().cloned().unwrap_or_else(pending);
            Some(json_reply(201, &pod_json(&name, &ns, 0, &first)))
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods"]) if q.contains("watch=true") => {
            let name = selected(&q)?;
            let delay = lock(&state).step_delay;
            tokio::time::sleep(delay).await;
            let mut s = lock(&state);
            if s.failing_watches > 0 {
                s.failing_watches -= 1;
                return Some(json_reply(500, &status(500, "InternalError", "etcd is having a moment").1));
            }
            let script = s.script.clone();
            let (_, step) = s.pods.get_mut(&name)?;
            if *step + 1 >= script.len() {
                return None;
            }
            *step += 1;
            // A null status in the script: someone deleted the pod.
            let kind = if script[*step].is_null() { "DELETED" } else { "MODIFIED" };
            let event = json!({"type": kind, "object": pod_json(&name, &ns, *step, &script[*step])});
            Some(reply(200, format!("{event}\n").into_bytes()))
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods"]) => {
            let mut s = lock(&state);
            if label_selected(&q).is_some()
                && let Some((code, v)) = s.list_replies.pop_front()
            {
                return Some(json_reply(code, &v));
            }
            let at = |name: &str, step: usize| pod_json(name, &ns, step, &s.script[step.min(s.script.len() - 1)]);
            let items: Vec<Value> = if let Some((key, value)) = label_selected(&q) {
                let mut names: Vec<&String> = s
                    .labels
                    .iter()
                    .filter(|(n, l)| l.get(&key).and_then(Value::as_str) == Some(&value) && s.pods.contains_key(*n))
                    .map(|(n, _)| n)
                    .collect();
                names.sort();
                names.into_iter().map(|n| at(n, s.pods[n].1)).collect()
            } else {
                match selected(&q).and_then(|n| s.pods.get(&n).map(|p| (n, p.1))) {
                    Some((name, step)) => vec![at(&name, step)],
                    None => vec![],
                }
            };
            Some(json_reply(
                200,
                &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
            ))
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods", _, "log"]) => {
            Some(reply(200, lock(&state).log.clone().into_bytes()))
        }
        (Method::DELETE, ["api", "v1", "namespaces", _, "pods", name]) => {
            let mut s = lock(&state);
            s.deleted.push((*name).to_owned());
            s.active = s.active.saturating_sub(1);
            let v = pod_json(name, &ns, 0, &pending());
            Some(json_reply(200, &v))
        }
        _ => Some(json_reply(404, &status(404, "NotFound", "the mock does not know this").1)),
    }
}

fn mock(state: State) -> (kube::Client, Shared) {
    let shared = Arc::new(Mutex::new(state));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = shared.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let state = server.clone();
            tokio::spawn(async move {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let query = request.uri().query().map(str::to_owned);
                let body = request.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                match serve(state, method, path, query, body).await {
                    Some((code, body)) => send.send_response(
                        Response::builder()
                            .status(code)
                            .body(Body::from(body))
                            .unwrap_or_else(|e| panic!("response: {e}")),
                    ),
                    None => {
                        let _kept_open = send;
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
    });
    (kube::Client::new(service, "default"), shared)
}

fn script(steps: Vec<Value>, log: &str) -> State {
    State { script: steps, log: log.into(), ..State::default() }
}

/// A pod that succeeds, the answers to its first `lost` creates lost (the pods made), and
/// `lists`: the answers to the first looks for it by label.
fn lost_answers(lost: usize, lists: Vec<(u16, Value)>) -> State {
    State { lost_answers: lost, list_replies: lists.into(), ..script(vec![pending(), ended("Succeeded", 0)], "") }
}

// ---------------------------------------------------------------- reports and tasks

#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
}

impl Recorder {
    fn push(&self, line: String) {
        self.lines.lock().unwrap_or_else(|e| panic!("{e}")).push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| panic!("{e}")).clone()
    }
    fn starting(&self, prefix: &str) -> Vec<String> {
        self.lines().into_iter().filter_map(|l| l.strip_prefix(prefix).map(str::to_owned)).collect()
    }
}

impl Report for Recorder {
    fn created(&self, pod: &str) {
        self.push(format!("created {pod}"));
    }
    fn state(&self, state: &str, _: Duration) {
        self.push(format!("state {state}"));
    }
    fn note(&self, line: &str) {
        self.push(format!("note {line}"));
    }
    fn log(&self, line: &str) {
        self.push(format!("log {line}"));
    }
}

fn task(name: &str, command: &[&str]) -> TaskSpec {
    TaskSpec {
        task: name.into(),
        prefix: name.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        image: None,
        env: vec![],
        labels: vec![],
        overrides: vec![],
    }
}

fn opts(ns: &str) -> Options {
    Options {
        namespace: ns.into(),
        retry: Retry { attempts: 4, first_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20) },
        log_grace: Duration::from_secs(2),
        ..Options::default()
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.unwrap_or_else(|_| panic!("the test did not finish within {LIMIT:?}"))
}

fn ok(result: Result<Outcome, TaskError>) -> Outcome {
    result.unwrap_or_else(|e| panic!("the task failed: {e}"))
}

fn posts(state: &Shared) -> usize {
    lock(state).posts.len()
}

// ---------------------------------------------------------------- one task

#[tokio::test]
async fn posts_exactly_the_bare_pod_and_follows_it_to_success() {
    within(async {
        let (client, state) = mock(script(vec![pending(), running(), ended("Succeeded", 0)], "hello\nworld\n"));
        let spec = TaskSpec {
            image: Some("busybox:1.36".into()),
            env: vec![("STAGE".into(), "extract".into()), ("EMPTY".into(), String::new())],
            labels: vec![("team".into(), "data".into())],
            overrides: vec!["resource-requirements".into(), "secret-env".into()],
            ..task("etl", &["sh", "-c", "echo hello"])
        };
        let report = Recorder::default();
        let outcome = ok(run_one(&client, &spec, &opts("jobs"), &report, std::future::pending()).await);

        let s = lock(&state);
        assert_eq!(s.posts.len(), 1);
        let (path, query, body) = &s.posts[0];
        assert_eq!(path, "/api/v1/namespaces/jobs/pods");
        assert_eq!(query.as_deref().unwrap_or(""), "");
        // the one label the launcher adds: a random id, to find the pod if an answer is lost
        let mut body = body.clone();
        let id = body
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
            .and_then(|l| l.shift_remove("podtailor.dev/launch-id"))
            .unwrap_or_else(|| panic!("no podtailor.dev/launch-id label in {body}"));
        let id = id.as_str().unwrap_or_default();
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "launch id {id:?}");
        assert_eq!(
            &body,
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "generateName": "etl-",
                    "labels": {"team": "data"},
                    "annotations": {"podtailor.dev/override": "resource-requirements,secret-env"}
                },
                "spec": {"containers": [{
                    "name": "base", "image": "busybox:1.36", "command": ["sh", "-c", "echo hello"],
                    "env": [{"name": "STAGE", "value": "extract"}, {"name": "EMPTY", "value": ""}]
                }]}
            })
        );
        assert_eq!(outcome.pod.as_deref(), Some("etl-00001"));
        assert_eq!(outcome.ending, Ending::Finished { succeeded: true, exit_code: 0 });
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(s.deleted, ["etl-00001"], "a pod that succeeded is deleted");
        drop(s);
        assert_eq!(report.starting("state "), ["Pending", "Running", "Succeeded (exit code 0)"]);
        assert_eq!(report.starting("log "), ["hello", "world"]);
        let logs: Vec<String> = lock(&state).requests.iter().filter(|r| r.contains("/log?")).cloned().collect();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].starts_with("GET /api/v1/namespaces/jobs/pods/etl-00001/log?"), "{logs:?}");
        assert!(logs[0].contains("container=base") && logs[0].contains("follow=true"), "{logs:?}");
        assert_eq!(report.starting("created "), ["jobs/etl-00001"]);
        assert!(report.lines().contains(&"note pod jobs/etl-00001 deleted".to_owned()), "{:?}", report.lines());
    })
    .await;
}

#[tokio::test]
async fn the_containers_exit_code_is_the_outcome_and_a_failed_pod_is_kept() {
    within(async {
        let (client, state) = mock(script(vec![pending(), running(), ended("Failed", 3)], "boom\n"));
        let report = Recorder::default();
        let outcome =
            ok(run_one(&client, &task("t", &["false"]), &opts("default"), &report, std::future::pending()).await);
        assert_eq!(outcome.ending, Ending::Finished { succeeded: false, exit_code: 3 });
        assert_eq!(outcome.exit_code(), 3);
        assert!(lock(&state).deleted.is_empty(), "a failed pod is kept");
        assert_eq!(report.starting("state "), ["Pending", "Running", "Failed (Error, exit code 3)"]);
        assert!(report.lines().iter().any(|l| l.contains("failed and is kept for inspection")), "{:?}", report.lines());
    })
    .await;
}

#[tokio::test]
async fn keep_keeps_a_pod_that_succeeded() {
    within(async {
        let (client, state) = mock(script(vec![pending(), ended("Succeeded", 0)], "quick\n"));
        let report = Recorder::default();
        let o = Options { keep: true, ..opts("default") };
        let outcome = ok(run_one(&client, &task("t", &["true"]), &o, &report, std::future::pending()).await);
        assert_eq!(outcome.exit_code(), 0);
        assert!(lock(&state).deleted.is_empty());
        // Straight from Pending to Succeeded: the log is still read.
        assert_eq!(report.starting("log "), ["quick"]);
    })
    .await;
}

#[tokio::test]
async fn a_denial_is_shown_as_returned_and_not_retried() {
    within(async {
        let message = "admission webhook \"mutate.podtailor.dev\" denied the request: podtailor: PodOverride \"nope\" not found in namespace \"jobs\"";
        let mut st = script(vec![pending()], "");
        st.post_replies.push_back(status(403, "Forbidden", message));
        let (client, state) = mock(st);
        let spec = TaskSpec { overrides: vec!["nope".into()], ..task("t", &["true"]) };
        let err = run_one(&client, &spec, &opts("jobs"), &Recorder::default(), std::future::pending())
            .await
            .err()
            .unwrap_or_else(|| panic!("the pod was denied, not run"));
        assert!(err.is_denial());
        assert_eq!(err.to_string(), message);
        assert_eq!(err.pod, None);
        assert_eq!(posts(&state), 1, "a denial is not retried");
    })
    .await;
}

#[tokio::test]
async fn a_forbidden_request_is_reported_plainly_and_not_retried() {
    within(async {
        let mut st = script(vec![pending()], "");
        st.post_replies.push_back(status(
            403,
            "Forbidden",
            "pods is forbidden: User \"dev\" cannot create resource \"pods\" in the namespace \"jobs\"",
        ));
        let (client, state) = mock(st);
        let err = run_one(&client, &task("t", &["true"]), &opts("jobs"), &Recorder::default(), std::future::pending())
            .await
            .err()
            .unwrap_or_else(|| panic!("the pod was refused"));
        assert!(!err.is_denial());
        assert_eq!(
            err.to_string(),
            "creating the pod in namespace \"jobs\": 403 Forbidden: pods is forbidden: User \"dev\" cannot create resource \"pods\" in the namespace \"jobs\""
        );
        assert_eq!(posts(&state), 1);
    })
    .await;
}

#[tokio::test]
async fn transient_errors_are_retried_with_backoff_then_succeed() {
    within(async {
        let mut st = script(vec![pending(), ended("Succeeded", 0)], "");
        st.post_replies.push_back(status(429, "TooManyRequests", "slow down"));
        st.post_replies.push_back(status(
            500,
            "InternalError",
            "Internal error occurred: failed calling webhook \"mutate.podtailor.dev\": connection refused",
        ));
        st.post_replies.push_back(status(429, "TooManyRequests", "slow down"));
        let (client, state) = mock(st);
        let report = Recorder::default();
        let outcome =
            ok(run_one(&client, &task("t", &["true"]), &opts("default"), &report, std::future::pending()).await);
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(posts(&state), 4);
        let retries: Vec<String> = report.starting("note ").into_iter().filter(|l| l.contains("retrying")).collect();
        assert_eq!(retries.len(), 3, "{retries:?}");
        assert!(
            retries[0].contains("429 TooManyRequests: slow down; retrying in 0.0s (attempt 2 of 4)"),
            "{retries:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_not_made_twice() {
    within(async {
        let (client, state) = mock(lost_answers(1, vec![]));
        let report = Recorder::default();
        let outcome =
            ok(run_one(&client, &task("t", &["true"]), &opts("default"), &report, std::future::pending()).await);
        assert_eq!(posts(&state), 1, "the pod was created once");
        assert_eq!(outcome.pod.as_deref(), Some("t-00001"));
        assert_eq!(outcome.exit_code(), 0);
        let notes = report.starting("note ");
        assert!(notes[0].contains("504 Timeout") && notes[0].contains("retrying"), "{notes:?}");
        assert_eq!(notes[1], "pod default/t-00001 was created by an earlier try whose answer was lost: following it");
        let s = lock(&state);
        let lists: Vec<&String> = s.requests.iter().filter(|r| r.contains("labelSelector=")).collect();
        assert_eq!(lists.len(), 1, "{:?}", s.requests);
        assert_eq!(s.deleted, ["t-00001"]);
    })
    .await;
}

/// How an error of the look before a retried create begins, after its code.
const LOOK_ERROR: &str = "looking for a pod an earlier try may have made (podtailor.dev/launch-id=";

#[tokio::test]
async fn a_failed_look_for_the_pod_is_retried_or_reported_and_never_creates_a_second() {
    within(async {
        // the look fails once (transient): it is retried like the create, and finds the pod
        let (client, state) = mock(lost_answers(1, vec![status(500, "InternalError", "etcd is having a moment")]));
        let report = Recorder::default();
        let outcome =
            ok(run_one(&client, &task("t", &["true"]), &opts("default"), &report, std::future::pending()).await);
        assert_eq!((posts(&state), outcome.pod.as_deref()), (1, Some("t-00001")));
        let notes = report.starting("note ");
        assert!(
            notes[1].contains(&format!("500 InternalError: {LOOK_ERROR}"))
                && notes[1].contains("): etcd is having a moment; retrying"),
            "{notes:?}"
        );

        // the look is forbidden: reported as the create's error, saying it was the look, and
        // no second pod
        let (client, state) = mock(lost_answers(1, vec![status(403, "Forbidden", "pods is forbidden: cannot list")]));
        let err =
            run_one(&client, &task("t", &["true"]), &opts("default"), &Recorder::default(), std::future::pending())
                .await
                .err()
                .unwrap_or_else(|| panic!("a forbidden look should fail the task"));
        assert_eq!(posts(&state), 1);
        let message = err.to_string();
        assert!(message.starts_with("creating the pod in namespace \"default\": "), "{message}");
        assert!(
            message.contains(&format!("403 Forbidden: {LOOK_ERROR}"))
                && message.ends_with("): pods is forbidden: cannot list"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_launch_id_finds_only_its_own_pod() {
    within(async {
        // two launches whose first creates both lose their answers: each follows its own pod
        let (client, state) = mock(lost_answers(2, vec![]));
        let (a, b) = (Recorder::default(), Recorder::default());
        let (ta, tb, o) = (task("a", &["true"]), task("b", &["true"]), opts("default"));
        let (ra, rb) = tokio::join!(
            run_one(&client, &ta, &o, &a, std::future::pending()),
            run_one(&client, &tb, &o, &b, std::future::pending()),
        );
        let (pa, pb) = (ok(ra).pod.unwrap_or_default(), ok(rb).pod.unwrap_or_default());
        assert!(pa.starts_with("a-") && pb.starts_with("b-"), "a followed {pa}, b followed {pb}");
        assert_eq!(posts(&state), 2);
    })
    .await;
}

#[tokio::test]
async fn transient_errors_that_last_give_up_after_the_attempts() {
    within(async {
        let mut st = script(vec![pending()], "");
        for _ in 0..10 {
            st.post_replies.push_back(status(503, "ServiceUnavailable", "the server is shutting down"));
        }
        let (client, state) = mock(st);
        let err = run_one(&client, &task("t", &["true"]), &opts("default"), &Recorder::default(), std::future::pending())
            .await
            .err()
            .unwrap_or_else(|| panic!("it should give up"));
        assert_eq!(
            err.to_string(),
            "creating the pod in namespace \"default\": gave up after 4 attempts: 503 ServiceUnavailable: the server is shutting down"
        );
        assert_eq!(posts(&state), 4);
    })
    .await;
}

#[tokio::test]
async fn a_broken_watch_is_resumed() {
    within(async {
        let mut st = script(vec![pending(), running(), ended("Succeeded", 0)], "");
        st.failing_watches = 1;
        let (client, state) = mock(st);
        let report = Recorder::default();
        let outcome =
            ok(run_one(&client, &task("t", &["true"]), &opts("default"), &report, std::future::pending()).await);
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(report.starting("state "), ["Pending", "Running", "Succeeded (exit code 0)"]);
        let notes = report.starting("note ");
        assert!(
            notes.iter().any(|n| n.starts_with("following pod default/t-00001:") && n.ends_with("watching again")),
            "{notes:?}"
        );
        assert_eq!(lock(&state).deleted, ["t-00001"]);
    })
    .await;
}

#[tokio::test]
async fn a_pod_deleted_by_someone_else_is_an_error() {
    within(async {
        let (client, state) = mock(script(vec![pending(), running(), Value::Null], ""));
        let err = run_one(
            &client,
            &task("t", &["sleep", "60"]),
            &opts("default"),
            &Recorder::default(),
            std::future::pending(),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("the pod vanished"));
        assert_eq!(err.to_string(), "pod default/t-00001 was deleted before it finished");
        assert_eq!(err.pod.as_deref(), Some("default/t-00001"));
        assert!(lock(&state).deleted.is_empty());
    })
    .await;
}

#[tokio::test]
async fn an_interrupt_deletes_the_pod_and_exits_130() {
    within(async {
        // The pod runs and never ends.
        let (client, state) = mock(script(vec![pending(), running()], "working\n"));
        let report = Arc::new(Recorder::default());
        let (trigger, interrupted) = tokio::sync::oneshot::channel::<()>();
        let watcher = report.clone();
        tokio::spawn(async move {
            while !watcher.lines().iter().any(|l| l == "log working") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = trigger.send(());
        });
        let interrupt = async move {
            let _ = interrupted.await;
        };
        let outcome =
            ok(run_one(&client, &task("t", &["sleep", "3600"]), &opts("default"), report.as_ref(), interrupt).await);
        assert_eq!(outcome.ending, Ending::Interrupted);
        assert_eq!(outcome.exit_code(), 130);
        assert_eq!(lock(&state).deleted, ["t-00001"]);
        assert!(
            report.lines().contains(&"note interrupted: deleting pod default/t-00001".to_owned()),
            "{:?}",
            report.lines()
        );
    })
    .await;
}

#[tokio::test]
async fn a_timeout_deletes_the_pod_and_exits_124() {
    within(async {
        let (client, state) = mock(script(vec![pending()], ""));
        let report = Recorder::default();
        let o = Options { timeout: Some(Duration::from_millis(300)), ..opts("default") };
        let outcome = ok(run_one(&client, &task("t", &["sleep", "3600"]), &o, &report, std::future::pending()).await);
        assert_eq!(outcome.ending, Ending::TimedOut);
        assert_eq!(outcome.exit_code(), 124);
        assert_eq!(lock(&state).deleted, ["t-00001"]);
        assert!(
            report.lines().contains(&"note timed out after 300ms: deleting pod default/t-00001".to_owned()),
            "{:?}",
            report.lines()
        );
    })
    .await;
}

#[tokio::test]
async fn detach_returns_once_the_pod_exists() {
    within(async {
        let (client, state) = mock(script(vec![pending(), running()], ""));
        let o = Options { detach: true, ..opts("default") };
        let outcome =
            ok(run_one(&client, &task("t", &["true"]), &o, &Recorder::default(), std::future::pending()).await);
        assert_eq!(
            (&outcome.ending, outcome.pod.as_deref(), outcome.exit_code()),
            (&Ending::Detached, Some("t-00001"), 0)
        );
        let s = lock(&state);
        assert_eq!(s.requests.len(), 1, "{:?}", s.requests);
        assert!(s.deleted.is_empty());
    })
    .await;
}

// ---------------------------------------------------------------- batches

fn tasks(n: usize) -> Vec<TaskSpec> {
    (0..n).map(|i| task(&format!("task-{i}"), &["echo", "hi"])).collect()
}

async fn run_batch(tasks: &[TaskSpec], parallelism: usize, state: State) -> (Vec<TaskResult>, Shared) {
    let (client, shared) = mock(state);
    let reports: Vec<Arc<dyn Report>> =
        tasks.iter().map(|_| Arc::new(Recorder::default()) as Arc<dyn Report>).collect();
    let results = batch::run(&client, tasks, &opts("default"), parallelism, &reports, &CancellationToken::new()).await;
    (results, shared)
}

#[tokio::test]
async fn a_batch_never_runs_more_than_its_parallelism() {
    within(async {
        let mut st = script(vec![pending(), running(), ended("Succeeded", 0)], "hi\n");
        st.step_delay = Duration::from_millis(30);
        let (results, state) = run_batch(&tasks(7), 3, st).await;
        let s = lock(&state);
        assert_eq!(s.posts.len(), 7);
        assert_eq!(s.deleted.len(), 7);
        assert_eq!(s.max_active, 3, "at most 3 pods at once, and the bound is reached");
        assert_eq!(batch::exit_code(&results), 0);
        let names: Vec<&str> = results.iter().map(|r| r.task.as_str()).collect();
        assert_eq!(names, ["task-0", "task-1", "task-2", "task-3", "task-4", "task-5", "task-6"]);
    })
    .await;
}

#[tokio::test]
async fn a_batch_with_a_failed_task_exits_1_and_says_which() {
    within(async {
        let mut st = script(vec![pending(), ended("Succeeded", 0)], "");
        let message = "admission webhook \"mutate.podtailor.dev\" denied the request: podtailor: PodOverride \"x\" not found in namespace \"default\"";
        st.post_replies.push_back(status(403, "Forbidden", message));
        let (results, _) = run_batch(&tasks(3), 1, st).await;
        assert_eq!(batch::exit_code(&results), 1);
        let table = batch::summary(&results);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["TASK", "POD", "RESULT", "DURATION", "EXIT"]);
        assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["task-0", "-", "denied", "-", "-"]);
        let second: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!((second[0], second[1], second[2], second[4]), ("task-1", "default/task-1-00001", "succeeded", "0"));
        assert_eq!(lines[4], format!("task-0: {message}"));
    })
    .await;
}

#[tokio::test]
async fn an_interrupted_batch_deletes_running_pods_and_starts_no_more() {
    within(async {
        let (client, state) = mock(script(vec![pending(), running()], ""));
        let tasks = tasks(4);
        let token = CancellationToken::new();
        let cancel = token.clone();
        let watch = state.clone();
        tokio::spawn(async move {
            while lock(&watch).posts.len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let results = batch::run(&client, &tasks, &opts("default"), 2, &[], &token).await;
        assert_eq!(batch::exit_code(&results), 130);
        let s = lock(&state);
        assert_eq!(s.posts.len(), 2);
        assert_eq!(s.deleted.len(), 2);
        let words: Vec<String> = batch::summary(&results)
            .lines()
            .skip(1)
            .map(|l| l.split("  ").filter(|c| !c.is_empty()).nth(2).unwrap_or_default().trim().to_owned())
            .collect();
        assert_eq!(words, ["interrupted", "interrupted", "not started", "not started"]);
    })
    .await;
}

// ---------------------------------------------------------------- the CLI

fn launch(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    Command::new(env!("CARGO_BIN_EXE_podtailor"))
        .arg("launch")
        .args(args)
        .current_dir(common::repo())
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"))
}

fn stdout(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn dry_run_prints_exactly_the_bare_pod() {
    let out = launch(&[
        "--dry-run",
        "-n",
        "jobs",
        "--name",
        "etl",
        "--image",
        "busybox:1.36",
        "--env",
        "A=1",
        "--env",
        "B=x=y",
        "--env",
        "DS=2026-11-24",
        "--env",
        "AT=12:30",
        "--label",
        "team=data",
        "--label",
        "on=yes",
        "--label",
        "mode=0755",
        "--override",
        "resource-requirements",
        "--",
        "sh",
        "-c",
        "echo hi",
        "1e3",
        "0x1F",
        "~",
        "off",
    ]);
    // The namespace of -n, and every string a YAML 1.1 reader (PyYAML) would take for a date,
    // a time, a number or a boolean quoted, keys too.
    assert_eq!(
        stdout(&out),
        "\
apiVersion: v1
kind: Pod
metadata:
  generateName: etl-
  namespace: jobs
  labels:
    team: data
    \"on\": \"yes\"
    mode: \"0755\"
  annotations:
    podtailor.dev/override: resource-requirements
spec:
  containers:
  - name: base
    image: busybox:1.36
    command:
    - sh
    - -c
    - echo hi
    - \"1e3\"
    - \"0x1F\"
    - \"~\"
    - \"off\"
    env:
    - name: A
      value: \"1\"
    - name: B
      value: x=y
    - name: DS
      value: \"2026-11-24\"
    - name: AT
      value: \"12:30\"
"
    );
    // without -n: no namespace, so kubectl apply puts the pod in its context's, as launch would
    let out = launch(&["--dry-run", "-o", "json", "--", "true"]);
    let pod: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pod,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "task-", "annotations": {"podtailor.dev/override": ""}},
               "spec": {"containers": [{"name": "base", "command": ["true"]}]}})
    );
}

#[test]
fn a_panic_ends_launch_with_one_line_and_exit_code_1() {
    let out = launch(&[
        "--dry-run",
        "--template",
        "examples/template.yaml",
        "--overrides",
        "examples/overrides",
        "--override",
        podtailor::mutate::PANIC_OVERRIDE,
        "--",
        "true",
    ]);
    common::assert_internal_error(&out, "launch");
    assert!(out.stdout.is_empty());
}

#[test]
fn dry_run_with_the_template_shows_what_the_webhook_would_make() {
    let out = launch(&[
        "--dry-run",
        "-o",
        "json",
        "-n",
        "airflow",
        "--template",
        "examples/template.yaml",
        "--overrides",
        "examples/overrides",
        "--override",
        "resource-requirements,secret-env",
        "--",
        "airflow",
        "version",
    ]);
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["spec"]["containers"][0], json!({"name": "base", "command": ["airflow", "version"]}));
    let desired = &items[1];
    let base = &desired["spec"]["containers"][0];
    assert_eq!(base["command"], json!(["airflow", "version"]));
    assert_eq!(base["image"], "quay.io/astronomer/ap-airflow:2.10.5");
    assert_eq!(
        base["resources"],
        json!({"requests": {"cpu": "500m", "memory": "1024Mi"}, "limits": {"cpu": "500m", "memory": "1024Mi"}})
    );
    assert_eq!(desired["spec"]["restartPolicy"], "Never");
    assert_eq!(desired["metadata"]["generateName"], "task-");
    // both pods carry the namespace of -n, so `kubectl apply -f` puts them there
    assert_eq!(items[0]["metadata"]["namespace"], "airflow");
    assert_eq!(desired["metadata"]["namespace"], "airflow");
    assert!(
        desired["metadata"]["annotations"]["podtailor.dev/applied"]
            .as_str()
            .is_some_and(|a| a.starts_with("overrides=resource-requirements,secret-env; config=sha256:"))
    );

    // An override the webhook cannot find: the dry run says it would be denied.
    let out = launch(&[
        "--dry-run",
        "--template",
        "examples/template.yaml",
        "--overrides",
        "examples/overrides",
        "--override",
        "nope",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "podtailor launch: task \"task\": the webhook would deny its pod: podtailor: PodOverride \"nope\" not found in namespace \"default\"\n"
    );
}

#[test]
fn dry_run_of_the_example_tasks_file() {
    let out = launch(&["--dry-run", "-f", "examples/tasks.yaml"]);
    let text = stdout(&out);
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert!(docs.len() >= 2, "{text}");
    assert!(text.starts_with("# task "), "{text}");
    for d in &docs {
        assert_eq!(d["kind"], "Pod");
        assert!(d["metadata"]["annotations"]["podtailor.dev/override"].is_string());
    }
    let out = launch(&[
        "--dry-run",
        "-o",
        "json",
        "-n",
        "airflow",
        "-f",
        "examples/tasks.yaml",
        "--template",
        "examples/template.yaml",
        "--overrides",
        "examples/overrides",
    ]);
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list["items"].as_array().map(Vec::len), Some(docs.len() * 2));
}

#[test]
fn usage_errors_exit_2_with_a_clear_line() {
    for (args, says) in [
        (vec!["--dry-run"], "required"),
        (vec!["--env", "NOEQUALS", "--", "true"], "expected KEY=VALUE"),
        (vec!["--env", "1BAD=x", "--", "true"], "is not an environment variable name"),
        (vec!["--label", "team=data eng", "--", "true"], "is not a label value"),
        (vec!["--label", "Bad_Prefix/x=1", "--", "true"], "is not a label key"),
        (vec!["--name", "Etl", "--", "true"], "is not a valid pod name prefix"),
        (vec!["-n", "jobs/x", "--", "true"], "is not a namespace name"),
        (vec!["--override", "Large", "--", "true"], "is not a valid PodOverride name"),
        (vec!["--env", "A=1", "--env", "A=2", "--", "true"], "\"A\" is given twice"),
        (vec!["--template", "examples/template.yaml", "--", "true"], "required"),
        (vec!["--detach", "--dry-run", "--", "true"], "cannot be used with"),
        (vec!["-f", "examples/tasks.yaml", "--", "true"], "cannot be used with"),
        (vec!["--timeout", "soon", "--", "true"], "expected a duration"),
        (vec!["--parallelism", "0", "-f", "examples/tasks.yaml"], "0"),
    ] {
        let out = launch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_bad_tasks_file_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("tasks.yaml");
    std::fs::write(&path, "tasks:\n- name: a\n  command: [x]\n- name: b\n  comand: [y]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let p = path.display().to_string();
    let out = launch(&["--dry-run", "-f", &p]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("podtailor launch: {p}: tasks[1].comand: unknown field `comand`, expected one of")),
        "{err}"
    );
    assert_eq!(err.matches("tasks[1]").count(), 1, "the task named once: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn without_a_kubeconfig_launch_says_so() {
    let out = launch(&["--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("podtailor launch: no Kubernetes configuration"), "{}", stderr(&out));
}

// ---------------------------------------------------------------- the binary against the mock over HTTP

/// The same mock API server on 127.0.0.1 over plain HTTP, and a kubeconfig for it: the current
/// context `mock` (namespace `jobs`) and a context `other` (namespace `elsewhere`).
async fn http_mock(state: State) -> (Shared, tempfile::TempDir) {
    use axum::response::IntoResponse;
    let shared = Arc::new(Mutex::new(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
    let server = shared.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let state = server.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.map(|b| b.to_vec()).unwrap_or_default();
            let query = parts.uri.query().map(str::to_owned);
            match serve(state, parts.method, parts.uri.path().to_owned(), query, body).await {
                Some((code, body)) => {
                    let code = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                    (code, [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
                }
                None => std::future::pending::<axum::response::Response>().await,
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: mock\n\
         clusters:\n- name: mock\n  cluster: {{server: \"http://{addr}\"}}\n\
         users:\n- name: dev\n  user: {{token: not-a-secret}}\n\
         contexts:\n- name: mock\n  context: {{cluster: mock, user: dev, namespace: jobs}}\n\
         - name: other\n  context: {{cluster: mock, user: dev, namespace: elsewhere}}\n"
    );
    std::fs::write(dir.path().join("config"), kubeconfig).unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    (shared, dir)
}

fn binary(kubeconfig_dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podtailor"));
    cmd.arg("launch")
        .args(args)
        .current_dir(common::repo())
        .env("HOME", kubeconfig_dir)
        .env("KUBECONFIG", kubeconfig_dir.join("config"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary without blocking the mock server.
async fn run_binary(kubeconfig_dir: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = binary(kubeconfig_dir, args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap_or_else(|e| panic!("spawn: {e}")))
        .await
        .unwrap_or_else(|e| panic!("join: {e}"))
}

/// Progress lines with the elapsed time replaced by `T`.
fn progress(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .map(|l| match l.trim_start().split_once("  ") {
            Some((t, rest)) if t.ends_with('s') && t.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                format!("T  {rest}")
            }
            _ => l.to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_follows_a_task_through_a_kubeconfig() {
    within(async {
        let mut st = script(vec![pending(), running(), ended("Succeeded", 0)], "hello\nworld\n");
        st.step_delay = Duration::from_millis(30);
        let (state, dir) = http_mock(st).await;
        let out = run_binary(dir.path(), &["--name", "e2e", "--", "echo", "hello"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");
        assert_eq!(
            progress(&out),
            [
                "pod jobs/e2e-00001 created",
                "T  Pending",
                "T  Running",
                "T  Succeeded (exit code 0)",
                "pod jobs/e2e-00001 deleted"
            ]
        );
        let s = lock(&state);
        assert_eq!(s.posts[0].0, "/api/v1/namespaces/jobs/pods", "the context's namespace");
        assert_eq!(s.deleted, ["e2e-00001"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_with_the_containers_code_and_honours_context_and_namespace() {
    within(async {
        let (state, dir) = http_mock(script(vec![pending(), running(), ended("Failed", 3)], "")).await;
        let out = run_binary(dir.path(), &["--context", "other", "--", "false"]).await;
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("pod elsewhere/task-00001 failed and is kept for inspection"),
            "{}",
            stderr(&out)
        );
        let out = run_binary(dir.path(), &["--context", "other", "-n", "mine", "--", "false"]).await;
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let s = lock(&state);
        let paths: Vec<&str> = s.posts.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(paths, ["/api/v1/namespaces/elsewhere/pods", "/api/v1/namespaces/mine/pods"]);
        assert!(s.deleted.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_shows_a_denial_as_returned() {
    within(async {
        let message = "admission webhook \"mutate.podtailor.dev\" denied the request: podtailor: PodOverride \"nope\" not found in namespace \"jobs\"";
        let mut st = script(vec![pending()], "");
        st.post_replies.push_back(status(403, "Forbidden", message));
        let (state, dir) = http_mock(st).await;
        let out = run_binary(dir.path(), &["--override", "nope", "--", "true"]).await;
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr(&out), format!("podtailor launch: {message}\n"));
        assert_eq!(lock(&state).posts.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_detaches_with_the_pods_name() {
    within(async {
        let (state, dir) = http_mock(script(vec![pending(), running()], "")).await;
        let out = run_binary(dir.path(), &["--detach", "--name", "bg", "--", "sleep", "60"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "bg-00001\n");
        assert_eq!(lock(&state).requests.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_deletes_the_pod_on_sigint_and_exits_130() {
    within(async {
        let (state, dir) = http_mock(script(vec![pending(), running()], "working\n")).await;
        let mut cmd = binary(dir.path(), &["--", "sleep", "3600"]);
        let out = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
            let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            assert_eq!(first.as_deref(), Some("working"));
            let status = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap_or_else(|e| panic!("kill: {e}"));
            assert!(status.success());
            child.wait_with_output().unwrap_or_else(|e| panic!("wait: {e}"))
        })
        .await
        .unwrap_or_else(|e| panic!("join: {e}"));
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        assert!(stderr(&out).contains("interrupted: deleting pod jobs/task-00001"), "{}", stderr(&out));
        assert_eq!(lock(&state).deleted, ["task-00001"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_example_batch() {
    within(async {
        let mut st = script(vec![pending(), running(), ended("Succeeded", 0)], "hi\n");
        st.step_delay = Duration::from_millis(20);
        let (state, dir) = http_mock(st).await;
        let out = run_binary(dir.path(), &["-f", "examples/tasks.yaml", "--parallelism", "2"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let mut logs: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        logs.sort();
        assert_eq!(logs, ["extract | hi", "load | hi", "transform | hi"]);
        let err = stderr(&out);
        let table: Vec<Vec<&str>> =
            err.lines().skip_while(|l| !l.starts_with("TASK")).map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(table.len(), 4, "{err}");
        for (row, task) in table[1..].iter().zip(["extract", "transform", "load"]) {
            assert_eq!((row[0], row[2], row[4]), (task, "succeeded", "0"), "{err}");
            assert!(row[1].starts_with(&format!("jobs/{task}-")), "{err}");
        }
        assert!(err.contains("[extract] pod jobs/extract-"), "{err}");
        assert!(lock(&state).max_active <= 2);
    })
    .await;
}

/// On a terminal (a pty from util-linux `script`): spinners, and the same results. Fails when
/// `script` is not installed: a test that passes without running guards nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_spinners_show_the_progress() {
    if let Err(e) = Command::new("script").arg("--version").output() {
        panic!(
            "`script` cannot run ({e}): it makes the terminal this test needs; install util-linux (Debian: bsdutils)"
        );
    }
    within(async {
        let mut st = script(vec![pending(), running(), ended("Succeeded", 0)], "hi\n");
        st.step_delay = Duration::from_millis(150);
        let (_state, dir) = http_mock(st).await;
        for (args, expect) in [
            ("launch --name one -- echo hi", vec!["pod jobs/one-00001 created", "Succeeded (exit code 0)", "hi\r\n"]),
            (
                "launch -f examples/tasks.yaml --parallelism 2",
                vec!["\u{2713} load", "load | hi", "\r\nTASK       POD", "succeeded (exit code 0)"],
            ),
        ] {
            let line = format!("{} {args}", env!("CARGO_BIN_EXE_podtailor"));
            let mut cmd = Command::new("script");
            cmd.args(["-qfec", &line, "/dev/null"])
                .current_dir(common::repo())
                .env("KUBECONFIG", dir.path().join("config"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap_or_else(|e| panic!("script: {e}")))
                .await
                .unwrap_or_else(|e| panic!("join: {e}"));
            let screen = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{screen:?}");
            for e in expect {
                assert!(screen.contains(e), "{e:?} not in {screen:?}");
            }
        }
    })
    .await;
}
