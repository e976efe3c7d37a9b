//! The cost of the largest reviews, by shape: for a 3 MiB AdmissionReview (the largest the API
//! server forwards) of each shape, the median time the `/mutate` handler takes to answer (the
//! router in-process, as `serve` runs it, logging off) and the peak memory of a process that
//! serves it. Targets: under 100 ms and under 64 MiB each. `make bench` runs it.
//!
//! Each shape runs in a child process of its own (this program, `--child SHAPE FILE`), which
//! reads the review from a file, loads the example template and overrides, answers the review
//! [`RUNS`] times, checks that the patch applies to the pod, and prints its median and its peak
//! resident memory (`VmHWM` of /proc/self/status: the whole process, binary, configuration and
//! request body included). The parent watches each child's resident memory and stops one that
//! passes [`STOP_RSS`] or [`STOP_TIME`], so a regression is reported, not suffered.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine;
use podtailor::store::files;
use podtailor::webhook::{AppState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

// The allocator of the podtailor binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The size of every review: the largest object the API server takes.
const SIZE: usize = 3 * 1024 * 1024;
/// The reviews answered in each child; the median is reported.
const RUNS: usize = 7;
const TARGET_MS: f64 = 100.0;
const TARGET_MIB: f64 = 64.0;
/// A child past either of these is stopped and reported as over it.
const STOP_RSS: u64 = 2 * 1024 * 1024 * 1024;
const STOP_TIME: Duration = Duration::from_secs(60);

/// The shapes, by name, with what they are.
const SHAPES: [(&str, &str); 6] = [
    ("env", "30 000 env vars in one container"),
    ("mounts", "30 000 volume mounts in one container"),
    ("deep", "100-deep nested objects (refused unread)"),
    ("annotation", "1 MiB annotations (three)"),
    ("finalizers", "30 000 finalizers (a merged set)"),
    ("containers", "3 000 containers"),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let (Some(shape), Some(file)) = (args.get(at + 1), args.get(at + 2)) else {
            fail("usage: bounds --child SHAPE FILE")
        };
        child(shape, Path::new(file));
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bounds");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        fail(&format!("{}: {e}", dir.display()));
    }
    let base = fixture(root);
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("this program: {e}")));
    println!("{:<58} {:>9} {:>13} {:>13}", "shape (a review of about 3 MiB)", "size", "median time", "peak memory");
    let mut all_met = true;
    for (shape, what) in SHAPES {
        let review = review_of(&base, shape);
        let file = dir.join(format!("{shape}.json"));
        if let Err(e) = std::fs::write(&file, &review) {
            fail(&format!("{}: {e}", file.display()));
        }
        let size = format!("{:.2} MiB", review.len() as f64 / 1048576.0);
        match run_child(&exe, shape, &file) {
            Ok((ms, mib)) => {
                let met = ms < TARGET_MS && mib < TARGET_MIB;
                all_met &= met;
                let mark = if met { "" } else { "  over the target" };
                println!("{what:<58} {size:>9} {:>10.1} ms {:>9.1} MiB{mark}", ms, mib);
            }
            Err(why) => {
                all_met = false;
                println!("{what:<58} {size:>9} {why}");
            }
        }
    }
    println!(
        "targets: under {TARGET_MS} ms and under {TARGET_MIB} MiB each: {}",
        if all_met { "met" } else { "NOT met" }
    );
}

