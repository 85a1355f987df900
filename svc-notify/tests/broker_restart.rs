//! The consumer rides out a RabbitMQ restart on its own. This stops the shared broker,
//! so it lives in its own test binary; run it under `flock /tmp/broker-fault.lock`.

#[allow(dead_code, unused_imports)]
#[path = "api/helpers.rs"]
mod helpers;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use helpers::{spawn_app, TestEvent, PATIENCE};
use todo_test_support::{eventually, unique_name};

const BROKER_PORT: &str = "127.0.0.1:5672";

fn rabbitmqctl(command: &str) {
    let status = Command::new("rabbitmqctl").arg(command).status().expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {command} failed: {status}");
}

fn wait_for_broker_port() {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&BROKER_PORT.parse().expect("an address"), Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "the broker did not come back on {BROKER_PORT}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops the broker application; dropping it starts the broker again, also when the
/// test fails half-way, so no other test is left without a broker.
struct StoppedBroker;

impl StoppedBroker {
    fn stop() -> Self {
        rabbitmqctl("stop_app");
        Self
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
        wait_for_broker_port();
    }
}

#[tokio::test]
async fn the_consumer_reconnects_by_itself_after_a_broker_restart() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    app.publish(&TestEvent::new("task.created", &owner, "Before the restart")).await;
    app.wait_for_notifications(&owner, 1).await;

    let broker = tokio::task::spawn_blocking(StoppedBroker::stop).await.expect("stop_app ran");
    eventually("the consumer to notice the broker is gone", PATIENCE, || async {
        let (status, body) = app.readyz().await;
        (body["backends"]["rabbitmq"]["status"] == "degraded").then_some(status)
    })
    .await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "a broker outage never makes the service unready: {body}");

    tokio::task::spawn_blocking(move || drop(broker)).await.expect("start_app ran");
    app.wait_until_consuming().await;
    app.publish(&TestEvent::new("task.completed", &owner, "After the restart")).await;

    let items = app.wait_for_notifications(&owner, 2).await;
    assert_eq!(items[0]["message"], "Task \"After the restart\" was completed");
}
