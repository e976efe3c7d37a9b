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
        namespace_template_name: String::new(),
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

fn tls_client_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    podtailor::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TLS connection offering HTTP/1.1 only.
async fn tls_connect(addr: std::net::SocketAddr, ca_pem: &str) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    tls_connect_alpn(addr, ca_pem, b"http/1.1").await
}

async fn tls_connect_alpn(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem, alpn));
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

/// One HTTP/1.1 exchange on an open connection: (status, head, body).
async fn exchange_http1(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    content_type: &str,
    body: &[u8],
) -> Option<(u16, String, Vec<u8>)> {
    exchange_http1_declaring(tls, content_type, body.len(), body).await
}

/// [`exchange_http1`] with a Content-Length of `declared`, whatever `body` holds.
async fn exchange_http1_declaring(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    content_type: &str,
    declared: usize,
    body: &[u8],
) -> Option<(u16, String, Vec<u8>)> {
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {declared}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.ok()?;
    // the server may answer before the body is all sent, and close
    let _ = tls.write_all(body).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: "))?.trim().parse().ok()?;
    let mut answer = got[end..].to_vec();
    while answer.len() < length {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    Some((status, head, answer))
}

type H2Body = http_body_util::combinators::BoxBody<hyper::body::Bytes, std::io::Error>;

/// An HTTP/2 connection (ALPN h2) to the server, driven by hyper's client.
async fn connect_http2(s: &Running) -> hyper::client::conn::http2::SendRequest<H2Body> {
    let tls = tls_connect_alpn(s.addr, &s.pki.ca_pem, b"h2").await.unwrap_or_else(|| panic!("TLS connect"));
    let io = hyper_util::rt::TokioIo::new(tls);
    let (sender, connection) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 handshake: {e}"));
    tokio::spawn(connection);
    sender
}

fn h2_request(content_type: &str, body: H2Body) -> http::Request<H2Body> {
    http::Request::post("https://localhost/mutate")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn full(bytes: Vec<u8>) -> H2Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(hyper::body::Bytes::from(bytes)).map_err(|never| match never {}).boxed()
}

async fn h2_answer(response: http::Response<hyper::body::Incoming>) -> (u16, Value) {
    use http_body_util::BodyExt;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}")))
}

fn panicking_review(uid: &str) -> Value {
    review(uid, &format!("base-cpu,{}", podtailor::mutate::PANIC_OVERRIDE))
}

