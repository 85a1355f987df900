//! TLS on the public listener: the certificate pair named by `EDGE_TLS_CERT` and
//! `EDGE_TLS_KEY`, checked at start and swapped without a restart when the files change.
//!
//! The files are read and compared every second rather than watched: an in-place rewrite
//! and a Kubernetes Secret's `..data` symlink swap then look the same, and reading two
//! small files costs nothing. A changed pair is loaded only once it has read the same
//! twice in a row, so a rewrite caught halfway (new certificate, old key) is not taken for
//! a bad pair. A pair that does not load is logged and counted once, and the served one
//! stays. Handshakes pick the served pair up through [`Certificates`], rustls'
//! certificate resolver: open connections keep the certificate they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounterVec, IntGauge, Registry};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use todo_common::metrics::{counter_vec, gauge};

/// How often the files are read.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where the public listener's certificate chain and private key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("EDGE_TLS_CERT={}: {reason}", path.display())]
    Cert { path: PathBuf, reason: String },
    #[error("EDGE_TLS_KEY={}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("EDGE_TLS_KEY does not go with EDGE_TLS_CERT: {0}")]
    Pair(String),
}

/// The files' contents as read, compared to notice a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PairBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// A loaded pair: what handshakes present, and when its certificate expires.
struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: i64,
}

impl TlsFiles {
    /// On the runtime (the watcher).
    async fn read(&self) -> Result<PairBytes, TlsError> {
        self.pair(tokio::fs::read(&self.cert).await, tokio::fs::read(&self.key).await)
    }

    /// At start, before any runtime.
    fn read_blocking(&self) -> Result<PairBytes, TlsError> {
        self.pair(std::fs::read(&self.cert), std::fs::read(&self.key))
    }

    fn pair(&self, cert: std::io::Result<Vec<u8>>, key: std::io::Result<Vec<u8>>) -> Result<PairBytes, TlsError> {
        let cert = cert.map_err(|e| self.cert_error(format!("cannot read: {e}")))?;
        let key = key.map_err(|e| self.key_error(format!("cannot read: {e}")))?;
        Ok(PairBytes { cert, key })
    }

    fn load(&self, bytes: &PairBytes) -> Result<Loaded, TlsError> {
        let chain = CertificateDer::pem_slice_iter(&bytes.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.cert_error(format!("not PEM certificates: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(self.cert_error("holds no certificate".into()));
        };
        let not_after = not_after(leaf).map_err(|reason| self.cert_error(reason))?;
        let key = PrivateKeyDer::from_pem_slice(&bytes.key)
            .map_err(|e| self.key_error(format!("holds no PEM private key (PKCS#8, RSA or EC): {e}")))?;
        let key = CertifiedKey::from_der(chain, key, provider()).map_err(|e| self.pair_error(e))?;
        // `from_der` lets a pair whose match it cannot tell through; the edge does not.
        key.keys_match().map_err(|e| self.pair_error(e))?;
        Ok(Loaded { key: Arc::new(key), not_after })
    }

    fn pair_error(&self, error: rustls::Error) -> TlsError {
        match error {
            rustls::Error::InconsistentKeys(_) => {
                TlsError::Pair("the private key is not the one the certificate was issued for".into())
            }
            other => self.key_error(format!("unusable private key: {other}")),
        }
    }

    fn cert_error(&self, reason: String) -> TlsError {
        TlsError::Cert { path: self.cert.clone(), reason }
    }

    fn key_error(&self, reason: String) -> TlsError {
        TlsError::Key { path: self.key.clone(), reason }
    }
}

/// The crypto rustls uses here: the one Pingora's listener installs (ring).
fn provider() -> &'static Arc<CryptoProvider> {
    if CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed one first: either is the default then.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    CryptoProvider::get_default().expect("a crypto provider is installed")
}

/// The certificate's expiry, in seconds since the Unix epoch.
fn not_after(cert: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| format!("the first certificate does not parse: {e}"))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// The pair handshakes present: rustls asks it on every new connection.
#[derive(Debug)]
pub struct Certificates {
    served: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served.load_full())
    }
}

struct TlsMetrics {
    reloads: IntCounterVec,
    not_after: IntGauge,
}

impl TlsMetrics {
    fn new(registry: &Registry) -> Self {
        let reloads = counter_vec(
            registry,
            "edge_tls_certificate_reloads_total",
            "Changed TLS certificate pairs found in EDGE_TLS_CERT/EDGE_TLS_KEY, by result (loaded, refused).",
            &["result"],
        );
        // Both series exist from the start, so `increase(...)` alerts see the first refusal.
        reloads.with_label_values(&["loaded"]);
        reloads.with_label_values(&["refused"]);
        let not_after = gauge(
            registry,
            "edge_tls_certificate_expiry_timestamp_seconds",
            "When the served TLS certificate expires (Unix time).",
        );
        Self { reloads, not_after }
    }
}

/// The public listener's certificate: loaded at start, then kept in step with its files
/// by [`Tls::watcher`].
pub struct Tls {
    files: TlsFiles,
    /// What the files held at start (the pair served first).
    at_start: PairBytes,
    certificates: Arc<Certificates>,
    metrics: TlsMetrics,
}

impl Tls {
    /// Loads the pair; any problem (a file missing or unreadable, no certificate or key in
    /// it, a key that does not match the certificate) refuses the start.
    pub fn load(files: TlsFiles, registry: &Registry) -> Result<Arc<Self>, TlsError> {
        let bytes = files.read_blocking()?;
        let loaded = files.load(&bytes)?;
        let metrics = TlsMetrics::new(registry);
        metrics.not_after.set(loaded.not_after);
        let certificates = Arc::new(Certificates { served: ArcSwap::new(loaded.key) });
        Ok(Arc::new(Self { files, at_start: bytes, certificates, metrics }))
    }

