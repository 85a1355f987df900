//! The consumer of the in-process event bus (standalone mode): the same
//! [`Processor`] step as the AMQP consumer, settled the same way. Stored, duplicate and
//! poison messages are accepted (poison is logged and counted as dead-lettered: there is
//! no dead-letter queue in-process); a message the store cannot take now is handed back,
//! which fails the publish and leaves the event in svc-tasks' outbox for a retry.

use std::sync::Arc;

use todo_common::bus::{BusReceiver, Settlement};
use todo_common::health::BackendState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{degraded, processor, ConsumerMetrics, ConsumerStatus, Outcome, Processor, RetryPolicy};
use crate::store::NotificationStore;

pub struct BusConsumer {
    receiver: BusReceiver,
    processor: Processor,
    metrics: ConsumerMetrics,
    status: watch::Sender<BackendState>,
}

impl BusConsumer {
    pub fn new(
        receiver: BusReceiver,
        store: Arc<dyn NotificationStore>,
        retry: RetryPolicy,
        registry: &prometheus::Registry,
    ) -> (Self, ConsumerStatus) {
        let (status, watcher) = watch::channel(degraded("not consuming yet"));
        let processor = Processor::new(store, retry);
        let consumer = Self { receiver, processor, metrics: ConsumerMetrics::new(registry), status };
        (consumer, ConsumerStatus(watcher))
    }

    /// Consumes until `shutdown` or until every publisher is gone.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Err(error) = self.processor.prepare().await {
            tracing::error!(%error, "cannot prepare the notification store; not consuming");
            self.status.send_replace(degraded("the store could not be prepared"));
            return;
        }
        self.status.send_replace(BackendState::Up);
        self.metrics.connected.set(1);
        tracing::info!("consuming task events from the in-process bus");
        loop {
            let delivery = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                delivery = self.receiver.recv() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
            };
            let message = &delivery.message;
            let span =
                processor::message_span(&message.routing_key, Some(&message.event_id), message.traceparent.as_deref());
            let outcome =
                self.processor.process_one(message.payload.as_bytes(), &shutdown).instrument(span.clone()).await;
            let _in_span = span.enter();
            self.metrics.record(&outcome, Some(&message.event_id), &message.routing_key);
            // Dead letters are accepted too: there is no dead-letter queue in-process.
            let settlement = match outcome {
                Outcome::Retry => Settlement::Requeue("the notification store is unavailable".into()),
                Outcome::Stored | Outcome::Duplicate | Outcome::DeadLettered(_) => Settlement::Accepted,
            };
            delivery.settle(settlement);
        }
        // Messages still queued are dropped unsettled: their publishes fail and the
        // events stay in the outbox for the next start.
        self.receiver.close();
        self.metrics.connected.set(0);
        self.status.send_replace(degraded("stopped"));
        tracing::info!("event bus consumer stopped");
    }
}
