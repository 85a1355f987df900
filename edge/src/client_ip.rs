//! The client's address behind load balancers (`[client_ip] trusted_proxies`).
//!
//! When the TCP peer is a trusted proxy, the client is the right-most `X-Forwarded-For`
//! entry that is not itself trusted (every entry trusted: the left-most one); a malformed
//! header counts as absent. Otherwise the client is the peer, and whatever
//! `X-Forwarded-For` it sent is never believed nor passed on. That address is what
//! per-address limits count, what the access log records, and where the chain sent
//! upstream ends.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use todo_common::telemetry::push_ip;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Who sent a request, and the `X-Forwarded-For` chain the upstream gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    pub ip: IpAddr,
    /// The incoming chain up to and including `ip`, when trusted proxies vouched for it
    /// (the entries after the client, those proxies, are dropped); empty: just `ip`.
    forwarded_for: Vec<IpAddr>,
}

impl ClientAddress {
    /// The client of a request from `peer` with `headers`, given the trusted proxies.
    pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Self {
        let peer = peer.to_canonical();
        let direct = || Self { ip: peer, forwarded_for: Vec::new() };
        if !is_trusted(peer, trusted) {
            return direct();
        }
        let Some(chain) = parse_chain(headers) else { return direct() };
        let client_at = chain.iter().rposition(|ip| !is_trusted(*ip, trusted)).unwrap_or(0);
        let mut forwarded_for = chain;
        forwarded_for.truncate(client_at + 1);
        Self { ip: forwarded_for[client_at], forwarded_for }
    }

    /// `X-Forwarded-For` for the upstream: the vouched-for chain, ending with the client.
    pub fn forwarded_for(&self) -> Option<HeaderValue> {
        let chain = if self.forwarded_for.is_empty() { std::slice::from_ref(&self.ip) } else { &self.forwarded_for };
        let mut text = Vec::with_capacity(16 * chain.len());
        for (i, ip) in chain.iter().enumerate() {
            if i > 0 {
                text.extend_from_slice(b", ");
            }
            push_ip(&mut text, *ip);
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Every `X-Forwarded-For` entry in order, over all such headers; `None` when there is
/// none or any entry is not an IP address.
fn parse_chain(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut chain = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        for entry in value.to_str().ok()?.split(',') {
            chain.push(entry.trim().parse::<IpAddr>().ok()?.to_canonical());
        }
    }
    (!chain.is_empty()).then_some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn resolve(peer: &str, xff: &[&str], trusted: &[&str]) -> (String, String) {
        let client = ClientAddress::resolve(peer.parse().unwrap(), &headers(xff), &nets(trusted));
        let chain = client.forwarded_for().map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (client.ip.to_string(), chain)
    }

    const LB: &[&str] = &["10.0.0.0/8", "fd00::/8"];

    #[test]
    fn an_untrusted_peer_is_the_client_and_its_header_is_dropped() {
        assert_eq!(resolve("203.0.113.9", &["198.51.100.1"], LB), ("203.0.113.9".into(), "203.0.113.9".into()));
        assert_eq!(resolve("203.0.113.9", &["198.51.100.1"], &[]), ("203.0.113.9".into(), "203.0.113.9".into()));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() {
        let (ip, chain) = resolve("10.0.0.2", &["198.51.100.7, 203.0.113.5, 10.1.2.3"], LB);
        assert_eq!(ip, "203.0.113.5");
        assert_eq!(chain, "198.51.100.7, 203.0.113.5", "the trusted hops after the client are dropped");
    }

    #[test]
    fn several_headers_form_one_chain_and_ipv6_works() {
        let (ip, _) = resolve("fd00::1", &["2001:db8::1", "fd00::9"], LB);
        assert_eq!(ip, "2001:db8::1");
    }

    #[test]
    fn all_entries_trusted_gives_the_left_most() {
        assert_eq!(resolve("10.0.0.2", &["10.9.9.9, 10.1.1.1"], LB).0, "10.9.9.9");
    }

    #[test]
    fn a_malformed_or_missing_header_counts_as_absent() {
        assert_eq!(resolve("10.0.0.2", &["203.0.113.5, not-an-ip"], LB).0, "10.0.0.2");
        assert_eq!(resolve("10.0.0.2", &["203.0.113.5:443"], LB).0, "10.0.0.2");
        assert_eq!(resolve("10.0.0.2", &[""], LB).0, "10.0.0.2");
        assert_eq!(resolve("10.0.0.2", &[], LB), ("10.0.0.2".into(), "10.0.0.2".into()));
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_ipv4_ranges() {
        assert_eq!(resolve("::ffff:10.0.0.2", &["203.0.113.5"], LB).0, "203.0.113.5");
    }
}
