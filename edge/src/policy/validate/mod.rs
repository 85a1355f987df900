//! Raw files -> typed [`Policy`], collecting every problem with its file, line and key.
//! This module reads the files and merges their sections (a name defined twice is an
//! error); each section is checked in its own module.

mod client_ip;
mod cors;
mod limits;
mod routes;
mod upstreams;

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::raw::{RawClientIp, RawCors, RawFile, RawLimit, RawRoute, RawUpstream};
use super::{Capabilities, LimitSpec, Policy, PolicyError, PolicyErrors, RouteSpec, SourceFile, UpstreamSpec};
use client_ip::check_client_ip;
use cors::check_cors;
use limits::check_limit;
#[cfg(test)]
pub(super) use routes::parse_path;
use routes::{check_route, References};
use upstreams::check_upstream;

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

    /// Adds one file's named tables (`[upstreams.NAME]`, `[limits.NAME]`) to `merged`; a
    /// name defined before, in this file or another, is reported and the first kept.
    fn merge_by_name<T>(
        &mut self,
        section: &str,
        merged: &mut BTreeMap<String, (At, T)>,
        file: usize,
        tables: impl IntoIterator<Item = (String, Spanned<T>)>,
    ) {
        for (name, table) in tables {
            let at = Self::at(file, &table);
            match merged.get(&name) {
                Some((first, _)) => {
                    let first = self.location(first);
                    self.error(&at, format!("{section}.{name}"), format!("defined twice (first at {first})"));
                }
                None => {
                    merged.insert(name, (at, table.into_inner()));
                }
            }
        }
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
        checker.merge_by_name("upstreams", &mut upstreams, file, raw.upstreams);
        checker.merge_by_name("limits", &mut limits, file, raw.limits);
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
