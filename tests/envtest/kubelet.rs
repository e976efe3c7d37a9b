//! What the control-plane tier plays itself, because no node runs here: a kubelet stand-in
//! (a registered Node whose pods it binds and whose `pods/status` it writes, and a server for
//! `/containerLogs/...` on the Node's port, so that the API server proxies `pods/log` for real),
//! a later mutating webhook of the test's own (for reinvocation), and a webhook that records
//! the pods it is sent (the pod as admission policies see it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::controlplane::{Ca, Pair, Result, b64};

pub const NODE: &str = "envtest-node";
pub const LATER_WEBHOOK: &str = "zz-envtest-later";
pub const CAPTURE_WEBHOOK: &str = "zz-envtest-capture";

/// Serves `router` over TLS on a free loopback port: (port, task).
async fn serve_tls(pair: &Pair, router: axum::Router) -> Result<(u16, JoinHandle<()>)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pair.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).map_err(|e| format!("key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok((port, task))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// What a task does, read from its container's command line as `sh -c` scripts of `echo`,
/// `sleep` and `exit` steps: its log, how long it runs, its exit code.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub log: String,
    pub runs: Duration,
    pub exit: i32,
}

impl Task {
    pub fn of(container: &Value) -> Task {
        let words: Vec<&str> = ["command", "args"]
            .iter()
            .flat_map(|k| container[*k].as_array().into_iter().flatten().filter_map(Value::as_str))
            .collect();
        let script = match words.as_slice() {
            [.., "-c", script] => (*script).to_owned(),
            _ => words.join(" "),
        };
        let mut task = Task { log: String::new(), runs: Duration::from_millis(300), exit: 0 };
        for step in script.split([';', '\n']).flat_map(|s| s.split("&&")).map(str::trim) {
            if let Some(text) = step.strip_prefix("echo ") {
                task.log.push_str(text.trim_matches(['"', '\'']));
                task.log.push('\n');
            } else if let Some(secs) = step.strip_prefix("sleep ").and_then(|s| s.trim().parse::<u64>().ok()) {
                task.runs += Duration::from_secs(secs);
            } else if let Some(code) = step.strip_prefix("exit ").and_then(|s| s.trim().parse().ok()) {
                task.exit = code;
                break;
            }
        }
        task
    }
}

#[derive(Default)]
struct Shared {
    namespaces: HashSet<String>,
    /// (namespace, pod, container) -> log
    logs: HashMap<(String, String, String), String>,
}

/// The kubelet stand-in: one Node, the pods of the namespaces it is told to serve.
pub struct Kubelet {
    shared: Arc<Mutex<Shared>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Kubelet {
    pub async fn start(client: Client) -> Result<Kubelet> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let ca = Ca::new("envtest kubelet CA")?;
        let pair = ca.serving(NODE, &["127.0.0.1", "localhost"])?;
        let router = axum::Router::new()
            .route("/containerLogs/{ns}/{pod}/{container}", get(container_log))
            .with_state(shared.clone());
        let (port, server) = serve_tls(&pair, router).await?;
        register_node(&client, port).await?;
        let runner = tokio::spawn(run_pods(client, shared.clone()));
        Ok(Kubelet { shared, tasks: vec![server, runner] })
    }

    /// From now on, pods created in `ns` are bound to the Node and run.
    pub async fn serve_namespace(&self, ns: &str) {
        if let Ok(mut s) = self.shared.lock() {
            s.namespaces.insert(ns.to_owned());
        }
    }

    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn container_log(
    State(shared): State<Arc<Mutex<Shared>>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
) -> (axum::http::StatusCode, String) {
    let log = shared.lock().ok().and_then(|s| s.logs.get(&(ns, pod, container)).cloned());
    match log {
        Some(text) => (axum::http::StatusCode::OK, text),
        None => (axum::http::StatusCode::NOT_FOUND, "no such container\n".into()),
    }
}

async fn register_node(client: &Client, port: u16) -> Result<()> {
    let status = json!({
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "the envtest kubelet stand-in",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
        "nodeInfo": {"kubeletVersion": "v1.37.2", "operatingSystem": "linux", "architecture": "amd64",
                     "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                     "containerRuntimeVersion": "", "kubeProxyVersion": ""},
    });
    let node: Node = serde_json::from_value(
        json!({"metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}, "status": status}),
    )
    .map_err(|e| e.to_string())?;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&PostParams::default(), &node).await.map_err(|e| format!("register the node: {e}"))?;
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
        .await
        .map_err(|e| format!("the node's status: {e}"))?;
    Ok(())
}

/// Binds every new pod of the served namespaces, marks it Running, and after its task's time
/// Succeeded or Failed with the task's exit code.
async fn run_pods(client: Client, shared: Arc<Mutex<Shared>>) {
    let mut started: HashMap<String, (Instant, Task)> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let namespaces: Vec<String> = shared.lock().map(|s| s.namespaces.iter().cloned().collect()).unwrap_or_default();
        for ns in namespaces {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let Ok(list) = pods.list(&Default::default()).await else { continue };
            for pod in list.items {
                let (Some(name), Some(uid)) = (pod.metadata.name.clone(), pod.metadata.uid.clone()) else { continue };
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                let Ok(value) = serde_json::to_value(&pod) else { continue };
                let container = &value["spec"]["containers"][0];
                let cname = container["name"].as_str().unwrap_or_default().to_owned();
                match (phase.as_str(), started.get(&uid)) {
                    ("Pending", None) => {
                        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                             "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}});
                        if pods
                            .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
                            .await
                            .is_err()
                        {
                            continue;
                        }
                        let task = Task::of(container);
                        if let Ok(mut s) = shared.lock() {
                            s.logs.insert((ns.clone(), name.clone(), cname.clone()), task.log.clone());
                        }
                        let status = json!({"status": {
                            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": now(),
                            "conditions": [{"type": "Ready", "status": "True"}],
                            "containerStatuses": [{"name": cname, "ready": true, "restartCount": 0, "image": container["image"],
                                                   "imageID": "", "state": {"running": {"startedAt": now()}}}]}});
                        if pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await.is_ok() {
                            started.insert(uid, (Instant::now(), task));
                        }
                    }
                    ("Running", Some((at, task))) if at.elapsed() >= task.runs => {
                        let (phase, reason) =
                            if task.exit == 0 { ("Succeeded", "Completed") } else { ("Failed", "Error") };
                        let status = json!({"status": {
                            "phase": phase,
                            "conditions": [{"type": "Ready", "status": "False"}],
                            "containerStatuses": [{"name": cname, "ready": false, "restartCount": 0, "image": container["image"],
                                                   "imageID": "", "state": {"terminated": {"exitCode": task.exit, "reason": reason,
                                                   "startedAt": now(), "finishedAt": now()}}}]}});
                        let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A mutating webhook of the test's own, called after podtailor (its configuration's name
/// sorts after "podtailor"): it adds a label and an env var to the first container.
pub struct LaterWebhook {
    port: u16,
    ca_pem: String,
    calls: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

async fn later_mutate(State(calls): State<Arc<AtomicUsize>>, Json(review): Json<Value>) -> Json<Value> {
    calls.fetch_add(1, Ordering::SeqCst);
    let pod = &review["request"]["object"];
    let mut ops = vec![];
    if pod["metadata"]["labels"].is_object() {
        ops.push(json!({"op": "add", "path": "/metadata/labels/later", "value": "yes"}));
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {"later": "yes"}}));
    }
    let var = json!({"name": "LATER", "value": "1"});
    if pod["spec"]["containers"][0]["env"].is_array() {
        ops.push(json!({"op": "add", "path": "/spec/containers/0/env/-", "value": var}));
    } else {
        ops.push(json!({"op": "add", "path": "/spec/containers/0/env", "value": [var]}));
    }
    let patch = b64(&Value::Array(ops).to_string());
    Json(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch},
    }))
}

impl LaterWebhook {
    pub async fn start() -> Result<LaterWebhook> {
        let ca = Ca::new("envtest later-webhook CA")?;
        let pair = ca.serving("later", &["127.0.0.1"])?;
        let calls = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new().route("/mutate", post(later_mutate)).with_state(calls.clone());
        let (port, task) = serve_tls(&pair, router).await?;
        Ok(LaterWebhook { port, ca_pem: ca.pem, calls, task })
    }

    /// Its configuration: pods created in `ns`, called once (no reinvocation of its own).
    pub fn configuration(&self, ns: &str) -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": LATER_WEBHOOK},
            "webhooks": [{
                "name": "later.envtest.podtailor.dev",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": format!("https://127.0.0.1:{}/mutate", self.port), "caBundle": b64(&self.ca_pem)},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "failurePolicy": "Fail", "sideEffects": "None", "reinvocationPolicy": "Never", "timeoutSeconds": 5,
            }],
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for LaterWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A mutating webhook that changes nothing and records the last pod it was sent, by
/// namespace: the pod as the API server hands it to admission (defaulted, after the built-in
/// plugins), which is what an admission policy sees too.
pub struct CaptureWebhook {
    port: u16,
    ca_pem: String,
    seen: Arc<Mutex<HashMap<String, Value>>>,
    task: JoinHandle<()>,
}

async fn capture(State(seen): State<Arc<Mutex<HashMap<String, Value>>>>, Json(review): Json<Value>) -> Json<Value> {
    let request = &review["request"];
    if let (Some(ns), Ok(mut seen)) = (request["namespace"].as_str(), seen.lock()) {
        seen.insert(ns.to_owned(), request["object"].clone());
    }
    Json(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": request["uid"], "allowed": true},
    }))
}

impl CaptureWebhook {
    pub async fn start() -> Result<CaptureWebhook> {
        let ca = Ca::new("envtest capture-webhook CA")?;
        let pair = ca.serving("capture", &["127.0.0.1"])?;
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let router = axum::Router::new().route("/mutate", post(capture)).with_state(seen.clone());
        let (port, task) = serve_tls(&pair, router).await?;
        Ok(CaptureWebhook { port, ca_pem: ca.pem, seen, task })
    }

    /// Its configuration: pods created in the namespaces labelled `label`.
    pub fn configuration(&self, label: &str) -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": CAPTURE_WEBHOOK},
            "webhooks": [{
                "name": "capture.envtest.podtailor.dev",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": format!("https://127.0.0.1:{}/mutate", self.port), "caBundle": b64(&self.ca_pem)},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
                "namespaceSelector": {"matchExpressions": [{"key": label, "operator": "Exists"}]},
                "failurePolicy": "Fail", "sideEffects": "None", "reinvocationPolicy": "Never", "timeoutSeconds": 5,
            }],
        })
    }

    /// The last pod sent from `ns`, taken (the next one is recorded afresh).
    pub fn take(&self, ns: &str) -> Option<Value> {
        self.seen.lock().ok()?.remove(ns)
    }
}

