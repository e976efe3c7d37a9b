//! `serve --cluster` end to end below the API server: a real server on 127.0.0.1 whose
//! Kubernetes client talks to a scripted API (`tower_test::mock`). The test plays the API
//! server: it answers the watcher's list and watch requests one by one and checks, between
//! them, what the webhook serves and whether it is ready. It also answers the status writes
//! (server-side apply of `podoverrides/status`), and checks what they say.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::{Pki, eventually};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use podtailor::serve::{LogFormat, ServeArgs, Server};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const TEMPLATE: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: placeholder\nspec:\n  restartPolicy: Never\n  containers: [{name: base, image: 'worker:1'}]\n";
const PATH: &str = "/apis/podtailor.dev/v1alpha1/podoverrides";

fn podoverride(namespace: &str, name: &str, version: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": version, "uid": format!("uid-{namespace}-{name}")},
        "spec": spec,
    })
}

fn cpu(limit: &str) -> Value {
    json!({"resources": {"limits": {"cpu": limit}}})
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A list answer, as the API server sends it: items without their own apiVersion and kind.
fn list(version: &str, items: &[Value]) -> Response<Body> {
    let items: Vec<Value> = items
        .iter()
        .map(|i| {
            let mut i = i.clone();
            if let Some(o) = i.as_object_mut() {
                o.remove("apiVersion");
                o.remove("kind");
            }
            i
        })
        .collect();
    let body = json!({"apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverrideList",
                      "metadata": {"resourceVersion": version}, "items": items});
    respond(StatusCode::OK, body.to_string().into_bytes())
}

/// A watch answer: one JSON event per line; the stream ends after them.
fn watch(events: &[Value]) -> Response<Body> {
    let mut body = Vec::new();
    for e in events {
        body.extend_from_slice(e.to_string().as_bytes());
        body.push(b'\n');
    }
    respond(StatusCode::OK, body)
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message})
}

type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// The scripted API server: list and watch requests are handed to the test in order; status
/// writes are answered at once (as the API server would: the object with the status applied)
/// and kept for the test to read.
struct ApiServer {
    handle: Handle,
    /// Lists and watches that came while the test waited for status writes.
    held: VecDeque<(Request<Body>, Responder)>,
    /// The status writes so far: (namespace/name, the applied body).
    statuses: Vec<(String, Value)>,
}

impl ApiServer {
    /// The next request that is not a status write.
    async fn next(&mut self, what: &str) -> (Request<Body>, Responder) {
        if let Some(held) = self.held.pop_front() {
            return held;
        }
        loop {
            let (request, send) = tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("no {what} request within 10 s"))
                .unwrap_or_else(|| panic!("the client went away"));
            if request.method() != http::Method::PATCH {
                return (request, send);
            }
            self.answer_status(request, send).await;
        }
    }

    /// Answers a status write: it must be a forced server-side apply by podtailor of the
    /// status alone.
    async fn answer_status(&mut self, request: Request<Body>, send: Responder) {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let at = path
            .strip_prefix("/apis/podtailor.dev/v1alpha1/namespaces/")
            .and_then(|p| p.strip_suffix("/status"))
            .map(|p| p.replacen("/podoverrides/", "/", 1))
            .unwrap_or_else(|| panic!("a PATCH of something else than a PodOverride's status: {path}"));
        assert_eq!(content_type.as_deref(), Some("application/apply-patch+yaml"), "{path}");
        assert!(query.contains("fieldManager=podtailor") && query.contains("force=true"), "{path}?{query}");
        let bytes = request.into_body().collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<&String> = body.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "status"], "{body}");
        let mut answer = body.clone();
        answer["metadata"]["resourceVersion"] = json!("999");
        send.send_response(respond(StatusCode::OK, answer.to_string().into_bytes()));
        self.statuses.push((at, body));
    }

    /// Waits until the status writes include one for each of `objects` (namespace/name), and
    /// returns the last of each.
    async fn statuses_of(&mut self, objects: &[&str]) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let last = |at: &str| self.statuses.iter().rev().find(|(a, _)| a == at).map(|(_, b)| b["status"].clone());
            if let Some(found) = objects.iter().map(|o| last(o)).collect::<Option<Vec<Value>>>() {
                return found;
            }
            let next = tokio::time::timeout_at(deadline, self.handle.next_request())
                .await
                .unwrap_or_else(|_| {
                    panic!("no status written for each of {objects:?} within 10 s: {:?}", self.statuses)
                })
                .unwrap_or_else(|| panic!("the client went away"));
            match next {
                (request, send) if request.method() == http::Method::PATCH => self.answer_status(request, send).await,
                held => self.held.push_back(held),
            }
        }
    }

    /// The next request to the API: asserts it is a list (`watch == false`) or a watch of the
    /// PodOverrides of all namespaces, and returns the responder.
    async fn expect(&mut self, watching: bool) -> Responder {
        let (request, send) = self.next(if watching { "watch" } else { "list" }).await;
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), PATH, "{}", request.uri());
        let query = request.uri().query().unwrap_or_default();
        assert_eq!(query.contains("watch=true"), watching, "{}", request.uri());
        send
    }
}

