//! Pods, templates and PodOverrides generated in the Pod schema's shape with `arbitrary`, so
//! that the fuzzer spends its time in the merge engine, not in the parser: containers by name,
//! env, envFrom, volumes, volumeMounts, resources, initContainers, tolerations, annotations,
//! the values the API server defaults, and unknown fields. Names come from small vocabularies
//! (so layers meet on the same keys) and now and then are any string.

use std::sync::Arc;

use arbitrary::{Arbitrary, Result, Unstructured};
use podtailor::store::{Config, Overrides, files};
use serde_json::{Map, Value, json};

/// A string from `words` most of the time, else any short string.
fn word(u: &mut Unstructured<'_>, words: &[&str]) -> Result<String> {
    if u.ratio(7, 8)? {
        Ok((*u.choose(words)?).to_owned())
    } else {
        let s = String::arbitrary(u)?;
        Ok(s.chars().take(24).collect())
    }
}

macro_rules! vocabulary {
    ($($name:ident: [$($w:expr),* $(,)?];)*) => {$(
        #[derive(Debug)]
        pub struct $name(pub String);
        impl<'a> Arbitrary<'a> for $name {
            fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
                word(u, &[$($w),*]).map($name)
            }
        }
    )*};
}

vocabulary! {
    ContainerName: ["base", "side", "init", "tool", "Base"];
    EnvName: ["A", "B", "MY_SECRET", "EXECUTOR", "PATH", "my_secret"];
    Text: ["", "x", "1", "true", "a/b", "~0", "é", "0.5"];
    MountPath: ["/data", "/logs", "/etc/creds", "/var/run/secrets/kubernetes.io/serviceaccount", "/data/"];
    VolumeName: ["data", "logs", "kube-api-access-x7k2p", "creds", "secret-creds"];
    SecretName: ["creds", "app-env", "infrared-photon-7780-env", "s"];
    ResourceName: ["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"];
    Quantity: ["500m", "1", "0", "1Gi", "1024Mi", "2", "0.5"];
    TolerationKey: ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "pool", ""];
    AnnotationKey: ["team", "kubernetes.io/limit-ranger", "podtailor.dev/applied", "a/b~c", "note"];
    FieldName: ["x-unknown", "hostNetwork", "priority", "dnsPolicy", "nodeName", "overhead"];
    OverrideName: ["o0", "o1", "o2", "o3"];
    Namespace: ["airflow", "default", "other"];
    Target: ["MY_SECRET", "my_secret", "/etc/creds", "/data", "etc/rel", "A"];
}

/// Any JSON value, at most a few levels deep: unknown fields and values of the wrong type.
#[derive(Debug)]
pub struct Json(pub Value);

impl Json {
    fn at_depth(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
        let leaf = depth == 0 || u.is_empty();
        Ok(match u.int_in_range(0..=if leaf { 4 } else { 6 })? {
            0 => Value::Null,
            1 => Value::Bool(bool::arbitrary(u)?),
            2 => json!(i64::arbitrary(u)?),
            3 => json!(f64::arbitrary(u)?),
            4 => Value::String(Text::arbitrary(u)?.0),
            5 => {
                Value::Array((0..u.int_in_range(0..=3)?).map(|_| Json::at_depth(u, depth - 1)).collect::<Result<_>>()?)
            }
            _ => {
                let mut map = Map::new();
                for _ in 0..u.int_in_range(0..=3)? {
                    map.insert(FieldName::arbitrary(u)?.0, Json::at_depth(u, depth - 1)?);
                }
                Value::Object(map)
            }
        })
    }
}

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Json::at_depth(u, 3).map(Json)
    }
}

#[derive(Arbitrary, Debug)]
pub struct Env {
    name: EnvName,
    value: Option<Text>,
    from_secret: Option<(SecretName, Text)>,
}

impl Env {
    fn value(&self) -> Value {
        let mut v = json!({"name": self.name.0});
        if let Some(value) = &self.value {
            v["value"] = json!(value.0);
        }
        if let Some((secret, key)) = &self.from_secret {
            v["valueFrom"] = json!({"secretKeyRef": {"name": secret.0, "key": key.0}});
        }
        v
    }
}

