//! `[upstreams.NAME]`: addresses, timeouts and health checks.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Spanned;

use super::{ranged, valid_hostname, valid_name, At, Checker, NAME_RULE};
use crate::policy::raw::{RawCheckKind, RawUpstream};
use crate::policy::{Address, HealthCheckKind, HealthCheckSpec, UpstreamSpec};

const CONNECT_TIMEOUT: MillisSetting = MillisSetting { field: "connect_timeout_ms", range: 1..=60_000, default: 1_000 };
const READ_TIMEOUT: MillisSetting = MillisSetting { field: "read_timeout_ms", range: 1..=600_000, default: 25_000 };
const CHECK_INTERVAL: MillisSetting = MillisSetting { field: "interval_ms", range: 100..=3_600_000, default: 1_000 };
const CHECK_TIMEOUT: MillisSetting = MillisSetting { field: "timeout_ms", range: 1..=60_000, default: 1_000 };

const DEFAULT_HEALTH_PATH: &str = "/healthz";

pub(super) fn check_upstream(checker: &mut Checker<'_>, name: &str, at: &At, raw: RawUpstream) -> Option<UpstreamSpec> {
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
    let connect_timeout = CONNECT_TIMEOUT.read(checker, file, &key, raw.connect_timeout_ms.as_ref());
    let read_timeout = READ_TIMEOUT.read(checker, file, &key, raw.read_timeout_ms.as_ref());
    let health_check = match raw.health_check {
        None => HealthCheckSpec {
            kind: HealthCheckKind::Tcp,
            interval: CHECK_INTERVAL.default(),
            timeout: CHECK_TIMEOUT.default(),
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
                interval: CHECK_INTERVAL.read(checker, file, &hc_key, check.interval_ms.as_ref()),
                timeout: CHECK_TIMEOUT.read(checker, file, &hc_key, check.timeout_ms.as_ref()),
            }
        }
    };
    (checker.errors.len() == errors_before).then_some(UpstreamSpec {
        addresses,
        connect_timeout,
        read_timeout,
        health_check,
    })
}

/// A duration in milliseconds under `key`: its field, accepted range and default.
struct MillisSetting {
    field: &'static str,
    range: RangeInclusive<u64>,
    default: u64,
}

impl MillisSetting {
    fn read(&self, checker: &mut Checker<'_>, file: usize, key: &str, value: Option<&Spanned<u64>>) -> Duration {
        let field = format!("{key}.{}", self.field);
        Duration::from_millis(ranged(checker, file, &field, value, self.range.clone(), self.default))
    }

    fn default(&self) -> Duration {
        Duration::from_millis(self.default)
    }
}

/// `host:port` or `[v6]:port`; the host an IPv4 address or a DNS name.
fn parse_address(text: &str) -> Result<Address, String> {
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
