//! Warnings for people: where an override replaced a value the pod set itself.
//!
//! Only the paths an override layer names are looked at (a layer is small; the pod may not
//! be), and a value counts as the pod's when the incoming pod holds it and the merge so far
//! still does — so a value the API server defaulted and the template replaced never warns.

use serde_json::Value;

use super::schema::{Element, Kind, List, field};

#[derive(Clone)]
enum Step {
    Key(String),
    /// The element of a keyed list whose merge key has this value.
    Keyed(&'static str, Value),
}

/// The places a layer sets, with the pod's value at each before the layer is merged.
pub struct Watch {
    places: Vec<(String, Vec<Step>, Value)>,
}

impl Watch {
    /// The places `layer` names where `merged` still holds the incoming `pod`'s own value.
    pub fn before(layer: &Value, pod: &Value, merged: &Value) -> Watch {
        let mut places = Vec::new();
        let mut found = Vec::new();
        collect(layer, Kind::Pod, List::Atomic, &mut Vec::new(), &mut found);
        for steps in found {
            if let Some(value) = lookup(pod, &steps).filter(|v| lookup(merged, &steps) == Some(*v)) {
                places.push((display(&steps), steps, value.clone()));
            }
        }
        Watch { places }
    }

    /// Adds a warning for each watched value that override `name` changed in `merged`.
    pub fn after(self, merged: &Value, name: &str, out: &mut Vec<String>) {
        for (path, steps, value) in self.places {
            let now = lookup(merged, &steps);
            if now != Some(&value) {
                let now = now.map_or_else(|| "removed".to_owned(), |a| format!("now {}", short(a)));
                out.push(format!("override {name:?} replaced {path}, which the pod set to {} ({now})", short(&value)));
            }
        }
    }
}

fn collect(v: &Value, kind: Kind, list: List, steps: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match (v, list) {
        (Value::Object(map), _) if !map.is_empty() => {
            for (k, v) in map {
                let f = field(kind, k);
                steps.push(Step::Key(k.clone()));
                collect(v, f.kind, f.list, steps, out);
                steps.pop();
            }
        }
        (Value::Array(items), List::Keyed { key, element }) => {
            for item in items {
                let Some(k) = item.get(key) else { continue };
                steps.push(Step::Keyed(key, k.clone()));
                match element {
                    Element::Merge => collect(item, kind, List::Atomic, steps, out),
                    // the element is replaced whole (or down to its keys): watch it whole
                    Element::Replace | Element::RetainKeys => out.push(steps.clone()),
                }
                steps.pop();
            }
        }
        _ => out.push(steps.clone()),
    }
}

fn display(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Keyed(key, v) => out.push_str(&format!("[{key}={}]", short(v))),
        }
    }
    out
}

fn lookup<'a>(mut v: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    for step in steps {
        v = match step {
            Step::Key(k) => v.get(k)?,
            Step::Keyed(key, k) => v.as_array()?.iter().find(|x| x.get(*key) == Some(k))?,
        };
    }
    Some(v)
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

    fn warnings(layer: Value, pod: Value, before: Value, after: Value) -> Vec<String> {
        let mut out = Vec::new();
        Watch::before(&layer, &pod, &before).after(&after, "o", &mut out);
        out
    }

    #[test]
    fn names_the_override_the_path_and_both_values() {
        let pod = json!({"spec": {"containers": [{"name": "base", "resources": {"limits": {"cpu": "2"}}}]}});
        let layer = json!({"spec": {"containers": [{"name": "base", "resources": {"limits": {"cpu": "500m"}}}]}});
        assert_eq!(
            warnings(layer.clone(), pod.clone(), pod, layer),
            vec![
                r#"override "o" replaced spec.containers[name=base].resources.limits.cpu, which the pod set to 2 (now 500m)"#
            ]
        );
    }

    #[test]
    fn an_env_var_is_watched_whole() {
        let pod = json!({"spec": {"containers": [{"name": "base", "env": [{"name": "X", "value": "1"}]}]}});
        let layer = json!({"spec": {"containers": [{"name": "base", "env": [{"name": "X", "valueFrom": {}}]}]}});
        assert_eq!(warnings(layer.clone(), pod.clone(), pod, layer).len(), 1);
    }

    #[test]
    fn a_value_the_template_or_an_earlier_override_replaced_is_not_the_pods() {
        let layer = json!({"spec": {"serviceAccountName": "later"}});
        let pod = json!({"spec": {"serviceAccountName": "default"}});
        let before = json!({"spec": {"serviceAccountName": "from-template"}});
        assert!(warnings(layer.clone(), pod, before, layer).is_empty());
    }
}
