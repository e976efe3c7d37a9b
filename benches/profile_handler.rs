//! Runs the webhook's router in-process (no TLS, no sockets) on the fixture reviews N times,
//! for instruction counting of everything the handler does, logging included:
//! `valgrind --tool=callgrind target/release/examples/profile_handler floor|mutate N [json|text] 2>/dev/null`.
//! `mutate` sends examples/review.json, `floor` the same review without the pod's opt-in
//! annotation (as `make bench-load` does), `other` examples/review-not-opted-in.json. The server's
//! logging is set up as `serve` does it, in the format given (default json, as `make
//! bench-load` runs the server), writing to stderr.

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, header};
use podtailor::serve::{LogFormat, init_logging};
use podtailor::store::files;
use podtailor::webhook::{AppState, router};
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("mutate");
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let review = match which {
        "other" => bytes_of(&root.join("examples/review-not-opted-in.json")),
        "floor" => not_opted_in(&bytes_of(&root.join("examples/review.json"))),
        _ => bytes_of(&root.join("examples/review.json")),
    };
    let Ok(config) = files::load(&root.join("examples/template.yaml"), &root.join("examples/overrides")) else {
        eprintln!("examples do not load");
        std::process::exit(1);
    };
    let format = if args.get(3).map(String::as_str) == Some("text") { LogFormat::Text } else { LogFormat::Json };
    init_logging(format);
    let app = router(AppState::new(config));
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        eprintln!("no runtime");
        std::process::exit(1);
    };
    let total = runtime.block_on(async {
        let mut total = 0usize;
        for _ in 0..n {
            let request = Request::post("/mutate")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, review.len())
                .body(Body::from(review.clone()));
            let Ok(request) = request else { return 0 };
            let Ok(response) = app.clone().oneshot(request).await;
            if let Ok(body) = axum::body::to_bytes(response.into_body(), usize::MAX).await {
                total += body.len();
            }
        }
        total
    });
    println!("{which}: {n} requests, {total} bytes answered");
}

fn bytes_of(path: &Path) -> axum::body::Bytes {
    match std::fs::read(path) {
        Ok(b) => b.into(),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

/// The review with the pod's `podtailor.dev/override` annotation taken out.
fn not_opted_in(review: &[u8]) -> axum::body::Bytes {
    let mut review: serde_json::Value = match serde_json::from_slice(review) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("examples/review.json: {e}");
            std::process::exit(1);
        }
    };
    let annotations = review.pointer_mut("/request/object/metadata/annotations").and_then(|a| a.as_object_mut());
    if annotations.and_then(|a| a.shift_remove("podtailor.dev/override")).is_none() {
        eprintln!("examples/review.json: no podtailor.dev/override annotation to take out");
        std::process::exit(1);
    }
    serde_json::to_vec_pretty(&review).unwrap_or_default().into()
}
