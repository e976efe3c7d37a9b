//! Strategic merge of one layer onto a pod, on JSON values, guided by [`schema`](super::schema).
//!
//! Fields the schema does not know merge as maps (objects) or are replaced (everything
//! else), so a field newer than this code passes through untouched.

use serde_json::{Map, Value};

use super::draft::{Draft, Entries, Items, Node, Object};
use super::hash::{Digests, Firsts, SCAN};
use super::schema::{Element, Kind, List, field, omitted_when_zero};

/// What a `null` in a layer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nulls {
    /// The layer is an object (the incoming pod): `null` is its value.
    Keep,
    /// The layer is a patch (an override's pod fragment): `null` deletes the key.
    Delete,
}

/// Merges `layer` onto `base` (the layer wins), both objects of kind `kind`.
pub fn merge(base: &mut Value, layer: Value, kind: Kind, nulls: Nulls) {
    let mut draft = Draft::owned(std::mem::take(base));
    merge_draft(&mut draft, Draft::owned(layer), kind, nulls);
    *base = draft.into_value();
}

/// [`merge`] on drafts: what the layer holds is taken as it is (borrowed, if it was) where
/// the base has nothing to merge it with.
pub(crate) fn merge_draft<'a>(base: &mut Draft<'a>, layer: Draft<'a>, kind: Kind, nulls: Nulls) {
    if base.node().is_object() && layer.node().is_object() {
        if let (Some(base), Ok(layer)) = (base.object_mut(), layer.into_entries()) {
            merge_object(base, layer, kind, nulls);
        }
        return;
    }
    *base = cleaned(layer, nulls);
}

fn merge_object<'a>(base: &mut Object<'a>, layer: Entries<'a>, kind: Kind, nulls: Nulls) {
    // a layer's keys are unique, so a key can only meet an entry the base had before it, and
    // an entry it deletes is taken out at the end (positions stay as they are meanwhile)
    let before = base.len();
    let index = (before > SCAN && layer.size_hint().0 > SCAN).then(|| {
        let digests = Digests::default();
        let mut firsts = Firsts::default();
        base.keys().enumerate().for_each(|(i, k)| firsts.insert(digests.of_str(k), i));
        (digests, firsts)
    });
    let position = |base: &Object<'a>, key: &str| match &index {
        Some((digests, firsts)) => firsts.find(digests.of_str(key), before, |i| base.key(i) == key),
        None => base.position_in_first(before, key),
    };
    let mut deleted = Vec::new();
    for (key, value) in layer {
        let at = position(base, &key);
        if value.node().is_null() && nulls == Nulls::Delete {
            deleted.extend(at);
            continue;
        }
        let f = field(kind, &key);
        if f.list == List::Sources && nulls == Nulls::Delete && replaces(value.node()) {
            // `$patch: replace`: the layer's list as it is, without the directive (none left
            // is no list)
            let value = cleaned(value, nulls);
            match at {
                _ if value.node().is_null() => deleted.extend(at),
                Some(at) => *base.at_mut(at) = value,
                None => base.push(key, value),
            }
            continue;
        }
        let Some(existing) = at.map(|at| base.at_mut(at)) else {
            base.push(key, cleaned(value, nulls));
            continue;
        };
        let (old, new) = (existing.node(), value.node());
        if old.is_object() && new.is_object() {
            if let (Some(existing), Ok(value)) = (existing.object_mut(), value.into_entries()) {
                merge_object(existing, value, f.kind, nulls);
            }
        } else if old.is_array() && new.is_array() && f.list != List::Atomic {
            let (Some(existing), Ok(value)) = (existing.array_mut(), value.into_items()) else { continue };
            match f.list {
                List::Keyed { key, element } => merge_keyed(existing, value, key, element, f.kind, nulls),
                List::Sources => merge_sources(existing, value, nulls),
                _ => merge_set(existing, value),
            }
        } else {
            // an atomic list, a scalar, or values of different types: the layer's replaces it
            *existing = cleaned(value, nulls);
        }
    }
    if !deleted.is_empty() {
        deleted.sort_unstable();
        let mut at = 0;
        base.retain(|_, _| {
            at += 1;
            deleted.binary_search(&(at - 1)).is_err()
        });
    }
}

