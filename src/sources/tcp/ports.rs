//! Port and queue exhaustion, computed in the same single socket dump as the state counts.
//!
//! - **Ephemeral ports per destination.** `connect()` picks a local port so that the
//!   4-tuple is unique, so the scarce resource is ports per (local IP, remote IP, remote
//!   port). A socket is client-side when its local port lies in `ip_local_port_range` and
//!   is not the port of a listener on that address (or on the wildcard address). Sockets
//!   bound to an ephemeral port without a peer hold it for every destination; Linux ≥ 6.5
//!   reports them in the dump as CLOSE with no peer, and they are added to every
//!   destination's use.
//! - **Per service.** Server-side sockets (local port = a listener's port) by state.
//! - **Accept queues.** For LISTEN sockets the kernel reports the accept queue length in
//!   `idiag_rqueue` and the backlog limit in `idiag_wqueue`. The kernel admits one
//!   connection more than the backlog, so utilisation can read slightly above 1.
//!
//! Memory: one map entry per distinct destination, listener and listening port, up to
//! [`MAX_TRACKED`] destinations and as many listeners, so a sample's memory is bounded
//! whatever the socket count (about 5 MiB at most). The maps are kept across samples and
//! cleared, so a steady host allocates nothing per sample. Past the cap, sockets toward a
//! destination not yet tracked are counted as untracked, and listeners not tracked still
//! classify their port's sockets as server side. The dump comes in the kernel's hash order,
//! pseudo-random per 4-tuple, so a destination with many sockets is met, and tracked
//! exactly, long before the cap fills: only destinations with a handful of sockets go
//! untracked, and those are not the ones running out of ports.
//! Cardinality of the output is bounded by the configured top-K.
//!
//! - **Where each destination is heading.** Its TIME_WAIT sockets are also counted by
//!   remaining lifetime (12 counters, see [`super::projection`]), which gives its current
//!   close rate, the use it settles at, and the seconds until its range is full.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::projection::{self, TwHistogram};
use super::sockets::{TCP_LISTEN, TCP_STATES};
use crate::sources::kernel::inet_diag::DiagMsg;
use crate::sources::kernel::maps::{top_k_by, FxMap, PortBits};
use crate::sources::kernel::ratio::{ratio, AtZero};

const TCP_CLOSE: u8 = 7;
const TCP_TIME_WAIT: u8 = 6;
pub use crate::sources::kernel::TIME_WAIT_SECONDS;

/// The ephemeral port range a dump is classified and projected against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EphemeralRange {
    /// `ip_local_port_range`, inclusive.
    pub low: u16,
    pub high: u16,
    /// Ports connect() can choose from: the range minus reserved ports inside it.
    pub capacity: u32,
    /// How long a TIME_WAIT socket holds its port, seconds.
    pub time_wait_seconds: u32,
}

impl EphemeralRange {
    /// The whole range, no reserved ports, the mainline TIME_WAIT length.
    pub fn new(low: u16, high: u16) -> Self {
        let capacity = (u32::from(high) + 1).saturating_sub(u32::from(low));
        EphemeralRange { low, high, capacity, time_wait_seconds: TIME_WAIT_SECONDS }
    }
}

/// Most destinations (and, separately, listeners) tracked in one sample.
pub const MAX_TRACKED: usize = 50_000;

/// How much of the aggregation is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsConfig {
    /// Destinations exported per address family (`--ports.top-k`).
    pub top_k: usize,
    /// Listening ports and listeners exported (`--listeners.top-k`).
    pub listeners_top_k: usize,
    /// Listening ports always exported (`--listeners.ports`).
    pub listener_ports: Vec<u16>,
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig { top_k: 20, listeners_top_k: 20, listener_ports: Vec::new() }
    }
}