impl Drop for CaptureWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain-HTTP front of the API server, passing every request on as the admin, except that it
/// answers the first pod creation with 504 after the API server has made the pod: an answer
/// lost on the way, as a load balancer timing out loses it.
pub struct LossyFront {
    pub port: u16,
    /// The creations whose answer was lost.
    pub lost: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl LossyFront {
    pub async fn start(admin: Client) -> Result<LossyFront> {
        let lost = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new().fallback(pass_on).with_state((admin, lost.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(LossyFront { port, lost, task })
    }

    /// A kubeconfig for this front (no credentials: the front brings the admin's).
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: front\n  cluster: {{server: 'http://127.0.0.1:{}'}}\nusers:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: front\n  context: {{cluster: front, user: nobody, namespace: {namespace}}}\ncurrent-context: front\n",
            self.port
        )
    }
}

impl Drop for LossyFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pass_on(
    State((client, lost)): State<(Client, Arc<AtomicUsize>)>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http::{StatusCode, header};
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, 8 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let creates_pod = parts.method == http::Method::POST && parts.uri.path().ends_with("/pods");
    let mut forward =
        http::Request::builder().method(parts.method).uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = parts.headers.get(&name) {
            forward = forward.header(name, value);
        }
    }
    let forward = match forward.body(kube::client::Body::from(bytes.to_vec())) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match client.send(forward).await {
        Ok(answer) => {
            if creates_pod && answer.status().is_success() && lost.fetch_add(1, Ordering::SeqCst) == 0 {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Timeout", "code": 504,
                                    "message": "the envtest front lost the API server's answer"});
                return (StatusCode::GATEWAY_TIMEOUT, Json(status)).into_response();
            }
            let (parts, body) = answer.into_parts();
            axum::response::Response::from_parts(parts, axum::body::Body::new(body))
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
