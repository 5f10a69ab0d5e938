//! `sockwatch doctor`: one look at the host in plain words. Each resource against its
//! limit, the busiest destination and the fullest listener, and for anything at 80 % or
//! more what it means and what to do. Takes two samples a second apart, so that rates
//! (new connections, drops, overflows) are what is happening now, not since boot.
//!
//! Exit status: 0 healthy, 1 warnings, 2 critical, 3 cannot tell: a source it needs could
//! not be read (a warning or critical found elsewhere still wins, being what to act on).

use serde::Serialize;

mod ctnetlink;
mod netns;
mod own;
mod procfs;
mod tcp;
mod udp;
mod words;

use words::rate;

use crate::derived::{CRIT, WARN};

use crate::snapshot::Snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// A check could not run: its source was not read. Never "ok": an empty or foreign
    /// procfs, a missing capability or an unreadable file is not a healthy host.
    #[serde(rename = "unknown")]
    CannotTell,
    Warning,
    Critical,
}

impl Level {
    fn of(utilization: f64) -> Level {
        if utilization >= CRIT {
            Level::Critical
        } else if utilization >= WARN {
            Level::Warning
        } else {
            Level::Ok
        }
    }
    pub fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::CannotTell => 3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub resource: &'static str,
    pub level: Level,
    pub used: Option<f64>,
    pub limit: Option<f64>,
    pub utilization: Option<f64>,
    /// Ephemeral ports: where the worst destination settles at its current close rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projected: Option<f64>,
    /// Ephemeral ports: seconds until a destination has every port held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_to_exhaustion: Option<f64>,
    /// What was seen, in words.
    pub detail: String,
    /// What it means and what to do; only when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub status: Level,
    pub checks: Vec<Check>,
    /// Connections opened per second between the two samples (active + passive).
    pub new_connections_per_second: Option<f64>,
    pub facts: Vec<&'static str>,
}

pub const FACTS: [&str; 5] = [
    "TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN, compiled in) whatever net.ipv4.tcp_fin_timeout says: that sysctl is the FIN_WAIT_2 timeout of orphaned sockets.",
    "net.ipv4.tcp_tw_recycle broke clients behind NAT and was removed in Linux 4.12; do not look for it.",
    "net.ipv4.tcp_tw_reuse (1) lets new outgoing connections take over TIME_WAIT ports (needs TCP timestamps); it does nothing for incoming connections.",
    "The steady-state TIME_WAIT count is about the rate of connections this host closes first x 60 s.",
    "Conntrack needs nf_conntrack_max and the hash size (nf_conntrack_buckets) raised together, or lookups slow down on long chains.",
];

/// Builds the report from two snapshots of the same host, `before` taken first.
pub fn diagnose(before: &Snapshot, now: &Snapshot) -> Report {
    let mut checks = Vec::new();
    let seconds = now.timestamp.duration_since(before.timestamp).map(|d| d.as_secs_f64()).unwrap_or(1.0).max(0.001);
    let opens = |s: &Snapshot| s.snmp.as_ref().and_then(|t| t.active_opens?.checked_add(t.passive_opens?));
    let new_conns = rate(opens(before), opens(now), seconds);

    // The order of the report: each check from the file of its wing.
    checks.extend(tcp::ports_check(now));
    checks.extend(procfs::time_wait_check(before, now, seconds, new_conns));
    checks.extend(procfs::orphans_check(now));
    checks.extend(ctnetlink::who_fills(procfs::conntrack_check(before, now, seconds), now));
    checks.extend(ctnetlink::nat_check(now));
    checks.extend(tcp::listen_check(before, now, seconds));
    checks.extend(udp::udp_check(now, seconds));
    checks.extend(netns::netns_check(before, now, seconds));
    checks.extend(procfs::descriptors(now));
    checks.extend(procfs::socket_memory(before, now, seconds));
    checks.extend(tcp::listen_path(before, now, seconds));
    checks.extend(procfs::softnet(before, now, seconds));
    checks.extend(procfs::neighbours(before, now, seconds));
    checks.extend(own::sources_not_read(now));

    let status = checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok);
    Report { status, checks, new_connections_per_second: new_conns, facts: FACTS.to_vec() }
}

