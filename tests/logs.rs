//! The server's request log, as `serve --log-format json` writes it: one line per review, its
//! span carrying what identifies the review and how it ended. Alone in its binary: the
//! subscriber is process-wide, as in the server.

mod common;

use axum::body::Body;
use axum::http::{Request, header};
use podtailor::serve::{DEFAULT_LOG_FILTER, LogFormat, subscriber};
use podtailor::store::files;
use podtailor::webhook::{self, AppState, Shared};
use serde_json::{Value, json};
use tower::ServiceExt;

fn state() -> Shared {
    let examples = common::examples();
    let config = files::load(&examples.join("template.yaml"), &examples.join("overrides"))
        .unwrap_or_else(|e| panic!("examples: {e}"));
    AppState::new(config)
}

async fn post(state: &Shared, body: Vec<u8>) {
    let request = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|e| panic!("{e}"));
    let response = webhook::router(state.clone()).oneshot(request).await.unwrap_or_else(|e| match e {});
    axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_else(|e| panic!("{e}"));
}

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}")))
            .collect()
    }
}

#[tokio::test]
async fn each_review_logs_one_json_line_with_its_span_fields() {
    let sink = Captured::default();
    let writer = sink.clone();
    let filter = tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER);
    tracing::subscriber::set_global_default(subscriber(LogFormat::Json, filter, move || writer.clone(), false))
        .unwrap_or_else(|e| panic!("{e}"));
    let state = state();
    let review = common::read_json(&common::examples().join("review.json"));
    post(&state, review.to_string().into_bytes()).await;
    let mut missing = review.clone();
    missing["request"]["object"]["metadata"]["annotations"]["podtailor.dev/override"] = json!("nope");
    missing["request"]["dryRun"] = json!(true);
    post(&state, missing.to_string().into_bytes()).await;
    post(&state, b"{\"x\":1".to_vec()).await;

    let lines = sink.lines();
    assert_eq!(lines.len(), 3, "one line per review: {lines:#?}");
    let (patched, denied, invalid) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(patched["message"], "admission review answered");
    assert_eq!(patched["level"], "INFO");
    assert_eq!(patched["warnings"], 0);
    let span = &patched["span"];
    assert_eq!(span["name"], "admission");
    assert_eq!(span["webhook"], "Mutate");
    assert_eq!(span["uid"], review["request"]["uid"]);
    assert_eq!(span["namespace"], "airflow");
    assert_eq!(span["pod"], "bash-resource-requirements-override-example-*");
    assert_eq!(span["operation"], "CREATE");
    assert_eq!(span["dry_run"], false);
    assert_eq!(span["outcome"], "patched");
    assert!(span["duration_us"].as_u64().is_some_and(|us| us > 0), "{span}");

    assert_eq!(denied["message"], "denied");
    assert_eq!(denied["span"]["outcome"], "denied");
    assert_eq!(denied["span"]["dry_run"], true);
    assert!(denied["reason"].as_str().is_some_and(|r| r.contains("\"nope\" not found")), "{denied}");

    assert_eq!(invalid["level"], "WARN");
    assert_eq!(invalid["message"], "admission review rejected", "the reason must not replace the message");
    assert_eq!(invalid["span"]["outcome"], "invalid");
    assert!(invalid["reason"].as_str().is_some_and(|r| r.contains("not an AdmissionReview")), "{invalid}");

    // by default, rustls's warning about a client's hello is dropped (one a connection for a
    // client that sends an IP address as its server name); its errors and other warnings stay
    tracing::warn!(target: "rustls::msgs::handshake", "Illegal SNI extension: ignoring IP address");
    tracing::error!(target: "rustls::msgs::handshake", "a handshake error");
    tracing::warn!(target: "rustls::server::hs", "another warning");
    let messages: Vec<Value> = sink.lines()[3..].iter().map(|l| l["message"].clone()).collect();
    assert_eq!(messages, [json!("a handshake error"), json!("another warning")]);
}
