mod helpers;
mod throttle;

use helpers::{assert_problem, skip_when_embedded, spawn_app, spawn_app_with, store_name};
use serde_json::{json, Value};
use todo_common::auth::{Claims, Subject, TokenIssuer, TokenVerifier};
use todo_test_support::{jwt_settings, token_for, unique_name};

pub fn fresh_email() -> String {
    format!("{}@Example.com", unique_name("User"))
}

#[tokio::test]
async fn register_returns_the_user_with_a_lower_cased_email() {
    let app = spawn_app().await;
    let email = fresh_email();
    let response = app.register(json!({ "email": email, "password": "s3cret-pass", "name": "Ann" })).await;
    assert_eq!(response.status(), 201);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["email"], email.to_lowercase());
    assert_eq!(user["name"], "Ann");
    assert!(user["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(chrono::DateTime::parse_from_rfc3339(user["createdAt"].as_str().unwrap()).is_ok());
    assert!(user.get("password").is_none() && user.get("passwordHash").is_none());
}

#[tokio::test]
async fn an_email_can_register_once_whatever_its_case() {
    let app = spawn_app().await;
    let email = fresh_email();
    assert_eq!(app.register(json!({ "email": email, "password": "s3cret-pass" })).await.status(), 201);
    let again = app.register(json!({ "email": email.to_uppercase(), "password": "other-pass" })).await;
    assert_problem(again, 409).await;
}

#[tokio::test]
async fn invalid_registrations_name_the_fields() {
    let app = spawn_app().await;
    let cases = [
        (json!({ "email": "not-an-email", "password": "s3cret-pass" }), "email"),
        (json!({ "email": fresh_email(), "password": "short" }), "password"),
        (json!({ "email": fresh_email(), "password": "x".repeat(129) }), "password"),
        (json!({ "email": fresh_email(), "password": "s3cret-pass", "name": "" }), "name"),
        (json!({ "email": fresh_email(), "password": "s3cret-pass", "name": "   " }), "name"),
        (json!({ "email": fresh_email(), "password": "s3cret-pass", "name": "n".repeat(101) }), "name"),
        (json!({ "email": fresh_email(), "password": "s3cret-pass", "admin": true }), "body"),
        (json!({ "email": fresh_email() }), "password"),
        (json!({ "password": "s3cret-pass" }), "email"),
        (json!({ "email": { "$gt": "" }, "password": "s3cret-pass" }), "email"),
        (json!({ "email": format!("{}@example.com", "a".repeat(250)), "password": "s3cret-pass" }), "email"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(app.register(body.clone()).await, 400).await;
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{body}: expected an error on {field}, got {problem}");
    }
    // What was sent is never echoed back.
    let secret = format!("{}-secret", "x".repeat(129));
    let problem = assert_problem(app.register(json!({ "email": fresh_email(), "password": secret })).await, 400).await;
    assert!(!problem.to_string().contains("-secret"), "{problem}");
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_refused_clearly() {
    let app = spawn_app().await;
    let malformed = app.post("/users/register").header("content-type", "application/json").body("{\"email\":");
    assert_problem(malformed.send().await.unwrap(), 400).await;
    let not_utf8 = app.post("/users/register").header("content-type", "application/json").body(vec![0xff, 0xfe]);
    assert_problem(not_utf8.send().await.unwrap(), 400).await;
    let wrong_type = app.post("/users/register").header("content-type", "text/plain").body("{}");
    assert_problem(wrong_type.send().await.unwrap(), 415).await;
    let huge = json!({ "email": fresh_email(), "password": "x".repeat(70 * 1024) });
    assert_problem(app.register(huge).await, 413).await;
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep = app.post("/users/register").header("content-type", "application/json").body(nested);
    assert_problem(deep.send().await.unwrap(), 400).await;
}

#[tokio::test]
async fn login_issues_a_token_the_shared_verifier_accepts() {
    let app = spawn_app().await;
    let email = fresh_email();
    let registered: Value =
        app.register(json!({ "email": email, "password": "s3cret-pass" })).await.json().await.unwrap();
    let response = app.login(&email.to_uppercase(), "s3cret-pass").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 3600);
    let token = body["accessToken"].as_str().unwrap();
    let claims: Claims = TokenVerifier::new(&jwt_settings()).verify(token).expect("token verifies");
    assert_eq!(claims.sub, registered["id"].as_str().unwrap());
    assert_eq!((claims.iss.as_str(), claims.aud.as_str()), ("todo-users", "todo-api"));
    assert_eq!(claims.exp - claims.iat, 3600);
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("primary"));
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = spawn_app().await;
    let email = fresh_email();
    app.register(json!({ "email": email, "password": "s3cret-pass" })).await;
    let wrong = assert_problem(app.login(&email, "wrong-pass").await, 401).await;
    let unknown = assert_problem(app.login(&fresh_email(), "s3cret-pass").await, 401).await;
    assert_eq!(wrong, unknown);
    assert_problem(app.login("not-an-email", "whatever").await, 400).await;
}

#[tokio::test]
async fn passwords_differing_after_byte_72_do_not_match() {
    let app = spawn_app().await;
    let email = fresh_email();
    let prefix = "p".repeat(72);
    app.register(json!({ "email": email, "password": format!("{prefix}-one") })).await;
    assert_eq!(app.login(&email, &format!("{prefix}-one")).await.status(), 200);
    assert_problem(app.login(&email, &format!("{prefix}-two")).await, 401).await;
}

#[tokio::test]
async fn me_needs_a_valid_token_of_an_existing_user() {
    let app = spawn_app().await;
    let (email, _, token) = app.signed_up_user().await;
    let response = app.me(&token).await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["email"], email.to_lowercase());

    let missing = app.get("/users/me").send().await.unwrap();
    assert!(missing.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_problem(missing, 401).await;
    assert_problem(app.me("garbage").await, 401).await;
    let issuer = TokenIssuer::new(&jwt_settings(), std::time::Duration::from_secs(60)).unwrap();
    let now = todo_common::auth::unix_now();
    let expired = Claims {
        sub: Subject::parse(me["id"].as_str().unwrap()).unwrap(),
        iat: now - 7200,
        exp: now - 3600,
        nbf: None,
        iss: "todo-users".into(),
        aud: "todo-api".into(),
    };
    assert_problem(app.me(&issuer.sign(&expired).unwrap()).await, 401).await;
    assert_problem(app.me(&token_for("0123456789abcdef01234567")).await, 401).await;
    assert_problem(app.me(&token_for("not-an-object-id")).await, 401).await;
}

#[tokio::test]
async fn identity_headers_from_clients_are_ignored() {
    let app = spawn_app().await;
    let response = app.get("/users/me").header("x-user-id", "0123456789abcdef01234567").send().await.unwrap();
    assert_problem(response, 401).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    assert_problem(app.get("/users/nothing").send().await.unwrap(), 404).await;
    let wrong_method = app.get("/users/login").send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "POST");
    assert_problem(wrong_method, 405).await;
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_made_otherwise() {
    let app = spawn_app().await;
    let kept = app.get("/healthz").header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc-123");
    let replaced = app.get("/healthz").header("x-request-id", "bad id!").send().await.unwrap();
    let made = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(made != "bad id!" && !made.is_empty());
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").send().await.unwrap().status(), 200);
    let ready = app.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["backends"][store_name()]["status"], "up");
    app.login(&fresh_email(), "whatever-pass").await;
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"http_requests_total{method="POST",route="/users/login",status="401"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"user_logins_total{result="failure"} 1"#), "{metrics}");
}

#[tokio::test]
async fn without_mongodb_the_service_is_unready_and_answers_503() {
    if skip_when_embedded("about a MongoDB outage") {
        return;
    }
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let uri = format!("mongodb://127.0.0.1:{closed_port}/?connectTimeoutMS=500");
    let app = spawn_app_with(&[("MONGODB_URI", &uri)]).await;
    assert_eq!(app.get("/healthz").send().await.unwrap().status(), 200);
    let ready = app.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["backends"]["mongodb"]["status"], "down");
    let problem =
        assert_problem(app.register(json!({ "email": fresh_email(), "password": "s3cret-pass" })).await, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("database"));
}

#[tokio::test]
async fn seeding_is_idempotent() {
    let app = spawn_app().await;
    let seed = || async {
        match &app.embedded_store {
            Some(store) => svc_users::seed::seed_store(store.as_ref(), app.config.bcrypt_cost).await.unwrap(),
            None => svc_users::seed::seed(&app.config).await.unwrap(),
        }
    };
    assert_eq!(seed().await, svc_users::seed::DEMO_USERS.len());
    assert_eq!(seed().await, 0);
    let (email, password, _) = svc_users::seed::DEMO_USERS[0];
    assert_eq!(app.login(email, password).await.status(), 200);
}