#[derive(Arbitrary, Debug)]
pub struct EnvFrom {
    secret: bool,
    name: SecretName,
    prefix: Option<Text>,
}

impl EnvFrom {
    fn value(&self) -> Value {
        let kind = if self.secret { "secretRef" } else { "configMapRef" };
        let mut v = json!({ kind: {"name": self.name.0} });
        if let Some(prefix) = &self.prefix {
            v["prefix"] = json!(prefix.0);
        }
        v
    }
}

#[derive(Arbitrary, Debug)]
pub struct Mount {
    name: VolumeName,
    path: MountPath,
    read_only: Option<bool>,
    sub_path: Option<Text>,
}

impl Mount {
    fn value(&self) -> Value {
        let mut v = json!({"name": self.name.0, "mountPath": self.path.0});
        if let Some(ro) = self.read_only {
            v["readOnly"] = json!(ro);
        }
        if let Some(sub) = &self.sub_path {
            v["subPath"] = json!(sub.0);
        }
        v
    }
}

#[derive(Arbitrary, Debug)]
pub struct Resources {
    requests: Option<Vec<(ResourceName, Quantity)>>,
    limits: Option<Vec<(ResourceName, Quantity)>>,
}

impl Resources {
    fn value(&self) -> Value {
        let list = |l: &Vec<(ResourceName, Quantity)>| -> Value {
            Value::Object(l.iter().map(|(k, q)| (k.0.clone(), json!(q.0))).collect())
        };
        let mut v = json!({});
        if let Some(r) = &self.requests {
            v["requests"] = list(r);
        }
        if let Some(l) = &self.limits {
            v["limits"] = list(l);
        }
        v
    }
}

#[derive(Arbitrary, Debug)]
pub struct Container {
    name: ContainerName,
    image: Option<Text>,
    command: Option<Vec<Text>>,
    args: Option<Vec<Text>>,
    env: Option<Vec<Env>>,
    env_from: Option<Vec<EnvFrom>>,
    volume_mounts: Option<Vec<Mount>>,
    resources: Option<Resources>,
    ports: Option<Vec<u8>>,
    /// The API server's container defaults.
    defaulted: bool,
    unknown: Option<(FieldName, Json)>,
}

impl Container {
    fn value(&self) -> Value {
        let mut c = Map::new();
        c.insert("name".into(), json!(self.name.0));
        if let Some(image) = &self.image {
            c.insert("image".into(), json!(image.0));
        }
        let texts = |l: &Vec<Text>| json!(l.iter().map(|t| t.0.as_str()).collect::<Vec<_>>());
        if let Some(command) = &self.command {
            c.insert("command".into(), texts(command));
        }
        if let Some(args) = &self.args {
            c.insert("args".into(), texts(args));
        }
        if let Some(env) = &self.env {
            c.insert("env".into(), Value::Array(env.iter().map(Env::value).collect()));
        }
        if let Some(env_from) = &self.env_from {
            c.insert("envFrom".into(), Value::Array(env_from.iter().map(EnvFrom::value).collect()));
        }
        if let Some(mounts) = &self.volume_mounts {
            c.insert("volumeMounts".into(), Value::Array(mounts.iter().map(Mount::value).collect()));
        }
        if let Some(resources) = &self.resources {
            c.insert("resources".into(), resources.value());
        }
        if let Some(ports) = &self.ports {
            let ports = ports.iter().map(|p| json!({"containerPort": 8000 + u32::from(*p % 4)})).collect();
            c.insert("ports".into(), Value::Array(ports));
        }
        if self.defaulted {
            c.insert("imagePullPolicy".into(), json!("IfNotPresent"));
            c.insert("terminationMessagePath".into(), json!("/dev/termination-log"));
            c.insert("terminationMessagePolicy".into(), json!("File"));
        }
        if let Some((k, v)) = &self.unknown {
            c.insert(k.0.clone(), v.0.clone());
        }
        Value::Object(c)
    }
}

