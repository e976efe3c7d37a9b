//! Defaults awareness: the webhook sees a pod after the API server's defaulting and built-in
//! admission plugins. Values they filled in are taken out of the pod's layer (so the template
//! can set them), and after the merge they fill only what is still empty:
//! `desired = apiDefaults(template ⊲ withoutApiDefaults(pod) ⊲ overrides)`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::{Number, Value, json};

use super::draft::{Draft, Node, Object};
use super::lookup::same_key;
use super::schema::{Kind, plain_booleans};

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
    fn is(self, value: Node) -> bool {
        match (self, value) {
            (DefaultValue::Str(d), Node::Value(Value::String(s))) => s == d,
            (DefaultValue::Int(d), Node::Value(Value::Number(n))) => *n == Number::from(d),
            (DefaultValue::Bool(d), Node::Value(Value::Bool(b))) => *b == d,
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

/// What was taken out of the pod's layer (the pod's own values, borrowed), to be given back
/// where the merge left it empty.
#[derive(Debug, Default)]
pub struct ApiDefaults<'a> {
    spec: Vec<(&'static str, Draft<'a>)>,
    service_account_alias: bool,
    priority: Option<(Draft<'a>, Option<Draft<'a>>)>,
    tolerations: Vec<Draft<'a>>,
    container: Vec<&'static str>,
    image_pull_policy: bool,
    token_volume: Option<String>,
    /// (list, container, "requests"/"limits", resource, value), in annotation order.
    limit_ranger: Vec<(&'static str, String, &'static str, String, Draft<'a>)>,
    /// The positions in `limit_ranger` of each container's values, by (list, container).
    limit_ranger_of: HashMap<(&'static str, String), Vec<usize>>,
    /// The defaulted fields a container of the pod came without, by (list, container): not
    /// given to it on the way back, so that a pod is never patched for what it lacked itself
    /// (only a pod the API server did not default, or defaulted in part, lacks one).
    absent: HashMap<(&'static str, String), Vec<&'static str>>,
    limit_ranger_annotation: Option<String>,
}

/// The pull policy defaulting gives a container with this image.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.split_once(':').map(|(_, t)| t) {
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn is_default_toleration(t: Node) -> bool {
    if !t.is_object() {
        return false;
    }
    let key = t.field("key").and_then(Node::as_str).unwrap_or_default();
    DEFAULT_TOLERATION_KEYS.contains(&key)
        && t.field("operator").is_some_and(|v| DefaultValue::Str("Exists").is(v))
        && t.field("effect").is_some_and(|v| DefaultValue::Str("NoExecute").is(v))
        && t.field("tolerationSeconds").is_some_and(|v| DefaultValue::Int(300).is(v))
        && t.len() == 4
}

/// Whether `tolerations` already tolerate the NoExecute taint `key`, as DefaultTolerationSeconds checks.
fn tolerates(tolerations: Node, key: &str) -> bool {
    tolerations.items().into_iter().flatten().any(|t| {
        let k = t.field("key").and_then(Node::as_str).unwrap_or_default();
        let effect = t.field("effect").and_then(Node::as_str).unwrap_or_default();
        (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
    })
}

fn is_token_volume(v: Node) -> bool {
    let named = v.field("name").and_then(Node::as_str).is_some_and(|n| n.starts_with("kube-api-access-"));
    named
        && v.field("projected")
            .and_then(|p| p.field("sources"))
            .and_then(Node::items)
            .is_some_and(|mut s| s.any(|s| s.field("serviceAccountToken").is_some()))
}

/// Takes the values the API server filled in out of `pod` (the pod's layer). Only the objects
/// and lists that lose something are opened; the values taken stay borrowed from the pod.
pub fn strip<'a>(pod: &mut Draft<'a>) -> ApiDefaults<'a> {
    let mut found = ApiDefaults::default();
    let limit_ranger = pod
        .node()
        .field("metadata")
        .and_then(|m| m.field("annotations"))
        .and_then(|a| a.field(LIMIT_RANGER))
        .and_then(Node::as_str)
        .map(str::to_owned);
    let Some(spec) = pod.object_mut().and_then(|p| p.get_mut("spec")).and_then(Draft::object_mut) else {
        return found;
    };
    // Decide on the pod as it came, then take what goes out in one pass.
    let mut out: Vec<&'static str> = Vec::with_capacity(SPEC_DEFAULTS.len() + 7);
    for (name, default) in SPEC_DEFAULTS {
        if spec.get(name).is_some_and(|v| default.is(v.node())) {
            out.push(name);
        }
    }
    if let Some(alias) = spec.get("serviceAccount") {
        let name = spec.get("serviceAccountName");
        if name.is_none_or(|n| n.node().eq(alias.node())) || out.contains(&"serviceAccountName") {
            out.push("serviceAccount");
            found.service_account_alias = true;
        }
    }
    // what the API server never sends: a pod's `false` there is lost before any webhook, and
    // render drops it too, to give the pod the cluster stores (the template's `true` wins)
    out.extend(plain_booleans(Kind::Spec).filter(|n| spec.get(n).is_some_and(|v| is_false(v.node()))));
    let mut priority = false;
    if spec.get("priorityClassName").is_none()
        && spec.get("priority").is_some_and(|p| DefaultValue::Int(0).is(p.node()))
    {
        priority = true;
        out.push("priority");
        if spec.get("preemptionPolicy").is_some_and(|p| DefaultValue::Str("PreemptLowerPriority").is(p.node())) {
            out.push("preemptionPolicy");
        }
    }
    if let Some(tolerations) = spec.get_mut("tolerations").and_then(Draft::array_mut) {
        let defaults = tolerations.iter().filter(|t| is_default_toleration(t.node())).count();
        if defaults == tolerations.len() {
            // the usual case: only the defaults (or none)
            found.tolerations = std::mem::take(tolerations);
        } else if defaults > 0 {
            let (defaults, others) =
                std::mem::take(tolerations).into_iter().partition(|t| is_default_toleration(t.node()));
            found.tolerations = defaults;
            *tolerations = others;
        }
        if tolerations.is_empty() && !found.tolerations.is_empty() {
            out.push("tolerations");
        }
    }
    let mut taken = take_out(spec, &out);
    let mut take = |name: &str| taken.iter_mut().find(|(n, _)| *n == name).map(|(_, v)| std::mem::replace(v, NULL));
    for (name, _) in SPEC_DEFAULTS {
        if let Some(value) = take(name) {
            found.spec.push((name, value));
        }
    }
    if priority {
        found.priority = Some((take("priority").unwrap_or(NULL), take("preemptionPolicy")));
    }
    found.token_volume = spec
        .get("volumes")
        .and_then(|vs| vs.node().items())
        .and_then(|mut vs| vs.find(|v| is_token_volume(*v)))
        .and_then(|v| v.field("name")?.as_str().map(str::to_owned));
    // what LimitRanger set, by container: (kind, container) to (field, resource)
    let mut set_by_limit_ranger: HashMap<(&str, String), Vec<(&str, String)>> = HashMap::new();
    for (kind, container, field, resource) in limit_ranger.as_deref().map(parse_limit_ranger).unwrap_or_default() {
        set_by_limit_ranger.entry((kind, container)).or_default().push((field, resource));
    }
    for (list, label) in CONTAINER_LISTS {
        for c in spec.get_mut(list).and_then(Draft::array_mut).into_iter().flatten() {
            let node = c.node();
            if !node.is_object() {
                continue;
            }
            let mut out: Vec<&'static str> = Vec::with_capacity(CONTAINER_DEFAULTS.len() + 4);
            out.extend(plain_booleans(Kind::Container).filter(|n| node.field(n).is_some_and(is_false)));
            let false_in_mounts = node.field("volumeMounts").and_then(Node::items).is_some_and(|mut ms| {
                ms.any(|m| plain_booleans(Kind::Mount).any(|n| m.field(n).is_some_and(is_false)))
            });
            let absent: Vec<&'static str> = ["imagePullPolicy"]
                .into_iter()
                .chain(CONTAINER_DEFAULTS.iter().map(|(n, _)| *n))
                .filter(|n| node.field(n).is_none())
                .collect();
            if !absent.is_empty()
                && let Some(name) = node.field("name").and_then(Node::as_str)
            {
                found.absent.insert((list, name.to_owned()), absent);
            }
            let default_policy = node.field("image").and_then(Node::as_str).map(default_pull_policy);
            if let (Some(default_policy), Some(policy)) =
                (default_policy, node.field("imagePullPolicy").and_then(Node::as_str))
                && policy == default_policy
            {
                out.push("imagePullPolicy");
                found.image_pull_policy = true;
            }
            for (name, default) in CONTAINER_DEFAULTS {
                if node.field(name).and_then(Node::as_str) == Some(default) {
                    out.push(name);
                    if !found.container.contains(&name) {
                        found.container.push(name);
                    }
                }
            }
            if out.is_empty() && set_by_limit_ranger.is_empty() && !false_in_mounts {
                continue;
            }
            let Some(c) = c.object_mut() else { continue };
            take_out(c, &out);
            if false_in_mounts {
                for m in c.get_mut("volumeMounts").and_then(Draft::array_mut).into_iter().flatten() {
                    let names: Vec<&'static str> =
                        plain_booleans(Kind::Mount).filter(|n| m.node().field(n).is_some_and(is_false)).collect();
                    if let (false, Some(m)) = (names.is_empty(), m.object_mut()) {
                        take_out(m, &names);
                    }
                }
            }
            if set_by_limit_ranger.is_empty() {
                continue;
            }
            let cname = c.get("name").and_then(|n| n.node().as_str()).unwrap_or_default().to_owned();
            let key = (label, cname);
            let Some(set) = set_by_limit_ranger.get(&key) else { continue };
            for field in ["requests", "limits"] {
                let names: HashSet<&str> = set.iter().filter(|(f, _)| *f == field).map(|(_, r)| r.as_str()).collect();
                if names.is_empty() {
                    continue;
                }
                let values = c.get_mut("resources").and_then(Draft::object_mut).and_then(|r| r.get_mut(field));
                let Some(values) = values.and_then(Draft::object_mut) else { continue };
                values.retain(|resource, v| {
                    if !names.contains(resource) {
                        return true;
                    }
                    found.limit_ranger_of.entry((list, key.1.clone())).or_default().push(found.limit_ranger.len());
                    found.limit_ranger.push((
                        list,
                        key.1.clone(),
                        field,
                        resource.to_owned(),
                        std::mem::replace(v, NULL),
                    ));
                    false
                });
            }
        }
    }
    if !found.limit_ranger.is_empty() {
        found.limit_ranger_annotation = limit_ranger;
    }
    found
}

fn is_false(value: Node) -> bool {
    DefaultValue::Bool(false).is(value)
}

/// A placeholder for a value taken out.
const NULL: Draft<'static> = Draft::Borrowed(&Value::Null);

/// Takes the entries named `names` out of `map`, keeping the order of the others; returns
/// them with their values.
fn take_out<'a>(map: &mut Object<'a>, names: &[&'static str]) -> Vec<(&'static str, Draft<'a>)> {
    let mut taken = Vec::with_capacity(names.len());
    if !names.is_empty() {
        map.retain(|k, v| match names.iter().find(|n| same_key(n, k)) {
            Some(name) => {
                taken.push((*name, std::mem::replace(v, NULL)));
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
pub fn restore<'a>(pod: &mut Draft<'a>, found: &ApiDefaults<'a>) {
    let mut limit_ranger_kept = Vec::new();
    if let Some(spec) = pod.object_mut().and_then(|p| p.get_mut("spec")).and_then(Draft::object_mut) {
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

fn restore_spec<'a>(
    spec: &mut Object<'a>,
    found: &ApiDefaults<'a>,
    kept: &mut Vec<(&'static str, String, &'static str, String)>,
) {
    for (name, default) in &found.spec {
        if !spec.contains(name) {
            spec.push(Cow::Borrowed(name), default.clone());
        }
    }
    if (found.service_account_alias || spec.contains("serviceAccount"))
        && let Some(name) = spec.get("serviceAccountName").cloned()
    {
        spec.insert("serviceAccount", name);
    }
    if let Some((priority, preemption)) = &found.priority
        && !spec.contains("priorityClassName")
        && !spec.contains("priority")
    {
        spec.push(Cow::Borrowed("priority"), priority.clone());
        if let Some(p) = preemption {
            spec.entry("preemptionPolicy", || p.clone());
        }
    }
    if !found.tolerations.is_empty() {
        let list = spec.entry("tolerations", || Draft::owned(json!([])));
        if list.node().is_array() {
            // the keys looked at so far: a toleration of one is added at most once, so the
            // list is read once for each key, not for each of the pod's copies
            let mut seen: Vec<&str> = Vec::with_capacity(DEFAULT_TOLERATION_KEYS.len());
            for t in &found.tolerations {
                let key = t.node().field("key").and_then(Node::as_str).unwrap_or_default();
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                if !tolerates(list.node(), key)
                    && let Some(list) = list.array_mut()
                {
                    list.push(t.clone());
                }
            }
        }
    }
    let automount = !spec.get("automountServiceAccountToken").is_some_and(|a| DefaultValue::Bool(false).is(a.node()));
    if let (Some(token), false) = (&found.token_volume, automount)
        && let Some(volumes) = spec.get_mut("volumes").and_then(Draft::array_mut)
    {
        volumes.retain(|v| v.node().field("name").and_then(Node::as_str) != Some(token));
    }
    for (list, _) in CONTAINER_LISTS {
        for c in spec.get_mut(list).and_then(Draft::array_mut).into_iter().flatten() {
            let Some(c) = c.object_mut() else { continue };
            restore_container(c, list, found, automount, kept);
        }
    }
}

fn restore_container<'a>(
    c: &mut Object<'a>,
    list: &'static str,
    found: &ApiDefaults<'a>,
    automount: bool,
    kept: &mut Vec<(&'static str, String, &'static str, String)>,
) {
    let absent = if found.absent.is_empty() {
        None
    } else {
        c.get("name").and_then(|n| n.node().as_str()).and_then(|n| found.absent.get(&(list, n.to_owned())))
    };
    let lacked = |name: &str| absent.is_some_and(|a| a.contains(&name));
    if found.image_pull_policy
        && !c.contains("imagePullPolicy")
        && !lacked("imagePullPolicy")
        && let Some(image) = c.get("image").and_then(|i| i.node().as_str())
    {
        let policy = default_pull_policy(image);
        c.push(Cow::Borrowed("imagePullPolicy"), Draft::owned(json!(policy)));
    }
    for (name, default) in CONTAINER_DEFAULTS {
        if found.container.contains(&name) && !c.contains(name) && !lacked(name) {
            c.push(Cow::Borrowed(name), Draft::owned(json!(default)));
        }
    }
    if !found.limit_ranger.is_empty() {
        restore_limit_ranger(c, list, found, kept);
    }
    let Some(token) = &found.token_volume else { return };
    let mounts = c.entry("volumeMounts", || Draft::owned(json!([])));
    if !mounts.node().is_array() {
        return;
    }
    if automount {
        let mounted = mounts
            .node()
            .items()
            .into_iter()
            .flatten()
            .any(|m| m.field("mountPath").and_then(Node::as_str) == Some(TOKEN_MOUNT_PATH));
        if !mounted && let Some(mounts) = mounts.array_mut() {
            mounts.push(Draft::owned(json!({"name": token, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH})));
        }
    } else if let Some(mounts) = mounts.array_mut() {
        mounts.retain(|m| m.node().field("name").and_then(Node::as_str) != Some(token));
    }
    if mounts.node().len() == 0 {
        c.remove("volumeMounts");
    }
}

fn restore_limit_ranger<'a>(
    c: &mut Object<'a>,
    list: &'static str,
    found: &ApiDefaults<'a>,
    kept: &mut Vec<(&'static str, String, &'static str, String)>,
) {
    let cname = c.get("name").and_then(|n| n.node().as_str()).unwrap_or_default().to_owned();
    let Some(mine) = found.limit_ranger_of.get(&(list, cname)) else { return };
    for field in ["requests", "limits"] {
        let mut taken = mine.iter().filter_map(|&i| found.limit_ranger.get(i)).filter(|(_, _, f, ..)| *f == field);
        let Some(first) = taken.next() else { continue };
        let resources = c.entry("resources", Draft::empty_object);
        let Some(values) =
            resources.object_mut().map(|r| r.entry(field, Draft::empty_object)).and_then(Draft::object_mut)
        else {
            continue;
        };
        let mut present: HashSet<String> = values.keys().map(str::to_owned).collect();
        for (l, container, field, resource, value) in std::iter::once(first).chain(taken) {
            if present.insert(resource.clone()) {
                values.push(Cow::Owned(resource.clone()), value.clone());
                kept.push((l, container.clone(), field, resource.clone()));
            }
        }
    }
}

/// The LimitRanger annotation for the values it set that are still in the pod, in its own format.
fn limit_ranger_text(kept: &[(&'static str, String, &'static str, String)]) -> Option<String> {
    let mut parts = Vec::new();
    for (list, label) in CONTAINER_LISTS {
        // each container's resources by field, the containers in order
        let mut names: Vec<&str> = Vec::new();
        let mut of: HashMap<&str, [Vec<&str>; 2]> = HashMap::new();
        for (_, name, field, resource) in kept.iter().filter(|k| k.0 == list) {
            let fields = of.entry(name).or_insert_with(|| {
                names.push(name);
                Default::default()
            });
            fields[usize::from(*field == "limits")].push(resource);
        }
        for name in names {
            let Some(fields) = of.get_mut(name) else { continue };
            let segments: Vec<String> = fields
                .iter_mut()
                .zip(["request", "limit"])
                .filter(|(r, _)| !r.is_empty())
                .map(|(r, word)| {
                    r.sort_unstable();
                    format!("{} {word} for {label} {name}", r.join(", "))
                })
                .collect();
            parts.push(segments.join("; "));
        }
    }
    (!parts.is_empty()).then(|| format!("{LIMIT_RANGER_PREFIX}{}", parts.join("; ")))
}

fn set_annotation(pod: &mut Draft<'_>, key: &'static str, value: Option<String>) {
    let Some(meta) = pod.object_mut().and_then(|p| p.get_mut("metadata")).and_then(Draft::object_mut) else {
        return;
    };
    match value {
        Some(v) => {
            let annotations = meta.entry("annotations", Draft::empty_object);
            if let Some(a) = annotations.object_mut() {
                a.insert(key, Draft::owned(Value::String(v)));
            }
        }
        None => {
            if let Some(a) = meta.get_mut("annotations").and_then(Draft::object_mut) {
                a.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// `strip` on a value: the pod's layer, and what was taken.
    fn stripped(pod: &Value) -> (Value, ApiDefaults<'_>) {
        let mut layer = Draft::Borrowed(pod);
        let found = strip(&mut layer);
        (layer.into_value(), found)
    }

    /// `restore` on a value.
    fn restored(pod: Value, found: &ApiDefaults) -> Value {
        let mut draft = Draft::owned(pod);
        restore(&mut draft, found);
        draft.into_value()
    }

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

    /// Found by the fuzzer (mutate_body): a pod defaulted in one container and not in another
    /// gained the default in the other on a second pass. A container keeps lacking what it
    /// came without; a container new to the pod gets the defaults.
    #[test]
    fn a_container_that_came_without_a_default_does_not_gain_it() {
        let original = json!({"spec": {"containers": [
            {"name": "base", "image": "a:1", "imagePullPolicy": "IfNotPresent",
             "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
            {"name": "bare", "image": "b:1"}]}});
        let (mut pod, found) = stripped(&original);
        if let Some(c) = pod["spec"]["containers"].as_array_mut() {
            c.push(json!({"name": "new", "image": "c"}))
        }
        let back = restored(pod, &found);
        let containers = &back["spec"]["containers"];
        assert_eq!(containers[0], original["spec"]["containers"][0], "the defaulted one gets its own back");
        assert_eq!(containers[1], json!({"name": "bare", "image": "b:1"}), "the bare one stays bare");
        assert_eq!(containers[2]["imagePullPolicy"], "Always", "a new one is defaulted as the pod was");
        assert_eq!(containers[2]["terminationMessagePolicy"], "File");
    }

    #[test]
    fn template_values_win_over_api_defaults_and_defaults_fill_the_rest() {
        let original = json!({"metadata": {}, "spec": {
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30,
            "serviceAccountName": "default", "serviceAccount": "default", "priority": 0,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "containers": [{"name": "base", "image": "a:1", "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]}});
        let (mut pod, found) = stripped(&original);
        assert_eq!(pod, json!({"metadata": {}, "spec": {"containers": [{"name": "base", "image": "a:1"}]}}));
        // the merge: a template says Never and a service account; a sidecar and a blanket toleration
        pod["spec"]["restartPolicy"] = json!("Never");
        pod["spec"]["serviceAccountName"] = json!("worker");
        pod["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]);
        if let Some(c) = pod["spec"]["containers"].as_array_mut() {
            c.push(json!({"name": "side", "image": "s"}))
        }
        let pod = restored(pod, &found);
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

    /// A pod's `false` in a plain boolean never reaches a webhook in the cluster (the API server
    /// decodes it away), so the pod's layer drops it for good: it is not given back, and the
    /// other fields stay where they were.
    #[test]
    fn plain_false_booleans_leave_the_pod_layer_and_stay_out() {
        let original = json!({"metadata": {}, "spec": {
            "hostIPC": false, "hostNetwork": true, "automountServiceAccountToken": false,
            "containers": [{"name": "base", "image": "a:1", "stdin": false, "tty": true,
                            "volumeMounts": [{"name": "logs", "mountPath": "/logs", "readOnly": false},
                                             {"name": "data", "mountPath": "/data", "readOnly": true}]}]}});
        let (pod, found) = stripped(&original);
        assert_eq!(
            pod,
            json!({"metadata": {}, "spec": {
                "hostNetwork": true, "automountServiceAccountToken": false,
                "containers": [{"name": "base", "image": "a:1", "tty": true,
                                "volumeMounts": [{"name": "logs", "mountPath": "/logs"},
                                                 {"name": "data", "mountPath": "/data", "readOnly": true}]}]}})
        );
        assert_eq!(restored(pod.clone(), &found), pod);
    }

    #[test]
    fn token_volume_follows_automount() {
        let volume = json!({"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}});
        let mount = json!({"name": "kube-api-access-x", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        let pod = json!({"spec": {"volumes": [volume.clone()], "containers": [{"name": "base", "volumeMounts": [mount.clone()]}]}});
        let (layer, found) = stripped(&pod);
        let mut merged = layer.clone();
        if let Some(c) = merged["spec"]["containers"].as_array_mut() {
            c.push(json!({"name": "side"}))
        }
        let merged = restored(merged, &found);
        assert_eq!(merged["spec"]["containers"][1]["volumeMounts"], json!([mount]));
        let mut merged = layer;
        merged["spec"]["automountServiceAccountToken"] = json!(false);
        let merged = restored(merged, &found);
        assert_eq!(merged["spec"]["volumes"], json!([]));
        assert_eq!(merged["spec"]["containers"][0].get("volumeMounts"), None);
    }

    #[test]
    fn limit_ranger_values_give_way_and_the_annotation_says_what_is_left() {
        let original = json!({"metadata": {"annotations": {LIMIT_RANGER: "LimitRanger plugin set: cpu, memory request for container base"}},
            "spec": {"containers": [{"name": "base", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}});
        let (mut pod, found) = stripped(&original);
        assert_eq!(pod["spec"]["containers"][0]["resources"], json!({"requests": {}}));
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("500m");
        let pod = restored(pod, &found);
        assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"], json!({"cpu": "500m", "memory": "64Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"][LIMIT_RANGER],
            "LimitRanger plugin set: memory request for container base"
        );
    }
}
