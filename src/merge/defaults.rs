//! Defaults awareness: the webhook sees a pod after the API server's defaulting and built-in
//! admission plugins. Values they filled in are taken out of the pod's layer (so the template
//! can set them), and after the merge they fill only what is still empty:
//! `desired = apiDefaults(template ⊲ withoutApiDefaults(pod) ⊲ overrides)`.

use serde_json::{Map, Number, Value, json};

use super::lookup::{contains, field, field_mut, get, get_mut};

const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const LIMIT_RANGER: &str = "kubernetes.io/limit-ranger";
const LIMIT_RANGER_PREFIX: &str = "LimitRanger plugin set: ";
const DEFAULT_TOLERATION_KEYS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// A value defaulting gives, to compare without building it.
#[derive(Clone, Copy)]
enum DefaultValue {
    Str(&'static str),
    Int(u64),
    Bool(bool),
}

impl DefaultValue {
    /// `value == json!(default)`.
    fn is(self, value: &Value) -> bool {
        match (self, value) {
            (DefaultValue::Str(d), Value::String(s)) => s == d,
            (DefaultValue::Int(d), Value::Number(n)) => *n == Number::from(d),
            (DefaultValue::Bool(d), Value::Bool(b)) => *b == d,
            _ => false,
        }
    }
}

/// Pod-level fields with the value defaulting gives them.
const SPEC_DEFAULTS: [(&str, DefaultValue); 6] = [
    ("restartPolicy", DefaultValue::Str("Always")),
    ("dnsPolicy", DefaultValue::Str("ClusterFirst")),
    ("schedulerName", DefaultValue::Str("default-scheduler")),
    ("terminationGracePeriodSeconds", DefaultValue::Int(30)),
    ("enableServiceLinks", DefaultValue::Bool(true)),
    ("serviceAccountName", DefaultValue::Str("default")),
];

/// Container fields with the value defaulting gives them (imagePullPolicy depends on the image).
const CONTAINER_DEFAULTS: [(&str, &str); 2] =
    [("terminationMessagePath", "/dev/termination-log"), ("terminationMessagePolicy", "File")];

const CONTAINER_LISTS: [(&str, &str); 2] = [("containers", "container"), ("initContainers", "init container")];

/// What was taken out of the pod's layer, to be given back where the merge left it empty.
#[derive(Debug, Default)]
pub struct ApiDefaults {
    spec: Vec<(&'static str, Value)>,
    service_account_alias: bool,
    priority: Option<(Value, Option<Value>)>,
    tolerations: Vec<Value>,
    container: Vec<&'static str>,
    image_pull_policy: bool,
    token_volume: Option<String>,
    /// (list, container, "requests"/"limits", resource, value), in annotation order.
    limit_ranger: Vec<(&'static str, String, &'static str, String, Value)>,
    limit_ranger_annotation: Option<String>,
}

/// The pull policy defaulting gives a container with this image.
pub fn default_pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    let tag = if image.contains('@') { None } else { name.split_once(':').map(|(_, t)| t) };
    match tag {
        None if image.contains('@') => "IfNotPresent",
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn is_default_toleration(t: &Value) -> bool {
    let Some(t) = t.as_object() else { return false };
    let key = get(t, "key").and_then(Value::as_str).unwrap_or_default();
    DEFAULT_TOLERATION_KEYS.contains(&key)
        && get(t, "operator").is_some_and(|v| DefaultValue::Str("Exists").is(v))
        && get(t, "effect").is_some_and(|v| DefaultValue::Str("NoExecute").is(v))
        && get(t, "tolerationSeconds").is_some_and(|v| DefaultValue::Int(300).is(v))
        && t.len() == 4
}

/// Whether `tolerations` already tolerate the NoExecute taint `key`, as DefaultTolerationSeconds checks.
fn tolerates(tolerations: &[Value], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let k = t.get("key").and_then(Value::as_str).unwrap_or_default();
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
        (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
    })
}

fn is_token_volume(v: &Value) -> bool {
    let named = field(v, "name").and_then(Value::as_str).is_some_and(|n| n.starts_with("kube-api-access-"));
    named
        && field(v, "projected")
            .and_then(|p| field(p, "sources"))
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| field(s, "serviceAccountToken").is_some()))
}

