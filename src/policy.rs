//! `podtailor policy`: the webhook's merge as native admission policies (docs/policy.md).
//!
//! One MutatingAdmissionPolicy whose JSONPatch mutations run in order: the template layer
//! (what the template adds where the pod has nothing, or only an API default), then for each
//! position of the annotation's list the override named there (its pod fragment, then its
//! resources and secrets on the target container), then the applied-marker. The overrides
//! are compiled into the policy. A ValidatingAdmissionPolicy denies a pod naming an override
//! the policy does not know, naming one twice, or more than the policy has positions for.
//! What the policy could not do as the webhook does is refused here, naming the field.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::merge::schema::{Element, Kind, List, field};
use crate::merge::{APPLIED_ANNOTATION, OVERRIDE_ANNOTATION, Override, Template};
use crate::store;

#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// The platform's default worker pod (a v1 Pod, YAML or JSON).
    #[arg(long, value_name = "FILE", env = "PODTAILOR_TEMPLATE")]
    pub template: PathBuf,
    /// A directory of PodOverride files (*.yaml, *.yml, *.json), compiled into the policy.
    #[arg(long, value_name = "DIR", env = "PODTAILOR_OVERRIDES", conflicts_with = "cluster")]
    pub overrides: Option<PathBuf>,
    /// Compile the PodOverrides of every namespace of the cluster instead, listed once through
    /// KUBECONFIG (or ~/.kube/config, or the pod's service account). An object that does not
    /// load is left out with a warning: pods naming it are denied, as the webhook denies them.
    #[arg(long)]
    pub cluster: bool,
    /// Only these namespaces (repeatable): their PodOverrides (and those of files without a
    /// namespace) are compiled, and the policies match their pods alone, so that a cluster can
    /// serve some namespaces by policy and the others by the webhook. Default: every namespace
    /// but kube-system and podtailor-system.
    #[arg(long = "namespace", short = 'n', value_name = "NS", value_parser = namespace_name)]
    pub namespaces: Vec<String>,
    /// How many overrides a pod may name (positions of the annotation); default: as many as
    /// there are overrides, at most 5. A pod naming more is denied.
    #[arg(long, value_name = "N")]
    pub positions: Option<usize>,
    /// The name of the policies and their bindings.
    #[arg(long, value_name = "NAME", default_value = "podtailor")]
    pub name: String,
}

fn namespace_name(s: &str) -> Result<String, String> {
    crate::validate::dns_label(s).map(|()| s.to_owned()).map_err(|why| format!("not a namespace name: {why}"))
}

/// Why the generator refuses: the layer (template or override), the field and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{layer}: {path}: {why}")]
pub struct Refusal {
    pub layer: String,
    pub path: String,
    pub why: String,
}

