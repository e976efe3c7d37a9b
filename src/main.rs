use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use podtailor::launch::{self, LaunchArgs};
use podtailor::render::{self, RenderArgs};
use podtailor::serve::{self, ServeArgs};

// The merge is allocation-heavy (JSON values); mimalloc makes a render about a third cheaper
// than the system allocator (see `make bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fits worker pods to a platform's default template and per-task PodOverrides, at admission.
///
/// Pods opt in with the annotation `podtailor.dev/override: <names>` (comma-separated
/// PodOverride names in the pod's namespace, applied in order; empty: the template only).
#[derive(Parser, Debug)]
#[command(name = "podtailor", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what the webhook would do to a pod: the desired pod or the JSON patch.
    ///
    /// Exit codes: 0 done, 1 a problem with the input or the configuration, 2 usage.
    Render(RenderArgs),
    /// Serve the mutating admission webhook over HTTPS (POST /mutate), with /healthz, /readyz
    /// and /metrics on a plain-HTTP admin port. Template, overrides and certificate reload
    /// when their files change; SIGTERM or SIGINT drains in-flight requests and stops.
    Serve(ServeArgs),
    /// Create a bare pod that opts in, follow it to its end and exit with its exit code; or
    /// run a batch of tasks (-f); or print the pod(s) (--dry-run).
    ///
    /// Exit codes: 0 success, N the task's container's, 1 a podtailor error (denied, API
    /// error, a failed batch), 2 usage, 124 --timeout expired, 130 interrupted.
    Launch(LaunchArgs),
    /// Print the PodOverride CustomResourceDefinition (YAML).
    Crd,
}

/// A panic in a command ends it like any other failure: one line on standard error, naming the
/// command, and exit code 1; not Rust's panic message with its backtrace note. The hook exits
/// at once, whichever thread panicked (the launcher's tasks run on tokio's), so a panic never
/// leaves a command running on.
fn exit_on_panic(command: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        use std::io::Write;
        let message = info.payload_as_str().unwrap_or("no message");
        let place = info.location().map(|l| format!(", at {}:{}", l.file(), l.line())).unwrap_or_default();
        // a closed standard error must not make a second panic
        let _closed =
            writeln!(std::io::stderr(), "podtailor {command}: internal error (a bug in podtailor{place}): {message}");
        std::process::exit(1);
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Render(_) => exit_on_panic("render"),
        Command::Launch(_) => exit_on_panic("launch"),
        Command::Crd => exit_on_panic("crd"),
        // the server answers a review whose handler panicked and logs the panic (serve::run)
        Command::Serve(_) => {}
    }
    match cli.command {
        Command::Render(args) => match render::run(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podtailor render: {e}");
                ExitCode::from(1)
            }
        },
        Command::Crd => match podtailor::crd::definition_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podtailor crd: {e}");
                ExitCode::from(1)
            }
        },
        Command::Launch(args) => ExitCode::from(launch::run(args)),
        Command::Serve(args) => {
            if let Some((kind, message)) = args.usage_error() {
                let mut command = Cli::command();
                let serve = command.find_subcommand_mut("serve").map(std::mem::take).unwrap_or_default();
                serve.bin_name("podtailor serve").error(kind, message).exit();
            }
            match serve::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("podtailor serve: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
