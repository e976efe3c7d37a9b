//! The Pod API's strategic-merge metadata: which lists merge by key, which are sets,
//! which are replaced whole. Only what the Pod API declares is listed; everything else
//! merges as a map (objects) or is replaced (lists), as Kubernetes' strategic merge does.

/// The object types of the Pod API whose fields carry merge metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Meta,
    Spec,
    Container,
    Resources,
    Mount,
    /// Any other object: maps merge key by key, lists are replaced.
    Other,
}

/// How the elements of a keyed list combine when two layers name the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    /// Strategic merge (`patchStrategy: merge`).
    Merge,
    /// Keep only the keys the later element has, then merge (`merge,retainKeys`):
    /// a volume from a later layer replaces the earlier volume's source.
    RetainKeys,
    /// The later element replaces the earlier one whole (env vars: `value` and `valueFrom`
    /// are alternatives, so mixing two versions would make an invalid pod).
    Replace,
}

/// How a list field combines across layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// No patch strategy: the later list replaces the earlier one.
    Atomic,
    /// `patchStrategy: merge` with a `patchMergeKey`.
    Keyed { key: &'static str, element: Element },
    /// `patchStrategy: merge` on a list of scalars: union, in order.
    Set,
    /// podtailor's own rule for `envFrom`, which the Pod API leaves without a key (replacing it
    /// whole would drop a platform's `secretRef` because a task added a ConfigMap): entries
    /// keyed by their source (`configMapRef` or `secretRef`, the name) and `prefix`; a later
    /// entry of the same source replaces the earlier one, others are appended, nothing is
    /// listed twice. A patch layer's list holding `{"$patch": "replace"}` replaces the list.
    Sources,
}

/// A field's own kind (for recursion) and its list strategy (when it holds a list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub kind: Kind,
    pub list: List,
}

const fn keyed(kind: Kind, key: &'static str, element: Element) -> Field {
    Field { kind, list: List::Keyed { key, element } }
}

const OTHER: Field = Field { kind: Kind::Other, list: List::Atomic };

/// The merge metadata of field `name` of an object of kind `kind`.
pub fn field(kind: Kind, name: &str) -> Field {
    match (kind, name) {
        (Kind::Pod, "metadata") => Field { kind: Kind::Meta, list: List::Atomic },
        (Kind::Pod, "spec") => Field { kind: Kind::Spec, list: List::Atomic },
        (Kind::Meta, "finalizers") => Field { kind: Kind::Other, list: List::Set },
        (Kind::Meta, "ownerReferences") => keyed(Kind::Other, "uid", Element::Merge),
        (Kind::Spec, "containers" | "initContainers" | "ephemeralContainers") => {
            keyed(Kind::Container, "name", Element::Merge)
        }
        (Kind::Spec, "volumes" | "resourceClaims") => keyed(Kind::Other, "name", Element::RetainKeys),
        (Kind::Spec, "imagePullSecrets" | "schedulingGates") => keyed(Kind::Other, "name", Element::Merge),
        (Kind::Spec, "hostAliases") => keyed(Kind::Other, "ip", Element::Merge),
        (Kind::Spec, "topologySpreadConstraints") => keyed(Kind::Other, "topologyKey", Element::Merge),
        (Kind::Container, "env") => keyed(Kind::Other, "name", Element::Replace),
        (Kind::Container, "envFrom") => Field { kind: Kind::Other, list: List::Sources },
        (Kind::Container, "volumeMounts") => keyed(Kind::Mount, "mountPath", Element::Merge),
        (Kind::Container, "resources") => Field { kind: Kind::Resources, list: List::Atomic },
        (Kind::Container, "volumeDevices") => keyed(Kind::Other, "devicePath", Element::Merge),
        (Kind::Container, "ports") => keyed(Kind::Other, "containerPort", Element::Merge),
        _ => OTHER,
    }
}

/// The elements of keyed lists in `value` (an object of kind `kind`) that cannot be matched
/// with another layer's: one that is not an object, or lacks the list's merge key. Merged in,
/// such an element would be added again at every pass. Each as (path, reason):
/// (`spec.containers[0].volumeMounts[1].mountPath`, "is required: ...").
pub fn unmatchable_elements(value: &serde_json::Value, kind: Kind) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk_keys(value, kind, "", &mut out);
    out
}

