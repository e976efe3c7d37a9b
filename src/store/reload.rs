//! Hot reload by polling: the files' contents are hashed every interval and a change is
//! loaded. Comparing contents (not watching inodes) sees Kubernetes' ConfigMap and Secret
//! volume updates, which swap a `..data` symlink and never write the visible files. A new
//! version that does not load is logged and counted once, and the last good one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{ReloadResult, Serving, Source, files};
use crate::tls::{self, CertStore};

/// A hash of the named files' paths and contents.
pub fn fingerprint(paths: &[PathBuf]) -> crate::Result<[u8; 32]> {
    let mut h = Sha256::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|error| crate::Error::Read { path: p.clone(), error })?;
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().into())
}

/// The fingerprints of what a server loaded at start, taken before loading: a change made
/// between the start and the first poll is then seen as a change.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    pub template: Option<[u8; 32]>,
    pub overrides: Option<[u8; 32]>,
    pub certificate: Option<[u8; 32]>,
}

impl Seen {
    pub fn now(template: &Path, overrides: Option<&Path>, cert: &Path, key: &Path) -> Seen {
        Seen {
            template: fingerprint(&[template.to_owned()]).ok(),
            overrides: overrides.and_then(|dir| files::override_files(dir).and_then(|p| fingerprint(&p)).ok()),
            certificate: fingerprint(&[cert.to_owned(), key.to_owned()]).ok(),
        }
    }
}

/// Polls `inputs` every `every` until `stop`; calls `load` when their fingerprint differs from
/// the last one seen. `load` returns a line for the log, or the reason the new version was
/// rejected.
#[allow(clippy::too_many_arguments)]
async fn poll(
    what: &str,
    seen: Option<[u8; 32]>,
    every: Duration,
    stop: CancellationToken,
    inputs: impl Fn() -> crate::Result<Vec<PathBuf>>,
    mut load: impl FnMut() -> Result<String, String>,
    on_result: impl Fn(ReloadResult),
) {
    let mut seen = seen;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = match inputs().and_then(|paths| fingerprint(&paths)) {
            Ok(f) => Some(f),
            Err(e) => {
                // a file missing halfway through a swap; the next tick sees the result
                if seen.is_some() {
                    error!(error = %e, "{what}: cannot read the new version; still serving the last good one");
                    on_result(ReloadResult::failure);
                    seen = None;
                }
                continue;
            }
        };
        if now == seen {
            continue;
        }
        seen = now;
        match load() {
            Ok(summary) => {
                info!("{what} reloaded: {summary}");
                on_result(ReloadResult::success);
            }
            Err(reason) => {
                error!(error = %reason, "{what}: the new version is rejected; still serving the last good one");
                on_result(ReloadResult::failure);
            }
        }
    }
}

/// Reloads the template into `state` when its file changes. The template and the overrides
/// reload apart, so a broken one never holds the other back.
pub async fn watch_template(
    state: Arc<dyn Serving>,
    template: PathBuf,
    seen: Seen,
    every: Duration,
    stop: CancellationToken,
) {
    poll(
        "template",
        seen.template,
        every,
        stop,
        || Ok(vec![template.clone()]),
        || {
            let loaded = files::load_template(&template).map_err(|e| e.to_string())?;
            state.replace_template(loaded);
            Ok(template.display().to_string())
        },
        |result| state.reloaded(Source::template, result),
    )
    .await;
}

/// Reloads the overrides into `state` when the files of their directory change.
pub async fn watch_overrides(
    state: Arc<dyn Serving>,
    overrides: PathBuf,
    seen: Seen,
    every: Duration,
    stop: CancellationToken,
) {
    poll(
        "overrides",
        seen.overrides,
        every,
        stop,
        || files::override_files(&overrides),
        || {
            let loaded = files::load_overrides(&overrides).map_err(|e| e.to_string())?;
            let n = loaded.len();
            state.replace_overrides(loaded);
            Ok(format!("{n} overrides from {}", overrides.display()))
        },
        |result| state.reloaded(Source::overrides, result),
    )
    .await;
}

/// Reloads the serving certificate into `certs` when its files change.
pub async fn watch_certificate(
    state: Arc<dyn Serving>,
    certs: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    seen: Seen,
    every: Duration,
    stop: CancellationToken,
) {
    poll(
        "serving certificate",
        seen.certificate,
        every,
        stop,
        || Ok(vec![cert.clone(), key.clone()]),
        || {
            let loaded = tls::load(&cert, &key).map_err(|e| e.to_string())?;
            certs.replace(loaded);
            Ok(cert.display().to_string())
        },
        |result| state.reloaded(Source::certificate, result),
    )
    .await;
}
