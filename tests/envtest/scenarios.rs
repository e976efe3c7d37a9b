//! The scenarios: each in its own namespace (label `podtailor.dev/envtest=true`), each failing
//! when the behaviour it names breaks.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::controlplane::{Binaries, ControlPlane, Result};
use super::install::{Webhook, helm_ok, helm_path, kubectl, kubectl_ok, podoverride_resource, repo};
use super::kubelet::{self, Kubelet};

const LABEL: &str = "podtailor.dev/envtest";
const OVERRIDE: &str = "podtailor.dev/override";
const APPLIED: &str = "podtailor.dev/applied";
/// The example template's service account: pods are refused unless it exists.
const WORKER_SA: &str = "infrared-photon-7780-worker";
/// How long a change in the cluster may take to reach the webhook (a watch event, not a relist).
const PROPAGATION: Duration = Duration::from_secs(5);

/// A scenario: its future, borrowing the environment.
type Scenario = for<'a> fn(&'a Env) -> Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// Every scenario, by name, in the order they run.
const SCENARIOS: [(&str, Scenario); 19] = [
    ("seed_through_kubectl_and_launch", |env| Box::pin(seed(env))),
    (AIRFLOW_SCENARIO, |env| Box::pin(airflow(env))),
    ("render_corpus_equals_the_api_servers_own_defaulting", |env| Box::pin(corpus(env))),
    ("policy_mode_stores_every_case_it_accepts_as_the_webhook_does", |env| Box::pin(policy_corpus(env))),
    ("policy_mode_from_the_cluster_serves_the_seed_pod_and_the_launcher", |env| Box::pin(policy_seed(env))),
    ("not_opted_in_is_stored_as_submitted_and_never_reaches_the_webhook", |env| Box::pin(not_opted_in(env))),
    ("missing_override_is_denied_naming_it_and_the_namespace", |env| Box::pin(missing_override(env))),
    ("invalid_podoverrides_are_refused_by_the_schema_and_by_validate", |env| Box::pin(invalid_overrides(env))),
    ("podoverride_changed_then_deleted_reaches_the_next_pod", |env| Box::pin(changed_then_deleted(env))),
    ("podoverride_status_says_ready_or_why_not_in_kubectl_get", |env| Box::pin(status(env))),
    ("a_namespaces_podtemplate_replaces_the_template_and_is_followed", |env| Box::pin(namespace_templates(env))),
    ("reinvocation_by_a_later_webhook_adds_nothing_twice", |env| Box::pin(reinvocation(env))),
    ("server_side_dry_run_shows_the_tailored_pod_and_stores_nothing", |env| Box::pin(dry_run(env))),
    ("rbac_watches_podoverrides_patches_their_status_and_reads_no_secret_or_pod", |env| Box::pin(rbac(env))),
    ("certificate_rotation_under_a_stream_of_creations", |env| Box::pin(rotation(env))),
    ("webhook_down_refuses_opted_in_pods_only", |env| Box::pin(webhook_down(env))),
    ("launcher_against_the_api_server_with_a_kubelet_stand_in", |env| Box::pin(launcher(env))),
    ("launcher_whose_create_answer_is_lost_makes_one_pod", |env| Box::pin(launcher_lost_answer(env))),
    ("helm_chart_installed_tailors_a_pod_and_uninstalled_leaves_pods_alone", |env| Box::pin(helm_chart(env))),
];

/// The scenario that needs the venv's Python with Airflow besides the control plane.
const AIRFLOW_SCENARIO: &str = "airflows_own_worker_pods_are_stored_tailored_with_all_airflow_set";

/// Why scenario `name` cannot run here, when a prerequisite besides the control plane is
/// missing (the venv's Airflow, for one).
pub fn unavailable(name: &str) -> Option<String> {
    if name == AIRFLOW_SCENARIO { airflow_python().err() } else { None }
}

pub fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|(name, _)| *name).collect()
}

pub async fn run(name: &str, env: &Env) -> Result<()> {
    match SCENARIOS.iter().find(|(n, _)| *n == name) {
        Some((_, scenario)) => scenario(env).await,
        None => Err(format!("no scenario {name}")),
    }
}

/// What every scenario shares: the control plane, podtailor, the kubelet stand-in.
pub struct Env {
    pub bins: Binaries,
    pub cp: ControlPlane,
    pub webhook: Mutex<Webhook>,
    pub kubelet: Kubelet,
    _dir: tempfile::TempDir,
}

impl Env {
    pub async fn start(bins: Binaries) -> Result<Env> {
        let dir = tempfile::Builder::new()
            .prefix("podtailor-envtest-")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        let cp = ControlPlane::start(&bins, dir.path(), &[]).await?;
        let webhook = match Webhook::install(&bins, &cp).await {
            Ok(w) => w,
            Err(e) => return Err(format!("{e}\n{}", cp.apiserver_tail(30))),
        };
        let kubelet = Kubelet::start(cp.admin.clone()).await?;
        Ok(Env { bins, cp, webhook: Mutex::new(webhook), kubelet, _dir: dir })
    }

    pub async fn stop(&self) {
        self.kubelet.stop();
        self.webhook.lock().await.stop();
        self.cp.stop();
    }

    /// What to show with a failure: the ends of podtailor's and the API server's logs.
    pub async fn logs(&self) -> String {
        format!("{}{}", self.webhook.lock().await.log_tail(), self.cp.apiserver_tail(5))
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        kubectl(&self.bins, &self.cp.kubeconfig, args, stdin)
    }

    /// `podtailor` with the admin's kubeconfig.
    pub fn podtailor(&self, args: &[&str]) -> Result<Output> {
        Command::new(env!("CARGO_BIN_EXE_podtailor"))
            .args(args)
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .output()
            .map_err(|e| format!("podtailor {}: {e}", args.join(" ")))
    }

