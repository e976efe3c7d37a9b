//! Every rule of DESIGN.md, as a table: a template, a pod, overrides, and what the desired pod
//! must hold (JSON pointers) or must not hold. Each case also checks that the patch turns the
//! pod into the desired pod and that a second pass over the result finds nothing to do.

mod common;

use podtailor::merge::Want as Get;
use podtailor::mutate::{Decision, decide};
use rstest::rstest;
use serde_json::{Value, json};

const NS: &str = "airflow";

fn template() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "placeholder-name", "generateName": "tpl-", "namespace": "platform",
                     "labels": {"tier": "airflow", "component": "worker"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 600,
            "serviceAccountName": "worker",
            "securityContext": {"runAsUser": 50000},
            "containers": [{"name": "base", "image": "airflow:2.10.5",
                            "env": [{"name": "EXECUTOR", "value": "LocalExecutor"}],
                            "envFrom": [{"secretRef": {"name": "app-env"}}],
                            "resources": {"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                            "volumeMounts": [{"name": "logs", "mountPath": "/logs"}]}],
            "volumes": [{"name": "logs", "emptyDir": {}}, {"name": "config", "configMap": {"name": "airflow-config"}}],
            "tolerations": [{"key": "pool", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}]
        }
    })
}

fn pod(annotation: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "task-", "namespace": NS, "annotations": {"podtailor.dev/override": annotation}},
           "spec": spec})
}

fn base(extra: Value) -> Value {
    let mut c = json!({"name": "base", "args": ["run"]});
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    json!({"containers": [c]})
}

/// What the desired pod must hold at a pointer (`Some`) or must not hold (`None`).
type Expect = Vec<(&'static str, Option<Value>)>;

fn run(template: Value, pod: Value, overrides: &[(Option<&str>, &str, Value)]) -> Value {
    let config = common::config(template, overrides);
    let Ok(Decision::Mutated { outcome, .. }) = decide(&config, NS, &pod, Get::Desired) else {
        panic!("expected a mutation for {pod}");
    };
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &outcome.patch).unwrap_or_else(|e| panic!("patch does not apply: {e}"));
    let desired = outcome.desired.unwrap_or_else(|| panic!("no desired pod"));
    assert_eq!(patched, desired, "the patch does not give the desired pod");
    let Ok(Decision::Mutated { outcome: only_patch, .. }) = decide(&config, NS, &pod, Get::Patch) else {
        panic!("patch only");
    };
    assert_eq!(only_patch.patch, outcome.patch, "the patch-only answer differs from render's");
    let Ok(Decision::Mutated { outcome: json, .. }) = decide(&config, NS, &pod, Get::Json) else {
        panic!("patch as JSON");
    };
    let expected = serde_json::to_vec(&outcome.patch).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(json.patch_json.as_deref().unwrap_or_default()),
        String::from_utf8_lossy(&expected),
        "the webhook's patch text differs from render's patch"
    );
    let Ok(Decision::Mutated { outcome: again, .. }) = decide(&config, NS, &desired, Get::Desired) else {
        panic!("second pass");
    };
    assert_eq!(again.patch.0, vec![], "a second pass over the result is not empty");
    desired
}

fn check(desired: &Value, want: &Expect) {
    for (pointer, expected) in want {
        assert_eq!(desired.pointer(pointer), expected.as_ref(), "at {pointer} in {desired:#}");
    }
}

