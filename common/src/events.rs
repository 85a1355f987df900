//! The task-event contract between svc-tasks, which publishes, and svc-notify, which
//! consumes: the type names (also the routing keys on the `task.events` exchange and the
//! notifications' `type`) and the JSON body. A test in `todo-standalone`, which links
//! both services, checks that what one writes the other reads.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The JSON body of every task event (see the events brief). A reader ignores fields it
/// does not know, so a writer may add some without breaking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBody {
    /// The event's own id: a redelivered or republished event has the same.
    pub id: String,
    /// An [`EventType`]'s wire name; text here, so that an unknown one is the reader's
    /// decision rather than a decoding error.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the change happened.
    pub occurred_at: Timestamp,
    pub user_id: String,
    pub task_id: String,
    /// The request that made the change.
    pub request_id: Option<String>,
    pub data: TaskData,
}

/// The task as the change left it (as it was, for a delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskData {
    pub title: String,
    /// Always written; a reader that does not need them takes an event without them.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub priority: String,
    pub due_date: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Created,
    Updated,
    Completed,
    Reopened,
    Deleted,
}

impl EventType {
    pub const ALL: [EventType; 5] = [Self::Created, Self::Updated, Self::Completed, Self::Reopened, Self::Deleted];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }

    /// The wire name, also the routing key and the notification's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "task.created",
            Self::Updated => "task.updated",
            Self::Completed => "task.completed",
            Self::Reopened => "task.reopened",
            Self::Deleted => "task.deleted",
        }
    }

    /// What happened to the task, in words: `completed`.
    pub fn past_tense(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Completed => "completed",
            Self::Reopened => "reopened",
            Self::Deleted => "deleted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_by_its_wire_name() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.as_str().trim_start_matches("task."), kind.past_tense());
        }
        assert_eq!(EventType::parse("task.exploded"), None);
    }
}
