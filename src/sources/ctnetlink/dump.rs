//! Conntrack entries by protocol and TCP state, from a ctnetlink dump (`NETLINK_NETFILTER`,
//! `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`): what munin's fw_conntrack plugin counts, without
//! ever reading `/proc/net/nf_conntrack`.
//!
//! A full dump walks the whole table, so it runs on its own slower interval
//! (`--conntrack.breakdown-interval`) and never delays the other sources. It needs
//! CAP_NET_ADMIN: without it the kernel answers EPERM and the source is down.
//!
//! Each entry is parsed in place from the receive buffer (nested attributes walked with
//! `NlasIterator` over slices): no allocation per entry.
//!
//! Entries in TCP TIME_WAIT are also counted by remaining timeout (`CTA_TIMEOUT`): no
//! packet refreshes them, so, like TIME_WAIT sockets, they are the history of how many
//! tracked TCP connections closed in each of the last `nf_conntrack_tcp_timeout_time_wait`
//! seconds (120 by default), which [`crate::sources::tcp::projection`] turns into where the table is
//! heading. Other entries' timeouts restart with every packet and say nothing of their age.

use std::time::Duration;

use netlink_sys::protocols::NETLINK_NETFILTER;

use super::attribution::{Attribution, AttributionConfig, Attributor};
use super::entry::*;
pub use super::entry::{parse_entry, Entry, Tuple, CT_TCP_STATES, DEFAULT_TIME_WAIT_TIMEOUT, IPS_SRC_NAT};
use crate::sources::kernel::netlink::{DumpSocket, Progress};
use crate::sources::kernel::SourceError;
use crate::sources::tcp::projection::TwHistogram;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breakdown {
    /// TCP entries by conntrack state number ([`CT_TCP_STATES`]).
    pub tcp: [u64; 10],
    pub udp: u64,
    pub icmp: u64,
    pub other: u64,
    /// Entries that saw traffic in both directions (`IPS_ASSURED`).
    pub assured: u64,
    /// Entries whose reply tuple's addresses are not the original's swapped (NAT), as
    /// fw_conntrack decides it.
    pub nated: u64,
    pub total: u64,
    /// TCP TIME_WAIT entries by remaining timeout, against [`Breakdown::time_wait_timeout`].
    pub time_wait: TwHistogram,
    /// `nf_conntrack_tcp_timeout_time_wait` in force for this dump, seconds.
    pub time_wait_timeout: u32,
    /// [`TwHistogram::scale`] of that timeout, computed at the dump's first TIME_WAIT entry.
    pub time_wait_scale: u64,
    /// Who holds the entries: top sources, destinations and NAT mappings.
    pub attribution: Attribution,
    /// With `--conntrack.events`: the attribution is kept current from events between
    /// dumps (the per-state counts are the last dump's).
    pub events: Option<super::events::EventStats>,
}

impl Breakdown {
    /// An empty breakdown for a dump under the given TIME_WAIT timeout.
    pub fn new(time_wait_timeout: u32) -> Self {
        Breakdown { time_wait_timeout, ..Breakdown::default() }
    }

    pub fn tcp_total(&self) -> u64 {
        self.tcp.iter().sum()
    }
}

/// Counts one entry (the attributes after the nfgenmsg header).
pub fn count_entry(attrs: &[u8], b: &mut Breakdown) {
    b.count(&parse_entry(attrs));
}

impl Breakdown {
    /// Counts one parsed entry.
    pub fn count(&mut self, e: &Entry) {
        let b = self;
        b.total += 1;
        match e.orig.proto {
            Some(6) => {
                if let Some(n) = e.tcp_state.and_then(|s| b.tcp.get_mut(usize::from(s))) {
                    *n += 1;
                }
                if let (Some(CT_TCP_TIME_WAIT), Some(left)) = (e.tcp_state, e.timeout) {
                    if b.time_wait_scale == 0 {
                        let length =
                            if b.time_wait_timeout == 0 { DEFAULT_TIME_WAIT_TIMEOUT } else { b.time_wait_timeout };
                        b.time_wait_scale = TwHistogram::scale(length.saturating_mul(1000));
                    }
                    b.time_wait.add_scaled(left.saturating_mul(1000), b.time_wait_scale);
                }
            }
            Some(17) => b.udp += 1,
            Some(1) | Some(58) => b.icmp += 1,
            _ => b.other += 1,
        }
        if e.status & IPS_ASSURED != 0 {
            b.assured += 1;
        }
        let (orig, reply) = (&e.orig, &e.reply);
        if !reply.src.is_empty() && (orig.src != reply.dst || orig.dst != reply.src) {
            b.nated += 1;
        }
    }
}

