//! Every task call of the contract, success and failure.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, error_fields, spawn_app, spawn_app_with, User};

#[tokio::test]
async fn create_returns_201_the_task_and_its_location() {
    let app = spawn_app().await;
    let user = User::new();
    let response = app.create(&user, json!({ "title": "Buy milk" })).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let task: Value = response.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    assert_eq!(location, format!("/tasks/{id}"));
    assert_eq!(task["title"], "Buy milk");
    assert_eq!(task["status"], "open");
    assert_eq!(task["priority"], "normal");
    assert!(task["description"].is_null() && task["dueDate"].is_null() && task["completedAt"].is_null());
    assert_eq!(task["createdAt"], task["updatedAt"]);
    assert!(task["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(chrono::DateTime::parse_from_rfc3339(task["createdAt"].as_str().unwrap()).is_ok());

    let fetched = app.request(Method::GET, &location, &user).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.json::<Value>().await.unwrap(), task);
}

#[tokio::test]
async fn create_keeps_every_optional_field() {
    let app = spawn_app().await;
    let user = User::new();
    let body = json!({
        "title": "  File taxes ",
        "description": "all of them",
        "priority": "high",
        "dueDate": "2030-01-31T18:00:00+01:00",
    });
    let response = app.create(&user, body).await;
    assert_eq!(response.status(), 201);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["title"], "File taxes");
    assert_eq!(task["description"], "all of them");
    assert_eq!(task["priority"], "high");
    assert_eq!(task["dueDate"], "2030-01-31T17:00:00.000Z");
    let nulls = app.create(&user, json!({ "title": "t", "description": null, "dueDate": null })).await;
    assert_eq!(nulls.status(), 201);
}

#[tokio::test]
async fn invalid_creates_name_the_fields() {
    let app = spawn_app().await;
    let user = User::new();
    let cases = [
        (json!({}), "title"),
        (json!({ "title": "" }), "title"),
        (json!({ "title": "   " }), "title"),
        (json!({ "title": "t".repeat(201) }), "title"),
        (json!({ "title": 42 }), "title"),
        (json!({ "title": "t", "description": "d".repeat(2001) }), "description"),
        (json!({ "title": "t", "priority": "urgent" }), "priority"),
        (json!({ "title": "t", "priority": null }), "priority"),
        (json!({ "title": "t", "dueDate": "tomorrow" }), "dueDate"),
        (json!({ "title": "t", "status": "completed" }), "body"),
        (json!({ "title": "t", "ownerId": "someone-else" }), "body"),
        (json!(["title"]), "body"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(app.create(&user, body.clone()).await, 400).await;
        assert!(error_fields(&problem).contains(&field.to_owned()), "{body}: expected an error on {field}: {problem}");
    }
    // The limits count characters, not bytes.
    let longest = json!({ "title": "é".repeat(200), "description": "ü".repeat(2000) });
    assert_eq!(app.create(&user, longest).await.status(), 201);
}

#[tokio::test]
async fn malformed_json_wrong_content_type_and_oversized_bodies_are_refused() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "1024")]).await;
    let user = User::new();
    let post = || app.request(Method::POST, "/tasks", &user);

    let malformed = post().header("content-type", "application/json").body("{\"title\":").send().await.unwrap();
    assert_problem(malformed, 400).await;
    let text = post().header("content-type", "text/plain").body("{\"title\":\"x\"}").send().await.unwrap();
    assert_problem(text, 415).await;
    let none = post().body("{\"title\":\"x\"}").send().await.unwrap();
    assert_problem(none, 415).await;
    let huge = json!({ "title": "x", "description": "d".repeat(2000) });
    assert_problem(post().json(&huge).send().await.unwrap(), 413).await;

    let task = app.created(&user, "t").await;
    let patch = app
        .request(Method::PATCH, &format!("/tasks/{}", task["id"].as_str().unwrap()), &user)
        .header("content-type", "text/plain")
        .body("{\"title\":\"y\"}")
        .send()
        .await
        .unwrap();
    assert_problem(patch, 415).await;
}

