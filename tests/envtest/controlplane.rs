//! etcd and kube-apiserver on free loopback ports, the way controller-runtime's envtest starts
//! them: generated certificates, an admin user in `system:masters`, RBAC authorization,
//! service-account signing keys and the default admission plugins (ServiceAccount among them).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

pub type Result<T, E = String> = std::result::Result<T, E>;

/// The three binaries: from `KUBEBUILDER_ASSETS` (the envtest convention) or, by default,
/// `target/envtest/bin` (built by `make envtest-bin` from tests/envtest/go.mod).
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
}

impl Binaries {
    /// The binaries, or why they are not there.
    pub fn find() -> Result<Binaries> {
        let (dir, from) = match std::env::var_os("KUBEBUILDER_ASSETS") {
            Some(dir) => (PathBuf::from(dir), "KUBEBUILDER_ASSETS"),
            None => (PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/envtest/bin"), "the default"),
        };
        let path = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "no {name} in {} ({from}): `make envtest-bin` builds the control plane from \
                     tests/envtest/go.mod (needs Go), or set KUBEBUILDER_ASSETS",
                    dir.display()
                ))
            }
        };
        Ok(Binaries { etcd: path("etcd")?, kube_apiserver: path("kube-apiserver")?, kubectl: path("kubectl")? })
    }
}

/// A free TCP port on 127.0.0.1 (free when asked: the usual small race, as envtest has it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("a free port: {e}"))
}

/// A process of the harness. It runs under a small shell that kills it when the harness's end
/// of its standard input closes, so nothing outlives the test binary, however that ends
/// (a failed test, a panic, a signal).
pub struct Process {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null &
c=$!
read -r _ <&3
kill -TERM "$c" 2>/dev/null
i=0
while kill -0 "$c" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL "$c" 2>/dev/null
wait "$c""#;

impl Process {
    pub fn start(name: &str, program: &Path, args: &[String], envs: &[(&str, &str)], log: PathBuf) -> Result<Process> {
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new("sh");
        command.arg("-c").arg(WATCHDOG).arg("sh").arg(program).args(args);
        command.stdin(Stdio::piped()).stdout(out).stderr(err);
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|e| format!("start {name} ({}): {e}", program.display()))?;
        let stdin = child.stdin.take();
        Ok(Process { name: name.to_owned(), log, child, stdin })
    }

    /// The process id of the program itself (the child of its watchdog shell).
    pub fn pid(&self) -> Option<u32> {
        let wrapper = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it (TERM, then KILL after 10 s) and waits for it.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log, for a failure message.
    pub fn tail(&self, lines: usize) -> String {
        let Ok(file) = std::fs::File::open(&self.log) else { return String::new() };
        let all: Vec<String> = BufReader::new(file).lines().map_while(|l| l.ok()).collect();
        let mut out = format!("--- last lines of {} ({}) ---\n", self.name, self.log.display());
        for line in &all[all.len().saturating_sub(lines)..] {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA that signs serving and client certificates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(Ca { pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// A serving certificate for `names` (DNS names or IP addresses).
    pub fn serving(&self, cn: &str, names: &[&str]) -> Result<Pair> {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate: the user `cn` in the group `org`.
    pub fn client(&self, cn: &str, org: &str) -> Result<Pair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, org);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Pair> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        Ok(Pair { cert: cert.pem(), key: key.serialize_pem() })
    }
}

pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A kubeconfig for `server` trusting `ca_pem`, with a client certificate or a bearer token.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &User<'_>) -> String {
    let user = match user {
        User::Certificate(pair) => {
            format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64(&pair.cert), b64(&pair.key))
        }
        User::Token(token) => format!("    token: {token}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\nusers:\n- name: envtest\n  user:\n{user}contexts:\n- name: envtest\n  \
         context: {{cluster: envtest, user: envtest}}\ncurrent-context: envtest\n",
        b64(ca_pem)
    )
}

pub enum User<'a> {
    Certificate(&'a Pair),
    Token(&'a str),
}

/// A client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    Client::try_from(config).map_err(|e| format!("client: {e}"))
}

/// A running control plane. Dropping it stops both processes.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub server: String,
    pub ca: Ca,
    /// The admin's kubeconfig (system:masters).
    pub kubeconfig: PathBuf,
    pub admin: Client,
    /// The API server, then etcd: stopped in that order.
    processes: std::sync::Mutex<Vec<Process>>,
}

impl ControlPlane {
    pub async fn start(bins: &Binaries, dir: &Path, extra_apiserver_args: &[String]) -> Result<ControlPlane> {
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path)
        };
        let ca = Ca::new("envtest CA")?;
        let serving = ca.serving(
            "kube-apiserver",
            &["127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        )?;
        let admin = ca.client("envtest-admin", "system:masters")?;
        let sa_key = KeyPair::generate().map_err(|e| e.to_string())?;
        let ca_file = write("ca.crt", &ca.pem)?;
        let cert_file = write("apiserver.crt", &serving.cert)?;
        let key_file = write("apiserver.key", &serving.key)?;
        let sa_file = write("sa.key", &sa_key.serialize_pem())?;
        let sa_public = write("sa.pub", &sa_key.public_key_pem())?;

        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        let mut etcd = Process::start("etcd", &bins.etcd, &etcd_args, &[], dir.join("etcd.log"))?;

        let port = free_port()?;
        let mut args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // the kubernetes Service's endpoints may not be on loopback: nothing reconciles them
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", cert_file.display()),
            format!("--tls-private-key-file={}", key_file.display()),
            format!("--client-ca-file={}", ca_file.display()),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", sa_public.display()),
            format!("--service-account-signing-key-file={}", sa_file.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--v=1".into(),
        ];
        args.extend_from_slice(extra_apiserver_args);
        let mut apiserver =
            Process::start("kube-apiserver", &bins.kube_apiserver, &args, &[], dir.join("kube-apiserver.log"))?;

        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = write("admin.kubeconfig", &kubeconfig(&server, &ca.pem, &User::Certificate(&admin)))?;
        let client = client(&kubeconfig).await?;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
            match client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => break,
                Ok(text) => last = text,
                Err(e) => last = e.to_string(),
            }
            if !etcd.running() || !apiserver.running() || Instant::now() > deadline {
                return Err(format!(
                    "the control plane did not get ready (last /readyz: {last})\n{}{}",
                    etcd.tail(20),
                    apiserver.tail(40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let processes = std::sync::Mutex::new(vec![apiserver, etcd]);
        Ok(ControlPlane { dir: dir.to_owned(), server, ca, kubeconfig, admin: client, processes })
    }

    /// Stops the API server, then etcd.
    pub fn stop(&self) {
        if let Ok(mut processes) = self.processes.lock() {
            for mut p in processes.drain(..) {
                p.stop();
            }
        }
    }

    /// The last lines of the API server's log.
    pub fn apiserver_tail(&self, lines: usize) -> String {
        self.processes.lock().ok().and_then(|p| p.first().map(|a| a.tail(lines))).unwrap_or_default()
    }
}
