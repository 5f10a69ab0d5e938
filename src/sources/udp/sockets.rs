//! UDP sockets: receive queues and drops per local port, from one inet_diag dump per
//! address family with the memory-info extension (`INET_DIAG_SKMEMINFO`, what `ss -uam`
//! prints as `skmem:(r…,rb…,…,d…)`).
//!
//! A UDP socket drops a datagram when its receive queue (`SK_MEMINFO_RMEM_ALLOC`, bytes
//! with the kernel's per-buffer overhead) would pass its receive buffer (`SK_MEMINFO_RCVBUF`,
//! `SO_RCVBUF`, doubled by the kernel). It counts each drop in `sk_drops`
//! (`SK_MEMINFO_DROPS`); the host counter `Udp: RcvbufErrors` says only *that* some socket
//! dropped.
//!
//! What the kernel does that matters here:
//! - the UDP dump cannot serve both families in one walk: `SOCK_DIAG_BY_FAMILY` has no
//!   handler for `AF_UNSPEC`, and the old one-walk request (`TCPDIAG_GETSOCK`) is TCP only.
//!   The UDP hash is small next to TCP's TIME_WAIT population, so two walks it is;
//! - a socket's drop counter lives and dies with the socket. Drops per port are kept
//!   monotonic across samples here ([`UdpTracker`]): each socket's counter is followed by
//!   its cookie, and only what it adds between samples is added to its port's total. When
//!   a socket closes, the drops it counted after the last sample are lost (at most one
//!   interval's worth); its earlier drops stay in the port's total;
//! - sockets sharing a port (an `SO_REUSEPORT` group, or one per address) are summed per
//!   (local address, port).
//!
//! Cost: most UDP sockets have an empty queue and no drops. Such a socket is only counted,
//! unless its port is watched (a bit per port number: ports that had a queue, drops or
//! were asked for in the sample before, or earlier in this dump); the per-port map holds
//! only the ports worth exporting. So a port's socket and buffer sums include its idle
//! sockets from its second sample on (in its first, those the dump met before its first
//! busy socket are missed). Measured against a minimal client making the same dumps in
//! BENCHMARKS.md.
//!
//! Memory: one entry per watched (local address, port) up to [`MAX_TRACKED_PORTS`], one
//! per socket that has dropped up to [`MAX_TRACKED_DROPPERS`], and an 8 KiB port bitmap;
//! past the caps sockets are counted as untracked.

use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_sock_diag::{AF_INET, AF_INET6};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use crate::sources::kernel::inet_diag::{parse_datagram, DiagMsg};
use crate::sources::kernel::maps::{top_k_cmp, FxMap, PortBits};
use crate::sources::kernel::netlink::DumpSocket;
use crate::sources::kernel::ratio::{ratio, AtZero};
use crate::sources::kernel::SourceError;

/// `IPPROTO_UDP`.
const IPPROTO_UDP: u8 = 17;
pub use crate::sources::kernel::inet_diag::INET_DIAG_SKMEMINFO;
use crate::sources::kernel::inet_diag::{SK_MEMINFO_DROPS, SK_MEMINFO_RCVBUF, SK_MEMINFO_RMEM_ALLOC};

/// (Local address, port) pairs tracked at most.
pub const MAX_TRACKED_PORTS: usize = 20_000;
/// Sockets with drops followed across samples at most.
pub const MAX_TRACKED_DROPPERS: usize = 20_000;
/// A port that dropped and has no socket for this many samples is forgotten (its drop
/// total with it).
const FORGET_AFTER_SAMPLES: u64 = 360;

const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of the per-port view is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpConfig {
    /// Ports exported by drops and, separately, by queue fill (`--udp.top-k`).
    pub top_k: usize,
    /// Ports always exported when they have a socket (`--udp.ports`).
    pub ports: Vec<u16>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig { top_k: 20, ports: Vec::new() }
    }
}

