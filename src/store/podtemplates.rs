//! Cluster mode: the namespaces' own templates, the PodTemplate objects (core/v1) of the chosen
//! name in every namespace, followed like the PodOverrides ([`super::cluster`]): a watcher
//! into a reflector store, nothing served before the first full list, a relist swapped in whole,
//! each object checked as a template file is.
//!
//! - The watch selects the name on the API server (`metadata.name=NAME`): no other PodTemplate
//!   is sent or cached.
//! - Objects are read untyped, so a pod field newer than this build's types passes through.
//! - An object that does not load is logged; pods of its namespace are denied with the reason
//!   (falling back to the cluster-wide template would lose the namespace's settings unseen).
//! - The ClusterRole grants get, list and watch on podtemplates, nothing more: no status is
//!   written back.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::files::pod_template;
use super::{NamespaceTemplates, ReloadResult, Serving, Source};
use crate::merge::Template;

/// The PodTemplate resource, as the untyped API sees it.
pub fn resource() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::PodTemplate>(&())
}

/// The watcher's settings: only the PodTemplates called `name`.
pub fn watch_config(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

/// One object as compiled, kept while its resource version stays the same.
struct Compiled {
    version: Option<String>,
    result: Result<Arc<Template>, String>,
}

/// Turns watcher events into the namespaces' templates to serve.
pub struct TemplateFollower {
    name: String,
    writer: Writer<DynamicObject>,
    reader: Store<DynamicObject>,
    compiled: HashMap<String, Compiled>,
    synced: bool,
}

impl TemplateFollower {
    /// A follower of the PodTemplates called `name`.
    pub fn new(name: impl Into<String>) -> TemplateFollower {
        let writer = Writer::new(resource());
        let reader = writer.as_reader();
        TemplateFollower { name: name.into(), writer, reader, compiled: HashMap::new(), synced: false }
    }

    /// Applies one event. Returns the templates to serve from now on: at the end of each full
    /// list, and on every change after the first one; during a (re)list, nothing.
    pub fn apply(&mut self, event: &Event<DynamicObject>) -> Option<NamespaceTemplates> {
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

    fn snapshot(&mut self) -> NamespaceTemplates {
        let mut previous = std::mem::take(&mut self.compiled);
        let mut templates = NamespaceTemplates::named(self.name.clone());
        for object in self.reader.state() {
            let namespace = object.metadata.namespace.clone().unwrap_or_default();
            // the field selector sends no other, but a test or a proxy might
            if object.metadata.name.as_deref() != Some(self.name.as_str()) {
                continue;
            }
            let version = object.metadata.resource_version.clone();
            let compiled = match previous.remove(&namespace) {
                Some(c) if version.is_some() && c.version == version => c,
                _ => {
                    let result = load(&object, &namespace, &self.name).map(Arc::new);
                    if let Err(why) = &result {
                        warn!(%namespace, name = %self.name, reason = %why, "PodTemplate does not load; pods of its namespace are denied");
                    }
                    Compiled { version, result }
                }
            };
            templates.insert_shared(namespace.clone(), compiled.result.clone());
            self.compiled.insert(namespace, compiled);
        }
        templates
    }
}

/// One object's template; the error is the reason alone (the caller names the object).
fn load(object: &DynamicObject, namespace: &str, name: &str) -> Result<Template, String> {
    pod_template(
        &serde_json::Value::Object(object.data.as_object().cloned().unwrap_or_default()),
        &format!("{namespace}/{name}"),
    )
}

/// Follows the PodTemplates called `name` in every namespace into `state` until `stop`. On API
/// errors the watcher backs off and relists, and the last known set keeps serving meanwhile.
pub async fn follow(state: Arc<dyn Serving>, client: kube::Client, name: String, stop: CancellationToken) {
    let api = Api::<DynamicObject>::all_with(client, &resource());
    follow_api(state, api, name, stop).await;
}

/// [`follow`] with the API given.
pub async fn follow_api(state: Arc<dyn Serving>, api: Api<DynamicObject>, name: String, stop: CancellationToken) {
    let mut events = pin!(watcher::watcher(api, watch_config(&name)).default_backoff());
    let mut follower = TemplateFollower::new(name);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                warn!(error = %e, "watching PodTemplates failed; the last known set keeps serving while the watch backs off and relists");
                state.reloaded(Source::podtemplates, ReloadResult::failure);
                continue;
            }
            None => {
                warn!("the PodTemplate watch ended; the last known set keeps serving");
                return;
            }
        };
        describe(&event);
        let listed = matches!(event, Event::InitDone);
        if let Some(templates) = follower.apply(&event) {
            let (loaded, invalid) = templates.counts();
            state.replace_namespace_templates(templates);
            if listed {
                info!(loaded, invalid, "namespaces' PodTemplates listed from the cluster");
                state.reloaded(Source::podtemplates, ReloadResult::success);
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
        Event::Apply(o) => info!(podtemplate = %at(o), "PodTemplate applied"),
        Event::Delete(o) => info!(podtemplate = %at(o), "PodTemplate deleted"),
        Event::Init => debug!("listing PodTemplates"),
        Event::InitApply(o) => debug!(podtemplate = %at(o), "PodTemplate listed"),
        Event::InitDone => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn object(namespace: &str, name: &str, version: &str, template: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PodTemplate",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
            "template": template,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn image(image: &str) -> Value {
        json!({"spec": {"containers": [{"name": "base", "image": image}]}})
    }

    fn image_of(templates: &NamespaceTemplates, namespace: &str) -> Option<String> {
        let template = templates.get(namespace)?.ok()?;
        template.pod().pointer("/spec/containers/0/image")?.as_str().map(str::to_owned)
    }

    fn served(f: &mut TemplateFollower, event: &Event<DynamicObject>) -> NamespaceTemplates {
        f.apply(event).unwrap_or_else(|| panic!("{event:?} serves nothing"))
    }

    #[test]
    fn follows_the_list_then_changes_and_deletes() {
        let mut f = TemplateFollower::new("podtailor");
        assert!(f.apply(&Event::Init).is_none());
        assert!(f.apply(&Event::InitApply(object("a", "podtailor", "1", image("a:1")))).is_none());
        let listed = served(&mut f, &Event::InitDone);
        assert_eq!(image_of(&listed, "a").as_deref(), Some("a:1"));
        assert!(listed.get("b").is_none());
        assert!(!listed.is_unlisted());
        let added = served(&mut f, &Event::Apply(object("b", "podtailor", "2", image("b:1"))));
        assert_eq!(image_of(&added, "b").as_deref(), Some("b:1"));
        let changed = served(&mut f, &Event::Apply(object("a", "podtailor", "3", image("a:2"))));
        assert_eq!(image_of(&changed, "a").as_deref(), Some("a:2"));
        let deleted = served(&mut f, &Event::Delete(object("a", "podtailor", "4", image("a:2"))));
        assert!(deleted.get("a").is_none());
        assert_eq!(deleted.counts(), (1, 0));
        // the applied-marker names it
        let b = deleted.get("b").and_then(Result::ok).map(|t| t.origin().map(str::to_owned));
        assert_eq!(b, Some(Some("b/podtailor".to_owned())));
    }

    #[test]
    fn a_bad_object_is_kept_as_its_reason_and_others_of_another_name_are_ignored() {
        let mut f = TemplateFollower::new("podtailor");
        f.apply(&Event::Init);
        f.apply(&Event::InitApply(object("a", "podtailor", "1", json!({"spec": {"containers": [{"image": "x"}]}}))));
        f.apply(&Event::InitApply(object("c", "other", "1", image("c:1"))));
        let listed = served(&mut f, &Event::InitDone);
        let why = listed.get("a").and_then(Result::err).unwrap_or_default();
        assert_eq!(why, "template.spec.containers[0].name: is required (containers merge by name)");
        assert!(listed.get("c").is_none());
        assert_eq!(listed.counts(), (0, 1));
        let fixed = served(&mut f, &Event::Apply(object("a", "podtailor", "2", image("a:1"))));
        assert_eq!(image_of(&fixed, "a").as_deref(), Some("a:1"));
    }

    #[test]
    fn an_unchanged_version_is_not_compiled_again() {
        let mut f = TemplateFollower::new("podtailor");
        f.apply(&Event::Init);
        f.apply(&Event::InitApply(object("a", "podtailor", "1", image("a:1"))));
        let first = served(&mut f, &Event::InitDone);
        let other = served(&mut f, &Event::Apply(object("b", "podtailor", "2", image("b:1"))));
        let (Some(Ok(before)), Some(Ok(after))) = (first.get("a"), other.get("a")) else {
            panic!("a is served in both");
        };
        assert!(Arc::ptr_eq(before, after));
    }

    #[test]
    fn the_watch_selects_the_name() {
        assert_eq!(watch_config("podtailor").field_selector.as_deref(), Some("metadata.name=podtailor"));
    }
}
