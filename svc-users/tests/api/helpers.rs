//! Starts the real svc-users in-process on a free port with its own database: a unique
//! MongoDB database, or with `TEST_BACKEND=embedded` a redb file in a temporary directory.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::{RequestBuilder, Response};
use serde_json::{json, Value};
use svc_users::store::UserStore;
use svc_users::{Application, Backends, Config};
use todo_common::config::EnvSource;
use todo_test_support::{http_client, test_env, unique_name};
use tokio_util::sync::{CancellationToken, DropGuard};

pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    /// The embedded store the app runs on, under `TEST_BACKEND=embedded`.
    pub embedded_store: Option<Arc<dyn UserStore>>,
    client: reqwest::Client,
    _stop: DropGuard,
    _data: Option<DataDir>,
}

pub use todo_test_support::{embedded, skip_when_embedded, DataDir};

/// The name `/readyz` gives the store.
pub fn store_name() -> &'static str {
    if embedded() {
        "redb"
    } else {
        "mongodb"
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    todo_common::telemetry::init_for_tests();
    let backends = todo_test_support::Backends::from_env();
    let db = unique_name("users");
    let mut env =
        test_env(&[("MONGODB_URI", &backends.mongodb_uri), ("MONGODB_DB", &db), ("REDIS_URL", &backends.redis_url)]);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_env(&env as &dyn EnvSource).expect("test config is valid");
    let (app, embedded_store, data) = if embedded() {
        let data = DataDir::new();
        let backends = Backends::embedded(&data.0.join("users.redb")).expect("embedded store opens");
        let store = Arc::clone(&backends.store);
        let app = Application::build_with(config.clone(), backends).await.expect("app builds");
        (app, Some(store), Some(data))
    } else {
        (Application::build(config.clone()).await.expect("app builds"), None, None)
    };
    let addr = app.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    TestApp { addr, config, embedded_store, client: http_client(), _stop: stop.drop_guard(), _data: data }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    pub async fn register(&self, body: Value) -> Response {
        self.post("/users/register").json(&body).send().await.expect("request sent")
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post("/users/login").json(&json!({ "email": email, "password": password })).send().await.expect("sent")
    }

    pub async fn me(&self, token: &str) -> Response {
        self.get("/users/me").bearer_auth(token).send().await.expect("request sent")
    }

    /// Registers a fresh user and returns (email, password, access token).
    pub async fn signed_up_user(&self) -> (String, String, String) {
        let email = format!("{}@example.com", unique_name("user"));
        let password = "correct horse battery".to_owned();
        assert_eq!(self.register(json!({ "email": email, "password": password })).await.status(), 201);
        let token: Value = self.login(&email, &password).await.json().await.expect("json");
        (email, password, token["accessToken"].as_str().expect("token").to_owned())
    }
}

pub use todo_test_support::assert_problem;
