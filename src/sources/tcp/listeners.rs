//! The listen path: every listener's own drops, its SYN queue and its accept queue, from a
//! LISTEN-only inet_diag dump per family with `INET_DIAG_SKMEMINFO` (what `ss -ltm`
//! shows). A LISTEN-only dump walks the listening hash, not the established one: it costs
//! the listeners, not the host's sockets.
//!
//! What the kernel does with a SYN (`tcp_conn_request`, `net/ipv4/tcp_input.c`):
//! - the listener's **SYN queue** (request sockets, dumped as SYN_RECV) is full at its
//!   `listen()` backlog (`sk_max_ack_backlog`): then a SYN cookie is sent when
//!   `tcp_syncookies` allows (TcpExt `TCPReqQFullDoCookies`, `SyncookiesSent`), else the
//!   SYN is dropped (`TCPReqQFullDrop`), and the kernel logs "Possible SYN flooding on port
//!   X". Without cookies a SYN from an unproven peer is also dropped once the queue holds
//!   three quarters of `tcp_max_syn_backlog`;
//! - the **accept queue** (`idiag_rqueue`, limit `idiag_wqueue` = the backlog capped by
//!   somaxconn) full: the SYN or the handshake's last ACK is dropped (`ListenOverflows`).
//!
//! Every drop at a listener is counted on the listener itself (`sk_drops`, through
//! `tcp_listendrop`) and in the namespace's `ListenDrops`: the per-listener figure says
//! *which* listener drops. The SYN queue per port comes from the full socket dump
//! (`tcp/ports`: server-side SYN_RECV sockets of a listening port); it is joined here.

use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_sock_diag::inet::ExtensionFlags;
use netlink_packet_sock_diag::{AF_INET, AF_INET6};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use super::ports::canonical;
use super::sockets::TCP_LISTEN;
use crate::sources::kernel::inet_diag::{inet_diag_request_states, parse_datagram, DiagMsg, SK_MEMINFO_DROPS};
use crate::sources::kernel::maps::{top_k_cmp, FxMap};
use crate::sources::kernel::netlink::DumpSocket;
use crate::sources::kernel::ratio::{ratio, AtZero};
use crate::sources::kernel::SourceError;

/// `IPPROTO_TCP`.
const IPPROTO_TCP: u8 = 6;

/// One listening address (an `SO_REUSEPORT` group summed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub local_ip: IpAddr,
    pub port: u16,
    /// SYNs and handshakes dropped by its sockets (`sk_drops`), since they were opened.
    pub drops: u64,
    pub accept_queue: u64,
    /// The `listen()` backlog capped by somaxconn: the accept queue's limit, and the SYN
    /// queue's.
    pub backlog: u64,
    /// Half-open connections (request sockets) on its port.
    pub syn_queue: u64,
}

