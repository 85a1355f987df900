//! Each endpoint: decode, parse into domain types, call the store, shape the answer.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use todo_common::body::{json_response, read_json};
use todo_common::server::{HttpResponse, Request};
use todo_common::Problem;

use crate::domain::{DisplayName, Email, Password, User, UserId};
use crate::UsersApi;

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
            created_at: todo_common::time::rfc3339(&user.created_at),
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

pub async fn register(api: &UsersApi, request: Request) -> Result<HttpResponse, Problem> {
    let body: RegisterBody =
        read_json(&request.headers, request.body, api.max_body_bytes, &api.schemas.register).await?;
    let (email, password, name) = match (
        Email::parse(&body.email),
        Password::parse(body.password),
        body.name.as_deref().map(DisplayName::parse).transpose(),
    ) {
        (Ok(email), Ok(password), Ok(name)) => (email, password, name),
        (email, password, name) => {
            return Err(Problem::validation([email.err(), password.err(), name.err()].into_iter().flatten().collect()))
        }
    };
    let password_hash = api.hasher.hash(&password).await.map_err(|e| Problem::internal(&e))?;
    let user = User::register(email, name, password_hash, todo_common::time::now());
    api.store.insert(&user).await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(json_response(StatusCode::CREATED, &UserView::from(&user)))
}

pub async fn login(api: &UsersApi, request: Request) -> Result<HttpResponse, Problem> {
    let body: LoginBody = read_json(&request.headers, request.body, api.max_body_bytes, &api.schemas.login).await?;
    let email = Email::parse(&body.email).map_err(|e| Problem::validation(vec![e]))?;
    let user = api.store.find_by_email(&email).await?;
    // Known or not, the e-mail takes one of its guesses before any password check, so
    // the answers (and their timing) never tell which addresses are registered.
    if let Some(retry_after) = api.throttle.before_login(&email).await {
        api.metrics.logins.with_label_values(&["throttled"]).inc();
        let seconds = retry_after.as_millis().div_ceil(1000) as u64;
        return Err(Problem::too_many_requests(
            format!("too many failed logins for this account; retry in {} s", seconds.max(1)),
            seconds,
        ));
    }
    // Always run bcrypt, against a dummy hash when the e-mail is unknown, so both
    // failures take the same time and answer the same 401.
    let verified = api
        .hasher
        .verify(&body.password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await
        .map_err(|e| Problem::internal(&e))?;
    let user = match user {
        Some(user) if verified => user,
        _ => {
            api.metrics.logins.with_label_values(&["failure"]).inc();
            return Err(Problem::bad_credentials());
        }
    };
    api.throttle.succeeded(&email).await;
    let token = api.issuer.issue(&user.id.to_string()).map_err(|e| Problem::internal(&e))?;
    api.metrics.logins.with_label_values(&["success"]).inc();
    Ok(json_response(
        StatusCode::OK,
        &TokenView { access_token: token, token_type: "Bearer", expires_in: api.issuer.ttl().as_secs() },
    ))
}

pub async fn me(api: &UsersApi, request: Request) -> Result<HttpResponse, Problem> {
    let gone = || Problem::unauthorized("the token's user does not exist");
    let id = UserId::parse(request.subject()?).ok_or_else(gone)?;
    let user = api.store.find_by_id(id).await?.ok_or_else(gone)?;
    Ok(json_response(StatusCode::OK, &UserView::from(&user)))
}

/// How long clients and caches may keep the key set: verifiers refresh at least this
/// often (5 minutes), so a key published this long before it signs is known everywhere.
const JWKS_CACHE_CONTROL: &str = "public, max-age=300";

/// The JWK Set: the signing key's public half and the keys still published (empty when
/// tokens are signed with a shared HS256 secret, which is never published).
pub fn jwks(api: &UsersApi) -> HttpResponse {
    let mut response = json_response(StatusCode::OK, api.issuer.jwks());
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static(JWKS_CACHE_CONTROL));
    response
}