/// One exported (local address, port).
#[derive(Debug, Clone, PartialEq)]
pub struct UdpPort {
    pub local_ip: IpAddr,
    pub port: u16,
    /// Sockets on it in this sample.
    pub sockets: u32,
    /// Datagrams dropped by its sockets since sockwatch first saw them; never decreases.
    pub drops_total: u64,
    /// Drops added in the latest sample.
    pub drops_recent: u64,
    /// Receive queues summed (bytes, kernel overhead included).
    pub queue_bytes: u64,
    /// Receive buffers summed (`SO_RCVBUF` as the kernel doubled it).
    pub buffer_bytes: u64,
}

impl UdpPort {
    /// The fullest socket's queue over its buffer is what drops; this is the port's sum.
    pub fn queue_utilization(&self) -> f64 {
        // No buffer reported (no memory info for it): nothing to hold the queue against.
        ratio(self.queue_bytes as f64, self.buffer_bytes as f64, AtZero::Unlimited).unwrap_or(0.0)
    }
}

/// What one sample of the UDP source found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Udp {
    /// Sockets by family: `[ipv4, ipv6]`.
    pub sockets: [u64; 2],
    /// The busiest ports by recent drops, then by queue fill, then the ones asked for.
    pub ports: Vec<UdpPort>,
    /// Drops counted by every socket, summed the same monotonic way; the host-wide figure.
    pub drops_total: u64,
    /// The fullest socket's receive queue over its receive buffer (not capped).
    pub queue_utilization_max: f64,
    /// Sockets left untracked: busy ones on pairs past [`MAX_TRACKED_PORTS`], dropping ones
    /// past [`MAX_TRACKED_DROPPERS`] (their drops are not counted).
    pub untracked: u64,
    /// The dump was interrupted by table changes (`NLM_F_DUMP_INTR`).
    pub interrupted: bool,
}

/// A local (address, port) as plain words read straight from the message: hashing it is
/// three multiplies, where an `(IpAddr, u16)` went through the byte-slice path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortKey {
    /// The address's 16 bytes as two big-endian words (IPv4: the 4 bytes in `lo`).
    hi: u64,
    lo: u64,
    /// The port, and bit 16 set for IPv6.
    port_family: u32,
}

impl std::hash::Hash for PortKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.lo);
        h.write_u64(self.hi);
        h.write_u32(self.port_family);
    }
}

impl PortKey {
    const V6: u32 = 1 << 16;

    fn of(m: &DiagMsg<'_>) -> PortKey {
        let a = m.src_addr_bytes();
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        let port = u32::from(m.src_port());
        if m.family() == AF_INET6 {
            PortKey { hi: word(&a[..8]), lo: word(&a[8..]), port_family: port | Self::V6 }
        } else {
            PortKey { hi: 0, lo: u64::from(u32::from_be_bytes([a[0], a[1], a[2], a[3]])), port_family: port }
        }
    }
    fn port(&self) -> u16 {
        self.port_family as u16
    }
    fn ip(&self) -> IpAddr {
        if self.port_family & Self::V6 != 0 {
            IpAddr::from((u128::from(self.hi) << 64 | u128::from(self.lo)).to_be_bytes())
        } else {
            IpAddr::from((self.lo as u32).to_be_bytes())
        }
    }
}

/// A port's state across samples.
#[derive(Debug, Clone, Default)]
struct PortState {
    drops_total: u64,
    /// Last sample in which it had a socket.
    seen: u64,
    // This sample's figures.
    sockets: u32,
    drops_recent: u64,
    queue_bytes: u64,
    buffer_bytes: u64,
}

/// The UDP source: its netlink socket, and what it follows across samples.
pub struct UdpTracker {
    nl: DumpSocket,
    state: Follow,
}

/// Sockets and ports followed across samples.
#[derive(Default)]
struct Follow {
    ports: FxMap<PortKey, PortState>,
    /// Sockets that have dropped: cookie → drops at the last sample.
    droppers: FxMap<u64, u64>,
    next_droppers: FxMap<u64, u64>,
    /// Port numbers whose idle sockets are aggregated too (one bit each).
    watched: PortBits,
    drops_total: u64,
    samples: u64,
}

impl Default for UdpTracker {
    fn default() -> Self {
        UdpTracker { nl: DumpSocket::new("sock_diag udp", NETLINK_SOCK_DIAG, RECV_TIMEOUT), state: Follow::default() }
    }
}