/// The report for a person at a terminal.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let word = |l: Level| match l {
        Level::Ok => "ok",
        Level::CannotTell => "CANNOT TELL",
        Level::Warning => "WARNING",
        Level::Critical => "CRITICAL",
    };
    let unread: Vec<&str> = r.checks.iter().filter(|c| c.level == Level::CannotTell).map(|c| c.resource).collect();
    if unread.is_empty() {
        let _ = writeln!(out, "sockwatch doctor: {}\n", word(r.status));
    } else {
        let _ = writeln!(out, "sockwatch doctor: {} (cannot tell: {} not read)\n", word(r.status), unread.join(", "));
    }
    for c in &r.checks {
        let _ = writeln!(out, "[{:>11}] {}: {}", word(c.level), c.resource, c.detail);
        if let Some(a) = &c.advice {
            let _ = writeln!(out, "              -> {a}");
        }
    }
    if let Some(n) = r.new_connections_per_second {
        let _ = writeln!(out, "\nNew TCP connections: {n:.0}/s (over the last second).");
    }
    let _ = writeln!(out, "\nGood to know:");
    for f in &r.facts {
        let _ = writeln!(out, "  - {f}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::tcp::ports_check as ports_check_of;
    use super::udp::udp_check;
    use super::words::{per_s, seen_in_part};
    use super::*;
    use crate::sources::tcp::ports::PortUsage;
    use crate::sources::udp::sockets::UdpPort;

    fn ports_check(e: &Ephemeral, l: &Limits) -> Check {
        let mut now = Snapshot::limits_only(None, None);
        now.limits = Some(l.clone());
        let ports = PortUsage {
            ephemeral: Some(e.clone()),
            ports: Vec::new(),
            listeners: Vec::new(),
            listener_count: 0,
            listen_utilization_max: 0.0,
        };
        now.ports = Some(ports);
        ports_check_of(&now).expect("ports and limits read")
    }

    /// A rate above zero never prints as 0 (it read "DROPPING 0 packets/s" at CRITICAL for
    /// one drop in four seconds).
    #[test]
    fn rates_above_zero_never_read_zero() {
        for (r, want) in [(0.0, "0"), (0.25, "0.25"), (0.004, "< 0.01"), (1.5, "1.5"), (12.4, "12"), (250.0, "250")] {
            assert_eq!(per_s(r), want, "{r}");
        }
        assert_eq!(seen_in_part(Level::Ok, 2), Level::CannotTell);
        assert_eq!(seen_in_part(Level::Warning, 2), Level::Warning, "what it saw stands");
        assert_eq!(seen_in_part(Level::Ok, 0), Level::Ok);
    }
    use crate::sources::procfs::limits::Limits;
    use crate::sources::tcp::ports::{Destination, Ephemeral};

    fn limits(low: u16, high: u16) -> Limits {
        Limits { port_range_low: low, port_range_high: high, ..Limits::default() }
    }

    fn dest(used: u64, close_rate: f64, projected: f64, seconds: Option<f64>) -> Destination {
        Destination {
            local_ip: "10.0.0.1".parse().unwrap(),
            remote_ip: "10.0.0.2".parse().unwrap(),
            remote_port: 80,
            used,
            close_rate,
            projected,
            seconds_to_exhaustion: seconds,
        }
    }

    fn ephemeral(d: Destination) -> Ephemeral {
        Ephemeral {
            top: vec![d.clone()],
            destinations: 1,
            untracked: 0,
            bound: 0,
            busiest: d.used,
            projected_max: d.projected,
            worst: Some(d),
        }
    }

    #[test]
    fn a_destination_heading_for_exhaustion_is_named_with_its_rate_and_time() {
        // 40 % used now, but 106 connections/s fill the rest within 38 s: critical.
        let c = ports_check(&ephemeral(dest(2400, 106.0, 6360.0, Some(38.0))), &limits(40000, 45999));
        assert!(
            c.detail.contains(
                "at the current 106 connections/s toward 10.0.0.1 -> 10.0.0.2:80, its 6000 ports are all held in 38 s"
            ),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("; 1 destination, range"), "no \"1 destinations\": {}", c.detail);
        assert_eq!((c.level, c.seconds_to_exhaustion, c.projected), (Level::Critical, Some(38.0), Some(6360.0)));
        // Four minutes ahead is a warning, whatever the level now.
        let c = ports_check(&ephemeral(dest(600, 30.0, 6100.0, Some(240.0))), &limits(40000, 45999));
        assert_eq!(c.level, Level::Warning);
    }

    #[test]
    fn a_full_range_is_failing_now_not_fails_when() {
        let c = ports_check(&ephemeral(dest(6000, 100.0, 6000.0, Some(0.0))), &limits(40000, 45999));
        assert!(c.detail.contains("FAILING NOW: every port toward 10.0.0.1 -> 10.0.0.2:80 is held"), "{}", c.detail);
        assert!(!c.detail.contains("all held in"), "{}", c.detail);
        assert_eq!(c.level, Level::Critical);
    }

    #[test]
    fn a_steady_rate_says_where_it_settles() {
        let c = ports_check(&ephemeral(dest(5100, 85.0, 5100.0, None)), &limits(40000, 45999));
        assert!(c.detail.contains("it settles near 5100 of 6000 ports (85%)"), "{}", c.detail);
        assert_eq!(c.level, Level::Warning, "85 % now is a warning");
    }

    #[test]
    fn udp_names_the_port_dropping_now_and_the_one_that_dropped_before() {
        use crate::sources::udp::sockets::Udp;
        let port = |p: u16, recent: u64, total: u64| UdpPort {
            local_ip: "127.0.0.1".parse().unwrap(),
            port: p,
            sockets: 1,
            drops_total: total,
            drops_recent: recent,
            queue_bytes: 7680,
            buffer_bytes: 8192,
        };
        let mut now = Snapshot::limits_only(None, None);
        now.udp = Some(Udp {
            sockets: [3, 0],
            ports: vec![port(5353, 40, 494), port(514, 0, 12), port(8125, 0, 0)],
            queue_utilization_max: 0.9375,
            ..Udp::default()
        });
        let c = udp_check(&now, 2.0).unwrap();
        assert_eq!(c.level, Level::Critical);
        assert!(c.detail.contains("dropping now: 127.0.0.1:5353 (20/s)"), "{}", c.detail);
        assert!(c.detail.contains("dropped earlier, not now: 127.0.0.1:514 (12)"), "{}", c.detail);
        assert!(!c.detail.contains("8125"), "{}", c.detail);
        assert!(c.advice.unwrap().contains("127.0.0.1:5353 reads too slowly"));
        // No drops now, a queue at 94 %: critical by level; at 50 %: ok, no advice.
        now.udp.as_mut().unwrap().ports = vec![port(514, 0, 12)];
        assert_eq!(udp_check(&now, 1.0).unwrap().level, Level::Critical);
        now.udp.as_mut().unwrap().queue_utilization_max = 0.5;
        let c = udp_check(&now, 1.0).unwrap();
        assert_eq!((c.level, c.advice), (Level::Ok, None));
    }

    /// A clash now and then on a nearly empty table is a warning about clashes, not a full
    /// table: drop and insert_failed rise together (the kernel counts a lost race in both).
    #[test]
    fn insert_clashes_are_not_a_full_table() {
        use crate::sources::procfs::conntrack::{Conntrack, ConntrackStats};
        let at = |drop: u64, failed: u64| {
            let mut s = Snapshot::limits_only(None, None);
            let stats = ConntrackStats { drop: Some(drop), insert_failed: Some(failed), ..ConntrackStats::default() };
            s.conntrack =
                Some(Conntrack { entries: 337, limit: Some(2_097_152), buckets: Some(524_288), stats: Some(stats) });
            s
        };
        let c = super::procfs::conntrack_check(&at(10, 10), &at(12, 12), 1.0).unwrap();
        assert_eq!(c.level, Level::Warning, "{}", c.detail);
        assert!(c.detail.contains("2.0 insert clashes/s (packets dropped, not a full table)"), "{}", c.detail);
        assert!(!c.detail.contains("dropping"), "{}", c.detail);
        assert!(c.advice.unwrap().starts_with("Insert clashes"));
        // Drops beyond the clashes: the table's own, critical.
        let c = super::procfs::conntrack_check(&at(10, 10), &at(17, 12), 1.0).unwrap();
        assert_eq!(c.level, Level::Critical);
        assert!(c.detail.contains("dropping 5.0 packets/s"), "{}", c.detail);
    }
}
