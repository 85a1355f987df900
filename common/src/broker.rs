//! RabbitMQ node addresses. `AMQP_URL` may list the nodes of one cluster, separated by
//! commas: a client connects to the first that answers and, after losing a connection,
//! tries the next node first (the one it lost may be gone for good), wrapping around.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    fn starting_at(&self, first: usize) -> impl Iterator<Item = (usize, &str)> {
        let count = self.0.len();
        (0..count).map(move |offset| {
            let index = (first + offset) % count;
            (index, self.0[index].expose())
        })
    }

    /// `host:port` of one node, for logs and `/readyz`.
    pub fn node(&self, index: usize) -> String {
        self.0.get(index).map(|url| redact(url.expose())).unwrap_or_default()
    }
}

/// The nodes a client connects to, and which to try first: the one it was connected to
/// last or, once that was lost, the next in the list.
pub struct BrokerNodes {
    urls: BrokerUrls,
    next: AtomicUsize,
}

impl BrokerNodes {
    pub fn new(urls: BrokerUrls) -> Self {
        Self { urls, next: AtomicUsize::new(0) }
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Tries `connect` on every node once, starting with the one to try next, and
    /// returns the first connection with its node; else every node's failure.
    pub async fn connect<T, E, Fut>(&self, mut connect: impl FnMut(String) -> Fut) -> Result<(usize, T), String>
    where
        E: fmt::Display,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut failures = Vec::new();
        for (node, url) in self.urls.starting_at(self.next.load(Ordering::Relaxed)) {
            match connect(url.to_owned()).await {
                Ok(connection) => {
                    self.next.store(node, Ordering::Relaxed);
                    return Ok((node, connection));
                }
                Err(error) => failures.push(format!("{}: {error:#}", self.urls.node(node))),
            }
        }
        Err(format!("no broker node answers ({})", failures.join("; ")))
    }

    /// The connection to `node` is gone, or the node refuses work: it may be gone for
    /// good, so the next connect starts with the node after it.
    pub fn lost(&self, node: usize) {
        self.next.store(node + 1, Ordering::Relaxed);
    }

    /// `host:port` of one node, for logs.
    pub fn node(&self, index: usize) -> String {
        self.urls.node(index)
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

    #[tokio::test]
    async fn a_client_connects_to_the_first_node_that_answers_and_moves_on_after_a_loss() {
        let nodes = BrokerNodes::new(BrokerUrls::parse("amqp://a:1,amqp://b:2,amqp://c:3").unwrap());
        let up = |dead: &'static [&'static str]| {
            move |url: String| async move {
                if dead.iter().any(|d| url.contains(d)) {
                    Err("refused")
                } else {
                    Ok(url)
                }
            }
        };
        assert_eq!(nodes.connect(up(&["a:1"])).await.unwrap(), (1, "amqp://b:2".to_owned()));
        assert_eq!(nodes.connect(up(&[])).await.unwrap().0, 1, "stays with the node it reached");
        nodes.lost(1);
        assert_eq!(nodes.connect(up(&[])).await.unwrap().0, 2, "after a loss, the next node first");
        nodes.lost(2);
        assert_eq!(nodes.connect(up(&[])).await.unwrap().0, 0, "wrapping around");
        let none = nodes.connect(up(&["a:1", "b:2", "c:3"])).await.unwrap_err();
        assert!(none.contains("a:1: refused") && none.contains("c:3: refused"), "{none}");
    }

    #[test]
    fn a_list_without_a_broker_or_with_another_scheme_is_refused() {
        assert!(BrokerUrls::parse(" , ").is_err());
        let refused = BrokerUrls::parse("amqp://a:5672,http://user:secret@b:80").unwrap_err();
        assert!(refused.contains("b:80") && !refused.contains("secret"), "{refused}");
    }
}
