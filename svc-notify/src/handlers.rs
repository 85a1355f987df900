//! The `Api` impl: each endpoint parses the caller and the input into domain types, calls
//! the store and shapes the answer.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, StatusCode};
use serde::Serialize;
use todo_common::body::json_response;
use todo_common::health::BackendReport;
use todo_common::server::{query_pairs, Api, HttpResponse, Request};
use todo_common::Problem;

use crate::consumer::ConsumerStatus;
use crate::domain::{ListQuery, Notification, NotificationId, Page, UserId};
use crate::routes::{self, Endpoint};
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
            id: notification.id.to_string(),
            kind: notification.kind.as_str(),
            message: &notification.message,
            task_id: notification.task_id.as_str(),
            created_at: notification.created_at.to_rfc3339(),
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
    Ok(UserId::from(request.subject()?))
}

fn no_such_notification() -> Problem {
    Problem::not_found("no such notification")
}

pub struct NotifyApi {
    pub(crate) store: Arc<dyn NotificationStore>,
    pub(crate) consumer: ConsumerStatus,
    /// The event source's name in `/readyz`.
    pub(crate) consumer_name: &'static str,
}

#[async_trait]
impl Api for NotifyApi {
    type Endpoint = Endpoint;

    fn parse_endpoint(&self, method: &Method, path: &str) -> Result<Endpoint, Problem> {
        routes::parse(method, path)
    }

    async fn handle(&self, endpoint: Endpoint, request: Request) -> Result<HttpResponse, Problem> {
        match endpoint {
            Endpoint::List => self.list(&request).await,
            Endpoint::MarkRead(id) => self.mark_read(&request, id.ok_or_else(no_such_notification)?).await,
        }
    }

    /// MongoDB is critical (nothing can be stored or listed without it); the broker is
    /// not: while it is away events wait in the queue, so it only degrades.
    async fn readiness(&self) -> Vec<BackendReport> {
        vec![
            BackendReport { name: self.store.backend_name(), critical: true, state: self.store.health().await },
            BackendReport { name: self.consumer_name, critical: false, state: self.consumer.current() },
        ]
    }
}

impl NotifyApi {
    async fn list(&self, request: &Request) -> Result<HttpResponse, Problem> {
        let user = caller(request)?;
        let query = ListQuery::parse(&query_pairs(request.query.as_deref())).map_err(Problem::validation)?;
        let page = self.store.list(&user, &query).await?;
        Ok(json_response(StatusCode::OK, &PageView::from(&page)))
    }

    /// Idempotent: marking a read notification read again answers the same 200.
    async fn mark_read(&self, request: &Request, id: NotificationId) -> Result<HttpResponse, Problem> {
        let user = caller(request)?;
        let notification = self.store.mark_read(&user, id).await?.ok_or_else(no_such_notification)?;
        Ok(json_response(StatusCode::OK, &NotificationView::from(&notification)))
    }
}
