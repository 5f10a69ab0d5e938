//! Who fills the conntrack table, and how full each NAT mapping's port space is, counted
//! in the breakdown's ctnetlink dump (or kept current from its events).
//!
//! - **Sources**: entries by original source address (a client, or a pod whose traffic
//!   the node masquerades: the pod's address stays the original source).
//! - **Destinations**: entries by original destination (address, port, protocol).
//! - **NAT mappings**: `nf_nat` picks a source port so that the *reply* tuple is unique,
//!   so the scarce resource is ports per (translated source address, remote address,
//!   remote port, protocol), read from the reply tuple of each source-translated entry:
//!   its destination is the NAT address, its source the remote end. Every such entry holds
//!   one port of that mapping (64,512 by default, 1024–65535; the search for a free one
//!   is bounded and starts failing before the range is full).
//! - **Blocking and recyclable NAT ports.** Since Linux 6.5 (`nf_nat_used_tuple_harder`,
//!   `net/netfilter/nf_nat_core.c`), when the search for a new TCP connection's port is in
//!   its last attempts, `nf_nat` evicts a colliding entry that is source-translated, in TCP
//!   state TIME_WAIT or later (TIME_WAIT, CLOSE, SYN_SENT2), without a fixed timeout, not
//!   dying, and whose sequence numbers the new SYN has passed: such a port is *recyclable*.
//!   Everything else *blocks* its port: ESTABLISHED, SYN_SENT, FIN_WAIT, CLOSE_WAIT,
//!   LAST_ACK, and every UDP (and other protocol) entry; a new UDP flow recycles nothing.
//!   On older kernels every entry blocks. The utilisation (and the alert) hold only the
//!   blocking ports against the range; both counts are exported. A full dump classifies
//!   every entry by its state now; in event mode a NEW entry counts as blocking (it is in
//!   SYN_SENT) until it is destroyed or the next full dump finds it in TIME_WAIT: between
//!   resyncs the split errs toward blocking, so the alert errs early, never late.
//!
//! Memory is bounded whatever the table size: at most [`MAX_TRACKED`] keys per map, as
//! the ephemeral-port aggregation does. The dump comes in the kernel's hash order,
//! pseudo-random per tuple, so a key with many entries is met, and tracked exactly, long
//! before the cap fills; entries of keys met after it are counted as untracked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::entry::Entry;
use crate::sources::kernel::maps::FxMap;
use crate::sources::kernel::ratio::{ratio, AtZero};

/// Counts of a mapping's blocking ports closer together than this give no rate: event mode
/// publishes every interval, and one second's change is mostly noise.
pub const NAT_RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Keys tracked at most, per map.
pub const MAX_TRACKED: usize = 50_000;

/// The NAT port range `nf_nat` uses without a `to :low-high` in the rule: 1024–65535.
pub const DEFAULT_NAT_PORTS: u32 = 64_512;

/// How many of each to export, and the NAT port range held against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributionConfig {
    /// `--conntrack.top-k`.
    pub top_k: usize,
    /// Ports per NAT mapping (`--nat.port-range`).
    pub nat_ports: u32,
    /// Whether this kernel's `nf_nat` recycles ports of TCP entries in TIME_WAIT or later
    /// (Linux 6.5+): then only the other entries block a port.
    pub nat_recycles: bool,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig { top_k: 20, nat_ports: DEFAULT_NAT_PORTS, nat_recycles: nat_recycles_on_this_kernel() }
    }
}

/// Whether a kernel release (`6.18.44-fc-v1147`) has `nf_nat_used_tuple_harder`: 6.5 or
/// later.
pub fn nat_recycles(release: &str) -> bool {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(str::parse::<u32>);
    match (it.next(), it.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (6, 5),
        _ => false,
    }
}

/// [`nat_recycles`] for the running kernel (`/proc/sys/kernel/osrelease`); false when it
/// cannot be read.
pub fn nat_recycles_on_this_kernel() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|r| nat_recycles(r.trim()))
}

