//! The `Api` impl: each endpoint decodes, parses into domain types, calls the store and
//! shapes the answer.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, StatusCode};
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use todo_common::auth::TokenIssuer;
use todo_common::body::{json_response, read_json, JsonSchema};
use todo_common::health::BackendReport;
use todo_common::server::{Api, HttpResponse, Request};
use todo_common::Problem;

use todo_common::time::Timestamp;

use crate::domain::{DisplayName, Email, Password, User, UserId};
use crate::password::PasswordHasher;
use crate::routes::{self, Endpoint};
use crate::store::UserStore;
use crate::throttle::LoginThrottle;

#[derive(Deserialize)]
struct RegisterBody {
    email: String,
    password: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserView<'a> {
    id: String,
    email: &'a str,
    name: Option<&'a str>,
    created_at: String,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email.as_ref(),
            name: user.name.as_ref().map(AsRef::as_ref),
            created_at: user.created_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenView {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// How long clients and caches may keep the key set: verifiers refresh at least this
/// often (5 minutes), so a key published this long before it signs is known everywhere.
const JWKS_CACHE_CONTROL: &str = "public, max-age=300";

pub(crate) struct Schemas {
    register: JsonSchema,
    login: JsonSchema,
}

impl Schemas {
    pub(crate) fn load() -> anyhow::Result<Self> {
        Ok(Self {
            register: JsonSchema::compile("register", include_str!("../schemas/register.json"))?,
            login: JsonSchema::compile("login", include_str!("../schemas/login.json"))?,
        })
    }
}

pub(crate) struct UsersMetrics {
    pub(crate) logins: IntCounterVec,
}

pub struct UsersApi {
    pub(crate) store: Arc<dyn UserStore>,
    pub(crate) throttle: LoginThrottle,
    pub(crate) hasher: PasswordHasher,
    pub(crate) issuer: TokenIssuer,
    pub(crate) schemas: Schemas,
    pub(crate) metrics: UsersMetrics,
    pub(crate) max_body_bytes: usize,
}

#[async_trait]
impl Api for UsersApi {
    type Endpoint = Endpoint;

    fn parse_endpoint(&self, method: &Method, path: &str) -> Result<Endpoint, Problem> {
        routes::parse(method, path)
    }

    async fn handle(&self, endpoint: Endpoint, request: Request) -> Result<HttpResponse, Problem> {
        match endpoint {
            Endpoint::Register => self.register(request).await,
            Endpoint::Login => self.login(request).await,
            Endpoint::Me => self.me(request).await,
            Endpoint::Jwks => Ok(self.jwks()),
        }
    }

    async fn readiness(&self) -> Vec<BackendReport> {
        let (store, throttle) = tokio::join!(self.store.ping(), self.throttle.state());
        vec![
            BackendReport { name: self.store.backend_name(), critical: true, state: store },
            BackendReport { name: self.throttle.backend_name(), critical: false, state: throttle },
        ]
    }
}

impl UsersApi {
    async fn register(&self, request: Request) -> Result<HttpResponse, Problem> {
        let body: RegisterBody =
            read_json(&request.headers, request.body, self.max_body_bytes, &self.schemas.register).await?;
        let (email, password, name) = match (
            Email::parse(&body.email),
            Password::parse(body.password),
            body.name.as_deref().map(DisplayName::parse).transpose(),
        ) {
            (Ok(email), Ok(password), Ok(name)) => (email, password, name),
            (email, password, name) => {
                return Err(Problem::validation(
                    [email.err(), password.err(), name.err()].into_iter().flatten().collect(),
                ))
            }
        };
        let password_hash = self.hasher.hash(&password).await.map_err(|e| Problem::internal(&e))?;
        let user = User::register(email, name, password_hash, Timestamp::now());
        self.store.insert(&user).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(json_response(StatusCode::CREATED, &UserView::from(&user)))
    }

    async fn login(&self, request: Request) -> Result<HttpResponse, Problem> {
        let body: LoginBody =
            read_json(&request.headers, request.body, self.max_body_bytes, &self.schemas.login).await?;
        let email = Email::parse(&body.email).map_err(|e| Problem::validation(vec![e]))?;
        let user = self.store.find_by_email(&email).await?;
        // Known or not, the e-mail takes one of its guesses before any password check, so
        // the answers (and their timing) never tell which addresses are registered.
        if let Some(retry_after) = self.throttle.before_login(&email).await {
            self.metrics.logins.with_label_values(&["throttled"]).inc();
            let seconds = retry_after.as_millis().div_ceil(1000) as u64;
            return Err(Problem::too_many_requests(
                format!("too many failed logins for this account; retry in {} s", seconds.max(1)),
                seconds,
            ));
        }
        // Always run bcrypt, against a dummy hash when the e-mail is unknown, so both
        // failures take the same time and answer the same 401.
        let verified = self
            .hasher
            .verify(&body.password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(|e| Problem::internal(&e))?;
        let user = match user {
            Some(user) if verified => user,
            _ => {
                self.metrics.logins.with_label_values(&["failure"]).inc();
                return Err(Problem::bad_credentials());
            }
        };
        self.throttle.succeeded(&email).await;
        let token = self.issuer.issue(&user.id.to_string()).map_err(|e| Problem::internal(&e))?;
        self.metrics.logins.with_label_values(&["success"]).inc();
        Ok(json_response(
            StatusCode::OK,
            &TokenView { access_token: token, token_type: "Bearer", expires_in: self.issuer.ttl().as_secs() },
        ))
    }

    async fn me(&self, request: Request) -> Result<HttpResponse, Problem> {
        let gone = || Problem::unauthorized("the token's user does not exist");
        let id = UserId::parse(request.subject()?.as_str()).ok_or_else(gone)?;
        let user = self.store.find_by_id(id).await?.ok_or_else(gone)?;
        Ok(json_response(StatusCode::OK, &UserView::from(&user)))
    }

    /// The JWK Set: the signing key's public half and the keys still published (empty when
    /// tokens are signed with a shared HS256 secret, which is never published).
    fn jwks(&self) -> HttpResponse {
        let mut response = json_response(StatusCode::OK, self.issuer.jwks());
        response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static(JWKS_CACHE_CONTROL));
        response
    }
}