    /// A new namespace for one scenario, with the service accounts its pods use (no
    /// controller-manager runs to make `default`).
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let api: Api<Namespace> = Api::all(self.cp.admin.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{prefix}-"), "labels": {LABEL: "true"}}
        }))
        .map_err(|e| e.to_string())?;
        let ns = api.create(&PostParams::default(), &ns).await.map_err(|e| format!("create namespace: {e}"))?;
        let name = ns.metadata.name.ok_or("a namespace without a name")?;
        for sa in ["default", WORKER_SA] {
            self.service_account(&name, sa).await?;
        }
        Ok(name)
    }

    /// The namespace `name` (kept if it exists, labelled like the others when made), with the
    /// same service accounts: for pods that name their namespace themselves.
    pub async fn named_namespace(&self, name: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.cp.admin.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {LABEL: "true"}}}))
            .map_err(|e| e.to_string())?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(format!("create namespace {name}: {e}")),
        }
        for sa in ["default", WORKER_SA] {
            self.service_account(name, sa).await?;
        }
        Ok(())
    }

    pub async fn service_account(&self, ns: &str, name: &str) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.cp.admin.clone(), ns);
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).map_err(|e| e.to_string())?;
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("already exists") => Ok(()),
            Err(e) => Err(format!("create serviceaccount {ns}/{name}: {e}")),
        }
    }

    /// A PriorityClass or RuntimeClass named `name` (cluster-wide; kept if it exists), so that
    /// a pod naming it is admitted.
    pub fn cluster_class(&self, kind: &str, name: &str) -> Result<()> {
        let object = match kind {
            "PriorityClass" => {
                json!({"apiVersion": "scheduling.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "value": 1000})
            }
            _ => json!({"apiVersion": "node.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "handler": name}),
        };
        let out = self.kubectl(&["apply", "-f", "-"], Some(&object.to_string()))?;
        ensure(out.status.success(), || format!("apply {kind} {name}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    pub fn pods(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.cp.admin.clone(), ns, &ApiResource::erase::<Pod>(&()))
    }

    pub fn overrides(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.cp.admin.clone(), ns, &podoverride_resource())
    }

    /// Creates a PodOverride in `ns`.
    pub async fn create_override(&self, ns: &str, name: &str, spec: &Value) -> Result<()> {
        let object = json!({
            "apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
            "metadata": {"name": name, "namespace": ns}, "spec": spec,
        });
        let object: DynamicObject = serde_json::from_value(object).map_err(|e| e.to_string())?;
        self.overrides(ns)
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| format!("create PodOverride {ns}/{name}: {e}"))?;
        Ok(())
    }

    /// The example PodOverrides (examples/overrides), in `ns`.
    pub async fn example_overrides(&self, ns: &str) -> Result<()> {
        for name in ["resource-requirements", "secret-env"] {
            let object = yaml_file(&repo().join(format!("examples/overrides/{name}.yaml")))?;
            self.create_override(ns, name, &object["spec"]).await?;
        }
        Ok(())
    }

    /// Creates `pod` in `ns` (dry run if asked).
    pub async fn create_pod(&self, ns: &str, pod: &Value, dry_run: bool) -> Result<Value, String> {
        let object: DynamicObject = serde_json::from_value(pod.clone()).map_err(|e| e.to_string())?;
        let params = PostParams { dry_run, ..PostParams::default() };
        let created = self.pods(ns).create(&params, &object).await.map_err(|e| e.to_string())?;
        serde_json::to_value(created).map_err(|e| e.to_string())
    }

    /// Creates `pod` once the webhook answers for it as `done` says (a PodOverride just made
    /// reaches the webhook by a watch event): dry runs until then, at most PROPAGATION.
    pub async fn create_when(&self, ns: &str, pod: &Value, done: impl Fn(&Result<Value>) -> bool) -> Result<Value> {
        let deadline = Instant::now() + PROPAGATION;
        loop {
            let answer = self.create_pod(ns, pod, true).await;
            if done(&answer) {
                return self.create_pod(ns, pod, false).await;
            }
            if Instant::now() > deadline {
                return Err(format!("within {PROPAGATION:?} the webhook never answered as expected; last: {answer:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sum of podtailor's mutate answers, all outcomes.
    pub async fn mutate_calls(&self) -> Result<f64> {
        self.webhook.lock().await.metric_sum("podtailor_admission_requests_total{webhook=\"mutate\"").await
    }
}

pub fn yaml_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(what()) }
}

/// The example bare pod (examples/pod.yaml) in `ns`.
fn example_pod(ns: &str) -> Result<Value> {
    let mut pod = yaml_file(&repo().join("examples/pod.yaml"))?;
    pod["metadata"]["namespace"] = json!(ns);
    Ok(pod)
}

fn container<'a>(pod: &'a Value, name: &str) -> Result<&'a Value> {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .ok_or_else(|| format!("no container {name} in {}", pod["spec"]))
}

/// What the seed scenario promises of a stored pod: the template, 500m CPU and 1024Mi
/// requested and limited, MY_SECRET from the deployment's Secret, restartPolicy Never.
fn check_seed_pod(pod: &Value) -> Result<()> {
    let base = container(pod, "base")?;
    // the API server stores a quantity in its canonical form: 1024Mi is kept as 1Gi
    let quantity = json!({"cpu": "500m", "memory": "1Gi"});
    ensure(base["resources"]["requests"] == quantity && base["resources"]["limits"] == quantity, || {
        format!("resources: {}", base["resources"])
    })?;
    ensure(base["image"] == "quay.io/astronomer/ap-airflow:2.10.5", || format!("image: {}", base["image"]))?;
    let env = base["env"].as_array().cloned().unwrap_or_default();
    let secret: Vec<&Value> = env.iter().filter(|e| e["name"] == "MY_SECRET").collect();
    ensure(
        secret.len() == 1
            && secret[0]["valueFrom"]["secretKeyRef"]
                == json!({"name": "infrared-photon-7780-env", "key": "MY_SECRET"}),
        || format!("MY_SECRET: {secret:?}"),
    )?;
    ensure(env.iter().any(|e| e["name"] == "AIRFLOW__CORE__EXECUTOR"), || format!("the template's env: {env:?}"))?;
    ensure(pod["spec"]["restartPolicy"] == "Never", || format!("restartPolicy: {}", pod["spec"]["restartPolicy"]))?;
    ensure(pod["spec"]["serviceAccountName"] == WORKER_SA, || {
        format!("serviceAccountName: {}", pod["spec"]["serviceAccountName"])
    })?;
    let labels = &pod["metadata"]["labels"];
    ensure(labels["tier"] == "airflow" && labels["release"] == "infrared-photon-7780", || format!("labels: {labels}"))?;
    ensure(pod["metadata"]["annotations"][APPLIED].is_string(), || {
        format!("annotations: {}", pod["metadata"]["annotations"])
    })?;
    let volumes: Vec<&str> =
        pod["spec"]["volumes"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    ensure(
        volumes.contains(&"logs")
            && volumes.contains(&"config")
            && volumes.iter().any(|v| v.starts_with("kube-api-access-")),
        || format!("volumes: {volumes:?}"),
    )
}

/// `podtailor launch --detach` of the seed task (the examples' two overrides, `airflow
/// version`) in `ns`: the pod it made, as stored.
async fn launch_detached(env: &Env, ns: &str) -> Result<Value> {
    let out = env.podtailor(&[
        "launch",
        "-n",
        ns,
        "--override",
        "resource-requirements,secret-env",
        "--detach",
        "--",
        "airflow",
        "version",
    ])?;
    ensure(out.status.success(), || format!("launch --detach: {}", String::from_utf8_lossy(&out.stderr)))?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stored = env.pods(ns).get(&name).await.map_err(|e| format!("launched pod {name}: {e}"))?;
    serde_json::to_value(stored).map_err(|e| e.to_string())
}

async fn seed(env: &Env) -> Result<()> {
    let ns = env.namespace("seed").await?;
    env.example_overrides(&ns).await?;
    // through the webhook once the overrides reached it, then with kubectl
    env.create_when(&ns, &example_pod(&ns)?, |a| a.is_ok()).await?;
    let yaml = serde_yaml_ng::to_string(&example_pod(&ns)?).map_err(|e| e.to_string())?;
    let out = env.kubectl(&["create", "-f", "-", "-o", "json"], Some(&yaml))?;
    ensure(out.status.success(), || format!("kubectl create: {}", String::from_utf8_lossy(&out.stderr)))?;
    let created: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let name = created["metadata"]["name"].as_str().ok_or("kubectl printed no name")?;
    let stored =
        serde_json::to_value(env.pods(&ns).get(name).await.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    check_seed_pod(&stored).map_err(|e| format!("the pod kubectl created: {e}"))?;

    let stored = launch_detached(env, &ns).await?;
    check_seed_pod(&stored).map_err(|e| format!("the pod launch created: {e}"))?;
    ensure(container(&stored, "base")?["command"] == json!(["airflow", "version"]), || {
        format!("launch's command: {}", container(&stored, "base").map(|c| c["command"].clone()).unwrap_or_default())
    })
}

/// The venv's Python (`make venv`) with Airflow and its Kubernetes provider
/// (tests/oracle/requirements.txt); `PODTAILOR_PYTHON` names another. Why not, when it is
/// missing or has no Airflow.
fn airflow_python() -> Result<PathBuf> {
    let python = std::env::var_os("PODTAILOR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/venv/bin/python"));
    ensure(python.exists(), || format!("{} is missing: run `make venv`", python.display()))?;
    const CHECK: &str = "import importlib.metadata as m
for d in ('apache-airflow', 'apache-airflow-providers-cncf-kubernetes'):
    m.version(d)";
    let out = Command::new(&python).args(["-c", CHECK]).output().map_err(|e| format!("{}: {e}", python.display()))?;
    ensure(out.status.success(), || {
        format!(
            "{} has no apache-airflow or apache-airflow-providers-cncf-kubernetes: run `make venv`",
            python.display()
        )
    })?;
    Ok(python)
}

/// The example template's resources (examples/template.yaml), as the API server stores them.
fn template_resources() -> Value {
    json!({"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
}

/// The resource-requirements PodOverride's: half a CPU and 1024Mi requested and limited (the
/// API server stores 1024Mi as 1Gi).
fn seed_resources() -> Value {
    let quantity = json!({"cpu": "500m", "memory": "1Gi"});
    json!({"requests": quantity, "limits": quantity})
}

/// Whether `have` holds everything `want` says: the same scalars, every key of a map (the API
/// server may add defaults beside them), lists element by element.
fn holds(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, v)| h.get(k).is_some_and(|x| holds(x, v))),
        (Value::Array(h), Value::Array(w)) => h.len() == w.len() && h.iter().zip(w).all(|(x, v)| holds(x, v)),
        _ => have == want,
    }
}

/// What one of Airflow's pods must be once stored: what the case asks (`resources`, MY_SECRET
/// or not, the image), the template's platform settings, and everything Airflow set as it set it.
fn check_airflow_pod(sent: &Value, stored: &Value, resources: &Value, my_secret: bool, image: &str) -> Result<()> {
    let (sent_base, base) = (container(sent, "base")?, container(stored, "base")?);
    // the case
    ensure(&base["resources"] == resources, || format!("resources: {} (expected {resources})", base["resources"]))?;
    ensure(base["image"] == image, || format!("image: {} (expected {image})", base["image"]))?;
    let env: Vec<&Value> = base["env"].as_array().into_iter().flatten().collect();
    let named = |name: &str| env.iter().filter(|e| e["name"] == name).copied().collect::<Vec<&Value>>();
    let secret = named("MY_SECRET");
    let expected = json!({"secretKeyRef": {"name": "infrared-photon-7780-env", "key": "MY_SECRET"}});
    if my_secret {
        ensure(secret.len() == 1 && secret[0]["valueFrom"] == expected, || format!("MY_SECRET: {secret:?}"))?;
    } else {
        ensure(secret.is_empty(), || format!("MY_SECRET, not asked for: {secret:?}"))?;
    }
    // the platform's template
    for name in ["AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] {
        ensure(named(name).len() == 1, || format!("the template's {name}: {env:?}"))?;
    }
    let env_from = base["envFrom"].as_array().cloned().unwrap_or_default();
    ensure(env_from.contains(&json!({"secretRef": {"name": "infrared-photon-7780-env"}})), || {
        format!("envFrom: {env_from:?}")
    })?;
    let spec = &stored["spec"];
    for (field, value) in [
        ("serviceAccountName", json!(WORKER_SA)),
        ("restartPolicy", json!("Never")),
        ("securityContext", json!({"runAsUser": 50000, "fsGroup": 50000})),
        // the template's, not the API server's default of 30
        ("terminationGracePeriodSeconds", json!(600)),
        ("imagePullSecrets", json!([{"name": "infrared-photon-7780-registry"}])),
    ] {
        ensure(spec[field] == value, || format!("{field}: {} (expected {value})", spec[field]))?;
    }
    let volumes: Vec<&str> =
        spec["volumes"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    ensure(
        volumes.contains(&"logs")
            && volumes.contains(&"config")
            && volumes.iter().any(|v| v.starts_with("kube-api-access-")),
        || format!("volumes: {volumes:?}"),
    )?;
    let mounts: Vec<&str> =
        base["volumeMounts"].as_array().into_iter().flatten().filter_map(|m| m["mountPath"].as_str()).collect();
    ensure(mounts.contains(&"/usr/local/airflow/logs") && mounts.contains(&"/usr/local/airflow/airflow.cfg"), || {
        format!("volumeMounts: {mounts:?}")
    })?;
    let (labels, annotations) = (&stored["metadata"]["labels"], &stored["metadata"]["annotations"]);
    ensure(labels["tier"] == "airflow" && labels["release"] == "infrared-photon-7780", || format!("labels: {labels}"))?;
    ensure(annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false", || {
        format!("annotations: {annotations}")
    })?;
    ensure(annotations[APPLIED].is_string(), || format!("not through the webhook: {annotations}"))?;
    // everything Airflow set, as Airflow set it
    for field in ["name", "namespace"] {
        ensure(stored["metadata"][field] == sent["metadata"][field], || {
            format!("metadata.{field}: {} (Airflow: {})", stored["metadata"][field], sent["metadata"][field])
        })?;
    }
    for field in ["labels", "annotations"] {
        for (key, value) in sent["metadata"][field].as_object().into_iter().flatten() {
            ensure(&stored["metadata"][field][key] == value, || {
                format!("metadata.{field}.{key}: {} (Airflow: {value})", stored["metadata"][field][key])
            })?;
        }
    }
    for field in ["args", "command", "image", "terminationMessagePolicy"] {
        let own = &sent_base[field];
        let set = own.as_array().map_or(!own.is_null(), |a| !a.is_empty());
        ensure(!set || &base[field] == own, || format!("base.{field}: {} (Airflow: {own})", base[field]))?;
    }
    for var in sent_base["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        let ours = named(name);
        ensure(ours.len() == 1 && holds(ours[0], var), || format!("env {name}: {ours:?} (Airflow: {var})"))?;
    }
    if let Some(policy) = sent["spec"]["restartPolicy"].as_str() {
        ensure(spec["restartPolicy"] == policy, || {
            format!("restartPolicy: {} (Airflow: {policy})", spec["restartPolicy"])
        })?;
    }
    let mut names: Vec<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    ensure(names.len() == n, || format!("an env var twice: {env:?}"))
}

/// Airflow's own pods (tests/oracle/airflow_pods.py: the KubernetesExecutor's for the seed's two
/// tasks, a KubernetesPodOperator's), created as Airflow sends them in the namespace Airflow
/// set, each stored tailored and with everything Airflow set.
async fn airflow(env: &Env) -> Result<()> {
    let python = airflow_python()?;
    let script = repo().join("tests/oracle/airflow_pods.py");
    let out = Command::new(&python).arg(&script).output().map_err(|e| format!("{}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(out.status.success(), || format!("{}: {}", script.display(), &stderr[stderr.len().saturating_sub(2000)..]))?;
    let pods: BTreeMap<String, Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{}'s output: {e}", script.display()))?;
    let cases: Vec<&str> = pods.keys().map(String::as_str).collect();
    ensure(cases == ["executor_resources", "executor_secret", "operator"], || format!("the pods printed: {cases:?}"))?;
    let mut ready = Vec::new();
    for (case, sent) in &pods {
        // what Airflow wrote, so that the checks of what it set are not empty
        let base = container(sent, "base")?;
        let labels = &sent["metadata"]["labels"];
        let run = base["args"].as_array().is_some_and(|a| a.len() > 3 && a[..3] == ["airflow", "tasks", "run"]);
        let executor = case.starts_with("executor")
            && labels["dag_id"].is_string()
            && labels["task_id"].is_string()
            && labels["try_number"] == "1"
            && run
            && base["env"].as_array().is_some_and(|e| e.iter().any(|v| v["name"] == "AIRFLOW_IS_K8S_EXECUTOR_POD"));
        let operator = *case == "operator" && base["command"].as_array().is_some_and(|c| !c.is_empty());
        ensure(executor || operator, || format!("{case}: not the pod Airflow builds: {sent}"))?;
        let ns = sent["metadata"]["namespace"].as_str().ok_or_else(|| format!("{case}: Airflow set no namespace"))?;
        if !ready.contains(&ns) {
            env.named_namespace(ns).await?;
            env.example_overrides(ns).await?;
            ready.push(ns);
        }
        let (resources, my_secret, image) = match case.as_str() {
            "executor_resources" => (seed_resources(), false, "quay.io/astronomer/ap-airflow:2.10.5"),
            "executor_secret" => (template_resources(), true, "registry.example.com/airflow:2.10.5-team"),
            _ => (seed_resources(), true, "quay.io/astronomer/ap-airflow:2.10.5"),
        };
        let created = env.create_when(ns, sent, |a| a.is_ok()).await.map_err(|e| format!("{case}: {e}"))?;
        let name = created["metadata"]["name"].as_str().ok_or_else(|| format!("{case}: created without a name"))?;
        let stored = env.pods(ns).get(name).await.map_err(|e| format!("{case}: read back {ns}/{name}: {e}"))?;
        let stored = serde_json::to_value(stored).map_err(|e| e.to_string())?;
        check_airflow_pod(sent, &stored, &resources, my_secret, image)
            .map_err(|e| format!("{case} (stored as {ns}/{name}): {e}"))?;
    }
    eprintln!("  {} pods built by Airflow stored tailored: {cases:?}", pods.len());
    Ok(())
}

/// One case of the render corpus (tests/oracle/cases).
struct Case {
    name: String,
    /// The namespace the case's pod is in (the case's, else the pod's).
    namespace: Option<String>,
    template: Value,
    pod: Value,
    overrides: Vec<Value>,
}

fn corpus_cases() -> Result<Vec<Case>> {
    let dir = repo().join("tests/oracle/cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let case = yaml_file(p)?;
            Ok(Case {
                name: p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                namespace: case["namespace"]
                    .as_str()
                    .or_else(|| case["pod"]["metadata"]["namespace"].as_str())
                    .map(str::to_owned),
                template: case["template"].clone(),
                pod: case["pod"].clone(),
                overrides: case["overrides"].as_array().cloned().unwrap_or_default(),
            })
        })
        .collect()
}

/// The values of `field` in the specs of a pod, its template and its overrides (their pod
/// fragments): the service accounts or classes they name.
fn named(values: &[&Value], field: &str) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| [&v["spec"], &v["spec"]["pod"]["spec"]])
        .filter_map(|spec| spec[field].as_str().map(str::to_owned))
        .collect()
}

/// A stored pod, as compared: its spec, labels and annotations; the name of the
/// service-account token volume (random) made the same, and the lists whose order means
/// nothing (volumes by name, volume mounts by path: maps to the API) sorted.
fn comparable(pod: &Value, drop_annotation: Option<&str>) -> Value {
    let mut spec = pod["spec"].clone();
    let text = serde_json::to_string(&spec).unwrap_or_default();
    let random = text.find("kube-api-access-").map(|i| text[i..i + "kube-api-access-".len() + 5].to_owned());
    if let Some(random) = random {
        spec = serde_json::from_str(&text.replace(&random, "kube-api-access-XXXXX")).unwrap_or(spec);
    }
    let by = |key: &'static str| move |a: &Value, b: &Value| a[key].as_str().cmp(&b[key].as_str());
    if let Some(volumes) = spec["volumes"].as_array_mut() {
        volumes.sort_by(by("name"));
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if let Some(mounts) = c["volumeMounts"].as_array_mut() {
                mounts.sort_by(by("mountPath"));
            }
        }
    }
    let mut annotations = pod["metadata"]["annotations"].clone();
    if let (Some(a), Some(key)) = (annotations.as_object_mut(), drop_annotation) {
        a.remove(key);
    }
    json!({"spec": spec, "labels": pod["metadata"]["labels"], "annotations": annotations})
}

/// The paths where two values differ (at most 8), for a failure message.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    if out.len() >= 8 || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                differences(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    &format!("{path}/{key}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{path}/{i}"), out);
            }
        }
        _ => out.push(format!("{path}: webhook {a} / direct {b}")),
    }
}