#[rstest]
#[case::empty_annotation_means_the_template_only("", base(json!({})), vec![], vec![
    ("/metadata/labels/tier", Some(json!("airflow"))),
    ("/spec/containers/0/image", Some(json!("airflow:2.10.5"))),
    ("/spec/containers/0/args", Some(json!(["run"]))),
])]
#[case::template_never_names_the_pod("", base(json!({})), vec![], vec![
    ("/metadata/name", None),
    ("/metadata/generateName", Some(json!("task-"))),
    ("/metadata/namespace", Some(json!(NS))),
])]
#[case::the_pods_own_values_beat_the_template("", json!({"serviceAccountName": "mine", "containers": [{"name": "base", "image": "mine:1"}]}), vec![], vec![
    ("/spec/serviceAccountName", Some(json!("mine"))),
    ("/spec/containers/0/image", Some(json!("mine:1"))),
])]
#[case::overrides_apply_in_order_right_wins("a,b", base(json!({})), vec![
    (None, "a", json!({"pod": {"spec": {"serviceAccountName": "from-a", "nodeSelector": {"pool": "a"}}}})),
    (None, "b", json!({"pod": {"spec": {"serviceAccountName": "from-b"}}})),
], vec![
    ("/spec/serviceAccountName", Some(json!("from-b"))),
    ("/spec/nodeSelector/pool", Some(json!("a"))),
])]
#[case::containers_match_by_name_never_by_position("o", json!({"containers": [
        {"name": "sidecar", "image": "side:1"}, {"name": "base", "args": ["run"]}]}), vec![
    (None, "o", json!({"resources": {"limits": {"cpu": "2"}}})),
], vec![
    ("/spec/containers/0/name", Some(json!("base"))),
    ("/spec/containers/0/image", Some(json!("airflow:2.10.5"))),
    ("/spec/containers/0/resources/limits/cpu", Some(json!("2"))),
    ("/spec/containers/1/name", Some(json!("sidecar"))),
    ("/spec/containers/1/resources", None),
])]
#[case::an_env_var_appears_once_later_layer_wins("o", base(json!({"env": [{"name": "EXECUTOR", "value": "Celery"}]})), vec![
    (None, "o", json!({"secrets": [{"deployType": "env", "deployTarget": "EXECUTOR", "secret": "s", "key": "k"}]})),
], vec![
    ("/spec/containers/0/env", Some(json!([{"name": "EXECUTOR", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]))),
])]
#[case::a_volume_appears_once_later_source_wins("o", json!({"containers": [{"name": "base"}], "volumes": [{"name": "config", "secret": {"secretName": "mine"}}]}), vec![
    (None, "o", json!({"pod": {"spec": {"volumes": [{"name": "logs", "persistentVolumeClaim": {"claimName": "logs"}}]}}})),
], vec![
    ("/spec/volumes", Some(json!([
        {"name": "logs", "persistentVolumeClaim": {"claimName": "logs"}},
        {"name": "config", "secret": {"secretName": "mine"}}]))),
])]
#[case::a_mount_appears_once("o", base(json!({"volumeMounts": [{"name": "config", "mountPath": "/logs"}]})), vec![
    (None, "o", json!({"secrets": [{"deployType": "volume", "deployTarget": "/logs", "secret": "creds"}]})),
], vec![
    ("/spec/containers/0/volumeMounts", Some(json!([{"name": "secret-creds-ac51fa35", "mountPath": "/logs", "readOnly": true}]))),
])]
#[case::limits_only_override_keeps_the_templates_requests("o", base(json!({})), vec![
    (None, "o", json!({"resources": {"limits": {"cpu": "2", "memory": "4Gi"}}})),
], vec![
    ("/spec/containers/0/resources", Some(json!({"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"cpu": "2", "memory": "4Gi"}}))),
])]
#[case::resources_merge_key_by_key("o", base(json!({})), vec![
    (None, "o", json!({"resources": {"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": 1}}})),
], vec![
    ("/spec/containers/0/resources", Some(json!({"requests": {"cpu": "500m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}}))),
])]
#[case::false_and_zero_still_override("o", json!({"hostNetwork": true, "containers": [{"name": "base"}]}), vec![
    (None, "o", json!({"pod": {"spec": {"hostNetwork": false, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false, "tolerations": []}}})),
], vec![
    ("/spec/hostNetwork", None),
    ("/spec/terminationGracePeriodSeconds", Some(json!(0))),
    ("/spec/automountServiceAccountToken", Some(json!(false))),
    ("/spec/tolerations", None),
])]
#[case::null_in_an_override_removes_a_template_value("o", base(json!({})), vec![
    (None, "o", json!({"pod": {"spec": {"securityContext": {"runAsUser": null}}, "metadata": {"labels": {"component": null}}}})),
], vec![
    ("/spec/securityContext", Some(json!({}))),
    ("/metadata/labels", Some(json!({"tier": "airflow"}))),
])]
#[case::secret_env_from_is_added_once("o,p", base(json!({})), vec![
    (None, "o", json!({"secrets": [{"deployType": "env", "secret": "app-env"}, {"deployType": "env", "secret": "more"}]})),
    (None, "p", json!({"secrets": [{"deployType": "env", "secret": "more"}]})),
], vec![
    ("/spec/containers/0/envFrom", Some(json!([{"secretRef": {"name": "app-env"}}, {"secretRef": {"name": "more"}}]))),
])]
#[case::env_from_keeps_the_platforms_entries_when_a_task_adds_one("o", base(json!({"envFrom": [{"configMapRef": {"name": "task-settings"}}]})), vec![
    (None, "o", json!({"pod": {"spec": {"containers": [{"name": "base", "envFrom": [{"configMapRef": {"name": "team-settings"}}, {"secretRef": {"name": "app-env", "optional": true}}]}]}}})),
], vec![
    ("/spec/containers/0/envFrom", Some(json!([
        {"secretRef": {"name": "app-env", "optional": true}},
        {"configMapRef": {"name": "task-settings"}},
        {"configMapRef": {"name": "team-settings"}}]))),
])]
#[case::env_from_is_replaced_when_a_layer_says_replace("o", base(json!({"envFrom": [{"configMapRef": {"name": "task-settings"}}]})), vec![
    (None, "o", json!({"pod": {"spec": {"containers": [{"name": "base", "envFrom": [{"$patch": "replace"}, {"secretRef": {"name": "only"}}]}]}}})),
], vec![
    ("/spec/containers/0/envFrom", Some(json!([{"secretRef": {"name": "only"}}]))),
])]
#[case::secret_volumes_have_one_stable_name("o,p", base(json!({})), vec![
    (None, "o", json!({"secrets": [{"deployType": "volume", "deployTarget": "/etc/creds", "secret": "creds"}]})),
    (None, "p", json!({"secrets": [{"deployType": "volume", "deployTarget": "/etc/creds", "secret": "creds"}]})),
], vec![
    ("/spec/volumes/2", Some(json!({"name": "secret-creds-ac51fa35", "secret": {"secretName": "creds"}}))),
    ("/spec/volumes/3", None),
    ("/spec/containers/0/volumeMounts/1/mountPath", Some(json!("/etc/creds"))),
    ("/spec/containers/0/volumeMounts/2", None),
])]
#[case::the_target_container_can_be_named("o", json!({"containers": [{"name": "base"}, {"name": "tool", "image": "t:1"}]}), vec![
    (None, "o", json!({"container": "tool", "resources": {"limits": {"memory": "1Gi"}}})),
], vec![
    ("/spec/containers/1/resources/limits/memory", Some(json!("1Gi"))),
    ("/spec/containers/0/resources/limits/memory", Some(json!("1Gi"))),
    ("/spec/containers/0/resources/limits/cpu", Some(json!("1"))),
    ("/spec/containers/1/resources/limits/cpu", None),
])]
#[case::the_templates_base_is_the_target_when_the_pod_has_none("o", json!({"containers": [{"name": "worker", "image": "w:1"}]}), vec![
    (None, "o", json!({"secrets": [{"deployType": "env", "deployTarget": "X", "secret": "s", "key": "k"}]})),
], vec![
    ("/spec/containers/0/env/1/name", Some(json!("X"))),
    ("/spec/containers/1/env", None),
])]
#[case::an_override_for_the_pods_namespace_beats_one_for_all("o", base(json!({})), vec![
    (None, "o", json!({"pod": {"spec": {"serviceAccountName": "everywhere"}}})),
    (Some(NS), "o", json!({"pod": {"spec": {"serviceAccountName": "here"}}})),
], vec![
    ("/spec/serviceAccountName", Some(json!("here"))),
])]
#[case::unknown_fields_pass_through("o", json!({"futureField": {"a": [1, 2]}, "containers": [{"name": "base", "futureContainerField": true}]}), vec![
    (None, "o", json!({"pod": {"spec": {"futureField": {"b": 1}}}})),
], vec![
    ("/spec/futureField", Some(json!({"a": [1, 2], "b": 1}))),
    ("/spec/containers/0/futureContainerField", Some(json!(true))),
])]
#[case::the_applied_marker_records_the_overrides("o", base(json!({})), vec![(None, "o", json!({}))], vec![])]
fn rules(
    #[case] annotation: &str,
    #[case] spec: Value,
    #[case] overrides: Vec<(Option<&str>, &str, Value)>,
    #[case] want: Expect,
) {
    let desired = run(template(), pod(annotation, spec), &overrides);
    check(&desired, &want);
    let marker = desired.pointer("/metadata/annotations/podtailor.dev~1applied").and_then(Value::as_str).unwrap_or("");
    assert!(marker.starts_with(&format!("overrides={annotation}; config=sha256:")), "{marker}");
}

