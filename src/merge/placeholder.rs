//! The namespace placeholder of a template: `{{namespace}}` in a string value stands for the
//! pod's namespace, expanded at admission. A platform that runs one deployment a namespace
//! (the release name is the namespace) writes its worker template once:
//! `release: "{{namespace}}"`, `name: "{{namespace}}-env"`.
//!
//! Why this form: `$(VAR)` is Kubernetes' own expansion (env values, command, args) and
//! `${VAR}` the shell's and envsubst's, so both can be real values of a pod; a `{{` is in no
//! value the API server keeps for a pod's names and labels, and a Helm chart that holds the
//! template fails loudly on it (`function "namespace" not defined`) instead of passing it on
//! changed. The rules are strict so that a typo is a load error, never a literal that reaches
//! pods: every `{{` in a value must open exactly `{{namespace}}` (no spaces, no other name),
//! and a key (a label key, a field name) may hold none.

use serde_json::Value;

use crate::validate;

/// The placeholder, as written in a template.
pub const NAMESPACE: &str = "{{namespace}}";

/// A namespace for the load-time check: the shortest there is, so that only what no namespace
/// can make valid (`{{namespace}}_env` as a Secret name, say) fails the load; what only a long
/// namespace makes too long is found at admission.
const SAMPLE: &str = "a";

/// One step of the path to a value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Key(String),
    Index(usize),
}

/// What an expanded value must be, by where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// `metadata.labels.*`.
    LabelValue,
    /// A container's or a volume's name.
    DnsLabel,
    /// The name of an object the pod refers to: a Secret, a ConfigMap, a service account, a claim.
    ObjectName,
    /// Anything else: no rule of its own.
    Any,
}

/// A string value of a template that holds the placeholder.
#[derive(Clone, Debug)]
pub struct Site {
    /// The JSON pointer to the value.
    pointer: String,
    /// The value's path for people: `spec.volumes[1].configMap.name`.
    pub path: String,
    /// The value as written.
    pub raw: String,
    rule: Rule,
}

impl Site {
    /// The value for `namespace`, checked: an error says what it expands to and why that is
    /// not a valid value there.
    fn expand(&self, namespace: &str) -> Result<String, String> {
        let value = self.raw.replace(NAMESPACE, namespace);
        let checked = match self.rule {
            Rule::LabelValue => validate::label_value(&value).map(|()| "label value"),
            Rule::DnsLabel => validate::dns_label(&value).map(|()| "name"),
            Rule::ObjectName => validate::dns_subdomain(&value).map(|()| "name"),
            Rule::Any => Ok(""),
        };
        match checked {
            Ok(_) => Ok(value),
            Err(why) => {
                let what = match self.rule {
                    Rule::LabelValue => "a label value",
                    _ => "a name",
                };
                Err(format!(
                    "{}: {:?} expands to {value:?} ({} characters), which is not valid as {what}: it {why}",
                    self.path,
                    self.raw,
                    value.len()
                ))
            }
        }
    }
}

/// Checks every string of `pod` for placeholders and returns where they are; an error names
/// the field: an unknown or malformed placeholder, a placeholder in a key, or a value that no
/// namespace can make valid.
pub fn check(pod: &Value) -> Result<Vec<Site>, String> {
    let mut sites = Vec::new();
    walk(pod, &mut Vec::new(), &mut sites)?;
    for site in &sites {
        if let Err(why) = site.expand(SAMPLE) {
            return Err(format!("{why} (in namespace {SAMPLE:?}, the shortest there is)"));
        }
    }
    Ok(sites)
}

/// The sites of `pod`, without the checks (a template made by [`crate::merge::Template::new`]
/// from a value that was not loaded from a file): a malformed placeholder stays as written.
pub fn sites(pod: &Value) -> Vec<Site> {
    let mut sites = Vec::new();
    let _unchecked = walk_lenient(pod, &mut Vec::new(), &mut sites);
    sites
}

/// `pod` with every site expanded for `namespace`; an error names the field and the value it
/// would have.
pub fn expand(pod: &Value, sites: &[Site], namespace: &str) -> Result<Value, String> {
    let mut pod = pod.clone();
    for site in sites {
        let value = site.expand(namespace)?;
        if let Some(at) = pod.pointer_mut(&site.pointer) {
            *at = Value::String(value);
        }
    }
    Ok(pod)
}