#[tokio::test]
async fn every_call_needs_a_valid_token() {
    let app = spawn_app().await;
    let user = User::new();
    let id = app.created(&user, "t").await["id"].as_str().unwrap().to_owned();
    let calls = [
        (Method::GET, "/tasks".to_owned()),
        (Method::POST, "/tasks".to_owned()),
        (Method::GET, format!("/tasks/{id}")),
        (Method::PATCH, format!("/tasks/{id}")),
        (Method::DELETE, format!("/tasks/{id}")),
        (Method::POST, format!("/tasks/{id}/complete")),
        (Method::POST, format!("/tasks/{id}/reopen")),
        (Method::GET, "/tasks/not-an-id".to_owned()),
    ];
    let other_key = todo_common::auth::TokenIssuer::new(
        &todo_common::auth::JwtSettings::with_secret("another-secret-entirely-0123456789abcdef"),
        std::time::Duration::from_secs(60),
    )
    .unwrap()
    .issue(&user.id)
    .unwrap();
    for (method, path) in calls {
        let missing = app.anonymous(method.clone(), &path).json(&json!({ "title": "x" })).send().await.unwrap();
        let problem = assert_problem(missing, 401).await;
        assert!(problem["detail"].is_string(), "{method} {path}");
        for token in ["garbage", other_key.as_str()] {
            let bad = app.anonymous(method.clone(), &path).bearer_auth(token).send().await.unwrap();
            assert!(bad.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
            assert_problem(bad, 401).await;
        }
    }
    // Nothing was changed by the refused calls.
    let task: Value = app.get_task(&user, &id).await.json().await.unwrap();
    assert_eq!((task["title"].as_str(), task["status"].as_str()), (Some("t"), Some("open")));
}

#[tokio::test]
async fn a_task_is_found_only_by_its_owner_and_its_id() {
    let app = spawn_app().await;
    let (owner, stranger) = (User::new(), User::new());
    let task = app.created(&owner, "mine").await;
    let id = task["id"].as_str().unwrap();

    let found = app.get_task(&owner, id).await;
    assert_eq!(found.status(), 200);
    assert_eq!(found.json::<Value>().await.unwrap(), task);

    let unknown = mongodb::bson::oid::ObjectId::new().to_hex();
    for (user, id) in [(&stranger, id), (&owner, "not-an-id"), (&owner, &unknown), (&owner, "0123")] {
        assert_problem(app.get_task(user, id).await, 404).await;
        assert_problem(app.patch(user, id, json!({ "title": "x" })).await, 404).await;
        assert_problem(app.complete(user, id).await, 404).await;
        assert_problem(app.reopen(user, id).await, 404).await;
        assert_problem(app.delete(user, id).await, 404).await;
    }
    // The stranger's attempts changed nothing.
    assert_eq!(app.get_task(&owner, id).await.json::<Value>().await.unwrap(), task);
}

#[tokio::test]
async fn patch_changes_only_the_given_fields() {
    let app = spawn_app().await;
    let user = User::new();
    let body = json!({ "title": "t", "description": "d", "priority": "low", "dueDate": "2031-05-01T00:00:00Z" });
    let task: Value = app.create(&user, body).await.json().await.unwrap();
    let id = task["id"].as_str().unwrap();

    let response = app.patch(&user, id, json!({ "title": "renamed", "priority": "high" })).await;
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["title"], "renamed");
    assert_eq!(patched["priority"], "high");
    assert_eq!(patched["description"], "d");
    assert_eq!(patched["dueDate"], "2031-05-01T00:00:00.000Z");
    assert_eq!(patched["createdAt"], task["createdAt"]);
    assert!(patched["updatedAt"].as_str().unwrap() >= task["updatedAt"].as_str().unwrap());

    let cleared: Value =
        app.patch(&user, id, json!({ "description": null, "dueDate": null })).await.json().await.unwrap();
    assert!(cleared["description"].is_null() && cleared["dueDate"].is_null());
    assert_eq!(cleared["title"], "renamed");
    assert_eq!(app.get_task(&user, id).await.json::<Value>().await.unwrap(), cleared);
}

#[tokio::test]
async fn invalid_patches_name_the_fields() {
    let app = spawn_app().await;
    let user = User::new();
    let task = app.created(&user, "t").await;
    let id = task["id"].as_str().unwrap();
    let cases = [
        (json!({}), "body"),
        (json!({ "title": "" }), "title"),
        (json!({ "title": " " }), "title"),
        (json!({ "title": null }), "title"),
        (json!({ "title": "t".repeat(201) }), "title"),
        (json!({ "description": "d".repeat(2001) }), "description"),
        (json!({ "priority": "whenever" }), "priority"),
        (json!({ "dueDate": "31/01/2030" }), "dueDate"),
        (json!({ "status": "completed" }), "body"),
        (json!({ "title": "ok", "unknown": 1 }), "body"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(app.patch(&user, id, body.clone()).await, 400).await;
        assert!(error_fields(&problem).contains(&field.to_owned()), "{body}: expected an error on {field}: {problem}");
    }
    let malformed = app
        .request(Method::PATCH, &format!("/tasks/{id}"), &user)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400).await;
    assert_eq!(app.get_task(&user, id).await.json::<Value>().await.unwrap(), task);
}

#[tokio::test]
async fn delete_answers_204_then_the_task_is_gone() {
    let app = spawn_app().await;
    let user = User::new();
    let id = app.created(&user, "t").await["id"].as_str().unwrap().to_owned();
    let response = app.delete(&user, &id).await;
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_problem(app.get_task(&user, &id).await, 404).await;
    assert_problem(app.delete(&user, &id).await, 404).await;
    assert_problem(app.complete(&user, &id).await, 404).await;
}

#[tokio::test]
async fn complete_and_reopen_are_idempotent() {
    let app = spawn_app().await;
    let user = User::new();
    let id = app.created(&user, "t").await["id"].as_str().unwrap().to_owned();

    let response = app.complete(&user, &id).await;
    assert_eq!(response.status(), 200);
    let completed: Value = response.json().await.unwrap();
    assert_eq!(completed["status"], "completed");
    assert!(completed["completedAt"].is_string());

    let again = app.complete(&user, &id).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), completed, "a second complete changes nothing");

    let reopened: Value = app.reopen(&user, &id).await.json().await.unwrap();
    assert_eq!(reopened["status"], "open");
    assert!(reopened["completedAt"].is_null());
    let again = app.reopen(&user, &id).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), reopened, "a second reopen changes nothing");
    assert_eq!(app.get_task(&user, &id).await.json::<Value>().await.unwrap(), reopened);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems() {
    let app = spawn_app().await;
    let user = User::new();
    assert_problem(app.request(Method::PUT, "/tasks", &user).send().await.unwrap(), 405).await;
    assert_problem(app.request(Method::GET, "/tasks/x/complete", &user).send().await.unwrap(), 405).await;
    assert_problem(app.request(Method::GET, "/nothing-here", &user).send().await.unwrap(), 404).await;
}
