//! Secrets exposed to a container, as Airflow's `Secret` does, without its duplicates:
//! `env` with a key is one variable (`secretKeyRef`) named by the target upper-cased, `env` without a key is the whole secret
//! (`envFrom`, listed once), `volume` is a read-only mount of a volume whose name is derived
//! from the secret and key, so applying twice adds nothing.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use std::borrow::Cow;

use super::draft::{Draft, Object};
use crate::crd::{DeployType, SecretRef};

/// The volume name for `secret` (and `key`): `secret-<name>-<hash>`, a valid DNS label of at
/// most 61 characters, the same every time.
pub fn secret_volume_name(secret: &str, key: Option<&str>) -> String {
    let mut base: String = secret.replace('.', "-").chars().take(45).collect();
    while base.ends_with('-') {
        base.pop();
    }
    let digest = Sha256::digest(format!("{secret}\n{}", key.unwrap_or_default()).as_bytes());
    let hash = super::hex(&digest[..4]);
    format!("secret-{base}-{hash}")
}

/// The variable an `env` secret is exposed as: its target upper-cased, as Airflow's `Secret`
/// does (`my_token` is `MY_TOKEN`). A variable name is ASCII (validation checks it).
pub fn exposed_name(target: &str) -> String {
    target.to_ascii_uppercase()
}

/// What one secret reference adds to a pod, made once for an override.
#[derive(Clone, Debug)]
pub enum Prepared {
    /// An env var with a `secretKeyRef`.
    Env(Value),
    /// An `envFrom` entry for the whole secret, listed once.
    EnvFrom(Value),
    /// A secret volume and its read-only mount.
    Volume { volume: Value, mount: Value },
}

/// The values `secrets` add, in order.
pub fn prepare(secrets: &[SecretRef]) -> Vec<Prepared> {
    secrets
        .iter()
        .map(|s| match (s.deploy_type, &s.key) {
            (DeployType::Env, Some(key)) => Prepared::Env(json!({
                "name": exposed_name(s.deploy_target.as_deref().unwrap_or(key)),
                "valueFrom": {"secretKeyRef": {"name": s.secret, "key": key}},
            })),
            (DeployType::Env, None) => Prepared::EnvFrom(json!({"secretRef": {"name": s.secret}})),
            (DeployType::Volume, key) => {
                let name = secret_volume_name(&s.secret, key.as_deref());
                let mut source = json!({"secretName": s.secret});
                if let Some(key) = key {
                    source["items"] = json!([{"key": key, "path": key}]);
                }
                Prepared::Volume {
                    volume: json!({"name": name, "secret": source}),
                    mount: json!({"name": name, "mountPath": s.deploy_target, "readOnly": true}),
                }
            }
        })
        .collect()
}

