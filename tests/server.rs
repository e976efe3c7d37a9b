//! A real server on 127.0.0.1: real TLS verified against a test CA, real HTTP/1.1 and HTTP/2
//! clients, hot reload by Kubernetes-style `..data` symlink swaps with no failed request, a
//! certificate rotation, timeouts for connections that send nothing, and graceful shutdown.

mod common;

use common::{Pki, client, eventually};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use podtailor::serve::{LogFormat, ServeArgs, Server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TEMPLATE: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {tier: VERSION}\nspec:\n  restartPolicy: Never\n  containers: [{name: base, image: 'worker:1'}]\n";
const OVERRIDE: &str = "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: NAME}\nspec: {resources: {limits: {cpu: '1'}}}\n";

/// A directory laid out like a mounted ConfigMap or Secret: real files under `..vN`, a
/// `..data` symlink to the current version, and visible names that are symlinks into `..data`.
struct Mounted {
    dir: PathBuf,
    version: usize,
}

impl Mounted {
    fn new(dir: PathBuf, files: &[(&str, &str)]) -> Mounted {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut m = Mounted { dir, version: 0 };
        m.swap(files);
        m
    }

    /// Publishes a new version atomically, as the kubelet does.
    fn swap(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let real = self.dir.join(&version);
        std::fs::create_dir(&real).unwrap_or_else(|e| panic!("{e}"));
        for (name, text) in files {
            std::fs::write(real.join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap_or_else(|e| panic!("{e}"));
        for (name, _) in files {
            let visible = self.dir.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &visible).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

struct Running {
    url: String,
    admin: String,
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
    pki: Pki,
    _dir: tempfile::TempDir,
    template: Mounted,
    overrides: Mounted,
    certs: Mounted,
}

async fn start() -> Running {
    start_with(1.0, 1.5).await
}

/// A server with these header and idle timeouts (seconds).
async fn start_with(header_timeout: f64, idle_timeout: f64) -> Running {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf("first");
    let template = Mounted::new(dir.path().join("template"), &[("template.yaml", &TEMPLATE.replace("VERSION", "v1"))]);
    let overrides = Mounted::new(dir.path().join("overrides"), &[("base.yaml", &OVERRIDE.replace("NAME", "base-cpu"))]);
    let certs = Mounted::new(dir.path().join("certs"), &[("tls.crt", &cert), ("tls.key", &key)]);
    let args = ServeArgs {
        template: template.path("template.yaml"),
        overrides: Some(overrides.dir.clone()),
        cluster: false,
        tls_cert: certs.path("tls.crt"),
        tls_key: certs.path("tls.key"),
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        admin_listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        log_format: LogFormat::Text,
        reload_interval: 0.05,
        header_timeout,
        idle_timeout,
        shutdown_grace: 5.0,
    };
    let server = Server::bind(args).await.unwrap_or_else(|e| panic!("bind: {e:#}"));
    let (addr, admin) = (server.addr, server.admin_addr);
    let stop = server.stopper();
    let done = tokio::spawn(server.run());
    Running {
        url: format!("https://localhost:{}/mutate", addr.port()),
        admin: format!("http://{admin}"),
        addr,
        stop,
        done,
        pki,
        _dir: dir,
        template,
        overrides,
        certs,
    }
}

fn review(uid: &str, overrides: &str) -> Value {
    let mut r = common::read_json(&common::examples().join("review.json"));
    r["request"]["uid"] = json!(uid);
    r["request"]["object"]["metadata"]["annotations"]["podtailor.dev/override"] = json!(overrides);
    r
}

/// Sends a review; returns the HTTP version, the status, and the answer.
async fn send(client: &reqwest::Client, url: &str, review: &Value) -> Result<(reqwest::Version, u16, Value), String> {
    let response = client.post(url).json(review).send().await.map_err(|e| format!("{e:?}"))?;
    let (version, status) = (response.version(), response.status().as_u16());
    let body: Value = response.json().await.map_err(|e| format!("{e:?}"))?;
    Ok((version, status, body))
}

fn tier_in(answer: &Value) -> Option<String> {
    let b64 = answer["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let patch: Value = serde_json::from_slice(&bytes).ok()?;
    patch
        .as_array()?
        .iter()
        .find(|op| op["path"] == "/metadata/labels/tier")
        .and_then(|op| op["value"].as_str())
        .map(str::to_owned)
}

async fn metrics(admin: &str) -> String {
    reqwest::get(format!("{admin}/metrics")).await.unwrap_or_else(|e| panic!("{e}")).text().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_clients_verify_against_the_ca_and_every_answer_carries_its_uid() {
    let s = start().await;
    for (http1, want) in [(true, reqwest::Version::HTTP_11), (false, reqwest::Version::HTTP_2)] {
        let c = client(&s.pki.ca_pem, http1);
        for i in 0..20 {
            let uid = format!("uid-{http1}-{i}");
            let (version, status, answer) =
                send(&c, &s.url, &review(&uid, "base-cpu")).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((version, status), (want, 200));
            assert_eq!(answer["response"]["uid"], uid.as_str());
            assert_eq!(tier_in(&answer).as_deref(), Some("v1"));
        }
        let (_, status, answer) =
            send(&c, &s.url, &review("uid-denied", "missing")).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (status, &answer["response"]["uid"], &answer["response"]["allowed"]),
            (200, &json!("uid-denied"), &json!(false))
        );
    }
    // a client that does not trust the test CA is refused
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap_or_else(|e| panic!("{e}"));
    assert!(untrusting.post(&s.url).json(&review("x", "")).send().await.is_err());
    assert_eq!(reqwest::get(format!("{}/readyz", s.admin)).await.map(|r| r.status().as_u16()).ok(), Some(200));
    s.stop.cancel();
    assert!(s.done.await.is_ok_and(|r| r.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_overrides_and_certificate_reload_by_symlink_swap_with_no_failed_request() {
    let mut s = start().await;
    let url = s.url.clone();
    let ca = s.pki.ca_pem.clone();
    let keep_going = Arc::new(AtomicBool::new(true));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for http1 in [true, false] {
        let (url, ca, keep_going, sent, failed) =
            (url.clone(), ca.clone(), keep_going.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let c = client(&ca, http1);
            let mut n = 0;
            // bounded: at most 20 000 requests or until told to stop
            while keep_going.load(Ordering::Relaxed) && n < 20_000 {
                n += 1;
                let uid = format!("load-{http1}-{n}");
                match send(&c, &url, &review(&uid, "base-cpu")).await {
                    Ok((_, 200, answer))
                        if answer["response"]["uid"] == uid.as_str() && answer["response"]["allowed"] == true => {}
                    other => {
                        eprintln!("failed request: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let c = client(&ca, true);
    let tier = |c: reqwest::Client, url: String| async move {
        send(&c, &url, &review("probe", "base-cpu")).await.ok().and_then(|(_, _, a)| tier_in(&a))
    };

    // the template
    s.template.swap(&[("template.yaml", &TEMPLATE.replace("VERSION", "v2"))]);
    eventually("the new template", || {
        let (c, url) = (c.clone(), url.clone());
        async move { tier(c, url).await.as_deref() == Some("v2") }
    })
    .await;

    // a broken template: rejected, counted, the last good one keeps serving
    s.template.swap(&[("template.yaml", "apiVersion: apps/v1\nkind: Deployment\n")]);
    let admin = s.admin.clone();
    eventually("the failed reload counted", || {
        let admin = admin.clone();
        async move { metrics(&admin).await.contains("podtailor_reloads_total{source=\"template\",result=\"failure\"} 1") }
    })
    .await;
    assert_eq!(tier(c.clone(), url.clone()).await.as_deref(), Some("v2"));
    assert_eq!(reqwest::get(format!("{}/readyz", s.admin)).await.map(|r| r.status().as_u16()).ok(), Some(200));

    // the overrides: a new one becomes usable
    let (_, _, before) =
        send(&c, &url, &review("extra-before", "base-cpu,extra")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before["response"]["allowed"], false);
    s.overrides.swap(&[
        ("base.yaml", &OVERRIDE.replace("NAME", "base-cpu")),
        ("extra.yaml", &OVERRIDE.replace("NAME", "extra")),
    ]);
    eventually("the new override", || {
        let (c, url) = (c.clone(), url.clone());
        async move {
            send(&c, &url, &review("extra-after", "base-cpu,extra"))
                .await
                .is_ok_and(|(_, _, a)| a["response"]["allowed"] == true)
        }
    })
    .await;
    assert!(metrics(&s.admin).await.contains("podtailor_overrides_loaded 2"));

    // the certificate: new connections get the new one
    let (cert, key, der) = s.pki.leaf("rotated");
    s.certs.swap(&[("tls.crt", &cert), ("tls.key", &key)]);
    let (addr, ca_pem) = (s.addr, s.pki.ca_pem.clone());
    eventually("the new certificate", || {
        let (ca_pem, der) = (ca_pem.clone(), der.clone());
        async move { peer_certificate(addr, &ca_pem).await.is_some_and(|got| got == der) }
    })
    .await;
    assert!(metrics(&s.admin).await.contains("podtailor_reloads_total{source=\"certificate\",result=\"success\"} 1"));

    tokio::time::sleep(Duration::from_millis(300)).await;
    keep_going.store(false, Ordering::Relaxed);
    for task in load {
        assert!(task.await.is_ok());
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 50, "only {sent} requests were sent during the reloads");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during the reloads");
    s.stop.cancel();
    assert!(s.done.await.is_ok_and(|r| r.is_ok()));
}

fn tls_client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    podtailor::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn tls_connect(addr: std::net::SocketAddr, ca_pem: &str) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem));
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
    connector.connect(name, tcp).await.ok()
}

async fn peer_certificate(addr: std::net::SocketAddr, ca_pem: &str) -> Option<Vec<u8>> {
    let tls = tls_connect(addr, ca_pem).await?;
    tls.get_ref().1.peer_certificates()?.first().map(|c| c.to_vec())
}

/// Reads until the peer closes; the time it took, or None if it did not close within `limit`.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_are_closed() {
    let s = start().await;
    // TLS done, no request headers ever: closed after the header timeout (1 s here)
    let mut tls = tls_connect(s.addr, &s.pki.ca_pem).await.unwrap_or_else(|| panic!("TLS connect"));
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await.is_some(), "an idle TLS connection stayed open");
    // half the headers, then silence
    let mut tls = tls_connect(s.addr, &s.pki.ca_pem).await.unwrap_or_else(|| panic!("TLS connect"));
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await.is_some(), "a slow-header connection stayed open");
    // TCP only, no TLS handshake
    let mut tcp = TcpStream::connect(s.addr).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5)).await.is_some(),
        "a connection without handshake stayed open"
    );
    // the server still serves
    let c = client(&s.pki.ca_pem, true);
    assert!(send(&c, &s.url, &review("after", "")).await.is_ok_and(|(_, status, _)| status == 200));
    s.stop.cancel();
    assert!(s.done.await.is_ok_and(|r| r.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_timeout_alone_closes_a_slow_header_or_handshake() {
    // the idle timeout far away: only the header timeout can close these in time
    let s = start_with(1.0, 30.0).await;
    let mut tls = tls_connect(s.addr, &s.pki.ca_pem).await.unwrap_or_else(|| panic!("TLS connect"));
    let mut tcp = TcpStream::connect(s.addr).await.unwrap_or_else(|e| panic!("{e}"));
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n").await.unwrap_or_else(|e| panic!("{e}"));
    let (header, handshake) =
        tokio::join!(closed_within(&mut tls, Duration::from_secs(5)), closed_within(&mut tcp, Duration::from_secs(5)));
    for (what, closed) in [("half a request header", header), ("no TLS handshake", handshake)] {
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after 5 s (header timeout 1 s)"));
        assert!(
            closed >= Duration::from_millis(500),
            "{what}: closed after {closed:?}, long before the header timeout"
        );
    }
    s.stop.cancel();
    assert!(s.done.await.is_ok_and(|r| r.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_takes_no_new_connection() {
    let s = start().await;
    let body = review("in-flight", "base-cpu").to_string();
    let mut tls = tls_connect(s.addr, &s.pki.ca_pem).await.unwrap_or_else(|| panic!("TLS connect"));
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    tls.write_all(first).await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(s.addr).await.is_err(), "a new connection was accepted after shutdown began");
    tls.write_all(rest).await.unwrap_or_else(|e| panic!("{e}"));
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"uid\":\"in-flight\""), "{answer}");
    let finished = tokio::time::timeout(Duration::from_secs(5), s.done).await;
    assert!(finished.is_ok_and(|r| r.is_ok_and(|r| r.is_ok())), "the server did not stop");
}
