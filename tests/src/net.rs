//! A database endpoint that fails over: a TCP front that resets its first
//! connections, then forwards every later one to the real server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Listens on `port`; the first `resets` connections are reset, the rest reach `127.0.0.1:<target>`.
pub struct FlakyPort {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
}

impl FlakyPort {
    pub async fn start(target: u16, resets: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if counter.fetch_add(1, Ordering::SeqCst) < resets {
                    // Linger 0: the close is a reset, as when an instance fails over. (Deprecated
                    // because a non-zero linger blocks on drop; zero does not.)
                    #[allow(deprecated)]
                    let _ = client.set_linger(Some(std::time::Duration::ZERO));
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, accepted }
    }

    /// How many connections it has accepted, reset ones included.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
