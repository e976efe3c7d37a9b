//! Where the template and the overrides come from. Both feed one in-memory [`Config`]
//! snapshot; a request never waits on I/O. The store hands what it loads to a [`Serving`],
//! which the server implements: the store never reaches into the server.

pub mod cluster;
pub mod files;
pub mod podtemplates;
pub mod reload;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelValue;

use crate::merge::{Override, Template};

/// Where the store hands new configuration, and how its reloads went (the server's state).
pub trait Serving: Send + Sync {
    /// Serves `template` from now on, with the overrides being served.
    fn replace_template(&self, template: Template);
    /// Serves `overrides` from now on, with the template being served.
    fn replace_overrides(&self, overrides: Overrides);
    /// Serves `templates` (the namespaces' own PodTemplates) from now on.
    fn replace_namespace_templates(&self, templates: NamespaceTemplates);
    /// The overrides have all been listed (cluster mode): the server may take requests.
    fn listed(&self);
    /// A reload of `source` ended with `result`.
    fn reloaded(&self, source: Source, result: ReloadResult);
}

/// What a reload was of.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Source {
    template,
    overrides,
    certificate,
    /// The PodOverrides watched in the cluster: a full list synced, or a watch error.
    cluster,
    /// The namespaces' PodTemplates watched in the cluster: a full list synced, or a watch error.
    podtemplates,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    success,
    failure,
}

/// A PodOverride as loaded: where it applies and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// `None`: applies in every namespace (a file without a namespace).
    pub namespace: Option<String>,
    pub r#override: Arc<Override>,
    /// A file path or `namespace/name` in the cluster, for messages.
    pub origin: String,
}

/// The PodOverrides known, by namespace and name.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    by_key: HashMap<(Option<String>, String), Loaded>,
    /// Objects that exist but do not load (cluster mode: created while the validating webhook
    /// was not there, say), with the reason: a pod that names one is told why.
    invalid: HashMap<(Option<String>, String), String>,
    /// Not listed yet (cluster mode, before the first full list): a name not found may exist.
    unlisted: bool,
}

