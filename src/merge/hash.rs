//! Finding an equal value by hash, so that matching the n elements of one list (or the keys of
//! one object) against the m of another costs about n + m, not n × m: a pod's lists can hold
//! tens of thousands of elements.
//!
//! A digest is consistent with [`Node::eq`]: equal values, objects in any key order, have the
//! same digest. Different values may share one (rarely: the hasher is keyed at random), so a
//! match found by digest is always checked with `eq`, and a miss after a shared digest falls
//! back to a scan.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use serde_json::Value;

use super::draft::Node;

/// Up to this many elements on either side, a scan costs less than an index.
pub(crate) const SCAN: usize = super::lookup::SCAN;

/// Digests of values, with one random key.
#[derive(Clone, Default)]
pub(crate) struct Digests(RandomState);

impl Digests {
    /// The digest of a value.
    pub fn of(&self, node: Node) -> u64 {
        let mut h = self.0.build_hasher();
        self.feed(node, &mut h);
        h.finish()
    }

    /// The digest of a string (a key).
    pub fn of_str(&self, s: &str) -> u64 {
        self.0.hash_one(s)
    }

    fn feed(&self, node: Node, h: &mut impl Hasher) {
        if let Some(entries) = node.entries() {
            // the order of an object's keys does not count: the entries' digests are summed
            let sum = entries.fold(0u64, |sum, (k, v)| sum.wrapping_add(self.0.hash_one((k, self.of(v)))));
            (0u8, node.len(), sum).hash(h);
        } else if let Some(items) = node.items() {
            (1u8, node.len()).hash(h);
            for item in items {
                self.feed(item, h);
            }
        } else if let Node::Value(v) = node {
            match v {
                Value::Null => 2u8.hash(h),
                Value::Bool(b) => (3u8, b).hash(h),
                Value::Number(n) => (4u8, n).hash(h),
                Value::String(s) => (5u8, s).hash(h),
                // objects and lists have entries or items
                Value::Object(_) | Value::Array(_) => {}
            }
        }
    }
}

/// The first position of each digest among values, to find the first value equal to another.
#[derive(Default)]
pub(crate) struct Firsts(HashMap<u64, usize>);

impl Firsts {
    /// Records `at`, the position of a value of digest `digest`, unless an earlier one had it.
    pub fn insert(&mut self, digest: u64, at: usize) {
        self.0.entry(digest).or_insert(at);
    }

    /// The first position among `0..len` where `is` holds, for a value of digest `digest`:
    /// found by the digest, or (when another value has that digest) by a scan.
    pub fn find(&self, digest: u64, len: usize, is: impl Fn(usize) -> bool) -> Option<usize> {
        let at = *self.0.get(&digest)?;
        if is(at) { Some(at) } else { (0..len).find(|&i| is(i)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_equal_is_found_even_past_a_shared_digest() {
        let values = [10, 20, 10, 30];
        let mut firsts = Firsts::default();
        // every value with the same digest: only the scan can tell them apart
        for at in 0..values.len() {
            firsts.insert(7, at);
        }
        assert_eq!(firsts.find(7, values.len(), |i| values[i] == 10), Some(0));
        assert_eq!(firsts.find(7, values.len(), |i| values[i] == 30), Some(3));
        assert_eq!(firsts.find(7, values.len(), |i| values[i] == 40), None);
        assert_eq!(firsts.find(8, values.len(), |i| values[i] == 10), None);
    }
}
