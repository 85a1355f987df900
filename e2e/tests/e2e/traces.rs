//! One trace from the client to the notification: every real process exports to an
//! OTLP receiver in the test (`Collector`), and the test follows the trace by its ids:
//! edge → svc-tasks → the relay's publish → svc-notify's handling of the message.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use todo_e2e::{FaultProxy, Options, System};
use todo_test_support::otlp::{Collector, ReceivedSpan};
use todo_test_support::{eventually, http_client, unique_name, Backends};

use super::Client;

/// How long spans get to arrive (batches leave every 100 ms in these tests).
const PATIENCE: Duration = Duration::from_secs(20);

/// A client span id the tests send in their `traceparent`.
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn traced_system(collector: &Collector, amqp_url: Option<String>) -> System {
    System::start_with_options(Options { otlp_endpoint: Some(collector.endpoint()), amqp_url, ..Options::default() })
        .await
}

/// The JSON log lines `process` wrote that carry `trace_id`.
fn lines_of_trace(logs: &std::path::Path, process: &str, trace_id: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(logs.join(format!("{process}.log"))).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["trace_id"] == trace_id)
        .collect()
}

/// Creates a task, then completes it with `traceparent` (and `x-request-id`).
async fn complete_a_task(user: &Client, traceparent: &str, request_id: &str) {
    let created = user.send(Method::POST, "/tasks", Some(json!({ "title": "Trace me" }))).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let completed = user
        .http
        .post(format!("{}/tasks/{id}/complete", user.base))
        .bearer_auth(user.token.as_deref().unwrap())
        .header("traceparent", traceparent)
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("the completion answers");
    assert_eq!(completed.status(), 200);
}

/// The trace's spans once svc-notify's consumer span, the publish it continues and the
/// edge's span are among them (each process exports on its own schedule).
async fn trace_through_the_notification(collector: &Collector, trace_id: &str) -> Vec<ReceivedSpan> {
    eventually("the completion's trace reaches svc-notify", PATIENCE, || async {
        let spans = collector.trace(trace_id);
        let consumer = spans.iter().find(|s| s.service == "svc-notify" && s.kind == "consumer")?;
        let published = spans.iter().any(|s| s.span_id == consumer.parent_span_id);
        let edge = spans.iter().any(|s| s.service == "edge");
        let tasks =
            ["server", "client"].iter().all(|kind| spans.iter().any(|s| s.service == "svc-tasks" && s.kind == *kind));
        (published && edge && tasks).then_some(spans)
    })
    .await
}

fn find<'a>(spans: &'a [ReceivedSpan], service: &str, kind: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} span of {service} in {spans:#?}"))
}

/// The span `span` descends from, following parents within the trace.
fn ancestors<'a>(spans: &'a [ReceivedSpan], span: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while let Some(next) = spans.iter().find(|s| s.span_id == parent) {
        chain.push(next);
        parent = next.parent_span_id.clone();
    }
    chain
}

/// edge (child of the client's span) → svc-tasks' server span → … → the relay's publish
/// → svc-notify's consumer span, all in `trace_id`.
fn assert_one_trace_to_the_notification(spans: &[ReceivedSpan], trace_id: &str) {
    let edge = find(spans, "edge", "server");
    assert_eq!(edge.parent_span_id, CLIENT_SPAN, "the edge continues the client's trace");
    assert_eq!(edge.attributes["http.route"], "tasks");
    assert_eq!(edge.attributes["http.response.status_code"], "200");
    let tasks = spans
        .iter()
        .find(|s| s.service == "svc-tasks" && s.kind == "server" && s.parent_span_id == edge.span_id)
        .unwrap_or_else(|| panic!("no svc-tasks server span under the edge's in {spans:#?}"));
    assert_eq!(tasks.attributes["http.route"], "/tasks/{id}/complete");
    let outbox_write = find(spans, "svc-tasks", "client");
    assert_eq!(outbox_write.parent_span_id, tasks.span_id, "the outbox write is part of the request");
    // One producer span per publish attempt: those during an outage failed.
    let process = find(spans, "svc-notify", "consumer");
    let publish = spans
        .iter()
        .find(|s| s.kind == "producer" && s.span_id == process.parent_span_id)
        .unwrap_or_else(|| panic!("svc-notify's span is not the child of a publish in {spans:#?}"));
    assert_eq!(publish.service, "svc-tasks");
    assert!(
        ancestors(spans, publish).iter().any(|s| s.span_id == tasks.span_id),
        "the relay's publish continues the request's trace"
    );
    assert_eq!(publish.attributes["messaging.rabbitmq.destination.routing_key"], "task.completed");
    assert!(spans.iter().all(|s| s.trace_id == trace_id));
}

