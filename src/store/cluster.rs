//! Cluster mode: the PodOverride objects of every namespace, followed by a kube-runtime
//! watcher into a reflector store, and compiled into the [`Overrides`] a request reads.
//!
//! - Nothing is served from the cluster before the first full list (`InitDone`): until then
//!   the server is not ready.
//! - A relist (after a watch error, an expired resource version or a restart) is buffered by
//!   the reflector and swapped in whole when complete; until then the last known set keeps
//!   serving. Objects gone during the outage disappear with the swap.
//! - Objects are watched untyped and checked one by one, with the same checks as files: one
//!   bad object never fails the list. A pod that names it is denied with the reason.
//! - An override applies only to pods of its own namespace.
//! - What each object made is written back to its `status` (the `Ready` condition) by a task
//!   of its own ([`super::status`]); admission never waits on it.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::files::check_override;
use super::status::{self, Outcome, Write};
use super::{Loaded, Overrides, ReloadResult, Serving, Source};
use crate::crd::PodOverride;

/// The PodOverride resource, as the untyped API sees it.
pub fn resource() -> ApiResource {
    ApiResource::erase::<PodOverride>(&())
}

/// One object as compiled, kept while its version (see [`version`]) stays the same.
struct Compiled {
    version: Option<String>,
    result: Result<Loaded, String>,
}

/// What identifies the content an object is compiled from: its uid and generation (which a
/// status write leaves alone), else its resource version.
fn version(object: &DynamicObject) -> Option<String> {
    match (&object.metadata.uid, object.metadata.generation) {
        (Some(uid), Some(generation)) => Some(format!("{uid}/{generation}")),
        _ => object.metadata.resource_version.clone(),
    }
}

/// Turns watcher events into the overrides to serve.
pub struct Follower {
    writer: Writer<DynamicObject>,
    reader: Store<DynamicObject>,
    compiled: HashMap<(String, String), Compiled>,
    /// The statuses handed to the writer, with the resource version of the object they were
    /// decided for: not handed again until the object changes (our write's echo, say).
    asked: HashMap<(String, String), (Option<String>, Outcome)>,
    synced: bool,
}

impl Default for Follower {
    fn default() -> Self {
        let writer = Writer::new(resource());
        let reader = writer.as_reader();
        Follower { writer, reader, compiled: HashMap::new(), asked: HashMap::new(), synced: false }
    }
}

impl Follower {
    /// Whether a full list has been seen.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Applies one event. Returns the overrides to serve from now on when the set that is
    /// served changes: at the end of each full list, and on every change after the first one.
    /// During a (re)list it returns nothing, so the last known set keeps serving.
    pub fn apply(&mut self, event: &Event<DynamicObject>) -> Option<Overrides> {
        self.writer.apply_watcher_event(event);
        match event {
            Event::Init | Event::InitApply(_) => None,
            Event::InitDone => {
                self.synced = true;
                Some(self.snapshot())
            }
            Event::Apply(_) | Event::Delete(_) => self.synced.then(|| self.snapshot()),
        }
    }

    /// The store's objects, compiled; an object whose resource version did not change is not
    /// compiled again.
    fn snapshot(&mut self) -> Overrides {
        let mut previous = std::mem::take(&mut self.compiled);
        let mut overrides = Overrides::default();
        for object in self.reader.state() {
            let namespace = object.metadata.namespace.clone().unwrap_or_default();
            let name = object.metadata.name.clone().unwrap_or_default();
            let key = (namespace, name);
            let version = version(&object);
            let compiled = match previous.remove(&key) {
                Some(c) if version.is_some() && c.version == version => c,
                _ => {
                    let result = load(&object);
                    if let Err(why) = &result {
                        warn!(namespace = %key.0, name = %key.1, reason = %why, "PodOverride does not load; pods naming it are denied");
                    }
                    Compiled { version, result }
                }
            };
            match &compiled.result {
                Ok(loaded) => {
                    // the store holds one object per namespace and name
                    let _unique = overrides.insert(loaded.clone());
                }
                Err(why) => overrides.insert_invalid(Some(key.0.clone()), key.1.clone(), why.clone()),
            }
            self.compiled.insert(key, compiled);
        }
        overrides
    }

    /// The statuses to write now (after a full list or a change): one for each object whose
    /// status does not say what it made of it, unless asked already for this very version of
    /// the object. `now` is the transition time of a `Ready` that flips.
    pub fn status_writes(&mut self, now: &Time) -> Vec<Write> {
        if !self.synced {
            return Vec::new();
        }
        // what is not asked again is forgotten: written, or gone
        let asked = std::mem::take(&mut self.asked);
        let mut writes = Vec::new();
        for object in self.reader.state() {
            let key = (
                object.metadata.namespace.clone().unwrap_or_default(),
                object.metadata.name.clone().unwrap_or_default(),
            );
            let Some(compiled) = self.compiled.get(&key) else { continue };
            let outcome = Outcome::of(&compiled.result);
            let Some(wanted) = status::desired(&object, &outcome, now.clone()) else { continue };
            let seen = (object.metadata.resource_version.clone(), outcome);
            if asked.get(&key) != Some(&seen) {
                writes.push(Write { namespace: key.0.clone(), name: key.1.clone(), status: wanted });
            }
            self.asked.insert(key, seen);
        }
        writes
    }
}

