//! Conntrack events: ctnetlink's NEW and DESTROY multicast groups, which keep the
//! attribution (sources, destinations, NAT mappings) current between full dumps.
//!
//! - Each NEW event counts an entry in, each DESTROY event counts one out
//!   ([`super::attribution::Attributor::add`] with +1 / -1), so a table of millions is
//!   walked only at the resynchronising dump (`--conntrack.resync-interval`).
//! - Events are read in batches, every [`BATCH`], not one wake-up per event: a gateway
//!   making 10,000 connections a second sends 20,000 events a second. The socket's receive
//!   buffer holds what comes in between (`--conntrack.event-buffer`, 16 MiB by default, set
//!   with SO_RCVBUFFORCE: CAP_NET_ADMIN, which the dump needs anyway).
//! - When the buffer overflows, the kernel drops events and says so once (`ENOBUFS` on the
//!   next read): the counts are then wrong, and a full dump resynchronises them. ctnetlink
//!   puts no sequence number on events (it is 0), so ENOBUFS is the only loss signal.
//! - Events that arrive while a resynchronising dump runs are applied after it: an entry
//!   created or destroyed during the dump may be counted once too often or too rarely
//!   until the next dump.
//! - The kernel sends DESTROY events only while someone listens (`nf_conntrack_events` 2,
//!   the default since 5.x), and generating them costs it per connection: see
//!   BENCHMARKS.md for that cost measured.

use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::entry::{parse_entry, Entry};

/// ctnetlink's multicast groups (`enum nfnetlink_groups`).
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NFGENMSG_LEN: usize = 4;

/// How often queued events are read.
pub const BATCH: Duration = Duration::from_millis(100);

/// The default receive buffer: about 100 ms of events at 150,000 a second.
pub const DEFAULT_EVENT_BUFFER: usize = 16 << 20;

/// `--conntrack.events`: how the counts are kept between full dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// The resynchronising full dump runs this often (`--conntrack.resync-interval`).
    pub resync: Duration,
    /// Receive buffer asked for (`--conntrack.event-buffer`).
    pub buffer: usize,
}

/// What following the events has done since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventStats {
    /// NEW and DESTROY events applied.
    pub events_total: u64,
    /// Times the kernel dropped events (ENOBUFS).
    pub overflows_total: u64,
    /// Full dumps after the first: on the resync interval, or after an overflow.
    pub resyncs_total: u64,
    /// The receive buffer the kernel granted.
    pub buffer_bytes: u64,
}

/// Why events could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The kernel dropped events: the counts must be resynchronised.
    #[error("conntrack events lost: the receive buffer overflowed (ENOBUFS)")]
    Overflow,
    #[error("conntrack events: {0}")]
    Io(#[from] std::io::Error),
}

/// A socket subscribed to conntrack's NEW and DESTROY events in this network namespace.
pub struct CtEvents {
    sock: Socket,
    buf: Box<[u8]>,
    /// The receive buffer the kernel granted (it doubles the request for overhead).
    pub granted: usize,
}

impl CtEvents {
    /// Subscribes with a receive buffer of `buffer` bytes (forced past `rmem_max` where
    /// CAP_NET_ADMIN allows). EPERM without CAP_NET_ADMIN.
    pub fn subscribe(buffer: usize) -> std::io::Result<CtEvents> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.add_membership(NFNLGRP_CONNTRACK_NEW)?;
        sock.add_membership(NFNLGRP_CONNTRACK_DESTROY)?;
        sock.set_non_blocking(true)?;
        let fd = sock.as_raw_fd();
        let size = libc::c_int::try_from(buffer).unwrap_or(libc::c_int::MAX);
        let set = |opt| {
            // SAFETY: valid fd, pointer to an int of the given length.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut granted: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd and out-pointers of the given length.
        unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&mut granted as *mut libc::c_int).cast(), &mut len)
        };
        Ok(CtEvents { sock, buf: vec![0u8; 1 << 16].into_boxed_slice(), granted: granted.max(0) as usize })
    }

    /// Reads every event queued now, handing each to `visit` (+1: NEW, -1: DESTROY).
    /// Returns how many were read. [`EventError::Overflow`] when the kernel dropped some
    /// since the last read (what was read before it has been applied).
    pub fn drain(&mut self, visit: &mut dyn FnMut(i64, &Entry)) -> Result<u64, EventError> {
        let mut n = 0;
        loop {
            match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(len) => n += parse_events(&self.buf[..len.min(self.buf.len())], visit),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(n),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(EventError::Overflow),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EventError::Io(e)),
            }
        }
    }

    /// Throws away what is queued (before a resynchronising dump). Overflow is no error
    /// here: the dump that follows replaces every count.
    pub fn discard(&mut self) {
        while let Err(EventError::Overflow) = self.drain(&mut |_, _| {}) {}
    }
}

/// The events of one datagram; returns how many there were. Messages of other kinds are
/// skipped; a malformed one ends the datagram. Events carry sequence number 0.
pub fn parse_events(data: &[u8], visit: &mut dyn FnMut(i64, &Entry)) -> u64 {
    let mut n = 0;
    let _ = crate::sources::kernel::netlink::walk_datagram("ctnetlink events", data, 0, |m| {
        let delta = match (m.kind >> 8, m.kind & 0xff) {
            (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) => 1,
            (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE) => -1,
            _ => return Ok(()),
        };
        if let Some(attrs) = m.payload.get(NFGENMSG_LEN..) {
            visit(delta, &parse_entry(attrs));
            n += 1;
        }
        Ok(())
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, attrs: &[u8]) -> Vec<u8> {
        let len = 16 + NFGENMSG_LEN + attrs.len();
        let mut m = (len as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[2, 0, 0, 0]);
        m.extend_from_slice(attrs);
        m.resize((len + 3) & !3, 0);
        m
    }

    #[test]
    fn new_counts_in_destroy_counts_out_others_are_skipped() {
        let new = message((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW, &[]);
        let destroy = message((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, &[]);
        let other = message((2 << 8) | IPCTNL_MSG_CT_NEW, &[]); // another subsystem
        let data = [new.clone(), destroy, other, new].concat();
        let mut deltas = Vec::new();
        assert_eq!(parse_events(&data, &mut |d, _| deltas.push(d)), 3);
        assert_eq!(deltas, [1, -1, 1]);
    }

    #[test]
    fn truncated_and_garbage_datagrams_end_quietly() {
        let new = message((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW, &[]);
        for junk in [&new[..10], &[0xff; 40][..], &[], &[16, 0, 0, 0, 0, 1]] {
            parse_events(junk, &mut |_, _| {});
        }
        let mut long = new.clone();
        long[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(parse_events(&long, &mut |_, _| {}), 0, "a length past the datagram");
    }
}