async fn corpus(env: &Env) -> Result<()> {
    let cases = corpus_cases()?;
    ensure(cases.len() >= 20, || format!("only {} corpus cases", cases.len()))?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let template_file = env.webhook.lock().await.template.clone();
    let original = std::fs::read(&template_file).map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = corpus_case(env, case, work.path(), &template_file).await {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    std::fs::write(&template_file, original).map_err(|e| e.to_string())?;
    ensure(failures.is_empty(), || {
        format!("{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"))
    })
}

/// A corpus case created through the webhook: its namespace, the directory of its template
/// (`template.json`) and override files (`overrides/`), and the pod as stored.
struct Admitted {
    ns: String,
    dir: PathBuf,
    pod: Value,
}

async fn corpus_case(env: &Env, case: &Case, work: &Path, template_file: &Path) -> Result<Admitted> {
    let ns = env.namespace("corpus").await?;
    let dir = work.join(&ns);
    let overrides_dir = dir.join("overrides");
    std::fs::create_dir_all(&overrides_dir).map_err(|e| e.to_string())?;
    // the case's namespace becomes this one; an override of another namespace goes to another
    // (where it must not apply); a global one (files mode only) is this namespace's
    let mut elsewhere: Option<String> = None;
    for (i, o) in case.overrides.iter().enumerate() {
        let name = o["metadata"]["name"].as_str().ok_or("an override without a name")?;
        let own = o["metadata"]["namespace"].as_str();
        let (in_cluster, in_file) = match own {
            None => (ns.clone(), None),
            Some(own) if Some(own) == case.namespace.as_deref() => (ns.clone(), Some(ns.clone())),
            Some(_) => {
                let other = match &elsewhere {
                    Some(other) => other.clone(),
                    None => env.namespace("corpus-other").await?,
                };
                elsewhere = Some(other.clone());
                (other.clone(), Some(other))
            }
        };
        env.create_override(&in_cluster, name, &o["spec"]).await?;
        let mut o = o.clone();
        match (in_file, o["metadata"].as_object_mut()) {
            (Some(ns), Some(m)) => {
                m.insert("namespace".into(), json!(ns));
            }
            (None, Some(m)) => {
                m.remove("namespace");
            }
            (_, None) => {}
        }
        std::fs::write(overrides_dir.join(format!("{i}.json")), o.to_string()).map_err(|e| e.to_string())?;
    }
    let mut pod = case.pod.clone();
    pod["metadata"]["namespace"] = json!(ns);
    let layers: Vec<&Value> = [&case.template, &pod].into_iter().chain(&case.overrides).collect();
    for sa in named(&layers, "serviceAccountName") {
        env.service_account(&ns, &sa).await?;
    }
    for (field, kind) in [("priorityClassName", "PriorityClass"), ("runtimeClassName", "RuntimeClass")] {
        for name in named(&layers, field) {
            env.cluster_class(kind, &name)?;
        }
    }
    let local_template = dir.join("template.json");
    std::fs::write(&local_template, case.template.to_string()).map_err(|e| e.to_string())?;
    let pod_file = dir.join("pod.json");
    std::fs::write(&pod_file, pod.to_string()).map_err(|e| e.to_string())?;
    let out = env.podtailor(&[
        "render",
        "--template",
        &local_template.to_string_lossy(),
        "--overrides",
        &overrides_dir.to_string_lossy(),
        "-o",
        "json",
        &pod_file.to_string_lossy(),
    ])?;
    ensure(out.status.success(), || format!("render: {}", String::from_utf8_lossy(&out.stderr)))?;
    let rendered: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("render's output: {e}"))?;
    let marker = rendered["metadata"]["annotations"][APPLIED].clone();

    // render's output submitted directly (a dry run, first: a pod with a fixed name is then created
    // through the webhook): without the opt-in no webhook is called
    let mut direct = rendered.clone();
    if let Some(a) = direct["metadata"]["annotations"].as_object_mut() {
        a.remove(OVERRIDE);
    }
    let direct =
        env.create_pod(&ns, &direct, true).await.map_err(|e| format!("render's pod, submitted directly: {e}"))?;
    // the server's template is this case's; the pod is created once the webhook serves it
    std::fs::write(template_file, case.template.to_string()).map_err(|e| e.to_string())?;
    let through_webhook = env
        .create_when(&ns, &pod, |a| a.as_ref().is_ok_and(|p| p["metadata"]["annotations"][APPLIED] == marker))
        .await
        .map_err(|e| format!("render's marker {marker}: {}", &e[..e.len().min(400)]))?;
    let (a, b) = (comparable(&through_webhook, Some(OVERRIDE)), comparable(&direct, None));
    let mut diffs = Vec::new();
    differences(&a, &b, "", &mut diffs);
    ensure(diffs.is_empty(), || diffs.join("; "))?;
    Ok(Admitted { ns, dir, pod: through_webhook })
}

