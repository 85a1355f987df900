//! The one timestamp type: UTC, millisecond precision (what MongoDB stores, so a value
//! read back equals the one written), RFC 3339 wherever it is text.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::problem::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Now, truncated to milliseconds.
    pub fn now() -> Self {
        Self::from_millis(Utc::now().timestamp_millis())
    }

    /// Out of chrono's range (never written by this system) reads as the epoch.
    pub fn from_millis(millis: i64) -> Self {
        Self::checked_from_millis(millis).unwrap_or_default()
    }

    /// `None` out of chrono's range: for values from outside, such as a client's cursor.
    pub fn checked_from_millis(millis: i64) -> Option<Self> {
        DateTime::from_timestamp_millis(millis).map(Self)
    }

    /// An RFC 3339 date-time in any offset, as the request's `field`.
    pub fn parse_rfc3339(field: &str, raw: &str) -> Result<Self, FieldError> {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| Self::from_millis(t.timestamp_millis()))
            .map_err(|_| FieldError::new(field, "must be an RFC 3339 date-time, e.g. 2030-01-31T17:00:00Z"))
    }

    pub fn millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn unix_seconds(&self) -> u64 {
        u64::try_from(self.0.timestamp()).unwrap_or_default()
    }

    /// `2023-11-14T22:13:20.123Z`.
    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// On the wire: RFC 3339 text.
impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse_rfc3339("timestamp", &raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_milliseconds_in_utc() {
        let t = Timestamp::parse_rfc3339("dueDate", "2030-01-31T18:00:00.123456+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2030-01-31T17:00:00.123Z");
        assert!(Timestamp::parse_rfc3339("dueDate", "tomorrow").is_err());
        assert_eq!(Timestamp::from_millis(1_700_000_000_123).to_rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(Timestamp::now().0.timestamp_subsec_nanos() % 1_000_000, 0, "truncated to milliseconds");
    }

    #[test]
    fn serializes_as_rfc3339_text() {
        let at = Timestamp::from_millis(1_700_000_000_123);
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(json, r#""2023-11-14T22:13:20.123Z""#);
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), at);
    }
}
