//! An in-process event bus: the embedded stand-in for the broker between svc-tasks and
//! svc-notify when both run in one process (the standalone mode).
//!
//! It keeps the broker's guarantees where they matter. The channel is bounded, so a slow
//! consumer holds publishers back instead of growing memory. [`EventBus::publish`]
//! resolves only once the consumer has settled the message: stored (or found to be a
//! duplicate, or dead-lettered as unprocessable). That is the publisher's "confirm", so
//! the outbox entry behind it is removed only after delivery; a message the consumer
//! hands back, or drops (shutdown, crash), fails the publish and stays in the outbox for
//! the relay to retry. Delivery is at least once; the consumer dedupes by event id.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// How long a publish waits for room in the channel and then for the consumer's verdict.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages waiting for the consumer at most.
pub const DEFAULT_CAPACITY: usize = 256;

/// One event as the broker would carry it: AMQP `message_id`, routing key,
/// `correlation_id` and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    pub event_id: String,
    pub routing_key: String,
    pub correlation_id: Option<String>,
    /// The publisher's trace context, as the AMQP `traceparent` header carries it.
    pub traceparent: Option<String>,
    pub payload: String,
}

/// How the consumer settled a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Stored, a duplicate, or dead-lettered: the publisher may forget it.
    Accepted,
    /// Not processed now (its store is down): the publisher keeps it and retries.
    Requeue(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("no consumer is attached to the event bus")]
    Closed,
    #[error("the event bus consumer did not settle the message within {PUBLISH_TIMEOUT:?}")]
    Timeout,
    #[error("the consumer handed the message back: {0}")]
    Requeued(String),
    #[error("the consumer dropped the message without settling it")]
    Dropped,
}

/// A message in the consumer's hands; settle it with [`Delivery::settle`]. Dropping it
/// unsettled fails the publish (like a channel closing with unacked deliveries).
pub struct Delivery {
    pub message: BusMessage,
    verdict: oneshot::Sender<Settlement>,
}

impl Delivery {
    pub fn settle(self, settlement: Settlement) {
        // The publisher may have given up waiting; its entry then stays in the outbox.
        let _ = self.verdict.send(settlement);
    }
}

/// The publishing end; cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    sender: mpsc::Sender<Delivery>,
}

/// The consuming end: exactly one consumer per bus.
pub struct BusReceiver {
    receiver: mpsc::Receiver<Delivery>,
}

/// A bus holding at most `capacity` unconsumed messages.
pub fn channel(capacity: usize) -> (EventBus, BusReceiver) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (EventBus { sender }, BusReceiver { receiver })
}

impl EventBus {
    /// Hands `message` to the consumer and waits until it is settled.
    pub async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        let (verdict, settled) = oneshot::channel();
        let delivery = Delivery { message, verdict };
        let handed_over = async {
            self.sender.send(delivery).await.map_err(|_| BusError::Closed)?;
            match settled.await {
                Ok(Settlement::Accepted) => Ok(()),
                Ok(Settlement::Requeue(reason)) => Err(BusError::Requeued(reason)),
                Err(_) => Err(BusError::Dropped),
            }
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, handed_over).await.unwrap_or(Err(BusError::Timeout))
    }

    /// True while a consumer holds the receiving end.
    pub fn is_attached(&self) -> bool {
        !self.sender.is_closed()
    }
}

impl BusReceiver {
    /// The next message; `None` once every publisher is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }

    /// Stops taking messages; those already queued can still be received (and settled).
    pub fn close(&mut self) {
        self.receiver.close();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn message(id: &str) -> BusMessage {
        BusMessage {
            event_id: id.into(),
            routing_key: "task.completed".into(),
            correlation_id: Some("req-1".into()),
            traceparent: None,
            payload: "{}".into(),
        }
    }

    /// A consumer that stores each event id once, like svc-notify's dedupe.
    fn dedupe_consumer(mut receiver: BusReceiver) -> Arc<Mutex<(HashSet<String>, usize)>> {
        let seen = Arc::new(Mutex::new((HashSet::new(), 0usize)));
        let state = seen.clone();
        tokio::spawn(async move {
            while let Some(delivery) = receiver.recv().await {
                {
                    let mut state = state.lock().unwrap();
                    state.1 += 1;
                    state.0.insert(delivery.message.event_id.clone());
                }
                delivery.settle(Settlement::Accepted);
            }
        });
        seen
    }

    #[tokio::test]
    async fn a_publish_resolves_after_the_consumer_settled_it_and_repeats_are_deduplicated() {
        let (bus, receiver) = channel(4);
        let seen = dedupe_consumer(receiver);
        bus.publish(message("e1")).await.unwrap();
        assert!(seen.lock().unwrap().0.contains("e1"), "settled before publish returned");
        bus.publish(message("e1")).await.unwrap();
        let state = seen.lock().unwrap();
        assert_eq!((state.0.len(), state.1), (1, 2), "delivered twice, stored once");
    }

    #[tokio::test]
    async fn a_requeued_or_dropped_message_fails_the_publish() {
        let (bus, mut receiver) = channel(4);
        tokio::spawn(async move {
            let first = receiver.recv().await.unwrap();
            first.settle(Settlement::Requeue("store down".into()));
            let second = receiver.recv().await.unwrap();
            drop(second);
        });
        assert_eq!(bus.publish(message("e1")).await, Err(BusError::Requeued("store down".into())));
        assert_eq!(bus.publish(message("e2")).await, Err(BusError::Dropped));
    }

    #[tokio::test]
    async fn without_a_consumer_publishing_fails_at_once() {
        let (bus, receiver) = channel(4);
        drop(receiver);
        assert!(!bus.is_attached());
        assert_eq!(bus.publish(message("e1")).await, Err(BusError::Closed));
    }
}
