//! `podtailor render`: what the webhook would do to a pod, without a cluster.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::merge::Want;
use crate::mutate::{Decision, decide};
use crate::{Error, input, store, validate};

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// The platform's default worker pod (a v1 Pod, YAML or JSON).
    #[arg(long, value_name = "FILE", env = "PODTAILOR_TEMPLATE")]
    pub template: PathBuf,
    /// A directory of PodOverride files (*.yaml, *.yml, *.json); none: the template alone.
    #[arg(long, value_name = "DIR", env = "PODTAILOR_OVERRIDES")]
    pub overrides: Option<PathBuf>,
    /// A directory of PodTemplate files (core/v1): the one named --namespace-template-name in a
    /// namespace replaces --template for that namespace's pods.
    #[arg(long, value_name = "DIR")]
    pub namespace_templates: Option<PathBuf>,
    /// The name of a namespace's own PodTemplate.
    #[arg(long, value_name = "NAME", default_value = store::files::NAMESPACE_TEMPLATE_NAME, requires = "namespace_templates")]
    pub namespace_template_name: String,
    /// The namespace when INPUT names none (an AdmissionReview's, then the pod's, come first);
    /// none: `default`, unless the template holds {{namespace}}, which needs the pod's own.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// yaml or json: the desired pod; patch: the RFC 6902 JSON patch the webhook would return.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
    /// A Pod (YAML or JSON) or an AdmissionReview (JSON); `-` reads standard input.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Patch,
}

/// What `render` prints: `text` on standard output, `warnings` on standard error: the
/// validating webhook's for each override applied (an env secret exposed upper-cased), then
/// the webhook's (values the pod set itself that an override replaced).
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    pub warnings: Vec<String>,
}

/// Runs `render` and returns what to print.
pub fn run(args: &RenderArgs) -> crate::Result<Rendered> {
    let config = store::files::load_flags(store::files::Flags {
        template: &args.template,
        overrides: args.overrides.as_deref(),
        namespace_templates: args.namespace_templates.as_deref(),
        namespace_template_name: &args.namespace_template_name,
    })?;
    let (text, source_name) = read_input(&args.input)?;
    let bad = |message: String| Error::Input { source_name: source_name.clone(), message };
    let given = input::pod_input(&text).map_err(bad)?;
    let namespace = match given.namespace.as_deref().or(args.namespace.as_deref()) {
        Some(ns) => ns,
        None => unknown_namespace(&config).map_err(bad)?,
    };
    let (desired, patch, warnings) =
        match decide(&config, namespace, &given.pod, Want::Desired).map_err(|d| bad(d.message))? {
            Decision::NotOptedIn => (given.pod, json_patch::Patch(Vec::new()), Vec::new()),
            Decision::Mutated { outcome, overrides } => {
                // what the validating webhook says of each override applied, then the webhook's
                let mut warnings: Vec<String> = overrides
                    .iter()
                    .filter_map(|name| config.overrides.get(namespace, name))
                    .flat_map(|o| {
                        validate::override_warnings(o.spec()).into_iter().map(|w| format!("override {:?}: {w}", o.name))
                    })
                    .collect();
                warnings.extend(outcome.warnings);
                (outcome.desired.unwrap_or_default(), outcome.patch, warnings)
            }
        };
    let printed = match args.output {
        Output::Yaml => crate::yaml::to_string(&desired).map_err(|e| bad(e.to_string()))?,
        Output::Json => pretty(&desired),
        Output::Patch => pretty(&serde_json::to_value(&patch).unwrap_or(Value::Null)),
    };
    Ok(Rendered { text: printed, warnings })
}

/// The namespace when none is given: `default`, unless the template for it holds the
/// namespace placeholder: then the error says so, and how to give one.
pub fn unknown_namespace(config: &store::Config) -> Result<&'static str, String> {
    let template = match config.namespace_templates.get("default") {
        Some(Ok(own)) => own,
        _ => &config.template,
    };
    match template.needs_namespace() {
        Some(path) => Err(format!(
            "the pod's namespace is not known, and the template expands {} ({path}): give it with -n NS",
            crate::merge::placeholder::NAMESPACE
        )),
        None => Ok("default"),
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn read_input(path: &Path) -> crate::Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|error| Error::Read { path: path.to_owned(), error })?;
        return Ok((text, "<stdin>".to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|error| Error::Read { path: path.to_owned(), error })?;
    Ok((text, path.display().to_string()))
}
