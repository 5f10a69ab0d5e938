//! TCP sockets by state, from one `NETLINK_SOCK_DIAG` inet_diag dump of both address
//! families.
//!
//! The cost of a dump is the kernel's walk of its socket hash, which IPv4 and IPv6 share
//! (with every network namespace). A `SOCK_DIAG_BY_FAMILY` request names one family, so
//! counting both that way walks the whole hash twice; the IPv6 walk over a host full of
//! IPv4 TIME_WAIT sockets finds nothing and still costs half as much as the IPv4 dump.
//! The original inet_diag request, `TCPDIAG_GETSOCK` with a `struct inet_diag_req`, is
//! answered with every family in one walk (the kernel dumps it as `AF_UNSPEC`), with the
//! same `inet_diag_msg` replies: that is what we send. A kernel that refuses it gets one
//! `SOCK_DIAG_BY_FAMILY` dump per family instead, from then on.
//!
//! The request asks for every state and no extensions: the base `inet_diag_msg` already
//! carries the state, the addresses and, for listeners, the accept queue. Each reply
//! datagram is parsed in place, straight from one receive buffer that lives as long as
//! the [`SockDiag`] and is reused by every dump, so a dump of a million sockets performs
//! no allocation per socket.
//!
//! Bound-only sockets (bound to a port, neither connected nor listening: Linux >= 6.5
//! reports them as CLOSE) are not asked for in that dump: their state bit makes the kernel
//! walk its whole bind table as well, where every TIME_WAIT socket has an entry, about 0.4
//! of the dump's own cost on a host full of TIME_WAIT. They come from a dump of their own
//! every [`BOUND_EVERY`] samples, kept in between (a few bytes each) and counted with every
//! sample as if dumped with it: they hold ports for long (a leak), not for a sample.
//!
//! What the kernel does that matters here:
//! - a dump is not a consistent snapshot: it resumes bucket by bucket between reads, and
//!   sets `NLM_F_DUMP_INTR` when the table changed under it. We count that and mark the
//!   sample inconsistent instead of pretending;
//! - TIME_WAIT sockets report their *substate* as the state (an orphaned FIN_WAIT2 turned
//!   into a timewait socket reports FIN_WAIT2), exactly as `ss` shows them;
//! - request sockets (half-open, `TCP_NEW_SYN_RECV` inside the kernel) are reported as
//!   SYN_RECV, so `new_syn_recv` reads 0 through inet_diag;
//! - an AF_INET6 dump includes dual-stack sockets as `::ffff:a.b.c.d`; they are counted
//!   once, as IPv6 sockets, as the kernel keeps them.

use std::time::Duration;

use netlink_packet_sock_diag::inet::ExtensionFlags;
use netlink_packet_sock_diag::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use crate::sources::kernel::inet_diag::{
    inet_diag_request_states, parse_datagram, DiagMsg, ALL_STATES, BOUND_INACTIVE, DIAG_MSG_LEN, TCPDIAG_GETSOCK,
};
use crate::sources::kernel::netlink::DumpSocket;
use crate::sources::kernel::SourceError;

/// Kernel TCP states (`include/net/tcp_states.h`), indexed by their number. Index 0 is unused.
pub const TCP_STATES: [&str; 13] = [
    "",
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "new_syn_recv",
];
pub const TCP_LISTEN: u8 = 10;
pub const TCP_SYN_RECV: u8 = 3;

/// Bound-only sockets are dumped every this many samples (the first sample included) and
/// kept in between.
pub const BOUND_EVERY: u32 = 6;

/// Bound-only sockets kept between their dumps at most; past it they are dumped with
/// every sample, as before (the memory a sample holds stays bounded).
const BOUND_KEPT_MAX: usize = 65_536;

/// Every state but the bound-only pseudo-state: what the main dump asks for.
const MAIN_STATES: u32 = ALL_STATES & !BOUND_INACTIVE;

