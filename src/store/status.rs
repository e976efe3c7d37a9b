//! Cluster mode: each PodOverride's `status` says whether podtailor loads it (`kubectl get
//! podoverrides` shows it in the Ready column).
//!
//! - What to write is decided from the watched object alone: its generation, the status it
//!   carries and what [`super::cluster::Follower`] made of it. Nothing is written when the
//!   object already says so, so the watch event of our own write ends there (no write loop),
//!   and a second replica, which sees the same object, writes nothing either.
//! - The write is a server-side apply of the status subresource under one field manager
//!   ([`FIELD_MANAGER`]), so replicas own the same fields and never conflict; `lastTransitionTime`
//!   is kept from the object unless `Ready` flips.
//! - A separate task writes ([`write`]): admission and the watch never wait on it. A failed
//!   write is logged and retried after a growing delay, never fatal.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Loaded;
use crate::crd::PodOverrideStatus;

/// The field manager of every status podtailor applies.
pub const FIELD_MANAGER: &str = "podtailor";
/// The condition's type.
pub const READY: &str = "Ready";
/// The condition's reason when the override loads.
pub const LOADED: &str = "Loaded";
/// The condition's reason when it does not.
pub const INVALID: &str = "Invalid";

/// What an object's `Ready` condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Outcome {
    /// What loading the object gave: `Err` holds the reason it is refused.
    pub fn of(result: &Result<Loaded, String>) -> Outcome {
        match result {
            Ok(_) => Outcome { ready: true, reason: LOADED, message: "pods that name it are tailored with it".into() },
            Err(why) => {
                Outcome { ready: false, reason: INVALID, message: format!("pods that name it are denied: {why}") }
            }
        }
    }

    fn status(&self) -> &'static str {
        if self.ready { "True" } else { "False" }
    }
}

/// The status `object` should carry for `outcome`, or `None` when it carries it already.
/// `now` is the transition time if `Ready` flips (or is new).
pub fn desired(object: &DynamicObject, outcome: &Outcome, now: Time) -> Option<PodOverrideStatus> {
    let generation = object.metadata.generation;
    // a status we cannot read is one to replace
    let current: PodOverrideStatus =
        object.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default();
    let ready = current.conditions.iter().find(|c| c.type_ == READY);
    let same = |c: &&Condition| {
        c.status == outcome.status()
            && c.reason == outcome.reason
            && c.message == outcome.message
            && c.observed_generation == generation
    };
    if current.observed_generation == generation && ready.is_some_and(|c| same(&c)) {
        return None;
    }
    let last_transition_time = match ready {
        Some(c) if c.status == outcome.status() => c.last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: READY.into(),
        status: outcome.status().into(),
        reason: outcome.reason.into(),
        message: outcome.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    Some(PodOverrideStatus { observed_generation: generation, conditions: vec![condition] })
}

/// The time now, for [`desired`].
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// One status to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub namespace: String,
    pub name: String,
    pub status: PodOverrideStatus,
}

/// The server-side apply body of `write`: the object's identity and its status, nothing else.
fn body(write: &Write) -> serde_json::Value {
    let resource = super::cluster::resource();
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": write.name, "namespace": write.namespace},
        "status": write.status,
    })
}