/// The pod as the API server hands it to the webhook: defaulted, with the ServiceAccount,
/// DefaultTolerationSeconds, Priority and LimitRanger plugins' values.
fn defaulted(spec_extra: Value) -> Value {
    let mut p = pod(
        "",
        json!({
            "containers": [{"name": "base", "image": "mine:1", "args": ["run"], "resources": {"requests": {"memory": "64Mi"}},
                            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                            "imagePullPolicy": "IfNotPresent",
                            "volumeMounts": [{"name": "kube-api-access-abcde", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}], "defaultMode": 420}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        }),
    );
    p["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
        json!("LimitRanger plugin set: memory request for container base");
    if let (Some(spec), Value::Object(extra)) = (p["spec"].as_object_mut(), spec_extra) {
        spec.extend(extra);
    }
    p
}

#[rstest]
#[case::template_values_win_over_api_defaults(json!({}), vec![], vec![
    ("/spec/restartPolicy", Some(json!("Never"))),
    ("/spec/terminationGracePeriodSeconds", Some(json!(600))),
    ("/spec/serviceAccountName", Some(json!("worker"))),
    ("/spec/serviceAccount", Some(json!("worker"))),
    ("/spec/securityContext", Some(json!({"runAsUser": 50000}))),
    ("/spec/containers/0/resources/requests", Some(json!({"cpu": "100m", "memory": "384Mi"}))),
    ("/metadata/annotations/kubernetes.io~1limit-ranger", None),
])]
#[case::defaults_fill_what_is_still_empty(json!({}), vec![], vec![
    ("/spec/dnsPolicy", Some(json!("ClusterFirst"))),
    ("/spec/schedulerName", Some(json!("default-scheduler"))),
    ("/spec/priority", Some(json!(0))),
    ("/spec/enableServiceLinks", Some(json!(true))),
    ("/spec/containers/0/terminationMessagePolicy", Some(json!("File"))),
    ("/spec/containers/0/imagePullPolicy", Some(json!("IfNotPresent"))),
    ("/spec/tolerations/0/key", Some(json!("pool"))),
    ("/spec/tolerations/1/key", Some(json!("node.kubernetes.io/not-ready"))),
    ("/spec/tolerations/2/key", Some(json!("node.kubernetes.io/unreachable"))),
])]
#[case::default_tolerations_stay_out_when_the_pod_tolerates_them(json!({}), vec![
    (None, "o", json!({"pod": {"spec": {"tolerations": [{"operator": "Exists"}]}}})),
], vec![
    ("/spec/tolerations", Some(json!([{"operator": "Exists"}]))),
])]
#[case::the_token_volume_stays(json!({}), vec![], vec![
    ("/spec/volumes/2/name", Some(json!("kube-api-access-abcde"))),
    ("/spec/containers/0/volumeMounts/1/mountPath", Some(json!("/var/run/secrets/kubernetes.io/serviceaccount"))),
])]
#[case::the_token_volume_goes_with_automount_false(json!({}), vec![
    (None, "o", json!({"pod": {"spec": {"automountServiceAccountToken": false}}})),
], vec![
    ("/spec/volumes/2", None),
    ("/spec/containers/0/volumeMounts/1", None),
])]
#[case::a_new_container_gets_the_token_mount_and_defaults(json!({}), vec![
    (None, "o", json!({"pod": {"spec": {"containers": [{"name": "side", "image": "side"}]}}})),
], vec![
    ("/spec/containers/1/volumeMounts/0/name", Some(json!("kube-api-access-abcde"))),
    ("/spec/containers/1/imagePullPolicy", Some(json!("Always"))),
    ("/spec/containers/1/terminationMessagePath", Some(json!("/dev/termination-log"))),
])]
#[case::the_pods_own_restart_policy_is_kept(json!({"restartPolicy": "OnFailure"}), vec![], vec![
    ("/spec/restartPolicy", Some(json!("OnFailure"))),
])]
fn defaults_awareness(#[case] extra: Value, #[case] overrides: Vec<(Option<&str>, &str, Value)>, #[case] want: Expect) {
    let mut p = defaulted(extra);
    let names: Vec<&str> = overrides.iter().map(|o| o.1).collect();
    p["metadata"]["annotations"]["podtailor.dev/override"] = json!(names.join(","));
    let desired = run(template(), p, &overrides);
    check(&desired, &want);
}

