//! Helpers shared by the integration tests: configurations built from JSON values.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use podtailor::merge::{Override, Template};
use podtailor::store::{Config, Loaded, Overrides};
use serde_json::Value;

/// A configuration from a template and `(namespace, name, spec)` overrides.
pub fn config(template: Value, overrides: &[(Option<&str>, &str, Value)]) -> Config {
    let mut set = Overrides::default();
    for (ns, name, spec) in overrides {
        let spec = serde_json::from_value(spec.clone()).unwrap_or_else(|e| panic!("override {name}: {e}"));
        let loaded = Loaded {
            namespace: ns.map(str::to_owned),
            r#override: Arc::new(Override::new(*name, spec)),
            origin: "test".into(),
        };
        assert!(set.insert(loaded).is_ok(), "duplicate override {name}");
    }
    Config { template: Arc::new(Template::new(template)), overrides: set }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn examples() -> PathBuf {
    repo().join("examples")
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
