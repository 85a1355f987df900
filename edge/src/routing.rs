//! Which route a request takes: the first route, in the policy's matching order, whose
//! path matcher and methods fit.

use std::sync::Arc;

use http::Method;

use crate::active_policy::{ActivePolicy, Route};

pub enum Lookup {
    Found(Arc<Route>),
    /// Some route has this path, none this method; lists the methods that would do.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

pub fn lookup(live: &ActivePolicy, method: &Method, path: &str) -> Lookup {
    let mut allowed: Vec<Method> = Vec::new();
    for route in &live.routes {
        if !route.spec.matcher.matches(path) {
            continue;
        }
        if route.spec.allows(method) {
            return Lookup::Found(Arc::clone(route));
        }
        for m in route.spec.methods.iter().flatten() {
            if !allowed.contains(m) {
                allowed.push(m.clone());
            }
        }
    }
    if allowed.is_empty() {
        Lookup::NotFound
    } else {
        Lookup::MethodNotAllowed(allowed)
    }
}

/// Paths with empty, `.` or `..` segments (also percent-encoded) are refused outright:
/// a prefix route must never be walked out of by the upstream's path handling.
pub fn is_ambiguous_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return true;
    }
    let inner = path.strip_suffix('/').unwrap_or(path);
    inner
        .split('/')
        .skip(1)
        .any(|segment| (segment.is_empty() && inner.len() > 1) || is_dot_segment(segment) || has_encoded(segment, b'f'))
}

/// `.` or `..`, each dot possibly written `%2e` or `%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while let Some(after) = rest.strip_prefix(b".").or_else(|| strip_encoded(rest, b'e')) {
        rest = after;
        dots += 1;
    }
    rest.is_empty() && (1..=2).contains(&dots)
}

/// Whether `text` holds `%2` and `letter` in either case (`%2f`: an encoded `/`).
fn has_encoded(text: &str, letter: u8) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| strip_encoded(&bytes[i..], letter).is_some())
}

/// `bytes` after a leading `%2` and `letter` in either case.
fn strip_encoded(bytes: &[u8], letter: u8) -> Option<&[u8]> {
    match bytes {
        [b'%', b'2', c, rest @ ..] if c.to_ascii_lowercase() == letter => Some(rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_empty_segments_are_ambiguous() {
        for bad in [
            "/tasks/../users/me",
            "/tasks/%2e%2E/x",
            "/tasks//x",
            "/./tasks",
            "tasks",
            "/tasks/a%2Fb",
            "/a/.%2e",
            "/%2E",
        ] {
            assert!(is_ambiguous_path(bad), "{bad}");
        }
        for good in ["/", "/tasks", "/tasks/", "/tasks/abc/complete", "/users/me", "/a/...", "/a/.x", "/a/%2ex", "/%2"]
        {
            assert!(!is_ambiguous_path(good), "{good}");
        }
    }
}
