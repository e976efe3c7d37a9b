//! The webhook's router in-process (no socket): every outcome, every kind of bad input, and
//! the uid echoed in every answer to a readable review.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use podtailor::store::files;
use podtailor::webhook::{self, AppState, Shared};
use rstest::rstest;
use serde_json::{Value, json};
use tower::ServiceExt;

fn state() -> Shared {
    let examples = common::examples();
    let config = files::load(&examples.join("template.yaml"), &examples.join("overrides"))
        .unwrap_or_else(|e| panic!("examples: {e}"));
    AppState::new(config)
}

fn review() -> Value {
    common::read_json(&common::examples().join("review.json"))
}

async fn call(state: &Shared, content_type: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    let mut request = Request::post("/mutate");
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let request = request.body(Body::from(body)).unwrap_or_else(|e| panic!("{e}"));
    let response = webhook::router(state.clone()).oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_else(|e| panic!("{e}"));
    let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"));
    (status, body)
}

async fn post(state: &Shared, review: &Value) -> (StatusCode, Value) {
    call(state, Some("application/json"), review.to_string().into_bytes()).await
}

fn patch_of(answer: &Value) -> json_patch::Patch {
    let b64 = answer["response"]["patch"].as_str().unwrap_or_else(|| panic!("no patch in {answer}"));
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn an_opted_in_pod_is_patched_with_a_base64_json_patch() {
    let state = state();
    let review = review();
    let (status, answer) = post(&state, &review).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(answer["response"]["patch"].is_string(), "the patch must be a base64 string, not an array of numbers");
    assert_eq!(answer["response"]["auditAnnotations"]["overrides"], "resource-requirements,secret-env");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&answer)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"], "500m");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    // the patched pod, sent again (reinvocation), needs nothing more
    let mut again = review.clone();
    again["request"]["object"] = pod;
    let (status, answer) = post(&state, &again).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"].get("patch"), None, "{answer}");
    assert_eq!(answer["response"]["allowed"], true);
}

#[tokio::test]
async fn dry_run_is_answered_like_any_request() {
    let state = state();
    let mut review = review();
    review["request"]["dryRun"] = json!(true);
    let (status, answer) = post(&state, &review).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer["response"]["patch"].is_string());
}

#[tokio::test]
async fn a_pod_that_did_not_opt_in_is_allowed_untouched() {
    let state = state();
    let review = common::read_json(&common::examples().join("review-not-opted-in.json"));
    let (status, answer) = post(&state, &review).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"], json!({"uid": review["request"]["uid"], "allowed": true}));
}

#[rstest]
#[case::another_kind(json!({"group": "apps", "version": "v1", "kind": "Deployment"}), "CREATE")]
#[case::an_update(json!({"group": "", "version": "v1", "kind": "Pod"}), "UPDATE")]
#[case::a_delete(json!({"group": "", "version": "v1", "kind": "Pod"}), "DELETE")]
#[tokio::test]
async fn other_kinds_and_operations_are_allowed_untouched(#[case] kind: Value, #[case] operation: &str) {
    let state = state();
    let mut review = review();
    review["request"]["kind"] = kind;
    review["request"]["operation"] = json!(operation);
    let (status, answer) = post(&state, &review).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"], json!({"uid": review["request"]["uid"], "allowed": true}));
}

#[tokio::test]
async fn a_missing_override_is_denied_naming_it_and_the_namespace() {
    let state = state();
    let mut review = review();
    review["request"]["object"]["metadata"]["annotations"]["podtailor.dev/override"] =
        json!("resource-requirements,gpu");
    let (status, answer) = post(&state, &review).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 403);
    assert_eq!(answer["response"]["status"]["reason"], "Forbidden");
    let message = answer["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"gpu\"") && message.contains("\"airflow\""), "{message}");
}

/// The denial says where to look, as render and launch do (one function words all three).
#[rstest]
#[case::another_namespace(
    "default",
    "resource-requirements",
    "podtailor: PodOverride \"resource-requirements\" not found in namespace \"default\"; it exists in namespace \"airflow\" (use -n airflow)"
)]
#[case::a_typo(
    "airflow",
    "resource-requirement",
    "podtailor: PodOverride \"resource-requirement\" not found in namespace \"airflow\"; did you mean \"resource-requirements\"?"
)]
#[case::a_typo_in_another_namespace(
    "default",
    "resource-requirement",
    "podtailor: PodOverride \"resource-requirement\" not found in namespace \"default\"; did you mean \"resource-requirements\" in namespace \"airflow\" (use -n airflow)?"
)]
#[tokio::test]
async fn a_missing_override_is_denied_saying_where_to_look(
    #[case] namespace: &str,
    #[case] name: &str,
    #[case] want: &str,
) {
    let state = state();
    let mut review = review();
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["annotations"]["podtailor.dev/override"] = json!(name);
    let (_, answer) = post(&state, &review).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["message"], want);
}