fn walk_keys(value: &serde_json::Value, kind: Kind, path: &str, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    let Some(map) = value.as_object() else { return };
    for (name, child) in map {
        let f = field(kind, name);
        let at = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        match (f.list, child) {
            (List::Keyed { key, .. }, Value::Array(items)) => {
                let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{at}[{i}]");
                    if !item.is_object() {
                        out.push((at, format!("must be an object (the elements of this list merge by {key})")));
                        continue;
                    }
                    match item.get(key) {
                        None | Some(Value::Null) => out.push((
                            format!("{at}.{key}"),
                            format!("is required: the elements of this list merge by {key}"),
                        )),
                        Some(value) => {
                            if let Some(first) = seen.insert(value.to_string(), i) {
                                out.push((
                                    format!("{at}.{key}"),
                                    format!("{value} is element {first}'s too: the elements of this list merge by {key}, one each"),
                                ));
                            }
                        }
                    }
                    if f.kind != Kind::Other {
                        walk_keys(item, f.kind, &at, out);
                    }
                }
            }
            (_, Value::Object(_)) if f.kind != Kind::Other => walk_keys(child, f.kind, &at, out),
            _ => {}
        }
    }
}

/// The plain booleans of the Pod API (Go `bool` with `omitempty`, no pointer): a `false` there
/// is not stored, and the API server drops it when it decodes a request, before any webhook.
pub const PLAIN_BOOLEANS: [(Kind, &str); 7] = [
    (Kind::Spec, "hostNetwork"),
    (Kind::Spec, "hostPID"),
    (Kind::Spec, "hostIPC"),
    (Kind::Container, "stdin"),
    (Kind::Container, "stdinOnce"),
    (Kind::Container, "tty"),
    (Kind::Mount, "readOnly"),
];

/// The plain booleans of objects of kind `kind`.
pub fn plain_booleans(kind: Kind) -> impl Iterator<Item = &'static str> {
    PLAIN_BOOLEANS.iter().filter(move |(k, _)| *k == kind).map(|(_, name)| *name)
}

/// Whether `name` in an object of kind `kind` is a map or a plain boolean that the API server
/// leaves out when it is empty or false (Go's `omitempty` on a non-pointer field): such a value
/// is the same as no value once the pod is stored.
pub fn omitted_when_zero(kind: Kind, name: &str, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => {
            map.is_empty()
                && matches!(
                    (kind, name),
                    (Kind::Meta, "labels" | "annotations")
                        | (Kind::Spec, "nodeSelector" | "overhead")
                        | (Kind::Resources, "requests" | "limits")
                )
        }
        Value::Bool(false) => plain_booleans(kind).any(|n| n == name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Kind::Spec, "containers", List::Keyed { key: "name", element: Element::Merge })]
    #[case(Kind::Spec, "volumes", List::Keyed { key: "name", element: Element::RetainKeys })]
    #[case(Kind::Spec, "imagePullSecrets", List::Keyed { key: "name", element: Element::Merge })]
    #[case(Kind::Spec, "tolerations", List::Atomic)]
    #[case(Kind::Container, "env", List::Keyed { key: "name", element: Element::Replace })]
    #[case(Kind::Container, "envFrom", List::Sources)]
    #[case(Kind::Container, "volumeMounts", List::Keyed { key: "mountPath", element: Element::Merge })]
    #[case(Kind::Container, "ports", List::Keyed { key: "containerPort", element: Element::Merge })]
    #[case(Kind::Container, "args", List::Atomic)]
    #[case(Kind::Container, "command", List::Atomic)]
    #[case(Kind::Meta, "finalizers", List::Set)]
    #[case(Kind::Other, "containers", List::Atomic)]
    fn list_strategies_follow_the_pod_api(#[case] kind: Kind, #[case] name: &str, #[case] want: List) {
        assert_eq!(field(kind, name).list, want);
    }
}
