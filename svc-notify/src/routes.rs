//! Method + path to a typed endpoint; every notification endpoint needs a token.

use http::Method;
use todo_common::server::{only, segments, Endpoint as EndpointInfo};
use todo_common::Problem;

use crate::domain::NotificationId;

/// `None` is a path id that cannot name a notification; it answers 404 once the token
/// is checked.
pub type PathId = Option<NotificationId>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    List,
    MarkRead(PathId),
}

pub fn parse(method: &Method, path: &str) -> Result<Endpoint, Problem> {
    match segments(path).as_slice() {
        ["notifications"] => only(method, "GET", Endpoint::List),
        ["notifications", id, "read"] => only(method, "POST", Endpoint::MarkRead(NotificationId::parse(id))),
        _ => Err(Problem::not_found(format!("no route for {path}"))),
    }
}

impl EndpointInfo for Endpoint {
    fn route(&self) -> &'static str {
        match self {
            Self::List => "/notifications",
            Self::MarkRead(_) => "/notifications/{id}/read",
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
        let id = NotificationId::new();
        assert_eq!(parse(&Method::GET, "/notifications").unwrap(), Endpoint::List);
        assert_eq!(parse(&Method::POST, &format!("/notifications/{}/read", id)).unwrap(), Endpoint::MarkRead(Some(id)));
        assert_eq!(parse(&Method::POST, "/notifications/abc/read").unwrap(), Endpoint::MarkRead(None));
        assert_eq!(parse(&Method::POST, "/notifications").unwrap_err().status, 405);
        assert_eq!(parse(&Method::GET, "/notifications/abc/read").unwrap_err().status, 405);
        assert_eq!(parse(&Method::GET, "/notifications/abc").unwrap_err().status, 404);
        assert!(Endpoint::List.requires_token() && Endpoint::MarkRead(None).requires_token());
        assert_eq!(Endpoint::MarkRead(None).route(), "/notifications/{id}/read");
    }
}
