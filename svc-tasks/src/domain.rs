//! Task types parsed once at the boundary: nothing inward sees an unchecked title,
//! an id string or a raw query value.

use std::fmt;

use serde::{Deserialize, Serialize};
use todo_common::auth::Subject;
use todo_common::events::EventType;
use todo_common::paging::{Listed, Page};
use todo_common::problem::FieldError;
pub use todo_common::time::Timestamp;

pub const TITLE_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 2000;
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 100;

/// The owner of tasks: the verified token's subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// Only ever built from a verified token's `sub`.
    pub fn from_verified_subject(subject: &str) -> Self {
        Self(subject.to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Subject> for UserId {
    fn from(subject: &Subject) -> Self {
        Self(subject.as_str().to_owned())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

todo_common::object_id_type!(
    /// A task id; anything that is not one names no task (404, not 400).
    TaskId
);

/// 1..=200 characters, not blank; kept trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTitle(String);

impl TaskTitle {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new("title", "must not be blank"));
        }
        if trimmed.chars().count() > TITLE_MAX_CHARS {
            return Err(FieldError::new("title", format!("must be at most {TITLE_MAX_CHARS} characters")));
        }
        Ok(Self(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// At most 2000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDescription(String);

impl TaskDescription {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        if raw.chars().count() > DESCRIPTION_MAX_CHARS {
            return Err(FieldError::new("description", format!("must be at most {DESCRIPTION_MAX_CHARS} characters")));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Completed => "completed",
        }
    }
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "open" => Some(Self::Open),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub owner: UserId,
    pub title: TaskTitle,
    pub description: Option<TaskDescription>,
    pub status: Status,
    pub priority: Priority,
    pub due_date: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

impl Task {
    /// A fresh, open task, created at `now`.
    pub fn create(owner: UserId, new: NewTask, now: Timestamp) -> Applied {
        let task = Self {
            id: TaskId::new(),
            owner,
            title: new.title,
            description: new.description,
            status: Status::Open,
            priority: new.priority,
            due_date: new.due_date,
            created_at: now,
            updated_at: now,
            completed_at: None,
        };
        Applied { task, event: Some(ChangeEvent { kind: EventType::Created, occurred_at: now }) }
    }

    /// The task after `write`, made at `now`, and the event that records it: the one
    /// place that decides what a change does and which event it makes. Completing a
    /// completed task (or reopening an open one) changes nothing and makes no event; a
    /// delete leaves the task as it was, for its event to carry.
    pub fn apply(mut self, write: &Write, now: Timestamp) -> Applied {
        let kind = match write {
            Write::Update(changes) => {
                let TaskChanges { title, description, priority, due_date } = changes.clone();
                self.title = title.unwrap_or(self.title);
                self.description = description.unwrap_or(self.description);
                self.priority = priority.unwrap_or(self.priority);
                self.due_date = due_date.unwrap_or(self.due_date);
                self.updated_at = now;
                Some(EventType::Updated)
            }
            Write::Complete => self.move_to(Status::Completed, now).then_some(EventType::Completed),
            Write::Reopen => self.move_to(Status::Open, now).then_some(EventType::Reopened),
            Write::Delete => Some(EventType::Deleted),
        };
        Applied { task: self, event: kind.map(|kind| ChangeEvent { kind, occurred_at: now }) }
    }

    /// Moves to `status` unless already there; says whether it moved.
    fn move_to(&mut self, status: Status, now: Timestamp) -> bool {
        if self.status == status {
            return false;
        }
        self.status = status;
        self.completed_at = (status == Status::Completed).then_some(now);
        self.updated_at = now;
        true
    }
}

/// A change to an existing task, as a request asks for it.
#[derive(Debug, Clone)]
pub enum Write {
    Update(TaskChanges),
    Complete,
    Reopen,
    Delete,
}

/// A write aimed at one of an owner's tasks.
#[derive(Debug, Clone)]
pub struct Change {
    pub owner: UserId,
    pub id: TaskId,
    pub write: Write,
}

/// The event a change makes, stamped with the change's own time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeEvent {
    pub kind: EventType,
    pub occurred_at: Timestamp,
}

/// What a write did: the task as it now is (as it was, for a delete), and its event;
/// `None` when the write changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub task: Task,
    pub event: Option<ChangeEvent>,
}

#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: TaskTitle,
    pub description: Option<TaskDescription>,
    pub priority: Priority,
    pub due_date: Option<Timestamp>,
}

/// A PATCH: `None` leaves a field alone, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct TaskChanges {
    pub title: Option<TaskTitle>,
    pub description: Option<Option<TaskDescription>>,
    pub priority: Option<Priority>,
    pub due_date: Option<Option<Timestamp>>,
}

impl TaskChanges {
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.description.is_none() && self.priority.is_none() && self.due_date.is_none()
    }
}

/// Where a page of tasks ends: the last task's (createdAt, id).
pub type Cursor = todo_common::paging::Cursor<TaskId>;
/// One page of tasks, newest first.
pub type TaskPage = Page<Task>;

