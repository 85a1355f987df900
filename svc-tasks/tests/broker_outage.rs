//! RabbitMQ stopped while tasks are written: the writes succeed, and their events reach
//! the queue once the broker is back. Its own binary, since it stops the shared broker
//! (run under `flock /tmp/broker-fault.lock`).

#[path = "api/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use helpers::{spawn_app, EventQueue, User, PATIENCE};
use todo_test_support::{eventually, Backends};

const BROKER: &str = "127.0.0.1:5672";

/// Restarts the broker when dropped, so a failing test never leaves it stopped.
struct BrokerRestart;

impl BrokerRestart {
    fn stop() -> Self {
        let guard = Self;
        let status = Command::new("rabbitmqctl").arg("stop_app").status().expect("rabbitmqctl runs");
        assert!(status.success(), "rabbitmqctl stop_app failed");
        guard
    }
}

impl Drop for BrokerRestart {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
        wait_for_broker_port();
    }
}

fn wait_for_broker_port() {
    let addr: SocketAddr = BROKER.parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn events_written_while_the_broker_is_down_arrive_once_it_is_back() {
    let app = spawn_app().await;
    let amqp_url = Backends::from_env().amqp_url;
    // Durable, so the queue and its binding survive the broker's restart.
    let mut queue = EventQueue::bind(&amqp_url, &app.config.amqp_exchange, false).await;
    let queue_name = queue.name.clone();
    let user = User::new();

    let before = app.created(&user, "before the outage").await["id"].as_str().unwrap().to_owned();
    let first = queue.until(|e| e.kind() == "task.created").await;
    assert_eq!(first[0].task_id(), before, "the pipeline works before the outage");
    drop(queue);

    let broker = tokio::task::spawn_blocking(BrokerRestart::stop).await.expect("stopped");
    let mut written = HashSet::new();
    for title in ["during 1", "during 2"] {
        written.insert(app.created(&user, title).await["id"].as_str().unwrap().to_owned());
    }
    let id = written.iter().next().unwrap().clone();
    assert_eq!(app.complete(&user, &id).await.status(), 200, "a broker outage never fails a write");
    eventually("the relay to notice the broker is gone", PATIENCE, || async {
        let (status, body) = app.readyz().await;
        (status == 200 && body["backends"]["rabbitmq"]["status"] == "degraded").then_some(())
    })
    .await;
    assert_eq!(app.outbox_len().await, 3, "the three events wait in the outbox");

    tokio::task::spawn_blocking(move || drop(broker)).await.expect("restarted");

    let mut queue = EventQueue::reattach(&amqp_url, &queue_name).await;
    let mut created = HashSet::new();
    let mut completed = 0;
    while created.len() < 2 || completed < 1 {
        let event = queue.next(Duration::from_secs(30)).await.expect("the held events arrive after the restart");
        match event.kind() {
            "task.created" => {
                created.insert(event.task_id().to_owned());
            }
            "task.completed" => {
                assert_eq!(event.task_id(), id);
                completed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, written);
    helpers::outbox_drained(&app).await;
    queue.delete().await;
}
