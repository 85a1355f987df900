//! `[cors]`: the origins, methods and headers browsers may use.

use std::net::{Ipv4Addr, Ipv6Addr};

use toml::Spanned;

use super::{ranged, valid_hostname, Checker};
use crate::policy::raw::RawCors;
use crate::policy::CorsSpec;

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

pub(super) fn check_cors(checker: &mut Checker<'_>, file: usize, raw: RawCors) -> Option<CorsSpec> {
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