/// Runs `policy` and returns the YAML to print.
pub fn run(args: &PolicyArgs) -> Result<String, String> {
    let config = store::files::load_flags(store::files::Flags {
        template: &args.template,
        overrides: args.overrides.as_deref(),
        namespace_templates: None,
        namespace_template_name: "",
    })
    .map_err(|e| e.to_string())?;
    let from_cluster = if args.cluster { from_cluster()? } else { Vec::new() };
    let template = &config.template;
    let mut loaded: Vec<(Option<String>, &Override)> =
        config.overrides.iter().chain(&from_cluster).map(|l| (l.namespace.clone(), l.r#override.as_ref())).collect();
    if !args.namespaces.is_empty() {
        loaded.retain(|(ns, _)| ns.as_ref().is_none_or(|ns| args.namespaces.contains(ns)));
    }
    // namespaced before global (a namespace's own wins), then by namespace and name
    loaded.sort_by(|a, b| (a.0.is_none(), &a.0, &a.1.name).cmp(&(b.0.is_none(), &b.0, &b.1.name)));
    let positions = args.positions.unwrap_or(loaded.len().min(5));
    let mut objects = generate(template, &loaded, positions, &args.name).map_err(|r| r.to_string())?;
    if !args.namespaces.is_empty() {
        let only = json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": args.namespaces});
        for o in &mut objects {
            if let Some(Value::Array(list)) = o.pointer_mut("/spec/matchConstraints/namespaceSelector/matchExpressions")
            {
                list.push(only.clone());
            }
        }
    }
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&crate::yaml::to_string(&o).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// The cluster's PodOverrides (`--cluster`), listed once; those that do not load are named on
/// stderr and left out.
fn from_cluster() -> Result<Vec<store::Loaded>, String> {
    crate::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("--cluster: cannot start the client's runtime: {e}"))?;
    runtime.block_on(async {
        let config = kube::Config::infer().await.map_err(|e| {
            format!("--cluster: cannot configure a Kubernetes client (KUBECONFIG, ~/.kube/config or a pod's service account): {e}")
        })?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config)
            .map_err(|e| format!("--cluster: cannot make a Kubernetes client for {server}: {e}"))?;
        let (loaded, bad) = store::cluster::list_once(client).await.map_err(|e| format!("--cluster ({server}): {e}"))?;
        for b in bad {
            eprintln!("podtailor policy: warning: PodOverride {b}; left out (pods naming it are denied)");
        }
        Ok(loaded)
    })
}

const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const NAMES: &str = "variables.names";

/// The four objects: the mutating policy and its binding, the validating policy and its binding.
pub fn generate(
    template: &Template,
    overrides: &[(Option<String>, &Override)],
    positions: usize,
    name: &str,
) -> Result<Vec<Value>, Refusal> {
    let mut g = Gen::default();
    let refuse =
        |layer: &str, path: &str, why: &str| Refusal { layer: layer.into(), path: path.into(), why: why.into() };
    if let Some(path) = template.needs_namespace() {
        return Err(refuse("template", path, "{{namespace}} is not expanded by the policy mode"));
    }
    let pod = template.pod().as_object().cloned().unwrap_or_default();
    let mut mutations = Vec::new();
    for section in ["metadata", "spec"] {
        let Some(Value::Object(t)) = pod.get(section) else { continue };
        check(t, if section == "spec" { Kind::Spec } else { Kind::Meta }, section, "template")?;
        let e = format!("object.{section}");
        let ptr = Ptr::root().key(section);
        let kind = field(Kind::Pod, section).kind;
        let ops = g.template_object(&ptr, &e, t, kind).map_err(|w| refuse("template", section, &w))?;
        mutations.push(mutation(&format!("has({e}) ? {} : [{}]", join(&ops), add(&ptr, &lit_object(t)))));
    }
    let mut hasher = Sha256::new();
    hasher.update(crate::merge::canonical_text(template.pod()));
    for (ns, o) in overrides {
        let layer = layer_of(ns.as_deref(), o);
        hasher.update(format!("{ns:?}/{}", o.name));
        hasher.update(serde_json::to_string(o.spec()).unwrap_or_default());
        if let Some(fragment) = &o.spec().pod {
            check_fragment(fragment, &layer)?;
        }
        for s in &o.spec().secrets {
            if s.key.is_none() && s.deploy_type == crate::crd::DeployType::Env {
                return Err(refuse(
                    &layer,
                    "spec.secrets",
                    "an env secret without a key (an envFrom entry) is not merged by the policy mode yet",
                ));
            }
        }
    }
    // the API server defaults a request from its limit after each mutation: a limit the
    // template gives alone would become the request before an override's limit comes
    let template_limits_only: Vec<String> = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            let r = &c["resources"];
            r["limits"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| r["requests"].get(k.as_str()).is_none())
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    for (ns, o) in overrides {
        let Some(res) = &o.spec().resources else { continue };
        for k in res.limits.iter().flat_map(|l| l.keys()) {
            if template_limits_only.contains(k) && !res.requests.as_ref().is_some_and(|r| r.contains_key(k)) {
                return Err(refuse(
                    &layer_of(ns.as_deref(), o),
                    &format!("spec.resources.limits.{k}"),
                    "the template's limit without a request becomes the request (API defaulting between mutations) before this limit replaces it; give the template or the override a request",
                ));
            }
        }
    }
    let hash = crate::merge::hex(&hasher.finalize()[..8]);
    // the override ops, compiled once each
    let mut compiled = Vec::new();
    for (ns, o) in overrides {
        let layer = format!("PodOverride {:?}", o.name);
        let fragment = match o.spec().pod.as_ref().and_then(Value::as_object) {
            Some(f) => {
                let mut parts = Vec::new();
                for section in ["metadata", "spec"] {
                    if let Some(Value::Object(f)) = f.get(section) {
                        let ptr = Ptr::root().key(section);
                        let e = format!("object.{section}");
                        let ops = g
                            .override_object(&ptr, &e, f, field(Kind::Pod, section).kind)
                            .map_err(|w| refuse(&layer, section, &w))?;
                        parts.push(format!("(has({e}) ? {} : [{}])", join(&ops), add(&ptr, &lit_object(&cleaned(f)))));
                    }
                }
                join(&parts)
            }
            None => "[]".into(),
        };
        let target = g.target_ops(o).map_err(|w| refuse(&layer, "spec", &w))?;
        let guard = match ns {
            Some(ns) => format!(" && request.namespace == {}", q(ns)),
            None => String::new(),
        };
        compiled.push((q(&o.name), guard, fragment, target));
    }
    for i in 0..positions {
        for part in [2, 3] {
            let mut expr = "[]".to_owned();
            for (n, guard, fragment, target) in compiled.iter().rev() {
                let ops = if part == 2 { fragment } else { target };
                if ops != "[]" {
                    expr = format!("{NAMES}.size() > {i} && {NAMES}[{i}] == {n}{guard} ? {ops} : {expr}");
                }
            }
            if expr != "[]" {
                mutations.push(mutation(&expr));
            }
        }
    }
    let marker = Ptr::root().key("metadata").key("annotations").key(APPLIED_ANNOTATION);
    mutations.push(mutation(&format!(
        "[{}]",
        op(
            "add",
            &marker,
            Some(&format!("'overrides=' + {NAMES}.join(',') + '; policy={name}; config=sha256:{hash}'"))
        )
    )));
    let mut rules = validations(overrides, positions);
    rules.extend(limits_alone(&pod, overrides));
    Ok(objects(name, mutations, rules))
}

/// Rules denying a pod that names two overrides which each give the same container a limit
/// without its request, for a resource the template does not request: the API server defaults
/// the request from the first limit between the two mutations, so the second limit would leave
/// it (through the webhook, the request defaults from the final limit). Generating the policy
/// is not refused for a pair that may never be named together.
fn limits_alone(template: &Map<String, Value>, overrides: &[(Option<String>, &Override)]) -> Vec<Value> {
    let containers: Vec<&Value> = template
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let requested =
        |k: &str| !containers.is_empty() && containers.iter().all(|c| c["resources"]["requests"].get(k).is_some());
    let alone = |o: &Override| -> Vec<String> {
        let Some(res) = &o.spec().resources else { return Vec::new() };
        res.limits
            .iter()
            .flat_map(|l| l.keys())
            .filter(|k| !res.requests.as_ref().is_some_and(|r| r.contains_key(*k)) && !requested(k))
            .cloned()
            .collect()
    };
    let mut rules = Vec::new();
    for (i, (ns_a, a)) in overrides.iter().enumerate() {
        for (ns_b, b) in &overrides[i + 1..] {
            let guard = match (ns_a, ns_b) {
                (Some(x), Some(y)) if x != y => continue,
                (Some(n), _) | (_, Some(n)) => format!(" && request.namespace == {}", q(n)),
                (None, None) => String::new(),
            };
            if let (Some(x), Some(y)) = (&a.spec().container, &b.spec().container)
                && x != y
            {
                continue;
            }
            let (la, lb) = (alone(a), alone(b));
            let Some(k) = la.iter().find(|k| lb.contains(k)) else { continue };
            rules.push(json!({
                "expression": format!("!({} in {NAMES} && {} in {NAMES}{guard})", q(&a.name), q(&b.name)),
                "message": format!(
                    "podtailor: PodOverrides {:?} and {:?} both give limits.{k} without a request: in policy mode the first limit would stay the request (API defaulting between mutations); give a request in one of them, or use the webhook",
                    a.name, b.name
                ),
            }));
        }
    }
    rules
}

/// How a refusal names an override: `PodOverride "name"`, with its namespace if it has one.
fn layer_of(ns: Option<&str>, o: &Override) -> String {
    let ns = ns.map(|n| format!(" in namespace {n:?}")).unwrap_or_default();
    format!("PodOverride {:?}{ns}", o.name)
}

/// The lists the policy cannot merge as the engine does, and the values it cannot write.
fn check(t: &Map<String, Value>, kind: Kind, path: &str, layer: &str) -> Result<(), Refusal> {
    let refuse = |p: &str, why: &str| Err(Refusal { layer: layer.into(), path: p.into(), why: why.into() });
    for (k, v) in t {
        let at = format!("{path}.{k}");
        if k.starts_with('$') {
            return refuse(&at, "strategic-merge directives are not supported by the policy mode");
        }
        match (kind, k.as_str()) {
            (Kind::Spec, "priorityClassName" | "priority" | "preemptionPolicy") => {
                return refuse(&at, "the Priority plugin resolved spec.priority before any policy runs");
            }
            (Kind::Spec, "tolerations") => {
                return refuse(&at, "the default NoExecute tolerations cannot be kept as the webhook keeps them yet");
            }
            (Kind::Spec, "automountServiceAccountToken") if v == &Value::Bool(false) => {
                return refuse(&at, "the service-account token volume the API server added would have to go");
            }
            (Kind::Spec, "ephemeralContainers") => return refuse(&at, "not set at pod creation"),
            (Kind::Container, "envFrom") if layer != "template" => {
                return refuse(&at, "the keyed-set merge of envFrom is not written in CEL yet");
            }
            _ => {}
        }
        let f = field(kind, k);
        if f.list == List::Set {
            return refuse(&at, "a set list is not merged by the policy mode");
        }
        match v {
            Value::Object(m) => check(m, f.kind, &at, layer)?,
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Object(m) = item {
                        check(m, f.kind, &format!("{at}[{i}]"), layer)?;
                    }
                }
            }
            Value::Number(n) if !n.is_i64() => return refuse(&at, "a number that is not an integer"),
            _ => {}
        }
    }
    Ok(())
}

