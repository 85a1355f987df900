//! Timestamps as the contract wants them: RFC 3339, UTC, millisecond precision
//! (what MongoDB stores, so a value read back equals the one written).

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, truncated to milliseconds.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default()
}

pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde helper: `#[serde(serialize_with = "todo_common::time::serialize")]`.
pub fn serialize<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_millis() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        assert_eq!(rfc3339(&at), "2023-11-14T22:13:20.123Z");
        assert_eq!(now().timestamp_subsec_nanos() % 1_000_000, 0);
    }
}
