//! Warnings for people: where an override replaced a value the pod set itself.
//!
//! Only the paths an override layer names are looked at (a layer is small; the pod may not
//! be), and a value counts as the pod's when the incoming pod holds it and the merge so far
//! still does — so a value the API server defaulted and the template replaced never warns.

use std::collections::HashMap;

use serde_json::Value;

use super::draft::Node;
use super::hash::{Digests, Firsts, SCAN};
use super::schema::{Element, Kind, List, field};
use super::strategic::{replaces, source};

enum Step {
    Key(String),
    /// The element of a keyed list whose merge key has this value.
    Keyed(&'static str, Value),
    /// The `envFrom` entry of this entry's source.
    Source(Value),
}

/// A step of the walk, borrowed from the layer; copied into a [`Step`] for a watched place.
#[derive(Clone, Copy)]
enum StepRef<'l, 'a> {
    Key(&'l str),
    Keyed(&'static str, Node<'l, 'a>),
    Source(Node<'l, 'a>),
}

impl StepRef<'_, '_> {
    fn owned(self) -> Step {
        match self {
            StepRef::Key(k) => Step::Key(k.to_owned()),
            StepRef::Keyed(key, k) => Step::Keyed(key, k.to_value()),
            StepRef::Source(entry) => Step::Source(entry.to_value()),
        }
    }
}

/// The places a layer sets, with the pod's value at each before the layer is merged.
pub struct Watch<'p> {
    places: Vec<(Vec<Step>, Node<'p, 'p>)>,
}

impl<'p> Watch<'p> {
    /// The places `layer` names where `merged` still holds the incoming `pod`'s own value.
    pub fn before(layer: Node, pod: &'p Value, merged: Node) -> Watch<'p> {
        let mut found = Found { places: Vec::new(), lists: Lists::default() };
        let mut steps = Vec::with_capacity(8);
        collect(layer, Kind::Pod, List::Atomic, None, &mut steps, (Node::Value(pod), merged), &mut found);
        Watch { places: found.places }
    }

    /// Adds a warning for each watched value that override `name` changed in `merged`.
    pub fn after(self, merged: Node, name: &str, out: &mut Vec<String>) {
        let mut lists = Lists::default();
        for (steps, value) in self.places {
            let now = lookup(merged, &steps, &mut lists);
            if !now.is_some_and(|now| now.eq(value)) {
                let now = now.map_or_else(|| "removed".to_owned(), |a| format!("now {}", short(&a.to_value())));
                let path = display(&steps);
                out.push(format!(
                    "override {name:?} replaced {path}, which the pod set to {} ({now})",
                    short(&value.to_value())
                ));
            }
        }
    }
}

/// Walks the places `v` (a part of the layer) sets, with `at`: what the pod and the merge so
/// far hold at the same place. A place neither holds cannot be the pod's, nor can anything
/// below it, so the walk goes down only where both hold something. `merge_key` is the key an
/// element of a keyed list was matched on, when it is a plain value: the merge leaves it as
/// it was, so it is not watched.
fn collect<'l, 'a, 'p>(
    v: Node<'l, 'a>,
    kind: Kind,
    list: List,
    merge_key: Option<&str>,
    steps: &mut Vec<StepRef<'l, 'a>>,
    at: (Node<'p, 'p>, Node),
    out: &mut Found<'p>,
) {
    if let Some(entries) = v.entries()
        && v.len() > 0
    {
        for (k, v) in entries {
            if merge_key == Some(k) {
                continue;
            }
            let (Some(pod), Some(merged)) = (at.0.field(k), at.1.field(k)) else { continue };
            let f = field(kind, k);
            steps.push(StepRef::Key(k));
            collect(v, f.kind, f.list, None, steps, (pod, merged), out);
            steps.pop();
        }
        return;
    }
    if let List::Keyed { key, element } = list
        && let Some(items) = v.items()
    {
        for item in items {
            let Some(k) = item.field(key) else { continue };
            let (Some(pod), Some(merged)) = (out.lists.keyed(at.0, key, k), out.lists.keyed(at.1, key, k)) else {
                continue;
            };
            steps.push(StepRef::Keyed(key, k));
            match element {
                Element::Merge => {
                    let plain = matches!(k, Node::Value(Value::String(_) | Value::Number(_) | Value::Bool(_)));
                    collect(item, kind, List::Atomic, plain.then_some(key), steps, (pod, merged), out);
                }
                // the element is replaced whole (or down to its keys): watch it whole
                Element::Replace | Element::RetainKeys => watch(steps, (pod, merged), &mut out.places),
            }
            steps.pop();
        }
        return;
    }
    // envFrom: an entry can replace only the entry of its source, unless the layer replaces
    // the list (the pod's entries are few: found by a scan)
    if list == List::Sources
        && !replaces(v)
        && let Some(items) = v.items()
    {
        for item in items {
            let (Some(pod), Some(merged)) = (same_source(at.0, item), same_source(at.1, item)) else { continue };
            steps.push(StepRef::Source(item));
            watch(steps, (pod, merged), &mut out.places);
            steps.pop();
        }
        return;
    }
    watch(steps, at, &mut out.places);
}

/// The entry of the list `v` that reads the source `entry` reads.
fn same_source<'r, 'a>(v: Node<'r, 'a>, entry: Node) -> Option<Node<'r, 'a>> {
    let want = source(entry);
    v.items()?.find(|e| match (want, source(*e)) {
        (Some(a), Some(b)) => a == b,
        _ => e.eq(entry),
    })
}

/// Watches the place `steps` when the merge so far still holds the pod's own value there.
fn watch<'p>(steps: &[StepRef], (pod, merged): (Node<'p, 'p>, Node), out: &mut Vec<(Vec<Step>, Node<'p, 'p>)>) {
    if pod.eq(merged) {
        out.push((steps.iter().map(|s| s.owned()).collect(), pod));
    }
}

/// What [`collect`] finds: the places to watch, and the lists it looked in.
struct Found<'p> {
    places: Vec<(Vec<Step>, Node<'p, 'p>)>,
    lists: Lists,
}