#[derive(Arbitrary, Debug)]
pub enum Source {
    EmptyDir,
    Secret(SecretName),
    ConfigMap(SecretName),
    Projected,
    Any(Json),
}

#[derive(Arbitrary, Debug)]
pub struct Volume {
    name: VolumeName,
    source: Source,
}

impl Volume {
    fn value(&self) -> Value {
        let mut v = json!({"name": self.name.0});
        match &self.source {
            Source::EmptyDir => v["emptyDir"] = json!({}),
            Source::Secret(s) => v["secret"] = json!({"secretName": s.0}),
            Source::ConfigMap(s) => v["configMap"] = json!({"name": s.0}),
            Source::Projected => {
                v["projected"] = json!({"sources": [{"serviceAccountToken": {"path": "token"}}], "defaultMode": 420})
            }
            Source::Any(j) => v["hostPath"] = j.0.clone(),
        }
        v
    }
}

#[derive(Arbitrary, Debug)]
pub struct Toleration {
    key: TolerationKey,
    exists: bool,
    no_execute: bool,
    seconds: Option<u16>,
}

impl Toleration {
    fn value(&self) -> Value {
        let mut v = json!({"key": self.key.0, "operator": if self.exists { "Exists" } else { "Equal" }});
        if self.no_execute {
            v["effect"] = json!("NoExecute");
        }
        if let Some(s) = self.seconds {
            v["tolerationSeconds"] = json!(s);
        }
        v
    }
}

/// A pod, or a pod fragment of an override (`metadata` and `spec`).
#[derive(Arbitrary, Debug)]
pub struct Pod {
    labels: Option<Vec<(AnnotationKey, Text)>>,
    annotations: Option<Vec<(AnnotationKey, Text)>>,
    containers: Option<Vec<Container>>,
    init_containers: Option<Vec<Container>>,
    volumes: Option<Vec<Volume>>,
    tolerations: Option<Vec<Toleration>>,
    node_selector: Option<Vec<(AnnotationKey, Text)>>,
    service_account_name: Option<Text>,
    restart_policy: Option<Text>,
    automount_token: Option<bool>,
    /// What the API server fills in before the webhook sees a pod.
    defaulted: bool,
    /// Fields set to null (in an override: deleted).
    nulls: Vec<FieldName>,
    unknown: Option<(FieldName, Json)>,
}

impl Pod {
    /// The `metadata` and `spec` it describes.
    pub fn value(&self) -> Value {
        let pairs = |l: &Vec<(AnnotationKey, Text)>| -> Value {
            Value::Object(l.iter().map(|(k, v)| (k.0.clone(), json!(v.0))).collect())
        };
        let mut meta = Map::new();
        if let Some(labels) = &self.labels {
            meta.insert("labels".into(), pairs(labels));
        }
        if let Some(annotations) = &self.annotations {
            meta.insert("annotations".into(), pairs(annotations));
        }
        let mut spec = Map::new();
        let containers = |l: &Vec<Container>| Value::Array(l.iter().map(Container::value).collect());
        if let Some(cs) = &self.containers {
            spec.insert("containers".into(), containers(cs));
        }
        if let Some(cs) = &self.init_containers {
            spec.insert("initContainers".into(), containers(cs));
        }
        if let Some(vs) = &self.volumes {
            spec.insert("volumes".into(), Value::Array(vs.iter().map(Volume::value).collect()));
        }
        if let Some(ts) = &self.tolerations {
            spec.insert("tolerations".into(), Value::Array(ts.iter().map(Toleration::value).collect()));
        }
        if let Some(ns) = &self.node_selector {
            spec.insert("nodeSelector".into(), pairs(ns));
        }
        if let Some(sa) = &self.service_account_name {
            spec.insert("serviceAccountName".into(), json!(sa.0));
        }
        if let Some(rp) = &self.restart_policy {
            spec.insert("restartPolicy".into(), json!(rp.0));
        }
        if let Some(a) = self.automount_token {
            spec.insert("automountServiceAccountToken".into(), json!(a));
        }
        if self.defaulted {
            for (k, v) in [
                ("restartPolicy", json!("Always")),
                ("dnsPolicy", json!("ClusterFirst")),
                ("schedulerName", json!("default-scheduler")),
                ("terminationGracePeriodSeconds", json!(30)),
                ("securityContext", json!({})),
                ("serviceAccountName", json!("default")),
                ("enableServiceLinks", json!(true)),
                ("priority", json!(0)),
                ("preemptionPolicy", json!("PreemptLowerPriority")),
            ] {
                spec.entry(k).or_insert(v);
            }
        }
        for n in &self.nulls {
            spec.insert(n.0.clone(), Value::Null);
        }
        if let Some((k, v)) = &self.unknown {
            spec.insert(k.0.clone(), v.0.clone());
        }
        json!({"metadata": meta, "spec": spec})
    }
}