#[tokio::test]
async fn an_override_that_cannot_apply_is_denied_with_the_reason() {
    let state = state();
    let mut review = review();
    review["request"]["object"]["spec"]["containers"][0]["name"] = json!("worker");
    review["request"]["object"]["metadata"]["annotations"]["podtailor.dev/override"] = json!("bad-target");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("o.yaml"),
        "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: bad-target}\nspec: {container: gpu, resources: {limits: {cpu: 1}}}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = files::load(&common::examples().join("template.yaml"), dir.path()).unwrap_or_else(|e| panic!("{e}"));
    state.replace(config);
    let (_, answer) = post(&state, &review).await;
    let message = answer["response"]["status"]["message"].as_str().unwrap_or_default();
    assert_eq!(answer["response"]["allowed"], false);
    assert!(message.contains("\"bad-target\"") && message.contains("container \"gpu\" not found"), "{message}");
}

#[tokio::test]
async fn replacing_a_value_the_pod_set_warns() {
    let state = state();
    let mut review = review();
    review["request"]["object"]["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "8Gi"}});
    let (_, answer) = post(&state, &review).await;
    let warnings = answer["response"]["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{answer}");
    assert!(warnings[0].as_str().unwrap_or_default().contains("limits.memory"), "{warnings:?}");
}

/// (content type, body, expected HTTP status, expected uid in the answer)
#[rstest]
#[case::truncated_json(Some("application/json"), br#"{"apiVersion": "admission.k8s.io/v1", "kind": "Admission"#.to_vec(), StatusCode::BAD_REQUEST, "")]
#[case::not_json(Some("application/json"), b"hello".to_vec(), StatusCode::BAD_REQUEST, "")]
#[case::wrong_api_version(Some("application/json"),
    json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u-1", "operation": "CREATE"}}).to_string().into_bytes(),
    StatusCode::BAD_REQUEST, "u-1")]
#[case::no_request(Some("application/json"), json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string().into_bytes(), StatusCode::BAD_REQUEST, "")]
#[case::request_without_uid(Some("application/json"), json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}).to_string().into_bytes(), StatusCode::BAD_REQUEST, "")]
#[case::uid_of_the_wrong_type(Some("application/json"), json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u-2", "operation": 7}}).to_string().into_bytes(), StatusCode::BAD_REQUEST, "u-2")]
#[case::no_object(Some("application/json"),
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u-3", "operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Pod"}}}).to_string().into_bytes(),
    StatusCode::BAD_REQUEST, "u-3")]
#[case::wrong_content_type(Some("text/plain"), review().to_string().into_bytes(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "")]
#[case::no_content_type(None, review().to_string().into_bytes(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "")]
#[case::a_5_mib_body(Some("application/json"), vec![b' '; 5 * 1024 * 1024], StatusCode::PAYLOAD_TOO_LARGE, "")]
#[tokio::test]
async fn bad_input_gets_a_json_reason(
    #[case] content_type: Option<&str>,
    #[case] body: Vec<u8>,
    #[case] want: StatusCode,
    #[case] uid: &str,
) {
    let state = state();
    let (status, answer) = call(&state, content_type, body).await;
    assert_eq!(status, want, "{answer}");
    assert_eq!(answer["response"]["uid"], uid);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], want.as_u16());
    assert!(answer["response"]["status"]["message"].as_str().is_some_and(|m| m.starts_with("podtailor: ")), "{answer}");
}

