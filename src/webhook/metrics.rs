//! Prometheus metrics, served on the admin port.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::admission::Outcome;
use crate::store::{ReloadResult, Source};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum OutcomeLabel {
    patched,
    unchanged,
    denied,
    invalid,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum WebhookLabel {
    mutate,
    validate,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    webhook: WebhookLabel,
    outcome: OutcomeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    source: Source,
    result: ReloadResult,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    reloads: Family<ReloadLabels, Counter>,
    overrides: Gauge,
    invalid: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("podtailor");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("admission_requests", "Admission reviews answered, by webhook and outcome", requests.clone());
        let duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, from the body read to the answer written",
            duration.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("reloads", "Reloads of the configuration and the certificate, by result", reloads.clone());
        let overrides = Gauge::default();
        registry.register("overrides_loaded", "PodOverrides in the configuration being served", overrides.clone());
        let invalid = Gauge::default();
        registry.register(
            "overrides_invalid",
            "PodOverride objects in the cluster that do not load (pods naming one are denied with the reason)",
            invalid.clone(),
        );
        // every series shows from the start, at zero: outcomes, and reloads of every source
        let all = [
            OutcomeLabel::patched,
            OutcomeLabel::unchanged,
            OutcomeLabel::denied,
            OutcomeLabel::invalid,
            OutcomeLabel::error,
        ];
        for outcome in all {
            let _zero = requests.get_or_create(&RequestLabels { webhook: WebhookLabel::mutate, outcome });
        }
        for outcome in [OutcomeLabel::unchanged, OutcomeLabel::denied, OutcomeLabel::invalid, OutcomeLabel::error] {
            let _zero = requests.get_or_create(&RequestLabels { webhook: WebhookLabel::validate, outcome });
        }
        for source in [Source::template, Source::overrides, Source::certificate, Source::cluster, Source::podtemplates]
        {
            for result in [ReloadResult::success, ReloadResult::failure] {
                let _zero = reloads.get_or_create(&ReloadLabels { source, result });
            }
        }
        Metrics { registry, requests, duration, reloads, overrides, invalid }
    }
}

impl Metrics {
    pub fn request(&self, hook: super::Hook, outcome: Outcome, seconds: f64) {
        let webhook = match hook {
            super::Hook::Mutate => WebhookLabel::mutate,
            super::Hook::Validate => WebhookLabel::validate,
        };
        let outcome = match outcome {
            Outcome::Patched => OutcomeLabel::patched,
            Outcome::Unchanged => OutcomeLabel::unchanged,
            Outcome::Denied => OutcomeLabel::denied,
            Outcome::Invalid => OutcomeLabel::invalid,
            Outcome::Failed => OutcomeLabel::error,
        };
        self.requests.get_or_create(&RequestLabels { webhook, outcome }).inc();
        self.duration.observe(seconds);
    }

    pub fn reload(&self, source: Source, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { source, result }).inc();
    }

    pub fn overrides_loaded(&self, loaded: usize, invalid: usize) {
        self.overrides.set(i64::try_from(loaded).unwrap_or(i64::MAX));
        self.invalid.set(i64::try_from(invalid).unwrap_or(i64::MAX));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