/// Runs the child for one shape, watching it; its median (ms) and peak memory (MiB), or why
/// there are none.
fn run_child(exe: &Path, shape: &str, file: &Path) -> Result<(f64, f64), String> {
    let mut child = Command::new(exe)
        .args(["--child", shape])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("the child did not start: {e}"))?;
    let start = Instant::now();
    let mut peak = 0;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        peak = peak.max(rss_of(child.id()).unwrap_or(0));
        let stop = if peak > STOP_RSS {
            Some(format!("stopped: over {} MiB resident", STOP_RSS >> 20))
        } else if start.elapsed() > STOP_TIME {
            Some(format!("stopped: over {} s", STOP_TIME.as_secs()))
        } else {
            None
        };
        if let Some(why) = stop {
            let _ = child.kill();
            let _ = child.wait();
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().map_err(|e| format!("the child's output: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("the child failed ({}): {text}", output.status));
    }
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(ms)), Some(Ok(kib))) => Ok((ms, kib / 1024.0)),
        _ => Err(format!("the child said {text:?}")),
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`), as bytes.
fn status_kib(path: &str, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

fn rss_of(pid: u32) -> Option<u64> {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// One shape's measurement, in this process: prints the median in ms and the peak resident
/// memory in KiB.
fn child(shape: &str, file: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let review: axum::body::Bytes = match std::fs::read(file) {
        Ok(b) => b.into(),
        Err(e) => fail(&format!("{}: {e}", file.display())),
    };
    let config = files::load(&root.join("examples/template.yaml"), &root.join("examples/overrides"))
        .unwrap_or_else(|e| fail(&format!("examples: {e}")));
    let app = router(AppState::new(config));
    let runtime =
        tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let mut times = Vec::with_capacity(RUNS);
    let mut answer = Vec::new();
    for _ in 0..RUNS {
        let request = Request::post("/mutate")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, review.len())
            .body(Body::from(review.clone()))
            .unwrap_or_else(|e| fail(&format!("request: {e}")));
        let start = Instant::now();
        let body = runtime.block_on(async {
            let Ok(response) = app.clone().oneshot(request).await;
            axum::body::to_bytes(response.into_body(), usize::MAX).await
        });
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        answer = body.unwrap_or_else(|e| fail(&format!("answer: {e}"))).to_vec();
    }
    let peak = status_kib("/proc/self/status", "VmHWM:").unwrap_or(0) / 1024;
    check(shape, &review, &answer);
    times.sort_by(f64::total_cmp);
    println!("{:.3} {peak}", times[RUNS / 2]);
}

/// The answer allows the pod with a patch that applies to it and keeps the shape's values (the
/// deep shape: refuses it, with the uid).
fn check(shape: &str, review: &[u8], answer: &[u8]) {
    let review: Value = serde_json::from_slice(review).unwrap_or_else(|e| fail(&format!("review: {e}")));
    let answer: Value = serde_json::from_slice(answer).unwrap_or_else(|e| fail(&format!("answer: {e}")));
    let response = &answer["response"];
    if shape == "deep" {
        // Deeper than any pod: refused before the object is read, with the uid.
        let message = response["status"]["message"].as_str().unwrap_or_default();
        if response["allowed"] != json!(false)
            || response["uid"] != review["request"]["uid"]
            || !message.contains("deep")
        {
            fail(&format!("deep: not refused for its depth: {response}"));
        }
        return;
    }
    if response["allowed"] != json!(true) {
        fail(&format!("{shape}: not allowed: {}", response["status"]));
    }
    let patch = response["patch"].as_str().unwrap_or_else(|| fail(&format!("{shape}: no patch")));
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap_or_else(|e| fail(&format!("{shape}: the patch is not base64: {e}")));
    let patch: json_patch::Patch =
        serde_json::from_slice(&patch).unwrap_or_else(|e| fail(&format!("{shape}: the patch: {e}")));
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| fail(&format!("{shape}: the patch does not apply: {e}")));
    let base = &pod["spec"]["containers"][0];
    let kept = match shape {
        "env" => base["env"].as_array().map_or(0, Vec::len) > 30_000,
        "mounts" => base["volumeMounts"].as_array().map_or(0, Vec::len) > 30_000,
        "finalizers" => pod["metadata"]["finalizers"].as_array().map_or(0, Vec::len) >= 30_000,
        "containers" => pod["spec"]["containers"].as_array().map_or(0, Vec::len) >= 3_000,
        _ => pod["metadata"]["annotations"].as_object().map_or(0, |a| a.len()) > 3,
    };
    if !kept {
        fail(&format!("{shape}: the patched pod lost the shape's values"));
    }
}

/// The fixture review (examples/review.json).
fn fixture(root: &Path) -> Value {
    let path: PathBuf = root.join("examples/review.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    serde_json::from_slice(&text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())))
}

/// The fixture review grown to about [`SIZE`] bytes in the shape named.
fn review_of(base: &Value, shape: &str) -> Vec<u8> {
    let mut review = base.clone();
    let size = serde_json::to_vec(base).map_or(0, |t| t.len());
    let room = SIZE.saturating_sub(size + 4096);
    let pod = &mut review["request"]["object"];
    let container = &mut pod["spec"]["containers"][0];
    // `n` elements sharing `room`: the filler that makes each about room / n bytes
    let pad = |n: usize, fixed: usize| "x".repeat((room / n).saturating_sub(fixed));
    match shape {
        "env" => {
            let pad = pad(30_000, 36);
            container["env"] = (0..30_000).map(|i| json!({"name": format!("VAR_{i:05}"), "value": pad})).collect();
        }
        "mounts" => {
            let pad = pad(30_000, 40);
            let mounts: Vec<Value> =
                (0..30_000).map(|i| json!({"name": format!("v{i}"), "mountPath": format!("/m/{i}/{pad}")})).collect();
            container["volumeMounts"] = Value::Array(mounts);
        }
        "deep" => {
            // chains of 100 nested objects, as many as fill the room
            let mut chain = json!({"leaf": "x"});
            for level in 0..99 {
                chain = json!({format!("level{level}"): chain});
            }
            let each = serde_json::to_vec(&chain).map_or(1, |t| t.len() + 12);
            let context: serde_json::Map<String, Value> =
                (0..room / each).map(|i| (format!("x{i}"), chain.clone())).collect();
            container["securityContext"] = Value::Object(context);
        }
        "annotation" => {
            let text = "a".repeat(1024 * 1024 - 64);
            for i in 0..3 {
                pod["metadata"]["annotations"][format!("bench.podtailor.dev/big-{i}")] = json!(text);
            }
        }
        "finalizers" => {
            let pad = pad(30_000, 24);
            pod["metadata"]["finalizers"] = (0..30_000).map(|i| json!(format!("podtailor.dev/f{i}-{pad}"))).collect();
        }
        _ => {
            let pad = pad(3_000, 60);
            let mut containers: Vec<Value> = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
            containers.extend((0..3_000).map(|i| json!({"name": format!("c{i}"), "image": format!("busybox:{pad}")})));
            pod["spec"]["containers"] = Value::Array(containers);
        }
    }
    serde_json::to_vec(&review).unwrap_or_else(|e| fail(&format!("{shape}: {e}")))
}

fn fail(message: &str) -> ! {
    eprintln!("bounds: {message}");
    std::process::exit(1);
}
