//! Raw files -> typed [`Policy`], collecting every problem with its file, line and key.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::time::Duration;

use http::Method;
use toml::Spanned;

use super::raw::{
    RawCheckKind, RawClientIp, RawCors, RawFile, RawLimit, RawLimitKey, RawLimitStore, RawRoute, RawUpstream,
};
use super::{
    Address, Capabilities, ClientIpSpec, CorsSpec, HealthCheckKind, HealthCheckSpec, LimitKey, LimitSpec, LimitStore,
    PathMatcher, Policy, PolicyError, PolicyErrors, RouteSpec, Segment, SourceFile, UpstreamSpec,
};

const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
const DEFAULT_READ_TIMEOUT_MS: u64 = 25_000;
const DEFAULT_CHECK_INTERVAL_MS: u64 = 1_000;
const DEFAULT_CHECK_TIMEOUT_MS: u64 = 1_000;
const DEFAULT_HEALTH_PATH: &str = "/healthz";
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Where a value sits: the file (index into the sources) and byte span.
#[derive(Clone)]
struct At {
    file: usize,
    span: Range<usize>,
}

struct Checker<'a> {
    sources: &'a [SourceFile],
    errors: Vec<PolicyError>,
}

impl Checker<'_> {
    fn error(&mut self, at: &At, key: impl Into<String>, message: impl Into<String>) {
        let source = &self.sources[at.file];
        let (line, column) = line_column(&source.text, at.span.start);
        self.errors.push(PolicyError {
            file: source.name.clone(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    fn location(&self, at: &At) -> String {
        let source = &self.sources[at.file];
        let (line, _) = line_column(&source.text, at.span.start);
        format!("{}:{line}", source.name)
    }

    fn at<T>(file: usize, spanned: &Spanned<T>) -> At {
        At { file, span: spanned.span() }
    }

    /// A table that may appear once in the whole set (`[cors]`, `[client_ip]`): keeps the
    /// first, reports any other.
    fn keep_once<T>(&mut self, key: &str, kept: &mut Option<(At, T)>, file: usize, section: Spanned<T>) {
        let at = Self::at(file, &section);
        match kept {
            Some((first, _)) => {
                let first = self.location(first);
                self.error(&at, key, format!("defined twice (first at {first})"));
            }
            None => *kept = Some((at, section.into_inner())),
        }
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// The key a syntax or type error is about, read from the offending line.
fn key_on_line(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[start..end].trim();
    if line.starts_with('[') {
        line.trim_matches(|c| c == '[' || c == ']').trim().to_owned()
    } else if let Some((key, _)) = line.split_once('=') {
        key.trim().to_owned()
    } else {
        String::new()
    }
}

pub fn validate(sources: &[SourceFile], capabilities: Capabilities) -> Result<Policy, PolicyErrors> {
    let mut checker = Checker { sources, errors: Vec::new() };
    let mut files = Vec::new();
    // Names declared in files refused for a type error, read leniently, so references to
    // them are not reported as unknown on top.
    let mut lenient_names: Vec<(&str, String)> = Vec::new();
    let mut all_parsed = true;
    for (index, source) in sources.iter().enumerate() {
        match toml::from_str::<RawFile>(&source.text) {
            Ok(file) => files.push((index, file)),
            Err(e) => {
                match toml::from_str::<toml::Table>(&source.text) {
                    Ok(table) => {
                        for section in ["upstreams", "limits"] {
                            if let Some(toml::Value::Table(names)) = table.get(section) {
                                lenient_names.extend(names.keys().map(|name| (section, name.clone())));
                            }
                        }
                    }
                    Err(_) => all_parsed = false,
                }
                let span = e.span().unwrap_or(0..0);
                let key = key_on_line(&source.text, span.start);
                checker.error(&At { file: index, span }, key, e.message().trim().to_owned());
            }
        }
    }
    if sources.is_empty() {
        checker.errors.push(PolicyError {
            file: "*.toml".into(),
            line: 0,
            column: 0,
            key: String::new(),
            message: "no policy files found".into(),
        });
    }

    let every_file_parsed = files.len() == sources.len();
    // Merge the sections of every file; a name defined twice is an error.
    let mut upstreams: BTreeMap<String, (At, RawUpstream)> = BTreeMap::new();
    let mut limits: BTreeMap<String, (At, RawLimit)> = BTreeMap::new();
    let mut routes: Vec<(At, RawRoute)> = Vec::new();
    let mut cors: Option<(At, RawCors)> = None;
    let mut client_ip: Option<(At, RawClientIp)> = None;
    for (file, raw) in files {
        for (name, upstream) in raw.upstreams {
            let at = Checker::at(file, &upstream);
            if let Some((first, _)) = upstreams.get(&name) {
                let first = checker.location(first);
                checker.error(&at, format!("upstreams.{name}"), format!("defined twice (first at {first})"));
                continue;
            }
            upstreams.insert(name, (at, upstream.into_inner()));
        }
        for (name, limit) in raw.limits {
            let at = Checker::at(file, &limit);
            if let Some((first, _)) = limits.get(&name) {
                let first = checker.location(first);
                checker.error(&at, format!("limits.{name}"), format!("defined twice (first at {first})"));
                continue;
            }
            limits.insert(name, (at, limit.into_inner()));
        }
        for route in raw.routes {
            routes.push((Checker::at(file, &route), route.into_inner()));
        }
        if let Some(section) = raw.cors {
            checker.keep_once("cors", &mut cors, file, section);
        }
        if let Some(section) = raw.client_ip {
            checker.keep_once("client_ip", &mut client_ip, file, section);
        }
    }

    // A reference to a name that is declared but invalid, or that may sit in a file that
    // did not parse, is not reported again: the first message is the useful one.
    let refs = References {
        upstreams: upstreams
            .keys()
            .cloned()
            .chain(lenient_names.iter().filter(|(s, _)| *s == "upstreams").map(|(_, n)| n.clone()))
            .collect(),
        limits: limits
            .keys()
            .cloned()
            .chain(lenient_names.iter().filter(|(s, _)| *s == "limits").map(|(_, n)| n.clone()))
            .collect(),
        complete: all_parsed,
    };
    let upstreams: BTreeMap<String, UpstreamSpec> = upstreams
        .into_iter()
        .filter_map(|(name, (at, raw))| check_upstream(&mut checker, &name, &at, raw).map(|spec| (name, spec)))
        .collect();
    let limits: BTreeMap<String, LimitSpec> = limits
        .into_iter()
        .filter_map(|(name, (at, raw))| {
            check_limit(&mut checker, &name, &at, raw, capabilities).map(|spec| (name, spec))
        })
        .collect();
    let cors = cors.and_then(|(at, raw)| check_cors(&mut checker, at.file, raw));
    let client_ip = client_ip.and_then(|(at, raw)| check_client_ip(&mut checker, at.file, raw));

    if routes.is_empty() && !sources.is_empty() && every_file_parsed {
        checker.errors.push(PolicyError {
            file: "*.toml".into(),
            line: 0,
            column: 0,
            key: "routes".into(),
            message: "no [[routes]] are defined: the edge would answer 404 to everything".into(),
        });
    }
    let mut checked: Vec<(At, RouteSpec)> = Vec::new();
    for (index, (at, raw)) in routes.into_iter().enumerate() {
        if let Some(route) = check_route(&mut checker, index, &at, raw, &refs, &limits, &checked) {
            checked.push((at, route));
        }
    }

    if !checker.errors.is_empty() {
        return Err(PolicyErrors(checker.errors));
    }
    let mut routes: Vec<RouteSpec> = checked.into_iter().map(|(_, route)| route).collect();
    routes.sort_by_key(|route| route.matcher.rank());
    Ok(Policy { upstreams, routes, limits, cors, client_ip })
}

fn check_client_ip(checker: &mut Checker<'_>, file: usize, raw: RawClientIp) -> Option<ClientIpSpec> {
    let errors_before = checker.errors.len();
    let mut trusted_proxies = Vec::new();
    for entry in &raw.trusted_proxies {
        match parse_cidr(entry.get_ref()) {
            Some(net) => trusted_proxies.push(net),
            None => checker.error(
                &Checker::at(file, entry),
                "client_ip.trusted_proxies",
                format!("{:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8", entry.get_ref()),
            ),
        }
    }
    (checker.errors.len() == errors_before).then_some(ClientIpSpec { trusted_proxies })
}

/// A CIDR, or a single address (a /32 or /128).
fn parse_cidr(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

const NAME_RULE: &str = "names are 1 to 64 characters of a-z, 0-9, '-' and '_'";

fn ranged(
    checker: &mut Checker<'_>,
    file: usize,
    key: &str,
    value: Option<&Spanned<u64>>,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> u64 {
    match value {
        None => default,
        Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            let at = Checker::at(file, v);
            checker.error(&at, key, format!("{} is out of range {}..={}", v.get_ref(), range.start(), range.end()));
            default
        }
    }
}

fn check_upstream(checker: &mut Checker<'_>, name: &str, at: &At, raw: RawUpstream) -> Option<UpstreamSpec> {
    let errors_before = checker.errors.len();
    let key = format!("upstreams.{name}");
    if !valid_name(name) {
        checker.error(at, &key, NAME_RULE);
    }
    let file = at.file;
    if raw.addresses.get_ref().is_empty() {
        checker.error(&Checker::at(file, &raw.addresses), format!("{key}.addresses"), "at least one address is needed");
    }
    let mut addresses = Vec::new();
    for (i, address) in raw.addresses.get_ref().iter().enumerate() {
        match parse_address(address.get_ref()) {
            Ok(parsed) if addresses.contains(&parsed) => {
                checker.error(&Checker::at(file, address), format!("{key}.addresses[{i}]"), "listed twice");
            }
            Ok(parsed) => addresses.push(parsed),
            Err(why) => checker.error(&Checker::at(file, address), format!("{key}.addresses[{i}]"), why),
        }
    }
    let connect_ms = ranged(
        checker,
        file,
        &format!("{key}.connect_timeout_ms"),
        raw.connect_timeout_ms.as_ref(),
        1..=60_000,
        DEFAULT_CONNECT_TIMEOUT_MS,
    );
    let read_ms = ranged(
        checker,
        file,
        &format!("{key}.read_timeout_ms"),
        raw.read_timeout_ms.as_ref(),
        1..=600_000,
        DEFAULT_READ_TIMEOUT_MS,
    );
    let health_check = match raw.health_check {
        None => HealthCheckSpec {
            kind: HealthCheckKind::Tcp,
            interval: Duration::from_millis(DEFAULT_CHECK_INTERVAL_MS),
            timeout: Duration::from_millis(DEFAULT_CHECK_TIMEOUT_MS),
        },
        Some(check) => {
            let check = check.into_inner();
            let hc_key = format!("{key}.health_check");
            let kind = match (check.kind, check.path) {
                (Some(RawCheckKind::Tcp), Some(path)) => {
                    checker.error(
                        &Checker::at(file, &path),
                        format!("{hc_key}.path"),
                        "a path only applies to type = \"http\"",
                    );
                    HealthCheckKind::Tcp
                }
                (Some(RawCheckKind::Tcp), None) => HealthCheckKind::Tcp,
                (None | Some(RawCheckKind::Http), path) => {
                    let path = match path {
                        None => DEFAULT_HEALTH_PATH.to_owned(),
                        Some(path) => {
                            if !path.get_ref().starts_with('/') || path.get_ref().contains(char::is_whitespace) {
                                checker.error(
                                    &Checker::at(file, &path),
                                    format!("{hc_key}.path"),
                                    "must start with '/' and hold no spaces",
                                );
                            }
                            path.into_inner()
                        }
                    };
                    HealthCheckKind::Http { path }
                }
            };
            HealthCheckSpec {
                kind,
                interval: Duration::from_millis(ranged(
                    checker,
                    file,
                    &format!("{hc_key}.interval_ms"),
                    check.interval_ms.as_ref(),
                    100..=3_600_000,
                    DEFAULT_CHECK_INTERVAL_MS,
                )),
                timeout: Duration::from_millis(ranged(
                    checker,
                    file,
                    &format!("{hc_key}.timeout_ms"),
                    check.timeout_ms.as_ref(),
                    1..=60_000,
                    DEFAULT_CHECK_TIMEOUT_MS,
                )),
            }
        }
    };
    (checker.errors.len() == errors_before).then(|| UpstreamSpec {
        addresses,
        connect_timeout: Duration::from_millis(connect_ms),
        read_timeout: Duration::from_millis(read_ms),
        health_check,
    })
}

/// `host:port` or `[v6]:port`; the host an IPv4 address or a DNS name.
pub(super) fn parse_address(text: &str) -> Result<Address, String> {
    if text.contains("://") {
        return Err(format!("{text:?}: write host:port, without a scheme"));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(|| format!("{text:?}: expected [ipv6]:port"))?;
        host.parse::<Ipv6Addr>().map_err(|_| format!("{text:?}: {host:?} is not an IPv6 address"))?;
        (host, port)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?}: expected host:port"))?;
        if host.parse::<Ipv4Addr>().is_err() && !valid_hostname(host) {
            return Err(format!("{text:?}: {host:?} is neither an IPv4 address nor a host name"));
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Address { host: host.to_ascii_lowercase(), port }),
        _ => Err(format!("{text:?}: the port must be 1 to 65535")),
    }
}

fn valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn check_limit(
    checker: &mut Checker<'_>,
    name: &str,
    at: &At,
    raw: RawLimit,
    capabilities: Capabilities,
) -> Option<LimitSpec> {
    let errors_before = checker.errors.len();
    let key = format!("limits.{name}");
    if !valid_name(name) {
        checker.error(at, &key, NAME_RULE);
    }
    let requests = ranged(checker, at.file, &format!("{key}.requests"), Some(&raw.requests), 1..=1_000_000_000, 1);
    let window = ranged(checker, at.file, &format!("{key}.window_seconds"), Some(&raw.window_seconds), 1..=86_400, 1);
    let store = match &raw.store {
        None => LimitStore::Local,
        Some(store) => match store.get_ref() {
            RawLimitStore::Local => LimitStore::Local,
            RawLimitStore::Redis => {
                if !capabilities.redis {
                    checker.error(
                        &Checker::at(at.file, store),
                        format!("{key}.store"),
                        "\"redis\" needs EDGE_REDIS_URL, which is not set",
                    );
                }
                LimitStore::Redis
            }
        },
    };
    let key = match raw.key {
        RawLimitKey::ClientIp => LimitKey::ClientIp,
        RawLimitKey::Subject => LimitKey::Subject,
    };
    (checker.errors.len() == errors_before).then(|| LimitSpec {
        requests: u32::try_from(requests).unwrap_or(u32::MAX),
        window: Duration::from_secs(window),
        key,
        store,
    })
}

/// Checks a `path`/`prefix` value; `template` allows `{param}` segments.
fn parse_path(text: &str, template: bool) -> Result<PathMatcher, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} must start with '/'"));
    }
    if text.contains(|c: char| c.is_whitespace() || c == '?' || c == '#' || c.is_control()) {
        return Err(format!("{text:?} may not hold spaces, '?' or '#'"));
    }
    if text == "/" {
        return Ok(if template { PathMatcher::Exact("/".into()) } else { PathMatcher::Prefix("/".into()) });
    }
    if text.ends_with('/') {
        return Err(format!("{text:?} may not end with '/'"));
    }
    let mut segments = Vec::new();
    for segment in text[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("{text:?} has an empty, '.' or '..' segment"));
        }
        let is_param = segment.len() > 2
            && segment.starts_with('{')
            && segment.ends_with('}')
            && segment[1..segment.len() - 1].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if is_param {
            if !template {
                return Err(format!("{text:?}: a prefix may not hold {{param}} segments; use path"));
            }
            segments.push(Segment::Param);
        } else if segment.contains(['{', '}']) {
            return Err(format!("{text:?}: a {{param}} must be a whole segment of letters, digits and '_'"));
        } else {
            segments.push(Segment::Literal(segment.to_owned()));
        }
    }
    if !template {
        Ok(PathMatcher::Prefix(text.to_owned()))
    } else if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
        Ok(PathMatcher::Exact(text.to_owned()))
    } else {
        Ok(PathMatcher::Template(segments))
    }
}

