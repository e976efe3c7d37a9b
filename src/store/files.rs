//! Files mode: the template from a file, PodOverrides from the YAML/JSON files of a directory.
//!
//! Directory entries starting with `.` are skipped: a mounted ConfigMap keeps its real files
//! under `..data`, and the visible names are symlinks into it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{Config, Loaded, NamespaceTemplates, Overrides};
use crate::crd::PodOverrideSpec;
use crate::input;
use crate::merge::schema::{Kind, unmatchable_elements};
use crate::merge::{Override, Template, placeholder};
use crate::validate;
use crate::{Error, Result};

const OVERRIDE_API_VERSION: &str = "podtailor.dev/v1alpha1";

/// The name of a namespace's own PodTemplate, unless `--namespace-template-name` says another.
pub const NAMESPACE_TEMPLATE_NAME: &str = "podtailor";

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|error| Error::Read { path: path.to_owned(), error })
}

/// Loads the template and the overrides.
pub fn load(template: &Path, overrides: &Path) -> Result<Config> {
    Ok(Config::new(Arc::new(load_template(template)?), load_overrides(overrides)?))
}

/// The files a command's flags name: `--template`, `--overrides` (none: the template alone),
/// `--namespace-templates` (none: no namespace has its own) with the PodTemplate name looked
/// for (`--namespace-template-name`).
#[derive(Clone, Copy, Debug)]
pub struct Flags<'a> {
    pub template: &'a Path,
    pub overrides: Option<&'a Path>,
    pub namespace_templates: Option<&'a Path>,
    pub namespace_template_name: &'a str,
}

/// The configuration the flags name; an error starts with the flag of the file at fault.
pub fn load_flags(flags: Flags) -> Result<Config> {
    let flag = |flag: &'static str| move |error: Error| Error::Flag { flag, error: Box::new(error) };
    let template = Arc::new(load_template(flags.template).map_err(flag("--template"))?);
    let overrides = match flags.overrides {
        Some(dir) => load_overrides(dir).map_err(flag("--overrides"))?,
        None => Overrides::default(),
    };
    let namespace_templates = match flags.namespace_templates {
        Some(dir) => {
            load_namespace_templates(dir, flags.namespace_template_name).map_err(flag("--namespace-templates"))?
        }
        None => NamespaceTemplates::named(flags.namespace_template_name),
    };
    Ok(Config { template, overrides, namespace_templates })
}

/// Reads the platform's default pod.
pub fn load_template(path: &Path) -> Result<Template> {
    parse_template(&read(path)?).map_err(|message| Error::Config { path: path.to_owned(), message })
}

/// The template in `text` (a v1 Pod, YAML or JSON), checked.
pub fn parse_template(text: &str) -> Result<Template, String> {
    template_of_pod(input::document(text)?)
}

/// The template of a v1 Pod document, checked: its containers, its lists' merge keys, its
/// placeholders.
fn template_of_pod(pod: Value) -> Result<Template, String> {
    if input::type_of(&pod) != ("v1", "Pod") {
        return Err(format!(
            "is not a Pod manifest: expected `apiVersion: v1` and `kind: Pod` (the platform's worker pod), {}",
            what_it_is(&pod)
        ));
    }
    if let Some(spec) = pod.get("spec") {
        if !spec.is_object() {
            return Err("spec: must be an object".into());
        }
        for list in ["containers", "initContainers"] {
            let Some(items) = spec.get(list) else { continue };
            let Some(items) = items.as_array() else {
                return Err(format!("spec.{list}: must be a list"));
            };
            for (i, c) in items.iter().enumerate() {
                if c.get("name").and_then(Value::as_str).is_none() {
                    return Err(format!("spec.{list}[{i}].name: is required (containers merge by name)"));
                }
            }
        }
    }
    // an element that is not an object or lacks its merge key would be added at every pass
    if let Some((path, reason)) = unmatchable_elements(&pod, Kind::Pod).into_iter().next() {
        return Err(format!("{path}: {reason}; such an element would be added again at every pass"));
    }
    placeholder::check(&pod)?;
    Ok(Template::new(pod))
}

/// A namespace's own template: the `template` (a PodTemplateSpec) of a PodTemplate document,
/// checked as a template file is; `origin` (`namespace/name`) is what the applied-marker
/// names. An error names the field from the PodTemplate's top (`template.spec...`).
pub fn pod_template(doc: &Value, origin: &str) -> Result<Template, String> {
    let Some(spec) = doc.get("template") else {
        return Err("template: is required (the pod template: metadata and spec)".into());
    };
    let Some(spec) = spec.as_object() else {
        return Err("template: must be an object (the pod template: metadata and spec)".into());
    };
    if let Some(key) = spec.keys().find(|k| !matches!(k.as_str(), "metadata" | "spec")) {
        return Err(format!("template.{key}: unknown field (expected metadata, spec)"));
    }
    let mut pod = serde_json::Map::new();
    pod.insert("apiVersion".into(), Value::String("v1".into()));
    pod.insert("kind".into(), Value::String("Pod".into()));
    for key in ["metadata", "spec"] {
        if let Some(v) = spec.get(key) {
            pod.insert(key.into(), v.clone());
        }
    }
    let template = template_of_pod(Value::Object(pod)).map_err(|why| format!("template.{why}"))?;
    Ok(template.with_origin(origin))
}

