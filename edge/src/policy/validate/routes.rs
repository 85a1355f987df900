//! `[[routes]]`: what a route matches, where it goes, and what it needs.

use std::collections::BTreeMap;

use http::Method;
use toml::Spanned;

use super::{valid_name, At, Checker, NAME_RULE};
use crate::policy::raw::RawRoute;
use crate::policy::{LimitKey, LimitSpec, PathMatcher, RouteSpec, Segment};

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Checks a `path`/`prefix` value; `template` allows `{param}` segments.
pub(in crate::policy) fn parse_path(text: &str, template: bool) -> Result<PathMatcher, String> {
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

pub(super) struct References {
    pub(super) upstreams: std::collections::BTreeSet<String>,
    pub(super) limits: std::collections::BTreeSet<String>,
    /// Every file parsed, so a name not declared is really unknown.
    pub(super) complete: bool,
}

pub(super) fn check_route(
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