/// The `Ready` condition of a status: (status, reason, message).
fn ready(status: &Value) -> (String, String, String) {
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready").cloned().unwrap_or_default();
    let text = |k: &str| ready[k].as_str().unwrap_or_default().to_owned();
    (text("status"), text("reason"), text("message"))
}

fn review(uid: &str, namespace: &str, overrides: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "namespace": namespace,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"generateName": "task-", "annotations": {"podtailor.dev/override": overrides}},
                       "spec": {"containers": [{"name": "base", "command": ["true"]}]}}
        }
    })
}

struct Cluster {
    https: reqwest::Client,
    url: String,
    admin: String,
}

impl Cluster {
    /// The answer to a review: `Ok(patch operations)` or `Err(denial message)`.
    async fn admit(&self, namespace: &str, overrides: &str) -> Result<Vec<Value>, String> {
        let answer: Value = self
            .https
            .post(&self.url)
            .json(&review("u-1", namespace, overrides))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let response = &answer["response"];
        assert_eq!(response["uid"], "u-1");
        if response["allowed"] == true {
            let patch = response["patch"].as_str().unwrap_or_default();
            let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, patch)
                .unwrap_or_else(|e| panic!("{e}"));
            Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}")))
        } else {
            Err(response["status"]["message"].as_str().unwrap_or_default().to_owned())
        }
    }

    /// The cpu limit the webhook sets for a pod naming `overrides` in `namespace`.
    async fn cpu_limit(&self, namespace: &str, overrides: &str) -> Result<String, String> {
        let patch = self.admit(namespace, overrides).await?;
        let found = patch.iter().find_map(|op| {
            let path = op["path"].as_str()?;
            if path.ends_with("/resources") {
                return op["value"]["limits"]["cpu"].as_str().map(str::to_owned);
            }
            if path.ends_with("/resources/limits") {
                return op["value"]["cpu"].as_str().map(str::to_owned);
            }
            None
        });
        Ok(found.unwrap_or_default())
    }

    async fn ready(&self) -> StatusCode {
        reqwest::get(format!("{}/readyz", self.admin)).await.unwrap_or_else(|e| panic!("{e}")).status()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_follow_the_cluster_and_survive_api_errors() {
    tokio::time::timeout(Duration::from_secs(60), scenario()).await.unwrap_or_else(|_| panic!("timed out"));
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf("cluster");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let args = ServeArgs {
        template: write("template.yaml", TEMPLATE),
        overrides: None,
        cluster: true,
        namespace_template_name: String::new(),
        tls_cert: write("tls.crt", &cert),
        tls_key: write("tls.key", &key),
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        admin_listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        log_format: LogFormat::Text,
        reload_interval: 0.05,
        header_timeout: 2.0,
        idle_timeout: 5.0,
        shutdown_grace: 2.0,
    };
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut api = ApiServer { handle, held: VecDeque::new(), statuses: Vec::new() };
    let client = kube::Client::new(service, "default");
    let server = Server::bind_with(args, Some(client)).await.unwrap_or_else(|e| panic!("bind: {e:#}"));
    let cluster = Cluster {
        https: common::client(&pki.ca_pem, false),
        url: format!("https://localhost:{}/mutate", server.addr.port()),
        admin: format!("http://{}", server.admin_addr),
    };
    let stop = server.stopper();
    let done = tokio::spawn(server.run());

    // 1. the first list is pending: not ready, and nothing from the cluster is served
    let first_list = api.expect(false).await;
    assert_eq!(cluster.ready().await, StatusCode::SERVICE_UNAVAILABLE);
    let unknown = cluster.admit("airflow", "big").await.err().unwrap_or_default();
    assert!(unknown.contains("\"big\" in namespace \"airflow\": the PodOverrides have not been listed"), "{unknown}");

    // 2. the list arrives: one good override, one the validating webhook would have refused
    let bad_spec = json!({"secrets": [{"deployType": "env", "deployTarget": "1BAD", "secret": "s", "key": "k"}]});
    first_list.send_response(list(
        "10",
        &[podoverride("airflow", "big", "5", cpu("2")), podoverride("airflow", "broken", "6", bad_spec)],
    ));
    let watch1 = api.expect(true).await;
    assert_eq!(cluster.ready().await, StatusCode::OK);
    assert_eq!(cluster.cpu_limit("airflow", "big").await.as_deref(), Ok("2"));
    // 3. visible only in its own namespace; the broken one is denied with its reason
    let elsewhere = cluster.admit("other", "big").await.err().unwrap_or_default();
    assert_eq!(
        elsewhere,
        "podtailor: PodOverride \"big\" not found in namespace \"other\"; it exists in namespace \"airflow\" (use -n airflow)"
    );
    let broken = cluster.admit("airflow", "broken").await.err().unwrap_or_default();
    assert!(
        broken.starts_with(
            "podtailor: PodOverride \"broken\" in namespace \"airflow\" is invalid: spec.secrets[0].deployTarget"
        ),
        "{broken}"
    );
    let metrics = cluster.metrics().await;
    assert!(metrics.contains("podtailor_overrides_loaded 1"), "{metrics}");
    assert!(metrics.contains("podtailor_overrides_invalid 1"), "{metrics}");
    // each object's status says it: Ready, or not with the reason pods naming it are denied
    let statuses = api.statuses_of(&["airflow/big", "airflow/broken"]).await;
    assert_eq!(ready(&statuses[0]).0, "True", "{}", statuses[0]);
    let (is, reason, message) = ready(&statuses[1]);
    assert_eq!((is.as_str(), reason.as_str()), ("False", "Invalid"), "{}", statuses[1]);
    assert!(message.starts_with("pods that name it are denied: spec.secrets[0].deployTarget"), "{message}");
    // the status writes are not on the admission path: a pod is answered meanwhile
    assert_eq!(cluster.cpu_limit("airflow", "big").await.as_deref(), Ok("2"));
    assert!(metrics.contains("podtailor_reloads_total{source=\"cluster\",result=\"success\"} 1"), "{metrics}");

    // 4. watch events: an override added, one modified, then the API says the watch expired
    watch1.send_response(watch(&[
        json!({"type": "ADDED", "object": podoverride("airflow", "small", "11", cpu("250m"))}),
        json!({"type": "MODIFIED", "object": podoverride("airflow", "big", "12", cpu("3"))}),
        json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version: 10 (12)")}),
    ]));
    eventually("the added override is served", || async {
        cluster.cpu_limit("airflow", "small").await.as_deref() == Ok("250m")
    })
    .await;
    assert_eq!(cluster.cpu_limit("airflow", "big").await.as_deref(), Ok("3"));
    let statuses = api.statuses_of(&["airflow/small"]).await;
    assert_eq!(ready(&statuses[0]).0, "True", "{}", statuses[0]);

    // 5. the relist fails: the last known set keeps serving, and the server stays ready
    let relist = api.expect(false).await;
    relist.send_response(respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        status(500, "InternalError", "etcd is unavailable").to_string().into_bytes(),
    ));
    eventually("the failure is counted", || async {
        // registered at zero from the start: counted means above zero
        let metrics = cluster.metrics().await;
        let failures = "podtailor_reloads_total{source=\"cluster\",result=\"failure\"} ";
        metrics.contains(failures) && !metrics.contains(&format!("{failures}0\n"))
    })
    .await;
    assert_eq!(cluster.ready().await, StatusCode::OK);
    assert_eq!(cluster.cpu_limit("airflow", "small").await.as_deref(), Ok("250m"));
    assert_eq!(cluster.cpu_limit("airflow", "big").await.as_deref(), Ok("3"));

    // 6. after the backoff the relist succeeds: "small" was deleted during the outage
    let relist = api.expect(false).await;
    relist.send_response(list("20", &[podoverride("airflow", "big", "12", cpu("3"))]));
    let watch2 = api.expect(true).await;
    eventually("the override deleted during the outage is gone", || async {
        cluster.admit("airflow", "small").await.is_err()
    })
    .await;
    let gone = cluster.admit("airflow", "small").await.err().unwrap_or_default();
    assert_eq!(gone, "podtailor: PodOverride \"small\" not found in namespace \"airflow\"");
    assert_eq!(cluster.cpu_limit("airflow", "big").await.as_deref(), Ok("3"));
    assert!(cluster.metrics().await.contains("podtailor_overrides_invalid 0"));

    // 7. a watch event deletes "big": a pod naming it is denied from then on
    let metrics = cluster.metrics().await;
    assert!(metrics.contains("podtailor_overrides_loaded 1"), "{metrics}");
    watch2.send_response(watch(&[json!({"type": "DELETED", "object": podoverride("airflow", "big", "21", cpu("3"))})]));
    eventually("the deleted override is gone", || async { cluster.admit("airflow", "big").await.is_err() }).await;
    let deleted = cluster.admit("airflow", "big").await.err().unwrap_or_default();
    assert_eq!(deleted, "podtailor: PodOverride \"big\" not found in namespace \"airflow\"");
    let metrics = cluster.metrics().await;
    assert!(metrics.contains("podtailor_overrides_loaded 0"), "{metrics}");
    assert_eq!(cluster.ready().await, StatusCode::OK);

    stop.cancel();
    done.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e:#}"));
}