#[test]
fn without_base_the_first_container_is_the_target() {
    let template = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"restartPolicy": "Never"}});
    let spec = json!({"containers": [{"name": "worker", "image": "w:1"}, {"name": "side", "image": "s:1"}]});
    let o = [(None, "o", json!({"secrets": [{"deployType": "env", "deployTarget": "X", "secret": "s", "key": "k"}]}))];
    let desired = run(template, pod("o", spec), &o);
    check(&desired, &vec![("/spec/containers/0/env/0/name", Some(json!("X"))), ("/spec/containers/1/env", None)]);
}

#[test]
fn base_is_the_target_even_when_it_is_not_the_first_container() {
    let template = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"restartPolicy": "Never"}});
    let spec = json!({"containers": [{"name": "side", "image": "s:1"}, {"name": "base", "image": "b:1"}]});
    let o = [(
        None,
        "o",
        json!({"resources": {"limits": {"cpu": "2"}},
               "secrets": [{"deployType": "env", "deployTarget": "X", "secret": "s", "key": "k"}]}),
    )];
    let desired = run(template, pod("o", spec), &o);
    check(
        &desired,
        &vec![
            ("/spec/containers/0/name", Some(json!("side"))),
            ("/spec/containers/0/resources", None),
            ("/spec/containers/0/env", None),
            ("/spec/containers/1/name", Some(json!("base"))),
            ("/spec/containers/1/resources/limits/cpu", Some(json!("2"))),
            ("/spec/containers/1/env/0/name", Some(json!("X"))),
        ],
    );
}