/// One object, checked as a file's PodOverride is. The error is the reason alone (the caller
/// names the object).
fn load(object: &DynamicObject) -> Result<Loaded, String> {
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let mut doc = serde_json::to_value(object).map_err(|e| format!("cannot read the object: {e}"))?;
    if let Value::Object(fields) = &mut doc {
        // list items do not always carry their type
        let resource = resource();
        fields.insert("apiVersion".into(), Value::String(resource.api_version));
        fields.insert("kind".into(), Value::String(resource.kind));
    }
    check_override(doc, &format!("the cluster ({namespace}/{name})")).map_err(|r| r.reason)
}

/// Every PodOverride of the cluster, listed once (`podtailor policy --cluster`): those that
/// load, and `namespace/name: reason` for each that does not.
pub async fn list_once(client: kube::Client) -> Result<(Vec<Loaded>, Vec<String>), String> {
    let api = Api::<DynamicObject>::all_with(client, &resource());
    let list = api.list(&kube::api::ListParams::default()).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => {
            "the API server does not serve podoverrides.podtailor.dev: is the CRD installed (podtailor crd | kubectl apply -f -)?".to_owned()
        }
        e => format!("cannot list the PodOverrides: {e}"),
    })?;
    let (mut loaded, mut bad) = (Vec::new(), Vec::new());
    for object in &list.items {
        match load(object) {
            Ok(l) => loaded.push(l),
            Err(why) => bad.push(format!(
                "{}/{}: {why}",
                object.metadata.namespace.as_deref().unwrap_or_default(),
                object.metadata.name.as_deref().unwrap_or_default()
            )),
        }
    }
    Ok((loaded, bad))
}

/// Follows the PodOverrides of every namespace into `state` until `stop`. Marks the state
/// ready after the first full list. On API errors the watcher backs off and relists, and the
/// last known set keeps serving meanwhile. Each object's status is written as it goes, through
/// the same client, by a task of its own.
pub async fn follow(state: Arc<dyn Serving>, client: kube::Client, stop: CancellationToken) {
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource());
    let (statuses, writes) = mpsc::unbounded_channel();
    tokio::join!(
        follow_api(state, api, watcher::Config::default(), Some(statuses), stop.clone()),
        status::write(client, writes, stop),
    );
}

/// [`follow`] with the API and watcher settings given, and where to send the statuses to
/// write, if anywhere.
pub async fn follow_api(
    state: Arc<dyn Serving>,
    api: Api<DynamicObject>,
    config: watcher::Config,
    statuses: Option<mpsc::UnboundedSender<Write>>,
    stop: CancellationToken,
) {
    let mut events = pin!(watcher::watcher(api, config).default_backoff());
    let mut follower = Follower::default();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                warn!(error = %e, "watching PodOverrides failed; the last known set keeps serving while the watch backs off and relists");
                state.reloaded(Source::cluster, ReloadResult::failure);
                continue;
            }
            None => {
                // the backoff keeps the stream alive; it ends only if the watcher gives up
                warn!("the PodOverride watch ended; the last known set keeps serving");
                return;
            }
        };
        describe(&event);
        let listed = matches!(event, Event::InitDone);
        if let Some(overrides) = follower.apply(&event) {
            let (loaded, invalid) = (overrides.len(), overrides.invalid_len());
            state.replace_overrides(overrides);
            if listed {
                info!(loaded, invalid, "PodOverrides listed from the cluster");
                state.reloaded(Source::cluster, ReloadResult::success);
                state.listed();
            }
            if let Some(statuses) = &statuses {
                for write in follower.status_writes(&status::now()) {
                    // fails only once the writer has ended, at stop
                    let _ = statuses.send(write);
                }
            }
        }
    }
}