fn check_fragment(fragment: &Value, layer: &str) -> Result<(), Refusal> {
    let Some(f) = fragment.as_object() else { return Ok(()) };
    for section in ["metadata", "spec"] {
        if let Some(Value::Object(m)) = f.get(section) {
            let kind = field(Kind::Pod, section).kind;
            check(m, kind, section, layer)?;
            if section == "spec" {
                for list in ["containers", "initContainers", "volumes"] {
                    if m.get(list).is_some_and(Value::is_null) {
                        return Err(Refusal {
                            layer: layer.into(),
                            path: format!("spec.{list}"),
                            why: "null would delete a list the API server and the template filled".into(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn validations(overrides: &[(Option<String>, &Override)], positions: usize) -> Vec<Value> {
    let globals: Vec<String> = overrides.iter().filter(|(ns, _)| ns.is_none()).map(|(_, o)| q(&o.name)).collect();
    let mut known = format!("[{}]", globals.join(", "));
    let mut namespaces: Vec<&str> = overrides.iter().filter_map(|(ns, _)| ns.as_deref()).collect();
    namespaces.dedup();
    for ns in namespaces {
        let names: Vec<String> =
            overrides.iter().filter(|(n, _)| n.as_deref() == Some(ns)).map(|(_, o)| q(&o.name)).collect();
        known = format!("{known} + (request.namespace == {} ? [{}] : [])", q(ns), names.join(", "));
    }
    let mut rules = vec![
        json!({
            "expression": format!("{NAMES}.all(n, n in {known})"),
            "messageExpression": format!("'podtailor: PodOverride ' + {NAMES}.filter(n, !(n in {known})).map(n, '\"' + n + '\"').join(', ') + ' not found in namespace \"' + request.namespace + '\" (the policy was generated without it)'"),
        }),
        json!({
            "expression": format!("{NAMES}.all(n, {NAMES}.filter(m, m == n).size() == 1)"),
            "messageExpression": format!("'podtailor: namespace \"' + request.namespace + '\": annotation {OVERRIDE_ANNOTATION} lists a name twice'"),
        }),
        json!({
            "expression": format!("{NAMES}.size() <= {positions}"),
            "message": format!("podtailor: the policy applies at most {positions} overrides to a pod"),
        }),
    ];
    for (ns, o) in overrides {
        if let Some(c) = &o.spec().container {
            let guard = ns.as_ref().map(|n| format!(" && request.namespace == {}", q(n))).unwrap_or_default();
            rules.push(json!({
                "expression": format!("!({} in {NAMES}{guard}) || object.spec.containers.exists(c, c.name == {})", q(&o.name), q(c)),
                "message": format!("podtailor: PodOverride {:?} cannot apply: container {c:?} not found in the pod", o.name),
            }));
        }
    }
    rules
}

fn objects(name: &str, mutations: Vec<Value>, validations: Vec<Value>) -> Vec<Value> {
    let api = "admissionregistration.k8s.io/v1";
    let constraints = json!({
        "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "podtailor-system"]}
        ]},
    });
    let conditions = json!([{"name": "opted-in", "expression": format!(
        "has(object.metadata.annotations) && '{OVERRIDE_ANNOTATION}' in object.metadata.annotations")}]);
    let annotation = format!("object.metadata.annotations['{OVERRIDE_ANNOTATION}']");
    let variables = json!([{"name": "names", "expression": format!(
        "{annotation}.trim() == '' ? [] : {annotation}.split(',').map(n, n.trim())")}]);
    let labels = json!({"app.kubernetes.io/name": "podtailor"});
    vec![
        json!({"apiVersion": api, "kind": "MutatingAdmissionPolicy", "metadata": {"name": name, "labels": labels},
            "spec": {"matchConstraints": constraints, "matchConditions": conditions, "variables": variables,
                "failurePolicy": "Fail", "reinvocationPolicy": "Never", "mutations": mutations}}),
        json!({"apiVersion": api, "kind": "MutatingAdmissionPolicyBinding", "metadata": {"name": name, "labels": labels},
            "spec": {"policyName": name}}),
        json!({"apiVersion": api, "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name, "labels": labels},
            "spec": {"matchConstraints": constraints, "matchConditions": conditions, "variables": variables,
                "failurePolicy": "Fail", "validations": validations}}),
        json!({"apiVersion": api, "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name, "labels": labels},
            "spec": {"policyName": name, "validationActions": ["Deny"]}}),
    ]
}

fn mutation(expression: &str) -> Value {
    json!({"patchType": "JSONPatch", "jsonPatch": {"expression": expression}})
}

/// A JSON pointer whose tokens are constants or CEL integer expressions.
#[derive(Clone)]
struct Ptr(Vec<Seg>);

#[derive(Clone)]
enum Seg {
    Key(String),
    Index(String),
    Append,
}

impl Ptr {
    fn root() -> Ptr {
        Ptr(Vec::new())
    }
    fn key(&self, k: &str) -> Ptr {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }
    fn index(&self, cel: &str) -> Ptr {
        let mut p = self.clone();
        p.0.push(Seg::Index(cel.to_owned()));
        p
    }
    fn append(&self) -> Ptr {
        let mut p = self.clone();
        p.0.push(Seg::Append);
        p
    }
    /// The pointer as a CEL string expression.
    fn cel(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut text = String::new();
        for s in &self.0 {
            match s {
                Seg::Key(k) => {
                    text.push('/');
                    text.push_str(&k.replace('~', "~0").replace('/', "~1"));
                }
                Seg::Append => text.push_str("/-"),
                Seg::Index(i) => {
                    text.push('/');
                    parts.push(q(&std::mem::take(&mut text)));
                    parts.push(format!("string({i})"));
                }
            }
        }
        if !text.is_empty() || parts.is_empty() {
            parts.push(q(&text));
        }
        parts.join(" + ")
    }
}

/// A CEL string literal.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A constant as a CEL value (`null`s, the engine's deletions, are left out).
fn lit(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => q(s),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(|i| format!("dyn({})", lit(i))).collect::<Vec<_>>().join(", "))
        }
        Value::Object(m) => lit_object(m),
    }
}

fn lit_object(m: &Map<String, Value>) -> String {
    let entries: Vec<String> = m.iter().map(|(k, v)| format!("{}: dyn({})", q(k), lit(v))).collect();
    format!("{{{}}}", entries.join(", "))
}

/// An override's value as it enters the pod: its nested nulls (deletions) dropped.
fn cleaned(m: &Map<String, Value>) -> Map<String, Value> {
    fn clean(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(cleaned(m)),
            Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
            v => v.clone(),
        }
    }
    m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), clean(v))).collect()
}