impl Listener {
    /// SYN queue ÷ its limit: the backlog, or `tcp_max_syn_backlog` if lower (the point
    /// where, without SYN cookies, unproven peers are refused is three quarters of it).
    pub fn syn_utilization(&self, max_syn_backlog: Option<u64>) -> f64 {
        let limit = max_syn_backlog.map_or(self.backlog, |m| m.min(self.backlog));
        ratio(self.syn_queue as f64, limit as f64, AtZero::Exhausted).unwrap_or(1.0)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenPath {
    /// The listeners that dropped the most, then the fullest SYN queues (top-K).
    pub top: Vec<Listener>,
    /// Listening addresses in all.
    pub listeners: u64,
    /// Drops over every listener now open.
    pub drops: u64,
    /// The fullest SYN queue ÷ its limit (see [`Listener::syn_utilization`]).
    pub syn_utilization_max: f64,
}

pub struct ListenerDump {
    nl: DumpSocket,
    map: FxMap<(IpAddr, u16), Listener>,
    /// Drops of listeners past the cap (still in the total).
    untracked_drops: u64,
}

/// Listening addresses tracked per dump at most (bounded memory).
pub const MAX_LISTENERS: usize = super::ports::MAX_TRACKED;

impl Default for ListenerDump {
    fn default() -> Self {
        ListenerDump {
            nl: DumpSocket::new("sock_diag listeners", NETLINK_SOCK_DIAG, Duration::from_secs(10)),
            map: FxMap::default(),
            untracked_drops: 0,
        }
    }
}

impl ListenerDump {
    /// One LISTEN-only dump of both families; `syn_queue(port)` gives the SYN_RECV sockets
    /// of a listening port from the full dump, `max_syn_backlog` the sysctl.
    pub fn read(
        &mut self,
        top_k: usize,
        syn_queue: &dyn Fn(u16) -> u64,
        max_syn_backlog: Option<u64>,
    ) -> Result<ListenPath, SourceError> {
        let (nl, map, untracked) = (&mut self.nl, &mut self.map, &mut self.untracked_drops);
        map.clear();
        *untracked = 0;
        for family in [AF_INET, AF_INET6] {
            let mut interrupted = false;
            let mut visit = |m: &DiagMsg<'_>| visit(map, untracked, m);
            let request =
                |seq| inet_diag_request_states(family, IPPROTO_TCP, ExtensionFlags::SKMEMINFO, 1 << TCP_LISTEN, seq);
            match nl.dump(request, None, &mut |d, seq| parse_datagram(d, seq, &mut interrupted, &mut visit)) {
                Ok(()) => {}
                Err(SourceError::Kernel { errno: libc::ENOENT, .. }) if family == AF_INET6 => {}
                Err(e) => return Err(e),
            }
        }
        let mut out = summarise(map.drain().map(|(_, l)| l).collect(), top_k, syn_queue, max_syn_backlog);
        out.drops += *untracked;
        Ok(out)
    }
}

fn visit(map: &mut FxMap<(IpAddr, u16), Listener>, untracked: &mut u64, m: &DiagMsg<'_>) {
    if m.state() != TCP_LISTEN {
        return;
    }
    let (ip, port) = (canonical(m.src_addr()), m.src_port());
    // Bounded: past the cap a listener's drops still count in the total.
    if map.len() >= MAX_LISTENERS && !map.contains_key(&(ip, port)) {
        *untracked += u64::from(m.meminfo(SK_MEMINFO_DROPS).unwrap_or(0));
        return;
    }
    let l = map.entry((ip, port)).or_insert(Listener {
        local_ip: ip,
        port,
        drops: 0,
        accept_queue: 0,
        backlog: 0,
        syn_queue: 0,
    });
    l.drops += u64::from(m.meminfo(SK_MEMINFO_DROPS).unwrap_or(0));
    l.accept_queue += u64::from(m.rqueue());
    l.backlog += u64::from(m.wqueue());
}

/// Joins the SYN queues, adds up, and keeps the `top_k` by drops, then SYN queue use.
pub fn summarise(
    mut all: Vec<Listener>,
    top_k: usize,
    syn_queue: &dyn Fn(u16) -> u64,
    max_syn_backlog: Option<u64>,
) -> ListenPath {
    // A port's request sockets are shared by its addresses: each listener of the port is
    // given the port's count (a wildcard and a specific address rarely coexist).
    for l in &mut all {
        l.syn_queue = syn_queue(l.port);
    }
    let out_drops = all.iter().map(|l| l.drops).sum();
    let syn_max = all.iter().map(|l| l.syn_utilization(max_syn_backlog)).fold(0.0, f64::max);
    let listeners = all.len() as u64;
    top_k_cmp(&mut all, top_k, |a, b| {
        b.drops
            .cmp(&a.drops)
            .then(b.syn_utilization(max_syn_backlog).total_cmp(&a.syn_utilization(max_syn_backlog)))
            .then((a.port, a.local_ip).cmp(&(b.port, b.local_ip)))
    });
    ListenPath { top: all, listeners, drops: out_drops, syn_utilization_max: syn_max }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(ip: &str, port: u16, drops: u64, backlog: u64) -> Listener {
        Listener { local_ip: ip.parse().unwrap(), port, drops, accept_queue: 0, backlog, syn_queue: 0 }
    }

    #[test]
    fn ranked_by_drops_then_syn_queue() {
        let all = vec![l("0.0.0.0", 80, 0, 128), l("10.0.0.1", 443, 7, 4096), l("::", 8080, 0, 4)];
        let syn = |port: u16| if port == 8080 { 3 } else { 0 };
        let p = summarise(all, 2, &syn, Some(1024));
        assert_eq!((p.listeners, p.drops), (3, 7));
        assert_eq!(p.top.iter().map(|l| l.port).collect::<Vec<_>>(), [443, 8080]);
        assert_eq!(p.syn_utilization_max, 0.75, "3 of a backlog of 4");
        // tcp_max_syn_backlog below the backlog is the limit.
        assert_eq!(l("::", 1, 0, 4096).syn_utilization(Some(256)), 0.0);
        let mut full = l("::", 1, 0, 4096);
        full.syn_queue = 256;
        assert_eq!(full.syn_utilization(Some(256)), 1.0);
        full.backlog = 0;
        assert_eq!(full.syn_utilization(None), 1.0, "a backlog of 0 admits nothing");
    }
}
