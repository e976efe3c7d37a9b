//! Checks on names and on PodOverride specs: what would otherwise fail later, at pod
//! admission or in the kubelet, is reported when the override is loaded, naming the field.

use serde_json::Value;

use crate::crd::{DeployType, PodOverrideSpec, Quantity};
use crate::merge::exposed_name;
use crate::merge::schema::{Kind, List, field};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An RFC 1123 DNS label (container and volume names).
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be at most 63 characters".into());
    }
    if !label_chars_ok(s) {
        return Err("must be lowercase letters, digits and '-', starting and ending with a letter or digit".into());
    }
    Ok(())
}

/// An RFC 1123 DNS subdomain (object names: PodOverrides, Secrets).
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be at most 253 characters".into());
    }
    if !s.split('.').all(label_chars_ok) {
        return Err(
            "must be lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

/// An environment variable name as the Pod API has long accepted it.
pub fn env_name(s: &str) -> Result<(), String> {
    let ok_first = |c: char| c.is_ascii_alphabetic() || matches!(c, '_' | '-' | '.');
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if ok_first(c) && chars.all(|c| ok_first(c) || c.is_ascii_digit()) => Ok(()),
        _ => Err("must be letters, digits, '_', '-' and '.', not starting with a digit".into()),
    }
}

/// A label's name part (and an annotation's): 1 to 63 characters, alphanumerics with '-', '_'
/// and '.' inside.
fn qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label key: `name` or `prefix/name`, the prefix a DNS subdomain.
pub fn label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    if let Some(prefix) = prefix
        && let Err(why) = dns_subdomain(prefix)
    {
        return Err(format!("must have a DNS subdomain as its prefix: {prefix:?} {why}"));
    }
    if !qualified_name_part(name) {
        return Err("must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or \
                    digit, with an optional DNS subdomain prefix and '/'"
            .into());
    }
    Ok(())
}

/// A label value: empty, or at most 63 letters, digits, '-', '_' and '.', starting and ending
/// with a letter or digit.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || qualified_name_part(s) {
        Ok(())
    } else {
        Err("must be empty or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
            .into())
    }
}

/// A key of a Secret.
pub fn secret_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != "..";
    if ok { Ok(()) } else { Err("must be letters, digits, '-', '_' and '.'".into()) }
}

/// A Kubernetes quantity: a decimal number with an optional SI, binary or exponent suffix.
pub fn quantity(q: &Quantity) -> Result<(), String> {
    let s = q.0.as_str();
    let number_end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && matches!(c, '+' | '-'))))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    let number_ok = !digits.is_empty() && digits != "." && digits.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.trim_start_matches(['+', '-']))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    if number_ok && suffix_ok { Ok(()) } else { Err(format!("{s:?} is not a quantity (like 500m, 2, 1Gi)")) }
}

/// Every problem with `spec`, each naming its field.
pub fn override_spec(spec: &PodOverrideSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut err = |field: String, message: String| errors.push(FieldError { field, message });
    if let Some(c) = &spec.container
        && let Err(m) = dns_label(c)
    {
        err("spec.container".into(), format!("{c:?} is not a container name: {m}"));
    }
    if let Some(r) = &spec.resources {
        for (field, values) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, q) in values.iter().flatten() {
                if let Err(m) = quantity(q) {
                    err(format!("spec.resources.{field}.{name}"), m);
                }
            }
        }
    }
    let mut exposed = std::collections::HashMap::new();
    for (i, s) in spec.secrets.iter().enumerate() {
        let at = |f: &str| format!("spec.secrets[{i}].{f}");
        if let Err(m) = dns_subdomain(&s.secret) {
            err(at("secret"), format!("{:?} is not a Secret name: {m}", s.secret));
        }
        if let Some(k) = &s.key
            && let Err(m) = secret_key(k)
        {
            err(at("key"), format!("{k:?} is not a Secret key: {m}"));
        }
        match (s.deploy_type, &s.deploy_target, &s.key) {
            (DeployType::Env, None, Some(_)) => {
                err(at("deployTarget"), "is required with key: it names the environment variable".into());
            }
            (DeployType::Env, Some(t), Some(_)) => {
                // checked as written and as exposed (upper-cased): the same for these names
                if let Err(m) = env_name(t).and_then(|()| env_name(&exposed_name(t))) {
                    err(at("deployTarget"), format!("{t:?} is not an environment variable name: {m}"));
                } else if let Some(first) = exposed.insert(exposed_name(t), i) {
                    err(
                        at("deployTarget"),
                        format!(
                            "{t:?} is exposed as {}, like spec.secrets[{first}]: one variable each (env targets are upper-cased, as Airflow's Secret does)",
                            exposed_name(t)
                        ),
                    );
                }
            }
            (DeployType::Env, Some(_), None) => err(
                at("deployTarget"),
                "must be empty without key: the whole secret becomes environment variables (envFrom)".into(),
            ),
            (DeployType::Env, None, None) => {}
            (DeployType::Volume, None, _) => {
                err(at("deployTarget"), "is required: the directory to mount the secret at".into())
            }
            (DeployType::Volume, Some(t), _) => {
                if !t.starts_with('/') {
                    err(at("deployTarget"), format!("{t:?} is not an absolute path"));
                } else if t.split('/').any(|p| p == "..") || t.contains(':') {
                    err(at("deployTarget"), format!("{t:?} must not contain '..' or ':'"));
                }
            }
        }
    }
    if let Some(pod) = &spec.pod {
        pod_fragment(pod, &mut err);
    }
    errors
}