/// The per-family dump request: `SOCK_DIAG_BY_FAMILY` with a `struct inet_diag_req_v2`
/// (family, UDP, the SKMEMINFO extension bit, every state, a zero socket id).
#[doc(hidden)]
pub fn request(family: u8, seq: u32) -> Vec<u8> {
    use netlink_packet_sock_diag::inet::ExtensionFlags;
    crate::sources::kernel::inet_diag::inet_diag_request(family, IPPROTO_UDP, ExtensionFlags::SKMEMINFO, seq)
}

/// The `sk_meminfo` values a UDP socket reply carries: (queue, buffer, drops). `None`
/// when the attribute is absent or too short (a kernel before 3.x has no drops field).
pub fn meminfo(m: &DiagMsg<'_>) -> Option<(u32, u32, u32)> {
    Some((m.meminfo(SK_MEMINFO_RMEM_ALLOC)?, m.meminfo(SK_MEMINFO_RCVBUF)?, m.meminfo(SK_MEMINFO_DROPS)?))
}

impl UdpTracker {
    /// One sample: both families dumped, every socket aggregated, the bounded view built.
    /// `inuse` is the kernel's UDP socket count per family (`/proc/net/sockstat`, `[IPv4,
    /// IPv6]`), when known: a family with none is not dumped (a dump costs two syscalls
    /// even when empty).
    pub fn read(&mut self, cfg: &UdpConfig, inuse: [Option<u64>; 2]) -> Result<Udp, SourceError> {
        let (nl, state) = (&mut self.nl, &mut self.state);
        state.begin(cfg);
        let mut out = Udp::default();
        for (family, inuse) in [AF_INET, AF_INET6].into_iter().zip(inuse) {
            if inuse == Some(0) {
                continue;
            }
            let mut interrupted = false;
            let mut visit = |m: &DiagMsg<'_>| state.visit(m, &mut out);
            let result = nl.dump(|seq| request(family, seq), None, &mut |d, seq| {
                parse_datagram(d, seq, &mut interrupted, &mut visit)
            });
            match result {
                Ok(()) => out.interrupted |= interrupted,
                // IPv6 disabled at boot: no AF_INET6 handler, no sockets.
                Err(SourceError::Kernel { errno: libc::ENOENT, .. }) if family == AF_INET6 => {}
                Err(e) => return Err(e),
            }
        }
        state.finish(&mut out, cfg);
        Ok(out)
    }
}

impl Follow {
    fn begin(&mut self, cfg: &UdpConfig) {
        self.samples += 1;
        self.next_droppers.clear();
        for &p in &cfg.ports {
            self.watched.set(p);
        }
    }

    /// Sockets not met in this sample are no longer followed; ports without a socket
    /// for [`FORGET_AFTER_SAMPLES`] are forgotten.
    /// The next sample watches the ports busy in this one.
    fn finish(&mut self, out: &mut Udp, cfg: &UdpConfig) {
        std::mem::swap(&mut self.droppers, &mut self.next_droppers);
        let now = self.samples;
        // A port without a socket now is kept only for its drop total (a counter must not
        // reset), and only for so long.
        self.ports.retain(|_, p| p.seen == now || (p.drops_total > 0 && now - p.seen < FORGET_AFTER_SAMPLES));
        self.watched.clear();
        for (k, p) in &self.ports {
            if p.seen == now && (p.queue_bytes > 0 || p.drops_total > 0) {
                self.watched.set(k.port());
            }
        }
        out.drops_total = self.drops_total;
        out.ports = self.select(cfg);
    }

