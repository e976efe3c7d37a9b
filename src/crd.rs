//! The `PodOverride` custom resource (`podtailor.dev/v1alpha1`, namespaced).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A named, per-task change to worker pods, applied in the order the pod's
/// `podtailor.dev/override` annotation lists it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "podtailor.dev",
    version = "v1alpha1",
    kind = "PodOverride",
    plural = "podoverrides",
    shortname = "podov",
    namespaced,
    status = "PodOverrideStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"Whether podtailor loads it (cluster mode): True, or False with the reason"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1,"description":"Why it is ready or not (the message says more)"}"#,
    printcolumn = r#"{"name":"Container","type":"string","jsonPath":".spec.container","description":"Target container (default base, else the first)"}"#,
    printcolumn = r#"{"name":"Secrets","type":"string","jsonPath":".spec.secrets[*].secret","description":"Secrets referenced"}"#,
    doc = "A named, per-task change to worker pods that opt in with the podtailor.dev/override annotation",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodOverrideSpec {
    /// The container that `resources` and `secrets` apply to. Default: `base` if the pod has
    /// a container of that name, else the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Requests and limits, merged key by key into the target container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Secrets exposed to the target container, as Airflow's `Secret` does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    /// Pod fields (`metadata` and `spec`) merged on top of the pod: they win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_fragment_schema")]
    pub pod: Option<Value>,
}

/// What podtailor (`serve --cluster`) made of the object, written through the status
/// subresource by server-side apply.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrideStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: `True` when the override loads (pods naming it are tailored), `False` with
    /// reason `Invalid` and the refusal in `message` when it does not (pods naming it are
    /// denied with that message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A container's requests and limits.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
}

/// A secret exposed to the target container: Airflow's `Secret(deploy_type, deploy_target,
/// secret, key)`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// `env`: an environment variable (with `key`) or every key of the secret (without);
    /// `volume`: files under `deployTarget`.
    pub deploy_type: DeployType,
    /// The variable's name (`env` with `key`; upper-cased, as Airflow's `Secret` does: `my_token`
    /// is exposed as `MY_TOKEN`) or the absolute mount path (`volume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_target: Option<String>,
    /// The Secret's name, in the pod's namespace.
    pub secret: String,
    /// One key of the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeployType {
    Env,
    Volume,
}

/// A Kubernetes quantity (`500m`, `1Gi`, `2`). YAML numbers are accepted and kept as strings,
/// as the API server would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity(pub String);

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("a quantity must be a string or a number, like 500m or 1Gi"))?
        {
            Raw::Text(s) => s,
            Raw::Int(n) => n.to_string(),
            Raw::Float(n) => n.to_string(),
        };
        if text.trim().is_empty() {
            return Err(serde::de::Error::custom("a quantity must not be empty"));
        }
        Ok(Quantity(text))
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A quantity: 500m, 2, 1Gi.",
            "x-kubernetes-int-or-string": true
        })
    }
}

fn pod_fragment_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Pod fields (metadata and spec) merged on top of the pod.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The CustomResourceDefinition of `PodOverride`, as YAML.
pub fn definition_yaml() -> Result<String, serde_saphyr::SerializeError> {
    use kube::CustomResourceExt;
    let header = "# Generated by `podtailor crd`: do not edit; `make crd` rewrites it.\n";
    Ok(format!("{header}{}", crate::yaml::to_string(&PodOverride::crd())?))
}