/// The elements of long keyed lists by merge key, indexed the first time an element of one
/// is looked for: a layer may name many elements of a long list, and finding each by a scan
/// would cost the list's length each time. A list is known by its address, so the index
/// serves one tree while it does not change (one walk).
#[derive(Default)]
struct Lists {
    digests: Digests,
    indexes: HashMap<(usize, &'static str), Firsts>,
}

impl Lists {
    /// The element of the list `v` whose merge key `key` is `k`.
    fn keyed<'r, 'a>(&mut self, v: Node<'r, 'a>, key: &'static str, k: Node) -> Option<Node<'r, 'a>> {
        let is = |x: Node| x.field(key).is_some_and(|x| x.eq(k));
        if v.len() <= SCAN {
            return v.items()?.find(|x| is(*x));
        }
        let digests = &self.digests;
        let firsts = self.indexes.entry((v.address(), key)).or_insert_with(|| {
            let mut firsts = Firsts::default();
            for (i, x) in v.items().into_iter().flatten().enumerate() {
                if let Some(k) = x.field(key) {
                    firsts.insert(digests.of(k), i);
                }
            }
            firsts
        });
        let at = firsts.find(digests.of(k), v.len(), |i| v.item(i).is_some_and(is))?;
        v.item(at)
    }
}

fn display(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Keyed(key, v) => out.push_str(&format!("[{key}={}]", short(v))),
            Step::Source(entry) => match source(Node::Value(entry)) {
                Some((kind, name, "")) => out.push_str(&format!("[{kind}={name}]")),
                Some((kind, name, prefix)) => out.push_str(&format!("[{kind}={name},prefix={prefix}]")),
                None => out.push_str(&format!("[{}]", short(entry))),
            },
        }
    }
    out
}

