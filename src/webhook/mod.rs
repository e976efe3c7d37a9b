//! The webhook's HTTP side: `POST /mutate` on the TLS port, health and metrics on the admin
//! port. The handler only turns bytes into a review and a review's answer back into bytes;
//! [`admission::review`] decides.

pub mod admission;
mod drain;
mod json;
pub mod metrics;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::FutureExt;
use tracing::{Instrument, debug, error, field, info, info_span, warn};

use crate::merge::Template;
use crate::store::{Config, NamespaceTemplates, Overrides, ReloadResult, Serving, Source};
use admission::{Facts, Outcome, ReviewIn, ReviewOut};
use metrics::Metrics;

/// The largest AdmissionReview accepted. The API server's own limit for an object is 3 MiB.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What the handlers share: the configuration being served, readiness and metrics.
pub struct AppState {
    config: ArcSwap<Config>,
    ready: AtomicBool,
    pub metrics: Metrics,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// A state for `config`: ready unless its overrides are not listed yet (cluster mode,
    /// until [`AppState::set_ready`] after the first full list).
    pub fn new(config: Config) -> Shared {
        let metrics = Metrics::default();
        metrics.overrides_loaded(config.overrides.len(), config.overrides.invalid_len());
        let ready = !config.overrides.is_unlisted();
        Arc::new(AppState { config: ArcSwap::from_pointee(config), ready: AtomicBool::new(ready), metrics })
    }

    /// Serves `config` from now on.
    pub fn replace(&self, config: Config) {
        self.metrics.overrides_loaded(config.overrides.len(), config.overrides.invalid_len());
        self.config.store(Arc::new(config));
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Ready once the PodOverrides are listed and, when namespaces' PodTemplates are followed,
    /// those too.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.config.load().namespace_templates.is_unlisted()
    }
}

impl Serving for AppState {
    fn replace_template(&self, template: Template) {
        let current = self.config();
        self.replace(Config { template: Arc::new(template), ..Config::clone(&current) });
    }

    fn replace_overrides(&self, overrides: Overrides) {
        let current = self.config();
        self.replace(Config { overrides, ..Config::clone(&current) });
    }

    fn replace_namespace_templates(&self, namespace_templates: NamespaceTemplates) {
        let current = self.config();
        self.replace(Config { namespace_templates, ..Config::clone(&current) });
    }

    fn listed(&self) {
        self.set_ready(true);
    }

    fn reloaded(&self, source: Source, result: ReloadResult) {
        self.metrics.reload(source, result);
    }
}

/// The TLS port's routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(axum::middleware::from_fn(drain::unread_bodies))
        .with_state(state)
}

/// The admin port's routes (plain HTTP, for probes and Prometheus).
pub fn admin_router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Shared>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let config = state.config();
        let what = match (config.overrides.is_unlisted(), config.namespace_templates.is_unlisted()) {
            (true, true) => "the PodOverrides and the namespaces' PodTemplates have",
            (false, true) => "the namespaces' PodTemplates have",
            _ => "the PodOverrides have",
        };
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {what} not been listed yet\n")).into_response()
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The body's length as its Content-Length header gives it.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Which webhook a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Mutate,
    Validate,
}

async fn mutate(State(state): State<Shared>, request: Request) -> Response {
    handle(state, request, Hook::Mutate).await
}

async fn validate(State(state): State<Shared>, request: Request) -> Response {
    handle(state, request, Hook::Validate).await
}

async fn handle(state: Shared, request: Request, hook: Hook) -> Response {
    let span = info_span!(
        "admission",
        webhook = ?hook,
        uid = field::Empty,
        namespace = field::Empty,
        pod = field::Empty,
        operation = field::Empty,
        dry_run = field::Empty,
        outcome = field::Empty,
        duration_us = field::Empty,
    );
    async move {
        let start = Instant::now();
        let mut facts = Facts::default();
        // Whatever panics while the review is read, decided or written, the API server gets an
        // answer and the connection goes on serving: the uid is in `facts` once the review is
        // read. The catch is a call at each poll of this future (two or three a review).
        let answered = AssertUnwindSafe(async {
            let (status, outcome, review) = answer(&state, request, hook, &mut facts).await;
            let body = review.to_json();
            (status, outcome, review, body)
        })
        .catch_unwind()
        .await;
        let (status, outcome, review, body) = answered.unwrap_or_else(|_| failed(&facts));
        let elapsed = start.elapsed();
        state.metrics.request(hook, outcome, elapsed.as_secs_f64());
        let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        record(&tracing::Span::current(), &facts, outcome, duration_us);
        let reason = review.response.status.as_ref().map_or("", |s| s.message.as_str());
        match outcome {
            Outcome::Invalid => warn!(reason = %reason, "admission review rejected"),
            Outcome::Denied => info!(reason = %reason, "denied"),
            Outcome::Failed => error!(reason = %reason, "admission review failed"),
            _ => info!(warnings = review.response.warnings.len(), "admission review answered"),
        }
        reply(status, body)
    }
    .instrument(span)
    .await
}