/// Reads the namespaces' own templates from the PodTemplate files of `dir` (`*.yaml`,
/// `*.yml`, `*.json`, several documents a file): those named `name`, each for its
/// `metadata.namespace`, which is required. A PodTemplate of another name is not a
/// namespace's template, and is skipped with a warning. Any problem fails the whole load.
pub fn load_namespace_templates(dir: &Path, name: &str) -> Result<NamespaceTemplates> {
    let listing = listing(dir)?;
    log_not_read(dir, &listing);
    let mut templates = NamespaceTemplates::named(name);
    let mut origins: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for path in listing.files {
        let bad = |message: String| Error::Config { path: path.clone(), message };
        let docs = input::documents(&read(&path)?).map_err(bad)?;
        let many = docs.len() > 1;
        for (i, doc) in docs.into_iter().enumerate() {
            let at = if many { format!("document {}: ", i + 1) } else { String::new() };
            let fail = |message: String| bad(format!("{at}{message}"));
            if input::type_of(&doc) != ("v1", "PodTemplate") {
                return Err(fail(format!(
                    "is not a PodTemplate manifest: expected `apiVersion: v1` and `kind: PodTemplate`, {}",
                    what_it_is(&doc)
                )));
            }
            let meta = doc.get("metadata");
            let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str).unwrap_or_default();
            let (namespace, found) = (text("namespace"), text("name"));
            let who = format!("PodTemplate {found:?} (namespace {namespace:?})");
            if let Err(why) = validate::dns_subdomain(found) {
                return Err(fail(format!("{who}: metadata.name: {why}")));
            }
            if namespace.is_empty() {
                return Err(fail(format!(
                    "{who}: metadata.namespace: is required (a namespace's template is for the pods of its namespace)"
                )));
            }
            if let Err(why) = validate::dns_label(namespace) {
                return Err(fail(format!("{who}: metadata.namespace: {why}")));
            }
            if found != name {
                tracing::warn!(
                    "{}: {at}{who} skipped: a namespace's template is the PodTemplate named {name:?} (--namespace-template-name)",
                    path.display()
                );
                continue;
            }
            let template =
                pod_template(&doc, &format!("{namespace}/{found}")).map_err(|why| fail(format!("{who}: {why}")))?;
            let origin =
                format!("{}{}", path.display(), if many { format!(" (document {})", i + 1) } else { String::new() });
            if let Some(first) = origins.get(namespace) {
                return Err(fail(format!("{who} is already defined in {first}")));
            }
            origins.insert(namespace.to_owned(), origin);
            templates.insert(namespace.to_owned(), Ok(template));
        }
    }
    Ok(templates)
}

/// What a directory of overrides holds: the override files, and what is not read.
#[derive(Debug, Default)]
struct Listing {
    /// `*.yaml`, `*.yml` and `*.json`, in name order.
    files: Vec<PathBuf>,
    /// Subdirectories: not read, like `kubectl apply -f DIR` without `-R`.
    subdirectories: Vec<PathBuf>,
    /// `kustomization.yaml` (or `.yml`, or `Kustomization`): kustomize's, not a PodOverride.
    kustomization: Option<PathBuf>,
}

/// Whether `name` is kustomize's file of a directory.
fn is_kustomization(name: &str) -> bool {
    matches!(name, "kustomization.yaml" | "kustomization.yml" | "Kustomization")
}

fn listing(dir: &Path) -> Result<Listing> {
    let entries = std::fs::read_dir(dir).map_err(|error| Error::Read { path: dir.to_owned(), error })?;
    let mut listing = Listing::default();
    for entry in entries {
        let entry = entry.map_err(|error| Error::Read { path: dir.to_owned(), error })?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        if is_kustomization(&name) {
            listing.kustomization = Some(path);
        } else if path.is_dir() {
            listing.subdirectories.push(path);
        } else if [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e)) && path.is_file() {
            listing.files.push(path);
        }
    }
    listing.files.sort();
    listing.subdirectories.sort();
    Ok(listing)
}

/// The override files of `dir`, in name order: `*.yaml`, `*.yml` and `*.json`, not those
/// of its subdirectories, and not a `kustomization.yaml`.
pub fn override_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(listing(dir)?.files)
}

