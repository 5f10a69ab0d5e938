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

use super::error::SourceError;

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
    /// Open the socket inside this network namespace (its `/proc/PID/ns/net` or pinning
    /// file, and its inode), not the caller's: the socket keeps that namespace for its life.
    namespace: Option<(std::path::PathBuf, u64)>,
}

/// What a dump hands each datagram to: the bytes and the request's sequence number.
pub type OnDatagram<'a> = dyn FnMut(&[u8], u32) -> Result<Progress, SourceError> + 'a;

impl DumpSocket {
    pub fn new(name: &'static str, protocol: isize, timeout: Duration) -> DumpSocket {
        DumpSocket {
            name,
            protocol,
            timeout,
            sock: None,
            buf: vec![0u8; RECV_BUF].into_boxed_slice(),
            seq: 0,
            namespace: None,
        }
    }

    /// A socket of another namespace: no receive buffer until its first dump.
    fn lean(mut self) -> Self {
        self.buf = Box::default();
        self
    }

    /// A socket opened inside another network namespace, from a short-lived thread that
    /// enters it (setns: CAP_SYS_ADMIN) and ends, so no thread of ours ever runs in the
    /// wrong namespace. Reopened the same way after an error.
    pub fn in_namespace(
        name: &'static str,
        protocol: isize,
        timeout: Duration,
        ns: std::path::PathBuf,
        inode: u64,
    ) -> DumpSocket {
        DumpSocket { namespace: Some((ns, inode)), ..DumpSocket::new(name, protocol, timeout).lean() }
    }

    fn error(&self, what: impl std::fmt::Display) -> SourceError {
        SourceError::Netlink(format!("{}: {what}", self.name))
    }

    fn open(&self) -> io::Result<Socket> {
        match &self.namespace {
            None => self.open_here(),
            Some((ns, inode)) => super::namespace::in_namespace(ns, Some(*inode), || self.open_here()),
        }
    }

    fn open_here(&self) -> io::Result<Socket> {
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
        if self.buf.is_empty() {
            self.buf = vec![0u8; RECV_BUF].into_boxed_slice();
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
    pub(crate) fn recv_error(&self, e: io::Error) -> SourceError {
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

    /// One whole dump: sends `request`, hands every datagram to `on_datagram` (which
    /// returns [`Progress::Done`] at the end of the dump) until the end or `deadline`, and
    /// after any error drops the socket so that no stale reply of this dump is read as
    /// part of the next.
    pub fn dump(
        &mut self,
        request: impl FnOnce(u32) -> Vec<u8>,
        deadline: Option<std::time::Instant>,
        on_datagram: &mut OnDatagram<'_>,
    ) -> Result<(), SourceError> {
        let result = (|| {
            let seq = self.send(request)?;
            loop {
                if on_datagram(self.recv()?, seq)? == Progress::Done {
                    return Ok(());
                }
                if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                    return Err(self.error("the dump took too long, abandoned"));
                }
            }
        })();
        if result.is_err() {
            self.reset();
        }
        // A namespace's socket is one of possibly thousands, dumped now and then: its
        // 64 KiB buffer is given back between dumps (the daemon's RSS stays flat).
        if self.namespace.is_some() {
            self.buf = Box::default();
        }
        result
    }
}

/// Where a dump stands after one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    More,
    Done,
}

/// One message of a dump that belongs to it (its sequence number), neither DONE nor ERROR.
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub payload: &'a [u8],
    /// Where it starts in the datagram, for error messages.
    pub offset: usize,
}

/// Walks one datagram of a dump reply, the same way for every netlink dump: header checks,
/// 4-byte alignment, messages of other (abandoned) dumps skipped by sequence number,
/// `NLMSG_DONE` ends the dump (an error code in it is the kernel's answer, as is
/// `NLMSG_ERROR`'s), `NLMSG_OVERRUN` is an error. Every other message of the dump goes to
/// `on_message`. Pure: the fuzz target and the fixture tests call it through the parsers.
#[inline]
pub fn walk_datagram(
    what: &'static str,
    data: &[u8],
    seq: u32,
    mut on_message: impl FnMut(Message<'_>) -> Result<(), SourceError>,
) -> Result<Progress, SourceError> {
    use netlink_packet_core::{NetlinkBuffer, NLMSG_DONE, NLMSG_ERROR, NLMSG_OVERRUN};
    let mut off = 0;
    while off < data.len() {
        let nl = NetlinkBuffer::new_checked(&data[off..])
            .map_err(|e| SourceError::Netlink(format!("{what}: malformed message at offset {off}: {e}")))?;
        let len = nl.length() as usize;
        if nl.sequence_number() == seq {
            let payload = nl.payload();
            // NLMSG_DONE and NLMSG_ERROR both start with an int: 0, or a negative errno.
            // A dump that fails once started ends with NLMSG_DONE carrying the error; a
            // request the kernel rejects outright gets NLMSG_ERROR.
            match nl.message_type() {
                t @ (NLMSG_DONE | NLMSG_ERROR) => {
                    let code = payload.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    let code = match (t, code) {
                        (_, Some(c)) => c,
                        (NLMSG_DONE, None) => 0, // old kernels send an empty DONE
                        (_, None) => return Err(SourceError::Netlink(format!("{what}: truncated NLMSG_ERROR"))),
                    };
                    if code == 0 {
                        return Ok(Progress::Done);
                    }
                    // Any i32 may come, i32::MIN too: saturate rather than overflow.
                    return Err(SourceError::Kernel { what, errno: code.saturating_neg() });
                }
                NLMSG_OVERRUN => return Err(SourceError::Netlink(format!("{what}: kernel reported NLMSG_OVERRUN"))),
                kind => on_message(Message { kind, flags: nl.flags(), payload, offset: off })?,
            }
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        off += (len + 3) & !3;
    }
    Ok(Progress::More)
}

/// A dump request whose payload is built by hand: the netlink header (`NLM_F_REQUEST |
/// NLM_F_DUMP`, the kernel as peer) and `payload`. The typed inet_diag requests are built by
/// netlink-packet-sock-diag ([`crate::sources::kernel::inet_diag::inet_diag_request`]).
pub fn dump_request(message_type: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
    let len = 16 + payload.len();
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&message_type.to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    buf.extend_from_slice(payload);
    buf
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
