//! Access control: one user never reads, changes, completes, reopens, deletes or marks
//! read what belongs to another, through the edge or straight at a service, whatever
//! ids, query parameters or identity headers it sends.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use todo_e2e::System;
use todo_test_support::{eventually, http_client};

use crate::support::{send_patiently, User, UNAVAILABLE_RETRIES};

/// Headers that claim someone else's identity or address.
fn forged_headers(victim: &User) -> Vec<(&'static str, String)> {
    vec![
        ("x-user-id", victim.id.clone()),
        ("x-user", victim.id.clone()),
        ("x-user-sub", victim.id.clone()),
        ("x-subject", victim.id.clone()),
        ("x-auth-user", victim.id.clone()),
        ("x-authenticated-userid", victim.id.clone()),
        ("x-forwarded-user", victim.id.clone()),
        ("x-forwarded-email", victim.email.clone()),
        ("x-user-email", victim.email.clone()),
        ("x-remote-user", victim.id.clone()),
        ("remote-user", victim.id.clone()),
        ("x-forwarded-for", "10.0.0.1, 127.0.0.1".to_owned()),
        ("forwarded", "for=127.0.0.1;by=127.0.0.1".to_owned()),
        ("x-real-ip", "127.0.0.1".to_owned()),
        ("x-original-url", format!("/tasks?owner={}", victim.id)),
        ("x-rewrite-url", format!("/tasks?owner={}", victim.id)),
        ("x-http-method-override", "GET".to_owned()),
        ("cookie", format!("user={}; sub={}", victim.id, victim.id)),
    ]
}

/// Every way to name the victim's task `id` (or notification) in a path.
fn id_spellings(id: &str) -> Vec<String> {
    vec![
        id.to_owned(),
        id.to_uppercase(),
        format!("{id}/"),
        format!("{id}%20"),
        format!("{id}?userId=x"),
        format!("{id}%3Fowner%3Dx"),
        format!("%7B%22%24ne%22%3Anull%7D"),
        format!("{id}%00"),
        format!("{id},{id}"),
    ]
}

fn assert_refused(status: u16, what: &str) {
    // 404 for an id the caller does not own; 400 (ambiguous or bad path), 405 or 401 are
    // refusals too. Anything 2xx is a breach, 5xx a bug.
    assert!(matches!(status, 400 | 401 | 404 | 405), "{what}: expected a refusal, got {status}");
}

/// Tries every operation on the victim's task and notification as `attacker`, with and
/// without forged headers; returns how many attempts were made.
async fn attack(attacker: &User, victim: &User, task_id: &str, notification_id: &str) -> usize {
    let mut attempts = 0;
    let header_sets: Vec<Vec<(&str, String)>> =
        std::iter::once(Vec::new()).chain(forged_headers(victim).into_iter().map(|h| vec![h])).collect();
    for headers in &header_sets {
        for spelled in id_spellings(task_id) {
            // A PATCH is followed by a GET: see `crate::bodies::an_early_refusal_does_not_break_the_next_request`.
            for (method, path, body) in [
                (Method::PATCH, format!("/tasks/{spelled}"), Some(json!({ "title": "stolen" }))),
                (Method::GET, format!("/tasks/{spelled}"), None),
                (Method::POST, format!("/tasks/{spelled}/complete"), None),
                (Method::POST, format!("/tasks/{spelled}/reopen"), None),
                (Method::DELETE, format!("/tasks/{spelled}"), None),
            ] {
                let mut request = attacker.request(method.clone(), &path);
                for (name, value) in headers {
                    request = request.header(*name, value);
                }
                if let Some(body) = body {
                    request = request.json(&body);
                }
                let response = send_patiently(request).await;
                assert_refused(response.status().as_u16(), &format!("{method} {path} with {headers:?}"));
                attempts += 1;
            }
        }
        for spelled in id_spellings(notification_id) {
            let path = format!("/notifications/{spelled}/read");
            let mut request = attacker.request(Method::POST, &path);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let response = send_patiently(request).await;
            assert_refused(response.status().as_u16(), &format!("POST {path} with {headers:?}"));
            attempts += 1;
        }
        // The attacker's own lists, however filtered, hold nothing of the victim's.
        for path in [
            "/tasks".to_owned(),
            format!("/tasks?userId={}", victim.id),
            format!("/tasks?owner={}&status=completed", victim.id),
            "/notifications".to_owned(),
            format!("/notifications?userId={}", victim.id),
        ] {
            let mut request = attacker.request(Method::GET, &path);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let response = send_patiently(request).await;
            let status = response.status().as_u16();
            if status == 200 {
                let body: Value = response.json().await.unwrap();
                let leaked =
                    body["items"].as_array().expect("a list").iter().any(|item| {
                        item["id"] == task_id || item["taskId"] == task_id || item["id"] == notification_id
                    });
                assert!(!leaked, "GET {path} with {headers:?} shows another user's items: {body}");
            } else {
                assert_eq!(status, 400, "GET {path} with {headers:?}");
            }
            attempts += 1;
        }
    }
    attempts
}

