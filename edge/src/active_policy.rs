//! The running form of a policy: routes bound to their upstream pools and limiters.
//! A new `ActivePolicy` is swapped in atomically; each request keeps the one it started with.
//! Pools and limiters whose settings did not change are carried over, so health state,
//! pooled connections and rate-limit counters survive a reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderValue;
use ipnet::IpNet;

use crate::limits::shared::SharedStore;
use crate::limits::Limiter;
use crate::metrics::RouteMetrics;
use crate::policy::{CorsSpec, Policy, RouteSpec};
use crate::upstreams::UpstreamPool;

pub struct ActivePolicy {
    pub generation: u64,
    pub routes: Vec<Arc<Route>>,
    pub pools: BTreeMap<String, Arc<UpstreamPool>>,
    pub limiters: BTreeMap<String, Arc<Limiter>>,
    pub cors: Option<CorsSpec>,
    /// `Access-Control-Expose-Headers` of `cors`, joined once per load.
    pub cors_expose_headers: Option<HeaderValue>,
    /// `[client_ip] trusted_proxies`; empty: the TCP peer is the client.
    pub trusted_proxies: Vec<IpNet>,
}

pub struct Route {
    pub spec: RouteSpec,
    pub pool: Arc<UpstreamPool>,
    pub limiter: Option<Arc<Limiter>>,
    pub metrics: RouteMetrics,
}

impl ActivePolicy {
    pub async fn build(
        policy: &Policy,
        previous: Option<&ActivePolicy>,
        generation: u64,
        limit_store: Option<&Arc<SharedStore>>,
    ) -> Self {
        let mut pools = BTreeMap::new();
        for (name, spec) in &policy.upstreams {
            let kept = previous.and_then(|p| p.pools.get(name)).filter(|pool| pool.spec() == spec);
            let pool = match kept {
                Some(pool) => Arc::clone(pool),
                None => UpstreamPool::build(name, spec).await,
            };
            pools.insert(name.clone(), pool);
        }
        let limiters: BTreeMap<String, Arc<Limiter>> = policy
            .limits
            .iter()
            .map(|(name, spec)| {
                let kept = previous.and_then(|p| p.limiters.get(name)).filter(|l| l.spec() == spec);
                let limiter =
                    kept.map(Arc::clone).unwrap_or_else(|| Arc::new(Limiter::new(name, spec.clone(), limit_store)));
                (name.clone(), limiter)
            })
            .collect();
        let routes = policy
            .routes
            .iter()
            .filter_map(|spec| {
                // Validation guarantees both references exist.
                let pool = Arc::clone(pools.get(&spec.upstream)?);
                let limiter = spec.rate_limit.as_ref().and_then(|name| limiters.get(name)).map(Arc::clone);
                Some(Arc::new(Route { spec: spec.clone(), pool, limiter, metrics: RouteMetrics::new() }))
            })
            .collect();
        let cors_expose_headers = policy
            .cors
            .as_ref()
            .filter(|cors| !cors.expose_headers.is_empty())
            .and_then(|cors| HeaderValue::from_str(&cors.expose_headers.join(", ")).ok());
        let trusted_proxies = policy.client_ip.as_ref().map(|c| c.trusted_proxies.clone()).unwrap_or_default();
        Self { generation, routes, pools, limiters, cors: policy.cors.clone(), cors_expose_headers, trusted_proxies }
    }
}
