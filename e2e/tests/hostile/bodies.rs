//! Hostile bodies, headers and query strings: oversized, slow, not UTF-8, deeply
//! nested, duplicate keys, NoSQL-operator-shaped values in every field. Each gets a
//! clear 4xx problem, never a 5xx, and nothing is stored.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use todo_e2e::System;
use todo_test_support::http_client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{assert_client_error, authority, raw_exchange, raw_get, read_until_closed, send_patiently, User};

/// Values shaped like MongoDB query operators or other non-strings.
fn operator_values() -> Vec<Value> {
    vec![
        json!({ "$gt": "" }),
        json!({ "$ne": null }),
        json!({ "$regex": ".*" }),
        json!({ "$where": "sleep(1000) || true" }),
        json!({ "$in": ["low", "normal", "high"] }),
        json!(["$gt", ""]),
        json!({ "title": "nested" }),
        json!(1e300),
        json!(true),
    ]
}

/// Each JSON body endpoint with its fields and a valid body.
struct BodyEndpoint {
    method: Method,
    path: String,
    fields: &'static [&'static str],
    valid: Value,
}

fn body_endpoints(task_id: &str) -> Vec<BodyEndpoint> {
    vec![
        BodyEndpoint {
            method: Method::POST,
            path: "/tasks".into(),
            fields: &["title", "description", "priority", "dueDate"],
            valid: json!({ "title": "t", "description": "d", "priority": "low", "dueDate": "2030-01-01T00:00:00Z" }),
        },
        BodyEndpoint {
            method: Method::PATCH,
            path: format!("/tasks/{task_id}"),
            fields: &["title", "description", "priority", "dueDate"],
            valid: json!({ "title": "t", "description": "d", "priority": "low", "dueDate": "2030-01-01T00:00:00Z" }),
        },
        BodyEndpoint {
            method: Method::POST,
            path: "/users/register".into(),
            fields: &["email", "password", "name"],
            valid: json!({ "email": "injection@example.com", "password": "long-enough-password", "name": "n" }),
        },
        BodyEndpoint {
            method: Method::POST,
            path: "/users/login".into(),
            fields: &["email", "password"],
            valid: json!({ "email": "injection@example.com", "password": "long-enough-password" }),
        },
    ]
}

