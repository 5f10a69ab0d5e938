//! The label sets written by more than one family, each spelled once: a network namespace,
//! a local port, an ephemeral-port destination and a conntrack destination. Plain values
//! in, so that every wing's file can use them without importing another's.

use std::net::IpAddr;

/// A series' labels, in output order.
pub type Labels = Vec<(&'static str, String)>;

/// `netns`: a network namespace by its inode number (join `sockwatch_netns_info` on it).
pub struct Netns(pub u64);

impl Netns {
    pub fn labels(&self) -> Labels {
        vec![("netns", self.0.to_string())]
    }
}

/// `local_ip`, `port`: a port this host serves (a listener, a UDP port).
pub struct LocalPort {
    pub local_ip: IpAddr,
    pub port: u16,
}

impl LocalPort {
    pub fn labels(&self) -> Labels {
        vec![("local_ip", self.local_ip.to_string()), ("port", self.port.to_string())]
    }
}

/// `local_ip`, `remote_ip`, `remote_port`: what a local port is unique per, the unit of
/// ephemeral port exhaustion.
pub struct PortDestination {
    pub local_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
}

impl PortDestination {
    pub fn labels(&self) -> Labels {
        vec![
            ("local_ip", self.local_ip.to_string()),
            ("remote_ip", self.remote_ip.to_string()),
            ("remote_port", self.remote_port.to_string()),
        ]
    }
}

/// `remote_ip`, `remote_port`, `protocol`: a conntrack destination (the original direction's
/// destination address, port and protocol), spelled as every other remote end here (the NAT
/// mappings', the ephemeral ports').
pub struct ConntrackDestination<'a> {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: &'a str,
}

impl ConntrackDestination<'_> {
    pub fn labels(&self) -> Labels {
        vec![
            ("remote_ip", self.addr.to_string()),
            ("remote_port", self.port.to_string()),
            ("protocol", self.protocol.to_owned()),
        ]
    }
}

/// Labels that start with a namespace's.
pub fn in_netns(inode: u64, rest: Labels) -> Labels {
    let mut labels = Netns(inode).labels();
    labels.extend(rest);
    labels
}
