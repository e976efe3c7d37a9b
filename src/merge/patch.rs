//! The RFC 6902 patch from the incoming pod to the desired pod.
//!
//! Minimal in the sense that nothing equal is touched: maps are compared key by key, keyed
//! lists element by element (aligned on their merge key, so an element keeps its operations
//! local), and other lists are replaced only when they differ. Paths are built from tokens,
//! so keys with `/` or `~` are escaped; an added subtree is one `add`, so parents always
//! exist before their children.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

use super::lookup;
use super::schema::{Kind, List, field};

/// What happens to the values of `to` that go into operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// Copied: `to` is left as it was.
    Copy,
    /// Moved into the operations: `to` is left with holes, for a caller that needs only the patch.
    Take,
}

/// The patch that turns `from` into `to`, both pods.
pub fn diff(from: &Value, to: &mut Value, values: Values) -> Patch {
    let mut ops = Vec::new();
    let mut d = Diff { values, ops: &mut ops, path: String::new() };
    d.value(from, to, Kind::Pod, List::Atomic);
    Patch(ops)
}

struct Diff<'a> {
    values: Values,
    ops: &'a mut Vec<PatchOperation>,
    /// The JSON pointer of the values being compared, already escaped.
    path: String,
}

impl Diff<'_> {
    fn give(&self, v: &mut Value) -> Value {
        match self.values {
            Values::Copy => v.clone(),
            Values::Take => std::mem::take(v),
        }
    }

    /// Appends `token` to the path; returns the length to truncate back to.
    fn push(&mut self, token: &str) -> usize {
        let len = self.path.len();
        push_token(&mut self.path, token);
        len
    }

    fn push_index(&mut self, i: usize) -> usize {
        let len = self.path.len();
        push_index(&mut self.path, i);
        len
    }

    fn pointer(&self) -> PointerBuf {
        pointer(self.path.clone())
    }

    fn add(&mut self, path: PointerBuf, v: &mut Value) {
        let value = self.give(v);
        self.ops.push(PatchOperation::Add(AddOperation { path, value }));
    }

    fn value(&mut self, from: &Value, to: &mut Value, kind: Kind, list: List) {
        match (from, to) {
            (Value::Object(from), Value::Object(to)) => self.map(from, to, kind),
            // a merging list is aligned element by element, which finds equal lists equal too
            (Value::Array(from), Value::Array(to)) if list != List::Atomic => self.list(from, to, kind, list),
            (from, to) if !lookup::eq(from, to) => {
                let value = self.give(to);
                self.ops.push(PatchOperation::Replace(ReplaceOperation { path: self.pointer(), value }))
            }
            _ => {}
        }
    }

    fn map(&mut self, from: &Map<String, Value>, to: &mut Map<String, Value>, kind: Kind) {
        for key in from.keys().filter(|k| !lookup::contains(to, k)) {
            let len = self.push(key);
            self.ops.push(PatchOperation::Remove(RemoveOperation { path: self.pointer() }));
            self.path.truncate(len);
        }
        let mut same_place = from.iter();
        for (key, value) in to.iter_mut() {
            // the same key at the same place is the usual case: no look-up
            let old = match same_place.next() {
                Some((k, v)) if k == key => Some(v),
                _ => lookup::get(from, key),
            };
            // equal scalars, most of a pod, need neither a path nor an operation
            if let Some(old) = old
                && is_scalar(old)
                && is_scalar(value)
                && old == &*value
            {
                continue;
            }
            let len = self.push(key);
            match old {
                None => {
                    let path = self.pointer();
                    self.add(path, value);
                }
                Some(old) => {
                    let f = field(kind, key);
                    self.value(old, value, f.kind, f.list);
                }
            }
            self.path.truncate(len);
        }
    }

    /// A merging list: align the two lists (on the merge key, or on equality for sets), remove
    /// what is gone from the back, then walk the new list inserting new elements and diffing
    /// aligned ones in place.
    fn list(&mut self, from: &[Value], to: &mut [Value], kind: Kind, list: List) {
        let same = |a: &Value, b: &Value| match list {
            List::Keyed { key, .. } => match (lookup::field(a, key), lookup::field(b, key)) {
                (Some(x), Some(y)) => lookup::eq(x, y),
                _ => lookup::eq(a, b),
            },
            _ => lookup::eq(a, b),
        };
        let pairs = align(from, to, same);
        let kept: Vec<bool> = (0..from.len()).map(|i| pairs.iter().any(|&(f, _)| f == i)).collect();
        for i in (0..from.len()).rev().filter(|&i| !kept[i]) {
            let len = self.push_index(i);
            self.ops.push(PatchOperation::Remove(RemoveOperation { path: self.pointer() }));
            self.path.truncate(len);
        }
        let mut pairs = pairs.into_iter().peekable();
        for (j, value) in to.iter_mut().enumerate() {
            let len = self.push_index(j);
            match pairs.next_if(|&(_, t)| t == j) {
                Some((f, _)) => self.value(&from[f], value, kind, List::Atomic),
                None => {
                    let path = self.pointer();
                    self.add(path, value);
                }
            }
            self.path.truncate(len);
        }
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// Appends `/token` to a JSON pointer, escaped as RFC 6901 says (`~` as `~0`, `/` as `~1`).
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    if token.bytes().any(|b| b == b'~' || b == b'/') {
        for c in token.chars() {
            match c {
                '~' => path.push_str("~0"),
                '/' => path.push_str("~1"),
                c => path.push(c),
            }
        }
    } else {
        path.push_str(token);
    }
}

