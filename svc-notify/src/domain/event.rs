//! Task events as svc-tasks publishes them (the contract's [`EventBody`]), and why one
//! may be impossible to process.

use todo_common::events::{EventBody, EventType};
use todo_common::time::Timestamp;

use super::{is_sane_foreign_id, TaskId, UserId};

/// The event's own id: the key that makes a redelivered or republished event a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId(String);

impl EventId {
    pub fn parse(raw: &str) -> Option<Self> {
        is_sane_foreign_id(raw).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task event this service can turn into a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    pub id: EventId,
    pub kind: EventType,
    pub occurred_at: Timestamp,
    pub user_id: UserId,
    pub task_id: TaskId,
    pub title: String,
}

/// Why a message can never be processed: retrying it would fail the same way forever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoisonReason {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the event does not have the expected shape: {0}")]
    BadShape(String),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
}

impl PoisonReason {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::BadShape(_) => "bad_shape",
            Self::UnknownType(_) => "unknown_type",
        }
    }
}

impl TaskEvent {
    pub fn parse(payload: &[u8]) -> Result<Self, PoisonReason> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| PoisonReason::NotJson(e.to_string()))?;
        let wire: EventBody = serde_json::from_value(value).map_err(|e| PoisonReason::BadShape(e.to_string()))?;
        let kind = EventType::parse(&wire.kind).ok_or_else(|| PoisonReason::UnknownType(wire.kind.clone()))?;
        let bad = |field: &str| PoisonReason::BadShape(format!("{field} is empty, too long or not printable"));
        Ok(Self {
            id: EventId::parse(&wire.id).ok_or_else(|| bad("id"))?,
            kind,
            occurred_at: wire.occurred_at,
            user_id: UserId::parse(&wire.user_id).ok_or_else(|| bad("userId"))?,
            task_id: TaskId::parse(&wire.task_id).ok_or_else(|| bad("taskId"))?,
            title: wire.data.title,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str) -> serde_json::Value {
        json!({
            "id": "0b6f4a52-0a3e-4f7e-9d55-2f1f6c3f0e11",
            "type": kind,
            "occurredAt": "2024-05-01T10:00:00.123Z",
            "userId": "u1",
            "taskId": "t1",
            "requestId": null,
            "data": {"title": "Buy milk", "status": "completed", "priority": "normal", "dueDate": null}
        })
    }

    #[test]
    fn a_published_event_parses() {
        let parsed = TaskEvent::parse(event("task.completed").to_string().as_bytes()).unwrap();
        assert_eq!(parsed.kind, EventType::Completed);
        assert_eq!(parsed.user_id.as_str(), "u1");
        assert_eq!(parsed.task_id.as_str(), "t1");
        assert_eq!(parsed.occurred_at.millis() % 1000, 123);
    }

    #[test]
    fn unprocessable_messages_say_why() {
        assert_eq!(TaskEvent::parse(b"not json").unwrap_err().label(), "not_json");
        assert_eq!(
            TaskEvent::parse(event("task.exploded").to_string().as_bytes()).unwrap_err().label(),
            "unknown_type"
        );
        let mut no_title = event("task.created");
        no_title["data"] = json!({});
        assert_eq!(TaskEvent::parse(no_title.to_string().as_bytes()).unwrap_err().label(), "bad_shape");
        let mut no_user = event("task.created");
        no_user["userId"] = json!("");
        assert_eq!(TaskEvent::parse(no_user.to_string().as_bytes()).unwrap_err().label(), "bad_shape");
        let mut bad_time = event("task.created");
        bad_time["occurredAt"] = json!("yesterday");
        assert_eq!(TaskEvent::parse(bad_time.to_string().as_bytes()).unwrap_err().label(), "bad_shape");
        assert_eq!(TaskEvent::parse(b"[1,2]").unwrap_err().label(), "bad_shape");
    }
}
