//! `--probe`: the container health check. Distroless images have no shell and no HTTP
//! client, so each binary checks itself: one `GET /healthz` on its own `LISTEN_ADDR`.
//! It runs in a fresh short-lived process, before any runtime exists, so plain blocking
//! sockets with timeouts are the simplest correct tool.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{EnvReader, EnvSource, Var};

const TIMEOUT: Duration = Duration::from_secs(2);
/// A status line fits well within this; the rest of the answer is not needed.
const MAX_HEAD_BYTES: usize = 1024;

/// True when the process was started with `--probe`.
pub fn requested() -> bool {
    std::env::args().skip(1).any(|a| a == "--probe")
}

/// Probes the server that `listen` (the binary's `LISTEN_ADDR`, or the edge's plain-HTTP
/// `EDGE_ADMIN_ADDR`) names: exit 0 when its
/// `/healthz` answers 200 within the timeout, 1 otherwise, with one line either way.
pub fn main(binary: &str, listen: &Var, env: &dyn EnvSource) -> ExitCode {
    let addr = EnvReader::new(env).raw(listen).unwrap_or_default();
    match probe(listen.key, &addr) {
        Ok(()) => {
            println!("{binary}: healthy ({addr})");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("{binary}: unhealthy ({addr}): {reason}");
            ExitCode::FAILURE
        }
    }
}

fn probe(var: &str, listen_addr: &str) -> Result<(), String> {
    let target = loopback_for(var, listen_addr)?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT).map_err(|e| format!("connect {target}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nUser-Agent: probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(MAX_HEAD_BYTES);
    stream.take(MAX_HEAD_BYTES as u64).read_to_end(&mut head).map_err(|e| format!("read: {e}"))?;
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(status) => Err(format!("/healthz answered {status}")),
        None => Err("no HTTP answer".to_owned()),
    }
}

/// The address to dial for a listen address: a wildcard bind is reached on loopback.
fn loopback_for(var: &str, listen_addr: &str) -> Result<SocketAddr, String> {
    let mut addr = listen_addr
        .to_socket_addrs()
        .map_err(|e| format!("{var} {listen_addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{var} {listen_addr:?} names no address"))?;
    if addr.ip().is_unspecified() {
        let loopback = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        addr.set_ip(loopback);
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(answer.as_bytes());
        });
        addr
    }

    #[test]
    fn wildcard_binds_are_probed_on_loopback() {
        assert_eq!(loopback_for("LISTEN_ADDR", "0.0.0.0:8081").unwrap(), "127.0.0.1:8081".parse().unwrap());
        assert_eq!(loopback_for("LISTEN_ADDR", "[::]:8081").unwrap(), "[::1]:8081".parse().unwrap());
        assert_eq!(loopback_for("LISTEN_ADDR", "10.1.2.3:80").unwrap(), "10.1.2.3:80".parse().unwrap());
        assert!(loopback_for("LISTEN_ADDR", "nowhere").is_err());
    }

    #[test]
    fn only_a_200_is_healthy() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(probe("LISTEN_ADDR", &ok.to_string()), Ok(()));
        let failing = serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        assert!(probe("LISTEN_ADDR", &failing.to_string()).unwrap_err().contains("503"));
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(probe("LISTEN_ADDR", &closed.to_string()).unwrap_err().contains("connect"));
    }
}
