//! Decode → domain → store/cache → response, one function per endpoint.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use todo_common::body::{empty_response, json_response, read_json, JsonSchema};
use todo_common::health::BackendReport;
use todo_common::server::{query_pairs, Api, HttpResponse, Request};
use todo_common::Problem;
use tokio::sync::Notify;

use crate::cache::{CacheRead, ListCache};
use crate::domain::{Applied, Change, ListQuery, Task, TaskId, Timestamp, UserId, Write};
use crate::dto::{CreateTaskBody, PageView, TaskView, UpdateTaskBody};
use crate::events::EventOrigin;
use crate::publisher::EventPublisher;
use crate::routes::{self, Endpoint, PathId};
use crate::store::TaskStore;
use prometheus::IntCounterVec;

pub struct Schemas {
    create: JsonSchema,
    update: JsonSchema,
}

impl Schemas {
    pub fn load() -> anyhow::Result<Self> {
        Ok(Self {
            create: JsonSchema::compile("create-task", include_str!("../schemas/create-task.json"))?,
            update: JsonSchema::compile("update-task", include_str!("../schemas/update-task.json"))?,
        })
    }
}

pub struct TasksApi {
    pub store: Arc<dyn TaskStore>,
    pub cache: Arc<dyn ListCache>,
    /// Cache lookups by result: hit, miss or error (the cache failed, the store answered).
    pub cache_requests: IntCounterVec,
    pub publisher: Arc<dyn EventPublisher>,
    /// Wakes the outbox relay after a commit.
    pub relay_wake: Arc<Notify>,
    pub schemas: Schemas,
    pub max_body_bytes: usize,
}

#[async_trait]
impl Api for TasksApi {
    type Endpoint = Endpoint;

    fn parse_endpoint(&self, method: &Method, path: &str) -> Result<Endpoint, Problem> {
        routes::parse(method, path)
    }

    async fn handle(&self, endpoint: Endpoint, request: Request) -> Result<HttpResponse, Problem> {
        let owner = UserId::from(request.subject()?);
        match endpoint {
            Endpoint::List => self.list(&owner, &request).await,
            Endpoint::Create => self.create(&owner, request).await,
            Endpoint::Get(id) => self.get(&owner, existing(id)?).await,
            Endpoint::Update(id) => self.update(&owner, existing(id)?, request).await,
            Endpoint::Delete(id) => {
                self.change(Change { owner, id: existing(id)?, write: Write::Delete }, &request.request_id).await?;
                Ok(empty_response(StatusCode::NO_CONTENT))
            }
            Endpoint::Complete(id) => {
                let task = self
                    .change(Change { owner, id: existing(id)?, write: Write::Complete }, &request.request_id)
                    .await?;
                Ok(task_response(StatusCode::OK, &task))
            }
            Endpoint::Reopen(id) => {
                let task =
                    self.change(Change { owner, id: existing(id)?, write: Write::Reopen }, &request.request_id).await?;
                Ok(task_response(StatusCode::OK, &task))
            }
        }
    }

    async fn readiness(&self) -> Vec<BackendReport> {
        let (store, cache) = tokio::join!(self.store.ping(), self.cache.state());
        vec![
            BackendReport { name: self.store.backend_name(), critical: true, state: store },
            BackendReport { name: self.cache.backend_name(), critical: false, state: cache },
            BackendReport { name: self.publisher.backend_name(), critical: false, state: self.publisher.state() },
        ]
    }
}

fn existing(id: PathId) -> Result<TaskId, Problem> {
    id.ok_or_else(not_found)
}

fn not_found() -> Problem {
    Problem::not_found("no such task")
}

fn task_response(status: StatusCode, task: &Task) -> HttpResponse {
    json_response(status, &TaskView::from(task))
}

impl TasksApi {
    async fn list(&self, owner: &UserId, request: &Request) -> Result<HttpResponse, Problem> {
        let query = ListQuery::parse(&query_pairs(request.query.as_deref())).map_err(Problem::validation)?;
        let (fill_version, result) = match self.cache.read(owner, &query).await {
            CacheRead::Hit(page) => {
                self.cache_requests.with_label_values(&["hit"]).inc();
                return Ok(raw_json(page));
            }
            CacheRead::Miss { version } => (Some(version), "miss"),
            CacheRead::Unavailable => (None, "error"),
        };
        self.cache_requests.with_label_values(&[result]).inc();
        let page = self.store.list(owner, &query).await?;
        let body = Bytes::from(serde_json::to_vec(&PageView::from(&page)).map_err(|e| Problem::internal(&e))?);
        if let Some(version) = fill_version {
            self.cache.fill(owner, version, &query, &body).await;
        }
        Ok(raw_json(body))
    }

    async fn create(&self, owner: &UserId, request: Request) -> Result<HttpResponse, Problem> {
        let body: CreateTaskBody =
            read_json(&request.headers, request.body, self.max_body_bytes, &self.schemas.create).await?;
        let applied = Task::create(owner.clone(), body.into_domain()?, Timestamp::now());
        self.store.create(&applied, &EventOrigin::of_request(&request.request_id)).await?;
        self.after_commit(owner, &applied).await;
        let mut response = task_response(StatusCode::CREATED, &applied.task);
        let location =
            HeaderValue::from_str(&format!("/tasks/{}", applied.task.id)).map_err(|e| Problem::internal(&e))?;
        response.headers_mut().insert(header::LOCATION, location);
        Ok(response)
    }

    async fn get(&self, owner: &UserId, id: TaskId) -> Result<HttpResponse, Problem> {
        let task = self.store.find(owner, id).await?.ok_or_else(not_found)?;
        Ok(task_response(StatusCode::OK, &task))
    }

    async fn update(&self, owner: &UserId, id: TaskId, request: Request) -> Result<HttpResponse, Problem> {
        let body: UpdateTaskBody =
            read_json(&request.headers, request.body, self.max_body_bytes, &self.schemas.update).await?;
        let write = Write::Update(body.into_domain()?);
        let task = self.change(Change { owner: owner.clone(), id, write }, &request.request_id).await?;
        Ok(task_response(StatusCode::OK, &task))
    }

    /// Applies `change`: the task as it now is (was, for a delete).
    async fn change(&self, change: Change, request_id: &str) -> Result<Task, Problem> {
        let origin = EventOrigin::of_request(request_id);
        let applied = self.store.change(&change, &origin).await?.ok_or_else(not_found)?;
        self.after_commit(&change.owner, &applied).await;
        Ok(applied.task)
    }

    /// After a commit that changed something: hide the owner's cached lists now, and wake
    /// the relay, which publishes the event and bumps the version again durably.
    async fn after_commit(&self, owner: &UserId, applied: &Applied) {
        if applied.event.is_none() {
            return;
        }
        if let Err(error) = self.cache.invalidate(owner).await {
            tracing::warn!(%error, "list cache not invalidated now; the outbox relay will retry");
        }
        self.relay_wake.notify_one();
    }
}

fn raw_json(body: Bytes) -> HttpResponse {
    let mut response = empty_response(StatusCode::OK);
    *response.body_mut() = body.into();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
