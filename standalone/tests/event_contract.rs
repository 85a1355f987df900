//! The task-event contract between the two services this binary links: what svc-tasks
//! writes into its outbox (and so onto the broker) is what svc-notify reads, for every
//! event type.

use svc_notify::domain::TaskEvent;
use svc_tasks::domain::{ChangeEvent, NewTask, Priority, Task, TaskTitle, Timestamp, UserId};
use svc_tasks::events::{EventEnvelope, EventOrigin};
use todo_common::events::EventType;

#[test]
fn what_svc_tasks_writes_is_what_svc_notify_reads() {
    let owner = UserId::from_verified_subject("65f0c0ffee65f0c0ffee65f0");
    let new = NewTask {
        title: TaskTitle::parse("Buy \"milk\" ✓").unwrap(),
        description: None,
        priority: Priority::High,
        due_date: None,
    };
    let now = Timestamp::now();
    let task = Task::create(owner, new, now).task;
    let origin = EventOrigin { request_id: Some("req-1".into()), traceparent: None };
    for kind in EventType::ALL {
        let event = ChangeEvent { kind, occurred_at: now };
        let written = EventEnvelope::for_task(&task, event, &origin).expect("the event serializes");
        let read = TaskEvent::parse(written.payload.as_bytes())
            .unwrap_or_else(|why| panic!("svc-notify cannot read {}: {why}\n{}", kind.as_str(), written.payload));
        assert_eq!(read.kind, kind);
        assert_eq!(written.routing_key, kind.as_str(), "the routing key is the type");
        assert_eq!(read.id.as_str(), written.event_id);
        assert_eq!(read.user_id.as_str(), task.owner.as_str());
        assert_eq!(read.task_id.as_str(), task.id.to_string());
        assert_eq!(read.title, "Buy \"milk\" ✓");
        assert_eq!(read.occurred_at.millis(), written.occurred_at.millis());
    }
}