/// An entry whose NAT port a new TCP connection may take over (see the module doc): a
/// source-translated TCP entry in TIME_WAIT or a later state, without a fixed timeout and
/// not dying. Whether it is recycled also depends on sequence numbers, which the dump does
/// not carry; the new SYN's are almost always past an old connection's.
pub fn nat_port_recyclable(e: &Entry) -> bool {
    const IPS_FIXED_TIMEOUT: u32 = 1 << 10;
    const IPS_DYING: u32 = 1 << 9;
    e.orig.proto == Some(6)
        && e.tcp_state.is_some_and(|s| s >= super::entry::CT_TCP_TIME_WAIT)
        && e.status & (IPS_FIXED_TIMEOUT | IPS_DYING) == 0
}

/// A destination: (address, port, protocol number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
}

/// A NAT mapping: the translated source address and the remote end, by protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatKey {
    pub nat_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    pub proto: u8,
}

/// What was counted, ready for the exporters: the top-K of each map and their sizes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// Busiest sources, most entries first.
    pub sources: Vec<(IpAddr, u64)>,
    pub destinations: Vec<(DestKey, u64)>,
    /// Busiest NAT mappings by ports used.
    pub nat: Vec<(NatKey, u64)>,
    /// The same mappings' ports whose entries block them (not recyclable: see the module
    /// doc), in the same order.
    pub nat_blocking: Vec<u64>,
    /// The highest blocking ports of any mapping, tracked or exported or not.
    pub nat_blocking_max: u64,
    /// Seconds until each exported mapping (same order as `nat`) has every port of the
    /// range blocked, at the rate its blocking ports rose over the latest window of at least
    /// [`NAT_RATE_WINDOW`] (two dumps, or event-mode counts that far apart); `None`: not
    /// rising, or not known yet. Linear: held connections add ports at the rate they open and
    /// keep them (an ESTABLISHED entry's timeout is days, refreshed by every packet).
    pub nat_seconds_to_exhaustion: Vec<Option<f64>>,
    /// Distinct keys tracked in each map (exact below the cap).
    pub distinct_sources: u64,
    pub distinct_destinations: u64,
    pub nat_mappings: u64,
    /// Entries whose key was not tracked (met after the cap filled).
    pub untracked_sources: u64,
    pub untracked_destinations: u64,
    pub untracked_nat: u64,
    /// Source-translated entries.
    pub nat_entries: u64,
    /// Ports per mapping the NAT figures are held against.
    pub nat_ports: u32,
}

impl Attribution {
    /// The mapping with the most *blocking* ports over the range (not capped: a range set
    /// smaller than the rule's reads above 1). On kernels that recycle no port, every port
    /// used blocks.
    pub fn nat_utilization_max(&self) -> f64 {
        ratio(self.nat_blocking_max as f64, f64::from(self.nat_ports), AtZero::Exhausted).unwrap_or(1.0)
    }
}

/// The counting maps, kept across dumps (cleared, not freed) and adjusted by events.
#[derive(Debug)]
pub struct Attributor {
    sources: FxMap<IpAddr, u64>,
    dests: FxMap<DestKey, u64>,
    nat: FxMap<NatKey, u64>,
    /// Of `nat`'s ports, those recyclable (by the entries' states when counted).
    nat_recyclable: FxMap<NatKey, u64>,
    /// Exported mappings' blocking ports when last taken as a rate's base, and the rate
    /// (ports per second) over the window that ended there.
    nat_trend: FxMap<NatKey, (u64, std::time::Instant, Option<f64>)>,
    /// Entries counted (with a source address), and of those with a destination address:
    /// what is not in the maps is untracked, worked out at [`Attributor::finish`] rather
    /// than counted apart (a separate count drifted: the removal of a key left untracked
    /// while the map was full, arriving once the map had room, was taken for an entry never
    /// counted, so an empty table could report 20,000 untracked).
    entries: u64,
    dst_entries: u64,
    nat_entries: u64,
    cap: usize,
}

impl Default for Attributor {
    fn default() -> Self {
        Attributor {
            sources: FxMap::default(),
            dests: FxMap::default(),
            nat: FxMap::default(),
            nat_recyclable: FxMap::default(),
            nat_trend: FxMap::default(),
            entries: 0,
            dst_entries: 0,
            nat_entries: 0,
            cap: MAX_TRACKED,
        }
    }
}

