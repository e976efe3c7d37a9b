//! Helpers shared by the integration tests: configurations built from JSON values.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use podtailor::merge::{Override, Template};
use podtailor::store::{Config, Loaded, Overrides};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;

/// A configuration from a template and `(namespace, name, spec)` overrides.
pub fn config(template: Value, overrides: &[(Option<&str>, &str, Value)]) -> Config {
    let mut set = Overrides::default();
    for (ns, name, spec) in overrides {
        let spec = serde_json::from_value(spec.clone()).unwrap_or_else(|e| panic!("override {name}: {e}"));
        let loaded = Loaded {
            namespace: ns.map(str::to_owned),
            r#override: Arc::new(Override::new(*name, spec)),
            origin: "test".into(),
        };
        assert!(set.insert(loaded).is_ok(), "duplicate override {name}");
    }
    Config::new(Arc::new(Template::new(template)), set)
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn examples() -> PathBuf {
    repo().join("examples")
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A test CA and serving certificates it signs.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "podtailor test CA");
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let ca = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        Pki { ca_pem: ca.pem(), issuer: Issuer::new(params, key) }
    }

    /// A serving certificate for localhost and 127.0.0.1: (cert PEM, key PEM, cert DER).
    pub fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.signed_by(&key, &self.issuer).unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// An HTTPS client that trusts only `ca_pem`; HTTP/1.1 only, or HTTP/2 offered by ALPN.
pub fn client(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut b = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).add_root_certificate(ca);
    if http1_only {
        b = b.http1_only();
    }
    b.timeout(std::time::Duration::from_secs(10)).build().unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until `check` holds, at most 10 s.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// What a panic must end as: exit code 1 and one line naming the command, with none of Rust's
/// panic text (the fault-injection build makes the decision panic on a pod naming
/// [`podtailor::mutate::PANIC_OVERRIDE`]).
pub fn assert_internal_error(out: &std::process::Output, command: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("podtailor {command}: internal error (a bug in podtailor, at src/")),
        "{stderr}"
    );
    assert!(stderr.contains("fault injection"), "the panic's message is missing: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
}
