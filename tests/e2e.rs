//! The end-to-end suite on a real cluster: the API server calling the webhook, pods scheduled
//! and run, secrets resolved by the kubelet.
//!
//! Every test is `#[ignore]`d: `make e2e` (scripts/e2e.sh, a kind cluster `podtailor-e2e`) or
//! `make e2e-local` (scripts/e2e-local.sh, the cluster as processes on this machine) installs
//! podtailor through `kubectl apply -k certs` and runs them with `PODTAILOR_E2E=1`, the
//! kubeconfig context in `PODTAILOR_E2E_CONTEXT` (default: kind's). Run any other way they
//! fail at once, saying so: a test of this suite never passes without a cluster.
//!
//! Each test works in its own namespace (generated name, label `podtailor.dev/e2e=true`),
//! deleted at the end; scripts/e2e.sh also deletes every namespace with that label before and
//! after the run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

/// The kind cluster's context, unless `PODTAILOR_E2E_CONTEXT` names another.
const KIND_CONTEXT: &str = "kind-podtailor-e2e";
const SYSTEM: &str = "podtailor-system";
const E2E_LABEL: &str = "podtailor.dev/e2e";
/// The image the tasks run (the template's Airflow image is far too large for a test).
const TASK_IMAGE: &str = "busybox:1.36";
const SECRET_VALUE: &str = "e2e-secret-value-7780";

fn context() -> String {
    std::env::var("PODTAILOR_E2E_CONTEXT").unwrap_or_else(|_| KIND_CONTEXT.to_owned())
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_podtailor")
}

/// The client for the e2e cluster, or a failure that says how to run the suite.
async fn client() -> Client {
    if std::env::var_os("PODTAILOR_E2E").is_none() {
        panic!(
            "the e2e suite needs a cluster: run it with `make e2e` (kind) or `make e2e-local` (this machine); \
             both set PODTAILOR_E2E=1"
        );
    }
    let context = context();
    let kubeconfig = Kubeconfig::read().unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    let options = KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap_or_else(|e| panic!("kubeconfig context {context}: {e}"));
    Client::try_from(config).unwrap_or_else(|e| panic!("client: {e}"))
}

/// A namespace for one test, with what the example template refers to: its service account,
/// its secrets (the env secret carries `MY_SECRET`), its ConfigMap and the example
/// PodOverrides.
struct Scene {
    client: Client,
    ns: String,
}

impl Scene {
    async fn new(test: &str) -> Scene {
        let client = client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"generateName": format!("e2e-{test}-"), "labels": {E2E_LABEL: "true"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let ns = namespaces.create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("namespace: {e}"));
        let ns = ns.metadata.name.unwrap_or_else(|| panic!("the namespace has no name"));
        let scene = Scene { client, ns };
        scene.wait_for_default_account().await;
        scene.furnish().await;
        scene
    }