/// The delay before the next try after `failures` failed writes: 1 s, doubled, at most 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Applies the statuses received on `writes` until `stop`, one object at a time; a newer status
/// for an object replaces one not yet written. After a failed write every status waits (the
/// cause is most often the API server or the RBAC, not the object), 1 s and doubling up to a
/// minute, then the writes go on; an object gone (404) is forgotten.
pub async fn write(client: kube::Client, mut writes: mpsc::UnboundedReceiver<Write>, stop: CancellationToken) {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let resource = super::cluster::resource();
    let mut pending: BTreeMap<(String, String), Write> = BTreeMap::new();
    let (mut failures, mut resume, mut open) = (0u32, Instant::now(), true);
    loop {
        if pending.is_empty() || Instant::now() < resume {
            if !open && pending.is_empty() {
                // the watch ended and everything is written
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                received = writes.recv(), if open => match received {
                    Some(write) => {
                        pending.insert((write.namespace.clone(), write.name.clone()), write);
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep_until(resume), if !pending.is_empty() => {}
            }
            continue;
        }
        // the newest status of each object
        while let Ok(write) = writes.try_recv() {
            pending.insert((write.namespace.clone(), write.name.clone()), write);
        }
        let Some(((namespace, name), write)) = pending.pop_first() else { continue };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
        let patch = Patch::Apply(body(&write));
        let applied = tokio::select! {
            _ = stop.cancelled() => return,
            applied = api.patch_status(&name, &params, &patch) => applied,
        };
        match applied {
            Ok(_) => {
                failures = 0;
                let ready = write.status.conditions.first().map(|c| c.status.clone()).unwrap_or_default();
                info!(%namespace, %name, ready, "PodOverride status written");
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                failures = 0;
                debug!(%namespace, %name, "PodOverride gone before its status was written");
            }
            Err(e) => {
                failures += 1;
                let delay = backoff(failures);
                resume = Instant::now() + delay;
                warn!(%namespace, %name, error = %e, waiting = pending.len() + 1, retry_in_seconds = delay.as_secs(),
                      "writing a PodOverride status failed; the statuses wait, admission is not affected");
                // unless a newer status arrived meanwhile
                pending.entry((namespace, name)).or_insert(write);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn object(generation: i64, status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
            "metadata": {"name": "o", "namespace": "a", "generation": generation, "resourceVersion": "7"},
            "spec": {}, "status": status,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(text: &str) -> Time {
        Time(text.parse().unwrap_or_else(|e| panic!("{e}")))
    }

    fn loaded() -> Outcome {
        Outcome { ready: true, reason: LOADED, message: "pods that name it are tailored with it".into() }
    }

    fn invalid(why: &str) -> Outcome {
        Outcome::of(&Err(why.into()))
    }

    /// The status of `desired`, as JSON.
    fn wanted(object: &DynamicObject, outcome: &Outcome) -> Option<Value> {
        desired(object, outcome, at("2026-12-03T10:00:00Z")).map(|s| serde_json::to_value(s).unwrap_or_default())
    }

    #[test]
    fn a_new_object_gets_ready_with_its_generation() {
        let status = wanted(&object(1, Value::Null), &loaded());
        assert_eq!(
            status,
            Some(json!({"observedGeneration": 1, "conditions": [{
                "lastTransitionTime": "2026-12-03T10:00:00Z", "message": "pods that name it are tailored with it",
                "observedGeneration": 1, "reason": "Loaded", "status": "True", "type": "Ready"}]}))
        );
    }

    #[test]
    fn a_refused_object_is_not_ready_with_the_reason() {
        let outcome = invalid("spec.secrets[0].deployTarget: \"etc/x\" is not an absolute path");
        let status = wanted(&object(3, json!({})), &outcome).unwrap_or_default();
        let condition = &status["conditions"][0];
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "Invalid");
        assert_eq!(
            condition["message"],
            "pods that name it are denied: spec.secrets[0].deployTarget: \"etc/x\" is not an absolute path"
        );
        assert_eq!(condition["observedGeneration"], 3);
        assert_eq!(status["observedGeneration"], 3);
    }

    #[test]
    fn nothing_is_written_when_the_object_says_so_already() {
        let first = wanted(&object(2, Value::Null), &loaded()).unwrap_or_default();
        // the watch brings our own write back (or the other replica's): nothing more to write
        assert_eq!(wanted(&object(2, first.clone()), &loaded()), None);
        // a new generation is written again, keeping the transition time: Ready did not flip
        let again = wanted(&object(3, first), &loaded()).unwrap_or_default();
        assert_eq!(again["observedGeneration"], 3);
        assert_eq!(again["conditions"][0]["lastTransitionTime"], "2026-12-03T10:00:00Z");
    }

    #[test]
    fn the_transition_time_changes_only_when_ready_flips() {
        let old = json!({"observedGeneration": 1, "conditions": [{
            "type": "Ready", "status": "True", "reason": "Loaded", "message": "pods that name it are tailored with it",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let broken = wanted(&object(2, old.clone()), &invalid("bad")).unwrap_or_default();
        assert_eq!(broken["conditions"][0]["lastTransitionTime"], "2026-12-03T10:00:00Z");
        assert_eq!(broken["conditions"][0]["status"], "False");
        // another reason, still False: the time stays
        let other = wanted(&object(3, broken.clone()), &invalid("worse")).unwrap_or_default();
        assert_eq!(other["conditions"][0]["message"], "pods that name it are denied: worse");
        let kept = desired(&object(3, broken), &invalid("worse"), at("2027-01-01T00:00:00Z"))
            .and_then(|s| s.conditions.first().map(|c| c.last_transition_time.clone()));
        assert_eq!(kept, Some(at("2026-12-03T10:00:00Z")));
        // and True again: a new transition
        let fixed = desired(&object(4, old), &loaded(), at("2027-01-01T00:00:00Z"));
        assert_eq!(fixed.and_then(|s| s.conditions.first().map(|c| c.status.clone())).as_deref(), Some("True"));
    }

    #[test]
    fn an_unreadable_status_is_replaced_and_other_conditions_are_left_to_their_owners() {
        let odd = wanted(&object(1, json!({"conditions": "nope"})), &loaded()).unwrap_or_default();
        assert_eq!(odd["conditions"][0]["type"], "Ready");
        let other = json!({"observedGeneration": 1, "conditions": [{
            "type": "Other", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let status = wanted(&object(1, other), &loaded()).unwrap_or_default();
        assert_eq!(status["conditions"].as_array().map(Vec::len), Some(1));
        assert_eq!(status["conditions"][0]["type"], "Ready");
    }

    #[test]
    fn the_apply_body_names_the_object_and_carries_only_its_status() {
        let status = desired(&object(1, Value::Null), &loaded(), at("2026-12-03T10:00:00Z")).unwrap_or_default();
        let body = body(&Write { namespace: "a".into(), name: "o".into(), status });
        assert_eq!(body["apiVersion"], "podtailor.dev/v1alpha1");
        assert_eq!(body["kind"], "PodOverride");
        assert_eq!(body["metadata"], json!({"name": "o", "namespace": "a"}));
        let keys: Vec<&String> = body.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "status"]);
    }

    type Handle = tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>;

    /// The next request the writer makes: its path and the status it applies, and the responder.
    async fn next(
        handle: &mut Handle,
    ) -> (String, Value, tower_test::mock::SendResponse<http::Response<kube::client::Body>>) {
        use http_body_util::BodyExt;
        let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no write within 10 s"))
            .unwrap_or_else(|| panic!("the writer went away"));
        assert_eq!(request.method(), http::Method::PATCH);
        let path = request.uri().path().to_owned();
        let bytes = request.into_body().collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        (path, body["status"].clone(), send)
    }

    fn answer(code: u16, body: Value) -> http::Response<kube::client::Body> {
        http::Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(kube::client::Body::from(body.to_string().into_bytes()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn failure(code: u16) -> http::Response<kube::client::Body> {
        answer(code, json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "message": "no"}))
    }

    fn write_of(name: &str, outcome: &Outcome) -> Write {
        let status = desired(&object(1, Value::Null), outcome, at("2026-12-03T10:00:00Z")).unwrap_or_default();
        Write { namespace: "a".into(), name: name.into(), status }
    }

    #[tokio::test]
    async fn a_failed_write_waits_and_is_tried_again_with_the_newest_status_and_a_gone_object_is_forgotten() {
        let (service, mut handle) = tower_test::mock::pair();
        let client = kube::Client::new(service, "default");
        let (writes, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(write(client, received, CancellationToken::new()));
        let sent = |w: Write| writes.send(w).unwrap_or_else(|e| panic!("{e}"));
        sent(write_of("o", &loaded()));
        let (path, status, send) = next(&mut handle).await;
        assert_eq!(path, "/apis/podtailor.dev/v1alpha1/namespaces/a/podoverrides/o/status");
        assert_eq!(status["conditions"][0]["status"], "True");
        send.send_response(failure(500));
        // meanwhile: a newer status of o, and one of an object about to be gone
        let failed = Instant::now();
        sent(write_of("o", &invalid("bad")));
        sent(write_of("g", &loaded()));
        let (path, _, send) = next(&mut handle).await;
        assert!(failed.elapsed() >= Duration::from_millis(900), "tried again after {:?}", failed.elapsed());
        assert!(path.ends_with("/podoverrides/g/status"), "{path}");
        send.send_response(failure(404));
        let (path, status, send) = next(&mut handle).await;
        assert!(path.ends_with("/podoverrides/o/status"), "{path}");
        assert_eq!(status["conditions"][0]["status"], "False", "the newest status of o");
        let object = json!({"apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
                            "metadata": {"name": "o", "namespace": "a", "resourceVersion": "2"}, "status": status});
        send.send_response(answer(200, object));
        // everything written (g forgotten): the writer ends with the watch
        drop(writes);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap_or_else(|_| panic!("the writer did not end"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