    /// One socket. A port's figures of this sample start at its first socket (`seen`
    /// marks the sample), so no pass over every port is needed between samples.
    fn visit(&mut self, m: &DiagMsg<'_>, out: &mut Udp) {
        out.sockets[usize::from(m.family() == AF_INET6)] += 1;
        let Some((queue, buffer, drops)) = meminfo(m) else { return };
        if buffer > 0 {
            out.queue_utilization_max = out.queue_utilization_max.max(f64::from(queue) / f64::from(buffer));
        }
        let added = if drops == 0 {
            0
        } else {
            let cookie = m.cookie();
            match self.droppers.get(&cookie).copied() {
                Some(before) => {
                    self.next_droppers.insert(cookie, u64::from(drops));
                    u64::from(drops).saturating_sub(before)
                }
                None if self.next_droppers.len() < MAX_TRACKED_DROPPERS => {
                    self.next_droppers.insert(cookie, u64::from(drops));
                    u64::from(drops)
                }
                // Not followed, so not counted: counted now, it would be counted again at
                // every sample.
                None => {
                    out.untracked += 1;
                    0
                }
            }
        };
        self.drops_total += added;
        let port = m.src_port();
        if queue == 0 && drops == 0 && !self.watched.get(port) {
            return; // an idle socket on a port nobody watches: counted, nothing else
        }
        // Its idle siblings later in this dump are aggregated too.
        self.watched.set(port);
        let key = PortKey::of(m);
        let now = self.samples;
        let p = if self.ports.len() < MAX_TRACKED_PORTS {
            self.ports.entry(key).or_default()
        } else if let Some(p) = self.ports.get_mut(&key) {
            p
        } else {
            out.untracked += 1;
            return;
        };
        if p.seen != now {
            (p.seen, p.sockets, p.drops_recent, p.queue_bytes, p.buffer_bytes) = (now, 0, 0, 0, 0);
        }
        p.sockets += 1;
        p.drops_total += added;
        p.drops_recent += added;
        p.queue_bytes += u64::from(queue);
        p.buffer_bytes += u64::from(buffer);
    }

    fn exported(&self, key: &PortKey, p: &PortState) -> UdpPort {
        let current = p.seen == self.samples;
        UdpPort {
            local_ip: key.ip(),
            port: key.port(),
            sockets: if current { p.sockets } else { 0 },
            drops_total: p.drops_total,
            drops_recent: if current { p.drops_recent } else { 0 },
            queue_bytes: if current { p.queue_bytes } else { 0 },
            buffer_bytes: if current { p.buffer_bytes } else { 0 },
        }
    }

