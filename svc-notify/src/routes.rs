//! Method + path to a typed endpoint; every notification endpoint needs a token.

use http::Method;
use todo_common::server::{segments, Endpoint as EndpointInfo};
use todo_common::Problem;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    List,
    /// The raw id from the path; the handler parses it (a malformed one is a 404).
    MarkRead {
        id: String,
    },
}

impl Endpoint {
    pub fn parse(method: &Method, path: &str) -> Result<Self, Problem> {
        let (endpoint, allowed) = match segments(path).as_slice() {
            ["notifications"] => (Self::List, "GET"),
            ["notifications", id, "read"] => (Self::MarkRead { id: (*id).to_owned() }, "POST"),
            _ => return Err(Problem::not_found(format!("no route for {path}"))),
        };
        if method.as_str() != allowed {
            return Err(Problem::method_not_allowed(allowed));
        }
        Ok(endpoint)
    }
}

impl EndpointInfo for Endpoint {
    fn route(&self) -> &'static str {
        match self {
            Self::List => "/notifications",
            Self::MarkRead { .. } => "/notifications/{id}/read",
        }
    }

    fn requires_token(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert_eq!(Endpoint::parse(&Method::GET, "/notifications").unwrap(), Endpoint::List);
        assert_eq!(
            Endpoint::parse(&Method::POST, "/notifications/abc/read").unwrap(),
            Endpoint::MarkRead { id: "abc".into() }
        );
        assert_eq!(Endpoint::parse(&Method::POST, "/notifications").unwrap_err().status, 405);
        assert_eq!(Endpoint::parse(&Method::GET, "/notifications/abc/read").unwrap_err().status, 405);
        assert_eq!(Endpoint::parse(&Method::GET, "/notifications/abc").unwrap_err().status, 404);
        assert!(Endpoint::List.requires_token() && Endpoint::MarkRead { id: "x".into() }.requires_token());
        assert_eq!(Endpoint::MarkRead { id: "x".into() }.route(), "/notifications/{id}/read");
    }
}
