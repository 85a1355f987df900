//! The token check of protected routes, and the identity headers a client may never
//! smuggle to a service.

use http::header::AUTHORIZATION;
use pingora::http::RequestHeader;
use todo_common::auth::{bearer_token, Claims, TokenError, TokenVerifier};

/// Client-sent headers that could pass for an identity established by the edge. The
/// services verify the token themselves, but nothing downstream should ever see these.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-user-id",
    "x-user",
    "x-user-email",
    "x-user-sub",
    "x-subject",
    "x-auth-user",
    "x-auth-subject",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-remote-user",
    "remote-user",
];

pub fn authenticate(verifier: &TokenVerifier, req: &RequestHeader) -> Result<Claims, TokenError> {
    let token = bearer_token(req.headers.get(AUTHORIZATION).map(|v| v.as_bytes()))?;
    verifier.verify(token)
}

pub fn strip_identity_headers(req: &mut RequestHeader) {
    for name in IDENTITY_HEADERS {
        req.remove_header(*name);
    }
}
