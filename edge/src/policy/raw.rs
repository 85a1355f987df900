//! The policy files exactly as written: serde structs that refuse unknown keys and keep
//! the position of the values later checks may complain about.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One `*.toml` file; any file may hold any of the sections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub limits: BTreeMap<String, Spanned<RawLimit>>,
    #[serde(default)]
    pub cors: Option<Spanned<RawCors>>,
    #[serde(default)]
    pub client_ip: Option<Spanned<RawClientIp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    pub trusted_proxies: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub addresses: Spanned<Vec<Spanned<String>>>,
    pub connect_timeout_ms: Option<Spanned<u64>>,
    pub read_timeout_ms: Option<Spanned<u64>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawCheckKind {
    Tcp,
    Http,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<RawCheckKind>,
    pub path: Option<Spanned<String>>,
    pub interval_ms: Option<Spanned<u64>>,
    pub timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub upstream: Spanned<String>,
    pub auth: bool,
    pub rate_limit: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawLimitKey {
    ClientIp,
    Subject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawLimitStore {
    Local,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub requests: Spanned<u64>,
    pub window_seconds: Spanned<u64>,
    pub key: RawLimitKey,
    pub store: Option<Spanned<RawLimitStore>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub allowed_origins: Vec<Spanned<String>>,
    pub allowed_methods: Option<Vec<Spanned<String>>>,
    pub allowed_headers: Option<Vec<Spanned<String>>>,
    pub expose_headers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub allow_credentials: bool,
    pub max_age_seconds: Option<Spanned<u64>>,
}