#[tokio::test]
async fn charset_parameters_are_accepted() {
    let state = state();
    let (status, _) = call(&state, Some("application/json; charset=utf-8"), review().to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_outcomes_and_readyz_follows_the_configuration() {
    let state = state();
    post(&state, &review()).await;
    call(&state, Some("text/plain"), vec![]).await;
    let admin = webhook::admin_router(state.clone());
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap_or_else(|e| panic!("{e}"));
    let response = admin.clone().oneshot(get("/metrics")).await.unwrap_or_else(|e| match e {});
    let text = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("podtailor_admission_requests_total{webhook=\"mutate\",outcome=\"patched\"} 1"), "{text}");
    assert!(text.contains("podtailor_admission_requests_total{webhook=\"mutate\",outcome=\"invalid\"} 1"), "{text}");
    assert!(text.contains("podtailor_admission_duration_seconds_count 2"), "{text}");
    assert!(text.contains("podtailor_overrides_loaded 2"), "{text}");
    // every series from the start, at zero: reloads of every source, the invalid gauge
    for source in ["template", "overrides", "certificate", "cluster"] {
        for result in ["success", "failure"] {
            let series = format!("podtailor_reloads_total{{source=\"{source}\",result=\"{result}\"}} 0\n");
            assert!(text.contains(&series), "{series} not in {text}");
        }
    }
    assert!(text.contains("podtailor_overrides_invalid 0\n"), "{text}");
    let status = |path: &'static str| {
        let admin = admin.clone();
        async move { admin.oneshot(get(path)).await.unwrap_or_else(|e| match e {}).status() }
    };
    assert_eq!(status("/healthz").await, StatusCode::OK);
    assert_eq!(status("/readyz").await, StatusCode::OK);
    state.set_ready(false);
    assert_eq!(status("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status("/healthz").await, StatusCode::OK);
}

/// The request counters and the count of the latency histogram, by series.
async fn counters(state: &Shared) -> std::collections::BTreeMap<String, u64> {
    let request = Request::get("/metrics").body(Body::empty()).unwrap_or_else(|e| panic!("{e}"));
    let response = webhook::admin_router(state.clone()).oneshot(request).await.unwrap_or_else(|e| match e {});
    let text = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| {
            l.starts_with("podtailor_admission_requests_total")
                || l.starts_with("podtailor_admission_duration_seconds_count")
        })
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            (series.to_owned(), value.parse().unwrap_or_else(|e| panic!("{l}: {e}")))
        })
        .collect()
}

#[tokio::test]
async fn each_request_moves_exactly_its_counter() {
    let state = state();
    let mut before = counters(&state).await;
    let series = |webhook: &str, outcome: &str| {
        format!("podtailor_admission_requests_total{{webhook=\"{webhook}\",outcome=\"{outcome}\"}}")
    };
    // every outcome shows from the start, at zero (the validating webhook never patches)
    let mut zero: std::collections::BTreeMap<String, u64> = [
        ("mutate", "patched"),
        ("mutate", "unchanged"),
        ("mutate", "denied"),
        ("mutate", "invalid"),
        ("mutate", "error"),
        ("validate", "unchanged"),
        ("validate", "denied"),
        ("validate", "invalid"),
        ("validate", "error"),
    ]
    .iter()
    .map(|(w, o)| (series(w, o), 0))
    .collect();
    zero.insert("podtailor_admission_duration_seconds_count".into(), 0);
    assert_eq!(before, zero);

    let patched = {
        // made on another state, so that this one counts only the steps
        let (_, answer) = post(&self::state(), &review()).await;
        let mut pod = review()["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch_of(&answer)).unwrap_or_else(|e| panic!("{e}"));
        let mut again = review();
        again["request"]["object"] = pod;
        again
    };
    let mut missing = review();
    missing["request"]["object"]["metadata"]["annotations"]["podtailor.dev/override"] = json!("gpu");
    let mut panics = review();
    panics["request"]["object"]["metadata"]["annotations"]["podtailor.dev/override"] =
        json!(podtailor::mutate::PANIC_OVERRIDE);
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let good = override_review("CREATE", json!({"resources": {"limits": {"cpu": 1}}}));
    let bad = override_review("CREATE", json!({"resorces": {}}));
    let delete = override_review("DELETE", json!({"resorces": {}}));
    let steps: Vec<(&str, &str, &str, Value)> = vec![
        ("mutate", "patched", "application/json", review()),
        ("mutate", "unchanged", "application/json", patched),
        (
            "mutate",
            "unchanged",
            "application/json",
            common::read_json(&common::examples().join("review-not-opted-in.json")),
        ),
        ("mutate", "denied", "application/json", missing),
        ("mutate", "invalid", "application/json", no_request.clone()),
        ("mutate", "invalid", "text/plain", review()),
        ("mutate", "error", "application/json", panics),
        ("validate", "unchanged", "application/json", good),
        ("validate", "unchanged", "application/json", delete),
        ("validate", "denied", "application/json", bad),
        ("validate", "invalid", "application/json", no_request),
        ("validate", "invalid", "text/plain", review()),
    ];
    for (webhook, outcome, content_type, body) in steps {
        let request = Request::post(format!("/{webhook}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_string()))
            .unwrap_or_else(|e| panic!("{e}"));
        let _answer = webhook::router(state.clone()).oneshot(request).await.unwrap_or_else(|e| match e {});
        let after = counters(&state).await;
        let mut expected = before.clone();
        for key in [series(webhook, outcome), "podtailor_admission_duration_seconds_count".into()] {
            *expected.entry(key).or_default() += 1;
        }
        assert_eq!(after, expected, "after a {webhook} request that is {outcome}");
        before = after;
    }
}

fn override_review(operation: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "v-1", "operation": operation, "namespace": "airflow", "name": "o",
            "kind": {"group": "podtailor.dev", "version": "v1alpha1", "kind": "PodOverride"},
            "object": {"apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
                       "metadata": {"name": "o", "namespace": "airflow"}, "spec": spec}
        }
    })
}

