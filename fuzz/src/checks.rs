//! The properties every fuzz input is held to, beyond "no panic": the answer is an
//! AdmissionReview the API server can read, with the request's uid; a patch applies to the
//! incoming pod and gives the desired pod `render` shows; the patched pod, sent again, gets
//! no patch. Each function is one target's check; `tests/fuzz_findings.rs` includes this file
//! and replays the seeds and the findings through the same checks.

use std::sync::{Arc, LazyLock};

use base64::Engine;
use podtailor::launch::batch;
use podtailor::merge::{OVERRIDE_ANNOTATION, Want, requested_overrides};
use podtailor::mutate::{Decision, decide};
use podtailor::store::{Config, Overrides, files};
use podtailor::webhook::admission::{API_VERSION, Facts, Outcome};
use podtailor::webhook::{Hook, answer_body};
use serde_json::{Value, json};

/// The uid of the reviews [`merge`] sends.
pub const UID: &str = "0f6c2f35-fuzz-4d7e-9a51-3c2b8e1d7a90";

/// Checks the answer to the request body `body` sent to `hook`.
pub fn answer(config: &Config, body: &[u8], hook: Hook) -> Result<(), String> {
    let (status, outcome, review) = answer_body(config, body, hook, &mut Facts::default());
    let text = review.to_json();
    let answer: Value = serde_json::from_slice(&text).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if answer["apiVersion"] != API_VERSION || answer["kind"] != "AdmissionReview" {
        return Err(format!("the answer is not an AdmissionReview: {answer}"));
    }
    let response = &answer["response"];
    let uid = response["uid"].as_str().ok_or("the answer has no uid")?;
    // the fields the webhook skips may hold bytes that are not UTF-8: read past them
    let sent: Option<Value> = serde_json::from_str(&String::from_utf8_lossy(body)).ok();
    let sent_uid = sent.as_ref().and_then(|s| s.pointer("/request/uid")).and_then(Value::as_str).unwrap_or("");
    // a body that is not UTF-8 JSON may be answered without its uid
    let strict = serde_json::from_slice::<Value>(body).is_ok();
    if uid != sent_uid && (strict || !uid.is_empty()) {
        return Err(format!("the answer's uid is {uid:?}, the request's {sent_uid:?}"));
    }
    let allowed = response["allowed"].as_bool().ok_or("the answer has no allowed")?;
    let code = response.pointer("/status/code").and_then(Value::as_u64);
    let has_patch = response.get("patch").is_some();
    let decided = response.pointer("/auditAnnotations/overrides").is_some();
    if outcome == Outcome::Failed {
        return Err(format!("the webhook failed to answer (a panic, caught): {response}"));
    }
    let expected_status = if outcome == Outcome::Invalid { 400 } else { 200 };
    let consistent = status.as_u16() == expected_status
        && match outcome {
            Outcome::Invalid => !allowed && code == Some(400) && !has_patch,
            Outcome::Denied => !allowed && matches!(code, Some(403 | 422)) && !has_patch,
            Outcome::Patched => allowed && code.is_none() && has_patch && response["patchType"] == "JSONPatch",
            Outcome::Unchanged => allowed && code.is_none() && !has_patch,
            Outcome::Failed => false,
        };
    if !consistent {
        return Err(format!("HTTP {status} and {outcome:?} answered with {response}"));
    }
    if hook != Hook::Mutate || !decided {
        return Ok(());
    }
    // the webhook decided on a pod: compare with render's desired pod
    let sent = sent.ok_or("a decision on a body that is not JSON")?;
    let pod = &sent["request"]["object"];
    let desired = desired_pod(config, &sent)?;
    let Some(encoded) = response["patch"].as_str() else {
        if *pod != desired {
            return Err(format!("no patch, but the desired pod differs from the pod: {desired}"));
        }
        return Ok(());
    };
    let patch_text = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&patch_text).map_err(|e| format!("the patch is not an RFC 6902 patch: {e}"))?;
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).map_err(|e| format!("the patch does not apply: {e}"))?;
    if patched != desired {
        return Err(format!("the patched pod {patched}\nis not the desired pod {desired}"));
    }
    // a second pass over what the API server now holds changes nothing
    let mut again = sent.clone();
    again["request"]["object"] = patched;
    let body = serde_json::to_vec(&again).map_err(|e| e.to_string())?;
    let (_, outcome, review) = answer_body(config, &body, hook, &mut Facts::default());
    if outcome != Outcome::Unchanged {
        return Err(format!("a second pass is {outcome:?}: {}", String::from_utf8_lossy(&review.to_json())));
    }
    Ok(())
}