fn marker(pod: &Value) -> &str {
    pod.pointer("/metadata/annotations/podtailor.dev~1applied").and_then(Value::as_str).unwrap_or_default()
}

/// A pod made by one configuration, reviewed again under a changed one (a template or an
/// override whose change the pod's own values hide): the marker changes, so the re-invocation
/// patches it, and nothing else.
#[rstest]
#[case::the_template(json!({"pod": {"spec": {"nodeSelector": {"pool": "a"}}}}), json!("OnFailure"),
    json!({"pod": {"spec": {"nodeSelector": {"pool": "a"}}}}))]
#[case::the_override(json!({"pod": {"spec": {"nodeSelector": {"pool": "a"}}}}), json!("Never"),
    json!({"pod": {"spec": {"nodeSelector": {"pool": "a"}, "hostNetwork": false}}}))]
fn a_changed_configuration_changes_the_marker(#[case] before: Value, #[case] restart: Value, #[case] after: Value) {
    let desired = run(template(), pod("o", base(json!({}))), &[(None, "o", before)]);
    let mut changed = template();
    changed["spec"]["restartPolicy"] = restart;
    let config = common::config(changed, &[(None, "o", after)]);
    let Ok(Decision::Mutated { outcome, .. }) = decide(&config, NS, &desired, Get::Desired) else {
        panic!("no mutation");
    };
    let again = outcome.desired.unwrap_or_else(|| panic!("no desired pod"));
    let (old, new) = (marker(&desired), marker(&again));
    assert!(
        old.starts_with("overrides=o; config=sha256:") && new.starts_with("overrides=o; config=sha256:"),
        "{old} {new}"
    );
    assert_ne!(old, new, "the marker did not change with the configuration");
    let expected = json!([{"op": "replace", "path": "/metadata/annotations/podtailor.dev~1applied", "value": new}]);
    assert_eq!(serde_json::to_value(&outcome.patch).unwrap_or_default(), expected);
}

#[test]
fn a_pod_without_the_annotation_is_never_changed_nor_denied() {
    let config = common::config(template(), &[]);
    let mut p = pod("", json!({"containers": []}));
    p["metadata"]["annotations"] = json!({"other": "x"});
    assert!(matches!(decide(&config, NS, &p, Get::Desired), Ok(Decision::NotOptedIn)));
}

