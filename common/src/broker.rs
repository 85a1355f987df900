//! RabbitMQ node addresses. `AMQP_URL` may list the nodes of one cluster, separated by
//! commas: a client connects to the first that answers and, after losing a connection,
//! tries the next node first (the one it lost may be gone for good), wrapping around.

use std::fmt;

use crate::config::{EnvReader, Secret, Var};

/// The nodes of one broker cluster, in the operator's order. URLs may carry passwords:
/// `Debug` and [`BrokerUrls::node`] never show them.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrls(Vec<Secret>);

impl BrokerUrls {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let urls: Vec<&str> = raw.split(',').map(str::trim).filter(|url| !url.is_empty()).collect();
        if urls.is_empty() {
            return Err("names no broker".into());
        }
        if let Some(bad) = urls.iter().find(|url| !(url.starts_with("amqp://") || url.starts_with("amqps://"))) {
            return Err(format!("{:?} is not an amqp:// or amqps:// URL", redact(bad)));
        }
        Ok(Self(urls.into_iter().map(Secret::new).collect()))
    }

    /// The list `var` names; a bad one is reported (without its passwords).
    pub fn read(reader: &mut EnvReader<'_>, var: &Var) -> Self {
        let raw = reader.string(var);
        Self::parse(&raw).unwrap_or_else(|why| {
            reader.problem(format!("{} {why}", var.key));
            Self(Vec::new())
        })
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every node once, starting at `first` (modulo the count): the order to try.
    pub fn starting_at(&self, first: usize) -> impl Iterator<Item = (usize, &str)> {
        let count = self.0.len();
        (0..count).map(move |offset| {
            let index = (first + offset) % count.max(1);
            (index, self.0[index].expose())
        })
    }

    /// `host:port` of one node, for logs and `/readyz`.
    pub fn node(&self, index: usize) -> String {
        self.0.get(index).map(|url| redact(url.expose())).unwrap_or_default()
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries((0..self.0.len()).map(|index| self.node(index))).finish()
    }
}

/// The host and port of an AMQP URL, without scheme, credentials or vhost.
fn redact(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_nodes_are_tried_in_turn_starting_anywhere() {
        let urls = BrokerUrls::parse(" amqp://u:p@a:5672/%2f, amqp://u:p@b:5672/%2f,amqps://c:5671 ").unwrap();
        assert_eq!(urls.len(), 3);
        let order: Vec<usize> = urls.starting_at(1).map(|(index, _)| index).collect();
        assert_eq!(order, [1, 2, 0]);
        assert_eq!(urls.starting_at(5).next().unwrap(), (2, "amqps://c:5671"));
        assert_eq!(urls.node(0), "a:5672");
        assert!(!format!("{urls:?}").contains("u:p"), "{urls:?}");
    }

    #[test]
    fn a_list_without_a_broker_or_with_another_scheme_is_refused() {
        assert!(BrokerUrls::parse(" , ").is_err());
        let refused = BrokerUrls::parse("amqp://a:5672,http://user:secret@b:80").unwrap_err();
        assert!(refused.contains("b:80") && !refused.contains("secret"), "{refused}");
    }
}
