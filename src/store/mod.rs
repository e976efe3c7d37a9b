//! Where the template and the overrides come from. Both feed one in-memory [`Config`]
//! snapshot; a request never waits on I/O.

pub mod cluster;
pub mod files;
pub mod reload;

use std::collections::HashMap;
use std::sync::Arc;

use crate::merge::{Override, Template};

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

/// Everything a decision needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub template: Arc<Template>,
    pub overrides: Overrides,
}
