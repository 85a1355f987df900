//! Network helpers for outage tests: a port nothing listens on, and a proxy that can
//! take a backend away from the process under test and give it back.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A port nothing listens on.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A TCP proxy to `upstream` that can be cut (every connection dropped, new ones refused)
/// and restored, to take a backend away from the app and give it back.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    _stop: DropGuard,
}

impl CuttableProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (open, _) = watch::channel(true);
        let stop = CancellationToken::new();
        let (state, token) = (open.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else { continue };
                if !*state.borrow() {
                    let _ = client.shutdown().await;
                    continue;
                }
                let mut open = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = open.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Self { addr, open, _stop: stop.drop_guard() }
    }

    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}
