use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use podtailor::launch::{self, LaunchArgs};
use podtailor::policy::{self, PolicyArgs};
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
    /// Print the template and the overrides as native admission policies (YAML for
    /// `kubectl apply -f -`): a MutatingAdmissionPolicy that merges as the webhook does, for
    /// pods that opt in, in the annotation's order, and a ValidatingAdmissionPolicy that
    /// denies unknown or repeated names (admissionregistration.k8s.io/v1, no webhook).
    ///
    /// The overrides are compiled into the policy, from files or from the cluster
    /// (--cluster): run it again when one changes. What the policy could not do as the webhook
    /// does (priorityClassName, tolerations, envFrom in an override, {{namespace}}, ...) is
    /// refused, naming the field (docs/policy.md).
    ///
    /// Experimental: proven equal to the webhook on kube-apiserver 1.37.2 for the render
    /// corpus it accepts, with the seed pod and `podtailor launch` through it; its CEL cost is
    /// measured far under the API server's limit (docs/policy.md).
    ///
    /// Exit codes: 0 done, 1 refused or a problem with the configuration, 2 usage.
    Policy(PolicyArgs),
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

/// Logging for `render` and `launch --dry-run`: warnings (an overrides directory's subdirectories that
/// are not read, say) on standard error, one line each worded as the command's own
/// (`podtailor render: warning: ...`); `RUST_LOG` filters.
fn init_tool_logging(command: &'static str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _already = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(ToolLine(command))
        .try_init();
}

/// A log event as a line of the command `.0`: `podtailor render: warning: MESSAGE`.
struct ToolLine(&'static str);

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for ToolLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(writer, "podtailor {}: {level}: ", self.0)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The command line, parsed; a usage error exits 2. `launch` given its command without `--`
/// (`launch sh -c true`) is told where the command goes.
fn parse() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut error = match Cli::try_parse_from(&args) {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    let unexpected = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if error.kind() == ErrorKind::UnknownArgument && !arg.starts_with('-') => {
            Some(arg.clone())
        }
        _ => None,
    };
    if let Some(arg) = unexpected
        && args.get(1).is_some_and(|a| a == "launch")
        && !args.iter().any(|a| a == "--")
        && let Some(at) = args.iter().rposition(|a| *a == arg)
    {
        // quoted as a shell would need it, so the line can be copied
        let quote = |a: &String| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        };
        let command = args[at..].iter().map(quote).collect::<Vec<_>>().join(" ");
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                format!("the command to run goes after `--`: podtailor launch [OPTIONS] -- {command}").into(),
            ]),
        );
    }
    error.exit()
}

fn main() -> ExitCode {
    let cli = parse();
    match &cli.command {
        Command::Render(_) => exit_on_panic("render"),
        Command::Launch(_) => exit_on_panic("launch"),
        Command::Crd => exit_on_panic("crd"),
        Command::Policy(_) => exit_on_panic("policy"),
        // the server answers a review whose handler panicked and logs the panic (serve::run)
        Command::Serve(_) => {}
    }
    match &cli.command {
        Command::Render(_) => init_tool_logging("render"),
        Command::Policy(_) => init_tool_logging("policy"),
        Command::Launch(a) if a.dry_run => init_tool_logging("launch"),
        _ => {}
    }
    match cli.command {
        Command::Render(args) => match render::run(&args) {
            Ok(rendered) => {
                for warning in &rendered.warnings {
                    eprintln!("podtailor render: warning: {warning}");
                }
                print!("{}", rendered.text);
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
        Command::Policy(args) => match policy::run(&args) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podtailor policy: {e}");
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
