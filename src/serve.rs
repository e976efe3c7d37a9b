//! `podtailor serve`: the HTTPS admission webhook and its admin port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

use crate::idle::IdleTimeout;
use crate::store::{Config, NamespaceTemplates, Overrides, cluster, files, podtemplates, reload};
use crate::tls::{self, CertStore};
use crate::webhook::{self, AppState, Shared};

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The platform's default worker pod (a v1 Pod, YAML or JSON); reloaded when it changes.
    #[arg(long, value_name = "FILE", env = "PODTAILOR_TEMPLATE")]
    pub template: PathBuf,
    /// A directory of PodOverride files (*.yaml, *.yml, *.json); reloaded when it changes.
    /// Files mode; not with --cluster.
    // Required unless --cluster, and not with it: checked by `usage_error`, because clap counts
    // PODTAILOR_CLUSTER=false as --cluster being present.
    #[arg(long, value_name = "DIR", env = "PODTAILOR_OVERRIDES")]
    pub overrides: Option<PathBuf>,
    /// Cluster mode: the PodOverride objects of every namespace, watched through the API
    /// server (in a pod: its service account; elsewhere KUBECONFIG or ~/.kube/config). An
    /// override applies to pods of its own namespace. /readyz fails until the first full list;
    /// admission never waits on the API server, and on API errors the last known set keeps
    /// serving.
    #[arg(long, env = "PODTAILOR_CLUSTER")]
    pub cluster: bool,
    /// Cluster mode: a namespace's PodTemplate (core/v1) of this name replaces the template
    /// for that namespace's pods. The PodTemplates of this name are watched in every
    /// namespace (/readyz fails until their first full list); one that does not load denies
    /// its namespace's pods with the reason. Empty: no namespace has its own template.
    #[arg(long, value_name = "NAME", env = "PODTAILOR_NAMESPACE_TEMPLATE_NAME", default_value = files::NAMESPACE_TEMPLATE_NAME)]
    pub namespace_template_name: String,
    /// The serving certificate chain (PEM); reloaded when it changes.
    #[arg(long, value_name = "FILE", env = "PODTAILOR_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// The serving certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "PODTAILOR_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Where the webhook listens (HTTPS: POST /mutate).
    #[arg(long, value_name = "ADDR", env = "PODTAILOR_LISTEN", default_value = "0.0.0.0:8443", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Where the admin port listens (plain HTTP: /healthz, /readyz, /metrics). Not 8080: that
    /// is where kubectl without a kubeconfig falls back to.
    #[arg(long, value_name = "ADDR", env = "PODTAILOR_ADMIN_LISTEN", default_value = "0.0.0.0:8081", value_parser = parse_listen)]
    pub admin_listen: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, env = "PODTAILOR_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How often the template, the overrides and the certificate are checked for changes.
    #[arg(long, value_name = "SECONDS", env = "PODTAILOR_RELOAD_INTERVAL", default_value_t = 2.0)]
    pub reload_interval: f64,
    /// A connection is closed when its TLS handshake or a request's headers take longer than
    /// this.
    #[arg(long, value_name = "SECONDS", env = "PODTAILOR_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// A connection is closed when nothing moves on it for this long (longer than the API
    /// server's own idle timeout, 90 s, so it is the client that closes idle connections).
    #[arg(long, value_name = "SECONDS", env = "PODTAILOR_IDLE_TIMEOUT", default_value_t = 120.0)]
    pub idle_timeout: f64,
    /// On SIGTERM or SIGINT, in-flight requests get this long to finish.
    #[arg(long, value_name = "SECONDS", env = "PODTAILOR_SHUTDOWN_GRACE", default_value_t = 10.0)]
    pub shutdown_grace: f64,
}

impl ServeArgs {
    /// What is wrong with the arguments that clap cannot check: exactly one source of
    /// overrides, `--overrides` or `--cluster` (clap would count PODTAILOR_CLUSTER=false as
    /// `--cluster` given).
    pub fn usage_error(&self) -> Option<(clap::error::ErrorKind, &'static str)> {
        use clap::error::ErrorKind;
        match (self.cluster, &self.overrides) {
            (true, Some(_)) => {
                Some((ErrorKind::ArgumentConflict, "the argument '--overrides <DIR>' cannot be used with '--cluster'"))
            }
            (false, None) => Some((
                ErrorKind::MissingRequiredArgument,
                "the following required arguments were not provided:\n  --overrides <DIR> (or --cluster)",
            )),
            _ if !self.namespace_template_name.is_empty()
                && crate::validate::dns_subdomain(&self.namespace_template_name).is_err() =>
            {
                Some((
                    ErrorKind::ValueValidation,
                    "--namespace-template-name: not a PodTemplate name (lowercase letters, digits, '-' and '.'; empty: none)",
                ))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log filter when `RUST_LOG` is not set: info, but rustls's complaints about a client's
/// hello only at error. One such is a warning for each connection of a client that sends an
/// IP address as its server name (wrk and oha do; the API server, a Go client, does not);
/// rustls ignores it and the handshake goes on.
pub const DEFAULT_LOG_FILTER: &str = "info,rustls::msgs::handshake=error";

/// Starts logging to stderr: `RUST_LOG` filters (default [`DEFAULT_LOG_FILTER`]).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // try_init also forwards the `log` records of the libraries (rustls) to tracing
    let _already =
        tracing_subscriber::util::SubscriberInitExt::try_init(subscriber(format, filter, std::io::stderr, ansi));
}

/// The server's log subscriber: `format` written to `writer`, filtered by `filter`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => {
            Box::new(builder.json().flatten_event(true).with_current_span(true).with_span_list(false).finish())
        }
    }
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{name} must be a positive number of seconds"))
}