/// 4 or 16 bytes → an address (IPv4-mapped IPv6 shown as IPv4); `None` otherwise.
fn addr(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

/// Adds `delta` to `key`'s count, tracking a new key only below the cap; a count that
/// reaches 0 frees its key. Returns false when the key was not tracked.
fn adjust<K: Eq + std::hash::Hash>(map: &mut FxMap<K, u64>, key: K, delta: i64, cap: usize) -> bool {
    let room = map.len() < cap;
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut o) => {
            let n = o.get_mut();
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                o.remove();
            }
            true
        }
        std::collections::hash_map::Entry::Vacant(v) if delta > 0 && room => {
            v.insert(delta.unsigned_abs());
            true
        }
        // The removal of a key not tracked: with the map full it was most likely counted as
        // untracked (false: the caller takes it from there); below the cap it is an entry
        // never counted (older than the dump), and changes nothing.
        std::collections::hash_map::Entry::Vacant(_) => delta < 0 && room,
    }
}

impl Attributor {
    /// Forgets every count (before a full dump), keeping the maps' memory.
    pub fn clear(&mut self) {
        self.sources.clear();
        self.dests.clear();
        self.nat.clear();
        self.nat_recyclable.clear();
        self.entries = 0;
        self.dst_entries = 0;
        self.nat_entries = 0;
    }

    /// Counts an entry in (`delta` 1: dumped, or a NEW event) or out (-1: a DESTROY event).
    pub fn add(&mut self, e: &Entry, delta: i64) {
        let count = |n: &mut u64| *n = n.saturating_add_signed(delta);
        let Some(src) = addr(e.orig.src) else { return };
        count(&mut self.entries);
        adjust(&mut self.sources, src, delta, self.cap);
        let proto = e.orig.proto.unwrap_or(0);
        if let Some(dst) = addr(e.orig.dst) {
            count(&mut self.dst_entries);
            adjust(&mut self.dests, DestKey { addr: dst, port: e.orig.dst_port, proto }, delta, self.cap);
        }
        if !e.source_nated() || !has_ports(proto) {
            return;
        }
        let (Some(nat_ip), Some(remote_ip)) = (addr(e.reply.dst), addr(e.reply.src)) else { return };
        count(&mut self.nat_entries);
        let key = NatKey { nat_ip, remote_ip, remote_port: e.reply.src_port, proto };
        let tracked = adjust(&mut self.nat, key, delta, self.cap);
        if tracked && nat_port_recyclable(e) {
            // Out: only if it was counted in (a NEW event counted it blocking).
            if delta > 0 || self.nat_recyclable.get(&key).is_some_and(|&n| n > 0) {
                adjust(&mut self.nat_recyclable, key, delta, usize::MAX);
            }
        }
        if delta < 0 && !self.nat.contains_key(&key) {
            self.nat_recyclable.remove(&key); // the mapping's last entry went
        }
    }

    /// A mapping's blocking ports: all it uses, less the recyclable ones where the kernel
    /// recycles.
    fn blocking(&self, key: &NatKey, used: u64, recycles: bool) -> u64 {
        if recycles {
            used.saturating_sub(self.nat_recyclable.get(key).copied().unwrap_or(0))
        } else {
            used
        }
    }

    /// The top-K of each map, and where each exported NAT mapping is heading.
    pub fn finish(&mut self, cfg: &AttributionConfig) -> Attribution {
        self.finish_at(cfg, std::time::Instant::now())
    }

