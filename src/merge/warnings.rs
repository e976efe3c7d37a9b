//! Warnings for people: where an override replaced a value the pod set itself.

use serde_json::Value;

use super::schema::{Kind, List, field};

/// Adds a warning for each value of `pod` (the pod's own layer) that was in `before` and that
/// override `name` changed in `after`.
pub fn replaced_pod_values(pod: &Value, before: &Value, after: &Value, name: &str, out: &mut Vec<String>) {
    walk(pod, Some(before), Some(after), Kind::Pod, List::Atomic, &mut String::new(), name, out);
}

#[allow(clippy::too_many_arguments)]
fn walk(
    pod: &Value,
    before: Option<&Value>,
    after: Option<&Value>,
    kind: Kind,
    list: List,
    path: &mut String,
    name: &str,
    out: &mut Vec<String>,
) {
    match (pod, list) {
        (Value::Object(map), _) if !map.is_empty() => {
            for (k, v) in map {
                let f = field(kind, k);
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(v, before.and_then(|b| b.get(k)), after.and_then(|a| a.get(k)), f.kind, f.list, path, name, out);
                path.truncate(len);
            }
        }
        (Value::Array(items), List::Keyed { key, .. }) => {
            fn find<'a>(side: Option<&'a Value>, key: &str, k: &Value) -> Option<&'a Value> {
                side?.as_array()?.iter().find(|x| x.get(key) == Some(k))
            }
            for item in items {
                let Some(k) = item.get(key) else { continue };
                let len = path.len();
                path.push_str(&format!("[{key}={}]", short(k)));
                walk(item, find(before, key, k), find(after, key, k), kind, List::Atomic, path, name, out);
                path.truncate(len);
            }
        }
        _ => {
            if before == Some(pod) && after != before {
                let now = after.map_or_else(|| "removed".to_owned(), |a| format!("now {}", short(a)));
                out.push(format!("override {name:?} replaced {path}, which the pod set to {} ({now})", short(pod)));
            }
        }
    }
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

    #[test]
    fn names_the_override_the_path_and_both_values() {
        let pod = json!({"spec": {"containers": [{"name": "base", "resources": {"limits": {"cpu": "2"}}}], "nodeSelector": {"pool": "a"}}});
        let after = json!({"spec": {"containers": [{"name": "base", "resources": {"limits": {"cpu": "500m"}}}], "nodeSelector": {"pool": "a"}}});
        let mut out = Vec::new();
        replaced_pod_values(&pod, &pod, &after, "small", &mut out);
        assert_eq!(
            out,
            vec![
                r#"override "small" replaced spec.containers[name=base].resources.limits.cpu, which the pod set to 2 (now 500m)"#
            ]
        );
    }

    #[test]
    fn a_value_the_template_or_an_earlier_override_replaced_is_not_the_pods() {
        let pod = json!({"spec": {"serviceAccountName": "mine"}});
        let before = json!({"spec": {"serviceAccountName": "earlier"}});
        let after = json!({"spec": {"serviceAccountName": "later"}});
        let mut out = Vec::new();
        replaced_pod_values(&pod, &before, &after, "o", &mut out);
        assert!(out.is_empty());
    }
}