    /// The top-K ports dropping now (then by total drops), the top-K with the fullest
    /// queues (ports with an empty queue are not candidates), and the ports asked for:
    /// each (address, port) once. Only candidates are copied, never every port.
    fn select(&self, cfg: &UdpConfig) -> Vec<UdpPort> {
        let now = self.samples;
        let key = |p: &UdpPort| (p.local_ip, p.port);
        let mut dropping: Vec<UdpPort> =
            self.ports.iter().filter(|(_, p)| p.drops_total > 0).map(|(k, p)| self.exported(k, p)).collect();
        dropping.sort_by_key(|p| (std::cmp::Reverse((p.drops_recent, p.drops_total)), key(p)));
        dropping.truncate(cfg.top_k);
        let mut filling: Vec<UdpPort> = self
            .ports
            .iter()
            .filter(|(_, p)| p.seen == now && p.queue_bytes > 0)
            .map(|(k, p)| self.exported(k, p))
            .collect();
        let fuller = |a: &UdpPort, b: &UdpPort| {
            b.queue_utilization().total_cmp(&a.queue_utilization()).then(key(a).cmp(&key(b)))
        };
        top_k_cmp(&mut filling, cfg.top_k, fuller);
        // `--udp.ports`: each such port's sockets too, but at most top-K local addresses per
        // port (the fullest): a port bound on thousands of addresses must not multiply the
        // series by them.
        let mut wanted: Vec<UdpPort> = self
            .ports
            .iter()
            .filter(|(k, p)| p.seen == now && cfg.ports.contains(&k.port()))
            .map(|(k, p)| self.exported(k, p))
            .collect();
        wanted.sort_by(|a, b| a.port.cmp(&b.port).then(fuller(a, b)));
        let mut per_port = (0u16, 0usize);
        wanted.retain(|p| {
            per_port = if per_port.0 == p.port { (p.port, per_port.1 + 1) } else { (p.port, 1) };
            per_port.1 <= cfg.top_k.max(1)
        });
        let mut keep = dropping;
        let mut kept: std::collections::HashSet<_> = keep.iter().map(key).collect();
        for p in filling.into_iter().chain(wanted) {
            if kept.insert(key(&p)) {
                keep.push(p);
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inet_diag_msg for a UDP socket with an SKMEMINFO attribute, as the kernel sends it.
    fn msg(port: u16, cookie: u64, queue: u32, buffer: u32, drops: u32) -> Vec<u8> {
        let mut m = vec![0u8; 72];
        m[0] = AF_INET;
        m[4..6].copy_from_slice(&port.to_be_bytes());
        m[8..12].copy_from_slice(&[127, 0, 0, 1]);
        m[44..52].copy_from_slice(&cookie.to_ne_bytes());
        // An unrelated attribute first (INET_DIAG_SHUTDOWN, 1 byte, padded), then SKMEMINFO.
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        let mut info = [0u32; 9];
        (info[0], info[1], info[8]) = (queue, buffer, drops);
        m.extend_from_slice(&(4 + 36u16).to_ne_bytes());
        m.extend_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
        for v in info {
            m.extend_from_slice(&v.to_ne_bytes());
        }
        m
    }

    fn sample(t: &mut Follow, msgs: &[Vec<u8>], cfg: &UdpConfig) -> Udp {
        t.begin(cfg);
        let mut out = Udp::default();
        for m in msgs {
            t.visit(&DiagMsg::new(m).unwrap(), &mut out);
        }
        t.finish(&mut out, cfg);
        out
    }

    #[test]
    fn meminfo_is_found_among_other_attributes() {
        let m = msg(53, 1, 2304, 212_992, 17);
        assert_eq!(meminfo(&DiagMsg::new(&m).unwrap()), Some((2304, 212_992, 17)));
        // Without the attribute (a kernel that ignored the extension): no figures, no panic.
        assert_eq!(meminfo(&DiagMsg::new(&m[..72]).unwrap()), None);
        // A truncated attribute.
        assert_eq!(meminfo(&DiagMsg::new(&m[..m.len() - 4]).unwrap()), None);
    }

    #[test]
    fn drops_per_port_never_go_backwards_when_sockets_close() {
        let cfg = UdpConfig::default();
        let mut t = Follow::default();
        // Two sockets of a reuseport group on :53.
        let u = sample(&mut t, &[msg(53, 1, 0, 1000, 10), msg(53, 2, 0, 1000, 5)], &cfg);
        assert_eq!((u.ports[0].drops_total, u.ports[0].sockets, u.drops_total), (15, 2, 15));
        // Socket 1 closes; socket 2 drops 3 more: the total goes on from 15.
        let u = sample(&mut t, &[msg(53, 2, 0, 1000, 8)], &cfg);
        assert_eq!((u.ports[0].drops_total, u.ports[0].drops_recent), (18, 3));
        // A new socket on the port, its own counter from 0 then 4.
        let u = sample(&mut t, &[msg(53, 2, 0, 1000, 8), msg(53, 3, 0, 1000, 4)], &cfg);
        assert_eq!(u.ports[0].drops_total, 22);
        // Every socket gone: the port keeps its total (until forgotten).
        let u = sample(&mut t, &[], &cfg);
        assert_eq!((u.ports[0].drops_total, u.ports[0].sockets, u.drops_total), (22, 0, 22));
    }

    #[test]
    fn selection_by_drops_then_fill_then_asked() {
        let cfg = UdpConfig { top_k: 1, ports: vec![9999] };
        let mut t = Follow::default();
        let u = sample(
            &mut t,
            &[
                msg(100, 1, 0, 1000, 0),
                msg(200, 2, 900, 1000, 0), // fullest
                msg(300, 3, 0, 1000, 7),   // dropping
                msg(400, 4, 0, 1000, 0),
                msg(9999, 5, 0, 1000, 0), // asked for
            ],
            &cfg,
        );
        let ports: Vec<u16> = u.ports.iter().map(|p| p.port).collect();
        assert_eq!(ports, [300, 200, 9999]);
        assert!((u.queue_utilization_max - 0.9).abs() < 1e-9);
    }

    /// An asked-for port bound on many local addresses keeps only its top-K fullest: 6,000
    /// binds made 18,128 series before.
    #[test]
    fn an_asked_port_on_many_addresses_is_bounded() {
        let cfg = UdpConfig { top_k: 3, ports: vec![9999] };
        let mut t = Follow::default();
        let msgs: Vec<Vec<u8>> = (0..500u32)
            .map(|i| {
                let mut m = msg(9999, u64::from(i) + 1, i % 10, 1000, 0);
                m[8..12].copy_from_slice(&(0x7f00_0100 + i).to_be_bytes());
                m
            })
            .collect();
        let _ = sample(&mut t, &msgs, &cfg);
        let u = sample(&mut t, &msgs, &cfg);
        let asked: Vec<&UdpPort> = u.ports.iter().filter(|p| p.port == 9999).collect();
        assert_eq!(asked.len(), 3, "{} series for one asked port", asked.len());
        assert!(asked.iter().all(|p| p.queue_bytes == 9), "the fullest kept");
    }

    #[test]
    fn idle_sockets_count_toward_a_busy_port_from_its_second_sample() {
        let cfg = UdpConfig::default();
        let mut t = Follow::default();
        // An idle socket met before the busy one on the same port: missed in the first sample.
        let dump = [msg(53, 1, 0, 1000, 0), msg(53, 2, 500, 1000, 0), msg(53, 3, 0, 1000, 0), msg(99, 4, 0, 1000, 0)];
        let u = sample(&mut t, &dump, &cfg);
        assert_eq!((u.ports.len(), u.ports[0].sockets, u.ports[0].buffer_bytes), (1, 2, 2000));
        let u = sample(&mut t, &dump, &cfg);
        assert_eq!((u.ports[0].sockets, u.ports[0].buffer_bytes, u.ports[0].queue_bytes), (3, 3000, 500));
        assert_eq!(u.sockets[0], 4, "every socket is counted");
        // Drained and never dropped: the port is no longer exported or watched.
        let idle = [msg(53, 1, 0, 1000, 0), msg(53, 2, 0, 1000, 0)];
        let u = sample(&mut t, &idle, &cfg);
        assert_eq!(u.ports.len(), 0, "{:?}", u.ports);
        assert_eq!(t.ports.len(), 1, "watched this sample: kept in the map, not exported");
    }

    #[test]
    fn droppers_past_the_cap_are_not_counted_again_and_again() {
        let cfg = UdpConfig::default();
        let mut t = Follow::default();
        let many: Vec<Vec<u8>> = (0..MAX_TRACKED_DROPPERS as u64 + 5).map(|c| msg(53, c, 0, 1000, 1)).collect();
        let u = sample(&mut t, &many, &cfg);
        assert_eq!((u.drops_total, u.untracked), (MAX_TRACKED_DROPPERS as u64, 5));
        let u = sample(&mut t, &many, &cfg);
        assert_eq!(u.drops_total, MAX_TRACKED_DROPPERS as u64, "nothing new dropped, nothing added");
    }

    #[test]
    fn port_keys_give_back_their_address_and_port() {
        let mut m = msg(8125, 1, 0, 1000, 0);
        let k = PortKey::of(&DiagMsg::new(&m).unwrap());
        assert_eq!((k.ip(), k.port()), ("127.0.0.1".parse().unwrap(), 8125));
        let v6: std::net::Ipv6Addr = "2001:db8::53".parse().unwrap();
        m[0] = AF_INET6;
        m[8..24].copy_from_slice(&v6.octets());
        let k6 = PortKey::of(&DiagMsg::new(&m).unwrap());
        assert_eq!((k6.ip(), k6.port()), (IpAddr::from(v6), 8125));
        assert_ne!(k, k6);
    }

    #[test]
    fn a_kernel_without_udp_diag_is_named() {
        let e = SourceError::Kernel { what: "sock_diag udp", errno: libc::ENOENT }.to_string();
        assert!(e.contains("module udp_diag not loaded"), "{e}");
    }

    #[test]
    fn request_layout() {
        let r = request(AF_INET6, 3);
        assert_eq!(r.len(), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY);
        assert_eq!((r[16], r[17], r[18]), (AF_INET6, IPPROTO_UDP, 64), "SKMEMINFO (7) is bit 6 of idiag_ext");
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), u32::MAX);
    }
}
