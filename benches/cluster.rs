//! `make bench-cluster`: podtailor in front of a real API server (the control plane of the
//! envtest tier, tests/envtest/).
//!
//! 1. Pod creations at a fixed rate through the API server in three modes, in alternating
//!    rounds of one run: podtailor's webhook called (pods that opt in), no webhook configured
//!    at all, and the policy mode (`podtailor policy --cluster -n bench`'s objects, the
//!    webhook configuration deleted); each mode's latency p50/p99 and the creations per second
//!    reached; the medians over rounds.
//! 2. `serve --cluster` with 5 000 PodOverrides across 500 namespaces: the time from its start
//!    to /readyz (its first full list) and its resident memory then.
//!
//! Usage: cargo bench --bench cluster -- [--rate N] [--pods N] [--rounds N] [--overrides N]

// the harness's own modules; the bench uses part of them
#[allow(dead_code)]
#[path = "../tests/envtest/controlplane.rs"]
mod controlplane;
#[allow(dead_code)]
#[path = "../tests/envtest/install.rs"]
mod install;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

use controlplane::{Binaries, ControlPlane, Result};
use install::{Webhook, kubectl_ok, podoverride_resource, repo};

struct Options {
    rate: u32,
    pods: u32,
    rounds: u32,
    overrides: u32,
}

fn options() -> Result<Options> {
    let mut o = Options { rate: 20, pods: 200, rounds: 3, overrides: 5000 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<u32> {
            args.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} takes a number"))
        };
        match a.as_str() {
            "--rate" => o.rate = value("--rate")?,
            "--pods" => o.pods = value("--pods")?,
            "--rounds" => o.rounds = value("--rounds")?,
            "--overrides" => o.overrides = value("--overrides")?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}: --rate N --pods N --rounds N --overrides N")),
        }
    }
    Ok(o)
}

