//! Runs the bench's two workloads N times each, for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/profile_render floor|render N`.

use std::path::Path;

use podtailor::merge::Want;
use podtailor::mutate::{Decision, decide};
use podtailor::store::files;
use serde_json::Value;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("render");
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let review = std::fs::read(root.join("examples/review.json")).unwrap_or_default();
    let Ok(config) = files::load(&root.join("examples/template.yaml"), &root.join("examples/overrides")) else {
        eprintln!("examples do not load");
        std::process::exit(1);
    };
    let mut total = 0;
    for _ in 0..n {
        let v: Value = serde_json::from_slice(&review).unwrap_or_default();
        total += if which == "floor" {
            serde_json::to_vec(&v).unwrap_or_default().len()
        } else {
            let request = &v["request"];
            let ns = request["namespace"].as_str().unwrap_or("default");
            match decide(&config, ns, &request["object"], Want::Json) {
                Ok(Decision::Mutated { outcome, .. }) => outcome.patch_json.map_or(0, |p| p.len()),
                _ => 0,
            }
        };
    }
    println!("{which}: {n} runs, {total} bytes");
}