fn describe(event: &Event<DynamicObject>) {
    let at = |o: &DynamicObject| {
        format!(
            "{}/{}",
            o.metadata.namespace.as_deref().unwrap_or_default(),
            o.metadata.name.as_deref().unwrap_or_default()
        )
    };
    match event {
        Event::Apply(o) => info!(podoverride = %at(o), "PodOverride applied"),
        Event::Delete(o) => info!(podoverride = %at(o), "PodOverride deleted"),
        Event::Init => debug!("listing PodOverrides"),
        Event::InitApply(o) => debug!(podoverride = %at(o), "PodOverride listed"),
        Event::InitDone => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(namespace: &str, name: &str, version: &str, spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": version, "uid": format!("{namespace}-{name}")},
            "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn cpu(limit: &str) -> Value {
        json!({"resources": {"limits": {"cpu": limit}}})
    }

    fn limit_of(overrides: &Overrides, namespace: &str, name: &str) -> Option<String> {
        let o = overrides.get(namespace, name)?;
        let limits = o.spec().resources.as_ref()?.limits.as_ref()?;
        Some(limits.get("cpu")?.0.clone())
    }

    /// What `event` makes the follower serve; that it serves nothing is a failure here (an
    /// empty set is not what nothing means: the last set keeps serving).
    fn served(f: &mut Follower, event: &Event<DynamicObject>) -> Overrides {
        f.apply(event).unwrap_or_else(|| panic!("{event:?} serves nothing"))
    }

    #[test]
    fn nothing_is_served_before_the_first_full_list() {
        let mut f = Follower::default();
        assert!(f.apply(&Event::Init).is_none());
        assert!(f.apply(&Event::InitApply(object("a", "o", "1", cpu("1")))).is_none());
        assert!(!f.synced());
        let listed = served(&mut f, &Event::InitDone);
        assert!(f.synced());
        assert_eq!(limit_of(&listed, "a", "o").as_deref(), Some("1"));
    }

    #[test]
    fn follows_add_modify_and_delete() {
        let mut f = Follower::default();
        f.apply(&Event::Init);
        f.apply(&Event::InitDone);
        let added = served(&mut f, &Event::Apply(object("a", "o", "2", cpu("1"))));
        assert_eq!(limit_of(&added, "a", "o").as_deref(), Some("1"));
        let modified = served(&mut f, &Event::Apply(object("a", "o", "3", cpu("2"))));
        assert_eq!(limit_of(&modified, "a", "o").as_deref(), Some("2"));
        let _other = served(&mut f, &Event::Apply(object("b", "o", "4", cpu("3"))));
        let deleted = served(&mut f, &Event::Delete(object("a", "o", "5", cpu("2"))));
        assert!(deleted.get("a", "o").is_none());
        assert_eq!(limit_of(&deleted, "b", "o").as_deref(), Some("3"), "only the deleted object goes");
        assert_eq!(deleted.len(), 1);
        assert!(!deleted.is_empty());
        let none = served(&mut f, &Event::Delete(object("b", "o", "6", cpu("3"))));
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn a_relist_keeps_the_last_set_until_it_completes_and_then_drops_what_is_gone() {
        let mut f = Follower::default();
        f.apply(&Event::Init);
        f.apply(&Event::InitApply(object("a", "kept", "1", cpu("1"))));
        f.apply(&Event::InitApply(object("a", "gone", "1", cpu("1"))));
        let first = served(&mut f, &Event::InitDone);
        assert_eq!(first.len(), 2);
        // the watch broke; the relist sees one object changed and one deleted meanwhile
        assert!(f.apply(&Event::Init).is_none());
        assert!(f.apply(&Event::InitApply(object("a", "kept", "5", cpu("3")))).is_none());
        let relisted = served(&mut f, &Event::InitDone);
        assert_eq!(relisted.len(), 1);
        assert_eq!(limit_of(&relisted, "a", "kept").as_deref(), Some("3"));
        assert!(relisted.get("a", "gone").is_none());
    }

    #[test]
    fn an_override_is_visible_only_in_its_own_namespace() {
        let mut f = Follower::default();
        f.apply(&Event::Init);
        f.apply(&Event::InitApply(object("team-a", "o", "1", cpu("1"))));
        let listed = served(&mut f, &Event::InitDone);
        assert!(listed.get("team-a", "o").is_some());
        assert!(listed.get("team-b", "o").is_none());
        assert!(listed.problem("team-b", "o").is_none());
    }

    #[test]
    fn a_bad_object_is_reported_and_does_not_fail_the_list() {
        let mut f = Follower::default();
        f.apply(&Event::Init);
        f.apply(&Event::InitApply(object("a", "good", "1", cpu("1"))));
        f.apply(&Event::InitApply(object(
            "a",
            "bad",
            "1",
            json!({"secrets": [{"deployType": "volume", "deployTarget": "etc/x", "secret": "s"}]}),
        )));
        let listed = served(&mut f, &Event::InitDone);
        assert!(listed.get("a", "good").is_some());
        assert!(listed.get("a", "bad").is_none());
        let why = listed.problem("a", "bad").unwrap_or_default();
        assert!(why.starts_with("spec.secrets[0].deployTarget: "), "{why}");
        // fixed: it loads, and the problem is gone
        let fixed = served(&mut f, &Event::Apply(object("a", "bad", "2", cpu("2"))));
        assert_eq!(limit_of(&fixed, "a", "bad").as_deref(), Some("2"));
        assert!(fixed.problem("a", "bad").is_none());
        assert_eq!(fixed.invalid_len(), 0);
    }

    fn with_status(mut object: DynamicObject, write: &Write, version: &str) -> DynamicObject {
        object.metadata.resource_version = Some(version.into());
        object.data["status"] = serde_json::to_value(&write.status).unwrap_or_default();
        object
    }

    fn generation(mut object: DynamicObject, generation: i64) -> DynamicObject {
        object.metadata.generation = Some(generation);
        object
    }

    #[test]
    fn statuses_say_what_each_object_made_once_listed() {
        let now = status::now();
        let mut f = Follower::default();
        let good = generation(object("a", "good", "1", cpu("1")), 1);
        let bad = generation(object("a", "bad", "2", json!({"secrets": [{"deployType": "volume", "secret": "s"}]})), 4);
        f.apply(&Event::Init);
        f.apply(&Event::InitApply(good.clone()));
        f.apply(&Event::InitApply(bad.clone()));
        assert!(f.status_writes(&now).is_empty(), "nothing before the list is complete");
        f.apply(&Event::InitDone);
        let mut writes = f.status_writes(&now);
        writes.sort_by(|a, b| a.name.cmp(&b.name));
        let ready: Vec<(&str, &str, &str, Option<i64>)> = writes
            .iter()
            .flat_map(|w| {
                w.status
                    .conditions
                    .iter()
                    .map(move |c| (w.name.as_str(), c.status.as_str(), c.reason.as_str(), c.observed_generation))
            })
            .collect();
        assert_eq!(ready, [("bad", "False", "Invalid", Some(4)), ("good", "True", "Loaded", Some(1))]);
        let message = &writes[0].status.conditions[0].message;
        assert!(message.contains("spec.secrets[0].deployTarget"), "{message}");
        assert_eq!(writes[1].status.observed_generation, Some(1));

        // another object's event before the echo of those writes: nothing is asked twice
        let other = generation(object("b", "other", "3", cpu("1")), 1);
        f.apply(&Event::Apply(other.clone()));
        let more = f.status_writes(&now);
        assert_eq!(more.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["other"]);

        // the echoes: each object says what it made; nothing more to write, not compiled again
        let (before, _) = (f.compiled.get(&("a".into(), "good".into())).map(|c| c.version.clone()), ());
        f.apply(&Event::Apply(with_status(bad.clone(), &writes[0], "5")));
        f.apply(&Event::Apply(with_status(good.clone(), &writes[1], "6")));
        f.apply(&Event::Apply(with_status(other, &more[0], "7")));
        assert!(f.status_writes(&now).is_empty());
        assert!(f.asked.is_empty());
        assert_eq!(f.compiled.get(&("a".into(), "good".into())).map(|c| c.version.clone()), before);

        // fixed: a new generation, Ready again
        let fixed = with_status(generation(object("a", "bad", "8", cpu("2")), 5), &writes[0], "8");
        f.apply(&Event::Apply(fixed));
        let flipped = f.status_writes(&now);
        let condition = flipped.first().and_then(|w| w.status.conditions.first());
        assert_eq!(condition.map(|c| (c.status.as_str(), c.observed_generation)), Some(("True", Some(5))));
    }

    #[test]
    fn a_status_someone_else_changed_is_written_again() {
        let now = status::now();
        let mut f = Follower::default();
        let good = generation(object("a", "good", "1", cpu("1")), 1);
        f.apply(&Event::Init);
        f.apply(&Event::InitApply(good.clone()));
        f.apply(&Event::InitDone);
        let writes = f.status_writes(&now);
        assert_eq!(writes.len(), 1);
        let mut wrong = writes[0].clone();
        wrong.status.conditions[0].status = "False".into();
        f.apply(&Event::Apply(with_status(good, &wrong, "9")));
        let again = f.status_writes(&now);
        assert_eq!(again.first().and_then(|w| w.status.conditions.first()).map(|c| c.status.as_str()), Some("True"));
    }

    #[test]
    fn an_unchanged_version_is_not_compiled_again() {
        let mut f = Follower::default();
        f.apply(&Event::Init);
        f.apply(&Event::InitApply(object("a", "o", "1", cpu("1"))));
        let first = served(&mut f, &Event::InitDone);
        let other = served(&mut f, &Event::Apply(object("a", "p", "2", cpu("2"))));
        let (Some(before), Some(after)) = (first.get("a", "o"), other.get("a", "o")) else {
            panic!("o is served in both");
        };
        assert!(std::sync::Arc::ptr_eq(before, after));
    }
}
