//! A notification: what a user is told about one of their tasks.

use todo_common::paging::{Cursor, Listed};
use todo_common::time::Timestamp;

use super::{EventId, EventType, TaskEvent, TaskId, UserId};

todo_common::object_id_type!(
    /// A notification's id; anything that is not one names no notification (404).
    NotificationId
);

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: NotificationId,
    pub kind: EventType,
    pub message: String,
    pub task_id: TaskId,
    pub created_at: Timestamp,
    pub read: bool,
}

impl Listed for Notification {
    type Id = NotificationId;
    fn cursor(&self) -> Cursor<NotificationId> {
        Cursor { at: self.created_at, id: self.id }
    }
}

/// A notification about to be stored, still carrying the event it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub id: NotificationId,
    pub event_id: EventId,
    pub user_id: UserId,
    pub kind: EventType,
    pub message: String,
    pub task_id: TaskId,
    /// When the event happened, so the list orders by what happened, not by when it arrived.
    pub created_at: Timestamp,
}

impl From<&TaskEvent> for NewNotification {
    fn from(event: &TaskEvent) -> Self {
        Self {
            id: NotificationId::new(),
            event_id: event.id.clone(),
            user_id: event.user_id.clone(),
            kind: event.kind,
            message: message(event.kind, &event.title),
            task_id: event.task_id.clone(),
            created_at: event.occurred_at,
        }
    }
}

/// What a person reads: `Task "Buy milk" was completed`.
fn message(kind: EventType, title: &str) -> String {
    format!("Task \"{title}\" was {}", kind.past_tense())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_well() {
        assert_eq!(message(EventType::Completed, "Buy milk"), "Task \"Buy milk\" was completed");
        for kind in EventType::ALL {
            let past = kind.as_str().trim_start_matches("task.");
            assert_eq!(message(kind, "x"), format!("Task \"x\" was {past}"));
        }
    }

    #[test]
    fn malformed_ids_name_nothing() {
        assert!(NotificationId::parse("nope").is_none());
        assert!(NotificationId::parse("65f0c0ffee65f0c0ffee65f0").is_some());
        let id = NotificationId::new();
        assert_eq!(NotificationId::parse(&id.to_string()), Some(id));
    }
}
