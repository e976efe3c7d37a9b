//! The desired pod while the engine builds it: a copy-on-write tree over the template, the
//! incoming pod and the overrides.
//!
//! A part of a layer that the merge takes as it is stays borrowed; an object or a list is
//! opened (its entries become drafts of their own, still borrowed) only where a later layer,
//! the defaults or the applied-marker change something inside it. So building the desired pod
//! copies nothing, and the patch copies only the values it adds or replaces: a part of the
//! desired pod that is the incoming pod's own value, at the same place, is the same borrowed
//! value and the diff steps over it without looking inside.
//!
//! Objects keep their entries in order (as serde_json's `preserve_order` map does) and find
//! keys by a scan: the engine opens the few objects on the paths its layers name, and those
//! are small.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::lookup::{self, same_key};

/// A value of the desired pod being built.
#[derive(Clone, Debug)]
pub enum Draft<'a> {
    /// A value of the template, the incoming pod or an override, as it is there.
    Borrowed(&'a Value),
    /// A value the engine made (boxed: a draft stays small, and most of it is borrowed).
    Owned(Box<Value>),
    /// An object some entries of which are being changed.
    Object(Object<'a>),
    /// A list some elements of which are being changed.
    Array(Vec<Draft<'a>>),
}

/// Room made for entries a layer adds when an object is opened.
const ROOM: usize = 4;

/// The entries of an opened object, in order; keys are unique.
#[derive(Clone, Debug, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Draft<'a>)>);

impl<'a> Draft<'a> {
    /// A value the engine made.
    pub fn owned(value: Value) -> Self {
        Draft::Owned(Box::new(value))
    }

    /// An empty object made by the engine.
    pub fn empty_object() -> Self {
        Draft::Object(Object::default())
    }

    /// An object of these entries, in order (the keys are different).
    pub fn object<const N: usize>(entries: [(&'a str, Draft<'a>); N]) -> Self {
        Draft::Object(Object(entries.into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect()))
    }

    /// A read-only view.
    pub fn node(&self) -> Node<'_, 'a> {
        match self {
            Draft::Borrowed(v) => Node::Value(v),
            Draft::Owned(v) => Node::Value(v),
            Draft::Object(o) => Node::Object(&o.0),
            Draft::Array(items) => Node::Array(items),
        }
    }

    /// The entries of this object to change, opened if they were not yet; `None` for
    /// anything but an object.
    pub fn object_mut(&mut self) -> Option<&mut Object<'a>> {
        match self {
            Draft::Borrowed(Value::Object(map)) => {
                *self = Draft::Object(Object::borrowed(map));
            }
            Draft::Owned(value) => {
                if let Value::Object(map) = &mut **value {
                    let map = std::mem::take(map);
                    *self = Draft::Object(Object::owned(map));
                }
            }
            _ => {}
        }
        match self {
            Draft::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The elements of this list to change, opened if they were not yet; `None` for
    /// anything but a list.
    pub fn array_mut(&mut self) -> Option<&mut Vec<Draft<'a>>> {
        match self {
            Draft::Borrowed(Value::Array(items)) => {
                *self = Draft::Array(items.iter().map(Draft::Borrowed).collect());
            }
            Draft::Owned(value) => {
                if let Value::Array(items) = &mut **value {
                    let items = std::mem::take(items);
                    *self = Draft::Array(items.into_iter().map(Draft::owned).collect());
                }
            }
            _ => {}
        }
        match self {
            Draft::Array(items) => Some(items),
            _ => None,
        }
    }

    /// This object's entries, to consume in order; `Err(self)` for anything but an object.
    pub fn into_entries(self) -> Result<Entries<'a>, Self> {
        match self {
            Draft::Borrowed(Value::Object(map)) => Ok(Entries::Borrowed(map.iter())),
            Draft::Owned(value) => match *value {
                Value::Object(map) => Ok(Entries::Owned(map.into_iter())),
                other => Err(Draft::owned(other)),
            },
            Draft::Object(o) => Ok(Entries::Opened(o.0.into_iter())),
            other => Err(other),
        }
    }

    /// This list's elements, to consume in order; `Err(self)` for anything but a list.
    pub fn into_items(self) -> Result<Items<'a>, Self> {
        match self {
            Draft::Borrowed(Value::Array(items)) => Ok(Items::Borrowed(items.iter())),
            Draft::Owned(value) => match *value {
                Value::Array(items) => Ok(Items::Owned(items.into_iter())),
                other => Err(Draft::owned(other)),
            },
            Draft::Array(items) => Ok(Items::Opened(items.into_iter())),
            other => Err(other),
        }
    }

    /// This list's elements, to consume; `Err(self)` for anything but a list.
    pub fn into_array(self) -> Result<Vec<Draft<'a>>, Self> {
        match self {
            Draft::Borrowed(Value::Array(items)) => Ok(items.iter().map(Draft::Borrowed).collect()),
            Draft::Owned(value) => match *value {
                Value::Array(items) => Ok(items.into_iter().map(Draft::owned).collect()),
                other => Err(Draft::owned(other)),
            },
            Draft::Array(items) => Ok(items),
            other => Err(other),
        }
    }

    /// The value, copying what is borrowed.
    pub fn into_value(self) -> Value {
        match self {
            Draft::Borrowed(v) => v.clone(),
            Draft::Owned(v) => *v,
            Draft::Object(o) => {
                let mut map = Map::with_capacity(o.0.len());
                for (k, v) in o.0 {
                    map.insert(k.into_owned(), v.into_value());
                }
                Value::Object(map)
            }
            Draft::Array(items) => Value::Array(items.into_iter().map(Draft::into_value).collect()),
        }
    }
}

