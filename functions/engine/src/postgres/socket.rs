//! The socket under a connection. Closing it waits for the server to close its
//! side too: the server does so only once the session's process has ended, so
//! until then the session still counts among the connections open to the server
//! (`pg_stat_activity` shows it), and its slot is not given back.
//!
//! The socket is also probed once it has been silent a while: a server gone
//! without a word (a failover, a dropped route) ends the session in about two
//! minutes rather than at the function's timeout.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Probes after 30 s of silence, then every 10 s: Linux gives up after nine unanswered.
const KEEPALIVE: TcpKeepalive = TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10));

pub(super) struct Socket {
    tcp: TcpStream,
    /// Our side is shut: what is left is the server's end of the stream.
    shut: bool,
}

impl Socket {
    pub(super) async fn connect(host: &str, port: u16) -> io::Result<Self> {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE)?;
        Ok(Self { tcp, shut: false })
    }
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    /// Shuts our side, then reads (and drops) what the server still sends until it closes.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            ready!(Pin::new(&mut self.tcp).poll_shutdown(cx))?;
            self.shut = true;
        }
        let mut scratch = [0u8; 512];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_server_is_probed_after_thirty_seconds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = Socket::connect("127.0.0.1", listener.local_addr().unwrap().port()).await.unwrap();
        let tcp = SockRef::from(&socket.tcp);
        assert!(tcp.keepalive().unwrap());
        assert_eq!(tcp.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(tcp.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
    }
}
