//! inet_diag (`NETLINK_SOCK_DIAG`): the request both the TCP and the UDP dumps send, the
//! `struct inet_diag_msg` every reply carries, read in place, and the walk of a reply
//! datagram. What a socket *means* is the wing's (`tcp/`, `udp/`); this is the message code
//! they share.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::{SockDiagMessage, AF_INET6, SOCK_DIAG_BY_FAMILY};

use super::SourceError;

/// Every TCP state: the kernel also folds NEW_SYN_RECV into SYN_RECV, and Linux >= 6.5
/// dumps bound-but-inactive sockets only when their bit is set too.
pub const ALL_STATES: u32 = u32::MAX;

/// `TCPF_BOUND_INACTIVE` (Linux >= 6.5): sockets bound to a port but neither connected nor
/// listening, reported as CLOSE. Asking for it makes the kernel walk its whole bind table
/// (`bhash2`) too, where every TIME_WAIT socket has an entry: on a host full of TIME_WAIT
/// that walk costs about 0.4 of the socket dump itself.
pub const BOUND_INACTIVE: u32 = 1 << 13;

/// A `SOCK_DIAG_BY_FAMILY` dump request (`struct inet_diag_req_v2`, built by
/// netlink-packet-sock-diag): one family and protocol, every state, the given extensions,
/// a zero socket id. TCP and UDP dumps both ask with it.
pub fn inet_diag_request(family: u8, protocol: u8, extensions: ExtensionFlags, seq: u32) -> Vec<u8> {
    inet_diag_request_states(family, protocol, extensions, ALL_STATES, seq)
}

/// [`inet_diag_request`] for the states in `states` only (a bit per state number): a
/// LISTEN-only dump (`1 << TCP_LISTEN`) walks the listening hash, not the established one.
pub fn inet_diag_request_states(
    family: u8,
    protocol: u8,
    extensions: ExtensionFlags,
    states: u32,
    seq: u32,
) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = if family == AF_INET6 { SocketId::new_v6() } else { SocketId::new_v4() };
    let req = InetRequest { family, protocol, extensions, states: StateFlags::from_bits_retain(states), socket_id };
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(SockDiagMessage::InetRequest(req)));
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// The inet_diag extension carrying `sk_meminfo` (`INET_DIAG_SKMEMINFO`, what `ss -m`
/// shows), and indices into its array (`SK_MEMINFO_*`).
pub const INET_DIAG_SKMEMINFO: u16 = 7;
pub const SK_MEMINFO_RMEM_ALLOC: usize = 0;
pub const SK_MEMINFO_RCVBUF: usize = 1;
/// `sk_drops`: for a listener, every SYN or handshake it dropped (`tcp_listendrop`, which
/// counts ListenDrops and ListenOverflows alike).
pub const SK_MEMINFO_DROPS: usize = 8;

/// The original inet_diag request type (`TCPDIAG_GETSOCK`), answered for all families in
/// one walk; its replies carry the same type.
pub const TCPDIAG_GETSOCK: u16 = 18;

/// Size of the fixed part of `struct inet_diag_msg`.
pub const DIAG_MSG_LEN: usize = 72;

/// One `struct inet_diag_msg`, read in place from the receive buffer: fields are decoded
/// only when asked for, so counting states costs two byte loads per socket.
///
/// Layout: family, state, timer, retrans (u8 each); sockid { sport, dport (be16),
/// `src[16]`, `dst[16]`, if (u32), `cookie[8]` }; expires, rqueue, wqueue, uid, inode (u32).
#[derive(Clone, Copy)]
pub struct DiagMsg<'a> {
    raw: &'a [u8],
}

