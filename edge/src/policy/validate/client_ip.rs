//! `[client_ip]`: the proxies whose `X-Forwarded-For` is believed.

use super::Checker;
use crate::policy::raw::RawClientIp;
use crate::policy::ClientIpSpec;

pub(super) fn check_client_ip(checker: &mut Checker<'_>, file: usize, raw: RawClientIp) -> Option<ClientIpSpec> {
    let errors_before = checker.errors.len();
    let mut trusted_proxies = Vec::new();
    for entry in &raw.trusted_proxies {
        match parse_cidr(entry.get_ref()) {
            Some(net) => trusted_proxies.push(net),
            None => checker.error(
                &Checker::at(file, entry),
                "client_ip.trusted_proxies",
                format!("{:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8", entry.get_ref()),
            ),
        }
    }
    (checker.errors.len() == errors_before).then_some(ClientIpSpec { trusted_proxies })
}

/// A CIDR, or a single address (a /32 or /128).
fn parse_cidr(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}