/// Parses one datagram of the dump, handing each entry to `visit`. Returns true when the
/// dump is complete.
pub fn parse_datagram(data: &[u8], seq: u32, visit: &mut dyn FnMut(&Entry)) -> Result<bool, SourceError> {
    let progress = crate::sources::kernel::netlink::walk_datagram("ctnetlink", data, seq, |m| {
        if m.kind >> 8 == NFNL_SUBSYS_CTNETLINK {
            if let Some(attrs) = m.payload.get(NFGENMSG_LEN..) {
                visit(&parse_entry(attrs));
            }
        }
        Ok(())
    })?;
    Ok(progress == crate::sources::kernel::netlink::Progress::Done)
}

/// `nf_conntrack_tcp_timeout_time_wait` below `proc_root`: what the dump buckets TIME_WAIT
/// entries against. The default when absent or unreadable (the dump's figures are then
/// approximate, never wrong in kind).
pub fn time_wait_timeout(proc_root: &std::path::Path) -> u32 {
    let path = proc_root.join("sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait");
    crate::sources::kernel::read_u64_sysctl(&path)
        .ok()
        .flatten()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(DEFAULT_TIME_WAIT_TIMEOUT)
}

/// A ctnetlink socket, its reusable buffer, and the attribution's maps.
pub struct CtDump {
    nl: DumpSocket,
    attributor: Attributor,
}

impl Default for CtDump {
    fn default() -> Self {
        CtDump {
            nl: DumpSocket::new("ctnetlink", NETLINK_NETFILTER, Duration::from_secs(30)),
            attributor: Attributor::default(),
        }
    }
}

impl CtDump {
    /// A dump of another network namespace's table, through a socket opened inside it
    /// (see [`DumpSocket::in_namespace`]).
    pub fn in_namespace(ns: std::path::PathBuf, inode: u64) -> CtDump {
        CtDump {
            nl: DumpSocket::in_namespace("ctnetlink", NETLINK_NETFILTER, Duration::from_secs(30), ns, inode),
            attributor: Attributor::default(),
        }
    }

    fn request(seq: u32) -> Vec<u8> {
        // nfgenmsg: family AF_UNSPEC (every family), version 0, res_id 0.
        let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
        crate::sources::kernel::netlink::dump_request(kind, seq, &[0; NFGENMSG_LEN])
    }

    /// Dumps the whole table of this network namespace; TIME_WAIT entries are bucketed
    /// against `time_wait_timeout` seconds; entries are attributed as `cfg` says.
    pub fn read(&mut self, time_wait_timeout: u32, cfg: &AttributionConfig) -> Result<Breakdown, SourceError> {
        self.read_visiting(time_wait_timeout, cfg, &mut |_| {})
    }

    /// [`CtDump::read`], showing `visit` every entry too (event mode follows the entries
    /// that predate its subscription by id).
    pub fn read_visiting(
        &mut self,
        time_wait_timeout: u32,
        cfg: &AttributionConfig,
        visit: &mut dyn FnMut(&Entry),
    ) -> Result<Breakdown, SourceError> {
        let mut b = Breakdown::new(time_wait_timeout);
        let deadline = std::time::Instant::now() + DUMP_DEADLINE;
        let attributor = &mut self.attributor;
        attributor.clear();
        self.nl.dump(Self::request, Some(deadline), &mut |data, seq| {
            let done = parse_datagram(data, seq, &mut |e| {
                b.count(e);
                attributor.add(e, 1);
                visit(e);
            })?;
            Ok(if done { Progress::Done } else { Progress::More })
        })?;
        b.attribution = self.attributor.finish(cfg);
        Ok(b)
    }

    /// Counts an event's entry in (+1, NEW) or out (-1, DESTROY) of the attribution.
    pub fn apply(&mut self, e: &Entry, delta: i64) {
        self.attributor.add(e, delta);
    }

    /// The attribution as the dump and the events since have left it.
    pub fn attribution(&mut self, cfg: &AttributionConfig) -> Attribution {
        self.attributor.finish(cfg)
    }
}