#[rstest]
#[case::missing_override("nope", vec![], "podtailor: PodOverride \"nope\" not found in namespace \"airflow\"")]
#[case::override_of_another_namespace("o", vec![(Some("other"), "o", json!({}))], "PodOverride \"o\" not found in namespace \"airflow\"")]
#[case::missing_container("o", vec![(None, "o", json!({"container": "worker", "resources": {"limits": {"cpu": "1"}}}))],
    "podtailor: PodOverride \"o\" in namespace \"airflow\" cannot apply: container \"worker\" not found in the pod (containers: base)")]
#[case::invalid_names("a,,b", vec![], "namespace \"airflow\": annotation podtailor.dev/override=\"a,,b\": \"\" is not a valid PodOverride name")]
#[case::upper_case_name("Big", vec![], "\"Big\" is not a valid PodOverride name")]
#[case::listed_twice("a,a", vec![(None, "a", json!({}))], "\"a\" is listed twice")]
fn denials_name_the_override_the_namespace_and_the_reason(
    #[case] annotation: &str,
    #[case] overrides: Vec<(Option<&str>, &str, Value)>,
    #[case] want: &str,
) {
    let config = common::config(template(), &overrides);
    match decide(&config, NS, &pod(annotation, base(json!({}))), Get::Desired) {
        Err(denial) => assert!(denial.message.contains(want), "{}", denial.message),
        Ok(d) => panic!("expected a denial, got {d:?}"),
    }
}

#[test]
fn an_override_replacing_a_value_the_pod_set_warns() {
    let config = common::config(template(), &[(None, "small", json!({"resources": {"limits": {"cpu": "500m"}}}))]);
    let p = pod("small", base(json!({"resources": {"limits": {"cpu": "4"}}})));
    let Ok(Decision::Mutated { outcome, .. }) = decide(&config, NS, &p, Get::Desired) else { panic!("no mutation") };
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert!(
        outcome.warnings[0].contains("\"small\"") && outcome.warnings[0].contains("limits.cpu"),
        "{:?}",
        outcome.warnings
    );
}

/// A pod's lists and maps may hold tens of thousands of entries (a 3 MiB review holds 30 000
/// env vars): they merge and diff by their keys, not by comparing every entry with every
/// other. With the table the diff once built, this pod needed 30 000 × 30 000 cells (7 GB)
/// for each of its lists; here it takes seconds, in a debug build.
#[test]
fn lists_and_maps_of_thirty_thousand_entries_merge_and_their_patch_applies() {
    const N: usize = 30_000;
    let env: Vec<Value> = (0..N).map(|i| json!({"name": format!("VAR_{i}"), "value": "pod"})).collect();
    let mounts: Vec<Value> = (0..N).map(|i| json!({"name": "logs", "mountPath": format!("/m/{i}")})).collect();
    let mut p = pod("big", base(json!({"env": env, "volumeMounts": mounts})));
    p["metadata"]["labels"] = (0..N).map(|i| (format!("l{i}"), json!("pod"))).collect::<serde_json::Map<_, _>>().into();
    p["metadata"]["finalizers"] = (0..N).map(|i| json!(format!("podtailor.dev/f{i}"))).collect();
    // an override as large as a list index is built for: some entries the pod has, some new
    let spec = json!({"pod": {
        "metadata": {"labels": (0..40).map(|i| (format!("l{}", i * 700), json!(if i % 2 == 0 { json!("override") } else { Value::Null })))
                                       .chain((0..20).map(|i| (format!("new{i}"), json!("override"))))
                                       .collect::<serde_json::Map<_, _>>(),
                     "finalizers": (0..40).map(|i| json!(format!("podtailor.dev/f{}", i * 700 + 50_000 * (i % 2)))).collect::<Vec<_>>()},
        "spec": {"containers": [{"name": "base",
            "env": (0..40).map(|i| json!({"name": format!("VAR_{}", i * 700 + 50_000 * (i % 2)), "value": "override"})).collect::<Vec<_>>(),
            "volumeMounts": (0..40).map(|i| json!({"name": "config", "mountPath": format!("/m/{}", i * 700 + 50_000 * (i % 2))})).collect::<Vec<_>>()}]}}});
    let overrides = [(None, "big", spec)];
    let config = common::config(template(), &overrides);
    let Ok(Decision::Mutated { outcome, .. }) = decide(&config, NS, &p, Get::Patch) else { panic!("no mutation") };
    // each value of the pod the override replaces, found in the long lists by key
    let count = |part: &str| outcome.warnings.iter().filter(|w| w.contains(part)).count();
    assert_eq!((count(".env[name="), count(".volumeMounts[mountPath="), count("metadata.labels.")), (20, 20, 40));
    let desired = run(template(), p, &overrides);
    let container = &desired["spec"]["containers"][0];
    let env = container["env"].as_array().map_or(&[][..], Vec::as_slice);
    // the template's one, the pod's, and the override's 20 new ones
    assert_eq!(env.len(), 1 + N + 20);
    assert_eq!(env[1 + 1400], json!({"name": "VAR_1400", "value": "override"}));
    assert_eq!(env[1 + 1401], json!({"name": "VAR_1401", "value": "pod"}));
    assert_eq!(env[1 + N]["name"], "VAR_50700");
    let mounts = container["volumeMounts"].as_array().map_or(&[][..], Vec::as_slice);
    assert_eq!(mounts.len(), 1 + N + 20);
    assert_eq!(mounts[1 + 1400], json!({"name": "config", "mountPath": "/m/1400"}));
    let labels = desired["metadata"]["labels"].as_object().map_or(0, |l| l.len());
    // the template's two, the pod's less the 20 the override deletes, and 20 new ones
    assert_eq!(labels, 2 + N - 20 + 20);
    assert_eq!(desired["metadata"]["labels"]["l1400"], "override");
    assert_eq!(desired["metadata"]["labels"].get("l700"), None);
    assert_eq!(desired["metadata"]["finalizers"].as_array().map_or(0, Vec::len), N + 20);
}