/// Raw bodies that are not acceptable JSON for any endpoint.
fn malformed_bodies(field: &str) -> Vec<(&'static str, Vec<u8>)> {
    let depth = 10_000;
    let nested_value = format!("{{\"{field}\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
    let nested_objects = format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    vec![
        ("invalid UTF-8 in a string", [format!("{{\"{field}\":\"").as_bytes(), b"\xff\xfe\xc3\x28", b"\"}"].concat()),
        ("invalid UTF-8 throughout", b"\xff\xfe\xfd\xfc".to_vec()),
        ("overlong UTF-8 slash", [format!("{{\"{field}\":\"").as_bytes(), b"\xc0\xaf", b"\"}"].concat()),
        ("lone surrogate escape", format!("{{\"{field}\":\"\\ud800\"}}").into_bytes()),
        ("arrays 10 000 deep", nested_value.into_bytes()),
        ("objects 10 000 deep", nested_objects.into_bytes()),
        ("truncated", format!("{{\"{field}\":\"x").into_bytes()),
        ("trailing garbage", format!("{{\"{field}\":\"x\"}} {{}}").into_bytes()),
        ("a bare string", b"\"just a string\"".to_vec()),
        ("an array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("empty", Vec::new()),
        ("NaN", format!("{{\"{field}\":NaN}}").into_bytes()),
        ("huge exponent", format!("{{\"{field}\":1e999999}}").into_bytes()),
        ("operator key at the top", format!("{{\"{field}\":\"x\",\"$where\":\"1\"}}").into_bytes()),
        ("dotted key", format!("{{\"{field}.$\":\"x\"}}").into_bytes()),
        ("$set wrapper", format!("{{\"$set\":{{\"{field}\":\"x\"}}}}").into_bytes()),
        ("__proto__ key", format!("{{\"{field}\":\"x\",\"__proto__\":{{\"admin\":true}}}}").into_bytes()),
    ]
}

async fn send_raw(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    endpoint: &BodyEndpoint,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let request = http
        .request(endpoint.method.clone(), format!("{base}{}", endpoint.path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body);
    send_patiently(request).await
}

/// Sends every hostile body to every JSON endpoint at `base`; returns how many.
async fn hostile_bodies(base: &str, user: &User, task_id: &str) -> usize {
    let http = http_client();
    let mut sent = 0;
    for endpoint in body_endpoints(task_id) {
        let what = |case: &str| format!("{} {} {case}", endpoint.method, endpoint.path);
        for field in endpoint.fields {
            for value in operator_values() {
                let mut body = endpoint.valid.clone();
                body[*field] = value.clone();
                let response =
                    send_raw(&http, base, &user.token, &endpoint, "application/json", body.to_string().into_bytes())
                        .await;
                let problem = assert_client_error(response, &what(&format!("{field} = {value}"))).await;
                assert_eq!(problem["status"], 400, "{}", what(&format!("{field} = {value}")));
                sent += 1;
            }
        }
        for (case, body) in malformed_bodies(endpoint.fields[0]) {
            let response = send_raw(&http, base, &user.token, &endpoint, "application/json", body).await;
            let status = response.status();
            let problem = assert_client_error(response, &what(case)).await;
            // A very deep body may be over a service's 64 KiB limit before it is parsed.
            assert!(status == 400 || status == 413, "{}: {problem}", what(case));
            sent += 1;
        }
        for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", ""] {
            let body = endpoint.valid.to_string().into_bytes();
            let response = send_raw(&http, base, &user.token, &endpoint, content_type, body).await;
            let problem = assert_client_error(response, &what(content_type)).await;
            assert_eq!(problem["status"], 415, "{}", what(content_type));
            sent += 1;
        }
    }
    sent
}

/// Hostile query strings for svc-tasks' list at `tasks` and svc-notify's at `notify`
/// (the same address when going through the edge).
async fn hostile_queries(tasks: &str, notify: &str, user: &User) -> usize {
    let http = http_client();
    let queries = [
        "/tasks?status[$ne]=open",
        "/tasks?status=%7B%22%24gt%22%3A%22%22%7D",
        "/tasks?status=open&status=completed",
        "/tasks?limit[$gt]=0",
        "/tasks?limit=%7B%22%24gt%22%3A0%7D",
        "/tasks?limit=1e3",
        "/tasks?limit=-1",
        "/tasks?limit=0",
        "/tasks?limit=99999999999999999999999",
        "/tasks?cursor=%7B%22%24gt%22%3A%22%22%7D",
        "/tasks?cursor[$gt]=",
        "/tasks?cursor=AAAAAAAAAAAAAAAAAAAAAAAA",
        "/tasks?cursor=%FF%FE",
        "/tasks?status=%00",
        "/notifications?unread[$ne]=true",
        "/notifications?unread=%7B%22%24gt%22%3A%22%22%7D",
        "/notifications?unread=yes",
        "/notifications?limit[$gt]=0",
        "/notifications?limit=101",
        "/notifications?cursor=%7B%22%24gt%22%3A%22%22%7D",
        "/notifications?cursor[$ne]=x",
        "/notifications?$where=1",
    ];
    for query in queries {
        let base = if query.starts_with("/tasks") { tasks } else { notify };
        let response = send_patiently(http.get(format!("{base}{query}")).bearer_auth(&user.token)).await;
        let status = response.status();
        if status == StatusCode::OK {
            // An ignored parameter is acceptable only if nothing but the caller's own data comes back.
            let body: Value = response.json().await.unwrap();
            let items = body["items"].as_array().expect("a list");
            assert!(items.len() <= 1, "{query} returned {} items", items.len());
        } else {
            let problem = assert_client_error(response, query).await;
            assert_eq!(problem["status"], 400, "{query}");
        }
    }
    queries.len()
}

async fn assert_nothing_stored(user: &User, task: &Value) {
    let tasks = user.tasks().await;
    assert_eq!(tasks.len(), 1, "hostile bodies stored tasks: {tasks:?}");
    assert_eq!(tasks[0], *task, "a hostile body changed the task");
    // No account was made from a hostile registration: its login fails as bad credentials.
    let login = http_client()
        .post(format!("{}/users/login", user.base))
        .json(&json!({ "email": "injection@example.com", "password": "long-enough-password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401, "a hostile registration created an account");
}

#[tokio::test]
async fn hostile_bodies_and_queries_get_clear_4xx_and_store_nothing() {
    let system = System::start().await;
    let user = User::sign_up(&system.edge_url).await;
    let task = user.create_task("baseline").await;
    let id = task["id"].as_str().unwrap();

    let through_edge = hostile_bodies(&system.edge_url, &user, id).await;
    let queries = hostile_queries(&system.edge_url, &system.edge_url, &user).await;
    // The same straight at the services, which must not rely on the edge.
    let mut direct = 0;
    for endpoint in body_endpoints(id) {
        let base = if endpoint.path.starts_with("/users") { &system.users_url } else { &system.tasks_url };
        direct += hostile_bodies_at(base, &user, &endpoint).await;
    }
    let direct_queries = hostile_queries(&system.tasks_url, &system.notify_url, &user).await;
    println!(
        "hostile bodies: {through_edge} through the edge, {direct} at the services; hostile queries: {queries} + {direct_queries}; \
         all 4xx, nothing stored"
    );
    assert_nothing_stored(&user, &task).await;
    assert_eq!(user.notifications().await.iter().filter(|n| n["type"] == "task.updated").count(), 0);
}

async fn hostile_bodies_at(base: &str, user: &User, endpoint: &BodyEndpoint) -> usize {
    let http = http_client();
    let mut sent = 0;
    for field in endpoint.fields {
        for value in operator_values() {
            let mut body = endpoint.valid.clone();
            body[*field] = value.clone();
            let response =
                send_raw(&http, base, &user.token, endpoint, "application/json", body.to_string().into_bytes()).await;
            assert_client_error(response, &format!("{} at {base}: {field} = {value}", endpoint.path)).await;
            sent += 1;
        }
    }
    for (case, body) in malformed_bodies(endpoint.fields[0]) {
        let response = send_raw(&http, base, &user.token, endpoint, "application/json", body).await;
        assert_client_error(response, &format!("{} at {base}: {case}", endpoint.path)).await;
        sent += 1;
    }
    sent
}

#[tokio::test]
async fn duplicate_json_keys_are_refused_and_store_nothing() {
    let system = System::start().await;
    let user = User::sign_up(&system.edge_url).await;
    let task = user.create_task("baseline").await;
    let id = task["id"].as_str().unwrap();
    let http = http_client();
    for endpoint in body_endpoints(id) {
        let field = endpoint.fields[0];
        let mut body = endpoint.valid.to_string();
        // {"title":"t", ... ,"title":"smuggled"}
        body.insert_str(body.len() - 1, &format!(",\"{field}\":\"smuggled-{field}@example.com\""));
        let response =
            send_raw(&http, &system.edge_url, &user.token, &endpoint, "application/json", body.into_bytes()).await;
        let problem =
            assert_client_error(response, &format!("{} {} duplicate {field}", endpoint.method, endpoint.path)).await;
        assert_eq!(problem["status"], 400);
    }
    assert_nothing_stored(&user, &task).await;
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused() {
    let system = System::start().await;
    let user = User::sign_up(&system.edge_url).await;
    let task = user.create_task("baseline").await;
    let auth = format!("Authorization: Bearer {}", user.token);
    let big = |size: usize| format!("X-Big: {}", "a".repeat(size));

    // Headers: a 64 KiB header may be served; 1 MiB of header, or 500 header lines, never
    // a 5xx and never a hang.
    for (what, lines) in [
        ("one 64 KiB header", vec![auth.clone(), big(64 * 1024)]),
        ("one 1 MiB header", vec![auth.clone(), big(1024 * 1024)]),
        ("500 header lines", std::iter::once(auth.clone()).chain((0..500).map(|i| format!("X-H{i}: v"))).collect()),
    ] {
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        for base in [&system.edge_url, &system.tasks_url] {
            let outcome = raw_exchange(base, &raw_get("/tasks", &lines), Duration::from_secs(15)).await;
            let status = outcome.status();
            assert!(outcome.ended_after.is_some() || status.is_some(), "{what} at {base}: no answer in 15 s");
            assert!(status.is_none_or(|s| s < 500), "{what} at {base}: {status:?}");
            if what != "one 64 KiB header" {
                assert!(status.is_none_or(|s| (400..500).contains(&s)), "{what} at {base}: {status:?}");
            }
        }
    }

    // Bodies over the limit: declared, or streamed without a length.
    let http = http_client();
    let huge = format!("{{\"title\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    // Declared: refused on its length, before it is read.
    let declared = [
        format!(
            "POST /tasks HTTP/1.1\r\nHost: localhost\r\n{auth}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            huge.len()
        )
        .into_bytes(),
        huge.clone().into_bytes(),
    ]
    .concat();
    let outcome = raw_exchange(&system.edge_url, &declared, Duration::from_secs(15)).await;
    assert_eq!(outcome.status(), Some(413), "2 MiB declared body: {}", outcome.head());
    // The answer comes on the headers alone; a client that sends its body after it (as
    // HTTP clients do, answer unread) can still send it all: the edge reads and drops it
    // before closing, instead of resetting the connection under the client, which would
    // lose the answer.
    let (head, body) = declared.split_at(declared.len() - huge.len());
    let mut stream = TcpStream::connect(authority(&system.edge_url)).await.unwrap();
    let started = Instant::now();
    stream.write_all(head).await.unwrap();
    let mut status_line = [0_u8; 12];
    tokio::time::timeout(Duration::from_secs(15), stream.read_exact(&mut status_line)).await.unwrap().unwrap();
    assert_eq!(&status_line, b"HTTP/1.1 413");
    // In two parts, with pauses: an edge that had closed would have reset the connection
    // by the second, whatever the socket buffers took of the first.
    let (first, rest) = body.split_at(64 * 1024);
    let mut sent = Vec::new();
    for part in [first, rest] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        sent.push(tokio::time::timeout(Duration::from_secs(15), stream.write_all(part)).await);
    }
    assert!(sent.iter().all(|s| matches!(s, Ok(Ok(())))), "the body sent after the 413 was refused: {sent:?}");
    let rest = read_until_closed(&mut stream, started, Duration::from_secs(15)).await;
    assert!(rest.ended_after.is_some(), "the connection stays open after a 413");
    // Streamed without a length: the edge counts the chunks and stops at the limit.
    let mut stream = TcpStream::connect(authority(&system.edge_url)).await.unwrap();
    let head = format!(
        "POST /tasks HTTP/1.1\r\nHost: localhost\r\n{auth}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in huge.as_bytes().chunks(64 * 1024) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The edge may answer 413 and close while we are still sending.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let outcome = read_until_closed(&mut stream, started, Duration::from_secs(15)).await;
    assert_eq!(outcome.status(), Some(413), "2 MiB chunked body: {}", outcome.head());
    let over_service_limit = format!("{{\"title\":\"{}\"}}", "x".repeat(100 * 1024));
    let direct = http
        .post(format!("{}/tasks", system.tasks_url))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body(over_service_limit)
        .send()
        .await
        .unwrap();
    assert_eq!(assert_client_error(direct, "100 KiB body at svc-tasks").await["status"], 413);
    assert_eq!(user.tasks().await, vec![task]);
}

#[tokio::test]
async fn an_early_refusal_does_not_break_the_next_request() {
    let system = System::start().await;
    let user = User::sign_up(&system.edge_url).await;
    let task = user.create_task("mine").await;
    let id = task["id"].as_str().unwrap();
    let mut failures = Vec::new();
    // Large enough to arrive after the headers, small enough for the services' limit.
    let padding = "x".repeat(60 * 1024);
    for round in 0_u32..20 {
        // Refused before the body is read: a malformed id (404) or a wrong content type (415).
        let early = if round.is_multiple_of(2) {
            user.send(Method::PATCH, "/tasks/not-an-id", Some(json!({ "title": "x", "description": padding }))).await
        } else {
            let request = user.request(Method::POST, "/tasks").header("content-type", "text/plain");
            request.body(padding.clone()).send().await.unwrap()
        };
        assert!(early.status().is_client_error());
        // The next request is a POST, which the edge does not retry.
        let next = user.send(Method::POST, &format!("/tasks/{id}/complete"), None).await;
        if next.status() != 200 {
            failures.push(format!("round {round}: {}", next.status()));
        }
    }
    assert!(failures.is_empty(), "POSTs after an early refusal failed: {failures:?}");
}