/// The desired pod for the review `sent`, as `render` makes it, in the namespace the webhook
/// reads: the request's if not empty, else the pod's, else `default`.
fn desired_pod(config: &Config, sent: &Value) -> Result<Value, String> {
    let pod = &sent["request"]["object"];
    let namespace = sent
        .pointer("/request/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default");
    match decide(config, namespace, pod, Want::Desired) {
        Ok(Decision::Mutated { outcome, .. }) => outcome.desired.ok_or_else(|| "render gave no desired pod".into()),
        Ok(Decision::NotOptedIn) => Err("the webhook decided on a pod render says did not opt in".into()),
        Err(denial) => Err(format!("the webhook decided on a pod render denies: {denial}")),
    }
}

/// Checks the webhook's answer for `pod`, created in `namespace`.
pub fn merge(config: &Config, namespace: &str, pod: &Value) -> Result<(), String> {
    answer(config, &review(namespace, pod), Hook::Mutate)
}

/// The AdmissionReview the API server sends for the creation of `pod` in `namespace`.
pub fn review(namespace: &str, pod: &Value) -> Vec<u8> {
    let review = json!({
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": pod,
        },
    });
    serde_json::to_vec(&review).unwrap_or_default()
}

/// `examples/`: the template and the two overrides, loaded as the store loads them.
pub static EXAMPLES: LazyLock<Config> = LazyLock::new(|| {
    let template = files::parse_template(include_str!("../../examples/template.yaml"))
        .unwrap_or_else(|e| panic!("examples/template.yaml: {e}"));
    let mut overrides = Overrides::default();
    for (name, text) in [
        ("resource-requirements.yaml", include_str!("../../examples/overrides/resource-requirements.yaml")),
        ("secret-env.yaml", include_str!("../../examples/overrides/secret-env.yaml")),
    ] {
        files::add_overrides(&mut overrides, text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    Config::new(Arc::new(template), overrides)
});

/// `examples/pod.yaml`, the bare worker pod.
pub static EXAMPLE_POD: LazyLock<Value> = LazyLock::new(|| {
    podtailor::input::document(include_str!("../../examples/pod.yaml"))
        .unwrap_or_else(|e| panic!("examples/pod.yaml: {e}"))
});

/// The namespace of [`EXAMPLE_POD`].
pub const EXAMPLE_NAMESPACE: &str = "airflow";

/// [`EXAMPLE_POD`] in `namespace`, opted in to `names` (comma-separated).
fn example_pod(namespace: &str, names: &str) -> Value {
    let mut pod = EXAMPLE_POD.clone();
    pod["metadata"]["namespace"] = json!(namespace);
    pod["metadata"]["annotations"][OVERRIDE_ANNOTATION] = json!(names);
    pod
}

/// A template file, loaded as the store loads it: one that loads is applied to the example
/// pod opted in to the template only, and to both example overrides.
pub fn template_file(text: &str) -> Result<(), String> {
    let Ok(template) = files::parse_template(text) else { return Ok(()) };
    let config = Config::new(Arc::new(template), EXAMPLES.overrides.clone());
    for names in ["", "resource-requirements,secret-env"] {
        merge(&config, EXAMPLE_NAMESPACE, &example_pod(EXAMPLE_NAMESPACE, names))?;
    }
    Ok(())
}

/// A PodOverride file, loaded as the store loads it: each override that loads is applied to
/// the example pod, in the override's namespace, with the example template.
pub fn override_file(text: &str) -> Result<(), String> {
    let mut overrides = Overrides::default();
    if files::add_overrides(&mut overrides, text, "fuzz.yaml").is_err() {
        return Ok(());
    }
    let names: Vec<(String, String)> = overrides
        .iter()
        .map(|l| (l.namespace.clone().unwrap_or_else(|| "default".into()), l.r#override.name.clone()))
        .collect();
    let config = Config::new(EXAMPLES.template.clone(), overrides);
    for (namespace, name) in names {
        merge(&config, &namespace, &example_pod(&namespace, &name))?;
    }
    Ok(())
}

/// A tasks file of `podtailor launch -f`: one that loads holds valid tasks with unique names,
/// and each task's bare pod opts in to exactly its overrides and gets an answer that holds
/// (the example configuration: an override it lacks is a denial).
pub fn tasks_file(text: &str) -> Result<(), String> {
    let Ok(tasks) = batch::parse(text) else { return Ok(()) };
    if tasks.is_empty() {
        return Err("a tasks file that loads holds no task".into());
    }
    for (i, task) in tasks.iter().enumerate() {
        task.validate().map_err(|e| format!("task {i} loads but is invalid: {e}: {task:?}"))?;
        if tasks[..i].iter().any(|t| t.task == task.task) {
            return Err(format!("task {i}'s name is not unique: {task:?}"));
        }
        let pod = task.pod();
        if requested_overrides(&pod) != Some(Ok(task.overrides.clone())) {
            return Err(format!("task {i}'s pod asks for {:?}: {task:?}", requested_overrides(&pod)));
        }
        merge(&EXAMPLES, EXAMPLE_NAMESPACE, &pod).map_err(|e| format!("task {i}: {e}"))?;
    }
    Ok(())
}
