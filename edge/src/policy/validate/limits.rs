//! `[limits.NAME]`: a rate, what it is keyed by and where it is counted.

use std::time::Duration;

use super::{ranged, valid_name, At, Checker, NAME_RULE};
use crate::policy::raw::{RawLimit, RawLimitKey, RawLimitStore};
use crate::policy::{Capabilities, LimitKey, LimitSpec, LimitStore};

pub(super) fn check_limit(
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