impl Overrides {
    /// Adds `loaded`, or returns the one already known under the same namespace and name.
    pub fn insert(&mut self, loaded: Loaded) -> Result<(), &Loaded> {
        let key = (loaded.namespace.clone(), loaded.r#override.name.clone());
        if self.by_key.contains_key(&key) {
            return Err(&self.by_key[&key]);
        }
        self.by_key.insert(key, loaded);
        Ok(())
    }

    /// The override `name` as seen from `namespace`: its own, else one for every namespace.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<Override>> {
        self.by_key
            .get(&(Some(namespace.to_owned()), name.to_owned()))
            .or_else(|| self.by_key.get(&(None, name.to_owned())))
            .map(|l| &l.r#override)
    }

    /// Why `name` is not found from `namespace`, with where to look instead: the namespaces
    /// that do have an override of that name, else the names here that are a typo away, else
    /// those of other namespaces, with their namespace.
    pub fn not_found(&self, namespace: &str, name: &str) -> String {
        let mut message = format!("PodOverride {name:?} not found in namespace {namespace:?}");
        let mut elsewhere: Vec<&str> =
            self.by_key.keys().filter(|(_, n)| n == name).filter_map(|(ns, _)| ns.as_deref()).collect();
        elsewhere.sort_unstable();
        if let [only] = elsewhere.as_slice() {
            message.push_str(&format!("; it exists in namespace {only:?} (use -n {only})"));
            return message;
        }
        if !elsewhere.is_empty() {
            let list = elsewhere.iter().map(|ns| format!("{ns:?}")).collect::<Vec<_>>().join(", ");
            message.push_str(&format!("; it exists in namespaces {list} (use -n with one of them)"));
            return message;
        }
        let mut near: Vec<&str> = self
            .by_key
            .keys()
            .filter(|(ns, _)| ns.as_deref().is_none_or(|ns| ns == namespace))
            .map(|(_, n)| n.as_str())
            .filter(|n| edit_distance(n, name) <= 2)
            .collect();
        near.sort_unstable();
        near.dedup();
        if !near.is_empty() {
            let list = near.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(" or ");
            message.push_str(&format!("; did you mean {list}?"));
            return message;
        }
        // a typo in the wrong namespace: the near names of the others, with where they are
        let mut near_elsewhere: Vec<(&str, &str)> = self
            .by_key
            .keys()
            .filter_map(|(ns, n)| Some((ns.as_deref()?, n.as_str())))
            .filter(|(_, n)| edit_distance(n, name) <= 2)
            .collect();
        near_elsewhere.sort_unstable();
        if let Some((first, _)) = near_elsewhere.first() {
            let list = near_elsewhere
                .iter()
                .map(|(ns, n)| format!("{n:?} in namespace {ns:?}"))
                .collect::<Vec<_>>()
                .join(" or ");
            let hint = if near_elsewhere.iter().all(|(ns, _)| ns == first) {
                format!(" (use -n {first})")
            } else {
                String::new()
            };
            message.push_str(&format!("; did you mean {list}{hint}?"));
        }
        message
    }

    /// An empty set that stands for "not listed yet".
    pub fn unlisted() -> Overrides {
        Overrides { unlisted: true, ..Overrides::default() }
    }

    /// Whether this set stands for "not listed yet".
    pub fn is_unlisted(&self) -> bool {
        self.unlisted
    }

    /// Records that `name` exists in `namespace` but cannot be used, and why.
    pub fn insert_invalid(&mut self, namespace: Option<String>, name: String, reason: String) {
        self.invalid.insert((namespace, name), reason);
    }

    /// Why the override `name`, as seen from `namespace`, exists but cannot be used.
    pub fn problem(&self, namespace: &str, name: &str) -> Option<&str> {
        self.invalid
            .get(&(Some(namespace.to_owned()), name.to_owned()))
            .or_else(|| self.invalid.get(&(None, name.to_owned())))
            .map(String::as_str)
    }

    /// How many overrides exist but cannot be used.
    pub fn invalid_len(&self) -> usize {
        self.invalid.len()
    }

    /// The overrides that load, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Loaded> {
        self.by_key.values()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Levenshtein distance: the fewest characters inserted, deleted or replaced to turn `a`
/// into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let replaced = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = replaced.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The namespaces' own templates: the PodTemplate of the chosen name in a namespace, which
/// replaces the cluster-wide template for that namespace's pods.
#[derive(Clone, Debug, Default)]
pub struct NamespaceTemplates {
    /// The PodTemplate name looked for (`podtailor` by default), for messages.
    name: String,
    /// Each namespace's, or why it does not load: its pods are then denied with the reason
    /// (falling back to the cluster-wide template would silently drop what the namespace's
    /// platform set).
    by_namespace: HashMap<String, Result<Arc<Template>, String>>,
    /// Not listed yet (cluster mode, before the first full list): a namespace may have one.
    unlisted: bool,
}

impl NamespaceTemplates {
    /// None yet, looking for PodTemplates called `name`.
    pub fn named(name: impl Into<String>) -> NamespaceTemplates {
        NamespaceTemplates { name: name.into(), ..NamespaceTemplates::default() }
    }

    /// An empty set that stands for "not listed yet".
    pub fn unlisted(name: impl Into<String>) -> NamespaceTemplates {
        NamespaceTemplates { unlisted: true, ..NamespaceTemplates::named(name) }
    }

    pub fn is_unlisted(&self) -> bool {
        self.unlisted
    }

    /// The PodTemplate name looked for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets `namespace`'s template, or why it does not load; returns whether it had one.
    pub fn insert(&mut self, namespace: String, template: Result<Template, String>) -> bool {
        self.by_namespace.insert(namespace, template.map(Arc::new)).is_some()
    }

    /// [`NamespaceTemplates::insert`] of a template shared with another set.
    pub fn insert_shared(&mut self, namespace: String, template: Result<Arc<Template>, String>) -> bool {
        self.by_namespace.insert(namespace, template).is_some()
    }

    /// `namespace`'s own template, or why it does not load; `None` when it has none.
    pub fn get(&self, namespace: &str) -> Option<Result<&Arc<Template>, &str>> {
        self.by_namespace.get(namespace).map(|r| r.as_ref().map_err(String::as_str))
    }

    /// How many namespaces have one that loads, and how many one that does not.
    pub fn counts(&self) -> (usize, usize) {
        let loaded = self.by_namespace.values().filter(|r| r.is_ok()).count();
        (loaded, self.by_namespace.len() - loaded)
    }
}

/// Everything a decision needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster-wide template.
    pub template: Arc<Template>,
    pub overrides: Overrides,
    /// The namespaces' own templates (none: every namespace gets `template`).
    pub namespace_templates: NamespaceTemplates,
}

impl Config {
    /// The template alone, with `overrides`, and no namespace of its own.
    pub fn new(template: Arc<Template>, overrides: Overrides) -> Config {
        Config { template, overrides, namespace_templates: NamespaceTemplates::default() }
    }