fn op(kind: &str, ptr: &Ptr, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("JSONPatch{{op: {}, path: {}, value: {v}}}", q(kind), ptr.cel()),
        None => format!("JSONPatch{{op: {}, path: {}}}", q(kind), ptr.cel()),
    }
}

fn add(ptr: &Ptr, value: &str) -> String {
    op("add", ptr, Some(value))
}

/// Concatenated lists of patch operations.
fn join(parts: &[String]) -> String {
    if parts.is_empty() { "[]".into() } else { parts.join(" + ") }
}

const RESERVED: [&str; 21] = [
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
    "true",
    "false",
    "null",
];

/// `(presence test, value)` of key `k` of the CEL object or map `e`.
fn access(e: &str, k: &str) -> (String, String) {
    let ident = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&k);
    if ident {
        (format!("has({e}.{k})"), format!("{e}.{k}"))
    } else {
        (format!("({} in {e})", q(k)), format!("{e}[{}]", q(k)))
    }
}

/// The value the API server defaults `k` of an object of `kind` to, as a CEL condition on
/// `value` (the engine takes such a value out of the pod's layer, so the template's wins).
fn api_default(kind: Kind, k: &str, e: &str, value: &str) -> Option<String> {
    let is = |d: &str| Some(format!("{value} == {d}"));
    match (kind, k) {
        (Kind::Spec, "restartPolicy") => is("'Always'"),
        (Kind::Spec, "dnsPolicy") => is("'ClusterFirst'"),
        (Kind::Spec, "schedulerName") => is("'default-scheduler'"),
        (Kind::Spec, "terminationGracePeriodSeconds") => is("30"),
        (Kind::Spec, "enableServiceLinks") => is("true"),
        (Kind::Spec, "serviceAccountName") => is("'default'"),
        (Kind::Container, "terminationMessagePath") => is("'/dev/termination-log'"),
        (Kind::Container, "terminationMessagePolicy") => is("'File'"),
        (Kind::Container, "imagePullPolicy") => {
            // default_pull_policy: a digest or a tag other than latest: IfNotPresent, else Always
            let name = format!("{e}.image.substring({e}.image.lastIndexOf('/') + 1)");
            Some(format!(
                "has({e}.image) && {value} == ({e}.image.contains('@') || ({name}.contains(':') && {name}.substring({name}.indexOf(':') + 1) != 'latest') ? 'IfNotPresent' : 'Always')"
            ))
        }
        _ => None,
    }
}