/// Takes the values the API server filled in out of `pod` (the pod's layer).
pub fn strip(pod: &mut Value) -> ApiDefaults {
    let mut found = ApiDefaults::default();
    let limit_ranger = field(pod, "metadata")
        .and_then(|m| field(m, "annotations"))
        .and_then(|a| field(a, LIMIT_RANGER))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(spec) = field_mut(pod, "spec").and_then(Value::as_object_mut) else {
        return found;
    };
    // Decide on the pod as it came, then take what goes out in one pass: each shift_remove
    // would move the entries after it and index them again.
    let mut out: Vec<&'static str> = Vec::new();
    for (name, default) in SPEC_DEFAULTS {
        if get(spec, name).is_some_and(|v| default.is(v)) {
            out.push(name);
        }
    }
    if let Some(alias) = get(spec, "serviceAccount") {
        let name = get(spec, "serviceAccountName");
        if name.is_none() || name == Some(alias) || out.contains(&"serviceAccountName") {
            out.push("serviceAccount");
            found.service_account_alias = true;
        }
    }
    let mut priority = false;
    if get(spec, "priorityClassName").is_none() && get(spec, "priority").is_some_and(|p| DefaultValue::Int(0).is(p)) {
        priority = true;
        out.push("priority");
        if get(spec, "preemptionPolicy").is_some_and(|p| DefaultValue::Str("PreemptLowerPriority").is(p)) {
            out.push("preemptionPolicy");
        }
    }
    if let Some(Value::Array(tolerations)) = get_mut(spec, "tolerations") {
        if tolerations.iter().any(is_default_toleration) {
            let (defaults, others) = std::mem::take(tolerations).into_iter().partition(is_default_toleration);
            found.tolerations = defaults;
            *tolerations = others;
        }
        if tolerations.is_empty() && !found.tolerations.is_empty() {
            out.push("tolerations");
        }
    }
    let mut taken = take_out(spec, &out);
    let mut take = |name: &str| taken.iter_mut().find(|(n, _)| *n == name).map(|(_, v)| std::mem::take(v));
    for (name, _) in SPEC_DEFAULTS {
        if let Some(value) = take(name) {
            found.spec.push((name, value));
        }
    }
    if priority {
        found.priority = Some((take("priority").unwrap_or_default(), take("preemptionPolicy")));
    }
    found.token_volume = get(spec, "volumes")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| is_token_volume(v)))
        .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
    let set_by_limit_ranger = limit_ranger.as_deref().map(parse_limit_ranger).unwrap_or_default();
    for (list, label) in CONTAINER_LISTS {
        for c in get_mut(spec, list).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(c) = c.as_object_mut() else { continue };
            let mut out: Vec<&'static str> = Vec::new();
            let default_policy = get(c, "image").and_then(Value::as_str).map(default_pull_policy);
            if let (Some(default_policy), Some(policy)) =
                (default_policy, get(c, "imagePullPolicy").and_then(Value::as_str))
                && policy == default_policy
            {
                out.push("imagePullPolicy");
                found.image_pull_policy = true;
            }
            for (name, default) in CONTAINER_DEFAULTS {
                if get(c, name).and_then(Value::as_str) == Some(default) {
                    out.push(name);
                    if !found.container.contains(&name) {
                        found.container.push(name);
                    }
                }
            }
            take_out(c, &out);
            if set_by_limit_ranger.is_empty() {
                continue;
            }
            let cname = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            for (kind, container, field, resource) in &set_by_limit_ranger {
                if *kind != label || *container != cname {
                    continue;
                }
                let Some(values) =
                    c.get_mut("resources").and_then(|r| r.get_mut(*field)).and_then(Value::as_object_mut)
                else {
                    continue;
                };
                if let Some(v) = values.shift_remove(resource.as_str()) {
                    found.limit_ranger.push((list, cname.clone(), field, resource.clone(), v));
                }
            }
        }
    }
    if !found.limit_ranger.is_empty() {
        found.limit_ranger_annotation = limit_ranger;
    }
    found
}

/// Takes the entries named `names` out of `map`, keeping the order of the others; returns
/// them with their values.
fn take_out(map: &mut Map<String, Value>, names: &[&'static str]) -> Vec<(&'static str, Value)> {
    let mut taken = Vec::with_capacity(names.len());
    if !names.is_empty() {
        map.retain(|k, v| match names.iter().find(|n| **n == k) {
            Some(name) => {
                taken.push((*name, std::mem::take(v)));
                false
            }
            None => true,
        });
    }
    taken
}

/// Parses `LimitRanger plugin set: cpu, memory request for container base; cpu limit for
/// init container setup` into (container kind, container, "requests"/"limits", resource).
fn parse_limit_ranger(text: &str) -> Vec<(&'static str, String, &'static str, String)> {
    let mut out = Vec::new();
    let Some(body) = text.strip_prefix(LIMIT_RANGER_PREFIX) else { return out };
    for part in body.split("; ") {
        for (marker, field) in [(" request for ", "requests"), (" limit for ", "limits")] {
            let Some((resources, target)) = part.split_once(marker) else { continue };
            let (label, name) = if let Some(n) = target.strip_prefix("init container ") {
                ("init container", n)
            } else if let Some(n) = target.strip_prefix("container ") {
                ("container", n)
            } else {
                continue;
            };
            for r in resources.split(", ") {
                out.push((label, name.to_owned(), field, r.to_owned()));
            }
        }
    }
    out
}

/// Gives back what `strip` took, where the merged pod left it empty; keeps the
/// service-account token volume consistent with `automountServiceAccountToken`.
pub fn restore(pod: &mut Value, found: &ApiDefaults) {
    let mut limit_ranger_kept = Vec::new();
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        restore_spec(spec, found, &mut limit_ranger_kept);
    }
    if let Some(original) = &found.limit_ranger_annotation {
        let text = (limit_ranger_kept.len() != found.limit_ranger.len()).then(|| limit_ranger_text(&limit_ranger_kept));
        set_annotation(
            pod,
            LIMIT_RANGER,
            match text {
                None => Some(original.clone()),
                Some(t) => t,
            },
        );
    }
}

