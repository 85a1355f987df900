//! One message in, one decision out: the step the consumer loop runs per delivery,
//! free of AMQP so it can be tested on its own.

use std::sync::Arc;
use std::time::Duration;

use todo_common::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::domain::{NewNotification, PoisonReason, TaskEvent};
use crate::store::{Inserted, NotificationStore, StoreError};

/// The consumer span of one message, in the trace its publisher's `traceparent` names
/// (a new one when it carries none); redeliveries are spans of the same trace.
pub fn message_span(routing_key: &str, message_id: Option<&str>, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "task.events process",
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = "task.events",
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = message_id,
    );
    todo_common::traces::continue_trace(span, traceparent)
}

/// What became of a message, and so how it is settled with the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new notification was stored: ack.
    Stored,
    /// The event was already stored (redelivery or republish): ack, nothing else.
    Duplicate,
    /// It can never be processed: reject without requeue, so it goes to the DLQ.
    DeadLettered(PoisonReason),
    /// The store failed for now (or shutdown interrupted the retries): nack with requeue.
    Retry,
}

/// How hard one delivery tries to reach the store before it is handed back to the queue.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 4, first_delay: Duration::from_millis(250), max_delay: Duration::from_secs(2) }
    }
}

pub struct Processor {
    store: Arc<dyn NotificationStore>,
    retry: RetryPolicy,
}

impl Processor {
    pub fn new(store: Arc<dyn NotificationStore>, retry: RetryPolicy) -> Self {
        Self { store, retry }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Creates the store's indexes: the unique event-id index must exist before anything
    /// is stored, or a duplicate could slip in.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        self.store.ensure_indexes().await
    }

    /// Decodes the event and stores its notification, retrying a failing store with
    /// capped backoff for a bounded number of attempts; shutdown cuts the waiting short.
    pub async fn process_one(&self, payload: &[u8], shutdown: &CancellationToken) -> Outcome {
        let event = match TaskEvent::parse(payload) {
            Ok(event) => event,
            Err(reason) => return Outcome::DeadLettered(reason),
        };
        let notification = NewNotification::from(&event);
        let mut backoff = Backoff::new(self.retry.first_delay, self.retry.max_delay);
        for attempt in 1..=self.retry.attempts {
            match self.store.insert(&notification).await {
                Ok(Inserted::Created) => return Outcome::Stored,
                Ok(Inserted::Duplicate) => return Outcome::Duplicate,
                Err(error) => {
                    match &error {
                        StoreError::Unavailable(_) => {
                            tracing::warn!(%error, attempt, event_id = event.id.as_str(), "cannot store notification")
                        }
                        _ => {
                            tracing::error!(%error, attempt, event_id = event.id.as_str(), "cannot store notification")
                        }
                    }
                    if attempt == self.retry.attempts {
                        break;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return Outcome::Retry,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        Outcome::Retry
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use todo_common::health::BackendState;

    use super::*;
    use crate::domain::{ListQuery, Notification, NotificationId, Page, UserId};

    /// Fails the first `failures` inserts as unavailable, then keys notifications by event id.
    #[derive(Default)]
    struct FakeStore {
        failures: AtomicU32,
        attempts: AtomicU32,
        by_event: Mutex<HashMap<String, NewNotification>>,
    }

    #[async_trait]
    impl NotificationStore for FakeStore {
        async fn ensure_indexes(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn insert(&self, notification: &NewNotification) -> Result<Inserted, StoreError> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::Unavailable("down".into()));
            }
            let mut stored = self.by_event.lock().unwrap();
            if stored.contains_key(notification.event_id.as_str()) {
                return Ok(Inserted::Duplicate);
            }
            stored.insert(notification.event_id.as_str().to_owned(), notification.clone());
            Ok(Inserted::Created)
        }
        async fn list(&self, _: &UserId, _: &ListQuery) -> Result<Page, StoreError> {
            unimplemented!("not used by the processor")
        }
        async fn mark_read(&self, _: &UserId, _: NotificationId) -> Result<Option<Notification>, StoreError> {
            unimplemented!("not used by the processor")
        }
        fn backend_name(&self) -> &'static str {
            "fake"
        }
        async fn health(&self) -> BackendState {
            BackendState::Up
        }
    }

    fn quick_retries() -> RetryPolicy {
        RetryPolicy { attempts: 3, first_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) }
    }

    fn processor(store: &Arc<FakeStore>) -> Processor {
        Processor::new(store.clone(), quick_retries())
    }

    fn event_bytes(id: &str, kind: &str) -> Vec<u8> {
        serde_json::json!({
            "id": id, "type": kind, "occurredAt": "2024-05-01T10:00:00Z", "userId": "u1", "taskId": "t1",
            "requestId": "r1", "data": {"title": "Buy milk", "status": "completed"}
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn an_event_is_stored_once_and_its_repeat_is_a_duplicate() {
        let store = Arc::new(FakeStore::default());
        let processor = processor(&store);
        let shutdown = CancellationToken::new();
        let event = event_bytes("e1", "task.completed");
        assert_eq!(processor.process_one(&event, &shutdown).await, Outcome::Stored);
        assert_eq!(processor.process_one(&event, &shutdown).await, Outcome::Duplicate);
        let stored = store.by_event.lock().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored["e1"].message, "Task \"Buy milk\" was completed");
    }

    #[tokio::test]
    async fn poison_is_dead_lettered_without_touching_the_store() {
        let store = Arc::new(FakeStore::default());
        let processor = processor(&store);
        let shutdown = CancellationToken::new();
        for payload in [b"{not json".to_vec(), event_bytes("e2", "task.exploded"), b"{}".to_vec()] {
            assert!(matches!(processor.process_one(&payload, &shutdown).await, Outcome::DeadLettered(_)));
        }
        assert_eq!(store.attempts.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_store_outage_is_retried_then_handed_back_never_dead_lettered() {
        let store = Arc::new(FakeStore::default());
        store.failures.store(2, Ordering::SeqCst);
        let processor = processor(&store);
        let shutdown = CancellationToken::new();
        assert_eq!(processor.process_one(&event_bytes("e3", "task.created"), &shutdown).await, Outcome::Stored);
        assert_eq!(store.attempts.load(Ordering::SeqCst), 3);

        store.failures.store(10, Ordering::SeqCst);
        store.attempts.store(0, Ordering::SeqCst);
        assert_eq!(processor.process_one(&event_bytes("e4", "task.created"), &shutdown).await, Outcome::Retry);
        assert_eq!(store.attempts.load(Ordering::SeqCst), 3, "attempts are bounded");
    }

    #[tokio::test]
    async fn shutdown_cuts_the_retries_short() {
        let store = Arc::new(FakeStore::default());
        store.failures.store(10, Ordering::SeqCst);
        let slow =
            RetryPolicy { attempts: 5, first_delay: Duration::from_secs(3600), max_delay: Duration::from_secs(3600) };
        let processor = Processor::new(store.clone(), slow);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert_eq!(processor.process_one(&event_bytes("e5", "task.created"), &shutdown).await, Outcome::Retry);
        assert_eq!(store.attempts.load(Ordering::SeqCst), 1);
    }
}
