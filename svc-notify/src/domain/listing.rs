//! Listing a user's notifications: the query, its cursor and one page of results.

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

/// Where the previous page ended: the last notification's (createdAt, id).
pub type Cursor = todo_common::paging::Cursor<NotificationId>;
/// One page of notifications, newest first.
pub type Page = todo_common::paging::Page<Notification>;

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
                "cursor" => match Cursor::decode(value) {
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
        let cursor =
            Cursor { at: todo_common::time::Timestamp::from_millis(1_700_000_000_123), id: NotificationId::new() };
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
