//! The JSON text of a configuration's objects and lists, written once when it loads.
//!
//! Most of a patch's values are parts of the template or of an override taken whole (a
//! container's volume mounts, a volume, an env var from a secret): the same bytes in every
//! patch. The patch copies their text instead of writing them again.
//!
//! A text is found by the address of its value. The values indexed belong to a [`Template`]
//! or an [`Override`] that never changes them after it is made (their fields are private), and
//! they live in the heap, so a value keeps its address for as long as its configuration lives,
//! and no other value can have it meanwhile: a look-up finds a value's own text or nothing.
//!
//! [`Template`]: super::Template
//! [`Override`]: super::Override

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::Value;

use super::draft::write_value;
use super::{Override, Template};

/// Below this many bytes a value is written rather than looked up: the look-up costs about
/// as much.
const SHORTEST: usize = 24;

/// How many levels down from a root objects and lists get a text. The texts of one level add
/// up to the size of the root's at most, so all of them to this many times it (without a
/// limit, a configuration nested 100 deep would keep 100 times its size). The values a patch
/// takes whole sit higher: an env var's `secretKeyRef` is 7 levels down in a pod.
const DEEPEST: usize = 8;

/// The texts of the objects and lists inside some values, by address.
#[derive(Debug, Default)]
pub struct Texts(HashMap<usize, Box<[u8]>, BuildHasherDefault<AddressHasher>>);

impl Texts {
    /// Indexes the objects and lists inside `root`; `root` itself too when `with_root` (only
    /// for a value that does not move: boxed, or an element of a list that is not changed).
    pub fn index(&mut self, root: &Value, with_root: bool) {
        self.walk(root, with_root, &mut Vec::new(), DEEPEST);
    }

    /// Indexes `value` (if `this_too`) and what is inside it down to `depth` more levels,
    /// writing each text in `text`.
    fn walk(&mut self, value: &Value, this_too: bool, text: &mut Vec<u8>, depth: usize) {
        if !matches!(value, Value::Object(_) | Value::Array(_)) || depth == 0 {
            return;
        }
        if this_too {
            text.clear();
            if write_value(text, value).is_ok() && text.len() >= SHORTEST {
                self.0.insert(address(value), text.as_slice().into());
            }
        }
        match value {
            Value::Object(map) => map.values().for_each(|child| self.walk(child, true, text, depth - 1)),
            Value::Array(items) => items.iter().for_each(|child| self.walk(child, true, text, depth - 1)),
            _ => {}
        }
    }

    /// The text of `value`, if it is one of the values indexed.
    pub fn get(&self, value: &Value) -> Option<&[u8]> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&address(value)).map(|t| &t[..])
    }
}

fn address(value: &Value) -> usize {
    std::ptr::from_ref(value) as usize
}

/// Hashes an address: its low bits are alignment and its high bits the same for all, so the
/// word is multiplied (Fibonacci hashing) and its high half folded onto the low.
#[derive(Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = n as u64;
    }
}

/// The texts of one merge's configuration: its template's and its overrides'.
#[derive(Clone, Copy, Default)]
pub struct Known<'k> {
    template: Option<&'k Texts>,
    overrides: &'k [&'k Override],
}