impl Listed for Task {
    type Id = TaskId;
    fn cursor(&self) -> Cursor {
        Cursor { at: self.created_at, id: self.id }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

impl ListQuery {
    /// Parses `status`, `limit` and `cursor`, reporting every bad one; other keys are ignored.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Vec<FieldError>> {
        let mut query = Self { status: None, limit: DEFAULT_PAGE_LIMIT, cursor: None };
        let mut errors = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "status" => match Status::parse(value) {
                    Some(status) => query.status = Some(status),
                    None => errors.push(FieldError::new("status", "must be open or completed")),
                },
                "limit" => match value.parse::<u32>() {
                    Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => query.limit = limit,
                    _ => {
                        errors.push(FieldError::new("limit", format!("must be an integer from 1 to {MAX_PAGE_LIMIT}")))
                    }
                },
                "cursor" => match Cursor::decode(value) {
                    Some(cursor) => query.cursor = Some(cursor),
                    None => errors.push(FieldError::new("cursor", "is not a cursor this service issued")),
                },
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(errors)
        }
    }

    /// A stable text form of the query, part of the cache key.
    pub fn cache_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.status.map_or("all", Status::as_str),
            self.limit,
            self.cursor.map_or_else(|| "first".to_owned(), |c| c.encode())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(TaskTitle::parse("  Buy milk ").unwrap().as_str(), "Buy milk");
        assert!(TaskTitle::parse("   ").is_err());
        assert!(TaskTitle::parse(&"é".repeat(200)).is_ok());
        assert_eq!(TaskTitle::parse(&"é".repeat(201)).unwrap_err().field, "title");
        assert!(TaskDescription::parse(&"x".repeat(2000)).is_ok());
        assert!(TaskDescription::parse(&"x".repeat(2001)).is_err());
    }

    #[test]
    fn task_ids_are_24_hex_digits() {
        let id = TaskId::new();
        assert_eq!(TaskId::parse(&id.to_string()), Some(id));
        assert_eq!(TaskId::parse("nope"), None);
        assert_eq!(TaskId::parse(&format!("{id}0")), None);
    }

    #[test]
    fn list_query_defaults_and_errors() {
        let query = ListQuery::parse(&pairs(&[("other", "x")])).unwrap();
        assert_eq!((query.status, query.limit, query.cursor), (None, DEFAULT_PAGE_LIMIT, None));
        let query = ListQuery::parse(&pairs(&[("status", "completed"), ("limit", "100")])).unwrap();
        assert_eq!((query.status, query.limit), (Some(Status::Completed), 100));
        let errors = ListQuery::parse(&pairs(&[("status", "done"), ("limit", "0"), ("cursor", "x")])).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["status", "limit", "cursor"]);
        assert!(ListQuery::parse(&pairs(&[("limit", "101")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("limit", "ten")])).is_err());
    }

    fn new_task() -> NewTask {
        NewTask {
            title: TaskTitle::parse("Buy milk").unwrap(),
            description: None,
            priority: Priority::Normal,
            due_date: None,
        }
    }

    #[test]
    fn transitions_make_their_events_at_the_change_time() {
        let (t0, t1, t2) =
            (Timestamp::from_millis(1_000), Timestamp::from_millis(2_000), Timestamp::from_millis(3_000));
        let created = Task::create(UserId::from_verified_subject("u1"), new_task(), t0);
        assert_eq!(created.event, Some(ChangeEvent { kind: EventType::Created, occurred_at: t0 }));

        let completed = created.task.apply(&Write::Complete, t1);
        assert_eq!(completed.event, Some(ChangeEvent { kind: EventType::Completed, occurred_at: t1 }));
        assert_eq!(
            (completed.task.status, completed.task.completed_at, completed.task.updated_at),
            (Status::Completed, Some(t1), t1)
        );

        let again = completed.task.clone().apply(&Write::Complete, t2);
        assert_eq!((again.event, &again.task), (None, &completed.task), "a no-op changes nothing");

        let reopened = completed.task.apply(&Write::Reopen, t2);
        assert_eq!(reopened.event.map(|e| e.kind), Some(EventType::Reopened));
        assert_eq!((reopened.task.status, reopened.task.completed_at), (Status::Open, None));
        assert_eq!(reopened.task.clone().apply(&Write::Reopen, t2).event, None);

        let changes = TaskChanges { priority: Some(Priority::High), description: Some(None), ..TaskChanges::default() };
        let updated = reopened.task.apply(&Write::Update(changes), t2);
        assert_eq!(updated.event.map(|e| e.kind), Some(EventType::Updated));
        assert_eq!((updated.task.priority, updated.task.title.as_str()), (Priority::High, "Buy milk"));

        let deleted = updated.task.clone().apply(&Write::Delete, t2);
        assert_eq!((deleted.event.map(|e| e.kind), &deleted.task), (Some(EventType::Deleted), &updated.task));
    }
}