impl<'a> DiagMsg<'a> {
    pub fn new(raw: &'a [u8]) -> Option<DiagMsg<'a>> {
        (raw.len() >= DIAG_MSG_LEN).then_some(DiagMsg { raw })
    }
    /// The fixed part (no attributes), to keep: [`DiagMsg::new`] reads it back.
    pub fn fixed(&self) -> [u8; DIAG_MSG_LEN] {
        self.raw[..DIAG_MSG_LEN].try_into().expect("checked in new")
    }
    pub fn family(&self) -> u8 {
        self.raw[0]
    }
    pub fn state(&self) -> u8 {
        self.raw[1]
    }
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.raw[4], self.raw[5]])
    }
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.raw[6], self.raw[7]])
    }
    fn addr(&self, at: usize) -> std::net::IpAddr {
        let b = &self.raw[at..at + 16];
        if self.family() == AF_INET6 {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::IpAddr::from(a)
        } else {
            std::net::IpAddr::from([b[0], b[1], b[2], b[3]])
        }
    }
    /// The local address's 16 raw bytes (IPv4: the first 4).
    pub fn src_addr_bytes(&self) -> &'a [u8; 16] {
        self.raw[8..24].try_into().expect("16 bytes")
    }
    pub fn src_addr(&self) -> std::net::IpAddr {
        self.addr(8)
    }
    pub fn dst_addr(&self) -> std::net::IpAddr {
        self.addr(24)
    }
    /// Timer state (`idiag_timer`): 3 for a TIME_WAIT socket's timer.
    pub fn timer(&self) -> u8 {
        self.raw[2]
    }
    /// Milliseconds until the socket's timer fires (`idiag_expires`); for a TIME_WAIT
    /// socket, until it is destroyed and its port is free.
    pub fn expires(&self) -> u32 {
        self.u32_at(52)
    }
    /// A native-endian u32 at `at`: one bounds check and one load, where four byte
    /// indexings cost a dozen instructions per socket.
    #[inline]
    fn u32_at(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.raw[at..at + 4]);
        u32::from_ne_bytes(b)
    }
    /// The socket's cookie: unique per socket for the kernel's lifetime.
    pub fn cookie(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.raw[44..52]);
        u64::from_ne_bytes(b)
    }
    /// The payload of the first attribute of type `kind` after the fixed part (the
    /// extensions asked for: `INET_DIAG_SKMEMINFO`, ...). `None` if absent or malformed.
    pub fn attribute(&self, kind: u16) -> Option<&'a [u8]> {
        let mut rest = &self.raw[DIAG_MSG_LEN..];
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            let typ = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff; // without NLA_F_NESTED/NET_BYTEORDER
            if len < 4 || len > rest.len() {
                return None;
            }
            if typ == kind {
                return Some(&rest[4..len]);
            }
            rest = rest.get(len.next_multiple_of(4)..)?;
        }
        None
    }
    /// For a listener: its accept queue length. Otherwise bytes in the receive queue.
    /// One value of the `sk_meminfo` array, when the reply carries the extension and the
    /// kernel's array is that long.
    pub fn meminfo(&self, index: usize) -> Option<u32> {
        let a = self.attribute(INET_DIAG_SKMEMINFO)?;
        a.get(index * 4..index * 4 + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn rqueue(&self) -> u32 {
        self.u32_at(56)
    }
    /// For a listener: its backlog limit. Otherwise bytes in the send queue.
    pub fn wqueue(&self) -> u32 {
        self.u32_at(60)
    }
}

pub use super::netlink::Progress;

/// Parses one datagram of a dump reply, calling `visit` for every socket message that
/// belongs to the dump with sequence number `seq`. Sets `*interrupted` when a message
/// carries `NLM_F_DUMP_INTR`. Pure function of its input: the fuzz target and the
/// fixture tests call it directly.
pub fn parse_datagram(
    data: &[u8],
    seq: u32,
    interrupted: &mut bool,
    visit: &mut dyn FnMut(&DiagMsg<'_>),
) -> Result<Progress, SourceError> {
    super::netlink::walk_datagram("sock_diag", data, seq, |m| {
        if m.flags & NLM_F_DUMP_INTR != 0 {
            *interrupted = true;
        }
        if matches!(m.kind, SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK) {
            let msg = DiagMsg::new(m.payload).ok_or_else(|| {
                SourceError::Netlink(format!(
                    "sock_diag: malformed inet_diag_msg at offset {}: {} bytes, expected at least {DIAG_MSG_LEN}",
                    m.offset,
                    m.payload.len()
                ))
            })?;
            visit(&msg);
        }
        Ok(()) // NLMSG_NOOP and anything new: not ours to interpret
    })
}