impl<'k> Known<'k> {
    pub fn new(template: &'k Template, overrides: &'k [&'k Override]) -> Self {
        Known { template: Some(&template.texts), overrides }
    }

    /// The text of `value` if it is an object or a list of the configuration, indexed.
    pub fn get(&self, value: &Value) -> Option<&'k [u8]> {
        if !matches!(value, Value::Object(_) | Value::Array(_)) {
            return None;
        }
        self.template.and_then(|t| t.get(value)).or_else(|| self.overrides.iter().find_map(|o| o.texts.get(value)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::super::secrets::Prepared;
    use super::*;
    use crate::crd::{DeployType, PodOverrideSpec, SecretRef};

    /// Every object and list inside `root` (and `root` when `with_root`), each with the text
    /// `known` has for it: `None`, or serde_json's bytes for it.
    fn walk<'v>(root: &'v Value, with_root: bool, found: &mut Vec<(&'v Value, Option<Vec<u8>>)>, known: &Known) {
        if with_root && matches!(root, Value::Object(_) | Value::Array(_)) {
            found.push((root, known.get(root).map(<[u8]>::to_vec)));
        }
        let children: Vec<&Value> = match root {
            Value::Object(map) => map.values().collect(),
            Value::Array(items) => items.iter().collect(),
            _ => Vec::new(),
        };
        for child in children {
            walk(child, true, found, known);
        }
    }

    /// Checks that each text `known` gives is serde_json's bytes for its value, that values
    /// of at least [`SHORTEST`] bytes have one, and returns how many have one.
    fn check(root: &Value, with_root: bool, known: &Known) -> usize {
        let mut found = Vec::new();
        walk(root, with_root, &mut found, known);
        let mut with_text = 0;
        for (value, text) in found {
            let expected = serde_json::to_vec(value).unwrap_or_else(|e| panic!("{e}"));
            match text {
                Some(text) => {
                    assert_eq!(String::from_utf8_lossy(&text), String::from_utf8_lossy(&expected));
                    with_text += 1;
                }
                None => assert!(expected.len() < SHORTEST, "no text for {value}"),
            }
        }
        with_text
    }

    #[test]
    fn the_texts_are_the_values_json_and_found_only_by_the_values_themselves() {
        let value = json!({"spec": {"volumes": [{"name": "logs", "emptyDir": {}}, {"name": "é\"\n\u{1}", "n": [1, 2.5, null]}],
                                    "short": {"a": 1}}});
        let mut texts = Texts::default();
        texts.index(&value, false);
        let known = Known { template: Some(&texts), overrides: &[] };
        // each object and list but the root and the short ones ({"a":1} and {}), and nothing else
        let indexed = check(&value, false, &known);
        assert!(indexed >= 4, "spec, volumes and the two volumes at least: {texts:?}");
        assert_eq!(texts.0.len(), indexed);
        assert!(known.get(&value).is_none(), "the root was not indexed");
        // an equal value somewhere else is another value
        let copy = value["spec"].clone();
        assert!(known.get(&copy).is_none());
        assert!(Known::default().get(&value["spec"]).is_none());
    }

    #[test]
    fn a_template_and_an_override_find_their_texts_after_they_moved() {
        let template = Arc::new(Template::new(json!({"metadata": {"name": "placeholder"},
            "spec": {"containers": [{"name": "base", "image": "registry.example/worker:1",
                                     "volumeMounts": [{"name": "logs", "mountPath": "/logs"}]}],
                     "volumes": [{"name": "logs", "emptyDir": {}}]}})));
        let spec = PodOverrideSpec {
            resources: serde_json::from_value(
                json!({"requests": {"cpu": "500m", "memory": "1024Mi"}, "limits": {"cpu": "1"}}),
            )
            .unwrap_or_else(|e| panic!("{e}")),
            secrets: vec![
                SecretRef {
                    deploy_type: DeployType::Env,
                    deploy_target: Some("TOKEN".into()),
                    secret: "api".into(),
                    key: Some("token".into()),
                },
                SecretRef {
                    deploy_type: DeployType::Volume,
                    deploy_target: Some("/etc/ca".into()),
                    secret: "ca".into(),
                    key: None,
                },
            ],
            pod: Some(json!({"spec": {"nodeSelector": {"pool": "hm"}}})),
            ..PodOverrideSpec::default()
        };
        let moved = [Arc::new(Override::new("big", spec))];
        let overrides: Vec<&Override> = moved.iter().map(|o| &**o).collect();
        let known = Known::new(&template, &overrides);
        let o = overrides[0];
        assert!(check(template.pod(), false, &known) >= 5, "{:?}", template.texts);
        // the override's values, but not the roots of its resources and pod fragment, which
        // moved with it
        let resources = check(o.resources.as_ref().unwrap_or(&Value::Null), false, &known);
        let fragment = check(o.spec.pod.as_ref().unwrap_or(&Value::Null), false, &known);
        let prepared: usize = o.secrets.iter().flat_map(Prepared::values).map(|v| check(v, true, &known)).sum();
        assert!(resources > 0 && fragment > 0 && prepared >= 5, "{:?}", o.texts);
        assert_eq!(o.texts.0.len(), resources + fragment + prepared);
    }
}
