//! Reading pods, templates and PodOverrides from text: JSON or YAML, one or more documents.

use std::cell::Cell;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `text` as JSON when it looks like JSON, else as (multi-document) YAML, into the
/// documents it holds (empty documents left out).
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    if text.trim_start().starts_with(['{', '[']) {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        return Ok(vec![v]);
    }
    let mut out = Vec::new();
    let budget = Cell::new(yaml_budget(text));
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Budgeted(&budget).deserialize(doc).map_err(|e| format!("invalid YAML: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// What the values of a YAML text may add up to: each value counts one, and a string its
/// length too. Without aliases a text holds no more than about its length; an alias repeats
/// the value it names, which may be large (the library bounds the number of aliases followed,
/// not what they repeat), so a small file could expand to gigabytes. Four times the length
/// and a mebibyte leave room for the aliases configurations use.
fn yaml_budget(text: &str) -> usize {
    text.len().saturating_mul(4).saturating_add(1 << 20)
}

/// Reads a value as serde_json's `Value` does, counting what it builds against a budget and
/// failing when it runs out, before the value is built.
#[derive(Clone, Copy)]
struct Budgeted<'b>(&'b Cell<usize>);

impl Budgeted<'_> {
    fn spend<E: de::Error>(self, cost: usize) -> Result<(), E> {
        match self.0.get().checked_sub(cost) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "the document expands to far more than its text (YAML aliases repeating large values?): refused",
            )),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        self.spend(1)?;
        Number::deserialize(de::value::I128Deserializer::new(v)).map(Value::Number)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.spend(1)?;
        Number::deserialize(de::value::U128Deserializer::new(v)).map(Value::Number)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend(1 + v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.spend(1 + v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend(1)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend(1)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.spend(key.len())?;
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Parses `text` as exactly one document.
pub fn document(text: &str) -> Result<Value, String> {
    let mut docs = documents(text)?;
    match docs.len() {
        0 => Err("is empty".into()),
        1 => Ok(docs.remove(0)),
        n => Err(format!("holds {n} documents, expected one")),
    }
}

/// `apiVersion` and `kind` of an object, for messages and checks.
pub fn type_of(v: &Value) -> (&str, &str) {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    (s("apiVersion"), s("kind"))
}

/// What `render` was given: a pod, with the namespace its source names, if any.
#[derive(Debug)]
pub struct PodInput {
    pub pod: Value,
    pub namespace: Option<String>,
}

/// Reads a Pod or an AdmissionReview (whose request carries the pod and the namespace).
pub fn pod_input(text: &str) -> Result<PodInput, String> {
    let doc = document(text)?;
    match type_of(&doc) {
        (_, "AdmissionReview") => {
            let request = doc.get("request").ok_or("the AdmissionReview has no request")?;
            let pod =
                request.get("object").filter(|o| o.is_object()).ok_or("the AdmissionReview's request has no object")?;
            if type_of(pod).1 != "Pod" {
                return Err(format!("the AdmissionReview's object is a {:?}, not a Pod", type_of(pod).1));
            }
            let namespace = request
                .get("namespace")
                .and_then(Value::as_str)
                .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
                .map(str::to_owned);
            Ok(PodInput { pod: pod.clone(), namespace })
        }
        ("v1", "Pod") => {
            let namespace = doc.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
            Ok(PodInput { pod: doc, namespace })
        }
        (api, kind) => Err(format!("is a {kind:?} of {api:?}, expected a v1 Pod or an AdmissionReview")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_and_several_documents() {
        assert_eq!(documents("a: 1\n---\n---\nb: 2\n").map(|d| d.len()), Ok(2));
        assert_eq!(documents("{\"a\":\t1}").map(|d| d.len()), Ok(1));
        assert!(document("a: [1\n").is_err_and(|e| e.starts_with("invalid YAML")));
        assert!(document("{\"a\": ").is_err_and(|e| e.starts_with("invalid JSON")));
        assert!(document("").is_err_and(|e| e == "is empty"));
    }

    #[test]
    fn a_yaml_file_that_expands_hugely_is_refused() {
        // a list of 1 000 strings, named once and repeated 10 000 times: 60 KB of text for
        // 10 million strings
        let mut text = String::from("a: &a [");
        text.push_str(&vec!["xxxxx"; 1000].join(", "));
        text.push_str("]\nb: [");
        text.push_str(&vec!["*a"; 10_000].join(", "));
        text.push_str("]\n");
        let refused = documents(&text).map(|d| d.len());
        assert!(refused.as_ref().is_err_and(|e| e.contains("expands to far more than its text")), "{refused:?}");
        // aliases as configurations use them read as serde_json would read them
        let text = "x: &r {cpu: 1, memory: 1Gi, big: 12345678901234567890, f: 1.5, n: ~}\ny: *r\nz: [*r, *r]\n";
        let read = documents(text).unwrap_or_else(|e| panic!("{e}"));
        let expected: Vec<Value> = serde_yaml_ng::Deserializer::from_str(text)
            .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(read, expected);
        assert_eq!(read[0]["z"][1]["memory"], "1Gi");
    }

    #[test]
    fn review_namespace_wins() {
        let text = r#"{"kind":"AdmissionReview","request":{"namespace":"a","object":{"apiVersion":"v1","kind":"Pod","metadata":{"namespace":"b"}}}}"#;
        assert_eq!(pod_input(text).map(|p| p.namespace), Ok(Some("a".into())));
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {namespace: b}\n";
        assert_eq!(pod_input(text).map(|p| p.namespace), Ok(Some("b".into())));
        assert!(pod_input("apiVersion: apps/v1\nkind: Deployment\n").is_err_and(|e| e.contains("Deployment")));
        assert!(pod_input(r#"{"kind":"AdmissionReview"}"#).is_err_and(|e| e.contains("no request")));
    }
}