/// The answer when answering panicked: not allowed, with the uid if the review was read. It is
/// written by serde_json, not by [`ReviewOut::to_json`], which may be what panicked. The
/// message says what happened, not the panic's: that is for the log (the panic hook of
/// `serve` logs it).
fn failed(facts: &Facts) -> (StatusCode, Outcome, ReviewOut, Vec<u8>) {
    let review = admission::invalid(
        facts.uid.clone(),
        500,
        "internal error while answering this review (a bug in podtailor; its log has the details under this review's uid)",
    );
    let body = serde_json::to_vec(&review).unwrap_or_default();
    // 200: the API server reads the answer (and its message) only from a 200
    (StatusCode::OK, Outcome::Failed, review, body)
}

/// Records what is known about a review on its span, all fields at once: a subscriber may
/// re-format the span's fields at each record (tracing-subscriber's JSON format parses and
/// writes them again), so seven records cost several times one.
fn record(span: &tracing::Span, facts: &Facts, outcome: Outcome, duration_us: u64) {
    let Some(fields) = span.metadata().map(|m| m.fields()) else {
        return; // disabled: nothing to record
    };
    let named = |name: &str| fields.field(name);
    let (Some(uid), Some(namespace), Some(pod), Some(operation), Some(dry_run), Some(outcome_f), Some(duration)) = (
        named("uid"),
        named("namespace"),
        named("pod"),
        named("operation"),
        named("dry_run"),
        named("outcome"),
        named("duration_us"),
    ) else {
        return;
    };
    let values = [
        (&uid, Some(&facts.uid.as_str() as &dyn field::Value)),
        (&namespace, Some(&facts.namespace.as_str() as &dyn field::Value)),
        (&pod, Some(&facts.pod.as_str() as &dyn field::Value)),
        (&operation, Some(&facts.operation.as_str() as &dyn field::Value)),
        (&dry_run, Some(&facts.dry_run as &dyn field::Value)),
        (&outcome_f, Some(&outcome.as_str() as &dyn field::Value)),
        (&duration, Some(&duration_us as &dyn field::Value)),
    ];
    span.record_all(&fields.value_set(&values));
}

async fn answer(state: &AppState, request: Request, hook: Hook, facts: &mut Facts) -> (StatusCode, Outcome, ReviewOut) {
    let bad = |status: StatusCode, uid: String, message: &str| {
        (status, Outcome::Invalid, admission::invalid(uid, status.as_u16(), message))
    };
    if !is_json(request.headers()) {
        return bad(StatusCode::UNSUPPORTED_MEDIA_TYPE, String::new(), "the content type must be application/json");
    }
    if declared_length(request.headers()).is_some_and(|n| n > MAX_BODY) {
        return bad(StatusCode::PAYLOAD_TOO_LARGE, String::new(), "the body is over 4 MiB");
    }
    let body: Bytes = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
            return if too_large {
                bad(StatusCode::PAYLOAD_TOO_LARGE, String::new(), "the body is over 4 MiB")
            } else {
                bad(StatusCode::BAD_REQUEST, String::new(), &format!("the body could not be read: {e}"))
            };
        }
    };
    debug!(body = %String::from_utf8_lossy(&body), "request body");
    answer_body(&state.config(), &body, hook, facts)
}

/// The answer to the body of a request to `hook`, with the HTTP status: what the handlers
/// answer once the body is read (and what the fuzz targets feed bytes to).
pub fn answer_body(config: &Config, body: &[u8], hook: Hook, facts: &mut Facts) -> (StatusCode, Outcome, ReviewOut) {
    let review: ReviewIn = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let uid = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.pointer("/request/uid").and_then(|u| u.as_str()).map(str::to_owned))
                .unwrap_or_default();
            facts.uid.clone_from(&uid);
            let message = format!("the body is not an AdmissionReview: {e}");
            return (StatusCode::BAD_REQUEST, Outcome::Invalid, admission::invalid(uid, 400, &message));
        }
    };
    let (outcome, review) = match hook {
        Hook::Mutate => admission::review(config, review, facts),
        Hook::Validate => admission::validate(review, facts),
    };
    let status = if outcome == Outcome::Invalid { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    (status, outcome, review)
}