/// How long one read may wait for the kernel before the dump is abandoned.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Socket counts by family and state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpStates {
    pub ipv4: [u64; 13],
    pub ipv6: [u64; 13],
}

impl TcpStates {
    pub fn count(&mut self, msg: &DiagMsg<'_>) {
        let by_state = if msg.family() == AF_INET6 { &mut self.ipv6 } else { &mut self.ipv4 };
        if let Some(n) = by_state.get_mut(usize::from(msg.state())) {
            *n += 1;
        }
    }

    pub fn total(&self, state: usize) -> u64 {
        self.ipv4[state] + self.ipv6[state]
    }
}

/// What one sample of the sockets source found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sockets {
    pub states: TcpStates,
    /// At least one dump had `NLM_F_DUMP_INTR` set: the table changed during the walk,
    /// so the counts may miss or double a few sockets.
    pub interrupted: bool,
}

/// A `NETLINK_SOCK_DIAG` socket and its reusable receive buffer.
pub struct SockDiag {
    nl: DumpSocket,
    /// Both families in one walk (`TCPDIAG_GETSOCK`) until the kernel refuses it.
    one_walk: bool,
    /// The bound-only sockets of the latest bound dump, and the reads since it (`None`:
    /// none yet, or too many to keep: dumped with every sample).
    bound: Option<(Vec<[u8; DIAG_MSG_LEN]>, u32)>,
}

impl Default for SockDiag {
    fn default() -> Self {
        Self::new()
    }
}

impl SockDiag {
    pub fn new() -> Self {
        SockDiag { nl: DumpSocket::new("sock_diag", NETLINK_SOCK_DIAG, RECV_TIMEOUT), one_walk: true, bound: None }
    }

    /// A sock_diag socket of another network namespace (see [`DumpSocket::in_namespace`]).
    pub fn in_namespace(ns: std::path::PathBuf, inode: u64) -> Self {
        SockDiag {
            nl: DumpSocket::in_namespace("sock_diag", NETLINK_SOCK_DIAG, RECV_TIMEOUT, ns, inode),
            one_walk: true,
            bound: None,
        }
    }

    /// Dumps one family at a time, as on a kernel that refuses the one-walk request: for
    /// tests that hold the two ways against each other.
    #[doc(hidden)]
    pub fn per_family(mut self) -> Self {
        self.one_walk = false;
        self
    }

    /// Builds the per-family dump request (`SOCK_DIAG_BY_FAMILY`): every TCP state but
    /// the bound-only one, no extensions.
    #[doc(hidden)]
    pub fn request(family: u8, seq: u32) -> Vec<u8> {
        Self::request_states(family, MAIN_STATES, seq)
    }

    /// [`SockDiag::request`] for the states `states` (a bit per state).
    #[doc(hidden)]
    pub fn request_states(family: u8, states: u32, seq: u32) -> Vec<u8> {
        inet_diag_request_states(family, IPPROTO_TCP, ExtensionFlags::empty(), states, seq)
    }

    /// Builds the one-walk dump request: `TCPDIAG_GETSOCK` with a `struct inet_diag_req`
    /// (family AF_UNSPEC, no address lengths, no extensions, a zero socket id, states,
    /// dbs), every TCP state but the bound-only one.
    #[doc(hidden)]
    pub fn request_all_families(seq: u32) -> Vec<u8> {
        Self::request_all_families_states(MAIN_STATES, seq)
    }