/// Notes for people on a valid `spec`: each `env` secret whose variable is not named as
/// written, because it is upper-cased as Airflow's `Secret` does.
pub fn override_warnings(spec: &PodOverrideSpec) -> Vec<String> {
    spec.secrets
        .iter()
        .enumerate()
        .filter(|(_, s)| s.deploy_type == DeployType::Env && s.key.is_some())
        .filter_map(|(i, s)| {
            let t = s.deploy_target.as_deref()?;
            let name = exposed_name(t);
            (name != t).then(|| {
                format!("spec.secrets[{i}].deployTarget: {t:?} is exposed as {name} (env targets are upper-cased, as Airflow's Secret does)")
            })
        })
        .collect()
}

fn pod_fragment(pod: &Value, err: &mut impl FnMut(String, String)) {
    let Some(map) = pod.as_object() else {
        return err("spec.pod".into(), "must be an object with metadata and/or spec".into());
    };
    for key in map.keys().filter(|k| !matches!(k.as_str(), "metadata" | "spec")) {
        err(format!("spec.pod.{key}"), "is not allowed: an override changes only metadata and spec".into());
    }
    if let Some(meta) = map.get("metadata").and_then(Value::as_object) {
        for key in ["name", "generateName", "namespace"] {
            if meta.contains_key(key) {
                err(
                    format!("spec.pod.metadata.{key}"),
                    "is not allowed: overrides shape pods, they do not name them".into(),
                );
            }
        }
    }
    // an element without its merge key (a container's name, a mount's mountPath...) would be
    // added again at every pass
    for (path, reason) in crate::merge::schema::unmatchable_elements(pod, Kind::Pod) {
        err(format!("spec.pod.{path}"), reason);
    }
    directives(pod, Kind::Pod, &mut "spec.pod".to_owned(), err);
    for field in crate::podschema::unknown_fields(pod) {
        err(format!("spec.pod.{field}"), "is not a field of a Pod".into());
    }
}