/// Logs what [`load_overrides`] does not read in `dir`: a warning for subdirectories (their
/// overrides are not loaded), a line at info for a `kustomization.yaml`.
fn log_not_read(dir: &Path, listing: &Listing) {
    if !listing.subdirectories.is_empty() {
        let names: Vec<String> = listing.subdirectories.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(
            "{}: subdirectories are not read (only the directory's own *.yaml, *.yml and *.json files, as with kubectl apply -f without -R): {}",
            dir.display(),
            names.join(", ")
        );
    }
    if let Some(path) = &listing.kustomization {
        tracing::info!("{}: skipped (kustomize's file, not a PodOverride)", path.display());
    }
}

/// Reads every PodOverride in `dir`. Any problem in any file fails the whole load, so a
/// half-read directory never replaces a good one.
pub fn load_overrides(dir: &Path) -> Result<Overrides> {
    let listing = listing(dir)?;
    log_not_read(dir, &listing);
    let mut overrides = Overrides::default();
    for path in listing.files {
        add_overrides(&mut overrides, &read(&path)?, &path.display().to_string())
            .map_err(|message| Error::Config { path: path.clone(), message })?;
    }
    Ok(overrides)
}

/// Adds the PodOverrides of one file's `text` (YAML or JSON, one or more documents) to
/// `overrides`; `origin` names the file in messages.
pub fn add_overrides(overrides: &mut Overrides, text: &str, origin: &str) -> Result<(), String> {
    let docs = input::documents(text)?;
    let many = docs.len() > 1;
    for (i, doc) in docs.into_iter().enumerate() {
        let at = if many { format!("document {}: ", i + 1) } else { String::new() };
        let loaded = parse_override(doc, origin).map_err(|message| format!("{at}{message}"))?;
        let (namespace, name) = (loaded.namespace.clone(), loaded.r#override.name.clone());
        if let Err(first) = overrides.insert(loaded) {
            return Err(format!(
                "{at}PodOverride {name:?} ({}) is already defined in {}",
                scope(namespace.as_deref()),
                first.origin
            ));
        }
    }
    Ok(())
}

fn scope(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("namespace {ns:?}"),
        None => "all namespaces".to_owned(),
    }
}

