//! Task events: the names svc-tasks publishes them under and svc-notify consumes them by.
//! The type is also the event's routing key on the `task.events` exchange and the
//! notification's `type`. The JSON body each carries is written in svc-tasks
//! (`events.rs`) and read in svc-notify (`domain/event.rs`); a test in `todo-standalone`,
//! which links both, checks that what one writes the other reads.

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