async fn validate(state: &Shared, review: &Value) -> (StatusCode, Value) {
    let request = Request::post("/validate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(review.to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let response = webhook::router(state.clone()).oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}")))
}

/// (spec, the field the denial must name; empty: allowed)
#[rstest]
#[case::the_design_example(json!({"container": "base", "resources": {"limits": {"cpu": 1}},
    "secrets": [{"deployType": "env", "deployTarget": "MY_SECRET", "secret": "s", "key": "k"}, {"deployType": "volume", "deployTarget": "/etc/creds", "secret": "creds"}],
    "pod": {"spec": {"serviceAccountName": "worker", "nodeSelector": {"pool": "highmem"}}}}), "")]
#[case::unknown_deploy_type(json!({"secrets": [{"deployType": "file", "deployTarget": "/x", "secret": "s"}]}), "spec.secrets[0].deployType")]
#[case::env_target_not_a_variable_name(json!({"secrets": [{"deployType": "env", "deployTarget": "1-BAD", "secret": "s", "key": "k"}]}), "spec.secrets[0].deployTarget")]
#[case::relative_volume_target(json!({"secrets": [{"deployType": "volume", "deployTarget": "etc/creds", "secret": "s"}]}), "spec.secrets[0].deployTarget")]
#[case::invalid_secret_name(json!({"secrets": [{"deployType": "env", "secret": "Not_A_Secret"}]}), "spec.secrets[0].secret")]
#[case::invalid_key(json!({"secrets": [{"deployType": "env", "deployTarget": "X", "secret": "s", "key": "a/b"}]}), "spec.secrets[0].key")]
#[case::pod_field_a_pod_does_not_have(json!({"pod": {"spec": {"containers": [{"name": "base", "imagee": "x"}]}}}), "spec.pod.spec.containers[0].imagee")]
#[case::unknown_spec_field(json!({"resorces": {}}), "spec.resorces")]
#[tokio::test]
async fn the_validating_webhook_rejects_what_would_fail_at_pod_admission(#[case] spec: Value, #[case] field: &str) {
    let state = state();
    for operation in ["CREATE", "UPDATE"] {
        let (status, answer) = validate(&state, &override_review(operation, spec.clone())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["uid"], "v-1");
        if field.is_empty() {
            assert_eq!(answer["response"]["allowed"], true, "{answer}");
        } else {
            assert_eq!(answer["response"]["allowed"], false, "{answer}");
            assert_eq!(answer["response"]["status"]["code"], 422, "{answer}");
            assert_eq!(answer["response"]["status"]["reason"], "Invalid", "{answer}");
            assert_eq!(answer["response"]["status"]["status"], "Failure", "{answer}");
            let message = answer["response"]["status"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(&format!("{field}:")), "{field} not named in: {message}");
            assert!(message.contains("PodOverride \"o\""), "{message}");
        }
    }
}

#[tokio::test]
async fn the_validating_webhook_warns_where_an_env_target_is_exposed_upper_cased() {
    let state = state();
    let spec = json!({"secrets": [{"deployType": "env", "deployTarget": "MY_SECRET", "secret": "s", "key": "k"},
                                  {"deployType": "env", "deployTarget": "my_token", "secret": "s", "key": "t"}]});
    let (_, answer) = validate(&state, &override_review("CREATE", spec)).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(
        answer["response"]["warnings"],
        json!([
            r#"podtailor: spec.secrets[1].deployTarget: "my_token" is exposed as MY_TOKEN (env targets are upper-cased, as Airflow's Secret does)"#
        ]),
        "{answer}"
    );
    let (_, answer) = validate(
        &state,
        &override_review(
            "CREATE",
            json!({"secrets": [{"deployType": "env", "deployTarget": "MY_SECRET", "secret": "s", "key": "k"}]}),
        ),
    )
    .await;
    assert_eq!(answer["response"].get("warnings"), None, "{answer}");
}