fn parse_methods(
    checker: &mut Checker<'_>,
    file: usize,
    key: &str,
    list: &Spanned<Vec<Spanned<String>>>,
) -> Option<Vec<Method>> {
    if list.get_ref().is_empty() {
        checker.error(&Checker::at(file, list), key, "list at least one method, or leave `methods` out for all");
    }
    let mut methods = Vec::new();
    for (i, method) in list.get_ref().iter().enumerate() {
        let upper = method.get_ref().to_ascii_uppercase();
        if upper == "*" {
            return None;
        }
        match METHODS.contains(&upper.as_str()).then(|| Method::from_bytes(upper.as_bytes())) {
            Some(Ok(m)) if !methods.contains(&m) => methods.push(m),
            Some(Ok(_)) => {}
            _ => checker.error(
                &Checker::at(file, method),
                format!("{key}[{i}]"),
                format!("{:?} is not one of {}", method.get_ref(), METHODS.join(", ")),
            ),
        }
    }
    Some(methods)
}

fn overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

struct References {
    upstreams: std::collections::BTreeSet<String>,
    limits: std::collections::BTreeSet<String>,
    /// Every file parsed, so a name not declared is really unknown.
    complete: bool,
}

fn check_route(
    checker: &mut Checker<'_>,
    index: usize,
    at: &At,
    raw: RawRoute,
    refs: &References,
    limits: &BTreeMap<String, LimitSpec>,
    earlier: &[(At, RouteSpec)],
) -> Option<RouteSpec> {
    let errors_before = checker.errors.len();
    let file = at.file;
    let name = raw.name.get_ref().clone();
    let key = format!("routes[{index}] ({name:?})");
    if !valid_name(&name) {
        checker.error(&Checker::at(file, &raw.name), format!("{key}.name"), NAME_RULE);
    }
    if let Some((first, _)) = earlier.iter().find(|(_, r)| r.name == name) {
        let first = checker.location(first);
        checker.error(&Checker::at(file, &raw.name), format!("{key}.name"), format!("used twice (first at {first})"));
    }
    let matcher = match (&raw.path, &raw.prefix) {
        (Some(path), None) => parse_path(path.get_ref(), true)
            .map_err(|why| checker.error(&Checker::at(file, path), format!("{key}.path"), why))
            .ok(),
        (None, Some(prefix)) => parse_path(prefix.get_ref(), false)
            .map_err(|why| checker.error(&Checker::at(file, prefix), format!("{key}.prefix"), why))
            .ok(),
        _ => {
            checker.error(at, &key, "give exactly one of `path` (exact or {param} template) and `prefix`");
            None
        }
    };
    let methods = raw.methods.as_ref().and_then(|list| parse_methods(checker, file, &format!("{key}.methods"), list));
    if !refs.upstreams.contains(raw.upstream.get_ref()) && refs.complete {
        let known: Vec<&str> = refs.upstreams.iter().map(String::as_str).collect();
        checker.error(
            &Checker::at(file, &raw.upstream),
            format!("{key}.upstream"),
            format!("unknown upstream {:?} (defined: {})", raw.upstream.get_ref(), known.join(", ")),
        );
    }
    if let Some(limit) = &raw.rate_limit {
        match limits.get(limit.get_ref()) {
            None if refs.limits.contains(limit.get_ref()) || !refs.complete => {}
            None => {
                let known: Vec<&str> = refs.limits.iter().map(String::as_str).collect();
                checker.error(
                    &Checker::at(file, limit),
                    format!("{key}.rate_limit"),
                    format!("unknown limit {:?} (defined: {})", limit.get_ref(), known.join(", ")),
                );
            }
            Some(spec) if spec.key == LimitKey::Subject && !raw.auth => checker.error(
                &Checker::at(file, limit),
                format!("{key}.rate_limit"),
                format!("limit {:?} is keyed by subject, which needs auth = true", limit.get_ref()),
            ),
            Some(_) => {}
        }
    }
    if let Some(matcher) = &matcher {
        if let Some((first, other)) =
            earlier.iter().find(|(_, r)| &r.matcher == matcher && overlap(&r.methods, &methods))
        {
            let first = checker.location(first);
            checker.error(
                at,
                &key,
                format!("duplicate route: {matcher} with the same methods is already route {:?} ({first})", other.name),
            );
        }
    }
    if checker.errors.len() != errors_before {
        return None;
    }
    Some(RouteSpec {
        name,
        matcher: matcher?,
        methods,
        upstream: raw.upstream.into_inner(),
        auth: raw.auth,
        rate_limit: raw.rate_limit.map(Spanned::into_inner),
    })
}