#[derive(Default)]
struct Gen {
    vars: usize,
}

impl Gen {
    fn var(&mut self) -> String {
        self.vars += 1;
        format!("v{}", self.vars)
    }

    /// The template under the pod's object `e` at `ptr`: the pod's values win, except API defaults.
    fn template_object(
        &mut self,
        ptr: &Ptr,
        e: &str,
        t: &Map<String, Value>,
        kind: Kind,
    ) -> Result<Vec<String>, String> {
        let mut ops = Vec::new();
        for (k, v) in t {
            let f = field(kind, k);
            let (has, value) = access(e, k);
            let at = ptr.key(k);
            let absent = match api_default(kind, k, e, &value) {
                Some(d) => format!("!{has} || ({d})"),
                None => format!("!{has}"),
            };
            let whole = match (f.list, v) {
                (List::Keyed { .. }, Value::Array(items))
                    if kind == Kind::Spec && matches!(k.as_str(), "containers" | "initContainers") =>
                {
                    format!(
                        "[{}]",
                        items.iter().map(|c| format!("dyn({})", container_lit(c))).collect::<Vec<_>>().join(", ")
                    )
                }
                _ => lit(v),
            };
            let set = format!("[{}]", add(&at, &whole));
            let sa = if kind == Kind::Spec && k == "serviceAccountName" {
                format!(" + (has({e}.serviceAccount) ? [{}] : [])", add(&ptr.key("serviceAccount"), &whole))
            } else {
                String::new()
            };
            let merged = match (v, f.list) {
                (Value::Object(m), _) => join(&self.template_object(&at, &value, m, f.kind)?),
                (Value::Array(items), List::Keyed { key, element }) => self.template_keyed(
                    &at,
                    &value,
                    items,
                    key,
                    element,
                    f.kind,
                    kind == Kind::Spec && matches!(k.as_str(), "containers" | "initContainers"),
                )?,
                (Value::Array(items), List::Sources) => self.template_sources(&at, &value, items),
                _ => "[]".into(),
            };
            ops.push(format!("({absent} ? {set}{sa} : {merged})"));
        }
        Ok(ops)
    }