    /// Settings for a listener that speaks TLS 1.2 and 1.3 only and offers `h2` and
    /// `http/1.1` by ALPN.
    pub fn listener_settings(&self) -> TlsSettings {
        // The paths only describe the listener: the resolver is what handshakes use.
        let mut settings = TlsSettings::intermediate(&path_str(&self.files.cert), &path_str(&self.files.key))
            .expect("settings without files to open");
        settings.set_cert_resolver(Arc::clone(&self.certificates) as Arc<dyn ResolvesServerCert>);
        settings.enable_h2();
        settings
    }

    pub fn watcher(self: &Arc<Self>) -> CertWatcher {
        CertWatcher { tls: Arc::clone(self) }
    }

    fn serve(&self, loaded: Loaded) {
        self.certificates.served.store(loaded.key);
        self.metrics.not_after.set(loaded.not_after);
        self.metrics.reloads.with_label_values(&["loaded"]).inc();
    }

    fn refused(&self) {
        self.metrics.reloads.with_label_values(&["refused"]).inc();
    }
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// What the watcher has seen of the files.
#[derive(Debug, Default)]
struct Watch {
    /// What is served.
    served: Option<PairBytes>,
    /// A change seen once: loaded if the next read finds it again.
    pending: Option<PairBytes>,
    /// A pair that was refused, not tried (or reported) again until the files change.
    refused: Option<PairBytes>,
    /// The last read error reported, so an unreadable file is reported once.
    read_error: Option<String>,
}

/// What one read of the files leads to.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    Load(PairBytes),
}

impl Watch {
    fn read(&mut self, bytes: PairBytes) -> Step {
        self.read_error = None;
        if self.served.as_ref() == Some(&bytes) || self.refused.as_ref() == Some(&bytes) {
            self.pending = None;
            return Step::Nothing;
        }
        if self.pending.as_ref() != Some(&bytes) {
            self.pending = Some(bytes);
            return Step::Nothing;
        }
        self.pending = None;
        Step::Load(bytes)
    }

    fn loaded(&mut self, bytes: PairBytes) {
        self.served = Some(bytes);
        self.refused = None;
    }

    fn refused(&mut self, bytes: PairBytes) {
        self.refused = Some(bytes);
    }

    /// True when this read error is new (to be reported).
    fn unreadable(&mut self, error: &str) -> bool {
        self.pending = None;
        if self.read_error.as_deref() == Some(error) {
            return false;
        }
        self.read_error = Some(error.to_owned());
        true
    }
}

/// Reads the files every second and serves a changed pair once it loads.
pub struct CertWatcher {
    tls: Arc<Tls>,
}

impl CertWatcher {
    async fn check(&self, watch: &mut Watch) {
        let tls = &self.tls;
        let bytes = match tls.files.read().await {
            Ok(bytes) => bytes,
            Err(error) => {
                if watch.unreadable(&error.to_string()) {
                    tls.refused();
                    tracing::error!(%error, "TLS certificate files unreadable; the served certificate stays");
                }
                return;
            }
        };
        let Step::Load(bytes) = watch.read(bytes) else { return };
        match tls.files.load(&bytes) {
            Ok(loaded) => {
                let expires = loaded.not_after;
                tls.serve(loaded);
                watch.loaded(bytes);
                tracing::info!(expires, "TLS certificate reloaded; new handshakes present it");
            }
            Err(error) => {
                tls.refused();
                watch.refused(bytes);
                tracing::error!(%error, "TLS certificate pair refused; the served certificate stays");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut watch = Watch::default();
        watch.loaded(self.tls.at_start.clone());
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = poll.tick() => self.check(&mut watch).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cert: &str, key: &str) -> PairBytes {
        PairBytes { cert: cert.into(), key: key.into() }
    }

    #[test]
    fn a_change_is_loaded_once_it_reads_the_same_twice() {
        let mut watch = Watch::default();
        watch.loaded(pair("a", "a"));
        assert_eq!(watch.read(pair("a", "a")), Step::Nothing);
        // A rewrite caught halfway, then finished.
        assert_eq!(watch.read(pair("b", "a")), Step::Nothing);
        assert_eq!(watch.read(pair("b", "b")), Step::Nothing);
        assert_eq!(watch.read(pair("b", "b")), Step::Load(pair("b", "b")));
        watch.loaded(pair("b", "b"));
        assert_eq!(watch.read(pair("b", "b")), Step::Nothing);
    }

    #[test]
    fn a_refused_pair_is_tried_again_only_after_the_files_change() {
        let mut watch = Watch::default();
        watch.loaded(pair("a", "a"));
        watch.read(pair("bad", "bad"));
        assert_eq!(watch.read(pair("bad", "bad")), Step::Load(pair("bad", "bad")));
        watch.refused(pair("bad", "bad"));
        assert_eq!(watch.read(pair("bad", "bad")), Step::Nothing);
        assert_eq!(watch.read(pair("bad", "bad")), Step::Nothing);
        watch.read(pair("c", "c"));
        assert_eq!(watch.read(pair("c", "c")), Step::Load(pair("c", "c")));
    }

    #[test]
    fn an_unreadable_file_is_reported_once() {
        let mut watch = Watch::default();
        assert!(watch.unreadable("gone"));
        assert!(!watch.unreadable("gone"));
        assert_eq!(watch.read(pair("a", "a")), Step::Nothing);
        assert!(watch.unreadable("gone"));
    }
}