fn walk(value: &Value, path: &mut Vec<Token>, sites: &mut Vec<Site>) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key.contains("{{") {
                    return Err(format!(
                        "{}: the key {key:?} holds a placeholder; {NAMESPACE} is expanded in values only, never in keys",
                        display(path)
                    ));
                }
                path.push(Token::Key(key.clone()));
                walk(v, path, sites)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Token::Index(i));
                walk(v, path, sites)?;
                path.pop();
            }
        }
        Value::String(s) if s.contains("{{") => {
            parse(s).map_err(|why| format!("{}: {s:?}: {why}", display(path)))?;
            sites.push(site(path, s));
        }
        _ => {}
    }
    Ok(())
}

fn walk_lenient(value: &Value, path: &mut Vec<Token>, sites: &mut Vec<Site>) -> Option<()> {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                path.push(Token::Key(key.clone()));
                walk_lenient(v, path, sites);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Token::Index(i));
                walk_lenient(v, path, sites);
                path.pop();
            }
        }
        Value::String(s) if s.contains(NAMESPACE) => sites.push(site(path, s)),
        _ => {}
    }
    Some(())
}

fn site(path: &[Token], raw: &str) -> Site {
    Site { pointer: pointer(path), path: display(path), raw: raw.to_owned(), rule: rule(path) }
}

/// Checks that every `{{` of `s` opens `{{namespace}}`.
fn parse(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(at) = rest.find("{{") {
        let after = &rest[at..];
        if let Some(next) = after.strip_prefix(NAMESPACE) {
            rest = next;
            continue;
        }
        let inner = after[2..].split("}}").next().filter(|_| after[2..].contains("}}"));
        return Err(match inner {
            Some(name) if name.trim() == "namespace" => {
                format!("malformed placeholder {{{{{name}}}}}: write it {NAMESPACE}, without spaces")
            }
            Some(name) => format!("unknown placeholder {{{{{name}}}}}: the one placeholder is {NAMESPACE}"),
            None => format!("malformed placeholder: a `{{{{` that {NAMESPACE} does not follow, and no `}}}}`"),
        });
    }
    Ok(())
}