/// A (local IP, remote IP, remote port) with the ephemeral ports it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub local_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    /// Sockets holding a local port toward it, plus the bound-only sockets.
    pub used: u64,
    /// Connections toward it closed first by this host per second (youngest 10 s of
    /// TIME_WAIT births).
    pub close_rate: f64,
    /// Ports it settles at if the current close rate holds (bound-only ports included).
    pub projected: f64,
    /// Seconds until all its ports are held at the current rate and trend; `None` when
    /// not within the projection's horizon.
    pub seconds_to_exhaustion: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ephemeral {
    /// The busiest destinations, at most `top_k` per address family, busiest first.
    pub top: Vec<Destination>,
    /// How many distinct destinations exist (so the top-K cut is visible); a lower bound
    /// when `untracked` > 0.
    pub destinations: u64,
    /// Sockets toward destinations left untracked because [`MAX_TRACKED`] were already
    /// tracked in this sample (0 on all but extraordinary hosts).
    pub untracked: u64,
    /// Ports held by bound-but-unconnected sockets.
    pub bound: u64,
    /// Use of the busiest destination (bound ports included).
    pub busiest: u64,
    /// Highest projected use over every tracked destination, ports.
    pub projected_max: f64,
    /// The destination heading for exhaustion soonest, else the one projected highest;
    /// `None` when nothing is tracked. Always among `top`.
    pub worst: Option<Destination>,
}

impl Ephemeral {
    /// Smallest seconds to exhaustion over every tracked destination: the worst one's.
    pub fn seconds_to_exhaustion(&self) -> Option<f64> {
        self.worst.as_ref()?.seconds_to_exhaustion
    }
}

/// Server-side sockets of one listening port, by kernel state number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStates {
    pub port: u16,
    pub states: [u64; 13],
}