/// A set: the union, in order (a value already there is not added again).
fn merge_set<'a>(base: &mut Vec<Draft<'a>>, layer: Items<'a>) {
    if layer.size_hint().0 <= SCAN {
        for item in layer {
            if !base.iter().any(|e| e.node().eq(item.node())) {
                base.push(item);
            }
        }
        return;
    }
    let digests = Digests::default();
    let mut firsts = Firsts::default();
    base.iter().enumerate().for_each(|(i, e)| firsts.insert(digests.of(e.node()), i));
    for item in layer {
        let digest = digests.of(item.node());
        if firsts.find(digest, base.len(), |i| base[i].node().eq(item.node())).is_none() {
            firsts.insert(digest, base.len());
            base.push(item);
        }
    }
}

/// Merges `envFrom` ([`List::Sources`]): an entry replaces the entry of the same source, any
/// the list already holds (so nothing is listed twice), or is appended.
fn merge_sources<'a>(base: &mut Vec<Draft<'a>>, layer: Items<'a>, nulls: Nulls) {
    let same = |a: Node, b: Node| match (source(a), source(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.eq(b),
    };
    if base.len() + layer.size_hint().0 <= SCAN {
        for item in layer {
            match base.iter().position(|e| same(e.node(), item.node())) {
                Some(at) => base[at] = cleaned(item, nulls),
                None => base.push(cleaned(item, nulls)),
            }
        }
        return;
    }
    let digests = Digests::default();
    let digest = |n: Node| match source(n) {
        Some((kind, name, prefix)) => {
            digests.of_str(kind) ^ digests.of_str(name).rotate_left(21) ^ digests.of_str(prefix).rotate_left(42)
        }
        None => !digests.of(n),
    };
    let mut firsts = Firsts::default();
    base.iter().enumerate().for_each(|(i, e)| firsts.insert(digest(e.node()), i));
    for item in layer {
        let d = digest(item.node());
        match firsts.find(d, base.len(), |i| same(base[i].node(), item.node())) {
            Some(at) => base[at] = cleaned(item, nulls),
            None => {
                firsts.insert(d, base.len());
                base.push(cleaned(item, nulls));
            }
        }
    }
}

/// The source an `envFrom` entry reads and the prefix it puts before the names:
/// (`configMapRef` or `secretRef`, the name, the prefix), a missing name or prefix being `""`
/// as it is once stored. `None` for an entry of another shape, which only an equal entry meets.
pub(crate) fn source<'r>(entry: Node<'r, '_>) -> Option<(&'static str, &'r str, &'r str)> {
    let text = |n: Option<Node<'r, '_>>| match n {
        None => Some(""),
        Some(n) => n.as_str(),
    };
    let (kind, reference) = match (entry.field("configMapRef"), entry.field("secretRef")) {
        (Some(r), None) => ("configMapRef", r),
        (None, Some(r)) => ("secretRef", r),
        _ => return None,
    };
    Some((kind, text(reference.field("name"))?, text(entry.field("prefix"))?))
}

/// Whether a list of a patch layer holds strategic merge's `{"$patch": "replace"}`.
pub(crate) fn replaces(list: Node) -> bool {
    list.items().is_some_and(|mut items| items.any(|i| i.field("$patch").and_then(Node::as_str) == Some("replace")))
}

/// Merges a keyed list: an element of the layer meets the element of `base` with the same
/// key, or is appended. Elements of the layer only meet elements that were in `base` before
/// this layer, so a layer's own list is never collapsed.
fn merge_keyed<'a>(base: &mut Vec<Draft<'a>>, layer: Items<'a>, key: &str, element: Element, kind: Kind, nulls: Nulls) {
    let before = base.len();
    let index = (before > SCAN && layer.size_hint().0 > SCAN).then(|| {
        let digests = Digests::default();
        let mut firsts = Firsts::default();
        for (i, b) in base.iter().enumerate() {
            if let Some(k) = b.node().field(key) {
                firsts.insert(digests.of(k), i);
            }
        }
        (digests, firsts)
    });
    for item in layer {
        let found = item.node().field(key).and_then(|k| {
            let is = |i: usize| base[i].node().field(key).is_some_and(|b| b.eq(k));
            match &index {
                Some((digests, firsts)) => firsts.find(digests.of(k), before, is),
                None => (0..before).find(|&i| is(i)),
            }
        });
        let Some(at) = found else {
            base.push(cleaned(item, nulls));
            continue;
        };
        let target = &mut base[at];
        match element {
            Element::Merge => merge_draft(target, item, kind, nulls),
            Element::Replace => *target = cleaned(item, nulls),
            Element::RetainKeys => {
                if item.node().is_object()
                    && let Some(target) = target.object_mut()
                {
                    let item = item.node();
                    target.retain(|k, _| item.field(k).is_some());
                }
                merge_draft(target, item, kind, nulls);
            }
        }
    }
}