fn valid_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
            if port.parse::<u16>().is_err() {
                return false;
            }
            host
        }
        _ => rest,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<Ipv6Addr>().is_ok() || host.parse::<Ipv4Addr>().is_ok() || valid_hostname(host)
}

fn valid_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_cors(checker: &mut Checker<'_>, file: usize, raw: RawCors) -> Option<CorsSpec> {
    let errors_before = checker.errors.len();
    let mut origins = Vec::new();
    for (i, origin) in raw.allowed_origins.iter().enumerate() {
        if origin.get_ref() == "*" {
            checker.error(
                &Checker::at(file, origin),
                format!("cors.allowed_origins[{i}]"),
                "\"*\" is not accepted: list the exact origins",
            );
        } else if !valid_origin(origin.get_ref()) {
            checker.error(
                &Checker::at(file, origin),
                format!("cors.allowed_origins[{i}]"),
                format!(
                    "{:?} is not an origin like https://app.example.com (scheme, host, optional port, no path)",
                    origin.get_ref()
                ),
            );
        } else {
            origins.push(origin.get_ref().to_ascii_lowercase());
        }
    }
    let mut list = |key: &str, values: Option<Vec<Spanned<String>>>, default: &[&str], upper: bool| -> Vec<String> {
        let Some(values) = values else {
            return default.iter().map(|s| s.to_string()).collect();
        };
        let mut out = Vec::new();
        for (i, value) in values.iter().enumerate() {
            if !valid_token(value.get_ref()) {
                checker.error(
                    &Checker::at(file, value),
                    format!("cors.{key}[{i}]"),
                    format!("{:?} is not a valid name", value.get_ref()),
                );
            }
            let v = if upper { value.get_ref().to_ascii_uppercase() } else { value.get_ref().to_ascii_lowercase() };
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    };
    let allowed_methods =
        list("allowed_methods", raw.allowed_methods, &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], true);
    let allowed_headers =
        list("allowed_headers", raw.allowed_headers, &["authorization", "content-type", "x-request-id"], false);
    let expose_headers = list(
        "expose_headers",
        raw.expose_headers,
        &["location", "x-request-id", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
        false,
    );
    let max_age_seconds = ranged(checker, file, "cors.max_age_seconds", raw.max_age_seconds.as_ref(), 0..=86_400, 600);
    (checker.errors.len() == errors_before).then_some(CorsSpec {
        allowed_origins: origins,
        allowed_methods,
        allowed_headers,
        expose_headers,
        allow_credentials: raw.allow_credentials,
        max_age_seconds,
    })
}

#[cfg(test)]
pub(super) fn parse_path_for_tests(text: &str, template: bool) -> Result<PathMatcher, String> {
    parse_path(text, template)
}
