//! The standalone mode's publisher: the in-process bus.

use async_trait::async_trait;
use todo_common::bus::{BusError, BusMessage, EventBus};
use todo_common::health::BackendState;
use todo_common::traces;

use super::{EventPublisher, PublishError};
use crate::events::EventEnvelope;

/// Publishes to the in-process bus; a publish resolves once svc-notify has stored (or
/// deduplicated) the event, so the relay removes the outbox entry only after delivery.
pub struct BusPublisher {
    bus: EventBus,
}

impl BusPublisher {
    pub fn new(bus: EventBus) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl EventPublisher for BusPublisher {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), PublishError> {
        let message = BusMessage {
            event_id: event.event_id.clone(),
            routing_key: event.routing_key.clone(),
            correlation_id: event.correlation_id.clone(),
            traceparent: traces::current_traceparent(),
            payload: event.payload.clone(),
        };
        Ok(self.bus.publish(message).await?)
    }

    async fn ensure_connected(&self) -> Result<(), PublishError> {
        if self.bus.is_attached() {
            Ok(())
        } else {
            Err(BusError::Closed.into())
        }
    }

    fn backend_name(&self) -> &'static str {
        "event-bus"
    }

    fn state(&self) -> BackendState {
        if self.bus.is_attached() {
            BackendState::Up
        } else {
            BackendState::Degraded { detail: "no consumer on the event bus; events wait in the outbox".into() }
        }
    }

    async fn close(&self) {}
}
