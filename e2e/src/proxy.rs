//! A TCP proxy in front of a backend that a test can cut and restore: the cleanest way
//! to make MongoDB or Redis unreachable for the services without touching the shared
//! server. Cutting closes every live connection and refuses new ones (accepted and
//! reset at once); restoring lets connections through again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the proxy saw, for the scenario's report.
#[derive(Debug, Default)]
struct Counts {
    piped: AtomicU64,
    refused: AtomicU64,
}

pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    cut: watch::Sender<bool>,
    counts: Arc<Counts>,
    accept_loop: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(false);
        let counts = Arc::new(Counts::default());
        let accept_loop = tokio::spawn(accept_loop(listener, upstream.clone(), cut.subscribe(), counts.clone()));
        Self { addr, upstream, cut, counts, accept_loop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every live connection and refuses new ones until [`FaultProxy::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// Cuts now and restores when the guard is dropped, also when a test panics.
    pub fn cut_until_dropped(&self) -> CutGuard<'_> {
        self.cut();
        CutGuard { proxy: self }
    }

    /// "connections piped N, refused M" for the scenario's report.
    pub fn describe(&self) -> String {
        format!(
            "proxy {} -> {}: connections piped {}, refused while cut {}",
            self.addr,
            self.upstream,
            self.counts.piped.load(Ordering::Relaxed),
            self.counts.refused.load(Ordering::Relaxed)
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping the sender also ends every connection task (their receivers close).
        self.accept_loop.abort();
    }
}

/// Restores its proxy on drop.
pub struct CutGuard<'a> {
    proxy: &'a FaultProxy,
}

impl CutGuard<'_> {
    /// Restores now (the drop then does nothing more).
    pub fn restore(self) {}
}

impl Drop for CutGuard<'_> {
    fn drop(&mut self) {
        self.proxy.restore();
    }
}

async fn accept_loop(listener: TcpListener, upstream: String, cut: watch::Receiver<bool>, counts: Arc<Counts>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if *cut.borrow() {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            // A reset, not a polite close: the peer learns at once that nobody is there.
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        counts.piped.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(pipe(client, upstream.clone(), cut.clone()));
    }
}

/// Copies both ways until either side closes or the proxy is cut.
async fn pipe(mut client: TcpStream, upstream: String, mut cut: watch::Receiver<bool>) {
    let connect = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(&upstream));
    let Ok(Ok(mut server)) = connect.await else {
        let _ = client.set_zero_linger();
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        // Err: the proxy is gone; either way the connection ends here.
        _ = cut.wait_for(|cut| *cut) => {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
}