    /// A pod can be created once the namespace's `default` ServiceAccount exists (the
    /// controller makes it just after the namespace).
    async fn wait_for_default_account(&self) {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.ns);
        let deadline = Instant::now() + Duration::from_secs(60);
        while accounts.get_opt("default").await.ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "no default ServiceAccount in {} after 60 s", self.ns);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn furnish(&self) {
        let pp = PostParams::default();
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.ns);
        let account = serde_json::from_value(json!({"metadata": {"name": "infrared-photon-7780-worker"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        accounts.create(&pp, &account).await.unwrap_or_else(|e| panic!("service account: {e}"));
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        for (name, key, value) in [
            ("infrared-photon-7780-env", "MY_SECRET", SECRET_VALUE),
            ("infrared-photon-7780-fernet-key", "fernet-key", "not-a-real-key"),
            ("infrared-photon-7780-airflow-metadata", "connection", "sqlite://"),
        ] {
            let secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {key: value}}))
                    .unwrap_or_else(|e| panic!("{e}"));
            secrets.create(&pp, &secret).await.unwrap_or_else(|e| panic!("secret {name}: {e}"));
        }
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        let config = serde_json::from_value(json!({
            "metadata": {"name": "infrared-photon-7780-airflow-config"},
            "data": {"airflow.cfg": "[core]\nexecutor = LocalExecutor\n"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        maps.create(&pp, &config).await.unwrap_or_else(|e| panic!("configmap: {e}"));
        for file in ["resource-requirements.yaml", "secret-env.yaml"] {
            let path = common::examples().join("overrides").join(file);
            self.apply_override(&path).await.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    fn overrides(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &podtailor::store::cluster::resource())
    }

    /// Creates the PodOverride of `path` in this namespace.
    async fn apply_override(&self, path: &Path) -> Result<DynamicObject, kube::Error> {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        let mut doc: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        doc["metadata"]["namespace"] = json!(self.ns);
        let object: DynamicObject = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
        self.overrides().create(&PostParams::default(), &object).await
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// `podtailor launch -n NS ARGS...` against the cluster.
    fn launch(&self, args: &[&str]) -> Output {
        std::process::Command::new(bin())
            .args(["launch", "--context", &context(), "-n", &self.ns])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin()))
    }

    async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if let Err(e) = namespaces.delete(&self.ns, &DeleteParams::background()).await {
            eprintln!("cleanup of namespace {}: {e} (scripts/e2e.sh deletes it by label)", self.ns);
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A bare pod that opts in with `overrides`, as the launcher writes it.
fn bare_pod(overrides: Option<&str>, command: &[&str]) -> Pod {
    let mut metadata = json!({"generateName": "task-", "labels": {"task": "e2e"}});
    if let Some(o) = overrides {
        metadata["annotations"] = json!({"podtailor.dev/override": o});
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"containers": [{"name": "base", "image": TASK_IMAGE, "command": command}]}
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn base_container(pod: &Pod) -> &k8s_openapi::api::core::v1::Container {
    let spec = pod.spec.as_ref().unwrap_or_else(|| panic!("a pod without spec"));
    spec.containers.iter().find(|c| c.name == "base").unwrap_or_else(|| panic!("no container base"))
}

fn quantity(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
) -> String {
    map.and_then(|m| m.get(key)).map(|q| q.0.clone()).unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e or make e2e-local"]
async fn seed_worker_gets_the_template_the_resources_and_the_secret() {
    let scene = Scene::new("seed").await;
    let out = scene.launch(&[
        "--override",
        "resource-requirements,secret-env",
        "--image",
        TASK_IMAGE,
        "--name",
        "seed",
        "--keep",
        "--timeout",
        "5m",
        "--",
        "sh",
        "-c",
        "echo \"secret=$MY_SECRET\"",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(&format!("secret={SECRET_VALUE}")), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let pods = scene.pods().list(&ListParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pods.items.len(), 1, "one pod, kept");
    let pod = &pods.items[0];
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [("tier", "airflow"), ("component", "worker"), ("release", "infrared-photon-7780")] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.get("podtailor.dev/applied").is_some_and(|a| a.contains("resource-requirements,secret-env")));
    let spec = pod.spec.clone().unwrap_or_default();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.service_account_name.as_deref(), Some("infrared-photon-7780-worker"));
    assert_eq!(spec.termination_grace_period_seconds, Some(600));
    let security = spec.security_context.clone().unwrap_or_default();
    assert_eq!((security.run_as_user, security.fs_group), (Some(50000), Some(50000)));
    let volumes: Vec<String> = spec.volumes.clone().unwrap_or_default().into_iter().map(|v| v.name).collect();
    assert!(volumes.contains(&"logs".to_owned()) && volumes.contains(&"config".to_owned()), "{volumes:?}");
    let base = base_container(pod);
    assert_eq!(base.image.as_deref(), Some(TASK_IMAGE));
    let resources = base.resources.clone().unwrap_or_default();
    // the API server stores quantities in their canonical form: the override's 1024Mi is 1Gi
    for kind in ["cpu", "memory"] {
        let want = if kind == "cpu" { "500m" } else { "1Gi" };
        assert_eq!(quantity(resources.requests.as_ref(), kind), want, "requests.{kind}");
        assert_eq!(quantity(resources.limits.as_ref(), kind), want, "limits.{kind}");
    }
    let env = base.env.clone().unwrap_or_default();
    let mine: Vec<_> = env.iter().filter(|e| e.name == "MY_SECRET").collect();
    assert_eq!(mine.len(), 1, "MY_SECRET once");
    let reference = mine[0].value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref());
    assert_eq!(reference.map(|r| (r.name.as_str(), r.key.as_str())), Some(("infrared-photon-7780-env", "MY_SECRET")));
    let mounts: Vec<String> =
        base.volume_mounts.clone().unwrap_or_default().into_iter().map(|m| m.mount_path).collect();
    assert!(mounts.contains(&"/usr/local/airflow/logs".to_owned()), "{mounts:?}");
    scene.finish().await;
}

/// A task that fails: the kubelet's exit code is the launcher's, its output is shown, and the
/// failed pod is kept for a look.
#[tokio::test]
#[ignore = "needs a cluster: make e2e or make e2e-local"]
async fn a_failing_tasks_exit_code_is_the_launchers() {
    let scene = Scene::new("failing").await;
    let out = scene.launch(&[
        "--override",
        "resource-requirements",
        "--image",
        TASK_IMAGE,
        "--name",
        "failing",
        "--timeout",
        "5m",
        "--",
        "sh",
        "-c",
        "echo about to fail; exit 7",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("about to fail"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let pods = scene.pods().list(&ListParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pods.items.len(), 1, "the failed pod is kept");
    // the container's end, as the kubelet reported it (the pod's phase follows a moment later)
    let status = pods.items[0].status.clone().unwrap_or_default();
    let ends: Vec<i32> = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
        .collect();
    assert_eq!(ends, [7], "the container's exit code");
    scene.finish().await;
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e or make e2e-local"]
async fn a_pod_without_the_annotation_is_stored_as_submitted() {
    let scene = Scene::new("untouched").await;
    let submitted = bare_pod(None, &["true"]);
    let stored = scene.pods().create(&PostParams::default(), &submitted).await.unwrap_or_else(|e| panic!("{e}"));
    // what the API server itself fills in is there; nothing of podtailor's is
    assert_eq!(stored.metadata.labels, submitted.metadata.labels);
    assert!(stored.metadata.annotations.clone().unwrap_or_default().keys().all(|k| !k.starts_with("podtailor.dev/")));
    let spec = stored.spec.clone().unwrap_or_default();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"), "the API default, not the template's Never");
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert!(spec.security_context.unwrap_or_default().run_as_user.is_none());
    let volumes: Vec<String> = spec.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
    assert!(volumes.iter().all(|v| v.starts_with("kube-api-access-")), "{volumes:?}");
    let base = base_container(&stored);
    let wanted = base_container(&submitted);
    assert_eq!((&base.image, &base.command, &base.env), (&wanted.image, &wanted.command, &wanted.env));
    assert!(base.resources.as_ref().is_none_or(|r| r.limits.is_none() && r.requests.is_none()));
    scene.finish().await;
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e or make e2e-local"]
async fn a_missing_override_is_denied_with_its_name() {
    let scene = Scene::new("missing").await;
    let out = scene.launch(&["--override", "no-such-override", "--image", TASK_IMAGE, "--", "true"]);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let want = format!("PodOverride \"no-such-override\" not found in namespace \"{}\"", scene.ns);
    assert!(stderr.contains(&want), "stderr:\n{stderr}");
    assert!(stderr.contains("denied the request"), "the API server's words are shown:\n{stderr}");
    let pods = scene.pods().list(&ListParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(pods.items.is_empty(), "nothing was created");
    scene.finish().await;
}

/// A pod that goes through podtailor more than once gains nothing the second time: a second
/// webhook configuration makes the API server call podtailor again within the same admission
/// (as a reinvocation does), and a pod already tailored is submitted again.
#[tokio::test]
#[ignore = "needs a cluster: make e2e or make e2e-local"]
async fn passing_twice_adds_nothing_twice() {
    let scene = Scene::new("twice").await;
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(scene.client.clone());
    let installed = hooks.get("podtailor").await.unwrap_or_else(|e| panic!("{e}"));
    let mut again = serde_json::to_value(&installed).unwrap_or_else(|e| panic!("{e}"));
    again["metadata"] = json!({"name": "podtailor-e2e-again"});
    again["webhooks"][0]["name"] = json!("again.podtailor.dev");
    // only this test's namespace
    again["webhooks"][0]["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": scene.ns}});
    let again: MutatingWebhookConfiguration = serde_json::from_value(again).unwrap_or_else(|e| panic!("{e}"));
    hooks.create(&PostParams::default(), &again).await.unwrap_or_else(|e| panic!("{e}"));
    // the API server picks up a new webhook configuration within a moment
    tokio::time::sleep(Duration::from_secs(3)).await;

    let created = scene
        .pods()
        .create(&PostParams::default(), &bare_pod(Some("resource-requirements,secret-env"), &["true"]))
        .await;
    let _ = hooks.delete("podtailor-e2e-again", &DeleteParams::default()).await;
    let created = created.unwrap_or_else(|e| panic!("{e}"));
    let once = |pod: &Pod| {
        let base = base_container(pod);
        let env = base.env.clone().unwrap_or_default();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "an env var twice: {names:?}");
        let volumes: Vec<String> =
            pod.spec.clone().unwrap_or_default().volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        let mut unique_volumes = volumes.clone();
        unique_volumes.sort_unstable();
        unique_volumes.dedup();
        assert_eq!(volumes.len(), unique_volumes.len(), "a volume twice: {volumes:?}");
        assert!(names.contains(&"MY_SECRET"));
    };
    once(&created);

    // the tailored pod, submitted again under another name: stored as it is
    let mut resubmitted = created.clone();
    resubmitted.metadata = kube::api::ObjectMeta {
        generate_name: Some("again-".into()),
        labels: created.metadata.labels.clone(),
        annotations: created.metadata.annotations.clone(),
        ..Default::default()
    };
    resubmitted.status = None;
    if let Some(spec) = resubmitted.spec.as_mut() {
        spec.node_name = None;
    }
    let stored = scene.pods().create(&PostParams::default(), &resubmitted).await.unwrap_or_else(|e| panic!("{e}"));
    once(&stored);
    assert_eq!(base_container(&stored).env, base_container(&created).env);
    assert_eq!(base_container(&stored).resources, base_container(&created).resources);
    scene.finish().await;
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e or make e2e-local"]
async fn a_bad_podoverride_is_rejected_by_the_validating_webhook() {
    let scene = Scene::new("validate").await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("bad.yaml");
    // the CRD's schema takes it; only the webhook knows 1BAD is not an env var name
    let bad = "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: bad-target}\nspec:\n  secrets:\n  - {deployType: env, deployTarget: 1BAD, secret: s, key: k}\n";
    std::fs::write(&path, bad).unwrap_or_else(|e| panic!("{e}"));
    let err = scene.apply_override(&path).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("validate.podtailor.dev"), "{err}");
    assert!(err.contains("spec.secrets[0].deployTarget"), "{err}");
    scene.finish().await;
}

/// `kubectl rollout restart` of the webhook during 100 pod creations (server-side dry runs,
/// which go through admission like any creation): none is lost.
#[tokio::test]
#[ignore = "needs a cluster: make e2e or make e2e-local"]
async fn a_rolling_restart_loses_no_pod_creation() {
    let scene = Scene::new("rollout").await;
    let deployments: Api<Deployment> = Api::namespaced(scene.client.clone(), SYSTEM);
    let before = deployments.get("podtailor").await.unwrap_or_else(|e| panic!("{e}"));
    let generation = before.metadata.generation.unwrap_or_default();
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": format!("e2e-{}", std::process::id())
    }}}}});
    deployments
        .patch("podtailor", &PatchParams::default(), &Patch::Merge(&restart))
        .await
        .unwrap_or_else(|e| panic!("restart: {e}"));
    let dry = PostParams { dry_run: true, ..Default::default() };
    let mut failures = Vec::new();
    for i in 0..100 {
        match scene.pods().create(&dry, &bare_pod(Some("resource-requirements"), &["true"])).await {
            Ok(pod) => {
                let applied = pod.metadata.annotations.unwrap_or_default().contains_key("podtailor.dev/applied");
                if !applied {
                    failures.push(format!("#{i}: admitted without podtailor"));
                }
            }
            Err(e) => failures.push(format!("#{i}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let rolled = wait_for_rollout(&deployments, generation).await;
    assert!(failures.is_empty(), "{} of 100 creations failed:\n{}", failures.len(), failures.join("\n"));
    assert!(rolled, "the rollout did not complete");
    scene.finish().await;
}

async fn wait_for_rollout(deployments: &Api<Deployment>, after: i64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if let Ok(d) = deployments.get("podtailor").await {
            let (spec, status) = (d.spec, d.status.unwrap_or_default());
            let want = spec.replicas.unwrap_or(1);
            if status.observed_generation.unwrap_or_default() > after
                && status.updated_replicas == Some(want)
                && status.available_replicas == Some(want)
                && status.replicas == Some(want)
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    false
}

/// A new serving certificate (same CA) written into the TLS Secret: the replicas reload it
/// from the updated volume, and creations keep succeeding meanwhile.
#[tokio::test]
#[ignore = "needs a cluster: make e2e or make e2e-local"]
async fn certificate_rotation_keeps_creations_succeeding() {
    let scene = Scene::new("rotate").await;
    let fresh = new_serving_certificate();
    let secrets: Api<Secret> = Api::namespaced(scene.client.clone(), SYSTEM);
    let data = |name: &str| ByteString(std::fs::read(fresh.path().join(name)).unwrap_or_else(|e| panic!("{e}")));
    let patch = Secret {
        data: Some(BTreeMap::from([("tls.crt".to_owned(), data("tls.crt")), ("tls.key".to_owned(), data("tls.key"))])),
        ..Default::default()
    };
    let replicas = webhook_pods(&scene.client).await;
    let reloads_before = certificate_reloads(&scene.client, &replicas).await;
    secrets
        .patch("podtailor-tls", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("secret: {e}"));
    let dry = PostParams { dry_run: true, ..Default::default() };
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Err(e) = scene.pods().create(&dry, &bare_pod(Some("secret-env"), &["true"])).await {
            failures.push(e.to_string());
        }
        let reloads = certificate_reloads(&scene.client, &replicas).await;
        if reloads.iter().zip(&reloads_before).all(|(now, before)| now > before) {
            break;
        }
        assert!(Instant::now() < deadline, "not every replica reloaded its certificate in 180 s: {reloads:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(failures.is_empty(), "{} of {attempts} creations failed:\n{}", failures.len(), failures.join("\n"));
    scene.finish().await;
}

/// A serving certificate signed by the installed CA (certs/ca.crt and ca.key, from
/// `make certs`), made by scripts/certs.sh in a temporary directory.
fn new_serving_certificate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let certs = common::repo().join("certs");
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(certs.join(f), dir.path().join(f)).unwrap_or_else(|e| panic!("certs/{f}: {e}"));
    }
    let script: PathBuf = common::repo().join("scripts/certs.sh");
    let status = std::process::Command::new(script)
        .arg("--out")
        .arg(dir.path())
        .status()
        .unwrap_or_else(|e| panic!("scripts/certs.sh: {e}"));
    assert!(status.success(), "scripts/certs.sh failed");
    dir
}

async fn webhook_pods(client: &Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let listed = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=podtailor"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = listed.items.into_iter().filter_map(|p| p.metadata.name).collect();
    assert!(!names.is_empty(), "no podtailor pods");
    names
}

/// Each replica's count of successful certificate reloads, read from /metrics through the
/// API server's pod proxy.
async fn certificate_reloads(client: &Client, replicas: &[String]) -> Vec<u64> {
    let mut counts = Vec::new();
    for pod in replicas {
        let request = http::Request::get(format!("/api/v1/namespaces/{SYSTEM}/pods/{pod}:8081/proxy/metrics"))
            .body(Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let text = client.request_text(request).await.unwrap_or_else(|e| panic!("metrics of {pod}: {e}"));
        let line = "podtailor_reloads_total{source=\"certificate\",result=\"success\"} ";
        let count =
            text.lines().find_map(|l| l.strip_prefix(line)).and_then(|n| n.trim().parse::<f64>().ok()).unwrap_or(0.0);
        counts.push(count as u64);
    }
    counts
}