    /// [`Attributor::finish`] as of `now`.
    pub fn finish_at(&mut self, cfg: &AttributionConfig, now: std::time::Instant) -> Attribution {
        let mut a = self.counted(cfg);
        let range = u64::from(cfg.nat_ports);
        let mut trend = FxMap::default();
        a.nat_seconds_to_exhaustion = a
            .nat
            .iter()
            .zip(&a.nat_blocking)
            .map(|((key, _), &blocking)| {
                let (base, at, mut rate) = self.nat_trend.get(key).copied().unwrap_or((blocking, now, None));
                let dt = now.saturating_duration_since(at);
                let kept = if dt >= NAT_RATE_WINDOW {
                    let sample = (blocking as f64 - base as f64) / dt.as_secs_f64();
                    rate = Some(sample); // the latest window alone: a mapping that stops rising stops warning
                    (blocking, now, rate)
                } else {
                    (base, at, rate)
                };
                trend.insert(*key, kept);
                match rate {
                    _ if blocking >= range => Some(0.0),
                    Some(r) if r > 0.0 => Some((range - blocking) as f64 / r),
                    _ => None,
                }
            })
            .collect();
        self.nat_trend = trend;
        a
    }

    fn counted(&self, cfg: &AttributionConfig) -> Attribution {
        Attribution {
            sources: top(&self.sources, cfg.top_k),
            destinations: top(&self.dests, cfg.top_k),
            nat_blocking: top(&self.nat, cfg.top_k)
                .iter()
                .map(|(k, used)| self.blocking(k, *used, cfg.nat_recycles))
                .collect(),
            nat_blocking_max: self.nat.iter().map(|(k, n)| self.blocking(k, *n, cfg.nat_recycles)).max().unwrap_or(0),
            nat: top(&self.nat, cfg.top_k),
            distinct_sources: self.sources.len() as u64,
            distinct_destinations: self.dests.len() as u64,
            nat_mappings: self.nat.len() as u64,
            untracked_sources: self.entries.saturating_sub(self.sources.values().sum()),
            untracked_destinations: self.dst_entries.saturating_sub(self.dests.values().sum()),
            untracked_nat: self.nat_entries.saturating_sub(self.nat.values().sum()),
            nat_entries: self.nat_entries,
            nat_ports: cfg.nat_ports,
            nat_seconds_to_exhaustion: Vec::new(),
        }
    }
}

/// Protocols whose NAT picks ports: TCP, UDP, DCCP, SCTP, UDP-Lite.
fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

/// The `k` largest counts, largest first; ties in key order, so the output is stable.
use crate::sources::kernel::maps::top_counts as top;

/// The protocol's name for labels.
pub fn protocol_name(proto: u8) -> std::borrow::Cow<'static, str> {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        47 => "gre".into(),
        n => n.to_string().into(),
    }
}

