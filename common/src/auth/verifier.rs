//! Verifying access tokens: the edge's, svc-tasks' and svc-notify's side (and svc-users'
//! for its own tokens).
//!
//! The algorithm is pinned per mode (HS256 or EdDSA), so `alg: none` and algorithm
//! confusion are refused; keys are chosen by the token's `kid`. In EdDSA mode with a JWK
//! Set URL the keys are fetched over HTTP: before the process reports ready, every
//! refresh interval, and, at most once per [`UNKNOWN_KID_FETCH_INTERVAL`], when a token
//! names a kid the set lacks (so a rotation needs no restart, and made-up kids cannot
//! turn verifiers into a load generator against svc-users). A verifier that cannot
//! refresh keeps the keys it had and says so in `/readyz` and its metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::ed25519::{JwkSet, PublicKey};
use super::settings::{JwtSettings, TokenKeys};
use super::{Claims, TokenError};
use crate::health::{BackendReport, BackendState};

const LEEWAY_SECONDS: u64 = 30;
/// A token naming an unknown kid fetches the set again at most this often.
pub const UNKNOWN_KID_FETCH_INTERVAL: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// A JWK Set of a few keys is well under this.
const MAX_JWKS_BYTES: usize = 64 * 1024;
/// After a failed fetch the next comes this soon, doubling up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// The keys accepted now, by kid; `generation` changes whenever they do.
struct KeySet {
    keys: HashMap<String, DecodingKey>,
    /// (kid, public key) in kid order, for a JWK Set: tells whether a fetch changed it.
    fingerprint: Vec<(String, String)>,
    generation: u64,
}

/// Verifies access tokens against the keys of its mode.
pub struct TokenVerifier {
    algorithm: Algorithm,
    validation: Validation,
    keys: ArcSwap<KeySet>,
    remote: Option<RemoteKeys>,
    dev_mode: bool,
    metrics: VerifierMetrics,
}

/// The JWK Set at a URL, and what became of the last fetches.
struct RemoteKeys {
    url: hyper::Uri,
    refresh: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// One fetch at a time; holds when the last fetch for an unknown kid started.
    last_on_demand: tokio::sync::Mutex<Option<Instant>>,
    status: Mutex<RemoteStatus>,
}

#[derive(Default)]
struct RemoteStatus {
    loaded: bool,
    /// Why the last fetch failed, while it is the last one.
    failure: Option<String>,
}

#[derive(Clone)]
struct VerifierMetrics {
    fetches: IntCounterVec,
    keys: IntGauge,
    stale: IntGauge,
    dev_mode: IntGauge,
}

