//! The RFC 6902 patch from the incoming pod to the desired pod.
//!
//! Minimal in the sense that nothing equal is touched: maps are compared key by key, keyed
//! lists element by element (aligned on their merge key, so an element keeps its operations
//! local), and other lists are replaced only when they differ. Paths are built from tokens,
//! so keys with `/` or `~` are escaped; an added subtree is one `add`, so parents always
//! exist before their children.

use std::collections::{HashMap, HashSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde::Serialize;
use serde_json::{Map, Value};

use super::draft::{Draft, Entries, Node};
use super::hash::Digests;
use super::lookup::{self, same_key};
use super::schema::{Kind, List, field};

/// The patch that turns `from` into `to`, both pods.
pub fn diff(from: &Value, to: &Value) -> Patch {
    diff_draft(from, Draft::Borrowed(to))
}

/// The patch that turns `from` into the draft `to`, consuming it: values the engine made move
/// into the operations, borrowed ones are copied, and a part of `to` that is `from`'s own
/// value at the same place is stepped over without a look inside.
pub(crate) fn diff_draft(from: &Value, to: Draft<'_>) -> Patch {
    let mut ops = Vec::with_capacity(32);
    Diff { ops: &mut ops, path: String::with_capacity(128) }.value(from, to, Kind::Pod, List::Atomic);
    Patch(ops)
}

/// The same patch as [`diff_draft`], as its RFC 6902 JSON text (the bytes `Patch` serialises
/// to), written while the diff walks: no value is copied into an operation, no path parsed.
pub(crate) fn diff_draft_json(from: &Value, to: Draft<'_>) -> serde_json::Result<Vec<u8>> {
    let mut json = JsonOps { text: Vec::with_capacity(4096), error: None };
    json.text.push(b'[');
    Diff { ops: &mut json, path: String::with_capacity(128) }.value(from, to, Kind::Pod, List::Atomic);
    if let Some(e) = json.error {
        return Err(e);
    }
    match json.text.last_mut() {
        Some(last @ b',') => *last = b']',
        _ => json.text.push(b']'),
    }
    Ok(json.text)
}

/// Where the diff puts its operations, in order. A mark is a position in them: the operations
/// after one can be taken off and put back, so that removals found later go before them.
trait Sink<'a>: Sized {
    fn mark(&self) -> usize;
    fn split_off(&mut self, at: usize) -> Self;
    fn append(&mut self, tail: Self);
    fn add(&mut self, path: &str, value: Draft<'a>);
    fn replace(&mut self, path: &str, value: Draft<'a>);
    fn remove(&mut self, path: &str);
}

impl<'a> Sink<'a> for Vec<PatchOperation> {
    fn mark(&self) -> usize {
        self.len()
    }

    fn split_off(&mut self, at: usize) -> Self {
        Vec::split_off(self, at)
    }

    fn append(&mut self, mut tail: Self) {
        Vec::append(self, &mut tail);
    }

    fn add(&mut self, path: &str, value: Draft<'a>) {
        self.push(PatchOperation::Add(AddOperation { path: pointer(path), value: value.into_value() }));
    }

    fn replace(&mut self, path: &str, value: Draft<'a>) {
        self.push(PatchOperation::Replace(ReplaceOperation { path: pointer(path), value: value.into_value() }));
    }

    fn remove(&mut self, path: &str) {
        self.push(PatchOperation::Remove(RemoveOperation { path: pointer(path) }));
    }
}

/// The operations as JSON text, each followed by a comma; the first error writing a value is
/// kept (there is none for JSON values and strings, but it is not dropped).
struct JsonOps {
    text: Vec<u8>,
    error: Option<serde_json::Error>,
}

/// An operation as `PatchOperation` serialises it, its value not copied.
#[derive(Serialize)]
struct Op<'p, 'r, 'a> {
    op: &'static str,
    path: &'p str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Node<'r, 'a>>,
}

impl JsonOps {
    fn op(&mut self, op: &'static str, path: &str, value: Option<Draft<'_>>) {
        let value = value.as_ref().map(Draft::node);
        if let Err(e) = serde_json::to_writer(&mut self.text, &Op { op, path, value }) {
            self.error.get_or_insert(e);
        }
        self.text.push(b',');
    }
}

impl<'a> Sink<'a> for JsonOps {
    fn mark(&self) -> usize {
        self.text.len()
    }

    fn split_off(&mut self, at: usize) -> Self {
        JsonOps { text: self.text.split_off(at), error: None }
    }

    fn append(&mut self, mut tail: Self) {
        self.text.append(&mut tail.text);
        if let Some(e) = tail.error {
            self.error.get_or_insert(e);
        }
    }

    fn add(&mut self, path: &str, value: Draft<'a>) {
        self.op("add", path, Some(value));
    }

    fn replace(&mut self, path: &str, value: Draft<'a>) {
        self.op("replace", path, Some(value));
    }

    fn remove(&mut self, path: &str) {
        self.op("remove", path, None);
    }
}

struct Diff<'s, S> {
    ops: &'s mut S,
    /// The JSON pointer of the values being compared, already escaped.
    path: String,
}