/// Label of the namespaces the webhook is told to skip while the policy scenario runs.
const NO_WEBHOOK: &str = "podtailor.dev/envtest-no-webhook";

/// The example template with five stacked overrides: the two examples and three more.
fn five_stacked() -> Result<Case> {
    let mut overrides = Vec::new();
    for name in ["resource-requirements", "secret-env"] {
        overrides.push(yaml_file(&repo().join(format!("examples/overrides/{name}.yaml")))?);
    }
    for (name, spec) in [
        ("node-pool", json!({"pod": {"spec": {"nodeSelector": {"pool": "batch"}}}})),
        (
            "task-env",
            json!({"pod": {"spec": {"containers": [{"name": "base", "env": [{"name": "TASK_MODE", "value": "fast"}]}]}}}),
        ),
        ("team-label", json!({"pod": {"metadata": {"labels": {"team": "data"}}}})),
    ] {
        overrides.push(json!({"apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
            "metadata": {"name": name, "namespace": "airflow"}, "spec": spec}));
    }
    let mut pod = yaml_file(&repo().join("examples/pod.yaml"))?;
    pod["metadata"]["annotations"][OVERRIDE] = json!("resource-requirements,secret-env,node-pool,task-env,team-label");
    Ok(Case {
        name: "five-stacked-overrides-on-the-example-template".into(),
        namespace: Some("airflow".into()),
        template: yaml_file(&repo().join("examples/template.yaml"))?,
        pod,
        overrides,
    })
}

/// Every corpus case (and five stacked overrides on the example template) admitted through
/// the webhook, then through `podtailor policy`'s objects with the webhook skipping the
/// namespace: the policy mode accepts the case and stores the same pod, or refuses it with
/// exit 1 naming the field.
async fn policy_corpus(env: &Env) -> Result<()> {
    skipping_webhook(env, policy_cases(env)).await
}

/// Runs `inner` with the webhook told to skip the namespaces labelled [`NO_WEBHOOK`] (an
/// expression added to its namespaceSelector, removed after).
async fn skipping_webhook<T>(env: &Env, inner: impl Future<Output = Result<T>>) -> Result<T> {
    let skip = json!([{"op": "add", "path": "/webhooks/0/namespaceSelector/matchExpressions/-",
        "value": {"key": NO_WEBHOOK, "operator": "DoesNotExist"}}]);
    let out = env.kubectl(
        &["patch", "mutatingwebhookconfiguration", "podtailor", "--type", "json", "-p", &skip.to_string()],
        None,
    )?;
    ensure(out.status.success(), || format!("patch the webhook: {}", String::from_utf8_lossy(&out.stderr)))?;
    let result = inner.await;
    let restore = json!([
        {"op": "test", "path": "/webhooks/0/namespaceSelector/matchExpressions/1/key", "value": NO_WEBHOOK},
        {"op": "remove", "path": "/webhooks/0/namespaceSelector/matchExpressions/1"}
    ]);
    let out = env.kubectl(
        &["patch", "mutatingwebhookconfiguration", "podtailor", "--type", "json", "-p", &restore.to_string()],
        None,
    )?;
    ensure(out.status.success(), || format!("restore the webhook: {}", String::from_utf8_lossy(&out.stderr)))?;
    result
}

async fn policy_cases(env: &Env) -> Result<()> {
    // what each case's pod looks like to the policy, recorded by a webhook of the test's own
    let capture = kubelet::CaptureWebhook::start().await?;
    let out = env.kubectl(&["apply", "-f", "-"], Some(&capture.configuration(NO_WEBHOOK).to_string()))?;
    ensure(out.status.success(), || format!("the capture webhook: {}", String::from_utf8_lossy(&out.stderr)))?;
    let result = policy_cases_with(env, &capture).await;
    let _ = env.kubectl(&["delete", "mutatingwebhookconfiguration", kubelet::CAPTURE_WEBHOOK], None);
    result
}

async fn policy_cases_with(env: &Env, capture: &kubelet::CaptureWebhook) -> Result<()> {
    let mut cases = corpus_cases()?;
    cases.push(five_stacked()?);
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let template_file = env.webhook.lock().await.template.clone();
    let original = std::fs::read(&template_file).map_err(|e| e.to_string())?;
    let (mut accepted, mut refused, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for (i, case) in cases.iter().enumerate() {
        match policy_case(env, capture, case, i, work.path(), &template_file, &mut refused).await {
            Ok(Some(cost)) => accepted.push((case.name.clone(), cost)),
            Ok(None) => {}
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    std::fs::write(&template_file, original).map_err(|e| e.to_string())?;
    eprintln!("  policy mode: {} cases stored as through the webhook, {} refused:", accepted.len(), refused.len());
    for r in &refused {
        eprintln!("    refused {r}");
    }
    // the CEL cost, measured with the API server's evaluator on each case's pod
    if let Some((name, cost)) = accepted.iter().max_by_key(|(_, c)| c.max()) {
        eprintln!(
            "  CEL cost: the costliest expression of any case {} ({name}) of the {PER_CALL_LIMIT} an expression may cost",
            cost.max()
        );
    }
    if let Some((_, cost)) = accepted.iter().find(|(n, _)| n.starts_with("five-stacked")) {
        eprintln!(
            "  CEL cost, five stacked overrides on the example template: {} mutations costing {:?} (sum {}, costliest {}), validations {}",
            cost.mutations.len(),
            cost.mutations,
            cost.mutations.iter().sum::<i64>(),
            cost.mutations.iter().max().unwrap_or(&0),
            cost.validations
        );
    }
    let over: Vec<String> =
        accepted.iter().filter(|(_, c)| c.max() >= PER_CALL_LIMIT).map(|(n, c)| format!("{n}: {}", c.max())).collect();
    ensure(over.is_empty(), || format!("admitted although an expression costs over the limit: {over:?}"))?;
    let accepted: Vec<String> = accepted.into_iter().map(|(n, _)| n).collect();
    ensure(failures.is_empty(), || {
        format!("{} of {} cases failed in policy mode:\n{}", failures.len(), cases.len(), failures.join("\n"))
    })?;
    ensure(accepted.iter().any(|n| n.starts_with("five-stacked")), || "five stacked overrides refused".into())?;
    ensure(accepted.len() >= MIN_POLICY_CASES, || {
        format!("only {} cases accepted by the policy mode (at least {MIN_POLICY_CASES} were)", accepted.len())
    })
}

/// The policy mode in place of the webhook for one namespace, from the cluster: `podtailor
/// policy --cluster -n NS` compiles the seed's PodOverrides as listed from the API server; the
/// seed pod is stored as the seed scenario wants it, a pod naming an unknown override is
/// denied naming it, and `podtailor launch` runs a task to completion; the webhook is never
/// called.
async fn policy_seed(env: &Env) -> Result<()> {
    let ns = env.namespace("policy-seed").await?;
    env.example_overrides(&ns).await?;
    let out = env.kubectl(&["label", "namespace", &ns, &format!("{NO_WEBHOOK}=true")], None)?;
    ensure(out.status.success(), || format!("label {ns}: {}", String::from_utf8_lossy(&out.stderr)))?;
    let template = env.webhook.lock().await.template.to_string_lossy().into_owned();
    let name = "podtailor-seed";
    let out = env.podtailor(&["policy", "--template", &template, "--cluster", "-n", &ns, "--name", name])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure(out.status.success(), || format!("policy --cluster: {}", String::from_utf8_lossy(&out.stderr)))?;
    // the validating policy knows the namespace's two overrides, read from the cluster
    let mut known = String::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let o: Value = serde::Deserialize::deserialize(doc).map_err(|e| format!("policy's YAML: {e}"))?;
        if o["kind"] == "ValidatingAdmissionPolicy" {
            known = o["spec"]["validations"][0]["expression"].as_str().unwrap_or_default().to_owned();
        }
    }
    let names = format!("request.namespace == {ns:?} ? [\"resource-requirements\", \"secret-env\"]");
    ensure(known.contains(&names), || format!("policy --cluster -n {ns}: the overrides it knows: {known}"))?;
    let out = env.kubectl(&["apply", "-f", "-"], Some(&text))?;
    ensure(out.status.success(), || format!("apply the policy: {}", String::from_utf8_lossy(&out.stderr)))?;
    let result = skipping_webhook(env, policy_seed_in(env, &ns, name)).await;
    let _ = env.kubectl(&["delete", "-f", "-", "--wait=false"], Some(&text));
    result
}

async fn policy_seed_in(env: &Env, ns: &str, name: &str) -> Result<()> {
    let calls = env.mutate_calls().await?;
    let by_policy = format!("; policy={name}; ");
    let stored = env
        .create_when(ns, &example_pod(ns)?, |a| {
            a.as_ref()
                .is_ok_and(|p| p["metadata"]["annotations"][APPLIED].as_str().is_some_and(|m| m.contains(&by_policy)))
        })
        .await?;
    check_seed_pod(&stored).map_err(|e| format!("the seed pod through the policy: {e}"))?;
    let mut unknown = example_pod(ns)?;
    unknown["metadata"]["annotations"][OVERRIDE] = json!("resource-requirements,no-such-override");
    let denied = env.create_pod(ns, &unknown, true).await;
    ensure(denied.as_ref().is_err_and(|e| e.contains("\"no-such-override\" not found in namespace")), || {
        format!("a pod naming an unknown override: {denied:?}")
    })?;
    let pod = launch_detached(env, ns).await?;
    check_seed_pod(&pod).map_err(|e| format!("the pod launch created through the policy: {e}"))?;
    env.kubelet.serve_namespace(ns).await;
    let out = env.podtailor(&[
        "launch",
        "-n",
        ns,
        "--override",
        "resource-requirements,secret-env",
        "--image",
        "busybox:1.36",
        "--",
        "sh",
        "-c",
        "echo hello through the policy",
    ])?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure(out.status.code() == Some(0) && stdout.contains("hello through the policy"), || {
        format!("a task launched through the policy: exit {:?}: {stdout}\n{stderr}", out.status.code())
    })?;
    ensure(env.mutate_calls().await? == calls, || "the webhook was called for the policy's pods".into())
}

/// How many cases the policy mode accepted when the scenario was written: fewer is a regression.
const MIN_POLICY_CASES: usize = 46;

/// One case: `Ok(Some(cost))` stored as through the webhook, with its policies' CEL cost;
/// `Ok(None)` refused by `policy`, the reason on `refused`.
async fn policy_case(
    env: &Env,
    capture: &kubelet::CaptureWebhook,
    case: &Case,
    i: usize,
    work: &Path,
    template_file: &Path,
    refused: &mut Vec<String>,
) -> Result<Option<Cost>> {
    let admitted =
        corpus_case(env, case, work, template_file).await.map_err(|e| format!("through the webhook: {e}"))?;
    let (ns, dir) = (&admitted.ns, &admitted.dir);
    let name = format!("podtailor-proof-{i}");
    let out = env.podtailor(&[
        "policy",
        "--template",
        &dir.join("template.json").to_string_lossy(),
        "--overrides",
        &dir.join("overrides").to_string_lossy(),
        "--name",
        &name,
        "--namespace",
        ns,
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match out.status.code() {
        Some(0) => {}
        Some(1) if stderr.contains(": ") && !stderr.contains("panicked") => {
            refused.push(format!("{}: {stderr}", case.name));
            return Ok(None);
        }
        code => return Err(format!("policy exited {code:?}: {stderr}")),
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let o: Value = serde::Deserialize::deserialize(doc).map_err(|e| format!("policy's YAML: {e}"))?;
        objects.push(o);
    }
    ensure(objects.len() == 4, || format!("policy printed {} objects", objects.len()))?;
    // this case's namespace only (--namespace): the policies of other cases stay out of it
    let only = json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns]});
    for o in objects.iter().filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("AdmissionPolicy"))) {
        let selector = &o["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"];
        ensure(selector.as_array().is_some_and(|l| l.contains(&only)), || format!("--namespace {ns}: {selector}"))?;
    }
    let out = env.kubectl(&["label", "namespace", ns, &format!("{NO_WEBHOOK}=true")], None)?;
    ensure(out.status.success(), || format!("label {ns}: {}", String::from_utf8_lossy(&out.stderr)))?;
    // the pod as the policy will see it (defaulted, after the built-in plugins), as the capture
    // webhook is sent it once podtailor's skips the namespace (a bare pod is then invalid:
    // the dry run's answer does not matter)
    let seen = unmutated(env, capture, ns, &case_pod(case, ns)).await?;
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string();
    let out = env.kubectl(&["apply", "-f", "-"], Some(&list))?;
    ensure(out.status.success(), || format!("apply the policy: {}", String::from_utf8_lossy(&out.stderr)))?;
    let result = through_policy(env, case, &admitted, &name).await;
    let _ = env.kubectl(&["delete", "-f", "-", "--wait=false"], Some(&list));
    let stored = result?;
    let cost = policy_cost(&text, &seen, work, i)?;
    let marker = |p: &Value| p["metadata"]["annotations"][APPLIED].clone();
    ensure(marker(&cost.pod) == marker(&stored), || {
        format!("policycost's pod is not the API server's: applied {} / {}", marker(&cost.pod), marker(&stored))
    })?;
    Ok(Some(cost))
}

