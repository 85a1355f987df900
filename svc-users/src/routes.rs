//! Method + path to a typed endpoint, which states whether it needs a token.

use http::Method;
use todo_common::server::{only, segments, Endpoint as EndpointInfo};
use todo_common::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Register,
    Login,
    Me,
    /// The public keys verifiers check tokens with.
    Jwks,
}

pub fn parse(method: &Method, path: &str) -> Result<Endpoint, Problem> {
    match segments(path).as_slice() {
        ["users", "register"] => only(method, "POST", Endpoint::Register),
        ["users", "login"] => only(method, "POST", Endpoint::Login),
        ["users", "me"] => only(method, "GET", Endpoint::Me),
        [".well-known", "jwks.json"] => only(method, "GET", Endpoint::Jwks),
        _ => Err(Problem::not_found(format!("no route for {path}"))),
    }
}

impl EndpointInfo for Endpoint {
    fn route(&self) -> &'static str {
        match self {
            Self::Register => "/users/register",
            Self::Login => "/users/login",
            Self::Me => "/users/me",
            Self::Jwks => "/.well-known/jwks.json",
        }
    }

    fn requires_token(&self) -> bool {
        matches!(self, Self::Me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert_eq!(parse(&Method::POST, "/users/register").unwrap(), Endpoint::Register);
        assert_eq!(parse(&Method::GET, "/users/me").unwrap(), Endpoint::Me);
        assert_eq!(parse(&Method::GET, "/.well-known/jwks.json").unwrap(), Endpoint::Jwks);
        assert_eq!(parse(&Method::GET, "/users/login").unwrap_err().status, 405);
        assert_eq!(parse(&Method::GET, "/users/nope").unwrap_err().status, 404);
        assert!(Endpoint::Me.requires_token() && !Endpoint::Login.requires_token());
    }
}
