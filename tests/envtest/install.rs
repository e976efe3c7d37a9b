//! podtailor installed the way users install it: the CRD, RBAC and both webhook configurations
//! from manifests/ through tests/envtest/overlay (or from the Helm chart, charts/podtailor), and
//! `podtailor serve --cluster` running as a host process with a kubeconfig for the `podtailor`
//! ServiceAccount (a TokenRequest token), so it has exactly the permissions of manifests/.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::controlplane::{Binaries, Ca, ControlPlane, Process, Result, User, b64, free_port, kubeconfig};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The PodOverride resource, for dynamic clients.
pub fn podoverride_resource() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "podtailor.dev".into(),
        version: "v1alpha1".into(),
        api_version: "podtailor.dev/v1alpha1".into(),
        kind: "PodOverride".into(),
        plural: "podoverrides".into(),
    }
}

/// kubectl as the admin, with `stdin` if given.
pub fn kubectl(bins: &Binaries, config: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut command = Command::new(&bins.kubectl);
    command.args(args).env("KUBECONFIG", config).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().map_err(|e| format!("kubectl {}: {e}", args.join(" ")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("kubectl stdin: {e}"))?;
    }
    child.wait_with_output().map_err(|e| format!("kubectl {}: {e}", args.join(" ")))
}