/// The case's pod, named for the policy's turn, in `ns`.
fn case_pod(case: &Case, ns: &str) -> Value {
    let mut pod = case.pod.clone();
    pod["metadata"]["namespace"] = json!(ns);
    if let Some(n) = pod["metadata"]["name"].as_str() {
        pod["metadata"]["name"] = json!(format!("{n}-policy"));
    }
    pod
}

/// `pod` as admission is handed it in `ns` with nothing mutating it: dry runs until the
/// capture webhook records it unmarked by podtailor's.
async fn unmutated(env: &Env, capture: &kubelet::CaptureWebhook, ns: &str, pod: &Value) -> Result<Value> {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let answer = env.create_pod(ns, pod, true).await;
        if let Some(p) = capture.take(ns)
            && p["metadata"]["annotations"][APPLIED].is_null()
        {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "within {PROPAGATION:?} no unmutated pod of {ns} reached the capture webhook; last: {answer:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The CEL cost of a case's policies on its pod (tests/envtest/policycost).
struct Cost {
    /// Each mutation's actual cost, in order.
    mutations: Vec<i64>,
    validations: i64,
    /// The pod after the mutations, as policycost's evaluator made it.
    pod: Value,
}

impl Cost {
    fn max(&self) -> i64 {
        self.mutations.iter().copied().max().unwrap_or(0).max(self.validations)
    }
}

/// The API server's limit on one CEL expression's cost (k8s.io/apiserver, PerCallLimit).
const PER_CALL_LIMIT: i64 = 1_000_000;

fn policy_cost(policy: &str, seen: &Value, work: &Path, i: usize) -> Result<Cost> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/envtest/bin/policycost");
    ensure(bin.is_file(), || {
        format!("no {}: `make envtest-bin` builds it from tests/envtest/policycost (needs Go)", bin.display())
    })?;
    let (policy_file, pod_file) = (work.join(format!("policy-{i}.yaml")), work.join(format!("seen-{i}.json")));
    std::fs::write(&policy_file, policy).map_err(|e| e.to_string())?;
    std::fs::write(&pod_file, seen.to_string()).map_err(|e| e.to_string())?;
    let out = Command::new(&bin).arg(&policy_file).arg(&pod_file).output().map_err(|e| format!("policycost: {e}"))?;
    ensure(out.status.success(), || format!("policycost: {}", String::from_utf8_lossy(&out.stderr).trim()))?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("policycost's answer: {e}"))?;
    ensure(report["perCallLimit"] == PER_CALL_LIMIT, || format!("policycost's limit: {}", report["perCallLimit"]))?;
    let mutations: Vec<i64> = report["mutations"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
    ensure(!mutations.is_empty(), || format!("policycost measured no mutation: {report}"))?;
    Ok(Cost { mutations, validations: report["validations"].as_i64().unwrap_or(0), pod: report["pod"].clone() })
}

/// Creates the case's pod through the policy; the stored pod, which must be the webhook's.
async fn through_policy(env: &Env, case: &Case, admitted: &Admitted, name: &str) -> Result<Value> {
    let ns = &admitted.ns;
    let pod = case_pod(case, ns);
    let by_policy = format!("; policy={name}; ");
    let marked = |a: &Result<Value>| {
        a.as_ref().is_ok_and(|p| p["metadata"]["annotations"][APPLIED].as_str().is_some_and(|m| m.contains(&by_policy)))
    };
    // dry runs until the policy serves the namespace and the webhook skips it
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let answer = env.create_pod(ns, &pod, true).await;
        if marked(&answer) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("within {PROPAGATION:?} the policy never served the pod; last: {answer:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = env.mutate_calls().await?;
    let stored = env.create_pod(ns, &pod, false).await.map_err(|e| format!("through the policy: {e}"))?;
    ensure(env.mutate_calls().await? == calls, || "the webhook was called for the policy's pod".into())?;
    let names = |p: &Value| {
        p["metadata"]["annotations"][APPLIED].as_str().and_then(|m| m.split(';').next()).unwrap_or_default().to_owned()
    };
    ensure(names(&stored) == names(&admitted.pod), || {
        format!("applied: webhook {:?}, policy {:?}", names(&admitted.pod), names(&stored))
    })?;
    let strip = |p: &Value| {
        let mut p = p.clone();
        if let Some(a) = p["metadata"]["annotations"].as_object_mut() {
            a.remove(APPLIED);
        }
        comparable(&p, Some(OVERRIDE))
    };
    let mut diffs = Vec::new();
    differences(&strip(&admitted.pod), &strip(&stored), "", &mut diffs);
    ensure(diffs.is_empty(), || diffs.join("; ").replace(" / direct ", " / policy "))?;
    Ok(stored)
}

async fn not_opted_in(env: &Env) -> Result<()> {
    let ns = env.namespace("plain").await?;
    env.example_overrides(&ns).await?;
    let mut pod = example_pod(&ns)?;
    pod["metadata"]["annotations"] = json!({"team": "data"});
    pod["spec"]["containers"][0]["image"] = json!("busybox:1.36");
    let before = env.mutate_calls().await?;
    let stored = env.create_pod(&ns, &pod, false).await?;
    // an opted-in pod after it: the counter moves for that one, so a counter that never moves
    // cannot pass this test
    env.create_pod(&ns, &example_pod(&ns)?, false).await?;
    let after = env.mutate_calls().await?;
    ensure(after - before == 1.0, || {
        format!("the webhook was called {} times for one opted-in pod and one not", after - before)
    })?;
    let base = container(&stored, "base")?;
    ensure(base["image"] == "busybox:1.36" && base.get("env").is_none(), || {
        format!("the plain pod was changed: {base}")
    })?;
    ensure(stored["spec"]["restartPolicy"] == "Always", || {
        format!("restartPolicy: {}", stored["spec"]["restartPolicy"])
    })?;
    ensure(stored["metadata"]["annotations"].get(APPLIED).is_none(), || {
        "the plain pod carries podtailor's marker".into()
    })
}

async fn missing_override(env: &Env) -> Result<()> {
    let ns = env.namespace("missing").await?;
    let mut pod = example_pod(&ns)?;
    pod["metadata"]["annotations"][OVERRIDE] = json!("no-such-override");
    let yaml = serde_yaml_ng::to_string(&pod).map_err(|e| e.to_string())?;
    let out = env.kubectl(&["create", "-f", "-"], Some(&yaml))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(!out.status.success(), || "kubectl created a pod naming a missing override".into())?;
    for part in ["denied the request", "no-such-override", &ns] {
        ensure(stderr.contains(part), || format!("kubectl's error lacks {part:?}: {stderr}"))?;
    }
    let out = env.podtailor(&["launch", "-n", &ns, "--override", "no-such-override", "--", "true"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(out.status.code() == Some(1) || out.status.code() == Some(2), || {
        format!("launch exit: {:?}", out.status.code())
    })?;
    for part in ["no-such-override", &ns] {
        ensure(stderr.contains(part), || format!("launch's error lacks {part:?}: {stderr}"))?;
    }
    let pods = env.pods(&ns).list(&Default::default()).await.map_err(|e| e.to_string())?;
    ensure(pods.items.is_empty(), || format!("{} pods were stored", pods.items.len()))
}

async fn invalid_overrides(env: &Env) -> Result<()> {
    let ns = env.namespace("invalid").await?;
    // the CRD's schema: resources.requests must be a map of quantities
    let err = env.create_override(&ns, "bad-schema", &json!({"resources": {"requests": "lots"}})).await;
    let msg = err.err().ok_or("the schema accepted a string for resources.requests")?;
    ensure(msg.contains("spec.resources.requests") && !msg.contains("validate.podtailor.dev"), || {
        format!("not the schema's refusal: {msg}")
    })?;
    // /validate: the schema takes it, podtailor does not (a volume secret without a target)
    let before = env.webhook.lock().await.metric_sum("podtailor_admission_requests_total{webhook=\"validate\"").await?;
    let err = env
        .create_override(&ns, "bad-secret", &json!({"secrets": [{"deployType": "volume", "secret": "creds"}]}))
        .await;
    let msg = err.err().ok_or("a volume secret without a deployTarget was accepted")?;
    ensure(msg.contains("validate.podtailor.dev") && msg.contains("bad-secret"), || {
        format!("not /validate's refusal: {msg}")
    })?;
    let after = env.webhook.lock().await.metric_sum("podtailor_admission_requests_total{webhook=\"validate\"").await?;
    ensure(after > before, || "the validate webhook was not called".into())?;
    // and a valid one is taken
    env.create_override(&ns, "good", &json!({"resources": {"limits": {"cpu": "1"}}})).await
}

async fn changed_then_deleted(env: &Env) -> Result<()> {
    let ns = env.namespace("change").await?;
    env.create_override(&ns, "cpu", &json!({"resources": {"limits": {"cpu": "1"}}})).await?;
    let mut pod = example_pod(&ns)?;
    pod["metadata"]["annotations"][OVERRIDE] = json!("cpu");
    let limit = |p: &Value| container(p, "base").map(|c| c["resources"]["limits"]["cpu"].clone()).unwrap_or_default();
    let first = env.create_when(&ns, &pod, |a| a.as_ref().is_ok_and(|p| limit(p) == "1")).await?;
    ensure(limit(&first) == "1", || format!("limit {}", limit(&first)))?;
    let patch = json!({"spec": {"resources": {"limits": {"cpu": "3"}}}});
    env.overrides(&ns)
        .patch("cpu", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("patch the override: {e}"))?;
    let started = Instant::now();
    let second = env.create_when(&ns, &pod, |a| a.as_ref().is_ok_and(|p| limit(p) == "3")).await?;
    ensure(limit(&second) == "3", || format!("limit after the change {}", limit(&second)))?;
    let changed_in = started.elapsed();
    env.overrides(&ns).delete("cpu", &DeleteParams::default()).await.map_err(|e| format!("delete: {e}"))?;
    let started = Instant::now();
    let deadline = started + PROPAGATION;
    loop {
        match env.create_pod(&ns, &pod, false).await {
            Err(e) if e.contains("cpu") && e.contains(&ns) => break,
            Err(e) => return Err(format!("after the delete, an unexpected error: {e}")),
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(_) => return Err(format!("{PROPAGATION:?} after the delete, the override still applies")),
        }
    }
    eprintln!("  change reached the webhook in {changed_in:?}, the delete in {:?}", started.elapsed());
    Ok(())
}

async fn namespace_templates(env: &Env) -> Result<()> {
    use k8s_openapi::api::core::v1::PodTemplate;
    let own = env.namespace("nstemplate").await?;
    let plain = env.namespace("plain").await?;
    let api =
        Api::<DynamicObject>::namespaced_with(env.cp.admin.clone(), &own, &ApiResource::erase::<PodTemplate>(&()));
    let object = json!({
        "apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "podtailor", "namespace": own},
        "template": {
            "metadata": {"labels": {"release": own}, "annotations": {"example.com/release": "{{namespace}}"}},
            "spec": {"serviceAccountName": WORKER_SA, "containers": [{"name": "base", "image": "own:1"}]},
        },
    });
    let object: DynamicObject = serde_json::from_value(object).map_err(|e| e.to_string())?;
    api.create(&PostParams::default(), &object).await.map_err(|e| format!("create the PodTemplate: {e}"))?;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "t-", "annotations": {OVERRIDE: ""}},
        "spec": {"containers": [{"name": "base", "command": ["true"]}]},
    });
    let image = |p: &Value| container(p, "base").map(|c| c["image"].clone()).unwrap_or_default();
    let first = env.create_when(&own, &pod, |a| a.as_ref().is_ok_and(|p| image(p) == "own:1")).await?;
    let annotations = &first["metadata"]["annotations"];
    ensure(annotations["example.com/release"] == json!(own), || format!("the placeholder, expanded: {annotations}"))?;
    ensure(first["metadata"]["labels"]["release"] == json!(own), || format!("labels: {}", first["metadata"]))?;
    let marker = annotations[APPLIED].as_str().unwrap_or_default();
    ensure(marker.contains(&format!("podtemplate={own}/podtailor;")), || format!("marker {marker}"))?;
    // a namespace without one: the cluster's template
    let other = env.create_pod(&plain, &pod, false).await?;
    ensure(image(&other) == "quay.io/astronomer/ap-airflow:2.10.5", || format!("image {}", image(&other)))?;
    let marker = other["metadata"]["annotations"][APPLIED].as_str().unwrap_or_default();
    ensure(!marker.contains("podtemplate="), || format!("marker {marker}"))?;
    // an edit reaches the next pod
    let patch = json!({"template": {"spec": {"containers": [{"name": "base", "image": "own:2"}]}}});
    api.patch("podtailor", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("patch the PodTemplate: {e}"))?;
    let second = env.create_when(&own, &pod, |a| a.as_ref().is_ok_and(|p| image(p) == "own:2")).await?;
    ensure(image(&second) == "own:2", || format!("image after the edit {}", image(&second)))
}

/// The `Ready` condition of a PodOverride as stored, with the object's generation and
/// resource version: (generation, resourceVersion, status.observedGeneration, condition).
async fn ready_of(env: &Env, ns: &str, name: &str) -> Result<(i64, String, Value, Value)> {
    let object = env.overrides(ns).get(name).await.map_err(|e| format!("get PodOverride {ns}/{name}: {e}"))?;
    let status = object.data.get("status").cloned().unwrap_or_default();
    let condition = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let generation = object.metadata.generation.unwrap_or_default();
    Ok((
        generation,
        object.metadata.resource_version.unwrap_or_default(),
        status["observedGeneration"].clone(),
        condition,
    ))
}

/// Waits until the Ready condition of `ns/name` is `expected` for its current generation:
/// the condition and how long it took.
async fn ready_becomes(env: &Env, ns: &str, name: &str, expected: &str) -> Result<(Value, Duration)> {
    let started = Instant::now();
    let deadline = started + PROPAGATION;
    loop {
        let (generation, _, observed, condition) = ready_of(env, ns, name).await?;
        if condition["status"] == expected && observed == generation && condition["observedGeneration"] == generation {
            return Ok((condition, started.elapsed()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{ns}/{name}: within {PROPAGATION:?} Ready never became {expected} for generation {generation}; last: observedGeneration {observed}, {condition}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lines of `kubectl get podoverrides` in `ns` (with `extra` arguments), by object name:
/// the columns of each, headers first under "NAME".
fn printed(env: &Env, ns: &str, extra: &[&str]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut args = vec!["get", "podoverrides", "-n", ns];
    args.extend_from_slice(extra);
    let out = env.kubectl(&args, None)?;
    ensure(out.status.success(), || format!("kubectl get podoverrides: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let columns: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
            Some((columns.first()?.clone(), columns))
        })
        .collect())
}

/// The column `header` of the object `name` in `kubectl get` lines.
fn column(lines: &BTreeMap<String, Vec<String>>, header: &str, name: &str) -> Option<String> {
    let at = lines.get("NAME")?.iter().position(|h| h == header)?;
    lines.get(name)?.get(at).cloned()
}

/// Runs `inner` with the validating webhook skipping objects labelled `label` (as if it was
/// not installed for them), then puts it back.
async fn without_validation<T>(env: &Env, label: &str, inner: impl Future<Output = Result<T>>) -> Result<T> {
    let set = |selector: Value| -> Result<()> {
        let patch = json!([{"op": "add", "path": "/webhooks/0/objectSelector", "value": selector}]).to_string();
        let out =
            env.kubectl(&["patch", "validatingwebhookconfiguration", "podtailor", "--type=json", "-p", &patch], None)?;
        ensure(out.status.success(), || {
            format!("patch the validating webhook: {}", String::from_utf8_lossy(&out.stderr))
        })
    };
    set(json!({"matchExpressions": [{"key": label, "operator": "DoesNotExist"}]}))?;
    let result = inner.await;
    set(json!({}))?;
    result
}

async fn status(env: &Env) -> Result<()> {
    let ns = env.namespace("status").await?;
    // a valid override: Ready, for its generation
    env.create_override(&ns, "good", &json!({"resources": {"limits": {"cpu": "1"}}})).await?;
    let (good, good_in) = ready_becomes(env, &ns, "good", "True").await?;
    ensure(good["reason"] == "Loaded", || format!("good: {good}"))?;

    // one the schema takes and podtailor refuses (a volume secret without a target), created
    // as if the validating webhook was not there: not Ready, with the reason
    const UNVALIDATED: &str = "podtailor.dev/envtest-unvalidated";
    let broken = json!({
        "apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
        "metadata": {"name": "broken", "namespace": ns, "labels": {UNVALIDATED: "true"}},
        "spec": {"secrets": [{"deployType": "volume", "secret": "creds"}]},
    });
    let broken: DynamicObject = serde_json::from_value(broken).map_err(|e| e.to_string())?;
    without_validation(env, UNVALIDATED, async {
        // the API server takes the new webhook configuration within moments
        let deadline = Instant::now() + PROPAGATION;
        loop {
            match env.overrides(&ns).create(&PostParams::default(), &broken).await {
                Ok(_) => return Ok(()),
                Err(e) if e.to_string().contains("validate.podtailor.dev") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(format!("create the broken PodOverride: {e}")),
            }
        }
    })
    .await?;
    let (refused, refused_in) = ready_becomes(env, &ns, "broken", "False").await?;
    let message = refused["message"].as_str().unwrap_or_default();
    ensure(refused["reason"] == "Invalid" && message.contains("spec.secrets[0].deployTarget"), || {
        format!("broken: {refused}")
    })?;
    // a pod naming it is denied with the same reason
    let mut pod = example_pod(&ns)?;
    pod["metadata"]["annotations"][OVERRIDE] = json!("broken");
    let denied = env.create_pod(&ns, &pod, true).await.err().unwrap_or_default();
    ensure(denied.contains("spec.secrets[0].deployTarget"), || format!("a pod naming broken: {denied}"))?;

    // kubectl get shows both, and -o wide the reason
    let lines = printed(env, &ns, &[])?;
    let shown = (column(&lines, "READY", "good"), column(&lines, "READY", "broken"));
    ensure(shown == (Some("True".into()), Some("False".into())), || format!("kubectl get podoverrides: {lines:?}"))?;
    let wide = printed(env, &ns, &["-o", "wide"])?;
    ensure(column(&wide, "REASON", "broken").as_deref() == Some("Invalid"), || format!("-o wide: {wide:?}"))?;

    // podtailor writes nothing more once the statuses are right, and the same status applied
    // again by the same manager (the other replica) changes nothing
    let (_, version, _, _) = ready_of(env, &ns, "good").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, settled, observed, condition) = ready_of(env, &ns, "good").await?;
    ensure(settled == version, || format!("good was written again: resourceVersion {version} then {settled}"))?;
    let again = json!({
        "apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
        "metadata": {"name": "good", "namespace": ns},
        "status": {"observedGeneration": observed, "conditions": [condition]},
    });
    let params = PatchParams::apply("podtailor").force();
    let applied = env
        .overrides(&ns)
        .patch_status("good", &params, &Patch::Apply(&again))
        .await
        .map_err(|e| format!("apply good's status as the other replica: {e}"))?;
    let after = applied.metadata.resource_version.unwrap_or_default();
    ensure(after == version, || format!("the same status applied again changed the object: {version} then {after}"))?;
    let object = env.overrides(&ns).get("good").await.map_err(|e| e.to_string())?;
    let managers: Vec<(String, String)> = object
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| (m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
        .collect();
    ensure(managers == [("podtailor".to_owned(), "Apply".to_owned())], || format!("status managers: {managers:?}"))?;

    // fixed (through the validating webhook, back in place): Ready flips, for the new generation
    let fix = json!({"spec": {"secrets": [{"deployType": "volume", "deployTarget": "/etc/creds", "secret": "creds"}]}});
    env.overrides(&ns)
        .patch("broken", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .map_err(|e| format!("fix the broken PodOverride: {e}"))?;
    let (fixed, fixed_in) = ready_becomes(env, &ns, "broken", "True").await?;
    ensure(fixed["observedGeneration"] == 2 && fixed["reason"] == "Loaded", || format!("fixed: {fixed}"))?;
    let (before, now) = (refused["lastTransitionTime"].as_str(), fixed["lastTransitionTime"].as_str());
    ensure(before.is_some() && now.is_some() && now >= before, || {
        format!("lastTransitionTime {before:?} then {now:?}")
    })?;
    let lines = printed(env, &ns, &[])?;
    ensure(column(&lines, "READY", "broken").as_deref() == Some("True"), || format!("after the fix: {lines:?}"))?;
    // and no write failed on the way (a conflict between managers, a missing permission)
    let log = env.webhook.lock().await.process.as_ref().map(|p| p.tail(100_000)).unwrap_or_default();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("writing a PodOverride status failed")).collect();
    ensure(failed.is_empty(), || format!("status writes failed: {failed:?}"))?;
    let written = log.lines().filter(|l| l.contains("PodOverride status written") && l.contains(&ns)).count();
    ensure(written == 3, || format!("{written} status writes for {ns}, expected 3 (good, broken, fixed)"))?;
    eprintln!(
        "  Ready=True {good_in:?} after the create, Ready=False (Invalid) {refused_in:?} after, True again {fixed_in:?} after the fix"
    );
    Ok(())
}

async fn reinvocation(env: &Env) -> Result<()> {
    let ns = env.namespace("reinvoke").await?;
    env.example_overrides(&ns).await?;
    // a later webhook (by name, after "podtailor") that adds a label and an env var to pods of
    // this namespace: the API server then calls podtailor again
    let later = kubelet::LaterWebhook::start().await?;
    let config = later.configuration(&ns);
    let yaml = serde_yaml_ng::to_string(&config).map_err(|e| e.to_string())?;
    let out = env.kubectl(&["apply", "-f", "-"], Some(&yaml))?;
    ensure(out.status.success(), || format!("apply the later webhook: {}", String::from_utf8_lossy(&out.stderr)))?;
    let result = async {
        let before = env.mutate_calls().await?;
        let stored = env
            .create_when(&ns, &example_pod(&ns)?, |a| {
                a.as_ref().is_ok_and(|p| p["metadata"]["labels"]["later"] == "yes")
            })
            .await?;
        let calls = env.mutate_calls().await? - before;
        check_seed_pod(&stored)?;
        let base = container(&stored, "base")?;
        let env_names: Vec<&str> =
            base["env"].as_array().into_iter().flatten().filter_map(|e| e["name"].as_str()).collect();
        let mut unique = env_names.clone();
        unique.sort_unstable();
        unique.dedup();
        ensure(unique.len() == env_names.len(), || format!("an env var twice: {env_names:?}"))?;
        ensure(env_names.contains(&"LATER"), || format!("the later webhook's env var is gone: {env_names:?}"))?;
        let volumes: Vec<&Value> = stored["spec"]["volumes"].as_array().into_iter().flatten().collect();
        let mut vnames: Vec<&str> = volumes.iter().filter_map(|v| v["name"].as_str()).collect();
        let n = vnames.len();
        vnames.sort_unstable();
        vnames.dedup();
        ensure(n == vnames.len(), || format!("a volume twice: {vnames:?}"))?;
        // the dry runs and the create: each called podtailor twice (the first pass and the
        // reinvocation), so the count is even and at least 2
        ensure(calls >= 2.0 && calls % 2.0 == 0.0, || format!("podtailor was called {calls} times"))?;
        ensure(later.calls() >= 1, || "the later webhook was never called".into())
    }
    .await;
    let _ = env.kubectl(&["delete", "mutatingwebhookconfiguration", kubelet::LATER_WEBHOOK], None);
    result
}

async fn dry_run(env: &Env) -> Result<()> {
    let ns = env.namespace("dryrun").await?;
    env.example_overrides(&ns).await?;
    env.create_when(&ns, &example_pod(&ns)?, |a| a.is_ok()).await?;
    let before = env.pods(&ns).list(&Default::default()).await.map_err(|e| e.to_string())?.items.len();
    let yaml = serde_yaml_ng::to_string(&example_pod(&ns)?).map_err(|e| e.to_string())?;
    let out = env.kubectl(&["create", "--dry-run=server", "-o", "yaml", "-f", "-"], Some(&yaml))?;
    ensure(out.status.success(), || {
        format!("kubectl create --dry-run=server: {}", String::from_utf8_lossy(&out.stderr))
    })?;
    let shown: Value = serde_yaml_ng::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    check_seed_pod(&shown)?;
    let after = env.pods(&ns).list(&Default::default()).await.map_err(|e| e.to_string())?.items.len();
    ensure(after == before, || format!("the dry run stored a pod ({before} before, {after} after)"))
}

async fn rbac(env: &Env) -> Result<()> {
    let who = "--as=system:serviceaccount:podtailor-system:podtailor";
    let can = |verb: &str, resource: &str| -> Result<bool> {
        let (resource, subresource) = match resource.split_once('/') {
            Some((resource, sub)) => (resource, format!("--subresource={sub}")),
            None => (resource, String::new()),
        };
        let mut args = vec!["auth", "can-i", verb, resource, "--all-namespaces", who];
        if !subresource.is_empty() {
            args.push(&subresource);
        }
        let out = env.kubectl(&args, None)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    let mut wrong = Vec::new();
    for (verb, resource, expected) in [
        ("list", "podoverrides.podtailor.dev", true),
        ("watch", "podoverrides.podtailor.dev", true),
        ("get", "podoverrides.podtailor.dev", true),
        ("create", "podoverrides.podtailor.dev", false),
        ("patch", "podoverrides.podtailor.dev", false),
        ("update", "podoverrides.podtailor.dev", false),
        ("patch", "podoverrides.podtailor.dev/status", true),
        ("update", "podoverrides.podtailor.dev/status", false),
        ("get", "secrets", false),
        ("list", "secrets", false),
        ("get", "pods", false),
        ("list", "pods", false),
        ("create", "pods", false),
        ("list", "podtemplates", true),
        ("watch", "podtemplates", true),
        ("get", "podtemplates", true),
        ("create", "podtemplates", false),
        ("update", "podtemplates", false),
    ] {
        if can(verb, resource)? != expected {
            wrong.push(format!("{verb} {resource}: expected {expected}"));
        }
    }
    // and the server's own credentials really are that account's: it reads no Secret
    let webhook = env.webhook.lock().await;
    let out = kubectl(&env.bins, &webhook.kubeconfig, &["get", "secrets", "-A"], None)?;
    ensure(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("forbidden"), || {
        format!("podtailor's kubeconfig read secrets: {}", String::from_utf8_lossy(&out.stderr))
    })?;
    let out = kubectl(&env.bins, &webhook.kubeconfig, &["get", "podoverrides", "-A"], None)?;
    ensure(out.status.success(), || {
        format!("podtailor's kubeconfig cannot list podoverrides: {}", String::from_utf8_lossy(&out.stderr))
    })?;
    ensure(wrong.is_empty(), || wrong.join("; "))
}

async fn rotation(env: &Env) -> Result<()> {
    let ns = env.namespace("rotate").await?;
    env.example_overrides(&ns).await?;
    env.create_when(&ns, &example_pod(&ns)?, |a| a.is_ok()).await?;
    const RELOADS: &str = "podtailor_reloads_total";
    let before = env.webhook.lock().await.metric_sum(RELOADS).await?;
    let mut failures = Vec::new();
    let mut created = 0;
    for i in 0..60 {
        if i % 20 == 10 {
            env.webhook.lock().await.tls.rotate()?;
        }
        match env.create_pod(&ns, &example_pod(&ns)?, false).await {
            Ok(p) => {
                check_seed_pod(&p)?;
                created += 1;
            }
            Err(e) => failures.push(e),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let after = env.webhook.lock().await.metric_sum(RELOADS).await?;
    ensure(failures.is_empty(), || format!("{} of 60 creations failed: {:?}", failures.len(), failures.first()))?;
    ensure(after > before, || "the certificate was never reloaded".into())?;
    eprintln!("  {created} pods created across 3 certificates");
    Ok(())
}

async fn webhook_down(env: &Env) -> Result<()> {
    let ns = env.namespace("down").await?;
    env.example_overrides(&ns).await?;
    env.create_when(&ns, &example_pod(&ns)?, |a| a.is_ok()).await?;
    let mut webhook = env.webhook.lock().await;
    webhook.stop();
    let refused = env.create_pod(&ns, &example_pod(&ns)?, false).await;
    let mut plain = example_pod(&ns)?;
    plain["metadata"]["annotations"] = json!({});
    plain["spec"]["containers"][0]["image"] = json!("busybox:1.36");
    let plain = env.create_pod(&ns, &plain, false).await;
    let restarted = webhook.start().await;
    drop(webhook);
    restarted?;
    let msg = refused.err().ok_or("an opted-in pod was created with the webhook down")?;
    ensure(msg.contains("failed calling webhook") && msg.contains("mutate.podtailor.dev"), || {
        format!("the refusal: {msg}")
    })?;
    plain.map_err(|e| format!("a pod that did not opt in was refused with the webhook down: {e}"))?;
    // back up: opted-in pods are created again
    env.create_when(&ns, &example_pod(&ns)?, |a| a.is_ok()).await.map(|_| ())
}

async fn launcher(env: &Env) -> Result<()> {
    let ns = env.namespace("launch").await?;
    env.example_overrides(&ns).await?;
    env.create_when(&ns, &example_pod(&ns)?, |a| a.is_ok()).await?;
    env.kubelet.serve_namespace(&ns).await;
    let launch = |args: &[&str]| {
        let mut all =
            vec!["launch", "-n", &ns, "--override", "resource-requirements,secret-env", "--image", "busybox:1.36"];
        all.extend_from_slice(args);
        env.podtailor(&all)
    };
    // success: the task's output, exit 0, the pod deleted
    let out = launch(&["--", "sh", "-c", "echo hello from the task"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure(out.status.code() == Some(0), || format!("a succeeding task: exit {:?}: {stderr}", out.status.code()))?;
    ensure(stdout.contains("hello from the task"), || {
        format!("the task's log is not in launch's output: {stdout}\n{stderr}")
    })?;
    ensure(stderr.contains("Running") && stderr.contains("Succeeded"), || format!("the phases: {stderr}"))?;
    let left = env.pods(&ns).list(&Default::default()).await.map_err(|e| e.to_string())?;
    let launched: Vec<&DynamicObject> = left
        .items
        .iter()
        .filter(|p| p.metadata.labels.as_ref().is_some_and(|l| l.contains_key("podtailor.dev/launch-id")))
        .collect();
    let running: Vec<&&DynamicObject> = launched.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    ensure(running.is_empty(), || {
        format!("the succeeded pod was not deleted: {:?}", running.iter().map(|p| &p.metadata.name).collect::<Vec<_>>())
    })?;
    // failure: the container's exit code is launch's own, the pod kept
    let out = launch(&["--", "sh", "-c", "exit 3"])?;
    ensure(out.status.code() == Some(3), || {
        format!("a task exiting 3: launch exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr))
    })?;
    // timeout: a task that runs too long
    let out = launch(&["--timeout", "2s", "--", "sh", "-c", "sleep 60"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(out.status.code() != Some(0) && stderr.contains("2s"), || {
        format!("--timeout 2s: exit {:?}: {stderr}", out.status.code())
    })?;
    // one pod a task: each launch made exactly one pod
    let pods = env.pods(&ns).list(&Default::default()).await.map_err(|e| e.to_string())?;
    let mut by_launch: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods.items {
        if let Some(id) = p.metadata.labels.as_ref().and_then(|l| l.get("podtailor.dev/launch-id")) {
            *by_launch.entry(id.clone()).or_default() += 1;
        }
    }
    ensure(by_launch.values().all(|n| *n == 1), || format!("pods per launch: {by_launch:?}"))
}

/// The API server makes the pod but its answer is lost (504 from a front): the launcher
/// retries, finds the pod its first try made (by its launch id), and makes no second one.
async fn launcher_lost_answer(env: &Env) -> Result<()> {
    let ns = env.namespace("lost").await?;
    env.example_overrides(&ns).await?;
    env.create_when(&ns, &example_pod(&ns)?, |a| a.is_ok()).await?;
    let front = kubelet::LossyFront::start(env.cp.admin.clone()).await?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kubeconfig = dir.path().join("front.kubeconfig");
    std::fs::write(&kubeconfig, front.kubeconfig(&ns)).map_err(|e| e.to_string())?;
    let out = Command::new(env!("CARGO_BIN_EXE_podtailor"))
        .args(["launch", "--detach", "--override", "resource-requirements,secret-env", "--", "true"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .map_err(|e| format!("podtailor launch: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure(out.status.success(), || {
        format!("launch --detach through the front: exit {:?}: {stderr}", out.status.code())
    })?;
    ensure(front.lost.load(std::sync::atomic::Ordering::SeqCst) == 1, || {
        "the front lost no answer: nothing was retried".into()
    })?;
    ensure(stderr.contains("504") && stderr.contains("created by an earlier try whose answer was lost"), || {
        format!("launch did not say it retried and found its pod: {stderr}")
    })?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let pods = env.pods(&ns).list(&Default::default()).await.map_err(|e| e.to_string())?;
    let launched: Vec<String> = pods
        .items
        .iter()
        .filter(|p| p.metadata.labels.as_ref().is_some_and(|l| l.contains_key("podtailor.dev/launch-id")))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    ensure(launched == [name.clone()], || format!("launch printed {name:?}; the launched pods are {launched:?}"))
}

/// The chart (charts/podtailor) installed with `helm install` into an API server of its own
/// (the shared one holds the kustomize install): the objects in, the server started as that
/// install's ServiceAccount, an opted-in pod tailored through it; then `helm uninstall`
/// removes the webhooks (an opted-in pod is admitted untouched) and the CRD.
async fn helm_chart(env: &Env) -> Result<()> {
    let helm = helm_path()?;
    let dir = tempfile::Builder::new().prefix("podtailor-helm-").tempdir().map_err(|e| format!("a directory: {e}"))?;
    let cp = ControlPlane::start(&env.bins, dir.path(), &[]).await?;
    let mut webhook = None;
    let result = helm_chart_on(env, &cp, &helm, &mut webhook).await;
    let logs = webhook.as_ref().map(Webhook::log_tail).unwrap_or_default();
    if let Some(mut w) = webhook {
        w.stop();
    }
    let tail = cp.apiserver_tail(5);
    cp.stop();
    result.map_err(|e| format!("{e}\n{logs}{tail}"))
}

async fn helm_chart_on(env: &Env, cp: &ControlPlane, helm: &Path, webhook: &mut Option<Webhook>) -> Result<()> {
    let kubectl = |args: &[&str], stdin: Option<&str>| kubectl_ok(&env.bins, &cp.kubeconfig, args, stdin);
    *webhook = Some(Webhook::install_helm(&env.bins, cp, helm, &["--set", "replicas=3"]).await?);
    let status = helm_ok(helm, cp, &["status", "podtailor", "-n", "podtailor-system", "-o", "json"])?;
    let status: Value = serde_json::from_str(&status).map_err(|e| format!("helm status: {e}"))?;
    ensure(status["info"]["status"] == "deployed", || format!("helm status: {}", status["info"]))?;
    // the chart's objects, as the API server holds them: its values and the caBundle given
    let replicas = kubectl(
        &["-n", "podtailor-system", "get", "deployment", "podtailor", "-o", "jsonpath={.spec.replicas}"],
        None,
    )?;
    ensure(replicas == "3", || format!("replicas: {replicas}"))?;
    let labels = kubectl(&["get", "namespace", "podtailor-system", "-o", "json"], None)?;
    let labels: Value = serde_json::from_str(&labels).map_err(|e| e.to_string())?;
    ensure(labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted", || {
        format!("the namespace's labels: {}", labels["metadata"]["labels"])
    })?;
    let bundle = kubectl(
        &["get", "mutatingwebhookconfiguration", "podtailor", "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}"],
        None,
    )?;
    let ca = webhook.as_ref().map(|w| super::controlplane::b64(&w.tls.ca.pem)).unwrap_or_default();
    ensure(!ca.is_empty() && bundle == ca, || "the caBundle is not the one given as certificates.caBundle".to_owned())?;

    let ns = "airflow";
    kubectl(&["create", "namespace", ns], None)?;
    for sa in ["default", WORKER_SA] {
        kubectl(&["-n", ns, "create", "serviceaccount", sa], None)?;
    }
    let overrides = repo().join("examples/overrides");
    kubectl(&["-n", ns, "apply", "-f", &overrides.to_string_lossy()], None)?;
    let pod = serde_yaml_ng::to_string(&example_pod(ns)?).map_err(|e| e.to_string())?;
    // once the PodOverrides reached the server (a watch event): dry runs until then
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let out = kubectl_out(env, cp, &["create", "--dry-run=server", "-f", "-", "-o", "json"], Some(&pod))?;
        if out.status.success() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the webhook never admitted the pod: {}", String::from_utf8_lossy(&out.stderr)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created: Value =
        serde_json::from_str(&kubectl(&["create", "-f", "-", "-o", "json"], Some(&pod))?).map_err(|e| e.to_string())?;
    check_seed_pod(&created).map_err(|e| format!("the pod created through the chart's install: {e}"))?;

    // no --wait: without a namespace controller the namespace stays Terminating
    helm_ok(helm, cp, &["uninstall", "podtailor", "-n", "podtailor-system"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for kind in ["mutatingwebhookconfiguration", "validatingwebhookconfiguration", "crd"] {
        loop {
            let left = kubectl(&["get", kind, "-o", "name"], None)?;
            if left.trim().is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("after helm uninstall: {left}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // no webhook: the same opted-in pod is stored as submitted, even with podtailor running
    let mut bare = example_pod(ns)?;
    bare["metadata"]["name"] = json!("after-uninstall");
    bare["spec"]["containers"][0]["image"] = json!("busybox");
    let yaml = serde_yaml_ng::to_string(&bare).map_err(|e| e.to_string())?;
    let stored: Value = serde_json::from_str(&kubectl(&["create", "-f", "-", "-o", "json"], Some(&yaml))?)
        .map_err(|e| e.to_string())?;
    ensure(stored["metadata"]["annotations"].get(APPLIED).is_none(), || {
        format!("tailored after uninstall: {}", stored["metadata"]["annotations"])
    })?;
    ensure(container(&stored, "base")?["image"] == "busybox", || "the template's image after uninstall".to_owned())
}

fn kubectl_out(env: &Env, cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    kubectl(&env.bins, &cp.kubeconfig, args, stdin)
}
