//! Method + path to a typed endpoint.

use http::Method;
use todo_common::server::{only, segments, Endpoint as EndpointInfo};
use todo_common::Problem;

use crate::domain::TaskId;

/// `None` is a path id that cannot name a task; it answers 404 once the token is checked.
pub type PathId = Option<TaskId>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    List,
    Create,
    Get(PathId),
    Update(PathId),
    Delete(PathId),
    Complete(PathId),
    Reopen(PathId),
}

impl EndpointInfo for Endpoint {
    fn route(&self) -> &'static str {
        match self {
            Self::List | Self::Create => "/tasks",
            Self::Get(_) | Self::Update(_) | Self::Delete(_) => "/tasks/{id}",
            Self::Complete(_) => "/tasks/{id}/complete",
            Self::Reopen(_) => "/tasks/{id}/reopen",
        }
    }

    fn requires_token(&self) -> bool {
        true
    }
}

pub fn parse(method: &Method, path: &str) -> Result<Endpoint, Problem> {
    match segments(path).as_slice() {
        ["tasks"] => match *method {
            Method::GET => Ok(Endpoint::List),
            Method::POST => Ok(Endpoint::Create),
            _ => Err(Problem::method_not_allowed("GET, POST")),
        },
        ["tasks", id] => {
            let id = TaskId::parse(id);
            match *method {
                Method::GET => Ok(Endpoint::Get(id)),
                Method::PATCH => Ok(Endpoint::Update(id)),
                Method::DELETE => Ok(Endpoint::Delete(id)),
                _ => Err(Problem::method_not_allowed("GET, PATCH, DELETE")),
            }
        }
        ["tasks", id, "complete"] => only(method, "POST", Endpoint::Complete(TaskId::parse(id))),
        ["tasks", id, "reopen"] => only(method, "POST", Endpoint::Reopen(TaskId::parse(id))),
        _ => Err(Problem::not_found(format!("no such resource: {path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_endpoints() {
        let id = TaskId::new();
        assert_eq!(parse(&Method::GET, "/tasks").unwrap(), Endpoint::List);
        assert_eq!(parse(&Method::POST, "/tasks/").unwrap(), Endpoint::Create);
        assert_eq!(parse(&Method::PATCH, &format!("/tasks/{id}")).unwrap(), Endpoint::Update(Some(id)));
        assert_eq!(parse(&Method::POST, &format!("/tasks/{id}/reopen")).unwrap(), Endpoint::Reopen(Some(id)));
        assert_eq!(parse(&Method::POST, "/tasks/zzz/complete").unwrap(), Endpoint::Complete(None));
        assert_eq!(parse(&Method::PUT, "/tasks").unwrap_err().status, 405);
        assert_eq!(parse(&Method::GET, &format!("/tasks/{id}/complete")).unwrap_err().status, 405);
        assert_eq!(parse(&Method::GET, "/elsewhere").unwrap_err().status, 404);
    }
}