#[tokio::test]
async fn one_completion_is_one_trace_from_the_edge_to_the_notification() {
    let collector = Collector::start().await;
    let logs = tempfile::tempdir().unwrap();
    let options = Options {
        otlp_endpoint: Some(collector.endpoint()),
        log_dir: Some(logs.path().to_owned()),
        ..Options::default()
    };
    let system = System::start_with_options(options).await;
    let user = Client::signed_up(&system.edge_url).await;

    let trace_id = new_trace_id();
    complete_a_task(&user, &format!("00-{trace_id}-{CLIENT_SPAN}-01"), &unique_name("req")).await;

    let spans = trace_through_the_notification(&collector, &trace_id).await;
    assert_one_trace_to_the_notification(&spans, &trace_id);

    // The log lines of the request and of the message carry the trace, in every process.
    let logged = eventually("the trace's log lines", PATIENCE, || async {
        let of = |process| lines_of_trace(logs.path(), process, &trace_id);
        let (edge, tasks, notify) = (of("edge"), of("svc-tasks"), of("svc-notify"));
        (!edge.is_empty() && !tasks.is_empty() && !notify.is_empty()).then_some((edge, tasks, notify))
    })
    .await;
    let (edge, tasks, notify) = logged;
    let edge_span = find(&spans, "edge", "server");
    assert!(edge.iter().any(|l| l["span_id"] == edge_span.span_id.as_str()), "the access log line: {edge:?}");
    assert!(tasks.iter().any(|l| l["message"] == "request" && l["route"] == "/tasks/{id}/complete"), "{tasks:?}");
    assert!(notify.iter().any(|l| l["message"] == "notification stored"), "{notify:?}");
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let collector = Collector::start().await;
    let system = traced_system(&collector, None).await;
    let user = Client::signed_up(&system.edge_url).await;

    let sent_trace = new_trace_id();
    // Uppercase hex is not a valid traceparent.
    let invalid = format!("00-{}-{CLIENT_SPAN}-01", sent_trace.to_uppercase());
    let request_id = unique_name("req");
    complete_a_task(&user, &invalid, &request_id).await;

    let tasks = eventually("svc-tasks' span of the completion", PATIENCE, || async {
        collector.spans().into_iter().find(|s| {
            s.service == "svc-tasks" && s.kind == "server" && s.attributes.get("request_id") == Some(&request_id)
        })
    })
    .await;
    assert_ne!(tasks.trace_id, sent_trace);
    let edge = eventually("the edge's span of the completion", PATIENCE, || async {
        collector.trace(&tasks.trace_id).into_iter().find(|s| s.service == "edge")
    })
    .await;
    assert_eq!(edge.span_id, tasks.parent_span_id, "svc-tasks' span is the edge's child");
    assert_eq!(edge.parent_span_id, "", "the edge started the trace");
}

#[tokio::test]
async fn an_event_published_after_a_broker_outage_stays_in_the_request_trace() {
    let collector = Collector::start().await;
    let backends = Backends::from_env();
    let (broker, vhost) = todo_e2e::host_and_port(&backends.amqp_url);
    let proxy = FaultProxy::start(broker).await;
    let amqp_url = format!("amqp://guest:guest@{}{vhost}", proxy.addr());
    let system = traced_system(&collector, Some(amqp_url)).await;
    let user = Client::signed_up(&system.edge_url).await;

    let trace_id = new_trace_id();
    {
        let _outage = proxy.cut_until_dropped();
        complete_a_task(&user, &format!("00-{trace_id}-{CLIENT_SPAN}-01"), &unique_name("req")).await;
        // The event waits in the outbox: nothing reaches svc-notify meanwhile.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!collector.trace(&trace_id).iter().any(|s| s.service == "svc-notify"));
    }

    let spans = trace_through_the_notification(&collector, &trace_id).await;
    assert_one_trace_to_the_notification(&spans, &trace_id);
    let attempts = spans.iter().filter(|s| s.kind == "producer").count();
    assert!(attempts >= 2, "the publishes tried during the outage are spans of the trace too: {attempts}");
}

#[tokio::test]
async fn a_collector_that_is_down_changes_nothing_for_clients() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let options = Options { otlp_endpoint: Some(format!("http://{closed}")), ..Options::default() };
    let system = System::start_with_options(options).await;
    let user = Client::signed_up(&system.edge_url).await;

    complete_a_task(&user, &format!("00-{}-{CLIENT_SPAN}-01", new_trace_id()), &unique_name("req")).await;
    eventually("the completion notification", PATIENCE, || async {
        let list: Value = user.send(Method::GET, "/notifications", None).await.json().await.ok()?;
        list["items"].as_array()?.iter().find(|n| n["type"] == "task.completed").cloned()
    })
    .await;
    // The spans the collector never took are counted, not silently lost.
    let edge_metrics = format!("{}/metrics", system.ops_url("edge"));
    eventually("the edge counts the spans it could not export", PATIENCE, || async {
        let text = http_client().get(&edge_metrics).send().await.ok()?.text().await.ok()?;
        text.lines()
            .find(|l| l.starts_with("otel_spans_dropped_total{reason=\"export_failed\"}"))
            .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .filter(|dropped| *dropped > 0.0)
    })
    .await;
}