/// A table dump that takes longer is abandoned (a table of millions takes seconds).
const DUMP_DEADLINE: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLMSG_ERROR;

    /// Builds one attribute (type, payload), padded to 4 bytes.
    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = 4 + payload.len();
        let mut v = (len as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize((len + 3) & !3, 0);
        v
    }
    fn nested(kind: u16, children: &[Vec<u8>]) -> Vec<u8> {
        nla(kind | 0x8000, &children.concat())
    }
    fn tuple(src: [u8; 4], dst: [u8; 4], proto: u8) -> Vec<u8> {
        [
            nested(CTA_TUPLE_IP, &[nla(CTA_IP_V4_SRC, &src), nla(CTA_IP_V4_DST, &dst)]),
            nested(CTA_TUPLE_PROTO, &[nla(CTA_PROTO_NUM, &[proto])]),
        ]
        .concat()
    }
    fn entry(proto: u8, tcp_state: Option<u8>, status: u32, reply_src: [u8; 4]) -> Vec<u8> {
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut v = vec![
            nested(CTA_TUPLE_ORIG, &[tuple(a, b, proto)]),
            nested(CTA_TUPLE_REPLY, &[tuple(reply_src, a, proto)]),
            nla(CTA_STATUS, &status.to_be_bytes()),
        ];
        if let Some(s) = tcp_state {
            v.push(nested(CTA_PROTOINFO, &[nested(CTA_PROTOINFO_TCP, &[nla(CTA_PROTOINFO_TCP_STATE, &[s])])]));
        }
        v.concat()
    }

    #[test]
    fn counts_like_fw_conntrack() {
        let mut b = Breakdown::default();
        count_entry(&entry(6, Some(3), IPS_ASSURED, [10, 0, 0, 2]), &mut b);
        count_entry(&entry(6, Some(7), IPS_ASSURED, [10, 0, 0, 2]), &mut b);
        count_entry(&entry(6, Some(1), 0, [10, 0, 0, 2]), &mut b);
        count_entry(&entry(17, None, 0, [10, 0, 0, 2]), &mut b);
        // DNAT: the reply comes from another address.
        count_entry(&entry(6, Some(3), IPS_ASSURED, [192, 168, 9, 9]), &mut b);
        count_entry(&entry(1, None, 0, [10, 0, 0, 2]), &mut b);
        assert_eq!(b.tcp[3], 2);
        assert_eq!(b.tcp[7], 1);
        assert_eq!(b.tcp[1], 1);
        assert_eq!((b.udp, b.icmp, b.other, b.total), (1, 1, 0, 6));
        assert_eq!(b.assured, 3);
        assert_eq!(b.nated, 1);
    }

    #[test]
    fn time_wait_entries_are_bucketed_by_remaining_timeout() {
        let mut b = Breakdown::new(120);
        let with_timeout = |state: u8, left: u32| {
            [entry(6, Some(state), IPS_ASSURED, [10, 0, 0, 2]), nla(CTA_TIMEOUT, &left.to_be_bytes())].concat()
        };
        for left in [119, 115, 105, 5] {
            count_entry(&with_timeout(CT_TCP_TIME_WAIT, left), &mut b);
        }
        // ESTABLISHED timeouts restart with every packet: not history.
        count_entry(&with_timeout(3, 431_999), &mut b);
        assert_eq!((b.time_wait.counts[11], b.time_wait.counts[10], b.time_wait.counts[0]), (2, 1, 1));
        assert_eq!(b.time_wait.total(), 4);
        assert_eq!(b.tcp[CT_TCP_TIME_WAIT as usize], 4);
    }

    #[test]
    fn garbage_never_panics_and_still_counts() {
        let mut b = Breakdown::default();
        for junk in [&[][..], &[1, 2, 3], &[255; 64], &[4, 0, 1, 0, 9, 9, 9, 9]] {
            count_entry(junk, &mut b);
        }
        assert_eq!(b.total, 4);
        assert_eq!(b.other, 4);
    }

    #[test]
    fn eperm_names_the_capability() {
        let mut msg = vec![0u8; 36];
        msg[0..4].copy_from_slice(&36u32.to_ne_bytes());
        msg[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg[8..12].copy_from_slice(&5u32.to_ne_bytes());
        msg[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        let e = parse_datagram(&msg, 5, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("CAP_NET_ADMIN"), "{e}");
    }

    #[test]
    fn any_error_code_is_an_error_not_a_panic() {
        // Found by cargo-fuzz: i32::MIN cannot be negated.
        for code in [i32::MIN, i32::MAX, 1, -1] {
            let mut msg = vec![0u8; 36];
            msg[0..4].copy_from_slice(&36u32.to_ne_bytes());
            msg[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            msg[8..12].copy_from_slice(&5u32.to_ne_bytes());
            msg[16..20].copy_from_slice(&code.to_ne_bytes());
            let e = parse_datagram(&msg, 5, &mut |_| {}).unwrap_err().to_string();
            assert!(e.contains("dump refused"), "{code}: {e}");
        }
    }
}
