//! Map look-ups for the engine's hot paths. A pod's maps are small, and serde_json's map
//! (an `IndexMap` with SipHash, for `preserve_order`) hashes every key it looks up: below a
//! few entries a linear scan of the entries finds the same key for a fraction of the cost.
//! Keys of a map are unique, so the scan finds exactly what the hashed look-up finds.

use serde_json::{Map, Value};

/// Up to this many entries a scan beats hashing the key.
pub(crate) const SCAN: usize = 16;

/// `k == key`, with the cheap differences first.
#[inline]
pub(crate) fn same_key(k: &str, key: &str) -> bool {
    k.len() == key.len() && k.as_bytes().first() == key.as_bytes().first() && k == key
}

/// `map.get(key)`.
#[inline]
pub fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() <= SCAN { map.iter().find(|(k, _)| same_key(k, key)).map(|(_, v)| v) } else { map.get(key) }
}

/// `value.get(key)` for an object (`None` for anything else).
#[inline]
pub fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => get(map, key),
        _ => None,
    }
}

/// `a == b`: maps are equal when they hold the same keys with equal values, in any order.
/// Maps in the same order, the usual case, compare entry by entry without a look-up.
pub fn eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            if a.len() != b.len() {
                return false;
            }
            for (i, ((ka, va), (kb, vb))) in a.iter().zip(b).enumerate() {
                if ka != kb {
                    // out of order from here on: the rest of `a` by look-up in `b` (the keys
                    // before `i` are the same in both, so the rest can only be found in the rest)
                    return a.iter().skip(i).all(|(k, v)| get(b, k).is_some_and(|w| eq(v, w)));
                }
                if !eq(va, vb) {
                    return false;
                }
            }
            true
        }
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(x, y)),
        (a, b) => a == b,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Values that are equal, or nearly: key order, one value apart, number types.
    pub(crate) fn near_values() -> Vec<Value> {
        vec![
            json!({"a": 1, "b": [1, {"c": 2}]}),
            json!({"b": [1, {"c": 2}], "a": 1}),
            json!({"a": 1, "b": [1, {"c": 3}]}),
            json!({"a": 1, "c": [1, {"c": 2}]}),
            json!({"a": 1}),
            json!({"x": 1, "a": 1, "b": 2}),
            json!({"x": 1, "b": 2, "a": 1}),
            json!({"x": 1, "b": 2, "a": 2}),
            json!([1, 2]),
            json!([2, 1]),
            json!(1),
            json!(1.0),
            json!("1"),
            json!(null),
        ]
    }

    #[test]
    fn equality_is_serde_jsons() {
        let values = near_values();
        for a in &values {
            for b in &values {
                assert_eq!(eq(a, b), a == b, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn look_ups_find_what_the_map_finds() {
        let mut map = Map::new();
        for i in 0..40 {
            map.insert(format!("key{i}"), json!(i));
            for j in 0..42 {
                let key = format!("key{j}");
                assert_eq!(get(&map, &key), map.get(&key));
            }
        }
    }
}