fn push_index(path: &mut String, i: usize) {
    use std::fmt::Write;
    path.push('/');
    if i < 10 {
        path.push(char::from(b'0' + i as u8));
    } else {
        let _ = write!(path, "{i}");
    }
}

/// A pointer built by [`push_token`] is always well formed; parsing only checks it.
fn pointer(path: String) -> PointerBuf {
    match PointerBuf::parse(path) {
        Ok(p) => p,
        // unreachable: the tokens were escaped; rebuild it token by token all the same
        Err(e) => {
            PointerBuf::from_tokens(e.subject().split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")))
        }
    }
}

/// The longest common subsequence of `a` and `b` under `same`, as index pairs in order.
fn align(a: &[Value], b: &[Value], same: impl Fn(&Value, &Value) -> bool) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    // the common case: the same keys in the same order
    if n == m && a.iter().zip(b).all(|(x, y)| same(x, y)) {
        return (0..n).map(|i| (i, i)).collect();
    }
    // lengths[i * (m + 1) + j]: LCS length of a[i..] and b[j..]
    let width = m + 1;
    let mut lengths = vec![0usize; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lengths[i * width + j] = if same(&a[i], &b[j]) {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j, mut pairs) = (0, 0, Vec::new());
    while i < n && j < m {
        if same(&a[i], &b[j]) {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if lengths[(i + 1) * width + j] >= lengths[i * width + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn ops(from: Value, to: Value) -> Value {
        let copied = diff(&from, &mut to.clone(), Values::Copy);
        let taken = diff(&from, &mut to.clone(), Values::Take);
        assert_eq!(copied, taken, "copying and taking give different patches");
        serde_json::to_value(copied).unwrap_or_default()
    }

    #[rstest]
    #[case::nothing_to_do(json!({"a": 1}), json!({"a": 1}), json!([]))]
    #[case::add_remove_replace(
        json!({"spec": {"a": 1, "b": 2}}), json!({"spec": {"a": 3, "c": {"d": 4}}}),
        json!([{"op": "remove", "path": "/spec/b"}, {"op": "replace", "path": "/spec/a", "value": 3}, {"op": "add", "path": "/spec/c", "value": {"d": 4}}]))]
    #[case::keys_are_escaped(
        json!({"metadata": {"annotations": {}}}), json!({"metadata": {"annotations": {"podtailor.dev/a~b": "x"}}}),
        json!([{"op": "add", "path": "/metadata/annotations/podtailor.dev~1a~0b", "value": "x"}]))]
    #[case::parents_before_children(
        json!({"metadata": {}}), json!({"metadata": {"labels": {"a": "1"}}}),
        json!([{"op": "add", "path": "/metadata/labels", "value": {"a": "1"}}]))]
    #[case::keyed_elements_diff_in_place(
        json!({"spec": {"volumes": [{"name": "t", "projected": {}}], "containers": [{"name": "base", "image": "a"}]}}),
        json!({"spec": {"volumes": [{"name": "logs", "emptyDir": {}}, {"name": "t", "projected": {}}], "containers": [{"name": "base", "image": "b"}]}}),
        json!([{"op": "add", "path": "/spec/volumes/0", "value": {"name": "logs", "emptyDir": {}}},
               {"op": "replace", "path": "/spec/containers/0/image", "value": "b"}]))]
    #[case::removed_elements_go_from_the_back(
        json!({"spec": {"volumes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}),
        json!({"spec": {"volumes": [{"name": "b"}]}}),
        json!([{"op": "remove", "path": "/spec/volumes/2"}, {"op": "remove", "path": "/spec/volumes/0"}]))]
    #[case::atomic_lists_are_replaced_whole(
        json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}),
        json!({"spec": {"tolerations": [{"key": "a"}]}}),
        json!([{"op": "replace", "path": "/spec/tolerations", "value": [{"key": "a"}]}]))]
    fn diffs(#[case] from: Value, #[case] to: Value, #[case] want: Value) {
        assert_eq!(ops(from, to), want);
    }

    #[test]
    fn the_patch_applied_gives_the_target() {
        let from = json!({"spec": {"containers": [{"name": "x", "env": [{"name": "A"}, {"name": "B"}]}, {"name": "y"}],
                                   "volumes": [{"name": "v1"}, {"name": "v2"}, {"name": "v3"}]}});
        let to = json!({"spec": {"containers": [{"name": "n"}, {"name": "y", "image": "i"}, {"name": "x", "env": [{"name": "B"}, {"name": "C"}]}],
                                 "volumes": [{"name": "v3"}, {"name": "v0"}, {"name": "v1", "x": 1}]}});
        let mut doc = from.clone();
        json_patch::patch(&mut doc, &diff(&from, &mut to.clone(), Values::Copy)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc, to);
    }
}
