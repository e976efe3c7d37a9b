//! The merge engine: (template, incoming pod, overrides) → desired pod → RFC 6902 patch.
//! Pure: values in, values out, no I/O.
//!
//! `desired = apiDefaults(template ⊲ withoutApiDefaults(pod) ⊲ override₁ ⊲ …)`, where `⊲` is
//! strategic merge by the Pod API's merge keys and an override layer is its `pod` fragment,
//! then its `resources`, then its `secrets`.

pub mod defaults;
mod draft;
mod hash;
mod lookup;
pub mod patch;
pub mod placeholder;
pub mod schema;
mod secrets;
pub mod strategic;
mod warnings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::crd::PodOverrideSpec;
use draft::{Draft, Node};
use schema::Kind;
use strategic::{Nulls, merge_draft};

pub use secrets::{exposed_name, secret_volume_name};

/// The annotation by which a pod opts in: PodOverride names, comma-separated, in order.
pub const OVERRIDE_ANNOTATION: &str = "podtailor.dev/override";
/// The annotation recording what was applied: override names and a content hash.
pub const APPLIED_ANNOTATION: &str = "podtailor.dev/applied";

/// The platform's default pod, ready to be a base layer.
#[derive(Debug)]
pub struct Template {
    pod: Value,
    hash: [u8; 32],
    /// The applied-markers made so far, by the hashes of the overrides applied.
    markers: Mutex<Markers>,
    /// Where the pod holds the namespace placeholder ([`placeholder`]); none once expanded.
    sites: Vec<placeholder::Site>,
    /// The template expanded for each namespace so far.
    expanded: Mutex<HashMap<String, Arc<Template>>>,
    /// A namespace's own PodTemplate (`namespace/name`), named in the applied-marker; `None`
    /// for the cluster-wide template.
    origin: Option<String>,
}

/// Applied-markers by the hashes of the overrides applied.
type Markers = HashMap<Vec<[u8; 32]>, String>;

/// How many applied-markers a template keeps; past that it starts over.
const MARKERS_KEPT: usize = 256;

/// How many namespaces' expansions a template keeps; past that it starts over.
const EXPANSIONS_KEPT: usize = 1024;

impl Template {
    /// Keeps what shapes a pod and drops what names or records one: the template never
    /// gives its name, generateName, namespace, status or server-set metadata to a pod.
    pub fn new(mut pod: Value) -> Self {
        if let Some(pod) = pod.as_object_mut() {
            pod.shift_remove("status");
            if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
                for key in [
                    "name",
                    "generateName",
                    "namespace",
                    "uid",
                    "resourceVersion",
                    "generation",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "selfLink",
                    "managedFields",
                ] {
                    meta.shift_remove(key);
                }
            }
        }
        strategic::drop_zeroes(&mut pod, Kind::Pod, Nulls::Keep);
        let sites = placeholder::sites(&pod);
        Template::made(pod, sites, None)
    }

    /// A template of `pod` as it is (already shaped by [`Template::new`]).
    fn made(pod: Value, sites: Vec<placeholder::Site>, origin: Option<String>) -> Template {
        let hash = Sha256::digest(canonical_json(&pod)).into();
        Template { pod, hash, markers: Mutex::default(), sites, expanded: Mutex::default(), origin }
    }

    /// The template of a namespace's own PodTemplate `origin` (`namespace/name`), which the
    /// applied-marker names.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Template {
        self.origin = Some(origin.into());
        self
    }

    /// The PodTemplate this template is, if it is a namespace's own (`namespace/name`).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    pub fn pod(&self) -> &Value {
        &self.pod
    }

    /// The path of the first value that holds the namespace placeholder, if one does: such a
    /// template needs the pod's namespace.
    pub fn needs_namespace(&self) -> Option<&str> {
        self.sites.first().map(|s| s.path.as_str())
    }

    /// The template for pods of `namespace`: itself when it holds no placeholder, else the
    /// pod with each placeholder expanded (made once a namespace). Its hash is the expanded
    /// pod's, so the applied-marker of each namespace says what its pods got. An error names
    /// the field whose value the namespace makes invalid.
    pub fn for_namespace(self: &Arc<Self>, namespace: &str) -> Result<Arc<Template>, String> {
        if self.sites.is_empty() {
            return Ok(self.clone());
        }
        let mut expanded = self.expanded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = expanded.get(namespace) {
            return Ok(t.clone());
        }
        let pod = placeholder::expand(&self.pod, &self.sites, namespace)?;
        let template = Arc::new(Template::made(pod, Vec::new(), self.origin.clone()));
        if expanded.len() >= EXPANSIONS_KEPT {
            expanded.clear();
        }
        expanded.insert(namespace.to_owned(), template.clone());
        Ok(template)
    }

    /// [`applied_marker`], made once for each list of overrides: it depends only on the
    /// template and the overrides (an override's hash covers its name and its spec), and
    /// neither changes.
    fn applied_marker(&self, overrides: &[&Override]) -> String {
        let key: Vec<[u8; 32]> = overrides.iter().map(|o| o.hash).collect();
        let mut markers = self.markers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(marker) = markers.get(&key) {
            return marker.clone();
        }
        let marker = applied_marker(self, overrides);
        if markers.len() >= MARKERS_KEPT {
            markers.clear();
        }
        markers.insert(key, marker.clone());
        marker
    }
}