/// The server's intervals and timeouts, checked once.
#[derive(Clone, Copy, Debug)]
struct Timing {
    reload: Duration,
    header: Duration,
    idle: Duration,
    grace: Duration,
}

impl Timing {
    fn from_args(args: &ServeArgs) -> anyhow::Result<Timing> {
        Ok(Timing {
            reload: seconds("reload-interval", args.reload_interval)?,
            header: seconds("header-timeout", args.header_timeout)?,
            idle: seconds("idle-timeout", args.idle_timeout)?,
            grace: seconds("shutdown-grace", args.shutdown_grace)?,
        })
    }
}

/// A server bound to its ports, ready to run.
pub struct Server {
    pub state: Shared,
    pub certs: Arc<CertStore>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    listener: TcpListener,
    admin: TcpListener,
    args: ServeArgs,
    timing: Timing,
    seen: reload::Seen,
    source: Source,
    /// The API server's address in cluster mode, for the log lines of the watch.
    api_server: Option<String>,
    stop: CancellationToken,
}

/// Where a server's PodOverrides come from, decided once at bind.
enum Source {
    Files(PathBuf),
    Cluster(kube::Client),
}

impl Server {
    /// Loads the configuration and the certificate and binds both ports; any problem here is
    /// an error, before anything is served.
    pub async fn bind(args: ServeArgs) -> anyhow::Result<Server> {
        // before the Kubernetes client, whose TLS needs it too (bind_with installs it for
        // callers that come with their own client)
        tls::install_crypto_provider();
        let (client, api_server) = if args.cluster {
            // kube's error already carries its causes in its message: one line, not a chain
            let config = kube::Config::infer().await.map_err(|e| {
                anyhow::anyhow!(
                    "--cluster: cannot configure a Kubernetes client (in a pod: its service account; elsewhere: KUBECONFIG or ~/.kube/config): {e}"
                )
            })?;
            let api_server = config.cluster_url.to_string();
            let client = kube::Client::try_from(config)
                .map_err(|e| anyhow::anyhow!("--cluster: cannot make a Kubernetes client for {api_server}: {e}"))?;
            (Some(client), Some(api_server))
        } else {
            (None, None)
        };
        let mut server = Server::bind_with(args, client).await?;
        server.api_server = api_server;
        Ok(server)
    }

    /// [`Server::bind`] with the Kubernetes client given: with one, the overrides come from
    /// the cluster through it (and `args.overrides` is not read).
    pub async fn bind_with(args: ServeArgs, client: Option<kube::Client>) -> anyhow::Result<Server> {
        tls::install_crypto_provider();
        let timing = Timing::from_args(&args)?;
        let source = match (client, &args.overrides) {
            (Some(client), _) => Source::Cluster(client),
            (None, Some(dir)) => Source::Files(dir.clone()),
            (None, None) => anyhow::bail!("--overrides DIR is required (or --cluster)"),
        };
        let overrides_dir = match &source {
            Source::Files(dir) => Some(dir.as_path()),
            Source::Cluster(_) => None,
        };
        let seen = reload::Seen::now(&args.template, overrides_dir, &args.tls_cert, &args.tls_key);
        // the flag first: `--overrides DIR: why`, one cause (the file errors carry their own)
        let template = Arc::new(files::load_template(&args.template).map_err(|e| anyhow::anyhow!("--template {e}"))?);
        let overrides = match overrides_dir {
            Some(dir) => files::load_overrides(dir).map_err(|e| anyhow::anyhow!("--overrides {e}"))?,
            None => Overrides::unlisted(),
        };
        // in cluster mode the namespaces' PodTemplates are followed, and listed before ready
        let namespace_templates = match &source {
            Source::Cluster(_) if !args.namespace_template_name.is_empty() => {
                NamespaceTemplates::unlisted(args.namespace_template_name.clone())
            }
            _ => NamespaceTemplates::default(),
        };
        let config = Config { template, overrides, namespace_templates };
        let certs = CertStore::new(certificate(&args)?);
        let listener = listen(args.listen, "--listen").await?;
        let admin = listen(args.admin_listen, "--admin-listen").await?;
        let state = AppState::new(config);
        Ok(Server {
            addr: listener.local_addr()?,
            admin_addr: admin.local_addr()?,
            state,
            certs,
            listener,
            admin,
            args,
            timing,
            seen,
            source,
            api_server: None,
            stop: CancellationToken::new(),
        })
    }