impl<'a> Object<'a> {
    fn borrowed(map: &'a Map<String, Value>) -> Self {
        let mut entries = Vec::with_capacity(map.len() + ROOM);
        entries.extend(map.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Draft::Borrowed(v))));
        Object(entries)
    }

    fn owned(map: Map<String, Value>) -> Self {
        let mut entries = Vec::with_capacity(map.len() + ROOM);
        entries.extend(map.into_iter().map(|(k, v)| (Cow::Owned(k), Draft::owned(v))));
        Object(entries)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, key: &str) -> Option<&Draft<'a>> {
        self.0.iter().find(|(k, _)| same_key(k, key)).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Draft<'a>> {
        self.0.iter_mut().find(|(k, _)| same_key(k, key)).map(|(_, v)| v)
    }

    /// The position of `key` among the first `n` entries.
    pub fn position_in_first(&self, n: usize, key: &str) -> Option<usize> {
        self.0[..n].iter().position(|(k, _)| same_key(k, key))
    }

    /// The key at position `at` (`""` past the end).
    pub fn key(&self, at: usize) -> &str {
        self.0.get(at).map_or("", |(k, _)| k.as_ref())
    }

    /// The value at position `at`, which is one.
    pub fn at_mut(&mut self, at: usize) -> &mut Draft<'a> {
        &mut self.0[at].1
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`: in its place if it is there, else at the end (as `Map::insert`).
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Draft<'a>) {
        let key = key.into();
        match self.get_mut(&key) {
            Some(v) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// Appends `key`, which the object does not hold.
    pub fn push(&mut self, key: Cow<'a, str>, value: Draft<'a>) {
        self.0.push((key, value));
    }

    /// The value of `key`, inserted at the end as `default()` when it is not there.
    pub fn entry(&mut self, key: &'a str, default: impl FnOnce() -> Draft<'a>) -> &mut Draft<'a> {
        let at = match self.0.iter().position(|(k, _)| same_key(k, key)) {
            Some(at) => at,
            None => {
                self.0.push((Cow::Borrowed(key), default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    /// Takes `key` out, keeping the order of the others (as `Map::shift_remove`).
    pub fn remove(&mut self, key: &str) -> Option<Draft<'a>> {
        let at = self.0.iter().position(|(k, _)| same_key(k, key))?;
        Some(self.0.remove(at).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut Draft<'a>) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }
}

/// The entries of an object being consumed: borrowed ones stay borrowed, nothing is copied.
pub enum Entries<'a> {
    Borrowed(serde_json::map::Iter<'a>),
    Owned(serde_json::map::IntoIter),
    Opened(std::vec::IntoIter<(Cow<'a, str>, Draft<'a>)>),
}

impl<'a> Iterator for Entries<'a> {
    type Item = (Cow<'a, str>, Draft<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Entries::Borrowed(it) => it.next().map(|(k, v)| (Cow::Borrowed(k.as_str()), Draft::Borrowed(v))),
            Entries::Owned(it) => it.next().map(|(k, v)| (Cow::Owned(k), Draft::owned(v))),
            Entries::Opened(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Entries::Borrowed(it) => it.size_hint(),
            Entries::Owned(it) => it.size_hint(),
            Entries::Opened(it) => it.size_hint(),
        }
    }
}

/// The elements of a list being consumed: borrowed ones stay borrowed, nothing is copied.
pub enum Items<'a> {
    Borrowed(std::slice::Iter<'a, Value>),
    Owned(std::vec::IntoIter<Value>),
    Opened(std::vec::IntoIter<Draft<'a>>),
}

impl<'a> Iterator for Items<'a> {
    type Item = Draft<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Items::Borrowed(it) => it.next().map(Draft::Borrowed),
            Items::Owned(it) => it.next().map(Draft::owned),
            Items::Opened(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Items::Borrowed(it) => it.size_hint(),
            Items::Owned(it) => it.size_hint(),
            Items::Opened(it) => it.size_hint(),
        }
    }
}

/// A read-only view of a draft or of a value.
#[derive(Clone, Copy, Debug)]
pub enum Node<'r, 'a> {
    Value(&'r Value),
    Object(&'r [(Cow<'a, str>, Draft<'a>)]),
    Array(&'r [Draft<'a>]),
}

impl<'r, 'a> Node<'r, 'a> {
    /// `value.get(key)` for an object (`None` for anything else).
    pub fn field(self, key: &str) -> Option<Node<'r, 'a>> {
        match self {
            Node::Value(v) => lookup::field(v, key).map(Node::Value),
            Node::Object(entries) => entries.iter().find(|(k, _)| same_key(k, key)).map(|(_, v)| v.node()),
            Node::Array(_) => None,
        }
    }

    pub fn is_object(self) -> bool {
        matches!(self, Node::Object(_) | Node::Value(Value::Object(_)))
    }

    pub fn is_array(self) -> bool {
        matches!(self, Node::Array(_) | Node::Value(Value::Array(_)))
    }

    pub fn is_null(self) -> bool {
        matches!(self, Node::Value(Value::Null))
    }

    /// Neither an object nor a list.
    pub fn is_scalar(self) -> bool {
        !self.is_object() && !self.is_array()
    }

    pub fn as_str(self) -> Option<&'r str> {
        match self {
            Node::Value(v) => v.as_str(),
            _ => None,
        }
    }

    /// Element `i` of a list (`None` for anything else).
    pub fn item(self, i: usize) -> Option<Node<'r, 'a>> {
        match self {
            Node::Value(Value::Array(items)) => items.get(i).map(Node::Value),
            Node::Array(items) => items.get(i).map(Draft::node),
            _ => None,
        }
    }

    /// Where the value is: two values that live at the same time have different addresses
    /// (an empty list aside).
    pub fn address(self) -> usize {
        match self {
            Node::Value(v) => std::ptr::from_ref(v) as usize,
            Node::Object(entries) => entries.as_ptr() as usize,
            Node::Array(items) => items.as_ptr() as usize,
        }
    }

    /// The number of entries of an object or elements of a list (0 for anything else).
    pub fn len(self) -> usize {
        match self {
            Node::Value(Value::Object(map)) => map.len(),
            Node::Value(Value::Array(items)) => items.len(),
            Node::Object(entries) => entries.len(),
            Node::Array(items) => items.len(),
            Node::Value(_) => 0,
        }
    }

    /// The entries of an object, in order.
    pub fn entries(self) -> Option<impl Iterator<Item = (&'r str, Node<'r, 'a>)>> {
        let (map, entries) = match self {
            Node::Value(Value::Object(map)) => (Some(map), None),
            Node::Object(entries) => (None, Some(entries)),
            _ => return None,
        };
        let map = map.into_iter().flatten().map(|(k, v)| (k.as_str(), Node::Value(v)));
        let entries = entries.into_iter().flatten().map(|(k, v)| (k.as_ref(), v.node()));
        Some(map.chain(entries))
    }

    /// The elements of a list, in order.
    pub fn items(self) -> Option<impl Iterator<Item = Node<'r, 'a>>> {
        let (values, drafts) = match self {
            Node::Value(Value::Array(items)) => (Some(items), None),
            Node::Array(items) => (None, Some(items)),
            _ => return None,
        };
        Some(values.into_iter().flatten().map(Node::Value).chain(drafts.into_iter().flatten().map(Draft::node)))
    }

    /// A copy as a value.
    pub fn to_value(self) -> Value {
        match self {
            Node::Value(v) => v.clone(),
            Node::Object(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.to_string(), v.node().to_value())).collect())
            }
            Node::Array(items) => Value::Array(items.iter().map(|v| v.node().to_value()).collect()),
        }
    }

    /// Equality as serde_json's (and [`lookup::eq`]'s): objects hold the same keys with
    /// equal values, in any order. Objects in the same order compare entry by entry.
    pub fn eq(self, other: Node<'_, '_>) -> bool {
        if let (Node::Value(a), Node::Value(b)) = (self, other) {
            return lookup::eq(a, b);
        }
        if let (Some(a), Some(b)) = (self.entries(), other.entries()) {
            if self.len() != other.len() {
                return false;
            }
            for (i, ((ka, va), (kb, vb))) in a.zip(b).enumerate() {
                if ka != kb {
                    // out of order from here on: the rest of `self` by look-up in `other`
                    // (hashed in a large value; a large opened object is indexed first)
                    let mut rest = self.entries().into_iter().flatten().skip(i);
                    return match other {
                        Node::Object(entries) if entries.len() > lookup::SCAN => {
                            let by_key: HashMap<&str, Node> =
                                entries.iter().map(|(k, v)| (k.as_ref(), v.node())).collect();
                            rest.all(|(k, v)| by_key.get(k).is_some_and(|w| v.eq(*w)))
                        }
                        _ => rest.all(|(k, v)| other.field(k).is_some_and(|w| v.eq(w))),
                    };
                }
                if !va.eq(vb) {
                    return false;
                }
            }
            return true;
        }
        if let (Some(a), Some(b)) = (self.items(), other.items()) {
            return self.len() == other.len() && a.zip(b).all(|(x, y)| x.eq(y));
        }
        // an opened object or list against a value of another type
        false
    }

    /// Whether a `null` or a list element `{"$patch": …}` (a strategic-merge directive) is
    /// anywhere inside (below this node: the node itself is not looked at).
    pub fn has_directive(self) -> bool {
        match (self.entries(), self.items()) {
            (Some(mut entries), _) => entries.any(|(_, v)| v.is_null() || v.has_directive()),
            (_, Some(mut items)) => items.any(|v| v.is_null() || v.field("$patch").is_some() || v.has_directive()),
            _ => false,
        }
    }
}

/// Serialises as its [`Draft::into_value`] does, without the copy.
impl Serialize for Node<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Node::Value(v) => v.serialize(serializer),
            Node::Object(entries) => serializer.collect_map(entries.iter().map(|(k, v)| (k, v.node()))),
            Node::Array(items) => serializer.collect_seq(items.iter().map(Draft::node)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn opened_parts_read_and_come_back_as_they_were() {
        let value = json!({"a": {"b": [1, {"c": 2}], "d": "x"}, "e": null});
        let mut d = Draft::Borrowed(&value);
        if let Some(a) = d.object_mut().and_then(|o| o.get_mut("a"))
            && let Some(b) = a.object_mut().and_then(|o| o.get_mut("b"))
        {
            b.array_mut();
        }
        assert!(matches!(d, Draft::Object(_)));
        assert_eq!(d.node().field("a").and_then(|a| a.field("d")).and_then(Node::as_str), Some("x"));
        assert!(d.node().eq(Node::Value(&value)));
        assert_eq!(d.node().to_value(), value);
        assert_eq!(d.into_value(), value);
    }

    /// Also: equal values have equal digests (and these near ones, different ones).
    #[test]
    fn equality_is_serde_jsons() {
        let values = crate::merge::lookup::tests::near_values();
        let digests = crate::merge::hash::Digests::default();
        for a in &values {
            for b in &values {
                let mut opened = Draft::Borrowed(a);
                opened.object_mut();
                opened.array_mut();
                assert_eq!(opened.node().eq(Node::Value(b)), a == b, "{a} vs {b}");
                assert_eq!(Node::Value(b).eq(opened.node()), a == b, "{b} vs {a}");
                assert_eq!(digests.of(opened.node()) == digests.of(Node::Value(b)), a == b, "digests of {a} vs {b}");
            }
        }
    }
}
