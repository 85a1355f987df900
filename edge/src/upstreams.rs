//! Upstream pools: round-robin over the addresses of one upstream, host names resolved
//! at load and again before every health check, active TCP or HTTP checks that take a
//! dead address out of rotation (run by `health_checks`).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr as InetAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr;
use pingora::upstreams::peer::HttpPeer;

use crate::policy::{Address, HealthCheckKind, UpstreamSpec};

/// Idle pooled connections are dropped after this, below the services' keep-alive
/// timeout, so the edge never reuses a connection the service already closed.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds the search for a usable address; pools are small.
const MAX_SELECT_ITERATIONS: usize = 64;

pub struct UpstreamPool {
    name: String,
    spec: UpstreamSpec,
    balancer: LoadBalancer<RoundRobin>,
    next_check: Mutex<Instant>,
    checking: AtomicBool,
}

impl UpstreamPool {
    /// Builds the pool and resolves its addresses once; addresses start healthy until a
    /// check says otherwise.
    pub async fn build(name: &str, spec: &UpstreamSpec) -> Arc<Self> {
        let discovery =
            DnsDiscovery { upstream: name.to_owned(), addresses: spec.addresses.clone(), last_good: Mutex::default() };
        let mut balancer = LoadBalancer::from_backends(Backends::new(Box::new(discovery)));
        balancer.set_health_check(health_check(name, spec));
        if let Err(e) = balancer.update().await {
            tracing::warn!(upstream = name, error = %e, "upstream discovery failed");
        }
        Arc::new(Self {
            name: name.to_owned(),
            spec: spec.clone(),
            balancer,
            next_check: Mutex::new(Instant::now()),
            checking: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// The next healthy address in rotation that this request has not tried yet.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<Backend> {
        self.balancer
            .select_with(b"", MAX_SELECT_ITERATIONS, |backend, healthy| healthy && !tried.contains(&backend.addr))
    }

    /// A peer with this upstream's timeouts (backends are always IP addresses).
    pub fn peer(&self, backend: &Backend) -> Option<HttpPeer> {
        let mut peer = HttpPeer::new(*backend.addr.as_inet()?, false, String::new());
        peer.options.connection_timeout = Some(self.spec.connect_timeout);
        peer.options.read_timeout = Some(self.spec.read_timeout);
        peer.options.write_timeout = Some(self.spec.read_timeout);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        Some(peer)
    }

    /// (healthy, known) addresses.
    pub fn health(&self) -> (usize, usize) {
        let backends = self.balancer.backends();
        let all = backends.get_backend();
        (all.iter().filter(|b| backends.ready(b)).count(), all.len())
    }

    pub fn claim_due_check(&self, now: Instant) -> bool {
        let Ok(mut next) = self.next_check.lock() else { return false };
        if *next > now || self.checking.swap(true, Ordering::AcqRel) {
            return false;
        }
        *next = now + self.spec.health_check.interval;
        true
    }

    /// Re-resolves the addresses, then checks every one of them.
    pub async fn refresh(&self) {
        if let Err(e) = self.balancer.update().await {
            tracing::warn!(upstream = %self.name, error = %e, "upstream discovery failed");
        }
        self.balancer.backends().run_health_check(true).await;
        self.checking.store(false, Ordering::Release);
    }
}

/// One slow answer from a busy service must not take it out of rotation; a dead one
/// still leaves within two check intervals (connect failures are retried meanwhile).
const FAILURES_BEFORE_UNHEALTHY: usize = 2;

fn health_check(name: &str, spec: &UpstreamSpec) -> Box<dyn HealthCheck + Send + Sync> {
    let check = &spec.health_check;
    match &check.kind {
        HealthCheckKind::Tcp => {
            let mut tcp = TcpHealthCheck::new();
            tcp.peer_template.options.connection_timeout = Some(check.timeout);
            tcp.consecutive_failure = FAILURES_BEFORE_UNHEALTHY;
            tcp
        }
        HealthCheckKind::Http { path } => {
            let mut http = HttpHealthCheck::new(name, false);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                // The path was validated; a failure here keeps the default `GET /`.
                if req.append_header("Host", name).is_ok() {
                    http.req = req;
                }
            }
            http.peer_template.options.connection_timeout = Some(check.timeout);
            http.peer_template.options.read_timeout = Some(check.timeout);
            http.consecutive_failure = FAILURES_BEFORE_UNHEALTHY;
            Box::new(http)
        }
    }
}

/// Resolves `host:port` addresses on every discovery; a name that fails to resolve keeps
/// its last good addresses so a DNS hiccup does not empty the pool.
struct DnsDiscovery {
    upstream: String,
    addresses: Vec<Address>,
    last_good: Mutex<HashMap<Address, Vec<InetAddr>>>,
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        for address in &self.addresses {
            let resolved = match address.host.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(vec![InetAddr::new(ip, address.port)]),
                Err(_) => {
                    match tokio::time::timeout(
                        DNS_TIMEOUT,
                        tokio::net::lookup_host((address.host.as_str(), address.port)),
                    )
                    .await
                    {
                        Ok(Ok(addrs)) => Ok(addrs.collect::<Vec<_>>()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("DNS lookup timed out".to_owned()),
                    }
                }
            };
            let addrs = match resolved {
                Ok(addrs) if !addrs.is_empty() => {
                    if let Ok(mut cache) = self.last_good.lock() {
                        cache.insert(address.clone(), addrs.clone());
                    }
                    addrs
                }
                failure => {
                    let why = failure.err().unwrap_or_else(|| "no addresses".into());
                    tracing::warn!(upstream = %self.upstream, address = %address, error = %why, "cannot resolve upstream address");
                    self.last_good.lock().ok().and_then(|cache| cache.get(address).cloned()).unwrap_or_default()
                }
            };
            backends.extend(addrs.into_iter().map(|a| Backend {
                addr: SocketAddr::Inet(a),
                weight: 1,
                ext: http::Extensions::new(),
            }));
        }
        Ok((backends, HashMap::new()))
    }
}