fn assert_internal_error(answer: &Value, uid: &str) {
    assert_eq!(answer["response"]["uid"], uid, "{answer}");
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(answer["response"]["status"]["code"], 500, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("podtailor: internal error"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_review_is_answered_and_its_connection_goes_on_serving() {
    let s = start().await;
    // HTTP/1.1: one connection, a panicking review, then a good one on the same connection
    let mut tls = tls_connect(s.addr, &s.pki.ca_pem).await.unwrap_or_else(|| panic!("TLS connect"));
    let body = panicking_review("h1-panic").to_string();
    let (status, _, answer) = exchange_http1(&mut tls, "application/json", body.as_bytes())
        .await
        .unwrap_or_else(|| panic!("no answer to the panicking review over HTTP/1.1"));
    let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
    assert_internal_error(&answer, "h1-panic");
    let body = review("h1-after", "base-cpu").to_string();
    let (status, _, answer) = exchange_http1(&mut tls, "application/json", body.as_bytes())
        .await
        .unwrap_or_else(|| panic!("the connection did not serve the review after the panic"));
    let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, &answer["response"]["uid"], &answer["response"]["allowed"]),
        (200, &json!("h1-after"), &json!(true))
    );

    // HTTP/2: the same on one connection
    let mut h2 = connect_http2(&s).await;
    let response = h2
        .send_request(h2_request("application/json", full(panicking_review("h2-panic").to_string().into_bytes())))
        .await
        .unwrap_or_else(|e| panic!("no answer to the panicking review over HTTP/2: {e}"));
    let (status, answer) = h2_answer(response).await;
    assert_eq!(status, 200);
    assert_internal_error(&answer, "h2-panic");
    h2.ready().await.unwrap_or_else(|e| panic!("the HTTP/2 connection is gone: {e}"));
    let response = h2
        .send_request(h2_request("application/json", full(review("h2-after", "base-cpu").to_string().into_bytes())))
        .await
        .unwrap_or_else(|e| panic!("the HTTP/2 connection did not serve the review after the panic: {e}"));
    let (status, answer) = h2_answer(response).await;
    assert_eq!(
        (status, &answer["response"]["uid"], &answer["response"]["allowed"]),
        (200, &json!("h2-after"), &json!(true))
    );
    assert!(
        metrics(&s.admin).await.contains("podtailor_admission_requests_total{webhook=\"mutate\",outcome=\"error\"} 2")
    );
    s.stop.cancel();
    assert!(s.done.await.is_ok_and(|r| r.is_ok()));
}

/// Posts with Python's httpx (HTTP/2 by ALPN, or HTTP/1.1): prints the HTTP version, the status
/// and the answer's `response.status.code` (0 when the body is not an AdmissionReview).
const HTTPX: &str = r#"
import ssl, sys, httpx
ca, url, method, content_type, body, http2 = sys.argv[1:]
context = ssl.create_default_context(cafile=ca)
with httpx.Client(http2=http2 == "2", verify=context, timeout=20) as client, open(body, "rb") as f:
    r = client.request(method, url, content=f.read(), headers={"content-type": content_type})
    try:
        code = r.json()["response"]["status"]["code"]
    except Exception:
        code = 0
    print(r.http_version, r.status_code, code)
"#;

/// The venv's Python (`make venv`), with httpx[http2] from tests/oracle/requirements.txt;
/// `PODTAILOR_PYTHON` names another (`make mutants` tests copies of the tree that have no venv).
fn venv_python() -> PathBuf {
    let python = std::env::var_os("PODTAILOR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join("target/venv/bin/python"));
    assert!(python.exists(), "{} is missing: run `make venv`", python.display());
    python
}

/// A client's view of one answer: "HTTP-version status code-in-the-answer".
async fn run_client(mut command: std::process::Command) -> String {
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("cannot run the client: {e}"));
    assert!(
        out.status.success(),
        "the client failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_an_answer_over_http1_and_http2_for_curl_httpx_and_reqwest() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &s.pki.ca_pem).unwrap_or_else(|e| panic!("{e}"));
    const BIG: usize = 5 * 1024 * 1024;
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b' '; BIG]).unwrap_or_else(|e| panic!("{e}"));
    let small = dir.path().join("small");
    std::fs::write(&small, review("small", "").to_string()).unwrap_or_else(|e| panic!("{e}"));
    let small_len = std::fs::metadata(&small).map(|m| m.len()).unwrap_or_default();
    let base = format!("https://localhost:{}", s.addr.port());
    // (method, path, content type, body, HTTP status, the answer's status.code: 0 for no review)
    let cases = [
        ("POST", "/mutate", "application/json", &big, 413, 413),
        ("POST", "/validate", "application/json", &big, 413, 413),
        ("POST", "/mutate", "text/plain", &big, 415, 415),
        ("POST", "/mutate", "text/plain", &small, 415, 415),
        ("POST", "/mutate", "application/json", &small, 200, 0),
        ("POST", "/elsewhere", "application/json", &big, 404, 0),
        ("PUT", "/mutate", "application/json", &big, 405, 0),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let size = if body == &big { BIG as u64 } else { small_len };
        for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
            let answer = dir.path().join("answer");
            let mut curl = std::process::Command::new("curl");
            curl.args(["-sS", "--max-time", "20", flag, "--cacert"])
                .arg(&ca)
                .args(["-X", method, "-H", &format!("Content-Type: {content_type}"), "--data-binary"])
                .arg(format!("@{}", body.display()))
                .arg("-o")
                .arg(&answer)
                .args(["-w", "%{http_version} %{http_code}", &format!("{base}{path}")]);
            let seen = run_client(curl).await;
            let what = format!("curl {flag} {method} {path} {content_type} ({size} bytes)");
            assert_eq!(seen, format!("{version} {status}"), "{what}");
            let text = std::fs::read(&answer).unwrap_or_default();
            let got =
                serde_json::from_slice::<Value>(&text).ok().and_then(|a| a["response"]["status"]["code"].as_u64());
            assert_eq!(got.unwrap_or(0), code, "{what}: {}", String::from_utf8_lossy(&text));

            let mut httpx = std::process::Command::new(venv_python());
            httpx.args(["-c", HTTPX]).arg(&ca).arg(format!("{base}{path}")).args([method, content_type]);
            httpx.arg(body).arg(if version == "2" { "2" } else { "1" });
            let seen = run_client(httpx).await;
            let want = format!("HTTP/{} {status} {code}", if version == "2" { "2" } else { "1.1" });
            assert_eq!(seen, want, "httpx HTTP/{version} {method} {path} {content_type} ({size} bytes)");
        }
        for http1 in [true, false] {
            let c = client(&s.pki.ca_pem, http1);
            let bytes = std::fs::read(body).unwrap_or_else(|e| panic!("{e}"));
            let method = http::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let what = format!("reqwest http1_only={http1} {method} {path} {content_type} ({size} bytes)");
            let response = c
                .request(method, format!("{base}{path}"))
                .header("content-type", content_type)
                .body(bytes)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            let want = if http1 { reqwest::Version::HTTP_11 } else { reqwest::Version::HTTP_2 };
            assert_eq!((response.version(), response.status().as_u16()), (want, status), "{what}");
            let got = response.json::<Value>().await.ok().and_then(|a| a["response"]["status"]["code"].as_u64());
            assert_eq!(got.unwrap_or(0), code, "{what}");
        }
    }
    s.stop.cancel();
    assert!(s.done.await.is_ok_and(|r| r.is_ok()));
}

