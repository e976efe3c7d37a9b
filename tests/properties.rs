//! Properties over generated pods: a pod is denied exactly when it must be (it names an
//! override whose container it lacks), a second pass over the result finds nothing to do, the
//! patch turns the pod into the desired pod, and nothing of the pod that no layer names is
//! lost — unknown fields included — nor touched by any patch operation.

mod common;

use podtailor::merge::Want;
use podtailor::mutate::{Decision, decide};
use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::{Map, Value, json};

const NS: &str = "airflow";

fn config() -> podtailor::store::Config {
    let template = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "placeholder", "labels": {"tier": "airflow"}},
        "spec": {"restartPolicy": "Never", "serviceAccountName": "worker", "securityContext": {"runAsUser": 50000},
                 "containers": [{"name": "base", "image": "airflow:2", "args": [], "env": [{"name": "EXECUTOR", "value": "Local"}],
                                 "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
                                 "volumeMounts": [{"name": "logs", "mountPath": "/logs"}]}],
                 "volumes": [{"name": "logs", "emptyDir": {}}], "nodeSelector": {}, "tolerations": []}});
    common::config(
        template,
        &[
            (
                None,
                "resources",
                json!({"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}),
            ),
            (
                None,
                "secret-env",
                json!({"secrets": [{"deployType": "env", "deployTarget": "MY_SECRET", "secret": "s", "key": "k"},
                                                {"deployType": "env", "secret": "app-env"}]}),
            ),
            (
                None,
                "secret-volume",
                json!({"secrets": [{"deployType": "volume", "deployTarget": "/etc/creds", "secret": "creds"}]}),
            ),
            (
                None,
                "pool",
                json!({"pod": {"metadata": {"labels": {"pool": "highmem"}},
                                      "spec": {"nodeSelector": {"pool": "highmem"}, "tolerations": [{"key": "pool", "operator": "Exists"}],
                                               "hostNetwork": false, "terminationGracePeriodSeconds": 0}}}),
            ),
            (
                None,
                "sidecar",
                json!({"pod": {"spec": {"containers": [{"name": "side", "image": "side:1", "env": [{"name": "A", "value": "x"}]}]}}}),
            ),
            (None, "tool-target", json!({"container": "tool", "resources": {"limits": {"cpu": "2"}}})),
        ],
    )
}

const OVERRIDES: [&str; 6] = ["resources", "secret-env", "secret-volume", "pool", "sidecar", "tool-target"];

fn env_var() -> impl Strategy<Value = Value> {
    (prop::sample::select(vec!["A", "B", "MY_SECRET", "EXECUTOR", "Z"]), "[a-z]{0,4}")
        .prop_map(|(name, value)| json!({"name": name, "value": value}))
}

fn unknown() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::from),
        prop::collection::vec(any::<i32>(), 0..3).prop_map(|v| json!({"list": v, "nested": {"k": "v"}}))
    ]
}

fn container(name: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(vec!["img:1", "img", "img:latest"])),
        prop::collection::vec(env_var(), 0..4),
        prop::collection::vec("[a-z]{1,4}", 0..3),
        prop::option::of(unknown()),
        prop::option::of(prop::sample::select(vec!["250m", "2", "4"])),
        prop::sample::subsequence(vec!["/data", "/logs", "/etc/creds"], 0..=2),
    )
        .prop_map(move |(image, env, args, future, cpu, mounts)| {
            let mut c = json!({"name": name});
            if let Some(image) = image {
                c["image"] = json!(image);
            }
            let mut seen = Vec::new();
            let env: Vec<Value> = env
                .into_iter()
                .filter(|e| {
                    let n = e["name"].clone();
                    let fresh = !seen.contains(&n);
                    seen.push(n);
                    fresh
                })
                .collect();
            if !env.is_empty() {
                c["env"] = Value::Array(env);
            }
            if !args.is_empty() {
                c["args"] = json!(args);
            }
            if let Some(f) = future {
                c["xFutureContainerField"] = f;
            }
            if let Some(cpu) = cpu {
                c["resources"] = json!({"limits": {"cpu": cpu}});
            }
            if !mounts.is_empty() {
                c["volumeMounts"] =
                    Value::Array(mounts.iter().map(|m| json!({"name": "data", "mountPath": m})).collect());
            }
            c
        })
}