fn main() -> std::process::ExitCode {
    let result = options().and_then(|o| {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(run(o))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-cluster: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn namespace(cp: &ControlPlane, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).map_err(|e| e.to_string())?;
    Api::<Namespace>::all(cp.admin.clone()).create(&PostParams::default(), &ns).await.map_err(|e| e.to_string())?;
    for sa in ["default", "infrared-photon-7780-worker"] {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": sa}})).map_err(|e| e.to_string())?;
        Api::<ServiceAccount>::namespaced(cp.admin.clone(), name)
            .create(&PostParams::default(), &sa)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn pod(ns: &str, opted_in: bool) -> Result<Pod> {
    let mut annotations = json!({});
    if opted_in {
        annotations["podtailor.dev/override"] = json!("resource-requirements,secret-env");
    }
    serde_json::from_value(json!({
        "metadata": {"generateName": "bench-", "namespace": ns, "annotations": annotations,
                     "labels": {"dag_id": "bench", "task_id": "t", "try_number": "1"}},
        "spec": {"serviceAccountName": "infrared-photon-7780-worker", "restartPolicy": "Never",
                 "containers": [{"name": "base", "image": "quay.io/astronomer/ap-airflow:2.10.5", "args": ["airflow", "version"]}]},
    }))
    .map_err(|e| e.to_string())
}

/// Creates `n` pods at `rate` per second: (latencies, creations per second reached).
async fn creations(cp: &ControlPlane, ns: &str, opted_in: bool, n: u32, rate: u32) -> Result<(Vec<Duration>, f64)> {
    let api: Api<Pod> = Api::namespaced(cp.admin.clone(), ns);
    let body = pod(ns, opted_in)?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        ticker.tick().await;
        let (api, body) = (api.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &body).await.map(|_| t.elapsed()).map_err(|e| e.to_string())
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.push(t.await.map_err(|e| e.to_string())??);
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((latencies, rate))
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn run(o: Options) -> Result<()> {
    let bins = Binaries::find()?;
    let dir = tempfile::Builder::new().prefix("podtailor-bench-cluster-").tempdir().map_err(|e| e.to_string())?;
    let cp = ControlPlane::start(&bins, dir.path(), &[]).await?;
    let mut webhook = Webhook::install(&bins, &cp).await?;
    let result = measure(&o, &bins, &cp, &mut webhook).await;
    webhook.stop();
    cp.stop();
    result
}

/// Creates podtailor's MutatingWebhookConfiguration again from `saved` (`kubectl get -o json`
/// of it), without the fields the API server set.
fn restore_webhook(bins: &Binaries, cp: &ControlPlane, saved: &str) -> Result<()> {
    let mut config: Value = serde_json::from_str(saved).map_err(|e| e.to_string())?;
    if let Some(m) = config["metadata"].as_object_mut() {
        m.retain(|k, _| k == "name" || k == "labels");
    }
    kubectl_ok(bins, &cp.kubeconfig, &["create", "-f", "-"], Some(&config.to_string())).map(|_| ())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Webhook,
    None,
    Policy,
}

/// The policy mode's objects for the bench namespace: `podtailor policy --cluster -n bench`
/// on the webhook's own template.
fn policy_objects(cp: &ControlPlane, template: &std::path::Path) -> Result<String> {
    let template = template.to_string_lossy();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podtailor"))
        .args(["policy", "--template", &template, "--cluster", "-n", "bench", "--name", POLICY])
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .map_err(|e| format!("podtailor policy: {e}"))?;
    if !out.status.success() {
        return Err(format!("podtailor policy: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

const POLICY: &str = "podtailor-bench";

/// Waits (dry runs, at most 10 s) until the policy serves the bench namespace, or no longer.
async fn served_by_policy(cp: &ControlPlane, served: bool) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(cp.admin.clone(), "bench");
    let body = pod("bench", true)?;
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let marker = format!("; policy={POLICY}; ");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = api.create(&dry_run, &body).await;
        let by_policy = answer.as_ref().is_ok_and(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("podtailor.dev/applied"))
                .is_some_and(|m| m.contains(&marker))
        });
        if by_policy == served {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "within 10 s the policy was not {}; last: {answer:?}",
                if served { "serving" } else { "gone" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bench pod with `env` more variables on its container and `containers` containers in all.
fn grown(env: usize, containers: usize) -> Result<Value> {
    let mut body = serde_json::to_value(pod("bench", true)?).map_err(|e| e.to_string())?;
    let vars: Vec<Value> = (0..env).map(|i| json!({"name": format!("VAR_{i}"), "value": "x"})).collect();
    body["spec"]["containers"][0]["env"] = json!(vars);
    for c in 1..containers {
        let mut more = body["spec"]["containers"][0].clone();
        more["name"] = json!(format!("side-{c}"));
        if let Some(list) = body["spec"]["containers"].as_array_mut() {
            list.push(more);
        }
    }
    Ok(body)
}

/// policycost's costliest expression for `body` as the API server admits it unmutated;
/// `i64::MAX` when one is over the limit (policycost stops there).
async fn cost_of(cp: &ControlPlane, policy_file: &std::path::Path, body: &Value, dir: &std::path::Path) -> Result<i64> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(cp.admin.clone(), "bench", &kube::api::ApiResource::erase::<Pod>(&()));
    let object: DynamicObject = serde_json::from_value(body.clone()).map_err(|e| e.to_string())?;
    let seen =
        api.create(&PostParams { dry_run: true, ..PostParams::default() }, &object).await.map_err(|e| e.to_string())?;
    let pod_file = dir.join("seen.json");
    std::fs::write(&pod_file, serde_json::to_string(&seen).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let bin = repo().join("target/envtest/bin/policycost");
    let out = std::process::Command::new(&bin)
        .arg(policy_file)
        .arg(&pod_file)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("actual cost limit exceeded") {
        return Ok(i64::MAX);
    }
    if !out.status.success() {
        return Err(format!("policycost: {}", stderr.trim()));
    }
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let max = report["mutations"].as_array().into_iter().flatten().filter_map(Value::as_i64).max().unwrap_or(0);
    Ok(max.max(report["validations"].as_i64().unwrap_or(0)))
}

/// The policy's costliest CEL expression (policycost, the API server's evaluator) for pods of
/// growing size, the largest env a container may have before the API server's limit of
/// 1 000 000 an expression (found by bisection), and the API server's answer on both sides.
async fn policy_costs(bins: &Binaries, cp: &ControlPlane, policy: &str) -> Result<()> {
    const LIMIT: i64 = 1_000_000;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, policy).map_err(|e| e.to_string())?;
    println!();
    println!("policy mode, CEL cost of the costliest expression (of the {LIMIT} the API server allows one):");
    println!("| env vars a container | containers | cost | of the limit |");
    println!("|---|---|---|---|");
    for (env, containers) in [(0, 1), (10, 1), (100, 1), (1000, 1), (0, 5), (10, 5), (100, 5)] {
        let cost = cost_of(cp, &policy_file, &grown(env, containers)?, dir.path()).await?;
        println!("| {env} | {containers} | {cost} | {:.1}% |", cost as f64 * 100.0 / LIMIT as f64);
    }
    // the largest env on one container under the limit
    let (mut low, mut high) = (0usize, 1usize);
    while cost_of(cp, &policy_file, &grown(high, 1)?, dir.path()).await? < LIMIT {
        low = high;
        high *= 2;
        if high > 1 << 16 {
            println!("no limit met up to {high} env vars");
            return Ok(());
        }
    }
    while high - low > 1 {
        let mid = (low + high) / 2;
        if cost_of(cp, &policy_file, &grown(mid, 1)?, dir.path()).await? < LIMIT {
            low = mid;
        } else {
            high = mid;
        }
    }
    // the API server's answer on each side, through the policy
    kubectl_ok(bins, &cp.kubeconfig, &["apply", "-f", "-"], Some(policy))?;
    served_by_policy(cp, true).await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(cp.admin.clone(), "bench", &kube::api::ApiResource::erase::<Pod>(&()));
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let mut answers = Vec::new();
    for n in [low, high] {
        let object: DynamicObject = serde_json::from_value(grown(n, 1)?).map_err(|e| e.to_string())?;
        answers.push(match api.create(&dry_run, &object).await {
            Ok(_) => "admitted".to_owned(),
            Err(e) if e.to_string().contains("cost") => "refused: cost limit exceeded".to_owned(),
            Err(e) => format!("refused: {e}"),
        });
    }
    kubectl_ok(bins, &cp.kubeconfig, &["delete", "-f", "-"], Some(policy))?;
    served_by_policy(cp, false).await?;
    println!(
        "the limit is met at {high} env vars on one container: {low} cost under it (API server: {}), {high} over it (API server: {})",
        answers[0], answers[1]
    );
    Ok(())
}

/// One mode's figures, a value a round.
struct Row {
    mode: &'static str,
    p50: Vec<f64>,
    p99: Vec<f64>,
    rate: Vec<f64>,
}

impl Row {
    fn new(mode: &'static str) -> Row {
        Row { mode, p50: Vec::new(), p99: Vec::new(), rate: Vec::new() }
    }
}

async fn measure(o: &Options, bins: &Binaries, cp: &ControlPlane, webhook: &mut Webhook) -> Result<()> {
    namespace(cp, "bench").await?;
    let overrides: Api<DynamicObject> = Api::namespaced_with(cp.admin.clone(), "bench", &podoverride_resource());
    for name in ["resource-requirements", "secret-env"] {
        let text = std::fs::read_to_string(repo().join(format!("examples/overrides/{name}.yaml")))
            .map_err(|e| e.to_string())?;
        let mut object: Value = serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?;
        object["metadata"]["namespace"] = json!("bench");
        let object: DynamicObject = serde_json::from_value(object).map_err(|e| e.to_string())?;
        overrides.create(&PostParams::default(), &object).await.map_err(|e| e.to_string())?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let webhooks =
        kubectl_ok(bins, &cp.kubeconfig, &["get", "mutatingwebhookconfiguration", "podtailor", "-o", "json"], None)?;
    let policy = policy_objects(cp, &webhook.template)?;
    let mut rows = [Row::new("podtailor"), Row::new("no webhook"), Row::new("policy")];
    // a warm-up round of each, not reported
    creations(cp, "bench", true, o.rate, o.rate).await?;
    for round in 0..o.rounds {
        for (i, mode) in [Mode::Webhook, Mode::None, Mode::Policy].into_iter().enumerate() {
            if mode != Mode::Webhook {
                kubectl_ok(bins, &cp.kubeconfig, &["delete", "mutatingwebhookconfiguration", "podtailor"], None)?;
            }
            if mode == Mode::Policy {
                kubectl_ok(bins, &cp.kubeconfig, &["apply", "-f", "-"], Some(&policy))?;
                served_by_policy(cp, true).await?;
            }
            let (lat, rate) = creations(cp, "bench", mode != Mode::None, o.pods, o.rate).await?;
            if mode == Mode::Policy {
                kubectl_ok(bins, &cp.kubeconfig, &["delete", "-f", "-"], Some(&policy))?;
                served_by_policy(cp, false).await?;
            }
            if mode != Mode::Webhook {
                restore_webhook(bins, cp, &webhooks)?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            eprintln!(
                "round {}: {:<10} p50 {:.1} ms  p99 {:.1} ms  {:.1} creations/s",
                round + 1,
                rows[i].mode,
                quantile(&lat, 0.5),
                quantile(&lat, 0.99),
                rate
            );
            rows[i].p50.push(quantile(&lat, 0.5));
            rows[i].p99.push(quantile(&lat, 0.99));
            rows[i].rate.push(rate);
        }
    }
    println!(
        "pod creations through the API server, {} pods a round at {}/s, medians of {} rounds:",
        o.pods, o.rate, o.rounds
    );
    println!("| mode | p50 | p99 | creations/s |");
    println!("|---|---|---|---|");
    for Row { mode, p50, p99, rate } in rows {
        println!("| {mode} | {:.1} ms | {:.1} ms | {:.1} |", median(p50), median(p99), median(rate));
    }

    // 2. the policy's CEL cost as the pod grows, and where the API server's limit is met
    kubectl_ok(bins, &cp.kubeconfig, &["delete", "mutatingwebhookconfiguration", "podtailor"], None)?;
    let costs = policy_costs(bins, cp, &policy).await;
    restore_webhook(bins, cp, &webhooks)?;
    costs?;

    // 3. many PodOverrides: a fresh server's time to ready and its memory
    let namespaces = (o.overrides / 10).max(1);
    let started = Instant::now();
    for n in 0..namespaces {
        let ns = format!("tenant-{n:04}");
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).map_err(|e| e.to_string())?;
        Api::<Namespace>::all(cp.admin.clone())
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| e.to_string())?;
        let api: Api<DynamicObject> = Api::namespaced_with(cp.admin.clone(), &ns, &podoverride_resource());
        let mut set = tokio::task::JoinSet::new();
        for i in 0..(o.overrides / namespaces) {
            let object = json!({"apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
                "metadata": {"name": format!("task-{i}"), "namespace": ns},
                "spec": {"resources": {"requests": {"cpu": format!("{}m", 100 + i), "memory": "512Mi"}},
                         "secrets": [{"deployType": "env", "deployTarget": "TOKEN", "secret": format!("s-{i}"), "key": "token"}],
                         "pod": {"spec": {"nodeSelector": {"pool": format!("pool-{}", i % 3)}}}}});
            let object: DynamicObject = serde_json::from_value(object).map_err(|e| e.to_string())?;
            let api = api.clone();
            set.spawn(async move {
                api.create(&PostParams::default(), &object).await.map(|_| ()).map_err(|e| e.to_string())
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
    }
    eprintln!(
        "{} PodOverrides in {namespaces} namespaces created in {:.1} s",
        o.overrides,
        started.elapsed().as_secs_f64()
    );
    webhook.stop();
    let started = Instant::now();
    webhook.start().await?;
    let ready = started.elapsed();
    let (_, metrics) = webhook.admin("/metrics").await?;
    let loaded = metrics
        .lines()
        .find_map(|l| l.strip_prefix("podtailor_overrides_loaded "))
        .unwrap_or("(not reported)")
        .to_owned();
    let rss = webhook.rss_kib().ok_or("the server's resident memory could not be read")?;
    println!();
    println!("serve --cluster with {} PodOverrides in {namespaces} namespaces:", o.overrides);
    println!("| time to ready | resident memory | overrides loaded |");
    println!("|---|---|---|");
    println!("| {:.2} s | {:.1} MiB | {} |", ready.as_secs_f64(), rss as f64 / 1024.0, loaded.trim());
    Ok(())
}