    /// The template for pods of `namespace`: its own PodTemplate if it has one, else the
    /// cluster-wide one; expanded for the namespace. The error is the reason a pod is denied.
    pub fn template_for(&self, namespace: &str) -> Result<Arc<Template>, String> {
        let templates = &self.namespace_templates;
        let chosen = match templates.get(namespace) {
            Some(Ok(own)) => own,
            Some(Err(why)) => {
                return Err(format!("PodTemplate {:?} in namespace {namespace:?} is invalid: {why}", templates.name()));
            }
            None if templates.is_unlisted() => {
                return Err(format!(
                    "namespace {namespace:?}: the namespaces' PodTemplates have not been listed from the cluster yet (the webhook is starting); try again"
                ));
            }
            None => &self.template,
        };
        chosen.for_namespace(namespace).map_err(|why| match chosen.origin() {
            Some(_) => format!("PodTemplate {:?} in namespace {namespace:?}: template.{why}", templates.name()),
            None => format!("namespace {namespace:?}: the template's {why}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PodOverrideSpec;

    fn set(entries: &[(Option<&str>, &str)]) -> Overrides {
        let mut set = Overrides::default();
        for (ns, name) in entries {
            let loaded = Loaded {
                namespace: ns.map(str::to_owned),
                r#override: Arc::new(Override::new((*name).to_owned(), PodOverrideSpec::default())),
                origin: "test".into(),
            };
            assert!(set.insert(loaded).is_ok());
        }
        set
    }

    #[test]
    fn a_namespace_gets_its_own_template_else_the_clusters_and_never_falls_back() {
        let pod = |image: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"release": "{{namespace}}"}},
                               "spec": {"containers": [{"name": "base", "image": image}]}})
        };
        let image = |t: &Arc<Template>| t.pod()["spec"]["containers"][0]["image"].clone();
        let mut config = Config::new(Arc::new(Template::new(pod("cluster:1"))), Overrides::default());
        config.namespace_templates = NamespaceTemplates::unlisted("podtailor");
        let waiting = config.template_for("a").err().unwrap_or_default();
        assert!(waiting.contains("PodTemplates have not been listed from the cluster yet"), "{waiting}");
        let mut templates = NamespaceTemplates::named("podtailor");
        templates.insert("a".into(), Ok(Template::new(pod("own:1")).with_origin("a/podtailor")));
        templates.insert("b".into(), Err("template.spec.containers[0].name: is required".into()));
        config.namespace_templates = templates;
        let own = config.template_for("a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((image(&own), own.pod()["metadata"]["labels"]["release"].clone()), ("own:1".into(), "a".into()));
        let cluster = config.template_for("c").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (image(&cluster), cluster.pod()["metadata"]["labels"]["release"].clone()),
            ("cluster:1".into(), "c".into())
        );
        assert_eq!(
            config.template_for("b").err().as_deref(),
            Some(
                "PodTemplate \"podtailor\" in namespace \"b\" is invalid: template.spec.containers[0].name: is required"
            )
        );
        // a namespace too long for the label: denied, naming the field
        let long = "n".repeat(63);
        let mut labelled = Config::new(
            Arc::new(Template::new(serde_json::json!({"metadata": {"labels": {"r": "{{namespace}}-x"}}}))),
            Overrides::default(),
        );
        labelled.namespace_templates = NamespaceTemplates::named("podtailor");
        let why = labelled.template_for(&long).err().unwrap_or_default();
        assert!(why.starts_with(&format!("namespace {long:?}: the template's metadata.labels.r: ")), "{why}");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("resource-requirement", "resource-requirements"), 1);
        assert_eq!(edit_distance("secret-env", "secert-env"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("large-memory", "secret-env"), 10);
    }

    #[test]
    fn not_found_says_where_the_name_exists() {
        let set = set(&[(Some("airflow"), "resource-requirements"), (Some("airflow"), "secret-env")]);
        assert_eq!(
            set.not_found("default", "resource-requirements"),
            "PodOverride \"resource-requirements\" not found in namespace \"default\"; it exists in namespace \"airflow\" (use -n airflow)"
        );
        let two = self::set(&[(Some("b"), "x"), (Some("a"), "x")]);
        assert_eq!(
            two.not_found("c", "x"),
            "PodOverride \"x\" not found in namespace \"c\"; it exists in namespaces \"a\", \"b\" (use -n with one of them)"
        );
    }

    #[test]
    fn not_found_suggests_near_names_of_the_namespace() {
        let set =
            set(&[(Some("airflow"), "resource-requirements"), (None, "secret-env"), (Some("other"), "secret-en")]);
        assert_eq!(
            set.not_found("airflow", "resource-requirement"),
            "PodOverride \"resource-requirement\" not found in namespace \"airflow\"; did you mean \"resource-requirements\"?"
        );
        // one for every namespace is a suggestion; one of another namespace is not
        assert_eq!(
            set.not_found("airflow", "secret-enf"),
            "PodOverride \"secret-enf\" not found in namespace \"airflow\"; did you mean \"secret-env\"?"
        );
        assert_eq!(
            set.not_found("airflow", "large-memory"),
            "PodOverride \"large-memory\" not found in namespace \"airflow\""
        );
    }

    #[test]
    fn not_found_in_the_wrong_namespace_suggests_near_names_with_where_they_are() {
        let set = set(&[(Some("airflow"), "resource-requirements"), (Some("airflow"), "secret-env")]);
        assert_eq!(
            set.not_found("default", "resource-requirement"),
            "PodOverride \"resource-requirement\" not found in namespace \"default\"; did you mean \"resource-requirements\" in namespace \"airflow\" (use -n airflow)?"
        );
        let two = self::set(&[(Some("b"), "secret-env"), (Some("a"), "secret-enw")]);
        assert_eq!(
            two.not_found("c", "secret-en"),
            "PodOverride \"secret-en\" not found in namespace \"c\"; did you mean \"secret-enw\" in namespace \"a\" or \"secret-env\" in namespace \"b\"?"
        );
    }
}