/// Nesting is bounded by the parser (serde_json and serde_yaml_ng stop at 128 levels), and
/// each of the engine's walks visits a value once: a pod as deep as a review can carry merges
/// with a template as deep, and its patch applies.
#[test]
fn a_pod_nested_as_deep_as_a_review_can_carry_merges() {
    let nested =
        |depth: usize, leaf: &str| (0..depth).fold(json!({"leaf": leaf}), |inner, _| json!({"a": inner, "b": 1}));
    let mut t = template();
    t["spec"]["containers"][0]["securityContext"] = json!({"deep": nested(110, "template"), "runAsNonRoot": true});
    let p = pod("", base(json!({"securityContext": {"deep": nested(110, "pod")}})));
    // the review around the pod must still parse: 128 levels at most
    let review = json!({"request": {"object": p.clone()}});
    assert!(serde_json::from_str::<Value>(&review.to_string()).is_ok());
    let desired = run(t, p, &[]);
    let leaf = (0..110).fold(&desired["spec"]["containers"][0]["securityContext"]["deep"], |v, _| &v["a"]);
    assert_eq!(leaf["leaf"], "pod");
    assert_eq!(desired["spec"]["containers"][0]["securityContext"]["runAsNonRoot"], true);
}

/// The marker's hash is of the configuration's content, not of its text: the API server sends
/// an override's pod fragment with its keys sorted, a file has them as written, and both must
/// give the same marker (else a pod rendered offline is tailored again in the cluster).
#[test]
fn the_marker_does_not_depend_on_key_order() {
    let marker = |template: Value, fragment: Value| {
        let desired = run(template, pod("o", base(json!({}))), &[(None, "o", json!({"pod": fragment}))]);
        desired.pointer("/metadata/annotations/podtailor.dev~1applied").and_then(Value::as_str).map(str::to_owned)
    };
    let fragment = json!({"spec": {"nodeSelector": {"pool": "highmem", "zone": "a"}, "priority": 0}});
    let reordered = json!({"spec": {"priority": 0, "nodeSelector": {"zone": "a", "pool": "highmem"}}});
    let mut template_reordered: serde_json::Map<String, Value> = serde_json::Map::new();
    let t = template();
    for key in ["spec", "metadata", "kind", "apiVersion"] {
        template_reordered.insert(key.to_owned(), t[key].clone());
    }
    let first = marker(template(), fragment.clone());
    assert!(first.is_some());
    assert_eq!(first, marker(Value::Object(template_reordered), reordered));
    let changed = json!({"spec": {"nodeSelector": {"pool": "highmem", "zone": "b"}, "priority": 0}});
    assert_ne!(first, marker(template(), changed), "a changed override must change the marker");
}