impl<'a, S: Sink<'a>> Diff<'_, S> {
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

    fn add(&mut self, v: Draft<'a>) {
        self.ops.add(&self.path, v);
    }

    fn value(&mut self, from: &Value, to: Draft<'a>, kind: Kind, list: List) {
        if same_value(from, &to) {
            return;
        }
        let (is_object, is_array) = (to.node().is_object(), to.node().is_array());
        match from {
            Value::Object(from) if is_object => {
                if from.len() > TRACKED {
                    let removed = removed_keys(from, to.node());
                    self.remove_keys(&removed);
                }
                if let Ok(to) = to.into_entries() {
                    self.map(from, to, kind);
                }
            }
            // a merging list is aligned element by element, which finds equal lists equal too
            Value::Array(from) if is_array && list != List::Atomic => {
                if let Ok(to) = to.into_array() {
                    self.list(from, to, kind, list);
                }
            }
            from if !to.node().eq(Node::Value(from)) => self.ops.replace(&self.path, to),
            _ => {}
        }
    }

    fn remove_keys(&mut self, keys: &[&str]) {
        for key in keys {
            let len = self.push(key);
            self.ops.remove(&self.path);
            self.path.truncate(len);
        }
    }

    /// An object: the keys `to` no longer holds are removed, then `to`'s entries are walked.
    /// For an object of up to [`TRACKED`] keys (the caller removed the keys of a larger one),
    /// the walk marks the keys of `from` it meets, so the removals, rare, are found without a
    /// look-up of each key and put before the walk's operations afterwards.
    fn map(&mut self, from: &Map<String, Value>, to: Entries<'a>, kind: Kind) {
        let start = self.ops.mark();
        let tracked = from.len() <= TRACKED;
        let mut met: u64 = 0;
        let mut same_place = from.iter().enumerate();
        for (key, value) in to {
            // the same key at the same place is the usual case: no look-up
            let old = match same_place.next() {
                Some((i, (k, v))) if same_key(k, &key) => {
                    // (only a tracked object's keys are marked: a larger one has more than 64)
                    if tracked {
                        met |= 1 << i;
                    }
                    Some(v)
                }
                _ if tracked => from.iter().enumerate().find(|(_, (k, _))| same_key(k, &key)).map(|(i, (_, v))| {
                    met |= 1 << i;
                    v
                }),
                _ => lookup::get(from, &key),
            };
            // equal scalars, most of a pod, and the pod's own values need neither a path nor
            // an operation
            if let Some(old) = old
                && (same_value(old, &value)
                    || is_scalar(old) && value.node().is_scalar() && value.node().eq(Node::Value(old)))
            {
                continue;
            }
            let len = self.push(&key);
            match old {
                None => self.add(value),
                Some(old) => {
                    let f = field(kind, &key);
                    self.value(old, value, f.kind, f.list);
                }
            }
            self.path.truncate(len);
        }
        if tracked && met.count_ones() as usize != from.len() {
            let removed: Vec<&str> =
                from.keys().enumerate().filter(|(i, _)| met & (1 << i) == 0).map(|(_, k)| k.as_str()).collect();
            let walked = self.ops.split_off(start);
            self.remove_keys(&removed);
            self.ops.append(walked);
        }
    }

    /// A merging list: align the two lists (on the merge key, or on equality for sets), remove
    /// what is gone from the back, then walk the new list inserting new elements and diffing
    /// aligned ones in place.
    fn list(&mut self, from: &[Value], to: Vec<Draft<'a>>, kind: Kind, list: List) {
        // what the elements are aligned on: their merge key, or (for sets, or an element
        // without one) the whole element
        let (from_keys, to_keys): (Vec<_>, Vec<_>) = match list {
            List::Keyed { key, .. } => {
                (from.iter().map(|a| lookup::field(a, key)).collect(), to.iter().map(|b| b.node().field(key)).collect())
            }
            _ => (Vec::new(), Vec::new()),
        };
        let same = |i: usize, j: usize| match (from_keys.get(i).copied().flatten(), to_keys.get(j).copied().flatten()) {
            (Some(x), Some(y)) => y.eq(Node::Value(x)),
            _ => to[j].node().eq(Node::Value(&from[i])),
        };
        let pairs = if from.len().saturating_mul(to.len()) <= TABLE {
            align(from.len(), to.len(), same)
        } else {
            let digests = Digests::default();
            let identity = |key: Option<Node>, whole: Node| match key {
                Some(key) => digests.of(key),
                None => !digests.of(whole),
            };
            let from_ids = from
                .iter()
                .enumerate()
                .map(|(i, a)| identity(from_keys.get(i).copied().flatten().map(Node::Value), Node::Value(a)));
            let to_ids = to.iter().enumerate().map(|(j, b)| identity(to_keys.get(j).copied().flatten(), b.node()));
            align_by_digest(from_ids.collect(), to_ids.collect(), same)
        };
        let mut kept = vec![false; from.len()];
        for &(i, _) in &pairs {
            kept[i] = true;
        }
        for i in (0..from.len()).rev().filter(|&i| !kept[i]) {
            let len = self.push_index(i);
            self.ops.remove(&self.path);
            self.path.truncate(len);
        }
        let mut pairs = pairs.into_iter().peekable();
        for (j, value) in to.into_iter().enumerate() {
            let old = pairs.next_if(|&(_, t)| t == j).map(|(f, _)| &from[f]);
            if old.is_some_and(|old| same_value(old, &value)) {
                continue;
            }
            let len = self.push_index(j);
            match old {
                Some(old) => self.value(old, value, kind, List::Atomic),
                None => self.add(value),
            }
            self.path.truncate(len);
        }
    }
}

