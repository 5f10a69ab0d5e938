//! One conntrack entry as ctnetlink gives it, in a dump or an event: its tuples, status, TCP
//! state and timeout, parsed in place from the receive buffer (no allocation per entry),
//! and the constants of the ctnetlink messages.

pub(crate) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(crate) const IPCTNL_MSG_CT_GET: u16 = 1;
pub(crate) const NFGENMSG_LEN: usize = 4;

// Attribute numbers (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
pub(crate) const CTA_TUPLE_ORIG: u16 = 1;
pub(crate) const CTA_TUPLE_REPLY: u16 = 2;
pub(crate) const CTA_STATUS: u16 = 3;
pub(crate) const CTA_PROTOINFO: u16 = 4;
pub(crate) const CTA_TIMEOUT: u16 = 7;
pub(crate) const CTA_ID: u16 = 12;
/// Conntrack's TCP TIME_WAIT state number.
pub(crate) const CT_TCP_TIME_WAIT: u8 = 7;
/// `nf_conntrack_tcp_timeout_time_wait`'s default, seconds.
pub const DEFAULT_TIME_WAIT_TIMEOUT: u32 = 120;
pub(crate) const CTA_TUPLE_IP: u16 = 1;
pub(crate) const CTA_TUPLE_PROTO: u16 = 2;
pub(crate) const CTA_IP_V4_SRC: u16 = 1;
pub(crate) const CTA_IP_V4_DST: u16 = 2;
pub(crate) const CTA_IP_V6_SRC: u16 = 3;
pub(crate) const CTA_IP_V6_DST: u16 = 4;
pub(crate) const CTA_PROTO_NUM: u16 = 1;
pub(crate) const CTA_PROTO_SRC_PORT: u16 = 2;
pub(crate) const CTA_PROTO_DST_PORT: u16 = 3;
pub(crate) const CTA_PROTOINFO_TCP: u16 = 1;
pub(crate) const CTA_PROTOINFO_TCP_STATE: u16 = 1;
pub(crate) const IPS_ASSURED: u32 = 1 << 2;
/// The entry's source was translated (SNAT, masquerade).
pub const IPS_SRC_NAT: u32 = 1 << 4;

/// Conntrack's TCP states (`enum tcp_conntrack`), indexed by number.
pub const CT_TCP_STATES: [&str; 10] = [
    "none",
    "syn_sent",
    "syn_recv",
    "established",
    "fin_wait",
    "close_wait",
    "last_ack",
    "time_wait",
    "close",
    "syn_sent2",
];

/// One direction's tuple, its addresses as slices of the receive buffer (4 or 16 bytes;
/// empty when absent). Ports are 0 for protocols without them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tuple<'a> {
    pub src: &'a [u8],
    pub dst: &'a [u8],
    pub proto: Option<u8>,
    pub src_port: u16,
    pub dst_port: u16,
}

/// One conntrack entry as a dump or an event gives it, parsed in place.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub orig: Tuple<'a>,
    pub reply: Tuple<'a>,
    pub status: u32,
    pub tcp_state: Option<u8>,
    /// Seconds left (`CTA_TIMEOUT`).
    pub timeout: Option<u32>,
    /// The entry's id (`CTA_ID`), stable for its life.
    pub id: Option<u32>,
}

impl Entry<'_> {
    /// The source was translated: the status says so, or the reply goes to another
    /// address than the original came from (what fw_conntrack calls NAT, one direction).
    pub fn source_nated(&self) -> bool {
        self.status & IPS_SRC_NAT != 0 || (!self.reply.dst.is_empty() && self.reply.dst != self.orig.src)
    }
}

/// Walks one level of netlink attributes: `(type without flags, payload)`, zero-copy.
/// A malformed attribute ends the walk of that level; the entry is still counted.
pub(crate) fn nlas(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*buf.first()?, *buf.get(1)?]));
        let kind = u16::from_ne_bytes([*buf.get(2)?, *buf.get(3)?]) & 0x3fff;
        let value = buf.get(4..len)?;
        buf = buf.get((len + 3) & !3..).unwrap_or(&[]);
        Some((kind, value))
    })
}

pub(crate) fn parse_tuple(buf: &[u8]) -> Tuple<'_> {
    let mut t = Tuple::default();
    for (kind, value) in nlas(buf) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, v) in nlas(value) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => t.src = v,
                        CTA_IP_V4_DST | CTA_IP_V6_DST => t.dst = v,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v) in nlas(value) {
                    match (k, v) {
                        (CTA_PROTO_NUM, [p, ..]) => t.proto = Some(*p),
                        (CTA_PROTO_SRC_PORT, [a, b, ..]) => t.src_port = u16::from_be_bytes([*a, *b]),
                        (CTA_PROTO_DST_PORT, [a, b, ..]) => t.dst_port = u16::from_be_bytes([*a, *b]),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// Parses one entry (the attributes after the nfgenmsg header). Malformed attributes are
/// skipped: the entry is still an entry.
pub fn parse_entry(attrs: &[u8]) -> Entry<'_> {
    let mut e = Entry::default();
    for (kind, value) in nlas(attrs) {
        match kind {
            CTA_TUPLE_ORIG => e.orig = parse_tuple(value),
            CTA_TUPLE_REPLY => e.reply = parse_tuple(value),
            CTA_STATUS if value.len() >= 4 => e.status = u32::from_be_bytes([value[0], value[1], value[2], value[3]]),
            CTA_TIMEOUT if value.len() >= 4 => {
                e.timeout = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
            }
            CTA_ID if value.len() >= 4 => e.id = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]])),
            CTA_PROTOINFO => {
                e.tcp_state = nlas(value)
                    .find(|(k, _)| *k == CTA_PROTOINFO_TCP)
                    .and_then(|(_, tcp)| nlas(tcp).find(|(k, _)| *k == CTA_PROTOINFO_TCP_STATE))
                    .and_then(|(_, v)| v.first().copied())
            }
            _ => {}
        }
    }
    e
}
