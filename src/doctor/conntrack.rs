//! The doctor's conntrack checks: the table against nf_conntrack_max with its drops now,
//! who fills it, and the busiest NAT mapping's source ports.

use super::words::{pct, per_s, rate};
use super::{Check, Level};
use crate::derived;
use crate::snapshot::Snapshot;
use crate::sources::ctnetlink::attribution::{protocol_name, Attribution};

/// The conntrack table, and packets dropped.
pub(super) fn conntrack_check(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let Some(ct) = &now.conntrack else { return None };
    let dropping = rate(
        before.conntrack.as_ref().and_then(|c| c.stats.as_ref()?.drop),
        ct.stats.as_ref().and_then(|s| s.drop),
        seconds,
    )
    .unwrap_or(0.0);
    let u = derived::conntrack_utilization(now);
    let level = if dropping > 0.0 { Level::Critical } else { u.map_or(Level::Ok, Level::of) };
    // Who fills it, when the breakdown says (and only when it matters).
    let who = match now.conntrack_breakdown.as_ref().map(|b| &b.attribution) {
        Some(a) if level > Level::Ok => who_fills(a),
        _ => String::new(),
    };
    Some(Check {
        resource: "conntrack table",
        level,
        used: Some(ct.entries as f64),
        limit: ct.limit.map(|m| m as f64),
        utilization: u,
        projected: None,
        seconds_to_exhaustion: None,
        detail: format!(
            "{} entries of nf_conntrack_max {} ({}), {} hash buckets{}",
            ct.entries,
            ct.limit.map_or("unknown".to_owned(), |m| m.to_string()),
            u.map_or("?".to_owned(), pct),
            ct.buckets.map_or("unknown".to_owned(), |b| b.to_string()),
            if dropping > 0.0 { format!(", dropping {} packets/s", per_s(dropping)) } else { String::new() }
        ) + &who,
        advice: (level > Level::Ok).then(|| {
            "When the table is full the kernel drops new packets (\"nf_conntrack: table full, dropping \
             packet\", or on Linux 6.x \"nf_conntrack: table full in netns N, dropping packet\") and the host looks dead from outside. Raise net.netfilter.nf_conntrack_max and the hash \
             size together (echo $((max/4)) > /sys/module/nf_conntrack/parameters/hashsize), shorten \
             timeouts (nf_conntrack_tcp_timeout_time_wait), or exempt traffic that needs no tracking (notrack)."
                .to_owned()
        }),
    })
}

/// The top sources and destinations of the breakdown dump, in words.
pub(super) fn who_fills(a: &Attribution) -> String {
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