#[derive(Arbitrary, Debug)]
pub struct Secret {
    volume: bool,
    target: Option<Target>,
    secret: SecretName,
    key: Option<Text>,
}

#[derive(Arbitrary, Debug)]
pub struct Override {
    /// In one namespace, or (`None`) in every one.
    namespace: Option<Namespace>,
    container: Option<ContainerName>,
    resources: Option<Resources>,
    secrets: Vec<Secret>,
    pod: Option<Pod>,
}

impl Override {
    /// The PodOverride object named `name`.
    pub fn value(&self, name: &str) -> Value {
        let mut spec = Map::new();
        if let Some(c) = &self.container {
            spec.insert("container".into(), json!(c.0));
        }
        if let Some(r) = &self.resources {
            spec.insert("resources".into(), r.value());
        }
        if !self.secrets.is_empty() {
            let secrets = self.secrets.iter().map(|s| {
                let mut v = json!({"deployType": if s.volume { "volume" } else { "env" }, "secret": s.secret.0});
                if let Some(t) = &s.target {
                    v["deployTarget"] = json!(t.0);
                }
                if let Some(k) = &s.key {
                    v["key"] = json!(k.0);
                }
                v
            });
            spec.insert("secrets".into(), Value::Array(secrets.collect()));
        }
        if let Some(p) = &self.pod {
            spec.insert("pod".into(), p.value());
        }
        let mut meta = json!({"name": name});
        if let Some(ns) = &self.namespace {
            meta["namespace"] = json!(ns.0);
        }
        json!({"apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride", "metadata": meta, "spec": spec})
    }
}

/// A whole case: a template, overrides `o0`, `o1`... and a pod that opts in to some of them
/// (or not at all) in a namespace.
#[derive(Arbitrary, Debug)]
pub struct Case {
    template: Pod,
    overrides: Vec<Override>,
    pod: Pod,
    /// `None`: the pod does not opt in.
    opt_in: Option<Vec<OverrideName>>,
    namespace: Namespace,
    generate_name: bool,
}

impl Case {
    /// The configuration, as the store would load it (overrides it rejects are left out:
    /// they never reach the engine), the namespace and the pod.
    pub fn build(&self) -> (Config, String, Value) {
        let mut template = self.template.value();
        template["apiVersion"] = json!("v1");
        template["kind"] = json!("Pod");
        template["metadata"]["name"] = json!("placeholder-name");
        let text = serde_json::to_string(&template).unwrap_or_default();
        let template = files::parse_template(&text).unwrap_or_else(|_| podtailor::merge::Template::new(json!({})));
        let mut overrides = Overrides::default();
        for (i, o) in self.overrides.iter().take(4).enumerate() {
            let text = o.value(&format!("o{i}")).to_string();
            let _rejected = files::add_overrides(&mut overrides, &text, "fuzz");
        }
        let mut pod = self.pod.value();
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        let namespace = self.namespace.0.clone();
        pod["metadata"]["namespace"] = json!(namespace);
        if self.generate_name {
            pod["metadata"]["generateName"] = json!("task-");
        } else {
            pod["metadata"]["name"] = json!("task-1");
        }
        if let Some(names) = &self.opt_in {
            let names: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
            pod["metadata"]["annotations"][podtailor::merge::OVERRIDE_ANNOTATION] = json!(names.join(","));
        }
        (Config::new(Arc::new(template), overrides), namespace, pod)
    }
}