/// Up to this many keys, [`Diff::map`] finds the removed keys of an object as it walks it.
const TRACKED: usize = 64;

/// The keys of `from` that `to` (an object) does not hold, in order. A value's map finds a
/// key by hash when it is large; a large opened object gets an index.
fn removed_keys<'f>(from: &'f Map<String, Value>, to: Node) -> Vec<&'f str> {
    if to.len() <= lookup::SCAN || matches!(to, Node::Value(_)) {
        return from.keys().filter(|k| to.field(k).is_none()).map(String::as_str).collect();
    }
    let keys: HashSet<&str> = to.entries().into_iter().flatten().map(|(k, _)| k).collect();
    from.keys().filter(|k| !keys.contains(k.as_str())).map(String::as_str).collect()
}

/// Whether `to` is `from` itself: the pod's own value, borrowed, at the same place.
fn same_value(from: &Value, to: &Draft) -> bool {
    matches!(to, Draft::Borrowed(to) if std::ptr::eq(from, *to))
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// Appends `/token` to a JSON pointer, escaped as RFC 6901 says (`~` as `~0`, `/` as `~1`).
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    let mut rest = token;
    while let Some(at) = rest.bytes().position(|b| b == b'~' || b == b'/') {
        path.push_str(&rest[..at]);
        path.push_str(if rest.as_bytes()[at] == b'~' { "~0" } else { "~1" });
        rest = &rest[at + 1..];
    }
    path.push_str(rest);
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
fn pointer(path: &str) -> PointerBuf {
    match PointerBuf::parse(path.to_owned()) {
        Ok(p) => p,
        // unreachable: the tokens were escaped; rebuild it token by token all the same
        Err(e) => {
            PointerBuf::from_tokens(e.subject().split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")))
        }
    }
}

/// Up to this many cells (the lengths multiplied), two lists are aligned by the table of
/// [`align`]; longer ones by [`align_by_digest`], whose cost grows as n log n.
const TABLE: usize = 4096;

/// The longest common subsequence of lists of lengths `n` and `m` under `same(i, j)`, as
/// index pairs in order.
fn align(n: usize, m: usize, same: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    // the common case: the same keys in the same order
    if n == m && (0..n).all(|i| same(i, i)) {
        return (0..n).map(|i| (i, i)).collect();
    }
    // lengths[i * (m + 1) + j]: LCS length of a[i..] and b[j..]
    let width = m + 1;
    let mut lengths = vec![0usize; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lengths[i * width + j] = if same(i, j) {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j, mut pairs) = (0, 0, Vec::new());
    while i < n && j < m {
        if same(i, j) {
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

/// The two lists aligned without a table, as index pairs in order: each element of `to` is
/// paired with the first element of `from` not yet taken that has its identity (its digest,
/// then checked with `same`), and of those pairs the longest run in order in both lists is
/// kept (the longest increasing subsequence, by patience sorting). For elements whose
/// identities are unique, as merge keys are, that is the longest common subsequence.
fn align_by_digest(from: Vec<u64>, to: Vec<u64>, same: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    // the positions in `from` of each identity, in order, and how many are taken
    let mut positions: HashMap<u64, (usize, Vec<usize>)> = HashMap::with_capacity(from.len());
    for (i, id) in from.into_iter().enumerate() {
        positions.entry(id).or_default().1.push(i);
    }
    let mut matched = Vec::with_capacity(to.len());
    for (j, id) in to.into_iter().enumerate() {
        if let Some((taken, at)) = positions.get_mut(&id)
            && let Some(&i) = at.get(*taken)
            && same(i, j)
        {
            *taken += 1;
            matched.push((i, j));
        }
    }
    // tails[k]: the index in `matched` of the smallest last `from` index of a run of k + 1
    let mut tails: Vec<usize> = Vec::new();
    let mut before: Vec<Option<usize>> = vec![None; matched.len()];
    for (p, &(i, _)) in matched.iter().enumerate() {
        let k = tails.partition_point(|&t| matched[t].0 < i);
        before[p] = k.checked_sub(1).map(|k| tails[k]);
        if k == tails.len() {
            tails.push(p);
        } else {
            tails[k] = p;
        }
    }
    let mut run = Vec::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(p) = at {
        run.push(matched[p]);
        at = before[p];
    }
    run.reverse();
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    /// The patch from `from` to `to`, checked the same whether `to` is borrowed or owned, and
    /// written as JSON text the same as the library serialises it.
    fn ops(from: Value, to: Value) -> Value {
        let copied = diff(&from, &to);
        let taken = diff_draft(&from, Draft::owned(to.clone()));
        assert_eq!(copied, taken, "copying and taking give different patches");
        same_text(&copied, diff_draft_json(&from, Draft::Borrowed(&to)));
        same_text(&copied, diff_draft_json(&from, Draft::owned(to.clone())));
        serde_json::to_value(copied).unwrap_or_default()
    }

    fn same_text(patch: &Patch, text: serde_json::Result<Vec<u8>>) {
        let text = text.unwrap_or_else(|e| panic!("the patch was not written: {e}"));
        let expected = serde_json::to_vec(patch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(String::from_utf8_lossy(&text), String::from_utf8_lossy(&expected));
    }

    #[test]
    fn an_opened_draft_is_written_as_its_value() {
        // objects and lists opened by the engine, with keys and strings that need escaping in
        // JSON and in the pointer
        let from = json!({"metadata": {"labels": {"quote\"d": "x", "gone": "y"}}, "spec": {"x~y": [1, 2]}});
        let template = json!({"a/b": {"k": "é ✓ \u{1}"}, "n": [1, 2.5, null, true, {}]});
        let mut to = Draft::Borrowed(&from);
        let spec = to.object_mut().map(|pod| pod.entry("spec", Draft::empty_object));
        let spec = spec.and_then(Draft::object_mut).unwrap_or_else(|| panic!("spec is an object"));
        spec.insert("x~y", Draft::Array(vec![Draft::owned(json!(1)), Draft::Borrowed(&template["n"])]));
        spec.insert("new\n", Draft::object([("a/b", Draft::Borrowed(&template["a/b"])), ("e", Draft::empty_object())]));
        let labels = to
            .object_mut()
            .map(|pod| pod.entry("metadata", Draft::empty_object))
            .and_then(Draft::object_mut)
            .map(|m| m.entry("labels", Draft::empty_object))
            .and_then(Draft::object_mut)
            .unwrap_or_else(|| panic!("labels is an object"));
        labels.remove("gone");
        labels.insert("quote\"d", Draft::owned(json!("\"z\"")));
        let value = to.clone().into_value();
        let patch = diff(&from, &value);
        assert_eq!(patch.0.len(), 4, "{patch:?}");
        same_text(&patch, diff_draft_json(&from, to));
    }

    #[test]
    fn nothing_to_do_is_an_empty_list() {
        let pod = json!({"a": {"b": [1]}});
        assert_eq!(diff_draft_json(&pod, Draft::Borrowed(&pod)).ok(), Some(b"[]".to_vec()));
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
        json_patch::patch(&mut doc, &diff(&from, &to)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc, to);
    }

    /// Pseudo-random numbers below `n`, the same every run.
    fn numbers(seed: u64) -> impl FnMut(usize) -> usize {
        let mut state = seed;
        move |n| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n.max(1)
        }
    }

    /// A list of `least` to `n` different numbers below `n + 20`, in a random order.
    fn unique(next: &mut impl FnMut(usize) -> usize, least: usize, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n + 20).collect();
        for i in (1..all.len()).rev() {
            all.swap(i, next(i + 1));
        }
        all.truncate(least + next(n + 1 - least));
        all
    }

    #[test]
    fn the_alignment_by_digest_is_as_long_as_the_tables_for_unique_keys() {
        let mut next = numbers(7);
        for _ in 0..300 {
            let (from, to) = (unique(&mut next, 0, 40), unique(&mut next, 0, 40));
            let same = |i: usize, j: usize| from[i] == to[j];
            let by_table = align(from.len(), to.len(), same);
            let ids = |list: &[usize]| list.iter().map(|&x| x as u64).collect();
            let by_digest = align_by_digest(ids(&from), ids(&to), same);
            assert_eq!(by_digest.len(), by_table.len(), "{from:?} {to:?}");
            assert!(by_digest.iter().all(|&(i, j)| same(i, j)), "{by_digest:?}");
            assert!(by_digest.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "{by_digest:?}");
        }
    }

    #[test]
    fn long_lists_are_aligned_without_a_table_and_the_patch_gives_the_target() {
        // lists past TABLE cells: moved, removed, added, changed and duplicated elements, some
        // without a merge key, in a keyed list and in a set
        let mut next = numbers(11);
        for _ in 0..5 {
            let element = |k: usize, v: usize| {
                if k.is_multiple_of(7) { json!({"x": k}) } else { json!({"name": format!("v{k}"), "n": v}) }
            };
            let from: Vec<Value> = unique(&mut next, 100, 150).into_iter().map(|k| element(k, 0)).collect();
            let to: Vec<Value> = unique(&mut next, 100, 150).into_iter().map(|k| element(k % 120, next(2))).collect();
            let finalizers = |list: &[Value]| list.iter().map(|v| json!(v.to_string())).collect::<Vec<_>>();
            assert!(from.len() * to.len() > TABLE);
            let from = json!({"metadata": {"finalizers": finalizers(&from)}, "spec": {"volumes": from}});
            let to = json!({"metadata": {"finalizers": finalizers(&to)}, "spec": {"volumes": to}});
            let patch = diff(&from, &to);
            let mut doc = from.clone();
            json_patch::patch(&mut doc, &patch).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(doc, to);
            assert_eq!(ops(from.clone(), to.clone()), serde_json::to_value(&patch).unwrap_or_default());
        }
        // the same long list, one element changed: one operation, in place
        let list: Vec<Value> = (0..5000).map(|i| json!({"name": format!("v{i}"), "n": 0})).collect();
        let mut changed = list.clone();
        changed.insert(0, json!({"name": "new"}));
        changed[2500]["n"] = json!(1);
        let patch = diff(&json!({"spec": {"volumes": list}}), &json!({"spec": {"volumes": changed}}));
        assert_eq!(
            serde_json::to_value(&patch).unwrap_or_default(),
            json!([{"op": "add", "path": "/spec/volumes/0", "value": {"name": "new"}},
                   {"op": "replace", "path": "/spec/volumes/2500/n", "value": 1}])
        );
    }
}