fn lookup<'r, 'a>(mut v: Node<'r, 'a>, steps: &[Step], lists: &mut Lists) -> Option<Node<'r, 'a>> {
    for step in steps {
        v = match step {
            Step::Key(k) => v.field(k)?,
            Step::Keyed(key, k) => lists.keyed(v, key, Node::Value(k))?,
            Step::Source(entry) => same_source(v, Node::Value(entry))?,
        };
    }
    Some(v)
}

fn short(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 60 { format!("{}…", text.chars().take(59).collect::<String>()) } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn warnings(layer: Value, pod: Value, before: Value, after: Value) -> Vec<String> {
        let mut out = Vec::new();
        Watch::before(Node::Value(&layer), &pod, Node::Value(&before)).after(Node::Value(&after), "o", &mut out);
        out
    }

    #[test]
    fn names_the_override_the_path_and_both_values() {
        let pod = json!({"spec": {"containers": [{"name": "base", "resources": {"limits": {"cpu": "2"}}}]}});
        let layer = json!({"spec": {"containers": [{"name": "base", "resources": {"limits": {"cpu": "500m"}}}]}});
        assert_eq!(
            warnings(layer.clone(), pod.clone(), pod, layer),
            vec![
                r#"override "o" replaced spec.containers[name=base].resources.limits.cpu, which the pod set to 2 (now 500m)"#
            ]
        );
    }

    #[test]
    fn an_env_var_is_watched_whole() {
        let pod = json!({"spec": {"containers": [{"name": "base", "env": [{"name": "X", "value": "1"}]}]}});
        let layer = json!({"spec": {"containers": [{"name": "base", "env": [{"name": "X", "valueFrom": {}}]}]}});
        assert_eq!(warnings(layer.clone(), pod.clone(), pod, layer).len(), 1);
    }

    #[test]
    fn an_env_from_entry_warns_only_when_it_replaces_the_pods_entry_of_its_source() {
        let pod = json!({"spec": {"containers": [{"name": "base", "envFrom": [{"secretRef": {"name": "task-env"}}]}]}});
        let added =
            json!({"spec": {"containers": [{"name": "base", "envFrom": [{"configMapRef": {"name": "more"}}]}]}});
        let after = json!({"spec": {"containers": [{"name": "base", "envFrom": [{"secretRef": {"name": "task-env"}}, {"configMapRef": {"name": "more"}}]}]}});
        assert_eq!(warnings(added, pod.clone(), pod.clone(), after), Vec::<String>::new());
        let optional = json!({"spec": {"containers": [{"name": "base", "envFrom": [{"secretRef": {"name": "task-env", "optional": true}}]}]}});
        assert_eq!(
            warnings(optional.clone(), pod.clone(), pod.clone(), optional),
            vec![
                r#"override "o" replaced spec.containers[name=base].envFrom[secretRef=task-env], which the pod set to {"secretRef":{"name":"task-env"}} (now {"secretRef":{"name":"task-env","optional":true}})"#
            ]
        );
        let replace = json!({"spec": {"containers": [{"name": "base", "envFrom": [{"$patch": "replace"}, {"configMapRef": {"name": "more"}}]}]}});
        let replaced =
            json!({"spec": {"containers": [{"name": "base", "envFrom": [{"configMapRef": {"name": "more"}}]}]}});
        assert_eq!(warnings(replace, pod.clone(), pod, replaced).len(), 1);
    }

    #[test]
    fn a_value_the_template_or_an_earlier_override_replaced_is_not_the_pods() {
        let layer = json!({"spec": {"serviceAccountName": "later"}});
        let pod = json!({"spec": {"serviceAccountName": "default"}});
        let before = json!({"spec": {"serviceAccountName": "from-template"}});
        assert!(warnings(layer.clone(), pod, before, layer).is_empty());
    }
}
