//! The operator's policy: every `*.toml` file of `POLICY_DIR`, parsed and validated as a
//! whole into a typed [`Policy`]. A set with any problem is refused with every problem
//! listed as `file:line:column: key: message`, so `edge --check-policies` reads like `nginx -t`.

mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use http::Method;

/// A validated policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    /// In matching order: exact paths, then templates, then prefixes (longest first);
    /// file order breaks ties.
    pub routes: Vec<RouteSpec>,
    pub limits: BTreeMap<String, LimitSpec>,
    pub cors: Option<CorsSpec>,
    pub client_ip: Option<ClientIpSpec>,
}

/// `[client_ip]`: whose `X-Forwarded-For` to believe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpSpec {
    /// The load balancers and proxies in front of the edge.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub addresses: Vec<Address>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub health_check: HealthCheckSpec,
}

/// `host:port`; the host may be a DNS name, resolved at load and on every health check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` answers 200.
    Http { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub name: String,
    pub matcher: PathMatcher,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    pub upstream: String,
    pub auth: bool,
    pub rate_limit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatcher {
    /// `path = "/users/login"`.
    Exact(String),
    /// `path = "/tasks/{id}/complete"`: `{name}` matches one non-empty segment.
    Template(Vec<Segment>),
    /// `prefix = "/tasks"`: the path itself and everything below it.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Literal(String),
    Param,
}

impl PathMatcher {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => {
                prefix == "/"
                    || path.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            Self::Template(segments) => {
                let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
                let all_match = segments.iter().all(|segment| match (segment, parts.next()) {
                    (Segment::Literal(lit), Some(part)) => lit == part,
                    (Segment::Param, Some(part)) => !part.is_empty(),
                    (_, None) => false,
                });
                all_match && parts.next().is_none()
            }
        }
    }

    /// Matching order: exact before template before prefix, longer prefixes first.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            Self::Exact(_) => (0, std::cmp::Reverse(0)),
            Self::Template(_) => (1, std::cmp::Reverse(0)),
            Self::Prefix(p) => (2, std::cmp::Reverse(p.len())),
        }
    }
}

impl fmt::Display for PathMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(p) => write!(f, "path {p}"),
            Self::Prefix(p) => write!(f, "prefix {p}"),
            Self::Template(segments) => {
                f.write_str("path ")?;
                for s in segments {
                    match s {
                        Segment::Literal(l) => write!(f, "/{l}")?,
                        Segment::Param => f.write_str("/{}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl RouteSpec {
    /// HEAD is allowed wherever GET is.
    pub fn allows(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(methods) => methods.contains(method) || (method == Method::HEAD && methods.contains(&Method::GET)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    ClientIp,
    Subject,
}

impl LimitKey {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientIp => "client_ip",
            Self::Subject => "subject",
        }
    }
}

/// Where a limit table counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitStore {
    /// In each replica.
    Local,
    /// In Redis, one budget for all replicas.
    Redis,
}

/// `requests` per fixed window of `window` per key (client address or token subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitSpec {
    pub requests: u32,
    pub window: Duration,
    pub key: LimitKey,
    pub store: LimitStore,
}

/// What this edge process offers a policy beyond itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `EDGE_REDIS_URL` is set: limit tables may say `store = "redis"`.
    pub redis: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSpec {
    /// Exact origins, lower-case, e.g. `https://app.example.com`.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    /// Lower-case header names.
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_seconds: u64,
}

impl CorsSpec {
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// One problem in a policy set; `line`/`column` are 1-based, 0 when not about a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem of a refused policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// A policy file's name and text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// The policy files of `dir`: every regular file (or symlink to one, as a Kubernetes
/// ConfigMap mount has) named `*.toml` and not hidden, sorted by name.
pub fn read_sources(dir: &Path) -> Result<Vec<SourceFile>, PolicyErrors> {
    let fail = |file: String, message: String| {
        PolicyErrors(vec![PolicyError { file, line: 0, column: 0, key: String::new(), message }])
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| fail(dir.display().to_string(), format!("cannot read the directory: {e}")))?;
    let mut sources = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| fail(dir.display().to_string(), format!("cannot list the directory: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks, so `..data/x.toml` links count as files.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => continue,
            Err(e) => return Err(fail(name, format!("cannot read: {e}"))),
        }
        let text = std::fs::read_to_string(&path).map_err(|e| fail(name.clone(), format!("cannot read: {e}")))?;
        sources.push(SourceFile { name, text });
    }
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(sources)
}

/// A fingerprint of a directory's policy files, to notice any change cheaply.
pub fn fingerprint(sources: &Result<Vec<SourceFile>, PolicyErrors>) -> u64 {
    let mut hasher = DefaultHasher::new();
    match sources {
        Ok(files) => files.hash(&mut hasher),
        Err(e) => e.to_string().hash(&mut hasher),
    }
    hasher.finish()
}

/// Parses and validates a whole set of files for an edge that offers `capabilities`.
pub fn parse(sources: &[SourceFile], capabilities: Capabilities) -> Result<Policy, PolicyErrors> {
    validate::validate(sources, capabilities)
}

/// Reads, parses and validates the policy files of `dir`.
pub fn load_dir(dir: &Path, capabilities: Capabilities) -> Result<Policy, PolicyErrors> {
    parse(&read_sources(dir)?, capabilities)
}

#[cfg(test)]
mod tests;
