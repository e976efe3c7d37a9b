//! The decision for one pod: not opted in, mutated, or denied with a message for people.

use serde_json::Value;

use crate::merge::{self, Outcome, Want};
use crate::store::Config;

/// What happens to a pod.
#[derive(Debug)]
pub enum Decision {
    /// No `podtailor.dev/override` annotation: the pod is left alone.
    NotOptedIn,
    /// The pod opted in; the patch may be empty (already as desired).
    Mutated { outcome: Outcome, overrides: Vec<String> },
}

/// Why a pod that opted in cannot be admitted: a message that names the override, the
/// namespace and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    pub message: String,
}

/// With the `fault-injection` feature (test builds only: the package's own dev-dependency turns
/// it on, so `cargo build` and the image never have it), a pod that names this override makes
/// [`decide`] panic: how the tests reach the code that catches a panic.
#[cfg(feature = "fault-injection")]
pub const PANIC_OVERRIDE: &str = "podtailor-test-panic";

/// Decides for `pod` in `namespace` with the template and overrides of `config`; `want` says
/// whether the outcome carries the desired pod or only the patch.
pub fn decide(config: &Config, namespace: &str, pod: &Value, want: Want) -> Result<Decision, Denial> {
    let deny = |message: String| Denial { message: format!("podtailor: {message}") };
    let Some(names) = merge::requested_overrides(pod) else {
        return Ok(Decision::NotOptedIn);
    };
    let names = names.map_err(|why| deny(format!("namespace {namespace:?}: {why}")))?;
    #[cfg(feature = "fault-injection")]
    if names.iter().any(|n| n == PANIC_OVERRIDE) {
        panic!("fault injection: the pod names {PANIC_OVERRIDE:?}");
    }
    // the namespace's own PodTemplate, else the cluster-wide template; expanded for the namespace
    let template = config.template_for(namespace).map_err(deny)?;
    let mut overrides = Vec::with_capacity(names.len());
    for name in &names {
        match config.overrides.get(namespace, name) {
            Some(o) => overrides.push(o.as_ref()),
            None => match config.overrides.problem(namespace, name) {
                Some(why) => {
                    return Err(deny(format!("PodOverride {name:?} in namespace {namespace:?} is invalid: {why}")));
                }
                None if config.overrides.is_unlisted() => {
                    return Err(deny(format!(
                        "PodOverride {name:?} in namespace {namespace:?}: the PodOverrides have not been listed from the cluster yet (the webhook is starting); try again"
                    )));
                }
                None => return Err(deny(config.overrides.not_found(namespace, name))),
            },
        }
    }
    let outcome = merge::apply(&template, pod, &overrides, want).map_err(|e| match e.r#override {
        Some(name) => deny(format!("PodOverride {name:?} in namespace {namespace:?} cannot apply: {}", e.reason)),
        None => deny(format!("namespace {namespace:?}: {}", e.reason)),
    })?;
    Ok(Decision::Mutated { outcome, overrides: names })
}