    /// A keyed list of the template under the pod's: the template's elements first (the pod's
    /// own where it has one of that key), then the pod's others, as the engine orders them.
    /// The pod's elements are moved, never copied: a value taken from the object cannot be
    /// written back as a patch value (the API server cannot marshal typed objects).
    #[allow(clippy::too_many_arguments)]
    fn template_keyed(
        &mut self,
        at: &Ptr,
        l: &str,
        items: &[Value],
        key: &str,
        element: Element,
        kind: Kind,
        containers: bool,
    ) -> Result<String, String> {
        let keys: Vec<String> = items.iter().map(|i| lit(&i[key])).collect();
        let constants: Vec<String> = items.iter().map(|i| if containers { container_lit(i) } else { lit(i) }).collect();
        let (ks, ix) = (self.var(), self.var());
        let mut nested = Vec::new();
        for (j, item) in items.iter().enumerate() {
            if element == Element::Merge
                && let Value::Object(t) = item
            {
                let inner = self.template_object(&at.index(&j.to_string()), &format!("{l}[{ix}[{j}]]"), t, kind)?;
                if !inner.is_empty() {
                    nested.push(format!("({ix}[{j}] >= 0 ? {} : [])", join(&inner)));
                }
            }
        }
        let ops = reorder(at, &ks, &ix, &keys, &constants, nested);
        Ok(format!(
            "[{l}.map(x, x.{key})].map({ks}, [[{}].map(k, {ks}.indexOf(k))].map({ix}, {ops})[0])[0]",
            keys.join(", ")
        ))
    }

    /// envFrom of the template under the pod's: the pod's last entry of a source replaces the
    /// template's, the pod's others come after.
    fn template_sources(&mut self, at: &Ptr, l: &str, items: &[Value]) -> String {
        let sources: Vec<String> = items.iter().map(|i| q(&source_of(i))).collect();
        let constants: Vec<String> = items.iter().map(lit).collect();
        let (ks, ix) = (self.var(), self.var());
        let ops = reorder(at, &ks, &ix, &sources, &constants, Vec::new());
        format!(
            "[{l}.map(x, {})].map({ks}, [[{}].map(k, {ks}.lastIndexOf(k))].map({ix}, {ops})[0])[0]",
            source_cel("x"),
            sources.join(", ")
        )
    }

