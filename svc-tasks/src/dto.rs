//! The JSON shapes of the contract and their translation to and from the domain.

use serde::{Deserialize, Deserializer, Serialize};
use todo_common::problem::FieldError;
use todo_common::Problem;

use crate::domain::{NewTask, Priority, Status, Task, TaskChanges, TaskDescription, TaskPage, TaskTitle, Timestamp};

/// `POST /tasks`; shape and bounds are checked first by `schemas/create-task.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTaskBody {
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    due_date: Option<String>,
}

impl CreateTaskBody {
    pub fn into_domain(self) -> Result<NewTask, Problem> {
        let mut errors = Vec::new();
        let title = collect(TaskTitle::parse(&self.title), &mut errors);
        let description = collect(self.description.as_deref().map(TaskDescription::parse).transpose(), &mut errors);
        let due_date = collect(
            self.due_date.as_deref().map(|raw| Timestamp::parse_rfc3339("dueDate", raw)).transpose(),
            &mut errors,
        );
        match (title, description, due_date) {
            (Some(title), Some(description), Some(due_date)) if errors.is_empty() => {
                Ok(NewTask { title, description, priority: self.priority.unwrap_or_default(), due_date })
            }
            _ => Err(Problem::validation(errors)),
        }
    }
}

/// `PATCH /tasks/{id}`: an absent field stays, `null` clears `description` or `dueDate`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTaskBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default, deserialize_with = "present")]
    due_date: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent at all (`None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl UpdateTaskBody {
    pub fn into_domain(self) -> Result<TaskChanges, Problem> {
        let mut errors = Vec::new();
        let title = collect(self.title.as_deref().map(TaskTitle::parse).transpose(), &mut errors);
        let description = collect(
            self.description.map(|d| d.as_deref().map(TaskDescription::parse).transpose()).transpose(),
            &mut errors,
        );
        let due_date = collect(
            self.due_date
                .map(|d| d.as_deref().map(|raw| Timestamp::parse_rfc3339("dueDate", raw)).transpose())
                .transpose(),
            &mut errors,
        );
        let changes = match (title, description, due_date) {
            (Some(title), Some(description), Some(due_date)) if errors.is_empty() => {
                TaskChanges { title, description, priority: self.priority, due_date }
            }
            _ => return Err(Problem::validation(errors)),
        };
        if changes.is_empty() {
            return Err(Problem::validation(vec![FieldError::new("body", "at least one field must be given")]));
        }
        Ok(changes)
    }
}

fn collect<T>(result: Result<T, FieldError>, errors: &mut Vec<FieldError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    id: String,
    title: String,
    description: Option<String>,
    status: Status,
    priority: Priority,
    due_date: Option<String>,
    created_at: String,
    updated_at: String,
    completed_at: Option<String>,
}

impl From<&Task> for TaskView {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id.to_string(),
            title: task.title.as_str().to_owned(),
            description: task.description.as_ref().map(|d| d.as_str().to_owned()),
            status: task.status,
            priority: task.priority,
            due_date: task.due_date.map(|t| t.to_rfc3339()),
            created_at: task.created_at.to_rfc3339(),
            updated_at: task.updated_at.to_rfc3339(),
            completed_at: task.completed_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageView {
    items: Vec<TaskView>,
    next_cursor: Option<String>,
}

impl From<&TaskPage> for PageView {
    fn from(page: &TaskPage) -> Self {
        Self { items: page.items.iter().map(TaskView::from).collect(), next_cursor: page.next.map(|c| c.encode()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_null_from_absent() {
        let body: UpdateTaskBody = serde_json::from_str(r#"{"description":null}"#).unwrap();
        let changes = body.into_domain().unwrap();
        assert_eq!(changes.description, Some(None));
        assert_eq!(changes.due_date, None);
        let empty: UpdateTaskBody = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.into_domain().unwrap_err().status, 400);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let body: CreateTaskBody = serde_json::from_str(r#"{"title":"  ","dueDate":"soon"}"#).unwrap();
        let problem = body.into_domain().unwrap_err();
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["title", "dueDate"]);
    }
}
