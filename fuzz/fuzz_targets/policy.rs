//! The edge's policy parser on arbitrary files: whatever an operator (or a broken
//! ConfigMap) puts in `POLICY_DIR`, parsing either yields a policy or a list of
//! problems with valid positions; it never panics.
#![no_main]

use edge::policy::{parse, Capabilities, SourceFile};
use libfuzzer_sys::fuzz_target;

/// The input is split on NUL bytes into up to four files, so one input can hold the
/// routes, the upstreams they name, the limits and the CORS table.
const NAMES: [&str; 4] = ["cors.toml", "limits.toml", "routes.toml", "upstreams.toml"];

fuzz_target!(|data: &[u8]| {
    let sources: Vec<SourceFile> = data
        .split(|b| *b == 0)
        .zip(NAMES)
        .map(|(bytes, name)| SourceFile { name: name.to_owned(), text: String::from_utf8_lossy(bytes).into_owned() })
        .collect();
    // With Redis offered, so `store = "redis"` tables are parsed to the end too.
    match parse(&sources, Capabilities { redis: true }) {
        Ok(policy) => {
            // Whatever was accepted is internally consistent.
            for route in &policy.routes {
                assert!(policy.upstreams.contains_key(&route.upstream), "route names a missing upstream");
                if let Some(limit) = &route.rate_limit {
                    assert!(policy.limits.contains_key(limit), "route names a missing limit");
                }
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refusal lists at least one problem");
            for error in &errors.0 {
                // A problem of the set as a whole (no routes at all, say) names "*.toml".
                let known = error.file == "*.toml" || sources.iter().any(|s| s.name == error.file);
                assert!(known, "a problem names a file outside the set: {error}");
                if let Some(source) = sources.iter().find(|s| s.name == error.file) {
                    assert!(error.line <= source.text.lines().count() + 1, "a problem points past the end: {error}");
                }
                let _ = error.to_string();
            }
        }
    }
});