    /// An override's pod fragment `f` onto the pod's object `e` at `ptr`: the override wins,
    /// a null deletes.
    fn override_object(
        &mut self,
        ptr: &Ptr,
        e: &str,
        f: &Map<String, Value>,
        kind: Kind,
    ) -> Result<Vec<String>, String> {
        let mut ops = Vec::new();
        for (k, v) in f {
            let fd = field(kind, k);
            let (has, value) = access(e, k);
            let at = ptr.key(k);
            match (v, fd.list) {
                (Value::Null, _) => ops.push(format!("({has} ? [{}] : [])", op("remove", &at, None))),
                (Value::Object(m), _) => {
                    let inner = self.override_object(&at, &value, m, fd.kind)?;
                    ops.push(format!("({has} ? {} : [{}])", join(&inner), add(&at, &lit_object(&cleaned(m)))));
                }
                (Value::Array(items), List::Keyed { key, element }) => {
                    let containers = kind == Kind::Spec && matches!(k.as_str(), "containers" | "initContainers");
                    let mut parts = Vec::new();
                    for item in items {
                        let Value::Object(m) = item else {
                            return Err(format!("{k}: an element that is not an object"));
                        };
                        let constant = if containers { container_lit(item) } else { lit_object(&cleaned(m)) };
                        let i = self.var();
                        let elem = match element {
                            Element::Merge => {
                                join(&self.override_object(&at.index(&i), &format!("{value}[{i}]"), m, fd.kind)?)
                            }
                            Element::Replace | Element::RetainKeys => {
                                format!("[{}]", op("replace", &at.index(&i), Some(&constant)))
                            }
                        };
                        parts.push(format!(
                            "[{value}.map(x, x.{key}).indexOf({})].map({i}, {i} >= 0 ? {elem} : [{}])[0]",
                            lit(&m[key]),
                            add(&at.append(), &constant)
                        ));
                    }
                    let whole = format!(
                        "[{}]",
                        items
                            .iter()
                            .map(|i| match i {
                                Value::Object(m) if containers =>
                                    format!("dyn({})", container_lit(&Value::Object(cleaned(m)))),
                                Value::Object(m) => format!("dyn({})", lit_object(&cleaned(m))),
                                i => format!("dyn({})", lit(i)),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    ops.push(format!("({has} ? {} : [{}])", join(&parts), add(&at, &whole)));
                }
                (Value::Array(_), List::Sources | List::Set) => {
                    return Err(format!("{k}: not merged by the policy mode yet"));
                }
                _ => {
                    ops.push(format!("[{}]", add(&at, &lit(v))));
                    if kind == Kind::Spec && k == "serviceAccountName" {
                        ops.push(format!(
                            "(has({e}.serviceAccount) ? [{}] : [])",
                            add(&ptr.key("serviceAccount"), &lit(v))
                        ));
                    }
                }
            }
        }
        Ok(ops)
    }

    /// The override's resources and secrets on its target container: the one it names, else
    /// `base` if the pod has one, else the first.
    fn target_ops(&mut self, o: &Override) -> Result<String, String> {
        let fragments = o.target_fragments("TARGET");
        if fragments.is_empty() {
            return Ok("[]".into());
        }
        let t = self.var();
        let index = match &o.spec().container {
            Some(c) => format!("object.spec.containers.map(c, c.name).indexOf({})", q(c)),
            None => "object.spec.containers.exists(c, c.name == 'base') ? object.spec.containers.map(c, c.name).indexOf('base') : 0".into(),
        };
        let spec = Ptr::root().key("spec");
        let at = spec.key("containers").index(&t);
        let mut parts = Vec::new();
        for fragment in &fragments {
            let mut container = fragment["spec"]["containers"][0].as_object().cloned().unwrap_or_default();
            container.remove("name");
            parts.extend(self.override_object(
                &at,
                &format!("object.spec.containers[{t}]"),
                &container,
                Kind::Container,
            )?);
            if let Some(Value::Object(rest)) = fragment.get("spec") {
                let mut rest = rest.clone();
                rest.remove("containers");
                parts.extend(self.override_object(&spec, "object.spec", &rest, Kind::Spec)?);
            }
        }
        Ok(format!("[{index}].map({t}, {t} >= 0 ? {} : [])[0]", join(&parts)))
    }
}

/// The patch that puts a keyed list in the engine's order, `ks` naming the keys of the pod's
/// elements and `ix` the pod's index of each template key (-1 where it has none): the
/// template's element j goes to position j (the pod's own moved there, else the template's
/// added), the pod's others follow in their order, the pod's further elements of a template
/// key are removed; then the merges inside the elements (`nested`).
fn reorder(at: &Ptr, ks: &str, ix: &str, keys: &[String], constants: &[String], nested: Vec<String>) -> String {
    let mut parts = Vec::new();
    for (j, constant) in constants.iter().enumerate() {
        let moved: Vec<String> = (0..j).map(|b| format!("{ix}[{b}]")).collect();
        let from = format!("{j} + lists.range({ix}[{j}]).filter(i, !(i in [{}])).size()", moved.join(", "));
        let to = at.index(&j.to_string());
        let mv = format!("JSONPatch{{op: \"move\", from: {}, path: {}}}", at.index(&from).cel(), to.cel());
        parts.push(format!("({ix}[{j}] >= 0 ? ({from} != {j} ? [{mv}] : []) : [{}])", add(&to, constant)));
    }
    parts.push(format!(
        "lists.range(size({ks})).filter(i, !(i in {ix})).transformList(r, i, {ks}[i] in [{}], {} + r).reverse().map(p, {})",
        keys.join(", "),
        constants.len(),
        op("remove", &at.index("p"), None)
    ));
    parts.extend(nested);
    join(&parts)
}

/// A container added whole, with the service-account token mount the API server gave the
/// pod's own containers (the engine adds it to every container that lacks it).
fn container_lit(c: &Value) -> String {
    let Some(m) = c.as_object() else { return lit(c) };
    let mut rest = m.clone();
    let mounts = rest.remove("volumeMounts").unwrap_or(json!([]));
    let mounted = mounts.as_array().is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
    let mut entries: Vec<String> = rest.iter().map(|(k, v)| format!("{}: dyn({})", q(k), lit(v))).collect();
    let token = if mounted {
        String::new()
    } else {
        format!(
            " + (has(object.spec.volumes) ? object.spec.volumes.filter(v, v.name.startsWith('kube-api-access-') && has(v.projected)).map(v, dyn({{'name': dyn(v.name), 'readOnly': dyn(true), 'mountPath': dyn({})}})) : [])",
            q(TOKEN_MOUNT_PATH)
        )
    };
    entries.push(format!("'volumeMounts': dyn({}{token})", lit(&mounts)));
    format!("{{{}}}", entries.join(", "))
}

/// An envFrom entry's source, as [`source_cel`] writes it.
fn source_of(entry: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let kind =
        if entry.get("configMapRef").is_some() { ("c", &entry["configMapRef"]) } else { ("s", &entry["secretRef"]) };
    format!("{}/{}/{}", kind.0, text(&kind.1["name"]), text(&entry["prefix"]))
}

fn source_cel(x: &str) -> String {
    format!(
        "(has({x}.configMapRef) ? 'c/' + (has({x}.configMapRef.name) ? {x}.configMapRef.name : '') : 's/' + (has({x}.secretRef) && has({x}.secretRef.name) ? {x}.secretRef.name : '')) + '/' + (has({x}.prefix) ? {x}.prefix : '')"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PodOverrideSpec;

    fn template(pod: Value) -> Template {
        Template::new(pod)
    }

    fn over(name: &str, spec: Value) -> Override {
        let spec: PodOverrideSpec = serde_json::from_value(spec).unwrap_or_default();
        Override::new(name, spec)
    }

    fn refusal(t: Value, o: Option<Value>) -> Option<Refusal> {
        let o = o.map(|s| over("o", s));
        let list: Vec<(Option<String>, &Override)> = o.iter().map(|o| (None, o)).collect();
        generate(&template(t), &list, 1, "podtailor").err()
    }

    fn base() -> Value {
        json!({"spec": {"containers": [{"name": "base", "image": "busybox:1"}]}})
    }

    #[test]
    fn the_example_is_compiled_into_four_objects() {
        let t = template(json!({"metadata": {"labels": {"tier": "airflow"}}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "base", "image": "x:1", "env": [{"name": "A", "value": "1"}]}]}}));
        let o = over("res", json!({"resources": {"limits": {"cpu": "1"}}}));
        let objects = generate(&t, &[(Some("airflow".into()), &o)], 2, "podtailor").unwrap_or_default();
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "MutatingAdmissionPolicy",
                "MutatingAdmissionPolicyBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"
            ]
        );
        let mutations = objects[0]["spec"]["mutations"].as_array().cloned().unwrap_or_default();
        // metadata, spec, the override's target part at two positions, the marker
        assert_eq!(mutations.len(), 5);
        let text = mutations[1]["jsonPatch"]["expression"].as_str().unwrap_or_default();
        assert!(text.contains("object.spec.restartPolicy == 'Always'"), "{text}");
        let slot = mutations[3]["jsonPatch"]["expression"].as_str().unwrap_or_default();
        assert!(
            slot.starts_with(
                "variables.names.size() > 1 && variables.names[1] == \"res\" && request.namespace == \"airflow\""
            ),
            "{slot}"
        );
        assert_eq!(objects[0]["spec"]["reinvocationPolicy"], "Never");
    }

    #[test]
    fn what_the_policy_cannot_do_is_refused_naming_the_field() {
        let cases = [
            (json!({"spec": {"priorityClassName": "high", "containers": []}}), None, "spec.priorityClassName"),
            (json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}]}}), None, "spec.tolerations"),
            (json!({"spec": {"automountServiceAccountToken": false}}), None, "spec.automountServiceAccountToken"),
            (
                base(),
                Some(
                    json!({"pod": {"spec": {"containers": [{"name": "base", "envFrom": [{"configMapRef": {"name": "c"}}]}]}}}),
                ),
                "spec.containers[0].envFrom",
            ),
            (base(), Some(json!({"secrets": [{"deployType": "env", "secret": "s"}]})), "spec.secrets"),
            (base(), Some(json!({"pod": {"spec": {"priorityClassName": "high"}}})), "spec.priorityClassName"),
            (base(), Some(json!({"pod": {"spec": {"volumes": null}}})), "spec.volumes"),
            (json!({"metadata": {"labels": {"r": "{{namespace}}"}}}), None, "metadata.labels.r"),
            (
                json!({"spec": {"containers": [{"name": "base", "resources": {"limits": {"memory": "1Gi"}}}]}}),
                Some(json!({"resources": {"limits": {"memory": "3Gi"}}})),
                "spec.resources.limits.memory",
            ),
        ];
        for (t, o, path) in cases {
            let r = refusal(t, o.clone());
            assert_eq!(r.as_ref().map(|r| r.path.as_str()), Some(path), "{o:?}: {r:?}");
            assert!(r.is_some_and(|r| !r.why.is_empty()));
        }
        assert!(refusal(base(), Some(json!({"resources": {"limits": {"cpu": "1"}}}))).is_none());
    }

    #[test]
    fn a_pod_naming_two_overrides_that_each_give_a_limit_alone_is_denied() {
        let (small, big) = (
            over("small", json!({"resources": {"limits": {"memory": "1Gi"}}})),
            over("big", json!({"resources": {"limits": {"memory": "2Gi", "cpu": "1"}}})),
        );
        let rules = |t: Value, list: &[(Option<String>, &Override)]| -> Vec<String> {
            let objects = generate(&template(t), list, 2, "podtailor").unwrap_or_default();
            objects[2]["spec"]["validations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["message"].as_str())
                .filter(|m| m.contains("without a request"))
                .map(str::to_owned)
                .collect()
        };
        let found = rules(base(), &[(None, &small), (None, &big)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("\"small\" and \"big\" both give limits.memory"), "{found:?}");
        // the template requests memory: the request stays the template's either way
        let requested = json!({"spec": {"containers": [{"name": "base", "image": "busybox:1",
            "resources": {"requests": {"memory": "512Mi"}}}]}});
        assert!(rules(requested, &[(None, &small), (None, &big)]).is_empty());
        // never together: other namespaces, or other containers
        assert!(rules(base(), &[(Some("a".into()), &small), (Some("b".into()), &big)]).is_empty());
        let side = over("side", json!({"container": "side", "resources": {"limits": {"memory": "1Gi"}}}));
        let main = over("main", json!({"container": "base", "resources": {"limits": {"memory": "1Gi"}}}));
        assert!(rules(base(), &[(None, &side), (None, &main)]).is_empty());
        // a request in one of them settles it
        let with_request =
            over("req", json!({"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}}}));
        assert!(rules(base(), &[(None, &small), (None, &with_request)]).is_empty());
    }

    #[test]
    fn an_override_refusal_names_the_override() {
        let r = refusal(base(), Some(json!({"pod": {"spec": {"tolerations": []}}})));
        assert_eq!(r.map(|r| r.to_string()), Some("PodOverride \"o\": spec.tolerations: the default NoExecute tolerations cannot be kept as the webhook keeps them yet".into()));
    }

    #[test]
    fn pointers_escape_keys_and_splice_indices() {
        let p = Ptr::root().key("metadata").key("annotations").key("a/b~c");
        assert_eq!(p.cel(), "\"/metadata/annotations/a~1b~0c\"");
        let p = Ptr::root().key("spec").key("containers").index("v1").key("env").append();
        assert_eq!(p.cel(), "\"/spec/containers/\" + string(v1) + \"/env/-\"");
    }

    #[test]
    fn keys_that_are_not_identifiers_are_indexed() {
        assert_eq!(
            access("object.metadata.labels", "tier"),
            ("has(object.metadata.labels.tier)".into(), "object.metadata.labels.tier".into())
        );
        assert_eq!(access("m", "app.kubernetes.io/name").0, "(\"app.kubernetes.io/name\" in m)");
        assert_eq!(access("m", "namespace").1, "m[\"namespace\"]");
    }
}
