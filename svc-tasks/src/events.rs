//! Task events as published to RabbitMQ: the body (the contract's [`EventBody`]) and the
//! envelope the outbox keeps until the broker has confirmed it.

use serde::{Deserialize, Serialize};

use todo_common::events::{EventBody, TaskData};

use crate::domain::{ChangeEvent, Task, Timestamp};

/// Where an event comes from: the request that caused it and the trace it continues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventOrigin {
    pub request_id: Option<String>,
    /// The W3C `traceparent` of the span that caused the event.
    pub traceparent: Option<String>,
}

impl EventOrigin {
    /// The request `request_id`, in the trace of the current span: call it where that
    /// span is current (not on a blocking thread).
    pub fn of_request(request_id: &str) -> Self {
        Self { request_id: Some(request_id.to_owned()), traceparent: todo_common::traces::current_traceparent() }
    }
}

/// One event ready to publish: its routing key, AMQP properties and serialized body. Each
/// outbox keeps it whole, its time in the backend's own type (`Time`: a BSON date in
/// MongoDB, epoch milliseconds in the embedded store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope<Time = Timestamp> {
    pub event_id: String,
    pub routing_key: String,
    pub user_id: String,
    pub correlation_id: Option<String>,
    /// Carried to the message's `traceparent` header, so the trace goes on in svc-notify.
    /// Absent in entries written before traces.
    #[serde(default)]
    pub traceparent: Option<String>,
    pub occurred_at: Time,
    pub payload: String,
}

impl<Time> EventEnvelope<Time> {
    /// The same envelope, its time in another type.
    pub fn with_time<T>(self, time: impl FnOnce(Time) -> T) -> EventEnvelope<T> {
        let Self { event_id, routing_key, user_id, correlation_id, traceparent, occurred_at, payload } = self;
        EventEnvelope {
            event_id,
            routing_key,
            user_id,
            correlation_id,
            traceparent,
            occurred_at: time(occurred_at),
            payload,
        }
    }
}

impl EventEnvelope {
    /// The `event` of `task` (its state after the change, or before a delete).
    pub fn for_task(task: &Task, event: ChangeEvent, origin: &EventOrigin) -> Result<Self, serde_json::Error> {
        let ChangeEvent { kind, occurred_at } = event;
        let request_id = origin.request_id.as_deref();
        let event_id = uuid::Uuid::new_v4().to_string();
        let body = EventBody {
            id: event_id.clone(),
            kind: kind.as_str().to_owned(),
            occurred_at,
            user_id: task.owner.as_str().to_owned(),
            task_id: task.id.to_string(),
            request_id: request_id.map(str::to_owned),
            data: TaskData {
                title: task.title.as_str().to_owned(),
                status: task.status.as_str().to_owned(),
                priority: task.priority.as_str().to_owned(),
                due_date: task.due_date,
            },
        };
        let payload = serde_json::to_string(&body)?;
        Ok(Self {
            event_id,
            routing_key: kind.as_str().to_owned(),
            user_id: task.owner.as_str().to_owned(),
            correlation_id: request_id.map(str::to_owned),
            traceparent: origin.traceparent.clone(),
            occurred_at,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewTask, Priority, TaskTitle, UserId};
    use todo_common::events::EventType;

    #[test]
    fn body_follows_the_events_brief() {
        let now = Timestamp::from_millis(1_700_000_000_123);
        let created = Task::create(
            UserId::from_verified_subject("user-1"),
            NewTask {
                title: TaskTitle::parse("Buy milk").unwrap(),
                description: None,
                priority: Priority::High,
                due_date: None,
            },
            now,
        );
        let (task, completed) = (created.task, ChangeEvent { kind: EventType::Completed, occurred_at: now });
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let origin = EventOrigin { request_id: Some("req-1".into()), traceparent: Some(traceparent.into()) };
        let envelope = EventEnvelope::for_task(&task, completed, &origin).unwrap();
        let body: serde_json::Value = serde_json::from_str(&envelope.payload).unwrap();
        assert_eq!(body["id"], envelope.event_id.as_str());
        assert_eq!(body["type"], "task.completed");
        assert_eq!(body["userId"], "user-1");
        assert_eq!(body["taskId"], task.id.to_string());
        assert_eq!(body["requestId"], "req-1");
        assert_eq!(body["occurredAt"], "2023-11-14T22:13:20.123Z", "the change's own time");
        assert_eq!(body["data"]["title"], "Buy milk");
        assert_eq!(body["data"]["priority"], "high");
        assert!(body["data"]["dueDate"].is_null());
        assert_eq!(envelope.routing_key, "task.completed");
        assert_eq!(envelope.correlation_id.as_deref(), Some("req-1"));
        assert_eq!(envelope.traceparent.as_deref(), Some(traceparent));
    }
}