    /// Cancelling this token shuts the server down gracefully.
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Serves until the stop token is cancelled, then drains in-flight requests.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server { state, certs, addr, admin_addr, listener, admin, args, timing, seen, source, api_server, stop } =
            self;
        let Timing { reload: every, header: header_timeout, idle: idle_timeout, grace } = timing;
        let tasks = TaskTracker::new();
        tasks.spawn(reload::watch_template(state.clone(), args.template.clone(), seen, every, stop.clone()));
        let source = match source {
            Source::Cluster(client) => {
                // the watch's log lines name the API server (an unreachable one, say)
                let span =
                    tracing::info_span!("cluster", server = api_server.as_deref().unwrap_or("(the client given)"));
                if !args.namespace_template_name.is_empty() {
                    let follow = podtemplates::follow(
                        state.clone(),
                        client.clone(),
                        args.namespace_template_name.clone(),
                        stop.clone(),
                    );
                    tasks.spawn(follow.instrument(span.clone()));
                }
                tasks.spawn(cluster::follow(state.clone(), client, stop.clone()).instrument(span));
                "cluster"
            }
            Source::Files(dir) => {
                tasks.spawn(reload::watch_overrides(state.clone(), dir, seen, every, stop.clone()));
                "files"
            }
        };
        tasks.spawn(reload::watch_certificate(
            state.clone(),
            certs.clone(),
            args.tls_cert.clone(),
            args.tls_key.clone(),
            seen,
            every,
            stop.clone(),
        ));
        let admin_stop = stop.clone();
        let admin_app = webhook::admin_router(state.clone());
        tasks.spawn(async move {
            let served = axum::serve(admin, admin_app).with_graceful_shutdown(admin_stop.cancelled_owned()).await;
            if let Err(e) = served {
                warn!(error = %e, "admin server stopped");
            }
        });
        let acceptor = TlsAcceptor::from(tls::server_config(certs)?);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(250);
        let builder = Arc::new(builder);
        let service = TowerToHyperService::new(webhook::router(state.clone()));
        info!(%addr, %admin_addr, source, overrides = state.config().overrides.len(), "serving");
        let connections = TaskTracker::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // out of file descriptors and the like: wait a little, keep serving
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(e) = stream.set_nodelay(true) {
                debug!(error = %e, %peer, "cannot set TCP_NODELAY");
            }
            let (acceptor, builder, service, stop) = (acceptor.clone(), builder.clone(), service.clone(), stop.clone());
            connections.spawn(async move {
                let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => return debug!(%peer, "TLS handshake timed out"),
                };
                let io = TokioIo::new(IdleTimeout::new(tls, idle_timeout));
                let connection = builder.serve_connection(io, service);
                tokio::pin!(connection);
                let served = tokio::select! {
                    served = connection.as_mut() => served,
                    _ = stop.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(e) = served {
                    debug!(error = %e, %peer, "connection ended with an error");
                }
            });
        }
        drop(listener);
        info!(grace_seconds = grace.as_secs_f64(), "shutting down: no new connections, finishing in-flight requests");
        connections.close();
        tasks.close();
        if tokio::time::timeout(grace, async { tokio::join!(connections.wait(), tasks.wait()) }).await.is_err() {
            warn!("shutdown grace period over: closing the remaining connections");
        }
        info!("stopped");
        Ok(())
    }
}

/// The serving certificate and key, or an error that names the flag of the file at fault
/// and, for a missing file, how to make development ones.
fn certificate(args: &ServeArgs) -> anyhow::Result<rustls::sign::CertifiedKey> {
    tls::load(&args.tls_cert, &args.tls_key).map_err(|e| {
        let path = match &e {
            crate::Error::Read { path, .. } | crate::Error::Config { path, .. } => Some(path),
            crate::Error::Input { .. } | crate::Error::Flag { .. } => None,
        };
        let flag = if path == Some(&args.tls_key) { "--tls-key" } else { "--tls-cert" };
        let missing = matches!(&e, crate::Error::Read { error, .. } if error.kind() == std::io::ErrorKind::NotFound);
        let hint = if missing { " (`make certs` writes a development certificate and key under certs/)" } else { "" };
        anyhow::anyhow!("{flag} {e}{hint}")
    })
}

/// A listener on `addr`, or an error that says which flag picks another address.
async fn listen(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!(" (another process listens there: stop it, or choose another address with {flag})")
            }
            _ => String::new(),
        };
        anyhow::anyhow!("{flag} {addr}: cannot listen: {e}{hint}")
    })
}

/// An address to listen on, `IP:PORT`; the error gives an example.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        let example = match s.parse::<u16>() {
            Ok(port) => format!("127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface)"),
            Err(_) => "127.0.0.1:8443 or 0.0.0.0:8443".to_owned(),
        };
        format!("{s:?} is not an address and port: expected IP:PORT, like {example}")
    })
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Panics are logged as errors, in the log's format (in a review's span: with its uid), instead
/// of Rust's text on stderr. A handler's panic is caught and answered (the webhook module); the
/// server goes on.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("no message");
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        error!(panic = message, %location, "panicked");
    }));
}

/// `podtailor serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    log_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = Server::bind(args).await?;
        let stop = server.stopper();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("signal received");
            stop.cancel();
        });
        server.run().await
    })
}
