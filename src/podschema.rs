//! Which fields a Pod has: the Pod API's OpenAPI schema (from k8s-openapi), used to reject
//! an override's `pod` fragment that names a field no Pod has — a typo that would otherwise
//! be dropped by the API server, or fail every pod that uses the override. The schema is the
//! newest Kubernetes version k8s-openapi knows (its `latest` feature), so fields that are new
//! in the cluster's version are known too.

use std::sync::OnceLock;

use serde_json::{Map, Value};

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::to_value(schemars::schema_for!(k8s_openapi::api::core::v1::Pod)).unwrap_or(Value::Null)
    })
}

/// The paths (`spec.containers[0].imagee`) of the fields of `pod` that a Pod does not have.
pub fn unknown_fields(pod: &Value) -> Vec<String> {
    let root = schema();
    let defs = root.get("$defs").and_then(Value::as_object);
    let mut out = Vec::new();
    if let Some(defs) = defs {
        walk(pod, root, defs, &mut String::new(), &mut out);
    }
    out
}

/// Follows `$ref` (also when wrapped in a one-element `allOf`) to the schema it names.
fn resolve<'a>(mut schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    for _ in 0..8 {
        if let Some(name) = schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
            match defs.get(name) {
                Some(s) => schema = s,
                None => return schema,
            }
        } else if let Some([only]) = schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            schema = only;
        } else {
            return schema;
        }
    }
    schema
}

fn walk(value: &Value, schema: &Value, defs: &Map<String, Value>, path: &mut String, out: &mut Vec<String>) {
    let schema = resolve(schema, defs);
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            // strategic-merge directives (`$patch`…) are reported on their own
            for (key, child) in map.iter().filter(|(k, _)| !k.starts_with('$')) {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) => walk(child, s, defs, path, out),
                    (None, Some(s)) if s.is_object() => walk(child, s, defs, path, out),
                    (None, Some(Value::Bool(true))) => {}
                    // no properties listed: an open object (like a quantity or raw JSON)
                    (None, _) if properties.is_none() => {}
                    (None, _) => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item, item_schema, defs, path, out);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_fields_pass_and_typos_are_named() {
        let good = json!({"metadata": {"labels": {"a": "b"}, "annotations": {"x/y": "z"}},
            "spec": {"serviceAccountName": "w", "nodeSelector": {"pool": "p"}, "tolerations": [{"key": "k", "operator": "Exists"}],
                     "containers": [{"name": "base", "resources": {"limits": {"cpu": "1"}}, "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}],
                     "volumes": [{"name": "v", "emptyDir": {}}], "affinity": {"nodeAffinity": {}}, "securityContext": {"runAsUser": 1},
                     "hostNetwork": null}});
        assert_eq!(unknown_fields(&good), Vec::<String>::new());
        let bad = json!({"metadata": {"lables": {}}, "spec": {"nodeSelektor": {}, "containers": [{"name": "base", "imagee": "x"}],
                         "volumes": [{"name": "v", "emptyDir": {"sizeLimt": "1Gi"}}]}});
        assert_eq!(
            unknown_fields(&bad),
            vec![
                "metadata.lables",
                "spec.nodeSelektor",
                "spec.containers[0].imagee",
                "spec.volumes[0].emptyDir.sizeLimt"
            ]
        );
    }
}