/// kubectl that must succeed: its standard output.
pub fn kubectl_ok(bins: &Binaries, config: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let out = kubectl(bins, config, args, stdin)?;
    if !out.status.success() {
        return Err(format!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// helm: HELM, else the one `make helm-bin` builds.
pub fn helm_path() -> Result<PathBuf> {
    let path = std::env::var_os("HELM").map_or_else(|| repo().join("target/tools/bin/helm"), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no helm at {}: `make helm-bin` builds it from tests/helm/go.mod (needs Go), or set HELM",
            path.display()
        ))
    }
}

/// helm with the admin's kubeconfig, its cache and configuration under the control plane's
/// directory: its standard output, or why it failed.
pub fn helm_ok(helm: &Path, cp: &ControlPlane, args: &[&str]) -> Result<String> {
    let home = cp.dir.join("helm");
    let out = Command::new(helm)
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("helm {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("helm {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The webhook's serving certificate files and the CA the webhook configurations trust.
pub struct WebhookTls {
    pub ca: Ca,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl WebhookTls {
    pub fn new(dir: &Path) -> Result<WebhookTls> {
        let tls =
            WebhookTls { ca: Ca::new("podtailor envtest CA")?, cert: dir.join("tls.crt"), key: dir.join("tls.key") };
        tls.rotate()?;
        Ok(tls)
    }

    /// Writes a new serving certificate and key from the same CA, as a renewed Secret's mount
    /// would: the key first to a temporary name, then both renamed into place.
    pub fn rotate(&self) -> Result<()> {
        let pair = self.ca.serving("podtailor", &["127.0.0.1", "localhost"])?;
        for (path, text) in [(&self.cert, &pair.cert), (&self.key, &pair.key)] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// `podtailor serve --cluster`, as the podtailor ServiceAccount.
pub struct Webhook {
    pub port: u16,
    pub admin_port: u16,
    pub template: PathBuf,
    pub tls: WebhookTls,
    pub kubeconfig: PathBuf,
    dir: PathBuf,
    pub process: Option<Process>,
}

impl Webhook {
    /// Applies the overlay and starts the server; ready when it has listed the PodOverrides.
    pub async fn install(bins: &Binaries, cp: &ControlPlane) -> Result<Webhook> {
        let (dir, tls, port) = Self::prepare(cp)?;
        let overlay = repo().join("tests/envtest/overlay");
        let rendered = kubectl_ok(bins, &cp.kubeconfig, &["kustomize", &overlay.to_string_lossy()], None)?;
        let rendered = rendered.replace("WEBHOOK_PORT", &port.to_string()).replace("CA_BUNDLE", &b64(&tls.ca.pem));
        kubectl_ok(bins, &cp.kubeconfig, &["apply", "-f", "-"], Some(&rendered))?;
        Self::finish(bins, cp, dir, tls, port).await
    }

    /// `helm install podtailor charts/podtailor` into podtailor-system (made by
    /// --create-namespace) with the test CA as certificates.caBundle and `values`, then each
    /// webhook's service reference rewritten to the URL on 127.0.0.1 where the server runs (as
    /// controller-runtime's envtest rewrites them; the chart's caBundle is kept), and the
    /// server started.
    pub async fn install_helm(bins: &Binaries, cp: &ControlPlane, helm: &Path, values: &[&str]) -> Result<Webhook> {
        let (dir, tls, port) = Self::prepare(cp)?;
        let chart = repo().join("charts/podtailor");
        let ca_bundle = format!("certificates.caBundle={}", b64(&tls.ca.pem));
        let mut args = vec![
            "install",
            "podtailor",
            chart.to_str().ok_or("the chart's path is not UTF-8")?,
            "--namespace",
            "podtailor-system",
            "--create-namespace",
            "--set",
            &ca_bundle,
        ];
        args.extend_from_slice(values);
        helm_ok(helm, cp, &args)?;
        for (kind, path) in
            [("mutatingwebhookconfiguration", "/mutate"), ("validatingwebhookconfiguration", "/validate")]
        {
            let patch = serde_json::json!([
                {"op": "remove", "path": "/webhooks/0/clientConfig/service"},
                {"op": "add", "path": "/webhooks/0/clientConfig/url", "value": format!("https://127.0.0.1:{port}{path}")},
            ]);
            kubectl_ok(
                bins,
                &cp.kubeconfig,
                &["patch", kind, "podtailor", "--type=json", "-p", &patch.to_string()],
                None,
            )?;
        }
        Self::finish(bins, cp, dir, tls, port).await
    }

    /// The server's directory, certificate and port.
    fn prepare(cp: &ControlPlane) -> Result<(PathBuf, WebhookTls, u16)> {
        let dir = cp.dir.join("podtailor");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tls = WebhookTls::new(&dir)?;
        Ok((dir, tls, free_port()?))
    }

    /// Once the objects are in: waits for the CRD, makes the ServiceAccount's kubeconfig and
    /// starts the server.
    async fn finish(bins: &Binaries, cp: &ControlPlane, dir: PathBuf, tls: WebhookTls, port: u16) -> Result<Webhook> {
        kubectl_ok(
            bins,
            &cp.kubeconfig,
            &["wait", "--for=condition=established", "--timeout=30s", "crd/podoverrides.podtailor.dev"],
            None,
        )?;
        let token = kubectl_ok(
            bins,
            &cp.kubeconfig,
            &["create", "token", "podtailor", "-n", "podtailor-system", "--duration=24h"],
            None,
        )?;
        let config = kubeconfig(&cp.server, &cp.ca.pem, &User::Token(token.trim()));
        let kubeconfig = dir.join("podtailor.kubeconfig");
        std::fs::write(&kubeconfig, config).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
        let template = dir.join("template.yaml");
        std::fs::copy(repo().join("examples/template.yaml"), &template).map_err(|e| format!("template: {e}"))?;
        let mut webhook = Webhook { port, admin_port: free_port()?, template, tls, kubeconfig, dir, process: None };
        webhook.start().await?;
        Ok(webhook)
    }

    /// Starts the server and waits for /readyz.
    pub async fn start(&mut self) -> Result<()> {
        let args: Vec<String> = [
            "serve",
            "--cluster",
            "--template",
            &self.template.to_string_lossy(),
            "--tls-cert",
            &self.tls.cert.to_string_lossy(),
            "--tls-key",
            &self.tls.key.to_string_lossy(),
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--admin-listen",
            &format!("127.0.0.1:{}", self.admin_port),
            "--reload-interval",
            "0.2",
            "--shutdown-grace",
            "2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let log = self.dir.join("serve.log");
        let kubeconfig = self.kubeconfig.to_string_lossy().into_owned();
        let mut process = Process::start(
            "podtailor serve",
            Path::new(env!("CARGO_BIN_EXE_podtailor")),
            &args,
            &[("KUBECONFIG", &kubeconfig), ("RUST_LOG", "info")],
            log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.admin("/readyz").await.map(|(code, _)| code == 200).unwrap_or(false) {
                break;
            }
            if !process.running() || Instant::now() > deadline {
                return Err(format!("podtailor serve did not get ready\n{}", process.tail(30)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.process = Some(process);
        Ok(())
    }

    /// Stops the server (as a crash or a rollout would leave the webhook: nothing listening).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// GET on the admin port: (status, body).
    pub async fn admin(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let response = reqwest::get(&url).await.map_err(|e| format!("{url}: {e}"))?;
        let code = response.status().as_u16();
        Ok((code, response.text().await.map_err(|e| format!("{url}: {e}"))?))
    }

    /// The sum of the metrics series whose line starts with `prefix` (a name, or a name and
    /// the first labels), 0 when there is none.
    pub async fn metric_sum(&self, prefix: &str) -> Result<f64> {
        let (_, text) = self.admin("/metrics").await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
            .sum())
    }

    /// The server's resident memory (VmRSS), KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.process.as_ref()?.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn log_tail(&self) -> String {
        self.process.as_ref().map(|p| p.tail(8)).unwrap_or_default()
    }
}
