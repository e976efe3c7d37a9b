//! The cost of a render against its floor, measured in the same run: parsing the fixture
//! AdmissionReview and writing JSON back (the floor) versus parsing it, merging the template
//! and both overrides, and writing the patch (render). `make bench` prints the ratio of medians.

use std::hint::black_box;

// The allocator of the podtailor binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use podtailor::merge::Want;
use podtailor::mutate::{Decision, decide};
use podtailor::store::files;
use serde_json::Value;

fn benches(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let review = std::fs::read(root.join("examples/review.json")).unwrap_or_default();
    let config = match files::load(&root.join("examples/template.yaml"), &root.join("examples/overrides")) {
        Ok(c) => c,
        Err(e) => panic!("examples: {e}"),
    };
    let mut group = c.benchmark_group("review");
    group.bench_function("floor: parse and re-serialise", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&review)).unwrap_or_default();
            black_box(serde_json::to_vec(&v).unwrap_or_default())
        })
    });
    group.bench_function("render: parse, merge, serialise the patch", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&review)).unwrap_or_default();
            let request = &v["request"];
            let namespace = request["namespace"].as_str().unwrap_or("default");
            // as the webhook asks for it: the patch written as JSON text while the diff walks
            let out = match decide(&config, namespace, &request["object"], Want::Json) {
                Ok(Decision::Mutated { outcome, .. }) => outcome.patch_json.unwrap_or_default(),
                _ => panic!("the fixture must mutate"),
            };
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(render, benches);
criterion_main!(render);