#[tokio::test]
async fn the_validating_webhook_lets_other_kinds_and_deletes_through() {
    let state = state();
    let mut review = override_review("DELETE", json!({"secrets": [{"deployType": "file"}]}));
    let (_, answer) = validate(&state, &review).await;
    assert_eq!(answer["response"]["allowed"], true);
    review["request"]["operation"] = json!("CREATE");
    review["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    let (_, answer) = validate(&state, &review).await;
    assert_eq!(answer["response"]["allowed"], true);
}

async fn metrics_text(state: &Shared) -> String {
    let request = Request::get("/metrics").body(Body::empty()).unwrap_or_else(|e| panic!("{e}"));
    let response = webhook::admin_router(state.clone()).oneshot(request).await.unwrap_or_else(|e| match e {});
    let text = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn a_panic_in_the_decision_is_answered_with_the_uid_and_counted() {
    let state = state();
    let mut review = review();
    review["request"]["uid"] = json!("u-panic");
    review["request"]["object"]["metadata"]["annotations"]["podtailor.dev/override"] =
        json!(format!("resource-requirements,{}", podtailor::mutate::PANIC_OVERRIDE));
    let (status, answer) = post(&state, &review).await;
    // 200: the API server reads an answer's message only from a 200
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "u-panic");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 500);
    assert_eq!(answer["response"]["status"]["reason"], "InternalError");
    let message = answer["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("podtailor: internal error"), "{message}");
    assert!(!message.contains("fault injection"), "the panic's own text must stay in the log: {message}");
    assert_eq!(answer["response"].get("patch"), None);
    let text = metrics_text(&state).await;
    assert!(text.contains("podtailor_admission_requests_total{webhook=\"mutate\",outcome=\"error\"} 1"), "{text}");
    // the same state goes on answering
    let (status, answer) = post(&state, &self::review()).await;
    assert_eq!((status, &answer["response"]["allowed"]), (StatusCode::OK, &json!(true)), "{answer}");
    let text = metrics_text(&state).await;
    assert!(text.contains("podtailor_admission_requests_total{webhook=\"mutate\",outcome=\"patched\"} 1"), "{text}");
    assert!(text.contains("podtailor_admission_requests_total{webhook=\"validate\",outcome=\"error\"} 0"), "{text}");
}

/// `levels` objects nested one in another, the innermost empty.
fn nested(levels: usize) -> Value {
    (1..levels).fold(json!({}), |inner, _| json!({ "f:a": inner }))
}

#[tokio::test]
async fn an_object_nested_deeper_than_any_pod_is_refused_unread_and_one_at_the_limit_is_read() {
    use podtailor::webhook::admission::MAX_DEPTH;
    let state = state();
    // The pod is level 1, metadata 2, managedFields 3, its entry 4: fieldsV1 starts at 5.
    let with_fields = |levels: usize| {
        let mut review = review();
        let meta = &mut review["request"]["object"]["metadata"];
        meta["managedFields"] = json!([{"manager": "m", "operation": "Update", "fieldsV1": nested(levels)}]);
        // Brackets and escaped quotes inside strings are not nesting.
        meta["annotations"]["note"] = json!("\\\"{[".repeat(MAX_DEPTH * 2));
        review
    };
    let at_limit = with_fields(MAX_DEPTH - 4);
    let (status, answer) = post(&state, &at_limit).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let mut pod = at_limit["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&answer)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pod["metadata"]["managedFields"], at_limit["request"]["object"]["metadata"]["managedFields"]);
    assert!(pod["spec"]["containers"][0]["resources"].is_object(), "not patched: {pod}");

    let over = with_fields(MAX_DEPTH - 3);
    let (status, answer) = post(&state, &over).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["response"]["uid"], over["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("more than {MAX_DEPTH} deep")), "{message}");

    // An override's spec is level 2: the same bound on /validate (at the limit, the spec is
    // read and denied for its unknown field).
    let (status, answer) = validate(&state, &override_review("CREATE", nested(MAX_DEPTH - 1))).await;
    assert_eq!((status, &answer["response"]["status"]["code"]), (StatusCode::OK, &json!(422)), "{answer}");
    let (status, answer) = validate(&state, &override_review("CREATE", nested(MAX_DEPTH))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["response"]["uid"], "v-1");
}