async fn assert_untouched(victim: &User, task: &Value, notification_id: &str) {
    let id = task["id"].as_str().unwrap();
    let now = victim.send(Method::GET, &format!("/tasks/{id}"), None).await;
    assert_eq!(now.status(), 200, "the victim's task is gone");
    let now: Value = now.json().await.unwrap();
    assert_eq!(now, *task, "the victim's task changed");
    let notifications = victim.notifications().await;
    let notification = notifications.iter().find(|n| n["id"] == notification_id).expect("notification kept");
    assert_eq!(notification["read"], false, "someone else marked the victim's notification read");
}

/// The victim's completed task and the notification it made.
async fn victim_with_a_task(base: &str) -> (User, Value, String) {
    let victim = User::sign_up(base).await;
    let task = victim.create_task("the victim's").await;
    let id = task["id"].as_str().unwrap().to_owned();
    let completed = victim.send(Method::POST, &format!("/tasks/{id}/complete"), None).await;
    assert_eq!(completed.status(), 200);
    let task: Value = completed.json().await.unwrap();
    let notification = eventually("the victim's notification", Duration::from_secs(15), || async {
        victim.notifications().await.into_iter().find(|n| n["type"] == "task.completed")
    })
    .await;
    (victim, task, notification["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn no_user_reaches_anothers_tasks_or_notifications_through_the_edge() {
    let system = System::start().await;
    let (victim, task, notification_id) = victim_with_a_task(&system.edge_url).await;
    let attacker = User::sign_up(&system.edge_url).await;
    attacker.create_task("the attacker's own").await;

    let attempts = attack(&attacker, &victim, task["id"].as_str().unwrap(), &notification_id).await;
    let retried = UNAVAILABLE_RETRIES.load(std::sync::atomic::Ordering::Relaxed);
    println!("access control through the edge: {attempts} attempts, all refused ({retried} transient 503s retried in this binary)");
    assert_untouched(&victim, &task, &notification_id).await;
    assert_eq!(attacker.tasks().await.len(), 1);
}

#[tokio::test]
async fn no_user_reaches_anothers_tasks_or_notifications_at_the_services() {
    let system = System::start().await;
    let (victim, task, notification_id) = victim_with_a_task(&system.edge_url).await;
    let attacker = User::sign_up(&system.edge_url).await;
    let task_id = task["id"].as_str().unwrap();

    // With its own valid token, straight at each service.
    let at_tasks = attacker.at(&system.tasks_url);
    let mut attempts = 0;
    for spelled in id_spellings(task_id) {
        for (method, path) in [
            (Method::GET, format!("/tasks/{spelled}")),
            (Method::PATCH, format!("/tasks/{spelled}")),
            (Method::POST, format!("/tasks/{spelled}/complete")),
            (Method::POST, format!("/tasks/{spelled}/reopen")),
            (Method::DELETE, format!("/tasks/{spelled}")),
        ] {
            let mut request = at_tasks.request(method.clone(), &path);
            for (name, value) in forged_headers(&victim) {
                request = request.header(name, value);
            }
            if method == Method::PATCH {
                request = request.json(&json!({ "title": "stolen" }));
            }
            let status = send_patiently(request).await.status().as_u16();
            assert_refused(status, &format!("{method} {path} at svc-tasks"));
            attempts += 1;
        }
    }
    let at_notify = attacker.at(&system.notify_url);
    for spelled in id_spellings(&notification_id) {
        let mut request = at_notify.request(Method::POST, &format!("/notifications/{spelled}/read"));
        for (name, value) in forged_headers(&victim) {
            request = request.header(name, value);
        }
        assert_refused(send_patiently(request).await.status().as_u16(), "mark read at svc-notify");
        attempts += 1;
    }
    let mut listed = attacker.at(&system.notify_url).request(Method::GET, "/notifications");
    for (name, value) in forged_headers(&victim) {
        listed = listed.header(name, value);
    }
    let listed: Value = send_patiently(listed).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));

    // Without a token, an identity header alone; or a token naming the victim signed
    // with a key the services do not hold.
    let http = http_client();
    let forged_key = todo_common::auth::TokenIssuer::new(
        &todo_common::auth::JwtSettings::with_secret("not-the-services-key-0123456789abcdef"),
        Duration::from_secs(600),
    )
    .unwrap()
    .issue(&victim.id)
    .unwrap();
    for (base, path) in [
        (&system.tasks_url, format!("/tasks/{task_id}")),
        (&system.tasks_url, "/tasks".to_owned()),
        (&system.notify_url, "/notifications".to_owned()),
        (&system.users_url, "/users/me".to_owned()),
    ] {
        let mut bare = http.get(format!("{base}{path}"));
        for (name, value) in forged_headers(&victim) {
            bare = bare.header(name, value);
        }
        assert_eq!(send_patiently(bare).await.status(), 401, "{path} with identity headers only");
        let forged = http.get(format!("{base}{path}")).bearer_auth(&forged_key).send().await.unwrap();
        assert_eq!(forged.status(), 401, "{path} with a token signed by another key");
        attempts += 2;
    }
    println!("access control at the services: {attempts} attempts, all refused");
    assert_untouched(&victim, &task, &notification_id).await;
    // A genuine token for a subject that does not exist gets nobody's data.
    let stranger = User { token: system.token_for("000000000000000000000000"), ..attacker.at(&system.edge_url) };
    assert_eq!(stranger.tasks().await, Vec::<Value>::new());
}