impl TokenVerifier {
    pub fn new(settings: &JwtSettings) -> Self {
        let (algorithm, keys, remote) = match &settings.keys {
            TokenKeys::Shared { active, retired } => {
                let keys = std::iter::once(active)
                    .chain(retired)
                    .map(|k| (k.kid.clone(), DecodingKey::from_secret(k.secret.expose().as_bytes())))
                    .collect();
                (Algorithm::HS256, keys, None)
            }
            TokenKeys::Signing { kid, key, published } => {
                let keys = std::iter::once((kid.clone(), key.public_key().decoding_key()))
                    .chain(published.iter().map(|p| (p.kid.clone(), p.key.decoding_key())))
                    .collect();
                (Algorithm::EdDSA, keys, None)
            }
            TokenKeys::Jwks { url, refresh } => {
                (Algorithm::EdDSA, HashMap::new(), Some(RemoteKeys::new(url, *refresh)))
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let metrics = VerifierMetrics::new();
        metrics.keys.set(keys.len() as i64);
        metrics.dev_mode.set(i64::from(settings.dev_mode));
        Self {
            algorithm,
            validation,
            keys: ArcSwap::from_pointee(KeySet { keys, fingerprint: Vec::new(), generation: 0 }),
            remote,
            dev_mode: settings.dev_mode,
            metrics,
        }
    }

    /// Checks `token` against the keys held now; never waits.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != self.algorithm {
            return Err(TokenError::WrongAlgorithm);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let keys = self.keys.load();
        let key = keys.keys.get(kid).ok_or(TokenError::UnknownKey)?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                _ => TokenError::Malformed,
            }
        })
    }

    /// Like [`TokenVerifier::verify`]; a kid the JWK Set lacks first fetches the set
    /// again (rate-limited), so a new signing key is accepted at once.
    pub async fn verify_fresh(&self, token: &str) -> Result<Claims, TokenError> {
        match self.verify(token) {
            Err(TokenError::UnknownKey) if self.fetch_for_unknown_kid().await => self.verify(token),
            result => result,
        }
    }

    /// Changes whenever the accepted keys change: what verified under one generation
    /// may not verify under the next (a key was retired).
    pub fn generation(&self) -> u64 {
        self.keys.load().generation
    }

    pub fn dev_mode(&self) -> bool {
        self.dev_mode
    }

    /// Registers the verifier's metrics on the process's registry, and logs development
    /// mode now that logging is up.
    pub fn report_to(&self, registry: &Registry) {
        for metric in [
            Box::new(self.metrics.fetches.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.metrics.keys.clone()),
            Box::new(self.metrics.stale.clone()),
            Box::new(self.metrics.dev_mode.clone()),
        ] {
            registry.register(metric).expect("token metric names are unique per process");
        }
        if self.dev_mode {
            tracing::warn!("development mode (TODO_DEV_MODE=1): public token keys are accepted; never in production");
        }
    }

    /// The JWK Set's state for `/readyz`, when keys come from one: down until it first
    /// loads (so the process is not ready), degraded while refreshes fail.
    pub fn readiness(&self) -> Option<BackendReport> {
        let remote = self.remote.as_ref()?;
        let status = remote.status.lock().unwrap_or_else(|e| e.into_inner());
        let state = match (status.loaded, &status.failure) {
            (false, failure) => BackendState::Down {
                detail: format!(
                    "the JWK Set at {} is not loaded yet{}",
                    remote.url,
                    failure.as_deref().map(|f| format!(": {f}")).unwrap_or_default()
                ),
            },
            (true, Some(failure)) => BackendState::Degraded {
                detail: format!("cannot refresh the JWK Set at {}, keeping the keys it had: {failure}", remote.url),
            },
            (true, None) => BackendState::Up,
        };
        Some(BackendReport { name: "jwks", critical: true, state })
    }

    /// Keeps the JWK Set fresh until the task is dropped: a first fetch at once, then
    /// every refresh interval; after a failure, sooner, backing off. Returns at once
    /// when the keys do not come from a URL.
    pub async fn keep_keys_fresh(self: Arc<Self>) {
        let Some(remote) = &self.remote else { return };
        let mut retry = FIRST_RETRY;
        loop {
            let fetched = {
                let _one_at_a_time = remote.last_on_demand.lock().await;
                self.fetch(remote).await
            };
            let wait = if fetched {
                retry = FIRST_RETRY;
                remote.refresh
            } else {
                let wait = retry;
                retry = (retry * 2).min(remote.refresh);
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// True when a fetch, this one or one that finished while we waited, changed the keys.
    async fn fetch_for_unknown_kid(&self) -> bool {
        let Some(remote) = &self.remote else { return false };
        let generation = self.generation();
        let mut last_on_demand = remote.last_on_demand.lock().await;
        if self.generation() != generation {
            return true;
        }
        if last_on_demand.is_some_and(|at| at.elapsed() < UNKNOWN_KID_FETCH_INTERVAL) {
            return false;
        }
        *last_on_demand = Some(Instant::now());
        self.fetch(remote).await && self.generation() != generation
    }

    /// One fetch; the caller holds `last_on_demand`. True when a set was installed.
    async fn fetch(&self, remote: &RemoteKeys) -> bool {
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, remote.get()).await {
            Ok(result) => result.and_then(|body| parse_key_set(&body)),
            Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
        };
        let mut status = remote.status.lock().unwrap_or_else(|e| e.into_inner());
        match fetched {
            Ok(keys) => {
                self.install(keys);
                if status.failure.take().is_some() && status.loaded {
                    tracing::info!(url = %remote.url, "the JWK Set is fresh again");
                }
                status.loaded = true;
                self.metrics.fetches.with_label_values(&["success"]).inc();
                self.metrics.stale.set(0);
                true
            }
            Err(failure) => {
                tracing::warn!(url = %remote.url, error = %failure, "cannot fetch the JWK Set; keeping the keys held");
                status.failure = Some(failure);
                self.metrics.fetches.with_label_values(&["failure"]).inc();
                self.metrics.stale.set(i64::from(status.loaded));
                false
            }
        }
    }

    fn install(&self, fetched: Vec<(String, PublicKey)>) {
        let current = self.keys.load();
        let fingerprint: Vec<(String, String)> = fetched.iter().map(|(kid, key)| (kid.clone(), key.x())).collect();
        if current.fingerprint == fingerprint {
            return;
        }
        let keys: HashMap<String, DecodingKey> =
            fetched.iter().map(|(kid, key)| (kid.clone(), key.decoding_key())).collect();
        self.metrics.keys.set(keys.len() as i64);
        tracing::info!(kids = ?fingerprint.iter().map(|(kid, _)| kid).collect::<Vec<_>>(), "JWK Set installed");
        self.keys.store(Arc::new(KeySet { keys, fingerprint, generation: current.generation + 1 }));
    }
}

/// The usable keys of a fetched set, by kid in order; a set naming one kid twice, or
/// holding no Ed25519 key, is refused whole.
fn parse_key_set(body: &[u8]) -> Result<Vec<(String, PublicKey)>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK Set: {e}"))?;
    let mut keys: Vec<(String, PublicKey)> =
        set.keys.iter().filter_map(|jwk| jwk.ed25519()).map(|(kid, key)| (kid.to_owned(), key)).collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = keys.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(format!("the set names kid {:?} twice", pair[0].0));
    }
    if keys.is_empty() {
        return Err("the set holds no Ed25519 signing key".into());
    }
    Ok(keys)
}

impl RemoteKeys {
    fn new(url: &str, refresh: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(FETCH_TIMEOUT));
        // One fetch a minute needs no pooled connection; none is kept across runtimes.
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        Self {
            // Checked to be an http:// URL when the settings were read.
            url: url.parse().unwrap_or_else(|_| hyper::Uri::from_static("http://invalid.")),
            refresh,
            client,
            last_on_demand: tokio::sync::Mutex::new(None),
            status: Mutex::new(RemoteStatus::default()),
        }
    }

    async fn get(&self) -> Result<Bytes, String> {
        let request = hyper::Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| format!("cannot reach it: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("it answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES).collect().await;
        body.map(|b| b.to_bytes()).map_err(|e| format!("cannot read it: {e}"))
    }
}

impl VerifierMetrics {
    fn new() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid gauge");
        Self {
            fetches: IntCounterVec::new(
                Opts::new("jwks_fetches_total", "Fetches of the JWK Set, by result."),
                &["result"],
            )
            .expect("valid counter"),
            keys: gauge("jwks_keys", "Token verification keys held."),
            stale: gauge("jwks_stale", "1 while the JWK Set cannot be refreshed and the keys held are used."),
            dev_mode: gauge(
                "todo_dev_mode",
                "1 in development mode (TODO_DEV_MODE=1), where public keys are accepted.",
            ),
        }
    }
}
