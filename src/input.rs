//! Reading pods, templates and PodOverrides from text: JSON or YAML, one or more documents.

use serde_json::Value;

/// Parses `text` as JSON when it looks like JSON, else as (multi-document) YAML, into the
/// documents it holds (empty documents left out).
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    if text.trim_start().starts_with(['{', '[']) {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        return Ok(vec![v]);
    }
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| format!("invalid YAML: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
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
    fn review_namespace_wins() {
        let text = r#"{"kind":"AdmissionReview","request":{"namespace":"a","object":{"apiVersion":"v1","kind":"Pod","metadata":{"namespace":"b"}}}}"#;
        assert_eq!(pod_input(text).map(|p| p.namespace), Ok(Some("a".into())));
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {namespace: b}\n";
        assert_eq!(pod_input(text).map(|p| p.namespace), Ok(Some("b".into())));
        assert!(pod_input("apiVersion: apps/v1\nkind: Deployment\n").is_err_and(|e| e.contains("Deployment")));
        assert!(pod_input(r#"{"kind":"AdmissionReview"}"#).is_err_and(|e| e.contains("no request")));
    }
}
