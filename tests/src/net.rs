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

/// A MariaDB endpoint that answers every statement carrying `IDENTIFIED BY` with
/// the syntax error a server gives, which quotes the statement (and with it the
/// password); every other packet passes to `127.0.0.1:<target>`. What it answered
/// for is kept, to look for the passwords afterwards.
pub struct EchoingMariaDb {
    pub port: u16,
    pub intercepted: Arc<std::sync::Mutex<Vec<String>>>,
}

impl EchoingMariaDb {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let intercepted: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let seen = intercepted.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let _ = echo(client, server, seen).await; // a session that ends ends here
                });
            }
        });
        Self { port, intercepted }
    }
}

/// One session: server to client as it comes; client to server packet by packet.
async fn echo(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let to_client = client_write.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16384];
        while let Ok(n) = server_read.read(&mut buffer).await {
            if n == 0 || to_client.lock().await.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    });
    loop {
        let mut header = [0u8; 4];
        client_read.read_exact(&mut header).await?;
        let length = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let mut payload = vec![0u8; length];
        client_read.read_exact(&mut payload).await?;
        let query = String::from_utf8_lossy(&payload[1..]).into_owned();
        // A COM_QUERY (0x03) that sets a password: answered with a syntax error quoting it.
        if payload.first() == Some(&0x03) && query.contains("IDENTIFIED BY") {
            seen.lock().unwrap().push(query.clone());
            let near: String = query.chars().skip(query.find("IDENTIFIED BY").unwrap_or(0)).take(80).collect();
            let message = format!(
                "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version \
                 for the right syntax to use near '{near}' at line 1"
            );
            let mut error = vec![0xff, 0x28, 0x04, b'#'];
            error.extend_from_slice(b"42000");
            error.extend_from_slice(message.as_bytes());
            let mut packet = (error.len() as u32).to_le_bytes()[..3].to_vec();
            packet.push(header[3].wrapping_add(1));
            packet.extend_from_slice(&error);
            client_write.lock().await.write_all(&packet).await?;
            continue;
        }
        server_write.write_all(&header).await?;
        server_write.write_all(&payload).await?;
    }
}
