//! What the two netlink dumps (inet_diag for sockets, ctnetlink for the conntrack
//! breakdown) share: a connected socket with a receive timeout, one receive buffer
//! reused by every dump, sequence numbers, and reading one datagram of a dump.
//!
//! After any error the socket is dropped and reopened by the next dump, so leftovers of
//! a failed dump never leak into the next one.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr};

use super::SourceError;

/// Receive buffer size. The kernel fills each read of a dump with at most 32 KiB
/// (`SKB_WITH_OVERHEAD(32768)`); twice that leaves room for any kernel that sends more,
/// and a datagram that still does not fit is detected (`MSG_TRUNC`) and reported.
const RECV_BUF: usize = 64 * 1024;

pub struct DumpSocket {
    /// For messages: "sock_diag", "ctnetlink".
    name: &'static str,
    protocol: isize,
    timeout: Duration,
    sock: Option<Socket>,
    buf: Box<[u8]>,
    seq: u32,
}

impl DumpSocket {
    pub fn new(name: &'static str, protocol: isize, timeout: Duration) -> DumpSocket {
        DumpSocket { name, protocol, timeout, sock: None, buf: vec![0u8; RECV_BUF].into_boxed_slice(), seq: 0 }
    }

    fn error(&self, what: impl std::fmt::Display) -> SourceError {
        SourceError::Netlink(format!("{}: {what}", self.name))
    }

    fn open(&self) -> io::Result<Socket> {
        let mut sock = Socket::new(self.protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let tv = libc::timeval { tv_sec: self.timeout.as_secs() as libc::time_t, tv_usec: 0 };
        // SAFETY: valid fd; the option value is a correctly sized timeval.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    /// Sends the request `build` makes for the next sequence number; returns that number.
    pub fn send(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> Result<u32, SourceError> {
        if self.sock.is_none() {
            self.sock = Some(self.open().map_err(|e| self.error(format_args!("cannot open a netlink socket: {e}")))?);
        }
        self.seq = self.seq.wrapping_add(1);
        let request = build(self.seq);
        let sock = self.sock.as_ref().expect("opened above");
        sock.send(&request, 0).map_err(|e| self.error(format_args!("send: {e}")))?;
        Ok(self.seq)
    }

    /// Receives the next datagram of the dump.
    pub fn recv(&mut self) -> Result<&[u8], SourceError> {
        let sock = self.sock.as_ref().ok_or_else(|| self.error("recv before send"))?;
        let mut window: &mut [u8] = &mut self.buf[..];
        let n = sock.recv(&mut window, libc::MSG_TRUNC).map_err(|e| self.recv_error(e))?;
        if n > self.buf.len() {
            return Err(
                self.error(format_args!("datagram of {n} bytes truncated to the {}-byte buffer", self.buf.len()))
            );
        }
        if n == 0 {
            return Err(self.error("socket closed before the end of the dump"));
        }
        Ok(&self.buf[..n])
    }

    /// Names what a failed read of the dump means for an operator.
    pub(super) fn recv_error(&self, e: io::Error) -> SourceError {
        match e.raw_os_error() {
            Some(libc::ENOBUFS) => self.error("receive buffer overrun (ENOBUFS): the kernel dropped part of the dump"),
            Some(libc::EAGAIN) => {
                self.error(format_args!("no answer from the kernel within {}s", self.timeout.as_secs()))
            }
            _ => self.error(format_args!("recv: {e}")),
        }
    }

    /// Drops the socket after a failed dump; the next `send` opens a fresh one.
    pub fn reset(&mut self) {
        self.sock = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_errors_are_named() {
        let nl = DumpSocket::new("sock_diag", netlink_sys::protocols::NETLINK_SOCK_DIAG, Duration::from_secs(10));
        let e = nl.recv_error(io::Error::from_raw_os_error(libc::ENOBUFS)).to_string();
        assert!(e.contains("ENOBUFS") && e.contains("dropped part of the dump"), "{e}");
        let e = nl.recv_error(io::Error::from_raw_os_error(libc::EAGAIN)).to_string();
        assert!(e.contains("no answer from the kernel within 10s"), "{e}");
        let e = nl.recv_error(io::Error::from_raw_os_error(libc::EBADF)).to_string();
        assert!(e.starts_with("netlink sock_diag: recv: "), "{e}");
    }

    #[test]
    fn recv_before_send_is_an_error_not_a_panic() {
        let mut nl = DumpSocket::new("ctnetlink", netlink_sys::protocols::NETLINK_NETFILTER, Duration::from_secs(1));
        assert!(nl.recv().unwrap_err().to_string().contains("recv before send"));
    }
}