/// Strategic-merge directives (`$patch`, `$retainKeys`…) are not part of the override format,
/// but one: an element `{"$patch": "replace"}` of a container's `envFrom` replaces the list
/// (which otherwise merges by source).
fn directives(v: &Value, kind: Kind, path: &mut String, err: &mut impl FnMut(String, String)) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                if k.starts_with('$') {
                    err(
                        path.clone(),
                        "patch directives are not supported: write the fields, or null to remove one (a container's \
                         envFrom takes {\"$patch\": \"replace\"})"
                            .into(),
                    );
                }
                let f = field(kind, k);
                match v.as_array() {
                    Some(items) if f.list == List::Sources => sources(items, path, err),
                    _ => directives(v, f.kind, path, err),
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                directives(item, kind, path, err);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// An `envFrom` list: its entries, and at most the one directive `{"$patch": "replace"}`.
fn sources(items: &[Value], path: &mut String, err: &mut impl FnMut(String, String)) {
    for (i, item) in items.iter().enumerate() {
        let len = path.len();
        path.push_str(&format!("[{i}]"));
        match item.get("$patch") {
            None => directives(item, Kind::Other, path, err),
            Some(Value::String(s)) if s == "replace" && item.as_object().is_some_and(|m| m.len() == 1) => {}
            Some(_) => err(
                format!("{path}.$patch"),
                "only {\"$patch\": \"replace\"}, alone in its element, is supported: it replaces the list instead of \
                 adding to it"
                    .into(),
            ),
        }
        path.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Resources, SecretRef};
    use rstest::rstest;
    use serde_json::json;

    #[rstest]
    #[case("a", true)]
    #[case("resource-requirements", true)]
    #[case("a.b-c", true)]
    #[case("", false)]
    #[case("Upper", false)]
    #[case("-a", false)]
    #[case("a..b", false)]
    #[case("a_b", false)]
    #[case(&"a".repeat(253), true)]
    #[case(&"a".repeat(254), false)]
    fn subdomains(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(dns_subdomain(s).is_ok(), ok, "{s}");
    }

    #[rstest]
    #[case("base", true)]
    #[case("a1-b", true)]
    #[case(&"a".repeat(63), true)]
    #[case(&"a".repeat(64), false)]
    #[case("", false)]
    #[case("a.b", false)]
    #[case("Base", false)]
    #[case("b-", false)]
    fn labels(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(dns_label(s).is_ok(), ok, "{s}");
    }

    #[rstest]
    #[case("team", true)]
    #[case("podtailor.dev/run", true)]
    #[case("app.kubernetes.io/name", true)]
    #[case("A_b.c-D", true)]
    #[case("", false)]
    #[case("/name", false)]
    #[case("Bad_Prefix/name", false)]
    #[case("a/b/c", false)]
    #[case("-team", false)]
    #[case("team.", false)]
    #[case("has space", false)]
    fn label_keys(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(label_key(s).is_ok(), ok, "{s}");
    }

    #[rstest]
    #[case("", true)]
    #[case("v1.2_3-x", true)]
    #[case("-x", false)]
    #[case("a/b", false)]
    #[case(&"x".repeat(64), false)]
    fn label_values(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(label_value(s).is_ok(), ok, "{s}");
    }

    #[rstest]
    #[case("500m", true)]
    #[case("1Gi", true)]
    #[case("2", true)]
    #[case("0.5", true)]
    #[case("1e3", true)]
    #[case("2E-3", true)]
    #[case("1e", false)]
    #[case("1e+", false)]
    #[case("1ex", false)]
    #[case("+1", true)]
    #[case("1GB", false)]
    #[case("lots", false)]
    #[case("1..2", false)]
    #[case("m", false)]
    fn quantities(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(quantity(&Quantity(s.into())).is_ok(), ok, "{s}");
    }

    fn secret(t: DeployType, target: Option<&str>, name: &str, key: Option<&str>) -> PodOverrideSpec {
        PodOverrideSpec {
            secrets: vec![SecretRef {
                deploy_type: t,
                deploy_target: target.map(Into::into),
                secret: name.into(),
                key: key.map(Into::into),
            }],
            ..Default::default()
        }
    }

    #[rstest]
    #[case::relative_volume_target(
        secret(DeployType::Volume, Some("etc/creds"), "s", None),
        "spec.secrets[0].deployTarget"
    )]
    #[case::volume_target_with_dot_dot(
        secret(DeployType::Volume, Some("/etc/../root"), "s", None),
        "spec.secrets[0].deployTarget"
    )]
    #[case::volume_target_with_colon(
        secret(DeployType::Volume, Some("/etc/a:b"), "s", None),
        "spec.secrets[0].deployTarget"
    )]
    #[case::volume_without_target(secret(DeployType::Volume, None, "s", None), "spec.secrets[0].deployTarget")]
    #[case::bad_env_name(secret(DeployType::Env, Some("1BAD"), "s", Some("k")), "spec.secrets[0].deployTarget")]
    #[case::env_key_without_target(secret(DeployType::Env, None, "s", Some("k")), "spec.secrets[0].deployTarget")]
    #[case::env_target_without_key(secret(DeployType::Env, Some("X"), "s", None), "spec.secrets[0].deployTarget")]
    #[case::env_targets_the_same_once_upper_cased(PodOverrideSpec { secrets: vec![
        SecretRef { deploy_type: DeployType::Env, deploy_target: Some("MY_TOKEN".into()), secret: "s".into(), key: Some("a".into()) },
        SecretRef { deploy_type: DeployType::Env, deploy_target: Some("my_token".into()), secret: "s".into(), key: Some("b".into()) }],
        ..Default::default() }, "spec.secrets[1].deployTarget")]
    #[case::bad_secret_name(secret(DeployType::Env, None, "Not_A_Name", None), "spec.secrets[0].secret")]
    #[case::bad_key(secret(DeployType::Env, Some("X"), "s", Some("a/b")), "spec.secrets[0].key")]
    #[case::bad_container(PodOverrideSpec { container: Some("Base".into()), ..Default::default() }, "spec.container")]
    #[case::bad_quantity(PodOverrideSpec { resources: Some(Resources { limits: Some([("cpu".to_owned(), Quantity("lots".into()))].into()), requests: None }), ..Default::default() }, "spec.resources.limits.cpu")]
    #[case::pod_status(PodOverrideSpec { pod: Some(json!({"status": {}})), ..Default::default() }, "spec.pod.status")]
    #[case::pod_rename(PodOverrideSpec { pod: Some(json!({"metadata": {"name": "x"}})), ..Default::default() }, "spec.pod.metadata.name")]
    #[case::pod_directive(PodOverrideSpec { pod: Some(json!({"spec": {"tolerations": [{"$patch": "replace"}]}})), ..Default::default() }, "spec.pod.spec.tolerations[0].$patch")]
    #[case::env_from_directive_other_than_replace(PodOverrideSpec { pod: Some(json!({"spec": {"containers": [{"name": "base", "envFrom": [{"$patch": "delete"}]}]}})), ..Default::default() }, "spec.pod.spec.containers[0].envFrom[0].$patch")]
    #[case::env_from_replace_with_fields(PodOverrideSpec { pod: Some(json!({"spec": {"containers": [{"name": "base", "envFrom": [{"$patch": "replace", "prefix": "X_"}]}]}})), ..Default::default() }, "spec.pod.spec.containers[0].envFrom[0].$patch")]
    #[case::replace_outside_env_from(PodOverrideSpec { pod: Some(json!({"spec": {"containers": [{"name": "base", "env": [{"name": "A", "$patch": "replace"}]}]}})), ..Default::default() }, "spec.pod.spec.containers[0].env[0].$patch")]
    #[case::pod_unknown_field(PodOverrideSpec { pod: Some(json!({"spec": {"nodeSelektor": {"pool": "a"}}})), ..Default::default() }, "spec.pod.spec.nodeSelektor")]
    #[case::pod_unnamed_container(PodOverrideSpec { pod: Some(json!({"spec": {"containers": [{"image": "x"}]}})), ..Default::default() }, "spec.pod.spec.containers[0].name")]
    #[case::pod_env_twice(PodOverrideSpec { pod: Some(json!({"spec": {"containers": [{"name": "base", "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}]}})), ..Default::default() }, "spec.pod.spec.containers[0].env[1].name")]
    #[case::pod_mount_without_its_path(PodOverrideSpec { pod: Some(json!({"spec": {"containers": [{"name": "base", "volumeMounts": [{"name": "x"}]}]}})), ..Default::default() }, "spec.pod.spec.containers[0].volumeMounts[0].mountPath")]
    fn rejects_naming_the_field(#[case] spec: PodOverrideSpec, #[case] field: &str) {
        let errors = override_spec(&spec);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, field);
    }

    #[test]
    fn warns_where_an_env_target_is_exposed_upper_cased() {
        let spec = PodOverrideSpec {
            secrets: vec![
                SecretRef {
                    deploy_type: DeployType::Env,
                    deploy_target: Some("my_token".into()),
                    secret: "s".into(),
                    key: Some("t".into()),
                },
                SecretRef {
                    deploy_type: DeployType::Env,
                    deploy_target: Some("MY_SECRET".into()),
                    secret: "s".into(),
                    key: Some("k".into()),
                },
                // a volume's path, with a key or without, is never upper-cased
                SecretRef {
                    deploy_type: DeployType::Volume,
                    deploy_target: Some("/etc/lower".into()),
                    secret: "s".into(),
                    key: None,
                },
                SecretRef {
                    deploy_type: DeployType::Volume,
                    deploy_target: Some("/etc/one-key".into()),
                    secret: "s".into(),
                    key: Some("k".into()),
                },
            ],
            ..Default::default()
        };
        assert_eq!(override_spec(&spec), vec![]);
        assert_eq!(
            override_warnings(&spec),
            vec![
                r#"spec.secrets[0].deployTarget: "my_token" is exposed as MY_TOKEN (env targets are upper-cased, as Airflow's Secret does)"#
            ]
        );
    }

    #[test]
    fn accepts_replace_in_env_from() {
        let spec = PodOverrideSpec {
            pod: Some(json!({"spec": {
                "containers": [{"name": "base", "envFrom": [{"$patch": "replace"}, {"configMapRef": {"name": "only"}}]}],
                "initContainers": [{"name": "init", "envFrom": [{"$patch": "replace"}]}]}})),
            ..Default::default()
        };
        assert_eq!(override_spec(&spec), vec![]);
    }

    #[test]
    fn accepts_the_design_example() {
        let spec: PodOverrideSpec = serde_json::from_value(json!({
            "container": "base",
            "resources": {"requests": {"cpu": "500m", "memory": "1024Mi"}, "limits": {"cpu": 1, "memory": "1024Mi"}},
            "secrets": [
                {"deployType": "env", "deployTarget": "MY_SECRET", "secret": "infrared-photon-7780-env", "key": "MY_SECRET"},
                {"deployType": "env", "secret": "app-env"},
                {"deployType": "volume", "deployTarget": "/etc/creds", "secret": "creds"}],
            "pod": {"metadata": {"labels": {"team": "data"}}, "spec": {"serviceAccountName": "worker", "nodeSelector": {"pool": "highmem"}}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(override_spec(&spec), vec![]);
    }
}
