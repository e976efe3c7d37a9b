//! The control-plane tier: a real kube-apiserver and etcd on loopback (tests/envtest/
//! controlplane.rs), podtailor installed from manifests/ (tests/envtest/install.rs), and
//! scenarios in which the API server itself calls the webhook (tests/envtest/scenarios.rs).
//!
//! `make envtest` builds the binaries from tests/envtest/go.mod and runs this binary
//! (`cargo test --test envtest`, a harness of its own so that one control plane serves every
//! scenario and is stopped at the end). Without the binaries it prints one line saying why and
//! runs nothing; with `PODTAILOR_ENVTEST=require` (CI) that is a failure. A scenario never
//! passes without a control plane.

// shared with benches/cluster.rs, which uses other parts of them
#[allow(dead_code)]
#[path = "envtest/controlplane.rs"]
mod controlplane;
#[allow(dead_code)]
#[path = "envtest/install.rs"]
mod install;
#[path = "envtest/kubelet.rs"]
mod kubelet;
#[path = "envtest/scenarios.rs"]
mod scenarios;

use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let required = std::env::var("PODTAILOR_ENVTEST").is_ok_and(|v| v == "require");
    let names = scenarios::names();
    if args.list {
        let trials = names.iter().map(|n| Trial::test(*n, || Ok(()))).collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let bins = match controlplane::Binaries::find() {
        Ok(bins) => bins,
        Err(why) if required => {
            eprintln!("envtest: FAILED: the control-plane tier is required (PODTAILOR_ENVTEST=require), but {why}");
            return ExitCode::FAILURE;
        }
        Err(why) => {
            println!("envtest: skipped, no scenario ran: {why}");
            return ExitCode::SUCCESS;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("envtest: a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let env = match runtime.block_on(scenarios::Env::start(bins)) {
        Ok(env) => Arc::new(env),
        Err(e) => {
            eprintln!("envtest: the control plane or podtailor did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("envtest: control plane and podtailor ready in {:.1} s", started.elapsed().as_secs_f64());
    let handle = runtime.handle().clone();
    // One scenario at a time: some stop the webhook or rotate its certificate.
    let mut args = args;
    args.test_threads = Some(1);
    let trials = names
        .iter()
        .map(|name| {
            // a prerequisite besides the control plane (the venv's Airflow) missing: skipped
            // with one line, or, where the tier is required, run to fail saying what is missing
            let selected = args.filter.as_deref().is_none_or(|f| name.contains(f));
            let unavailable = if required || !selected { None } else { scenarios::unavailable(name) };
            if let Some(why) = &unavailable {
                println!("envtest: {name} skipped: {why}");
            }
            let (env, handle, name) = (env.clone(), handle.clone(), *name);
            Trial::test(name, move || {
                let result = handle.block_on(scenarios::run(name, &env));
                result.map_err(|e| Failed::from(format!("{e}\n{}", handle.block_on(env.logs()))))
            })
            .with_ignored_flag(unavailable.is_some())
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    runtime.block_on(env.stop());
    drop(env);
    conclusion.exit_code()
}