impl PartialOrd for DestKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for DestKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.addr, self.port, self.proto).cmp(&(o.addr, o.port, o.proto))
    }
}
impl PartialOrd for NatKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for NatKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.nat_ip, self.remote_ip, self.remote_port, self.proto).cmp(&(
            o.nat_ip,
            o.remote_ip,
            o.remote_port,
            o.proto,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ctnetlink::dump::Tuple;

    fn tcp<'a>(src: &'a [u8], dst: &'a [u8], dport: u16, nat: Option<(&'a [u8], u16)>) -> Entry<'a> {
        let orig = Tuple { src, dst, proto: Some(6), src_port: 40000, dst_port: dport };
        let reply = match nat {
            Some((nat_ip, nat_port)) => {
                Tuple { src: dst, dst: nat_ip, proto: Some(6), src_port: dport, dst_port: nat_port }
            }
            None => Tuple { src: dst, dst: src, proto: Some(6), src_port: dport, dst_port: 40000 },
        };
        Entry { orig, reply, ..Entry::default() }
    }

    #[test]
    fn a_mappings_blocking_ports_are_projected_to_the_range() {
        let (c, s, nat) = ([10, 0, 0, 1], [192, 0, 2, 9], [203, 0, 113, 1]);
        let cfg = AttributionConfig { top_k: 5, nat_ports: 200, nat_recycles: true };
        let t0 = std::time::Instant::now();
        let mut a = Attributor::default();
        let held = |a: &mut Attributor, from: u16, to: u16| {
            for p in from..to {
                let mut e = tcp(&c, &s, 443, Some((&nat, 1000 + p)));
                e.tcp_state = Some(3);
                a.add(&e, 1);
            }
        };
        held(&mut a, 0, 40);
        assert_eq!(a.finish_at(&cfg, t0).nat_seconds_to_exhaustion, [None]);
        // 5 s later: within the window, no rate yet.
        held(&mut a, 40, 50);
        assert_eq!(a.finish_at(&cfg, t0 + std::time::Duration::from_secs(5)).nat_seconds_to_exhaustion, [None]);
        // 20 s after the first count, 80 held: 2 a second, 120 to go, 60 s.
        held(&mut a, 50, 80);
        let r = a.finish_at(&cfg, t0 + std::time::Duration::from_secs(20));
        assert_eq!(r.nat_seconds_to_exhaustion, [Some(60.0)]);
        // Closing entries (TIME_WAIT) do not count toward it on a kernel that recycles.
        for p in 80..150u16 {
            let mut e = tcp(&c, &s, 443, Some((&nat, 1000 + p)));
            e.tcp_state = Some(7);
            a.add(&e, 1);
        }
        let r = a.finish_at(&cfg, t0 + std::time::Duration::from_secs(40));
        assert_eq!(r.nat_blocking, [80]);
        assert_eq!(r.nat_seconds_to_exhaustion, [None], "blocking ports stopped rising");
    }

    #[test]
    fn which_nat_ports_block_and_which_the_kernel_recycles() {
        assert!(nat_recycles("6.18.44-fc-v1147") && nat_recycles("6.5.0") && nat_recycles("7.0"));
        assert!(!nat_recycles("6.4.16") && !nat_recycles("5.15.0-91-generic") && !nat_recycles("garbage"));
        let (c, s, nat) = ([10, 0, 0, 1], [192, 0, 2, 9], [203, 0, 113, 1]);
        let with = |state: Option<u8>, port: u16| {
            let mut e = tcp(&c, &s, 443, Some((&nat, port)));
            e.tcp_state = state;
            e.status = crate::sources::ctnetlink::entry::IPS_SRC_NAT;
            e
        };
        // 3 established, 4 in TIME_WAIT, 1 in CLOSE, 1 TIME_WAIT with a fixed timeout.
        let mut a = Attributor::default();
        for p in 0..3 {
            a.add(&with(Some(3), 1000 + p), 1);
        }
        for p in 0..4 {
            a.add(&with(Some(7), 2000 + p), 1);
        }
        a.add(&with(Some(8), 3000), 1);
        let mut fixed = with(Some(7), 3001);
        fixed.status |= 1 << 10;
        a.add(&fixed, 1);
        let cfg = AttributionConfig { top_k: 5, nat_ports: 100, nat_recycles: true };
        let r = a.finish(&cfg);
        assert_eq!((r.nat[0].1, r.nat_blocking[0], r.nat_blocking_max), (9, 4, 4));
        assert_eq!(r.nat_utilization_max(), 0.04, "only the blocking ports count");
        // On a kernel before 6.5 every port blocks.
        let old = a.finish(&AttributionConfig { nat_recycles: false, ..cfg });
        assert_eq!((old.nat_blocking[0], old.nat_utilization_max()), (9, 0.09));
        // Events: a TIME_WAIT entry destroyed leaves the split right; a UDP entry blocks.
        a.add(&with(Some(7), 2000), -1);
        let r = a.finish(&cfg);
        assert_eq!((r.nat[0].1, r.nat_blocking[0]), (8, 4));
        let mut udp = with(None, 4000);
        udp.orig.proto = Some(17);
        udp.reply.proto = Some(17);
        assert!(!nat_port_recyclable(&udp));
    }

    #[test]
    fn sources_destinations_and_nat_mappings() {
        let (c1, c2, s, nat) = ([10, 0, 0, 1], [10, 0, 0, 2], [192, 0, 2, 9], [203, 0, 113, 1]);
        let mut a = Attributor::default();
        for p in 0..5 {
            a.add(&tcp(&c1, &s, 443, Some((&nat, 1024 + p))), 1);
        }
        a.add(&tcp(&c2, &s, 443, Some((&nat, 2000))), 1);
        a.add(&tcp(&c2, &s, 80, None), 1);
        let r = a.finish(&AttributionConfig { top_k: 1, nat_ports: 100, nat_recycles: true });
        assert_eq!(r.nat_seconds_to_exhaustion, [None], "no rate from one count");
        let ip = |b: [u8; 4]| IpAddr::from(b);
        assert_eq!(r.sources, [(ip(c1), 5)]);
        assert_eq!(r.destinations, [(DestKey { addr: ip(s), port: 443, proto: 6 }, 6)]);
        let mapping = NatKey { nat_ip: ip(nat), remote_ip: ip(s), remote_port: 443, proto: 6 };
        assert_eq!(r.nat, [(mapping, 6)]);
        assert_eq!((r.distinct_sources, r.distinct_destinations, r.nat_mappings, r.nat_entries), (2, 2, 1, 6));
        assert_eq!(r.nat_utilization_max(), 0.06);
    }

    #[test]
    fn events_count_in_and_out_and_free_keys() {
        let (c, s, nat) = ([10, 0, 0, 1], [192, 0, 2, 9], [203, 0, 113, 1]);
        let mut a = Attributor::default();
        let e = tcp(&c, &s, 443, Some((&nat, 5000)));
        a.add(&e, 1);
        a.add(&e, -1);
        // A DESTROY for an entry never counted (older than the dump) changes nothing.
        a.add(&tcp(&[10, 9, 9, 9], &s, 22, None), -1);
        let r = a.finish(&AttributionConfig::default());
        assert_eq!((r.distinct_sources, r.nat_mappings, r.nat_entries), (0, 0, 0));
        assert!(r.sources.is_empty() && r.nat.is_empty());
    }

    #[test]
    fn past_the_cap_entries_are_untracked_but_the_tracked_stay_exact() {
        let mut a = Attributor { cap: 2, ..Attributor::default() };
        let s = [192, 0, 2, 9];
        let clients: Vec<[u8; 4]> = (1..=4).map(|i| [10, 0, 0, i]).collect();
        for c in &clients {
            a.add(&tcp(c, &s, 80, None), 1);
        }
        a.add(&tcp(&clients[0], &s, 80, None), 1);
        let r = a.finish(&AttributionConfig::default());
        assert_eq!(r.sources[0], (IpAddr::from(clients[0]), 2));
        assert_eq!((r.distinct_sources, r.untracked_sources), (2, 2));
    }

    /// Event mode over cycles of more distinct sources than the cap: every entry that came
    /// is gone again, so nothing is untracked (it drifted up by the untracked keys whose
    /// removal arrived once the map had room again).
    #[test]
    fn untracked_does_not_drift_over_cycles_past_the_cap() {
        let mut a = Attributor { cap: 3, ..Attributor::default() };
        let s = [192, 0, 2, 9];
        for cycle in 0..3u8 {
            let clients: Vec<[u8; 4]> = (1..=6).map(|i| [10, cycle, 0, i]).collect();
            for c in &clients {
                a.add(&tcp(c, &s, 80, None), 1);
            }
            let r = a.finish(&AttributionConfig::default());
            assert_eq!((r.distinct_sources, r.untracked_sources), (3, 3), "cycle {cycle}");
            for c in &clients {
                a.add(&tcp(c, &s, 80, None), -1); // tracked ones first free room, then the rest
            }
            let r = a.finish(&AttributionConfig::default());
            assert_eq!((r.distinct_sources, r.untracked_sources, r.untracked_destinations), (0, 0, 0), "cycle {cycle}");
        }
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let v6: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let mapped: [u8; 16] = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        assert_eq!(addr(&v6), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(addr(&mapped), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(addr(&[1, 2, 3]), None);
    }

    #[test]
    fn top_k_is_ordered_and_stable() {
        let mut m: FxMap<u32, u64> = FxMap::default();
        for (k, n) in [(5, 1), (3, 9), (4, 9), (1, 2)] {
            m.insert(k, n);
        }
        assert_eq!(top(&m, 3), [(3, 9), (4, 9), (1, 2)]);
        assert_eq!(top(&m, 0), []);
        assert_eq!(top(&m, 10).len(), 4);
    }
}
