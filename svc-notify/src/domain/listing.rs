//! Listing a user's notifications: the query, its cursor and one page of results.

use chrono::{DateTime, Utc};
use todo_common::problem::FieldError;

use super::{Notification, NotificationId};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 100;

/// Which notifications `unread=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFilter {
    /// No `unread` parameter.
    All,
    /// `unread=true`.
    UnreadOnly,
    /// `unread=false`.
    ReadOnly,
}

/// Where the previous page ended: the last item's position in the newest-first order
/// (`createdAt` descending, ties broken by id descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: NotificationId,
}

impl Cursor {
    pub fn after(notification: &Notification) -> Self {
        Self { created_at: notification.created_at, id: notification.id }
    }

    /// Opaque to clients: `<createdAt unix millis>_<id hex>`, all URL-safe.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at.timestamp_millis(), self.id.to_hex())
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let (millis, id) = raw.split_once('_')?;
        let created_at = DateTime::from_timestamp_millis(millis.parse().ok()?)?;
        Some(Self { created_at, id: NotificationId::parse(id)? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: ReadFilter,
    pub limit: u32,
    pub after: Option<Cursor>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self { filter: ReadFilter::All, limit: DEFAULT_LIMIT, after: None }
    }
}

impl ListQuery {
    /// Every bad parameter is reported at once; unknown or repeated ones are refused
    /// rather than silently ignored.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Vec<FieldError>> {
        let mut query = Self::default();
        let mut errors = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if seen.contains(&key.as_str()) {
                errors.push(FieldError::new(key.clone(), "may be given only once"));
                continue;
            }
            seen.push(key);
            match key.as_str() {
                "unread" => match value.as_str() {
                    "true" => query.filter = ReadFilter::UnreadOnly,
                    "false" => query.filter = ReadFilter::ReadOnly,
                    _ => errors.push(FieldError::new("unread", "must be true or false")),
                },
                "limit" => match value.parse::<u32>() {
                    Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => query.limit = limit,
                    _ => errors.push(FieldError::new("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))),
                },
                "cursor" => match Cursor::parse(value) {
                    Some(cursor) => query.after = Some(cursor),
                    None => errors.push(FieldError::new("cursor", "is not a cursor this API handed out")),
                },
                _ => errors.push(FieldError::new(key.clone(), "is not a known query parameter")),
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(errors)
        }
    }
}

/// One page, newest first, and where the next one starts (none when this is the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Notification>,
    pub next: Option<Cursor>,
}

impl Page {
    /// From up to `limit + 1` items read newest first (see `todo_common::paging`).
    pub fn from_overfetch(items: Vec<Notification>, limit: usize) -> Self {
        let (items, next) = todo_common::paging::trim_overfetch(items, limit, Cursor::after);
        Self { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_empty_query_lists_everything_fifty_at_a_time() {
        assert_eq!(ListQuery::parse(&[]).unwrap(), ListQuery::default());
        assert_eq!(ListQuery::default().limit, 50);
    }

    #[test]
    fn good_values_parse() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            id: NotificationId::new(),
        };
        let query =
            ListQuery::parse(&pairs(&[("unread", "true"), ("limit", "100"), ("cursor", &cursor.encode())])).unwrap();
        assert_eq!(query, ListQuery { filter: ReadFilter::UnreadOnly, limit: 100, after: Some(cursor) });
        assert_eq!(ListQuery::parse(&pairs(&[("unread", "false")])).unwrap().filter, ReadFilter::ReadOnly);
    }

    #[test]
    fn bad_values_are_field_errors() {
        let errors =
            ListQuery::parse(&pairs(&[("unread", "yes"), ("limit", "0"), ("cursor", "abc"), ("colour", "red")]))
                .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["unread", "limit", "cursor", "colour"]);
        assert!(ListQuery::parse(&pairs(&[("limit", "101")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("limit", "-1")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("limit", "5"), ("limit", "6")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("cursor", "12_nothex")])).is_err());
    }
}