/// One listening address. SO_REUSEPORT groups are summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenQueue {
    pub local_ip: IpAddr,
    pub port: u16,
    pub length: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortUsage {
    /// `None` when the port range is unknown (the limits source failed).
    pub ephemeral: Option<Ephemeral>,
    pub ports: Vec<PortStates>,
    pub listeners: Vec<ListenQueue>,
    /// Distinct listening addresses in all.
    pub listener_count: u64,
    /// Highest accept-queue length / backlog over all listener sockets.
    pub listen_utilization_max: f64,
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address: same port space,
/// and what an operator expects to read.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

type DestKey = (IpAddr, IpAddr, u16);

/// What one destination holds: every socket, and its TIME_WAIT ones by remaining lifetime.
#[derive(Debug, Clone, Copy, Default)]
struct DestStat {
    used: u64,
    tw: TwHistogram,
}

/// Accumulates over one dump. Feed it every socket with [`PortAggregator::visit`];
/// the kernel sends a family's listeners before its other sockets, which the
/// server/client classification relies on.
#[derive(Debug)]
pub struct PortAggregator {
    range: Option<EphemeralRange>,
    /// [`TwHistogram::scale`] of the range's TIME_WAIT length.
    tw_scale: u64,
    /// One bit per port that has a listener: a cheap first test per socket.
    listening: PortBits,
    listeners: FxMap<(IpAddr, u16), (u64, u64)>,
    /// A listener was left untracked: a socket on a listening port is then server side
    /// whatever its address.
    listeners_full: bool,
    dests: FxMap<DestKey, DestStat>,
    untracked: u64,
    /// Entries tracked at most, per map ([`MAX_TRACKED`]; smaller in tests).
    cap: usize,
    port_states: FxMap<u16, [u64; 13]>,
    bound: u64,
    listen_util_max: f64,
}

impl Default for PortAggregator {
    fn default() -> Self {
        PortAggregator {
            range: None,
            tw_scale: TwHistogram::scale(TIME_WAIT_SECONDS * 1000),
            listening: PortBits::default(),
            listeners: FxMap::default(),
            listeners_full: false,
            dests: FxMap::default(),
            untracked: 0,
            cap: MAX_TRACKED,
            port_states: FxMap::default(),
            bound: 0,
            listen_util_max: 0.0,
        }
    }
}

impl PortAggregator {
    /// Starts a new dump. `range` is `ip_local_port_range`, if known.
    pub fn begin(&mut self, range: Option<(u16, u16)>) {
        self.begin_range(range.map(|(low, high)| EphemeralRange::new(low, high)));
    }

    /// Starts a new dump against a range with its capacity and TIME_WAIT length.
    pub fn begin_range(&mut self, range: Option<EphemeralRange>) {
        self.range = range;
        if let Some(r) = range {
            self.tw_scale = TwHistogram::scale(r.time_wait_seconds.saturating_mul(1000));
        }
        self.listening.clear();
        self.listeners.clear();
        self.listeners_full = false;
        self.dests.clear();
        self.untracked = 0;
        self.port_states.clear();
        self.bound = 0;
        self.listen_util_max = 0.0;
    }

    fn has_listener_port(&self, port: u16) -> bool {
        self.listening.get(port)
    }

    /// Whether `(ip, port)` is served by a listener on that address or a wildcard one.
    /// Callers test [`Self::has_listener_port`] first, which rules out most sockets cheaply.
    fn is_server_side(&self, ip: IpAddr, port: u16) -> bool {
        self.listeners_full
            || self.listeners.contains_key(&(ip, port))
            || self.listeners.contains_key(&(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            || self.listeners.contains_key(&(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
    }

    pub fn visit(&mut self, m: &DiagMsg<'_>) {
        let (state, port) = (m.state(), m.src_port());
        if state == TCP_LISTEN {
            self.listening.set(port);
            let (len, limit) = (u64::from(m.rqueue()), u64::from(m.wqueue()));
            let key = (canonical(m.src_addr()), port);
            if self.listeners.len() < self.cap || self.listeners.contains_key(&key) {
                let e = self.listeners.entry(key).or_default();
                e.0 += len;
                e.1 += limit;
            } else {
                self.listeners_full = true;
            }
            // A backlog of 0 is left out here (the kernel still admits one connection).
            if let Some(u) = ratio(len as f64, limit as f64, AtZero::Unlimited) {
                self.listen_util_max = self.listen_util_max.max(u);
            }
            return;
        }
        // Addresses are decoded only for sockets that need them.
        if self.has_listener_port(port) && self.is_server_side(canonical(m.src_addr()), port) {
            if let Some(n) = self.port_states.entry(port).or_insert([0; 13]).get_mut(usize::from(state)) {
                *n += 1;
            }
            return;
        }
        let Some(range) = self.range else { return };
        if !(range.low..=range.high).contains(&port) {
            return; // a client that bound a fixed port: not from the ephemeral pool
        }
        let remote = m.dst_addr();
        if state == TCP_CLOSE && m.dst_port() == 0 && remote.is_unspecified() {
            self.bound += 1;
            return;
        }
        let key = (canonical(m.src_addr()), canonical(remote), m.dst_port());
        let full = self.dests.len() >= self.cap;
        let stat = match self.dests.get_mut(&key) {
            Some(stat) => stat,
            None if full => {
                self.untracked += 1;
                return;
            }
            None => self.dests.entry(key).or_default(),
        };
        stat.used += 1;
        if state == TCP_TIME_WAIT {
            stat.tw.add_scaled(m.expires(), self.tw_scale);
        }
    }

    /// The ephemeral figures of the dump: every tracked destination projected, the
    /// busiest `top_k` per family exported, plus the one heading for exhaustion soonest.
    fn ephemeral(&self, range: EphemeralRange, top_k: usize) -> Ephemeral {
        let tw_len = f64::from(range.time_wait_seconds);
        let destination = |(&(local_ip, remote_ip, remote_port), stat): (&DestKey, &DestStat)| {
            let held = (stat.used - stat.tw.total()) + self.bound;
            let t = projection::project(held, &stat.tw, u64::from(range.capacity), tw_len);
            Destination {
                local_ip,
                remote_ip,
                remote_port,
                used: stat.used + self.bound,
                close_rate: t.close_rate,
                projected: t.projected,
                seconds_to_exhaustion: t.seconds_to_exhaustion,
            }
        };
        let all: Vec<Destination> = self.dests.iter().map(destination).collect();
        // Soonest exhaustion first, then the highest projection, then the busiest now.
        let urgency =
            |d: &Destination| (d.seconds_to_exhaustion.unwrap_or(f64::INFINITY), -d.projected, -(d.used as f64));
        let worst = all.iter().min_by(|a, b| urgency(a).partial_cmp(&urgency(b)).unwrap_or(std::cmp::Ordering::Equal));
        let worst = worst.cloned();
        let mut top = Vec::new();
        for v4 in [true, false] {
            let mut fam: Vec<&Destination> = all.iter().filter(|d| d.local_ip.is_ipv4() == v4).collect();
            top_k_by(&mut fam, top_k, |d| (std::cmp::Reverse(d.used), d.local_ip, d.remote_ip, d.remote_port));
            top.extend(fam.into_iter().cloned());
        }
        let same = |a: &Destination, b: &Destination| {
            (a.local_ip, a.remote_ip, a.remote_port) == (b.local_ip, b.remote_ip, b.remote_port)
        };
        if let Some(w) = &worst {
            if top_k > 0 && !top.iter().any(|d| same(d, w)) {
                top.push(w.clone());
            }
        }
        Ephemeral {
            top,
            destinations: self.dests.len() as u64,
            untracked: self.untracked,
            bound: self.bound,
            busiest: self.dests.values().map(|s| s.used).max().unwrap_or(0) + self.bound,
            projected_max: all.iter().map(|d| d.projected).fold(self.bound as f64, f64::max),
            worst,
        }
    }

    /// Half-open connections (server-side SYN_RECV request sockets) on a listening port,
    /// from this dump: the port's SYN queue.
    pub fn syn_recv(&self, port: u16) -> u64 {
        self.port_states.get(&port).map_or(0, |s| s[usize::from(super::sockets::TCP_SYN_RECV)])
    }

    /// Builds the bounded result.
    pub fn finish(&self, cfg: &PortsConfig) -> PortUsage {
        let ephemeral = self.range.map(|range| self.ephemeral(range, cfg.top_k));

        // Listening ports: the busiest K, plus the ones the operator asked for.
        let mut ports: Vec<PortStates> = self
            .listeners
            .keys()
            .map(|(_, p)| *p)
            .chain(self.port_states.keys().copied()) // listening ports past the tracking cap
            .chain(cfg.listener_ports.iter().copied())
            .collect::<std::collections::BTreeSet<u16>>()
            .into_iter()
            .map(|port| PortStates { port, states: self.port_states.get(&port).copied().unwrap_or([0; 13]) })
            .collect();
        let wanted = |p: u16| cfg.listener_ports.contains(&p);
        ports.sort_by_key(|p| (!wanted(p.port), std::cmp::Reverse(p.states.iter().sum::<u64>()), p.port));
        let keep = cfg.listeners_top_k + cfg.listener_ports.len();
        ports.truncate(keep);

        let mut listeners: Vec<ListenQueue> = self
            .listeners
            .iter()
            .map(|(&(local_ip, port), &(length, limit))| ListenQueue { local_ip, port, length, limit })
            .collect();
        // `--listeners.ports` first, but at most top-K local addresses per such port (the
        // fullest queues): a port bound on thousands of addresses must not multiply the
        // series by them. Then the fullest of the rest.
        listeners.sort_by_key(|l| {
            let group = if wanted(l.port) { Some(l.port) } else { None };
            (group.is_none(), group, std::cmp::Reverse(l.length), l.port, l.local_ip)
        });
        let mut per_port = (0u16, 0usize);
        listeners.retain(|l| {
            if !wanted(l.port) {
                return true;
            }
            per_port = if per_port.0 == l.port { (l.port, per_port.1 + 1) } else { (l.port, 1) };
            per_port.1 <= cfg.listeners_top_k.max(1)
        });
        let extra = listeners.iter().filter(|l| wanted(l.port)).count();
        listeners.truncate(cfg.listeners_top_k + extra);

        PortUsage {
            ephemeral,
            ports,
            listeners,
            listener_count: self.listeners.len() as u64,
            listen_utilization_max: self.listen_util_max,
        }
    }
}

/// State names for the per-port series: every state a server-side socket can be in.
pub const SERVER_STATES: [u8; 9] = [1, 3, 4, 5, 6, 7, 8, 9, 11];

pub fn state_name(state: u8) -> &'static str {
    TCP_STATES[usize::from(state)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::kernel::inet_diag::DIAG_MSG_LEN;

    /// A raw `inet_diag_msg`, as the kernel would send it.
    fn sock(state: u8, local: &str, lport: u16, remote: &str, rport: u16) -> Vec<u8> {
        let (local, remote): (IpAddr, IpAddr) = (local.parse().unwrap(), remote.parse().unwrap());
        let mut m = vec![0u8; DIAG_MSG_LEN];
        m[0] = if local.is_ipv4() { 2 } else { 10 };
        m[1] = state;
        m[4..6].copy_from_slice(&lport.to_be_bytes());
        m[6..8].copy_from_slice(&rport.to_be_bytes());
        for (at, ip) in [(8, local), (24, remote)] {
            match ip {
                IpAddr::V4(v4) => m[at..at + 4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => m[at..at + 16].copy_from_slice(&v6.octets()),
            }
        }
        m
    }

    fn listener(local: &str, port: u16, queue: u32, backlog: u32) -> Vec<u8> {
        let any = if local.contains(':') { "::" } else { "0.0.0.0" };
        let mut m = sock(TCP_LISTEN, local, port, any, 0);
        m[56..60].copy_from_slice(&queue.to_ne_bytes());
        m[60..64].copy_from_slice(&backlog.to_ne_bytes());
        m
    }

    fn agg(range: (u16, u16), socks: &[Vec<u8>]) -> PortAggregator {
        let mut a = PortAggregator::default();
        a.begin(Some(range));
        for s in socks {
            a.visit(&DiagMsg::new(s).unwrap());
        }
        a
    }

    const RANGE: (u16, u16) = (32768, 60999);

    #[test]
    fn client_and_server_side() {
        let a = agg(
            RANGE,
            &[
                listener("0.0.0.0", 8080, 0, 128),
                // Server side of two connections to the listener (local port 8080).
                sock(1, "10.0.0.1", 8080, "10.0.0.9", 40001),
                sock(6, "10.0.0.1", 8080, "10.0.0.9", 40002),
                // Client side: ephemeral local ports toward 10.0.0.9:5774.
                sock(1, "10.0.0.1", 40001, "10.0.0.9", 5774),
                sock(6, "10.0.0.1", 40002, "10.0.0.9", 5774),
                sock(2, "10.0.0.1", 40003, "10.0.0.9", 5774),
                // Same remote, other port: another destination.
                sock(6, "10.0.0.1", 40004, "10.0.0.9", 80),
                // A client bound to a fixed low port: not from the pool.
                sock(1, "10.0.0.1", 1022, "10.0.0.9", 22),
            ],
        );
        let u = a.finish(&PortsConfig::default());
        let e = u.ephemeral.unwrap();
        assert_eq!(e.destinations, 2);
        assert_eq!(e.busiest, 3);
        assert_eq!(e.top[0].remote_port, 5774);
        assert_eq!(e.top[0].used, 3);
        assert_eq!(e.top[1].used, 1);
        let p = u.ports.iter().find(|p| p.port == 8080).unwrap();
        assert_eq!((p.states[1], p.states[6]), (1, 1));
    }

    #[test]
    fn a_listener_port_in_the_ephemeral_range_is_server_side_only_on_its_address() {
        let a = agg(
            RANGE,
            &[
                listener("127.0.0.1", 45000, 0, 128),
                sock(1, "127.0.0.1", 45000, "127.0.0.1", 50000), // server side
                sock(1, "127.0.0.2", 45000, "127.0.0.3", 80),    // client side on another address
            ],
        );
        let u = a.finish(&PortsConfig::default());
        assert_eq!(u.ports[0].states[1], 1);
        let e = u.ephemeral.unwrap();
        assert_eq!(e.destinations, 1);
        assert_eq!(e.top[0].local_ip, "127.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn wildcard_ipv6_listener_covers_mapped_ipv4() {
        let a =
            agg(RANGE, &[listener("::", 45000, 0, 128), sock(1, "::ffff:10.0.0.1", 45000, "::ffff:10.0.0.2", 50000)]);
        let u = a.finish(&PortsConfig::default());
        assert_eq!(u.ports[0].states[1], 1);
        assert_eq!(u.ephemeral.unwrap().destinations, 0);
    }

    #[test]
    fn mapped_addresses_are_ipv4_and_share_the_port_space() {
        let a = agg(
            RANGE,
            &[
                sock(1, "10.0.0.1", 40001, "10.0.0.9", 443),
                sock(1, "::ffff:10.0.0.1", 40002, "::ffff:10.0.0.9", 443),
                sock(1, "2001:db8::1", 40003, "2001:db8::9", 443),
            ],
        );
        let e = a.finish(&PortsConfig::default()).ephemeral.unwrap();
        assert_eq!(e.destinations, 2);
        let v4 = e.top.iter().find(|d| d.local_ip.is_ipv4()).unwrap();
        assert_eq!(
            (v4.local_ip.to_string(), v4.remote_ip.to_string(), v4.used),
            ("10.0.0.1".into(), "10.0.0.9".into(), 2)
        );
        let v6 = e.top.iter().find(|d| d.local_ip.is_ipv6()).unwrap();
        assert_eq!(v6.remote_ip.to_string(), "2001:db8::9");
    }

    #[test]
    fn bound_only_sockets_count_against_every_destination() {
        let a = agg(
            RANGE,
            &[
                sock(1, "10.0.0.1", 40001, "10.0.0.9", 443),
                sock(TCP_CLOSE, "10.0.0.1", 40100, "0.0.0.0", 0),
                sock(TCP_CLOSE, "::", 40101, "::", 0),
                sock(TCP_CLOSE, "10.0.0.1", 1000, "0.0.0.0", 0), // outside the range
            ],
        );
        let e = a.finish(&PortsConfig::default()).ephemeral.unwrap();
        assert_eq!(e.bound, 2);
        assert_eq!(e.top[0].used, 3);
        assert_eq!(e.busiest, 3);
        // Only bound sockets: the busiest destination is any destination.
        let e = agg(RANGE, &[sock(TCP_CLOSE, "10.0.0.1", 40100, "0.0.0.0", 0)]).finish(&PortsConfig::default());
        assert_eq!(e.ephemeral.unwrap().busiest, 1);
    }

    #[test]
    fn ports_outside_a_narrowed_range_are_not_ephemeral() {
        let a = agg(
            (40000, 40499),
            &[sock(1, "10.0.0.1", 40500, "10.0.0.9", 443), sock(1, "10.0.0.1", 40499, "10.0.0.9", 443)],
        );
        assert_eq!(a.finish(&PortsConfig::default()).ephemeral.unwrap().busiest, 1);
    }

    #[test]
    fn unknown_range_means_no_ephemeral_figures() {
        let mut a = PortAggregator::default();
        a.begin(None);
        a.visit(&DiagMsg::new(&sock(1, "10.0.0.1", 40001, "10.0.0.9", 443)).unwrap());
        assert_eq!(a.finish(&PortsConfig::default()).ephemeral, None);
    }

    #[test]
    fn top_k_per_family_and_destination_count() {
        let mut socks = Vec::new();
        for d in 0..50u16 {
            for i in 0..=d {
                socks.push(sock(6, "10.0.0.1", 33000 + d * 100 + i, "10.0.1.1", 1000 + d));
            }
        }
        for d in 0..5u16 {
            socks.push(sock(6, "2001:db8::1", 50000 + d, "2001:db8::2", 2000 + d));
        }
        let cfg = PortsConfig { top_k: 3, ..PortsConfig::default() };
        let e = agg(RANGE, &socks).finish(&cfg).ephemeral.unwrap();
        assert_eq!(e.destinations, 55);
        let v4: Vec<(u16, u64)> =
            e.top.iter().filter(|d| d.local_ip.is_ipv4()).map(|d| (d.remote_port, d.used)).collect();
        assert_eq!(v4, vec![(1049, 50), (1048, 49), (1047, 48)]);
        assert_eq!(e.top.iter().filter(|d| d.local_ip.is_ipv6()).count(), 3);
        assert_eq!(e.busiest, 50);
    }

    #[test]
    fn accept_queues_and_reuseport_groups() {
        let a = agg(
            RANGE,
            &[
                listener("0.0.0.0", 80, 129, 128),
                listener("0.0.0.0", 80, 3, 128), // SO_REUSEPORT sibling
                listener("::1", 9000, 0, 4096),
            ],
        );
        let u = a.finish(&PortsConfig::default());
        assert_eq!(u.listener_count, 2);
        let l80 = u.listeners.iter().find(|l| l.port == 80).unwrap();
        assert_eq!((l80.length, l80.limit), (132, 256));
        assert!((u.listen_utilization_max - 129.0 / 128.0).abs() < 1e-9);
        assert_eq!(u.listeners[0].port, 80, "fullest first");
    }

    #[test]
    fn listener_cut_keeps_requested_ports() {
        let mut socks = Vec::new();
        for p in 1..=30u16 {
            socks.push(listener("0.0.0.0", p, u32::from(p), 128));
            for _ in 0..p {
                socks.push(sock(1, "10.0.0.1", p, "10.0.0.2", 40000));
            }
        }
        let cfg = PortsConfig { top_k: 20, listeners_top_k: 5, listener_ports: vec![2, 9999] };
        let u = agg(RANGE, &socks).finish(&cfg);
        let ports: Vec<u16> = u.ports.iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![2, 9999, 30, 29, 28, 27, 26]);
        assert_eq!(u.ports[1].states, [0; 13], "a requested port without a listener reads zero");
        let lports: Vec<u16> = u.listeners.iter().map(|l| l.port).collect();
        assert_eq!(lports, vec![2, 30, 29, 28, 27, 26]);
        assert_eq!(u.listener_count, 30);
    }

    /// A requested port bound on many local addresses keeps only its top-K fullest: 6,000
    /// binds made 18,128 series before.
    #[test]
    fn a_requested_port_on_many_addresses_is_bounded() {
        let socks: Vec<Vec<u8>> = (0..300u32)
            .map(|i| listener(&std::net::Ipv4Addr::from(0x7f00_0100 + i).to_string(), 2, i % 7, 128))
            .collect();
        let cfg = PortsConfig { top_k: 20, listeners_top_k: 5, listener_ports: vec![2] };
        let u = agg(RANGE, &socks).finish(&cfg);
        assert_eq!(u.listeners.len(), 5, "{:?}", u.listeners.len());
        assert!(u.listeners.iter().all(|l| l.port == 2 && l.length == 6), "the fullest kept");
        assert_eq!(u.listener_count, 300);
    }

    #[test]
    fn tracking_is_capped_and_what_is_left_out_is_counted() {
        let mut a = PortAggregator { cap: 3, ..PortAggregator::default() };
        a.begin(Some(RANGE));
        let mut socks = vec![sock(1, "10.0.0.1", 40000, "10.0.0.9", 1)];
        // Four more destinations after the first: two fit, two do not.
        for d in 2..=5u16 {
            socks.push(sock(1, "10.0.0.1", 40000 + d, "10.0.0.9", d));
        }
        // The tracked busy destination keeps counting exactly after the cap is reached.
        for i in 0..10u16 {
            socks.push(sock(6, "10.0.0.1", 41000 + i, "10.0.0.9", 1));
        }
        socks.push(sock(6, "10.0.0.1", 42000, "10.0.0.9", 5)); // untracked destination again
        for s in &socks {
            a.visit(&DiagMsg::new(s).unwrap());
        }
        let e = a.finish(&PortsConfig::default()).ephemeral.unwrap();
        assert_eq!((e.destinations, e.untracked, e.busiest), (3, 3, 11));
        assert_eq!(e.top[0].remote_port, 1);
        // Listeners past the cap: their ports' sockets are still server side.
        a.begin(Some(RANGE));
        for p in 1..=4u16 {
            a.visit(&DiagMsg::new(&listener("10.0.0.1", p, 0, 128)).unwrap());
        }
        a.visit(&DiagMsg::new(&sock(1, "10.0.0.1", 4, "10.0.0.2", 40000)).unwrap());
        let u = a.finish(&PortsConfig::default());
        assert_eq!(u.listener_count, 3);
        assert_eq!(u.ports.iter().find(|p| p.port == 4).unwrap().states[1], 1);
        assert_eq!(u.ephemeral.unwrap().destinations, 0);
    }

    /// A TIME_WAIT socket with `expires_ms` of its 60 s left.
    fn time_wait(local: &str, lport: u16, remote: &str, rport: u16, expires_ms: u32) -> Vec<u8> {
        let mut m = sock(TCP_TIME_WAIT, local, lport, remote, rport);
        m[2] = 3; // the TIME_WAIT timer
        m[52..56].copy_from_slice(&expires_ms.to_ne_bytes());
        m
    }

    #[test]
    fn time_wait_lifetimes_project_each_destination() {
        let mut socks = Vec::new();
        // 10.0.0.9:5432: 700 pooled connections held open, nothing closing.
        for i in 0..700 {
            socks.push(sock(1, "10.0.0.1", 40000 + i, "10.0.0.9", 5432));
        }
        // 10.0.0.9:80: 300 connections closed in the last 10 s and none before: 30/s
        // toward a range of 1,000 (a step up, not a ramp: no trend).
        for i in 0..300u16 {
            socks.push(time_wait("10.0.0.1", 40700 + i, "10.0.0.9", 80, 59_990 - u32::from(i) * 33));
        }
        // One bound-only port, held toward every destination.
        socks.push(sock(TCP_CLOSE, "10.0.0.2", 40000, "0.0.0.0", 0));
        let cfg = PortsConfig { top_k: 1, ..PortsConfig::default() };
        let e = agg((40000, 40999), &socks).finish(&cfg).ephemeral.unwrap();
        assert_eq!(e.busiest, 701);
        let (pool, web) = (&e.top[0], &e.top[1]);
        assert_eq!((pool.remote_port, pool.used, pool.close_rate, pool.projected), (5432, 701, 0.0, 701.0));
        assert_eq!(pool.seconds_to_exhaustion, None);
        // Heading for exhaustion: exported beside the top-1 although it holds fewer ports.
        assert_eq!((web.remote_port, web.used), (80, 301));
        assert!((web.close_rate - 30.0).abs() < 0.01, "{web:?}");
        assert!(web.projected > 1000.0, "{web:?}");
        let s = web.seconds_to_exhaustion.expect("heading for exhaustion");
        // 699 more ports at 30/s, none freed for 50 s: the 24th second (whole seconds).
        assert_eq!(s, 24.0, "{web:?}");
        assert_eq!(e.seconds_to_exhaustion(), Some(s));
        assert_eq!(e.projected_max, web.projected);
        assert_eq!(e.worst.as_ref(), Some(web));
        assert_eq!(e.top.len(), 2);
    }

    #[test]
    fn recorded_style_dump_with_time_wait_timers() {
        // The fuzz seed fuzz/corpus/netlink/time-wait-ramp: 78 TIME_WAIT sockets toward
        // 10.0.0.9:80, bucket j of the remaining lifetime holding j + 1 (a ramp), one
        // ESTABLISHED, and one TIME_WAIT toward :443 whose timer reads beyond 60 s.
        let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/netlink/time-wait-ramp")).unwrap();
        let seq = u32::from_le_bytes(raw[..4].try_into().unwrap());
        let mut a = PortAggregator::default();
        a.begin(Some((1024, 65535)));
        let mut intr = false;
        let done =
            crate::sources::kernel::inet_diag::parse_datagram(&raw[4..], seq, &mut intr, &mut |m| a.visit(m)).unwrap();
        assert_eq!(done, crate::sources::kernel::inet_diag::Progress::Done);
        let e = a.finish(&PortsConfig::default()).ephemeral.unwrap();
        let web = e.top.iter().find(|d| d.remote_port == 80).unwrap();
        assert_eq!(web.used, 79);
        // Youngest two buckets: 12 + 11 sockets in 10 s.
        assert!((web.close_rate - 2.3).abs() < 1e-9, "{web:?}");
        let other = e.top.iter().find(|d| d.remote_port == 443).unwrap();
        assert!((other.close_rate - 0.1).abs() < 1e-9, "a timer beyond 60 s is the youngest: {other:?}");
    }

    #[test]
    fn use_above_a_range_shrunk_by_reserved_ports_is_exhaustion_now() {
        let range = EphemeralRange { capacity: 2, ..EphemeralRange::new(40000, 40009) };
        let mut a = PortAggregator::default();
        a.begin_range(Some(range));
        for i in 0..3 {
            a.visit(&DiagMsg::new(&sock(1, "10.0.0.1", 40000 + i, "10.0.0.9", 80)).unwrap());
        }
        let e = a.finish(&PortsConfig::default()).ephemeral.unwrap();
        assert_eq!((e.busiest, e.seconds_to_exhaustion(), e.projected_max), (3, Some(0.0), 3.0));
    }

    #[test]
    fn begin_resets_everything() {
        let mut a = agg(RANGE, &[listener("0.0.0.0", 80, 5, 10), sock(1, "10.0.0.1", 40001, "10.0.0.9", 443)]);
        a.begin(Some(RANGE));
        let u = a.finish(&PortsConfig::default());
        assert_eq!((u.listener_count, u.listen_utilization_max), (0, 0.0));
        assert_eq!(u.ephemeral.unwrap().destinations, 0);
        assert!(!a.has_listener_port(80));
    }
}