/// Takes out of a configuration layer the values the API server would not store (empty
/// lists, empty maps of map fields, false plain booleans), so a layer never adds what the
/// stored pod cannot hold and a second pass finds nothing to do. In a patch layer such a
/// value still clears the field (it becomes `null`); in an object layer it is dropped.
pub fn drop_zeroes(value: &mut Value, kind: Kind, nulls: Nulls) {
    match value {
        Value::Object(map) => {
            map.retain(|k, v| !(nulls == Nulls::Keep && omitted_when_zero(kind, k, v)));
            for (k, v) in map.iter_mut() {
                let f = field(kind, k);
                if omitted_when_zero(kind, k, v) {
                    *v = if v.is_object() { Value::Object(Map::new()) } else { Value::Null };
                    continue;
                }
                drop_zeroes(v, f.kind, nulls);
            }
            if nulls == Nulls::Delete {
                map.retain(|k, v| !(v.as_object().is_some_and(Map::is_empty) && omitted_when_zero(kind, k, v)));
            }
        }
        Value::Array(items) => {
            for item in items {
                drop_zeroes(item, kind, nulls);
            }
        }
        _ => {}
    }
}

/// A layer's value as it enters the result: with `Nulls::Delete`, nested `null`s and list
/// elements `{"$patch": …}` are directives, not values, and are dropped (a list that held only
/// directives becomes `null`, dropped in turn).
fn cleaned(value: Draft<'_>, nulls: Nulls) -> Draft<'_> {
    if nulls == Nulls::Keep || !value.node().has_directive() {
        return value;
    }
    Draft::owned(cleaned_value(value.into_value()))
}

fn cleaned_value(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, cleaned_value(v)))
                .filter(|(_, v)| !v.is_null())
                .collect(),
        ),
        Value::Array(items) => {
            let had = items.len();
            let items: Vec<Value> =
                items.into_iter().filter(|i| i.get("$patch").is_none()).map(cleaned_value).collect();
            if items.is_empty() && had > 0 { Value::Null } else { Value::Array(items) }
        }
        value => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn merged(base: Value, layer: Value, nulls: Nulls) -> Value {
        let mut base = base;
        merge(&mut base, layer, Kind::Pod, nulls);
        base
    }

    #[rstest]
    #[case::maps_merge_key_by_key(
        json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
        json!({"metadata": {"labels": {"b": "3", "c": "4"}}}),
        json!({"metadata": {"labels": {"a": "1", "b": "3", "c": "4"}}}))]
    #[case::containers_match_by_name_not_position(
        json!({"spec": {"containers": [{"name": "base", "image": "a"}, {"name": "side", "image": "s"}]}}),
        json!({"spec": {"containers": [{"name": "side", "image": "t"}, {"name": "base", "args": ["x"]}]}}),
        json!({"spec": {"containers": [{"name": "base", "image": "a", "args": ["x"]}, {"name": "side", "image": "t"}]}}))]
    #[case::env_appears_once_and_later_wins_whole(
        json!({"spec": {"containers": [{"name": "base", "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}}),
        json!({"spec": {"containers": [{"name": "base", "env": [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}]}]}}),
        json!({"spec": {"containers": [{"name": "base", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]}]}}))]
    #[case::volume_source_replaced_as_retain_keys(
        json!({"spec": {"volumes": [{"name": "config", "configMap": {"name": "c"}}]}}),
        json!({"spec": {"volumes": [{"name": "config", "secret": {"secretName": "s"}}]}}),
        json!({"spec": {"volumes": [{"name": "config", "secret": {"secretName": "s"}}]}}))]
    #[case::same_volume_source_merges(
        json!({"spec": {"volumes": [{"name": "config", "configMap": {"name": "c", "defaultMode": 420}}]}}),
        json!({"spec": {"volumes": [{"name": "config", "configMap": {"name": "d"}}]}}),
        json!({"spec": {"volumes": [{"name": "config", "configMap": {"name": "d", "defaultMode": 420}}]}}))]
    #[case::mounts_by_mount_path(
        json!({"spec": {"containers": [{"name": "base", "volumeMounts": [{"name": "a", "mountPath": "/x"}]}]}}),
        json!({"spec": {"containers": [{"name": "base", "volumeMounts": [{"name": "b", "mountPath": "/x"}, {"name": "c", "mountPath": "/y"}]}]}}),
        json!({"spec": {"containers": [{"name": "base", "volumeMounts": [{"name": "b", "mountPath": "/x"}, {"name": "c", "mountPath": "/y"}]}]}}))]
    #[case::atomic_lists_are_replaced(
        json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}], "containers": [{"name": "base", "args": ["1", "2"]}]}}),
        json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}], "containers": [{"name": "base", "args": ["3"]}]}}),
        json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}], "containers": [{"name": "base", "args": ["3"]}]}}))]
    #[case::false_and_zero_override(
        json!({"spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 600, "automountServiceAccountToken": true}}),
        json!({"spec": {"hostNetwork": false, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false}}),
        json!({"spec": {"hostNetwork": false, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false}}))]
    #[case::ports_by_container_port(
        json!({"spec": {"containers": [{"name": "base", "ports": [{"containerPort": 80, "name": "http"}]}]}}),
        json!({"spec": {"containers": [{"name": "base", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]}]}}),
        json!({"spec": {"containers": [{"name": "base", "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}]}]}}))]
    #[case::finalizers_are_a_set(
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"finalizers": ["b", "c"]}}),
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}))]
    #[case::unknown_fields_merge_as_maps_and_pass_through(
        json!({"spec": {"futureThing": {"a": 1, "list": [1, 2]}, "containers": [{"name": "base", "futureField": {"x": 1}}]}}),
        json!({"spec": {"futureThing": {"b": 2, "list": [3]}}}),
        json!({"spec": {"futureThing": {"a": 1, "list": [3], "b": 2}, "containers": [{"name": "base", "futureField": {"x": 1}}]}}))]
    #[case::a_layer_list_is_never_collapsed(
        json!({"spec": {"containers": [{"name": "base", "env": [{"name": "A", "value": "1"}]}]}}),
        json!({"spec": {"containers": [{"name": "base", "env": [{"name": "D", "value": "1"}, {"name": "D", "value": "2"}]}]}}),
        json!({"spec": {"containers": [{"name": "base", "env": [{"name": "A", "value": "1"}, {"name": "D", "value": "1"}, {"name": "D", "value": "2"}]}]}}))]
    fn merges_like_strategic_merge(#[case] base: Value, #[case] layer: Value, #[case] want: Value) {
        assert_eq!(merged(base, layer, Nulls::Keep), want);
    }

    fn env_from(entries: Value) -> Value {
        json!({"spec": {"containers": [{"name": "base", "envFrom": entries}]}})
    }

    #[rstest]
    #[case::entries_are_added(
        json!([{"secretRef": {"name": "platform-env"}}]),
        json!([{"configMapRef": {"name": "task-settings"}}]),
        json!([{"secretRef": {"name": "platform-env"}}, {"configMapRef": {"name": "task-settings"}}]))]
    #[case::an_entry_of_the_same_source_is_replaced_in_place(
        json!([{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}]),
        json!([{"secretRef": {"name": "a", "optional": true}}]),
        json!([{"secretRef": {"name": "a", "optional": true}}, {"configMapRef": {"name": "b"}}]))]
    #[case::kind_name_and_prefix_make_the_source(
        json!([{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "b"}, "prefix": "B_"}]),
        json!([{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "a"}, "prefix": "A_"}, {"configMapRef": {"name": "b"}, "prefix": ""}, {"configMapRef": {"name": "b"}, "prefix": "B_"}]),
        json!([{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "b"}, "prefix": "B_"}, {"configMapRef": {"name": "a"}}, {"secretRef": {"name": "a"}, "prefix": "A_"}, {"configMapRef": {"name": "b"}, "prefix": ""}]))]
    #[case::nothing_is_listed_twice(
        json!([{"secretRef": {"name": "a"}}]),
        json!([{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "a"}}, {"configMapRef": {"name": "c"}, "optional": false}]),
        json!([{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "c"}, "optional": false}]))]
    #[case::replace_directive_replaces_the_list(
        json!([{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}]),
        json!([{"$patch": "replace"}, {"configMapRef": {"name": "only"}}]),
        json!([{"configMapRef": {"name": "only"}}]))]
    fn env_from_merges_by_source(#[case] base: Value, #[case] layer: Value, #[case] want: Value) {
        assert_eq!(merged(env_from(base), env_from(layer), Nulls::Delete), env_from(want));
    }

    #[test]
    fn env_from_merges_by_source_in_long_lists_too() {
        let entries =
            |n: usize, kind: &str| -> Vec<Value> { (0..n).map(|i| json!({kind: {"name": format!("s{i}")}})).collect() };
        let base = Value::Array(entries(100, "secretRef"));
        let mut layer = entries(100, "configMapRef");
        layer.extend(entries(100, "secretRef").into_iter().rev().map(|mut e| {
            e["secretRef"]["optional"] = json!(true);
            e
        }));
        let got = merged(env_from(base), env_from(Value::Array(layer)), Nulls::Delete);
        let got = got["spec"]["containers"][0]["envFrom"].as_array().cloned().unwrap_or_default();
        assert_eq!(got.len(), 200);
        assert_eq!(got[7], json!({"secretRef": {"name": "s7", "optional": true}}));
        assert_eq!(got[107], json!({"configMapRef": {"name": "s7"}}));
    }

    #[test]
    fn a_replace_directive_never_reaches_the_pod() {
        // with nothing left the list goes; in a container the base did not have, it is dropped
        let base = json!({"spec": {"containers": [{"name": "base", "envFrom": [{"secretRef": {"name": "a"}}]}]}});
        let layer = json!({"spec": {"containers": [{"name": "base", "envFrom": [{"$patch": "replace"}]},
                                                     {"name": "side", "envFrom": [{"$patch": "replace"}, {"secretRef": {"name": "s"}}]}]}});
        assert_eq!(
            merged(base, layer, Nulls::Delete),
            json!({"spec": {"containers": [{"name": "base"}, {"name": "side", "envFrom": [{"secretRef": {"name": "s"}}]}]}})
        );
    }

    #[test]
    fn zero_values_leave_a_template_and_clear_in_a_patch() {
        let mut template = json!({"metadata": {"labels": {}}, "spec": {"hostNetwork": false, "nodeSelector": {}, "affinity": {},
            "containers": [{"name": "base", "args": [], "tty": false, "resources": {"limits": {}},
                            "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": false}]}],
            "volumes": [{"name": "v", "emptyDir": {}}]}});
        drop_zeroes(&mut template, Kind::Pod, Nulls::Keep);
        assert_eq!(
            template,
            json!({"metadata": {}, "spec": {"affinity": {},
            "containers": [{"name": "base", "resources": {}, "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}]}})
        );
        let mut fragment = json!({"spec": {"hostNetwork": false, "tolerations": [], "nodeSelector": {}}});
        drop_zeroes(&mut fragment, Kind::Pod, Nulls::Delete);
        assert_eq!(fragment, json!({"spec": {"hostNetwork": null, "tolerations": null}}));
    }

    #[test]
    fn null_deletes_in_a_patch_layer_and_is_a_value_in_an_object_layer() {
        let base = json!({"spec": {"nodeSelector": {"pool": "a", "zone": "z"}}});
        let layer = json!({"spec": {"nodeSelector": {"pool": null, "new": {"x": null, "y": 1}}}});
        assert_eq!(
            merged(base.clone(), layer.clone(), Nulls::Delete),
            json!({"spec": {"nodeSelector": {"zone": "z", "new": {"y": 1}}}})
        );
        assert_eq!(
            merged(base, layer, Nulls::Keep),
            json!({"spec": {"nodeSelector": {"pool": null, "zone": "z", "new": {"x": null, "y": 1}}}})
        );
    }
}