/// A PodOverride ready to apply: its name and its validated spec.
#[derive(Debug)]
pub struct Override {
    pub name: String,
    spec: PodOverrideSpec,
    /// `spec.resources` as JSON, made once.
    resources: Option<Value>,
    /// What `spec.secrets` add, made once.
    secrets: Vec<secrets::Prepared>,
    hash: [u8; 32],
}

impl Override {
    pub fn new(name: impl Into<String>, mut spec: PodOverrideSpec) -> Self {
        let name = name.into();
        if let Some(fragment) = spec.pod.as_mut() {
            strategic::drop_zeroes(fragment, Kind::Pod, Nulls::Delete);
        }
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(serde_json::to_value(&spec).map(|v| canonical_json(&v)).unwrap_or_default());
        let resources = spec.resources.as_ref().and_then(|r| serde_json::to_value(r).ok());
        let secrets = secrets::prepare(&spec.secrets);
        Override { name, spec, resources, secrets, hash: h.finalize().into() }
    }

    /// The spec it was made from.
    pub fn spec(&self) -> &PodOverrideSpec {
        &self.spec
    }

    /// What the override merges into the target container `target` after its pod fragment,
    /// as the pod fragments the engine merges in order: its resources, then its secrets
    /// (each present only when the override has them). The policy generator compiles these.
    pub fn target_fragments(&self, target: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(resources) = &self.resources {
            out.push(serde_json::json!({"spec": {"containers": [{"name": target, "resources": resources}]}}));
        }
        if let Some(fragment) = secrets::fragment(target, &self.secrets) {
            out.push(fragment.into_value());
        }
        out
    }
}

/// What the engine decided for one pod.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The pod as the API server will hold it (`None` when only the patch was asked for).
    pub desired: Option<Value>,
    /// From the incoming pod to `desired`; empty when there is nothing to do, or when the
    /// patch was asked for as JSON text.
    pub patch: json_patch::Patch,
    /// The patch as RFC 6902 JSON text, `[]` when there is nothing to do (only for
    /// [`Want::Json`]): the bytes `patch` serialises to.
    pub patch_json: Option<Vec<u8>>,
    /// Values the pod set itself that an override replaced, for people to read.
    pub warnings: Vec<String>,
}

/// Why an override could not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct MergeError {
    /// The override that failed, if one did.
    pub r#override: Option<String>,
    pub reason: String,
}

/// What [`apply`] returns besides the patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The desired pod too (render, tests).
    Desired,
    /// Only the patch: the desired pod's values move into the patch, uncopied.
    Patch,
    /// Only the patch, as JSON text (the webhook): written as the diff walks, so no value is
    /// copied at all.
    Json,
}

