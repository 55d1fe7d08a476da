//! The upstream TCP stream, acknowledging every segment at once.
//!
//! A server that leaves Nagle's algorithm on (Courier) writes the end of a reply (POP3's
//! final `.`, IMAP's tagged completion) as a small segment that its kernel holds until
//! everything sent before is acknowledged. Linux delays the ACK of a request-reply
//! connection by 40 ms, so every command would cost 40 ms: 12 s for 300 messages. Setting
//! TCP_QUICKACK before each read sends any pending ACK and leaves the delayed-ACK mode (the
//! kernel drops the option again on its own, hence each time). Below TLS, so it holds for
//! implicit TLS and STLS/STARTTLS alike. A setsockopt per read is nothing next to a read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that re-arms TCP_QUICKACK before each read (Linux; elsewhere a plain stream).
#[derive(Debug)]
pub struct QuickAck(TcpStream);

impl QuickAck {
    /// Wraps a connected stream.
    pub fn new(tcp: TcpStream) -> QuickAck {
        QuickAck(tcp)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn rearm(&self) {
        // A failure costs speed, never correctness: ignored.
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn rearm(&self) {}
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.rearm();
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