/// Why a document is not a usable PodOverride: `who` names the override once it is known to
/// be one (`PodOverride "x" (namespace "ns")`), `reason` names the field and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub who: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.who {
            Some(who) => write!(f, "{who}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// What a document that is not the manifest expected is instead, for the error that says so:
/// `it has apiVersion "apps/v1" and kind "Deployment"`, `it is the text "hello world"`.
fn what_it_is(doc: &Value) -> String {
    let (api, kind) = input::type_of(doc);
    match doc {
        Value::Object(_) if api.is_empty() && kind.is_empty() => "it has neither".to_owned(),
        Value::Object(_) => format!("it has apiVersion {api:?} and kind {kind:?}"),
        Value::String(text) => format!("it is the text {text:?}"),
        Value::Array(items) => {
            format!("it is a list of {} items (one manifest a document: separate them with ---)", items.len())
        }
        other => format!("it is {other}"),
    }
}

/// One PodOverride document, checked: its type, its metadata, every field of its spec. The
/// error names the override and the field.
pub fn parse_override(doc: Value, origin: &str) -> Result<Loaded, String> {
    check_override(doc, origin).map_err(|r| r.to_string())
}

/// [`parse_override`], with the override and the reason apart.
pub fn check_override(doc: Value, origin: &str) -> Result<Loaded, Rejected> {
    if input::type_of(&doc) != (OVERRIDE_API_VERSION, "PodOverride") {
        let reason = format!(
            "is not a PodOverride manifest: expected `apiVersion: {OVERRIDE_API_VERSION}` and `kind: PodOverride`, {}",
            what_it_is(&doc)
        );
        return Err(Rejected { who: None, reason });
    }
    let Value::Object(mut doc) = doc else {
        return Err(Rejected { who: None, reason: "is not a PodOverride manifest: expected a mapping".into() });
    };
    let meta = doc.get("metadata").and_then(Value::as_object);
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("").to_owned();
    let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).map(str::to_owned);
    let who = format!("PodOverride {name:?} ({})", scope(namespace.as_deref()));
    let invalid = |reason: String| Rejected { who: Some(who.clone()), reason };
    if let Err(why) = validate::dns_subdomain(&name) {
        return Err(invalid(format!("metadata.name: {why}")));
    }
    if let Some(Err(why)) = namespace.as_deref().map(validate::dns_label) {
        return Err(invalid(format!("metadata.namespace: {why}")));
    }
    if let Some(key) =
        doc.keys().find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "spec" | "status"))
    {
        return Err(invalid(format!("{key}: unknown field (expected apiVersion, kind, metadata, spec)")));
    }
    let spec = doc.shift_remove("spec").unwrap_or(Value::Object(Default::default()));
    let spec: PodOverrideSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_owned() } else { format!("spec.{path}") };
        invalid(format!("{field}: {}", e.inner()))
    })?;
    if let Some(first) = validate::override_spec(&spec).first() {
        return Err(invalid(first.to_string()));
    }
    Ok(Loaded { namespace, r#override: Arc::new(Override::new(name, spec)), origin: origin.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parse(yaml: &str) -> Result<Loaded, String> {
        parse_override(input::document(yaml)?, "test.yaml")
    }

    #[rstest]
    #[case::unknown_spec_field("spec: {resorces: {}}", "spec.resorces: unknown field `resorces`")]
    #[case::unknown_secret_field(
        "spec: {secrets: [{deployType: env, secret: s, keys: k}]}",
        "spec.secrets[0].keys: unknown field `keys`"
    )]
    #[case::unknown_deploy_type(
        "spec: {secrets: [{deployType: file, deployTarget: /x, secret: s}]}",
        "spec.secrets[0].deployType: unknown variant `file`"
    )]
    #[case::relative_target(
        "spec: {secrets: [{deployType: volume, deployTarget: etc/x, secret: s}]}",
        "spec.secrets[0].deployTarget: \"etc/x\" is not an absolute path"
    )]
    #[case::bad_quantity(
        "spec: {resources: {limits: {cpu: [1]}}}",
        "spec.resources.limits.cpu: a quantity must be a string or a number"
    )]
    #[case::unknown_top_level("spc: {}", "spc: unknown field")]
    fn errors_name_the_override_and_the_field(#[case] body: &str, #[case] want: &str) {
        let yaml = format!(
            "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {{name: o, namespace: ns}}\n{body}\n"
        );
        let err = parse(&yaml).err().unwrap_or_default();
        assert!(err.starts_with("PodOverride \"o\" (namespace \"ns\"): "), "{err}");
        assert!(err.contains(want), "{err}");
    }

    #[rstest]
    #[case::wrong_kind(
        "apiVersion: v1\nkind: Pod\n",
        "is not a PodOverride manifest: expected `apiVersion: podtailor.dev/v1alpha1` and `kind: PodOverride`, it has apiVersion \"v1\" and kind \"Pod\""
    )]
    #[case::text(
        "hello world\n",
        "is not a PodOverride manifest: expected `apiVersion: podtailor.dev/v1alpha1` and `kind: PodOverride`, it is the text \"hello world\""
    )]
    #[case::neither("metadata: {name: a}\n", "`kind: PodOverride`, it has neither")]
    #[case::a_list(
        "- apiVersion: podtailor.dev/v1alpha1\n  kind: PodOverride\n- {}\n",
        "`kind: PodOverride`, it is a list of 2 items (one manifest a document: separate them with ---)"
    )]
    #[case::no_name("apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nspec: {}\n", "metadata.name")]
    #[case::bad_namespace(
        "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: a, namespace: A_B}\n",
        "metadata.namespace"
    )]
    fn rejects_what_is_not_a_podoverride(#[case] yaml: &str, #[case] want: &str) {
        let err = parse(yaml).err().unwrap_or_default();
        assert!(err.contains(want), "{err}");
    }

    #[test]
    fn numbers_are_quantities() {
        let loaded = parse(
            "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: o}\nspec: {resources: {limits: {cpu: 1, memory: 0.5}}}\n",
        );
        let limits =
            loaded.ok().and_then(|l| l.r#override.spec().resources.clone()).and_then(|r| r.limits).unwrap_or_default();
        assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some("1"));
        assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("0.5"));
    }

    #[test]
    fn a_directory_with_a_duplicate_names_both_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let doc = "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: o}\nspec: {}\n";
        for f in ["a.yaml", "b.yml"] {
            std::fs::write(dir.path().join(f), doc).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(dir.path().join(".hidden.yaml"), "not: [valid").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap_or_else(|e| panic!("{e}"));
        let err = load_overrides(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("b.yml") && err.contains("a.yaml") && err.contains("already defined"), "{err}");
    }

    /// A file of several documents names the document that is wrong; a file of one does not.
    #[test]
    fn errors_name_the_document_only_in_a_file_of_several() {
        let good = "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: a}\nspec: {}\n";
        let bad = "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: b}\nspec: {resorces: {}}\n";
        for (text, prefix) in [(format!("{good}---\n{bad}"), "document 2: "), (bad.to_owned(), "")] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let path = dir.path().join("o.yaml");
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            let err = load_overrides(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
            let want =
                format!("{}: {prefix}PodOverride \"b\" (all namespaces): spec.resorces: unknown field", path.display());
            assert!(err.starts_with(&want), "{err}\nwanted {want}");
        }
    }
}