/// The fragment that adds `secrets` (as [`prepare`]d) to container `target` (which exists:
/// the caller checked), if there are any. `envFrom` merges by source, so an entry for a
/// secret the container already reads from replaces that entry and is not listed again.
pub fn fragment<'a>(target: &str, secrets: &'a [Prepared]) -> Option<Draft<'a>> {
    if secrets.is_empty() {
        return None;
    }
    let mut env = Vec::new();
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    let mut env_from = Vec::new();
    for s in secrets {
        match s {
            Prepared::Env(var) => env.push(Draft::Borrowed(var)),
            Prepared::EnvFrom(entry) => env_from.push(Draft::Borrowed(entry)),
            Prepared::Volume { volume, mount } => {
                volumes.push(Draft::Borrowed(volume));
                mounts.push(Draft::Borrowed(mount));
            }
        }
    }
    let mut container = Object::default();
    container.push(Cow::Borrowed("name"), Draft::owned(Value::String(target.to_owned())));
    for (field, items) in [("env", env), ("volumeMounts", mounts), ("envFrom", env_from)] {
        if !items.is_empty() {
            container.push(Cow::Borrowed(field), Draft::Array(items));
        }
    }
    let mut spec = Object::default();
    spec.push(Cow::Borrowed("containers"), Draft::Array(vec![Draft::Object(container)]));
    if !volumes.is_empty() {
        spec.push(Cow::Borrowed("volumes"), Draft::Array(volumes));
    }
    Some(Draft::object([("spec", Draft::Object(spec))]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DeployType::{Env, Volume};
    use crate::merge::schema::Kind;
    use crate::merge::strategic::{Nulls, merge};

    fn apply(pod: &mut Value, target: &str, secrets: &[SecretRef]) {
        let prepared = prepare(secrets);
        if let Some(f) = fragment(target, &prepared).map(Draft::into_value) {
            merge(pod, f, Kind::Pod, Nulls::Delete);
        }
    }

    fn secret(deploy_type: DeployType, target: Option<&str>, secret: &str, key: Option<&str>) -> SecretRef {
        SecretRef {
            deploy_type,
            deploy_target: target.map(str::to_owned),
            secret: secret.into(),
            key: key.map(str::to_owned),
        }
    }

    fn pod() -> Value {
        json!({"spec": {"containers": [{"name": "base", "env": [{"name": "MY_SECRET", "value": "plain"}],
                                         "envFrom": [{"secretRef": {"name": "app-env"}}]}]}})
    }

    #[test]
    fn env_with_key_replaces_a_variable_of_that_name() {
        let mut p = pod();
        apply(&mut p, "base", &[secret(Env, Some("MY_SECRET"), "s", Some("k"))]);
        assert_eq!(
            p["spec"]["containers"][0]["env"],
            json!([{"name": "MY_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
        );
    }

    #[test]
    fn an_env_target_is_upper_cased_as_airflow_does() {
        let mut p = pod();
        apply(
            &mut p,
            "base",
            &[secret(Env, Some("my_token"), "s", Some("token")), secret(Env, Some("my_secret"), "s", Some("k"))],
        );
        assert_eq!(
            p["spec"]["containers"][0]["env"],
            json!([{"name": "MY_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                   {"name": "MY_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}])
        );
    }

    #[test]
    fn env_without_key_is_added_to_env_from_once() {
        let mut p = pod();
        let secrets =
            [secret(Env, None, "app-env", None), secret(Env, None, "more", None), secret(Env, None, "more", None)];
        apply(&mut p, "base", &secrets);
        apply(&mut p, "base", &secrets);
        assert_eq!(
            p["spec"]["containers"][0]["envFrom"],
            json!([{"secretRef": {"name": "app-env"}}, {"secretRef": {"name": "more"}}])
        );
    }

    #[test]
    fn volumes_have_stable_names_and_are_never_duplicated() {
        let mut p = pod();
        let secrets = [
            secret(Volume, Some("/etc/creds"), "creds", None),
            secret(Volume, Some("/etc/one"), "creds", Some("token")),
        ];
        apply(&mut p, "base", &secrets);
        let once = p.clone();
        apply(&mut p, "base", &secrets);
        assert_eq!(p, once);
        let volumes = p["spec"]["volumes"].as_array().cloned().unwrap_or_default();
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[1]["secret"], json!({"secretName": "creds", "items": [{"key": "token", "path": "token"}]}));
        let mounts = &p["spec"]["containers"][0]["volumeMounts"];
        assert_eq!(mounts[0], json!({"name": "secret-creds-ac51fa35", "mountPath": "/etc/creds", "readOnly": true}));
        assert_eq!(mounts[1], json!({"name": "secret-creds-88edf3c3", "mountPath": "/etc/one", "readOnly": true}));
        assert_eq!(volumes[1]["name"], "secret-creds-88edf3c3");
    }

    /// The names, written out: a pod made by an older version must keep its volume's name.
    /// `secret-` + the secret's name with dots made dashes, cut at 45 and without trailing
    /// dashes, + `-` + the first 8 hex digits of SHA-256("<secret>\n<key>").
    #[test]
    fn volume_names_are_the_documented_ones() {
        let long = "a.very.long.secret.name.with.dots.that.goes.on.and.on.and.on.and.on";
        let (cut, cut_name) = (format!("{}..b", "a".repeat(43)), format!("secret-{}-c56e1ac4", "a".repeat(43)));
        for (secret, key, name) in [
            ("creds", None, "secret-creds-ac51fa35"),
            ("creds", Some("token"), "secret-creds-88edf3c3"),
            ("db.prod", None, "secret-db-prod-63df12d4"),
            ("x-.-y", None, "secret-x---y-f762c1d6"),
            (long, Some("k"), "secret-a-very-long-secret-name-with-dots-that-goes-o-24976020"),
            // cut at 45 just after two dots: both dashes go
            (cut.as_str(), None, cut_name.as_str()),
        ] {
            assert_eq!(secret_volume_name(secret, key), name, "{secret} {key:?}");
        }
    }

    #[test]
    fn volume_names_are_dns_labels() {
        let long = "a.very.long.secret.name.with.dots.that.goes.on.and.on.and.on.and.on";
        for (s, k) in [("creds", None), (long, Some("k")), ("x-.-y", None)] {
            let n = secret_volume_name(s, k);
            assert!(n.len() <= 63, "{n}");
            assert!(crate::validate::dns_label(&n).is_ok(), "{n}");
        }
        assert_ne!(secret_volume_name("creds", None), secret_volume_name("creds", Some("k")));
        assert_eq!(secret_volume_name("creds", None), secret_volume_name("creds", None));
    }
}
