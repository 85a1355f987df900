//! The service's vocabulary. Raw strings from tokens, paths, queries and events are
//! parsed here once, so everything further in works with checked values.

mod event;
mod listing;
mod notification;

pub use event::{EventId, PoisonReason, TaskEvent};
pub use listing::{Cursor, ListQuery, Page, ReadFilter, DEFAULT_LIMIT, MAX_LIMIT};
pub use notification::{NewNotification, Notification, NotificationId};
pub use todo_common::events::EventType;

use todo_common::auth::Subject;

/// Opaque ids from other services (user ids, task ids, event ids) are at most this long.
const MAX_FOREIGN_ID_CHARS: usize = 128;

fn is_sane_foreign_id(raw: &str) -> bool {
    !raw.is_empty() && raw.chars().count() <= MAX_FOREIGN_ID_CHARS && !raw.chars().any(char::is_control)
}

/// The owner of a notification: the token's `sub`, or an event's `userId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Option<Self> {
        is_sane_foreign_id(raw).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The token verifier has checked a subject already.
impl From<&Subject> for UserId {
    fn from(subject: &Subject) -> Self {
        Self(subject.as_str().to_owned())
    }
}

/// The task a notification is about; svc-tasks owns its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskId(String);

impl TaskId {
    pub fn parse(raw: &str) -> Option<Self> {
        is_sane_foreign_id(raw).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_ids_must_be_present_bounded_and_printable() {
        assert!(UserId::parse("65f0c0ffee").is_some());
        assert!(UserId::parse("").is_none());
        assert!(UserId::parse(&"u".repeat(129)).is_none());
        assert!(TaskId::parse("a\nb").is_none());
    }
}