/// Merges the template and the overrides into `pod` and returns the patch (and the desired pod).
///
/// The desired pod is built as a [`Draft`] over the template, the pod and the overrides: what
/// no later layer changes stays borrowed, so only the values the patch adds or replaces are
/// copied (and the whole desired pod when it is asked for).
pub fn apply(template: &Template, pod: &Value, overrides: &[&Override], want: Want) -> Result<Outcome, MergeError> {
    if !pod.is_object() {
        return Err(MergeError { r#override: None, reason: "the pod is not a JSON object".into() });
    }
    let mut layer = Draft::Borrowed(pod);
    let api_defaults = defaults::strip(&mut layer);
    let mut desired = Draft::Borrowed(&template.pod);
    merge_draft(&mut desired, layer, Kind::Pod, Nulls::Keep);
    let mut warnings = Vec::new();
    for o in overrides {
        apply_override(&mut desired, pod, o, &mut warnings)
            .map_err(|reason| MergeError { r#override: Some(o.name.clone()), reason })?;
    }
    defaults::restore(&mut desired, &api_defaults);
    let marker = template.applied_marker(overrides);
    let annotations = desired
        .object_mut()
        .map(|p| p.entry("metadata", Draft::empty_object))
        .and_then(Draft::object_mut)
        .map(|m| m.entry("annotations", Draft::empty_object))
        .and_then(Draft::object_mut);
    if let Some(annotations) = annotations {
        annotations.insert(APPLIED_ANNOTATION, Draft::owned(Value::String(marker)));
    }
    Ok(match want {
        Want::Desired => {
            let desired = desired.into_value();
            let patch = patch::diff(pod, &desired);
            Outcome { desired: Some(desired), patch, patch_json: None, warnings }
        }
        Want::Patch => Outcome { patch: patch::diff_draft(pod, desired), desired: None, patch_json: None, warnings },
        Want::Json => {
            let json = patch::diff_draft_json(pod, desired)
                .map_err(|e| MergeError { r#override: None, reason: format!("the patch cannot be written: {e}") })?;
            Outcome { patch: json_patch::Patch(Vec::new()), desired: None, patch_json: Some(json), warnings }
        }
    })
}

/// One override layer, as strategic-merge fragments in order: its pod fragment, then its
/// resources, then its secrets (the last two go to the target container of the pod the
/// fragment made). `pod` is the incoming pod, for the warnings.
fn apply_override<'a>(
    desired: &mut Draft<'a>,
    pod: &'a Value,
    o: &'a Override,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let mut layer = |desired: &mut Draft<'a>, fragment: Draft<'a>| {
        let watch = warnings::Watch::before(fragment.node(), pod, desired.node());
        merge_draft(desired, fragment, Kind::Pod, Nulls::Delete);
        watch.after(desired.node(), &o.name, warnings);
    };
    if let Some(fragment) = &o.spec.pod {
        layer(desired, Draft::Borrowed(fragment));
    }
    if o.resources.is_none() && o.spec.secrets.is_empty() {
        return Ok(());
    }
    let target = target_container(desired.node(), o.spec.container.as_deref())?;
    if let Some(resources) = &o.resources {
        // {"spec": {"containers": [{"name": target, "resources": resources}]}}
        let container = Draft::object([
            ("name", Draft::owned(Value::String(target.clone()))),
            ("resources", Draft::Borrowed(resources)),
        ]);
        layer(desired, Draft::object([("spec", Draft::object([("containers", Draft::Array(vec![container]))]))]));
    }
    if let Some(fragment) = secrets::fragment(&target, &o.secrets) {
        layer(desired, fragment);
    }
    Ok(())
}

/// The container an override's resources and secrets go to: the one it names, else `base`
/// if the pod has it, else the first.
fn target_container(pod: Node, named: Option<&str>) -> Result<String, String> {
    let names: Vec<&str> = pod
        .field("spec")
        .and_then(|s| s.field("containers"))
        .and_then(Node::items)
        .map(|cs| cs.filter_map(|c| c.field("name")?.as_str()).collect())
        .unwrap_or_default();
    let found = match named {
        Some(n) => names.iter().find(|c| **c == n),
        None => names.iter().find(|c| **c == "base").or(names.first()),
    };
    match (found, named) {
        (Some(c), _) => Ok((*c).to_owned()),
        (None, Some(n)) if names.is_empty() => Err(format!("container {n:?} not found: the pod has no containers")),
        (None, Some(n)) => Err(format!("container {n:?} not found in the pod (containers: {})", names.join(", "))),
        (None, None) => Err("the pod has no containers to apply resources or secrets to".into()),
    }
}

/// `overrides=a,b; config=sha256:<16 hex>`: what was applied, and a hash of the template (as
/// expanded for the pod's namespace) and the overrides' content, so a changed configuration
/// shows. A namespace's own PodTemplate is named: `overrides=a; podtemplate=ns/name; config=…`.
fn applied_marker(template: &Template, overrides: &[&Override]) -> String {
    let mut h = Sha256::new();
    h.update(template.hash);
    for o in overrides {
        h.update(o.hash);
    }
    let digest = h.finalize();
    let hex = hex(&digest[..8]);
    let names: Vec<&str> = overrides.iter().map(|o| o.name.as_str()).collect();
    let podtemplate = template.origin.as_deref().map(|o| format!("podtemplate={o}; ")).unwrap_or_default();
    format!("overrides={}; {podtemplate}config=sha256:{hex}", names.join(","))
}

/// The JSON text of `value` with every object's keys sorted: what the marker's hash is taken
/// of, so that the same configuration read from a file and from the API server (which sends
/// an override's unknown fields with their keys sorted) gives the same marker.
fn canonical_json(value: &Value) -> Vec<u8> {
    let mut sorted = value.clone();
    sorted.sort_all_objects();
    sorted.to_string().into_bytes()
}

/// [`canonical_json`], for the policy generator's configuration hash.
pub(crate) fn canonical_text(value: &Value) -> Vec<u8> {
    canonical_json(value)
}

/// Lower-case hexadecimal, two digits a byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The override names a pod asks for, or `None` when it did not opt in.
pub fn requested_overrides(pod: &Value) -> Option<Result<Vec<String>, String>> {
    let value = pod.get("metadata")?.get("annotations")?.get(OVERRIDE_ANNOTATION)?;
    let Some(text) = value.as_str() else {
        return Some(Err(format!("annotation {OVERRIDE_ANNOTATION} must be a string")));
    };
    Some(parse_override_names(text))
}

/// Parses `a, b,c` into names; empty means the template only.
pub fn parse_override_names(text: &str) -> Result<Vec<String>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in text.split(',').map(str::trim) {
        if let Err(why) = crate::validate::dns_subdomain(name) {
            return Err(format!(
                "annotation {OVERRIDE_ANNOTATION}={text:?}: {name:?} is not a valid PodOverride name: {why}"
            ));
        }
        if !seen.insert(name) {
            return Err(format!("annotation {OVERRIDE_ANNOTATION}={text:?}: {name:?} is listed twice"));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}