/// A 32 MiB body (more than is read of it) sent in 64 KiB chunks with no Content-Length; counts the bytes the client took
/// from it and says when the client let go of it.
fn streamed_body(sent: Arc<AtomicUsize>, dropped: Arc<AtomicBool>) -> H2Body {
    use futures::StreamExt;
    use http_body_util::BodyExt;
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = Flag(dropped);
    let chunks = futures::stream::iter(0..512).map(move |_| {
        let _held = &flag;
        sent.fetch_add(64 * 1024, Ordering::SeqCst);
        Ok::<_, std::io::Error>(hyper::body::Frame::data(hyper::body::Bytes::from(vec![b' '; 64 * 1024])))
    });
    BodyExt::boxed(http_body_util::StreamBody::new(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_the_limit_gets_its_413_over_http2_and_the_client_is_told_to_stop() {
    let s = start().await;
    let mut h2 = connect_http2(&s).await;
    for content_type in ["application/json", "text/plain"] {
        let (sent, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let request = h2_request(content_type, streamed_body(sent.clone(), dropped.clone()));
        let response = tokio::time::timeout(Duration::from_secs(10), h2.send_request(request))
            .await
            .unwrap_or_else(|_| panic!("{content_type}: no answer within 10 s"))
            .unwrap_or_else(|e| panic!("{content_type}: {e}"));
        let (status, answer) = h2_answer(response).await;
        let want = if content_type == "text/plain" { 415 } else { 413 };
        assert_eq!((status, &answer["response"]["status"]["code"]), (want, &json!(want)), "{answer}");
        // the server resets the stream (NO_ERROR) once it has answered: the client stops sending
        eventually("the client to stop sending", || {
            let dropped = dropped.clone();
            async move { dropped.load(Ordering::SeqCst) }
        })
        .await;
        assert!(sent.load(Ordering::SeqCst) < 32 * 1024 * 1024, "the whole body was sent");
        h2.ready().await.unwrap_or_else(|e| panic!("the HTTP/2 connection is gone: {e}"));
    }
    s.stop.cancel();
    assert!(s.done.await.is_ok_and(|r| r.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http1_a_rejected_body_is_drained_for_the_next_request_and_a_longer_one_closes_the_connection() {
    let s = start().await;
    let mut tls = tls_connect(s.addr, &s.pki.ca_pem).await.unwrap_or_else(|| panic!("TLS connect"));
    let (status, head, _) = exchange_http1(&mut tls, "application/json", &vec![b' '; 5 * 1024 * 1024])
        .await
        .unwrap_or_else(|| panic!("no answer to the 5 MiB body"));
    assert_eq!(status, 413);
    assert!(!head.contains("connection: close"), "{head}");
    let body = review("after-413", "base-cpu").to_string();
    let (status, _, answer) = exchange_http1(&mut tls, "application/json", body.as_bytes())
        .await
        .unwrap_or_else(|| panic!("the connection did not serve the review after the 413"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    // 20 MiB declared, more than is read of a rejected body: the answer says the connection ends
    let mut tls = tls_connect(s.addr, &s.pki.ca_pem).await.unwrap_or_else(|| panic!("TLS connect"));
    let (status, head, _) = exchange_http1_declaring(&mut tls, "application/json", 20 * 1024 * 1024, b"{")
        .await
        .unwrap_or_else(|| panic!("no answer to the 20 MiB body"));
    assert_eq!(status, 413);
    assert!(head.contains("connection: close"), "{head}");
    s.stop.cancel();
    assert!(s.done.await.is_ok_and(|r| r.is_ok()));
}