prop_compose! {
    fn pod()(
        names in subsequence(vec!["base", "side", "tool", "other"], 1..=3),
        c0 in container("base"), c1 in container("side"), c2 in container("tool"), c3 in container("other"),
        labels in prop::collection::btree_map(prop::sample::select(vec!["app", "team", "example.com/owner", "tier"]), "[a-z]{1,5}", 0..3),
        overrides in subsequence(OVERRIDES.to_vec(), 0..=4),
        restart in prop::option::of(prop::sample::select(vec!["Always", "OnFailure", "Never"])),
        future in prop::option::of(unknown()),
        api_defaulted in any::<bool>(),
        host_network in prop::option::of(any::<bool>()),
    ) -> Value {
        let by_name: Map<String, Value> = [("base", c0), ("side", c1), ("tool", c2), ("other", c3)]
            .into_iter().map(|(n, c)| (n.to_owned(), c)).collect();
        let containers: Vec<Value> = names.iter().filter_map(|n| by_name.get(*n).cloned()).collect();
        let mut spec = json!({"containers": containers, "volumes": [{"name": "data", "emptyDir": {}}]});
        if let Some(r) = restart { spec["restartPolicy"] = json!(r); }
        if let Some(f) = future { spec["xFutureSpecField"] = f; }
        if let Some(h) = host_network { spec["hostNetwork"] = json!(h); }
        if api_defaulted {
            spec["dnsPolicy"] = json!("ClusterFirst");
            spec["terminationGracePeriodSeconds"] = json!(30);
            spec["serviceAccountName"] = json!("default");
            spec["serviceAccount"] = json!("default");
            spec["enableServiceLinks"] = json!(true);
            spec["tolerations"] = json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]);
            if let Some(cs) = spec["containers"].as_array_mut() {
                for c in cs {
                    c["terminationMessagePath"] = json!("/dev/termination-log");
                    c["terminationMessagePolicy"] = json!("File");
                }
            }
        }
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "task-", "namespace": NS, "labels": labels,
                            "annotations": {"podtailor.dev/override": overrides.join(","), "example.com/note": "kept"}},
               "spec": spec})
    }
}

/// The desired pod and the patch (checked equal to the webhook's patch-only answer).
struct Outcome {
    desired: Value,
    patch: json_patch::Patch,
}