fn restore_spec(
    spec: &mut Map<String, Value>,
    found: &ApiDefaults,
    kept: &mut Vec<(&'static str, String, &'static str, String)>,
) {
    for (name, default) in &found.spec {
        if !contains(spec, name) {
            spec.insert((*name).to_owned(), default.clone());
        }
    }
    if (found.service_account_alias || contains(spec, "serviceAccount"))
        && let Some(name) = get(spec, "serviceAccountName").cloned()
    {
        spec.insert("serviceAccount".to_owned(), name);
    }
    if let Some((priority, preemption)) = &found.priority
        && !contains(spec, "priorityClassName")
        && !contains(spec, "priority")
    {
        spec.insert("priority".to_owned(), priority.clone());
        if let Some(p) = preemption {
            spec.entry("preemptionPolicy").or_insert_with(|| p.clone());
        }
    }
    if !found.tolerations.is_empty() {
        let list = spec.entry("tolerations").or_insert_with(|| json!([]));
        if let Value::Array(list) = list {
            for t in &found.tolerations {
                let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
                if !tolerates(list, key) {
                    list.push(t.clone());
                }
            }
        }
    }
    let automount = !get(spec, "automountServiceAccountToken").is_some_and(|a| DefaultValue::Bool(false).is(a));
    if let (Some(token), false) = (&found.token_volume, automount)
        && let Some(Value::Array(volumes)) = get_mut(spec, "volumes")
    {
        volumes.retain(|v| v.get("name").and_then(Value::as_str) != Some(token));
    }
    for (list, _) in CONTAINER_LISTS {
        for c in get_mut(spec, list).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(c) = c.as_object_mut() else { continue };
            restore_container(c, list, found, automount, kept);
        }
    }
}

