//! Each endpoint: parse the caller and the input into domain types, call the store,
//! shape the answer.

use http::StatusCode;
use serde::Serialize;
use todo_common::body::json_response;
use todo_common::server::{query_pairs, HttpResponse, Request};
use todo_common::Problem;

use crate::domain::{ListQuery, Notification, NotificationId, Page, UserId};
use crate::store::NotificationStore;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NotificationView<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
    task_id: &'a str,
    created_at: String,
    read: bool,
}

impl<'a> From<&'a Notification> for NotificationView<'a> {
    fn from(notification: &'a Notification) -> Self {
        Self {
            id: notification.id.to_hex(),
            kind: notification.kind.as_str(),
            message: &notification.message,
            task_id: notification.task_id.as_str(),
            created_at: todo_common::time::rfc3339(&notification.created_at),
            read: notification.read,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageView<'a> {
    items: Vec<NotificationView<'a>>,
    next_cursor: Option<String>,
}

impl<'a> From<&'a Page> for PageView<'a> {
    fn from(page: &'a Page) -> Self {
        Self {
            items: page.items.iter().map(NotificationView::from).collect(),
            next_cursor: page.next.map(|c| c.encode()),
        }
    }
}

/// The verified caller as the owner notifications are stored under.
fn caller(request: &Request) -> Result<UserId, Problem> {
    UserId::parse(request.subject()?).ok_or_else(|| Problem::unauthorized("the token's subject is not a user id"))
}

fn no_such_notification() -> Problem {
    Problem::not_found("no such notification")
}

pub async fn list(store: &dyn NotificationStore, request: Request) -> Result<HttpResponse, Problem> {
    let user = caller(&request)?;
    let query = ListQuery::parse(&query_pairs(request.query.as_deref())).map_err(Problem::validation)?;
    let page = store.list(&user, &query).await?;
    Ok(json_response(StatusCode::OK, &PageView::from(&page)))
}

/// Idempotent: marking a read notification read again answers the same 200.
pub async fn mark_read(store: &dyn NotificationStore, request: Request, raw_id: &str) -> Result<HttpResponse, Problem> {
    let user = caller(&request)?;
    let id = NotificationId::parse(raw_id).ok_or_else(no_such_notification)?;
    let notification = store.mark_read(&user, id).await?.ok_or_else(no_such_notification)?;
    Ok(json_response(StatusCode::OK, &NotificationView::from(&notification)))
}