    /// [`SockDiag::request_all_families`] for the states `states` (a bit per state).
    #[doc(hidden)]
    pub fn request_all_families_states(states: u32, seq: u32) -> Vec<u8> {
        let mut req = Vec::with_capacity(4 + 48 + 4 + 4);
        req.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        req.extend_from_slice(&[0; 48]);
        req.extend_from_slice(&states.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        crate::sources::kernel::netlink::dump_request(TCPDIAG_GETSOCK, seq, &req)
    }

    /// Sends `request` and feeds every socket of the dump to `visit`. Returns whether the
    /// kernel flagged the dump as interrupted.
    fn dump(
        &mut self,
        request: impl FnOnce(u32) -> Vec<u8>,
        visit: &mut dyn FnMut(&DiagMsg<'_>),
    ) -> Result<bool, SourceError> {
        let mut interrupted = false;
        self.nl.dump(request, None, &mut |data, seq| parse_datagram(data, seq, &mut interrupted, visit))?;
        Ok(interrupted)
    }

    /// The sockets source: every TCP socket of both families, counted by state. `visit`
    /// sees every socket too, so later aggregations ride on the same single walk. The
    /// bound-only sockets come from their own dump every [`BOUND_EVERY`] samples, and from
    /// what it kept in between.
    pub fn read(&mut self, visit: &mut dyn FnMut(&DiagMsg<'_>)) -> Result<Sockets, SourceError> {
        let mut out = self.read_states(MAIN_STATES, visit)?;
        let due = match &mut self.bound {
            Some((_, age)) => {
                *age += 1;
                *age >= BOUND_EVERY
            }
            None => true,
        };
        if due {
            let mut kept = Vec::new();
            let bound = self.read_states(BOUND_INACTIVE, &mut |m| {
                if kept.len() <= BOUND_KEPT_MAX {
                    kept.push(m.fixed());
                }
                visit(m);
            })?;
            for (all, b) in out
                .states
                .ipv4
                .iter_mut()
                .zip(bound.states.ipv4)
                .chain(out.states.ipv6.iter_mut().zip(bound.states.ipv6))
            {
                *all += b;
            }
            out.interrupted |= bound.interrupted;
            self.bound = (kept.len() <= BOUND_KEPT_MAX).then_some((kept, 0));
        } else if let Some((kept, _)) = &self.bound {
            for raw in kept {
                let m = DiagMsg::new(raw).expect("a whole fixed part");
                out.states.count(&m);
                visit(&m);
            }
        }
        Ok(out)
    }

    /// One dump of the sockets in the states `wanted` (a bit per state), both families.
    fn read_states(&mut self, wanted: u32, visit: &mut dyn FnMut(&DiagMsg<'_>)) -> Result<Sockets, SourceError> {
        let mut out = Sockets::default();
        if self.one_walk {
            let mut seen = 0u64;
            let states = &mut out.states;
            let mut count = |m: &DiagMsg<'_>| {
                seen += 1;
                states.count(m);
                visit(m);
            };
            match self.dump(|seq| Self::request_all_families_states(wanted, seq), &mut count) {
                Ok(intr) => {
                    out.interrupted = intr;
                    return Ok(out);
                }
                // Refused outright, before any socket: dump per family from now on.
                Err(e @ SourceError::Kernel { .. }) if seen == 0 => {
                    tracing::info!("{e}: the kernel refuses the one-walk TCPDIAG_GETSOCK dump; dumping each address family separately");
                    self.one_walk = false;
                }
                Err(e) => return Err(e),
            }
        }
        for family in [AF_INET, AF_INET6] {
            let states = &mut out.states;
            let mut count = |m: &DiagMsg<'_>| {
                states.count(m);
                visit(m);
            };
            match self.dump(|seq| Self::request_states(family, wanted, seq), &mut count) {
                Ok(intr) => out.interrupted |= intr,
                // IPv6 disabled at boot (ipv6.disable=1): no AF_INET6 handler, no sockets.
                Err(SourceError::Kernel { errno: libc::ENOENT, .. }) if family == AF_INET6 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Splits a dump recorded by `examples/record_sockdiag.rs` (the request's sequence number,
/// then each datagram prefixed with its length, all u32 little-endian) into its parts.
/// For tests and benchmarks; `None` if the recording is truncated.
#[doc(hidden)]
pub fn recorded_datagrams(raw: &[u8]) -> Option<(u32, Vec<&[u8]>)> {
    let seq = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?);
    let mut out = Vec::new();
    let mut off = 4;
    while off < raw.len() {
        let n = u32::from_le_bytes(raw.get(off..off + 4)?.try_into().ok()?) as usize;
        out.push(raw.get(off + 4..off + 4 + n)?);
        off += 4 + n;
    }
    Some((seq, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::kernel::inet_diag::*;
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST};
    use netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY;
    use std::io;

    /// Reads a fixture recorded by `examples/record_sockdiag.rs`: datagrams, each prefixed
    /// with its length as a little-endian u32, and the dump's sequence number first.
    fn datagrams(name: &str) -> (u32, Vec<Vec<u8>>) {
        let path = crate::sources::fixture(&format!("sockdiag/{name}"));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (seq, parts) = recorded_datagrams(&raw).expect("a complete recording");
        (seq, parts.into_iter().map(<[u8]>::to_vec).collect())
    }

    fn run(name: &str) -> (Result<Progress, SourceError>, TcpStates, bool, usize) {
        let (seq, dgrams) = datagrams(name);
        let mut states = TcpStates::default();
        let mut intr = false;
        let mut last = Ok(Progress::More);
        for d in &dgrams {
            last = parse_datagram(d, seq, &mut intr, &mut |m| states.count(m));
            if !matches!(last, Ok(Progress::More)) {
                break;
            }
        }
        (last, states, intr, dgrams.len())
    }

    #[test]
    fn multipart_ipv4_dump() {
        // Recorded in a namespace holding 3 listeners, 20 established pairs and 700 TIME_WAIT.
        let (res, s, intr, n) = run("ipv4-multipart.bin");
        assert!(matches!(res, Ok(Progress::Done)), "{res:?}");
        assert!(n > 2, "fixture should span several datagrams, has {n}");
        assert_eq!(s.ipv4[TCP_LISTEN as usize], 3);
        assert_eq!(s.ipv4[1], 40);
        assert_eq!(s.ipv4[6], 700);
        assert_eq!(s.ipv6, [0; 13]);
        assert!(!intr);
    }

    #[test]
    fn ipv6_dump_with_mapped_addresses() {
        let (res, s, _, _) = run("ipv6.bin");
        assert!(matches!(res, Ok(Progress::Done)));
        // Listeners on [::1] and a dual-stack [::]; 2 pairs over ::1 and one pair over
        // ::ffff:127.0.0.1, which stays an IPv6 socket on both ends.
        assert_eq!(s.ipv6[TCP_LISTEN as usize], 2);
        assert_eq!(s.ipv6[1], 6);
        assert_eq!(s.ipv4, [0; 13]);
    }

    #[test]
    fn error_in_nlmsg_done() {
        // The kernel's answer to a dump for a protocol with no handler: NLMSG_DONE, -ENOENT.
        let (res, _, _, _) = run("done-enoent.bin");
        let e = res.unwrap_err();
        assert!(e.to_string().contains("kernel answered the dump with an error"), "{e}");
        assert!(matches!(e, SourceError::Kernel { what: "sock_diag", errno: libc::ENOENT }), "{e:?}");
    }

    #[test]
    fn nlmsg_error() {
        // The kernel's answer to a request shorter than inet_diag_req_v2: NLMSG_ERROR, -EINVAL.
        let (res, _, _, _) = run("error-einval.bin");
        let e = res.unwrap_err().to_string();
        assert!(e.contains(&io::Error::from_raw_os_error(libc::EINVAL).to_string()), "{e}");
    }

    #[test]
    fn dump_intr_is_reported() {
        let (seq, dgrams) = datagrams("ipv4-multipart.bin");
        let mut first = dgrams[0].clone();
        // Set NLM_F_DUMP_INTR on the first message's flags (offset 6, u16 native endian).
        let flags = u16::from_ne_bytes([first[6], first[7]]) | NLM_F_DUMP_INTR;
        first[6..8].copy_from_slice(&flags.to_ne_bytes());
        let mut intr = false;
        parse_datagram(&first, seq, &mut intr, &mut |_| {}).unwrap();
        assert!(intr);
    }

    #[test]
    fn stale_sequence_numbers_are_skipped() {
        let (seq, dgrams) = datagrams("ipv4-multipart.bin");
        let mut n = 0;
        let mut intr = false;
        let r = parse_datagram(&dgrams[0], seq.wrapping_add(1), &mut intr, &mut |_| n += 1).unwrap();
        assert_eq!((r, n), (Progress::More, 0));
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let (seq, dgrams) = datagrams("ipv4-multipart.bin");
        let d = &dgrams[0];
        let mut intr = false;
        for cut in [1, 15, 16, 17, 40, 87, d.len() - 1] {
            let r = parse_datagram(&d[..cut], seq, &mut intr, &mut |_| {});
            assert!(r.is_err(), "cut at {cut} accepted: {r:?}");
        }
        // A header claiming a length larger than the datagram.
        let mut bad = d[..64].to_vec();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_datagram(&bad, seq, &mut intr, &mut |_| {}).is_err());
    }

    #[test]
    fn one_walk_request_layout() {
        let r = SockDiag::request_all_families(9);
        // nlmsghdr (16) + struct inet_diag_req (60): the kernel refuses a shorter one.
        assert_eq!(r.len(), 76);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 76);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), TCPDIAG_GETSOCK);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 9);
        assert_eq!(r[16], libc::AF_UNSPEC as u8, "every family in one walk");
        assert!(r[17..68].iter().all(|&b| b == 0), "no address lengths, no extensions, no socket id");
        let states = u32::from_ne_bytes(r[68..72].try_into().unwrap());
        assert_eq!(states, !(1 << 13), "every state but bound-only (its own, rarer dump)");
        assert_eq!(u32::from_ne_bytes(r[72..76].try_into().unwrap()), 0);
    }

    #[test]
    fn one_walk_dump_holds_both_families() {
        // Recorded with `record_sockdiag all` in a namespace holding IPv4: 2 listeners and 5
        // established pairs; IPv6: 1 listener and 3 pairs. Replies carry TCPDIAG_GETSOCK.
        let (_, dgrams) = datagrams("all-families.bin");
        assert_eq!(u16::from_ne_bytes([dgrams[0][4], dgrams[0][5]]), TCPDIAG_GETSOCK);
        let (res, s, intr, _) = run("all-families.bin");
        assert!(matches!(res, Ok(Progress::Done)), "{res:?}");
        assert_eq!((s.ipv4[TCP_LISTEN as usize], s.ipv4[1]), (2, 10));
        assert_eq!((s.ipv6[TCP_LISTEN as usize], s.ipv6[1]), (1, 6));
        assert_eq!(s.ipv4.iter().sum::<u64>() + s.ipv6.iter().sum::<u64>(), 19);
        assert!(!intr);
    }

    #[test]
    fn a_refused_request_is_told_apart_from_a_failed_read() {
        // What falls back to per-family dumps: the kernel's error answer to the request,
        // a typed errno, as `read` sees it; a failed read is another kind of error.
        let (res, _, _, _) = run("error-einval.bin");
        assert!(matches!(res, Err(SourceError::Kernel { errno: libc::EINVAL, .. })), "{res:?}");
        let nl = crate::sources::kernel::netlink::DumpSocket::new("sock_diag", NETLINK_SOCK_DIAG, RECV_TIMEOUT);
        let overrun = nl.recv_error(io::Error::from_raw_os_error(libc::ENOBUFS));
        assert!(matches!(overrun, SourceError::Netlink(_)), "{overrun:?}");
    }

    #[test]
    fn request_layout() {
        let r = SockDiag::request(AF_INET, 7);
        // nlmsghdr (16) + inet_diag_req_v2 (56).
        assert_eq!(r.len(), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!((r[16], r[17], r[18]), (AF_INET, IPPROTO_TCP, 0));
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), !(1 << 13), "not bound-only");
    }
}