fn restore_container(
    c: &mut Map<String, Value>,
    list: &'static str,
    found: &ApiDefaults,
    automount: bool,
    kept: &mut Vec<(&'static str, String, &'static str, String)>,
) {
    if found.image_pull_policy
        && !contains(c, "imagePullPolicy")
        && let Some(image) = get(c, "image").and_then(Value::as_str)
    {
        let policy = default_pull_policy(image);
        c.insert("imagePullPolicy".to_owned(), json!(policy));
    }
    for (name, default) in CONTAINER_DEFAULTS {
        if found.container.contains(&name) && !contains(c, name) {
            c.insert(name.to_owned(), json!(default));
        }
    }
    if !found.limit_ranger.is_empty() {
        restore_limit_ranger(c, list, found, kept);
    }
    let Some(token) = &found.token_volume else { return };
    let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
    if let Value::Array(mounts) = mounts {
        if automount {
            if !mounts.iter().any(|m| field(m, "mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)) {
                mounts.push(json!({"name": token, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
            }
        } else {
            mounts.retain(|m| field(m, "name").and_then(Value::as_str) != Some(token));
        }
        if mounts.is_empty() {
            c.shift_remove("volumeMounts");
        }
    }
}

fn restore_limit_ranger(
    c: &mut Map<String, Value>,
    list: &'static str,
    found: &ApiDefaults,
    kept: &mut Vec<(&'static str, String, &'static str, String)>,
) {
    let cname = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    for (l, container, field, resource, value) in &found.limit_ranger {
        if *l != list || *container != cname {
            continue;
        }
        let resources = c.entry("resources").or_insert_with(|| json!({}));
        if let Some(resources) = resources.as_object_mut() {
            let values = resources.entry(*field).or_insert_with(|| json!({}));
            if let Some(values) = values.as_object_mut()
                && !values.contains_key(resource.as_str())
            {
                values.insert(resource.clone(), value.clone());
                kept.push((l, container.clone(), field, resource.clone()));
            }
        }
    }
}

/// The LimitRanger annotation for the values it set that are still in the pod, in its own format.
fn limit_ranger_text(kept: &[(&'static str, String, &'static str, String)]) -> Option<String> {
    let mut parts = Vec::new();
    for (list, label) in CONTAINER_LISTS {
        let mut names: Vec<&String> = kept.iter().filter(|k| k.0 == list).map(|k| &k.1).collect();
        names.dedup();
        for name in names {
            let of = |field: &str| {
                let mut r: Vec<&str> =
                    kept.iter().filter(|k| k.0 == list && &k.1 == name && k.2 == field).map(|k| k.3.as_str()).collect();
                r.sort_unstable();
                r.join(", ")
            };
            let segments: Vec<String> = [("requests", "request"), ("limits", "limit")]
                .into_iter()
                .filter_map(|(field, word)| {
                    let r = of(field);
                    (!r.is_empty()).then(|| format!("{r} {word} for {label} {name}"))
                })
                .collect();
            parts.push(segments.join("; "));
        }
    }
    (!parts.is_empty()).then(|| format!("{LIMIT_RANGER_PREFIX}{}", parts.join("; ")))
}

fn set_annotation(pod: &mut Value, key: &str, value: Option<String>) {
    let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    match value {
        Some(v) => {
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(key.to_owned(), Value::String(v));
            }
        }
        None => {
            if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                a.shift_remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("nginx", "Always")]
    #[case("nginx:latest", "Always")]
    #[case("nginx:1.27", "IfNotPresent")]
    #[case("registry:5000/team/app", "Always")]
    #[case("registry:5000/team/app:v2", "IfNotPresent")]
    #[case("app@sha256:abcd", "IfNotPresent")]
    fn pull_policy_follows_the_tag(#[case] image: &str, #[case] want: &str) {
        assert_eq!(default_pull_policy(image), want);
    }

    #[test]
    fn limit_ranger_annotation_round_trips() {
        let text = "LimitRanger plugin set: cpu, memory request for container base; memory limit for container base; cpu request for init container setup";
        let parsed = parse_limit_ranger(text);
        assert_eq!(parsed.len(), 4);
        let kept: Vec<_> = parsed
            .into_iter()
            .map(|(label, name, field, r)| {
                let list = if label == "container" { "containers" } else { "initContainers" };
                (list, name, field, r)
            })
            .collect();
        assert_eq!(limit_ranger_text(&kept).as_deref(), Some(text));
    }

    #[test]
    fn template_values_win_over_api_defaults_and_defaults_fill_the_rest() {
        let mut pod = json!({"metadata": {}, "spec": {
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30,
            "serviceAccountName": "default", "serviceAccount": "default", "priority": 0,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "containers": [{"name": "base", "image": "a:1", "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]}});
        let found = strip(&mut pod);
        assert_eq!(pod, json!({"metadata": {}, "spec": {"containers": [{"name": "base", "image": "a:1"}]}}));
        // the merge: a template says Never and a service account; a sidecar and a blanket toleration
        pod["spec"]["restartPolicy"] = json!("Never");
        pod["spec"]["serviceAccountName"] = json!("worker");
        pod["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]);
        if let Some(c) = pod["spec"]["containers"].as_array_mut() {
            c.push(json!({"name": "side", "image": "s"}))
        }
        restore(&mut pod, &found);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["serviceAccountName"], "worker");
        assert_eq!(spec["serviceAccount"], "worker");
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2), "{spec}");
        assert_eq!(spec["tolerations"][1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["terminationMessagePolicy"], "File");
    }

    #[test]
    fn token_volume_follows_automount() {
        let volume = json!({"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}});
        let mount = json!({"name": "kube-api-access-x", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        let pod = json!({"spec": {"volumes": [volume.clone()], "containers": [{"name": "base", "volumeMounts": [mount.clone()]}]}});
        let mut layer = pod.clone();
        let found = strip(&mut layer);
        let mut merged = layer.clone();
        if let Some(c) = merged["spec"]["containers"].as_array_mut() {
            c.push(json!({"name": "side"}))
        }
        restore(&mut merged, &found);
        assert_eq!(merged["spec"]["containers"][1]["volumeMounts"], json!([mount]));
        let mut merged = layer;
        merged["spec"]["automountServiceAccountToken"] = json!(false);
        restore(&mut merged, &found);
        assert_eq!(merged["spec"]["volumes"], json!([]));
        assert_eq!(merged["spec"]["containers"][0].get("volumeMounts"), None);
    }

    #[test]
    fn limit_ranger_values_give_way_and_the_annotation_says_what_is_left() {
        let mut pod = json!({"metadata": {"annotations": {LIMIT_RANGER: "LimitRanger plugin set: cpu, memory request for container base"}},
            "spec": {"containers": [{"name": "base", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}});
        let found = strip(&mut pod);
        assert_eq!(pod["spec"]["containers"][0]["resources"], json!({"requests": {}}));
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("500m");
        restore(&mut pod, &found);
        assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"], json!({"cpu": "500m", "memory": "64Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"][LIMIT_RANGER],
            "LimitRanger plugin set: memory request for container base"
        );
    }
}
