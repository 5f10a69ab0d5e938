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
//! - **Entries older than the subscription.** Under `nf_conntrack_events=2` an entry gets
//!   its event extension when it is created, and only if a listener exists then: entries
//!   made before sockwatch subscribed never send DESTROY. The first dump counts them; they
//!   would stay counted until the next resync (10 minutes by default) after they are gone.
//!   [`Predating`] follows them by id (`CTA_ID`) with the expiry their timeout gives, and a
//!   resynchronising dump runs when the soonest of them is due (at most one per interval),
//!   each dump updating the expiries of those still there (a packet may have refreshed
//!   them), until none is left. Only those due within the resync interval are followed: a
//!   longer-lived one is no worse off than any entry between two periodic resyncs, and
//!   following it would hold memory for days (an ESTABLISHED entry's timeout). Under `nf_conntrack_events=1` every entry has the
//!   extension and nothing needs following.

use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::entry::{parse_entry, Entry, NFNL_SUBSYS_CTNETLINK};
use crate::sources::kernel::maps::FxMap;

/// ctnetlink's multicast groups (`enum nfnetlink_groups`).
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
/// The event message types (`enum cntl_msg_types`; GET, 1, is with the other ctnetlink
/// constants in `entry`).
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

/// Entries that predate the event subscription, followed by id until they are gone (see
/// the module doc). Only those due within `horizon` (the resync interval) are followed: a
/// longer-lived one (an ESTABLISHED entry's timeout is days) is left to the periodic resync,
/// so the memory is that of the table's short-lived part, at most [`Predating::CAP`] ids
/// (8 bytes each and the map's overhead).
#[derive(Debug, Default)]
pub struct Predating {
    /// id → when its timeout runs out, seconds after `base`.
    due: FxMap<u32, u32>,
    next: FxMap<u32, u32>,
    base: Option<std::time::Instant>,
    /// Entries due later than this are not followed.
    horizon: Duration,
    /// The next dump is the first after subscribing: every entry in it predates it.
    first: bool,
    /// More entries than [`Predating::CAP`] were there.
    pub overflowed: bool,
}

impl Predating {
    pub const CAP: usize = 500_000;

    /// Follows entries due within `horizon` (the resync interval).
    pub fn new(horizon: Duration) -> Self {
        Predating { horizon, ..Predating::default() }
    }

    fn at(&self, seconds: u32) -> std::time::Instant {
        self.base.unwrap_or_else(std::time::Instant::now) + Duration::from_secs(u64::from(seconds))
    }

    /// Whether entries can lack the event extension here: `nf_conntrack_events` is not 1
    /// (2: only while a listener exists; 0: never). Read below `proc_root`.
    pub fn needed(proc_root: &std::path::Path) -> bool {
        let path = proc_root.join("sys/net/netfilter/nf_conntrack_events");
        crate::sources::kernel::read_u64_sysctl(&path).ok().flatten() != Some(1)
    }

    /// A new subscription: the next dump's entries all predate it.
    pub fn subscribed(&mut self) {
        self.due.clear();
        self.first = true;
    }

    /// One entry of a full dump taken at `now`.
    pub fn visit(&mut self, e: &Entry, now: std::time::Instant) {
        let (Some(id), Some(timeout)) = (e.id, e.timeout) else { return };
        if u64::from(timeout) > self.horizon.as_secs() || !(self.first || self.due.contains_key(&id)) {
            return;
        }
        if self.next.len() >= Self::CAP {
            self.overflowed = true;
            return;
        }
        let base = *self.base.get_or_insert(now);
        // Expired entries go at the next GC or lookup: a second's grace.
        let due = now.saturating_duration_since(base).as_secs() + u64::from(timeout) + 1;
        self.next.insert(id, u32::try_from(due).unwrap_or(u32::MAX));
    }

    /// The dump is over: those not met are gone (the dump counted them out).
    pub fn dumped(&mut self) {
        std::mem::swap(&mut self.due, &mut self.next);
        self.next.clear();
        self.first = false;
    }

    /// The dump failed: what it met so far is not a dump's worth.
    pub fn failed(&mut self) {
        self.next.clear();
    }

    /// When the soonest one runs out, if any is left.
    pub fn next_due(&self) -> Option<std::time::Instant> {
        self.due.values().min().map(|&s| self.at(s))
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod predating_tests {
    use super::*;
    use std::time::Instant;

    fn entry(id: u32, timeout: u32) -> Entry<'static> {
        Entry { id: Some(id), timeout: Some(timeout), ..Entry::default() }
    }

    #[test]
    fn entries_older_than_the_subscription_are_followed_until_gone() {
        let t0 = Instant::now();
        let mut p = Predating::new(Duration::from_secs(600));
        p.subscribed();
        // 4 is due after the resync interval: left to the periodic resync, not followed.
        for (id, timeout) in [(1, 30), (2, 10), (3, 300), (4, 432_000)] {
            p.visit(&entry(id, timeout), t0);
        }
        p.dumped();
        assert_eq!((p.len(), p.next_due()), (3, Some(t0 + Duration::from_secs(11))));
        // The resync at that time: 2 is gone, 1 was refreshed (a packet), 9 is new (it has
        // the extension: not followed).
        let t1 = t0 + Duration::from_secs(11);
        p.visit(&entry(1, 30), t1);
        p.visit(&entry(3, 289), t1);
        p.visit(&entry(9, 30), t1);
        p.dumped();
        assert_eq!((p.len(), p.next_due()), (2, Some(t1 + Duration::from_secs(31))));
        // Both gone at the next: nothing left to follow.
        p.dumped();
        assert!(p.is_empty() && p.next_due().is_none());
    }
}
