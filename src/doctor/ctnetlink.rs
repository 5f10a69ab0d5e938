//! The doctor's check of the `ctnetlink/` sources: each NAT mapping's source ports, and who
//! fills the table.

use super::words::pct;
use super::{Check, Level};
use crate::snapshot::Snapshot;
use crate::sources::ctnetlink::attribution::{protocol_name, Attribution};

/// The top sources and destinations of the breakdown dump, in words.
/// The conntrack table's check, told who fills the table when the breakdown says (and only
/// when it matters: at a warning or worse).
pub(super) fn who_fills(check: Option<Check>, now: &Snapshot) -> Option<Check> {
    let mut check = check?;
    if let Some(a) = now.conntrack_breakdown.as_ref().map(|b| &b.attribution).filter(|_| check.level > Level::Ok) {
        check.detail += &who_fills_words(a);
    }
    Some(check)
}

fn who_fills_words(a: &Attribution) -> String {
    let sources: Vec<String> = a.sources.iter().take(3).map(|(ip, n)| format!("{ip} ({n})")).collect();
    let dests: Vec<String> =
        a.destinations.iter().take(3).map(|(d, n)| format!("{} ({n})", endpoint(d.addr, d.port, d.proto))).collect();
    if sources.is_empty() {
        return String::new();
    }
    format!(
        "; most entries from {} of {} sources; toward {} of {} destinations",
        sources.join(", "),
        a.distinct_sources,
        dests.join(", "),
        a.distinct_destinations
    )
}

/// `192.0.2.1:443/tcp`, `[2001:db8::1]:443/tcp`.
pub(super) fn endpoint(ip: std::net::IpAddr, port: u16, proto: u8) -> String {
    let proto = protocol_name(proto);
    match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}/{proto}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}/{proto}"),
    }
}

/// The busiest NAT mapping's source ports against the NAT port range (with the breakdown).
pub(super) fn nat_check(now: &Snapshot) -> Option<Check> {
    let a = &now.conntrack_breakdown.as_ref()?.attribution;
    let (busiest, used) = a.nat.first()?;
    let blocking = a.nat_blocking.first().copied().unwrap_or(*used);
    let u = a.nat_utilization_max();
    let level = Level::of(u);
    Some(Check {
        resource: "NAT source ports",
        level,
        used: Some(a.nat_blocking_max as f64),
        limit: Some(f64::from(a.nat_ports)),
        utilization: Some(u),
        projected: None,
        seconds_to_exhaustion: None,
        detail: format!(
            "busiest mapping {} -> {}: {used} of {} ports used, {blocking} blocking (the rest TCP TIME_WAIT or \
             CLOSE, which nf_nat recycles on Linux 6.5+); the most blocking of any mapping: {} ({}); {} \
             source-translated entries in {} mappings",
            busiest.nat_ip,
            endpoint(busiest.remote_ip, busiest.remote_port, busiest.proto),
            a.nat_ports,
            a.nat_blocking_max,
            pct(u),
            a.nat_entries,
            a.nat_mappings
        ),
        advice: (level > Level::Ok).then(|| {
            "nf_nat needs a free source port of this NAT address toward that remote address and port for every new \
             connection; when none is found the connection's first packet is dropped (insert_failed rises) and it \
             hangs. Add NAT addresses (snat to a range, more masquerade addresses), widen the rule's port range, reuse \
             connections (keep-alive, pooling), or shorten nf_conntrack_tcp_timeout_time_wait. If the rule's range \
             is not 1024-65535, tell sockwatch with --nat.port-range."
                .to_owned()
        }),
    })
}