fn mutate(config: &podtailor::store::Config, pod: &Value) -> Result<Outcome, TestCaseError> {
    match (
        decide(config, NS, pod, Want::Desired),
        decide(config, NS, pod, Want::Patch),
        decide(config, NS, pod, Want::Json),
    ) {
        (
            Ok(Decision::Mutated { outcome, .. }),
            Ok(Decision::Mutated { outcome: only, .. }),
            Ok(Decision::Mutated { outcome: json, .. }),
        ) => {
            prop_assert_eq!(&only.patch, &outcome.patch);
            let expected = serde_json::to_vec(&outcome.patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(json.patch_json.as_deref(), Some(expected.as_slice()), "the patch as JSON text differs");
            let desired = outcome.desired.ok_or_else(|| TestCaseError::fail("no desired pod"))?;
            Ok(Outcome { desired, patch: outcome.patch })
        }
        (Err(d), ..) => match expected_denial(pod) {
            // the only pods that must be denied: a case, but not one these properties are about
            Some(expected) if d.message.contains(expected) => Err(TestCaseError::reject(d.message)),
            Some(expected) => Err(TestCaseError::fail(format!("denied with {:?}, expected {expected:?}", d.message))),
            None => Err(TestCaseError::fail(format!("a pod that must be allowed was denied: {}", d.message))),
        },
        _ => Err(TestCaseError::fail("not opted in, or the three answers differ")),
    }
}

/// Why `pod` must be denied, if it must: it names `tool-target` and has no container `tool`.
/// Every other generated pod must be allowed.
fn expected_denial(pod: &Value) -> Option<&'static str> {
    let names = pod["metadata"]["annotations"]["podtailor.dev/override"].as_str().unwrap_or_default();
    let has_tool = pod["spec"]["containers"].as_array().into_iter().flatten().any(|c| c["name"] == "tool");
    (names.split(',').any(|n| n == "tool-target") && !has_tool)
        .then_some("PodOverride \"tool-target\" in namespace \"airflow\" cannot apply: container \"tool\" not found")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_pod_is_denied_exactly_when_it_must_be(pod in pod()) {
        match (decide(&config(), NS, &pod, Want::Json), expected_denial(&pod)) {
            (Ok(Decision::Mutated { .. }), None) => {}
            (Err(d), Some(expected)) => prop_assert!(d.message.contains(expected), "{}", d.message),
            (Err(d), None) => prop_assert!(false, "a pod that must be allowed was denied: {}", d.message),
            (Ok(d), expected) => prop_assert!(false, "expected a denial ({expected:?}), got {d:?}"),
        }
    }

    #[test]
    fn rendering_a_rendered_pod_gives_an_empty_patch(pod in pod()) {
        let config = config();
        let first = mutate(&config, &pod)?;
        let second = mutate(&config, &first.desired)?;
        prop_assert_eq!(second.patch.0, vec![], "second pass over {:#}", first.desired);
        prop_assert_eq!(second.desired, first.desired);
    }

    #[test]
    fn the_patch_gives_the_desired_pod(pod in pod()) {
        let outcome = mutate(&config(), &pod)?;
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &outcome.patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(patched, outcome.desired);
    }

    #[test]
    fn nothing_no_layer_names_is_lost_or_touched(pod in pod()) {
        let outcome = mutate(&config(), &pod)?;
        let desired = &outcome.desired;
        prop_assert_eq!(desired["spec"].get("xFutureSpecField"), pod["spec"].get("xFutureSpecField"));
        prop_assert_eq!(&desired["metadata"]["annotations"]["example.com/note"], "kept");
        for (key, value) in pod["metadata"]["labels"].as_object().into_iter().flatten() {
            if key != "tier" && key != "pool" {
                prop_assert_eq!(&desired["metadata"]["labels"][key], value);
            }
        }
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let out = desired["spec"]["containers"].as_array().and_then(|cs| cs.iter().find(|d| d["name"] == c["name"]));
            prop_assert!(out.is_some(), "container {} lost", c["name"]);
            let out = out.cloned().unwrap_or_default();
            prop_assert_eq!(out.get("xFutureContainerField"), c.get("xFutureContainerField"));
            prop_assert_eq!(out.get("args"), c.get("args"));
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                if m["mountPath"] != "/etc/creds" && m["mountPath"] != "/logs" {
                    prop_assert!(out["volumeMounts"].as_array().is_some_and(|ms| ms.contains(m)), "mount {m} lost");
                }
            }
            for e in c["env"].as_array().into_iter().flatten() {
                if e["name"] != "MY_SECRET" && e["name"] != "EXECUTOR" && e["name"] != "A" {
                    prop_assert!(out["env"].as_array().is_some_and(|es| es.contains(e)), "env {e} lost");
                }
            }
        }
        let patch = serde_json::to_value(&outcome.patch).unwrap_or_default();
        for op in patch.as_array().into_iter().flatten() {
            let path = op["path"].as_str().unwrap_or_default();
            prop_assert!(!path.contains("xFuture"), "an operation touches an unknown field: {op}");
            prop_assert!(!path.contains("example.com~1note"), "an operation touches the pod's annotation: {op}");
        }
    }
}