fn rule(path: &[Token]) -> Rule {
    let key = |i: usize| match path.get(i) {
        Some(Token::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    let n = path.len();
    if n == 3 && key(0) == Some("metadata") && key(1) == Some("labels") {
        return Rule::LabelValue;
    }
    let last = n.checked_sub(1).and_then(key);
    let parent = n.checked_sub(2).and_then(key);
    let list = n.checked_sub(3).and_then(key);
    let is_item = n >= 2 && matches!(path[n - 2], Token::Index(_));
    match last {
        Some("secretName" | "claimName" | "serviceAccountName" | "serviceAccount") => Rule::ObjectName,
        Some("name")
            if matches!(
                parent,
                Some("secretKeyRef" | "configMapKeyRef" | "secretRef" | "configMapRef" | "configMap" | "secret")
            ) =>
        {
            Rule::ObjectName
        }
        Some("name") if is_item && list == Some("imagePullSecrets") => Rule::ObjectName,
        Some("name")
            if is_item && matches!(list, Some("containers" | "initContainers" | "ephemeralContainers" | "volumes")) =>
        {
            Rule::DnsLabel
        }
        _ => Rule::Any,
    }
}

/// RFC 6901: `~` as `~0`, `/` as `~1`.
fn pointer(path: &[Token]) -> String {
    let mut out = String::new();
    for t in path {
        out.push('/');
        match t {
            Token::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Token::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// `spec.containers[0].env[1].value`; a key that is not a plain word is quoted:
/// `metadata.annotations["example.com/x"]`.
fn display(path: &[Token]) -> String {
    let mut out = String::new();
    for t in path {
        match t {
            Token::Key(k) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Token::Key(k) => out.push_str(&format!("[{k:?}]")),
            Token::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() { "(the document)".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn pod(yaml: &str) -> Value {
        crate::input::document(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn finds_and_expands_every_site() {
        let template = pod(
            "metadata:\n  labels: {release: '{{namespace}}', tier: airflow}\n  annotations: {a/b: 'x {{namespace}} {{namespace}}'}\nspec:\n  serviceAccountName: '{{namespace}}-worker'\n  containers:\n  - name: base\n    envFrom: [{secretRef: {name: '{{namespace}}-env'}}]\n",
        );
        let sites = check(&template).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<&str> = sites.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.labels.release",
                "metadata.annotations[\"a/b\"]",
                "spec.serviceAccountName",
                "spec.containers[0].envFrom[0].secretRef.name"
            ]
        );
        let expanded = expand(&template, &sites, "team-a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(expanded["metadata"]["labels"], json!({"release": "team-a", "tier": "airflow"}));
        assert_eq!(expanded["metadata"]["annotations"]["a/b"], "x team-a team-a");
        assert_eq!(expanded["spec"]["serviceAccountName"], "team-a-worker");
        assert_eq!(expanded["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"], "team-a-env");
        assert!(check(&pod("spec: {restartPolicy: Never}\n")).is_ok_and(|s| s.is_empty()));
    }

    #[rstest]
    #[case::spaces(
        "metadata: {labels: {r: '{{ namespace }}'}}",
        "metadata.labels.r: \"{{ namespace }}\": malformed placeholder {{ namespace }}: write it {{namespace}}, without spaces"
    )]
    #[case::unknown(
        "spec: {serviceAccountName: '{{release}}-worker'}",
        "spec.serviceAccountName: \"{{release}}-worker\": unknown placeholder {{release}}: the one placeholder is {{namespace}}"
    )]
    #[case::unclosed(
        "spec: {hostname: '{{namespace'}",
        "spec.hostname: \"{{namespace\": malformed placeholder: a `{{` that {{namespace}} does not follow, and no `}}`"
    )]
    #[case::second_is_bad(
        "metadata: {annotations: {x: '{{namespace}}-{{Namespace}}'}}",
        "unknown placeholder {{Namespace}}"
    )]
    #[case::in_a_key(
        "metadata: {labels: {'{{namespace}}/x': a}}",
        "metadata.labels: the key \"{{namespace}}/x\" holds a placeholder; {{namespace}} is expanded in values only, never in keys"
    )]
    #[case::invalid_for_any_namespace(
        "spec: {volumes: [{name: c, configMap: {name: '{{namespace}}_config'}}]}",
        "spec.volumes[0].configMap.name: \"{{namespace}}_config\" expands to \"a_config\" (8 characters), which is not valid as a name: it must be lowercase"
    )]
    fn bad_placeholders_are_load_errors_naming_the_field(#[case] yaml: &str, #[case] want: &str) {
        let err = check(&pod(yaml)).err().unwrap_or_default();
        assert!(err.starts_with(want) || err.contains(want), "{err}\nwanted {want}");
    }

    #[test]
    fn a_value_too_long_for_a_long_namespace_is_an_error_naming_it() {
        let template =
            pod("metadata: {labels: {release: '{{namespace}}-workers'}}\nspec: {containers: [{name: base}]}\n");
        let sites = check(&template).unwrap_or_else(|e| panic!("{e}"));
        let long = "n".repeat(60);
        let err = expand(&template, &sites, &long).err().unwrap_or_default();
        assert!(
            err.starts_with(&format!(
                "metadata.labels.release: \"{{{{namespace}}}}-workers\" expands to \"{long}-workers\" (68 characters), which is not valid as a label value: it must be empty or at most 63"
            )),
            "{err}"
        );
        assert!(expand(&template, &sites, &"n".repeat(55)).is_ok());
        // an annotation has no such limit
        let annotation = pod("metadata: {annotations: {release: '{{namespace}}-workers'}}\n");
        let sites = check(&annotation).unwrap_or_else(|e| panic!("{e}"));
        assert!(expand(&annotation, &sites, &long).is_ok());
    }

    #[test]
    fn rules_by_place() {
        let at = |path: &[Token]| rule(path);
        let k = |s: &str| Token::Key(s.to_owned());
        assert_eq!(at(&[k("metadata"), k("labels"), k("x")]), Rule::LabelValue);
        assert_eq!(at(&[k("spec"), k("containers"), Token::Index(0), k("name")]), Rule::DnsLabel);
        assert_eq!(at(&[k("spec"), k("imagePullSecrets"), Token::Index(0), k("name")]), Rule::ObjectName);
        assert_eq!(at(&[k("spec"), k("volumes"), Token::Index(0), k("secret"), k("secretName")]), Rule::ObjectName);
        assert_eq!(at(&[k("spec"), k("containers"), Token::Index(0), k("env"), Token::Index(0), k("name")]), Rule::Any);
        assert_eq!(at(&[k("metadata"), k("annotations"), k("x")]), Rule::Any);
    }

    #[test]
    fn pointers_escape_keys() {
        assert_eq!(pointer(&[Token::Key("a/b~c".into()), Token::Index(2)]), "/a~1b~0c/2");
    }
}
