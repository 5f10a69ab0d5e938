//! `sockwatch doctor`: one look at the host in plain words. Each resource against its
//! limit, the busiest destination and the fullest listener, and for anything at 80 % or
//! more what it means and what to do. Takes two samples a second apart, so that rates
//! (new connections, drops, overflows) are what is happening now, not since boot.
//!
//! Exit status: 0 healthy, 1 warnings, 2 critical, 3 cannot tell: a source it needs could
//! not be read (a warning or critical found elsewhere still wins, being what to act on).

use serde::Serialize;

mod conntrack;
mod netns;
mod ports;
mod procfs;
mod resources;
mod words;

use conntrack::{conntrack_check, nat_check};
use netns::netns_check;
use ports::ports_check;
use words::{pct, per_s, rate};

use crate::snapshot::Snapshot;
use crate::sources::udp::sockets::UdpPort;

use crate::derived::{self, CRIT, LISTEN_CRIT, WARN};

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

    // Ephemeral ports: the busiest destination, and where the worst one is heading.
    if let (Some(e), Some(l)) = (now.ports.as_ref().and_then(|p| p.ephemeral.as_ref()), now.limits.as_ref()) {
        checks.push(ports_check(e, l));
    }

    checks.extend(time_wait_check(before, now, seconds, new_conns));
    checks.extend(orphans_check(now));
    checks.extend(conntrack_check(before, now, seconds));
    checks.extend(nat_check(now));
    checks.extend(listen_check(before, now, seconds));
    checks.extend(udp_check(now, seconds));
    checks.extend(netns_check(before, now, seconds));
    checks.extend(resources::descriptors(now));
    checks.extend(resources::socket_memory(before, now, seconds));
    checks.extend(resources::listen_path(before, now, seconds));
    checks.extend(procfs::softnet(before, now, seconds));
    checks.extend(resources::neighbours(before, now, seconds));

    // The conntrack counters are absent when the module is not loaded: an answer (nothing
    // is tracked), not a gap, provided /proc/sys/net itself was read (the limits come from it).
    let sys_net_read = now.limits.is_some();
    for s in now.sources.iter().filter(|s| !s.up) {
        if let Some(e) = &s.error {
            let not_loaded = s.source == crate::snapshot::Source::Conntrack && sys_net_read && s.errors_total == 0;
            // The neighbour tables are the host's: their files exist in its namespace only.
            let elsewhere = s.source == crate::snapshot::Source::Neighbour && sys_net_read && s.errors_total == 0;
            let (level, detail) = if not_loaded {
                (Level::Ok, format!("not loaded, nothing tracked ({e})"))
            } else if elsewhere {
                (Level::Ok, format!("host-wide tables, seen from the host's network namespace only ({e})"))
            } else {
                (Level::CannotTell, format!("cannot tell, not read: {e}"))
            };
            checks.push(Check {
                resource: s.source.name(),
                level,
                used: None,
                limit: None,
                utilization: None,
                projected: None,
                seconds_to_exhaustion: None,
                detail,
                advice: (level == Level::CannotTell)
                    .then(|| "Checks that need this source did not run. Run doctor as the daemon runs (root or CAP_NET_ADMIN), against the real /proc (--path.procfs).".to_owned()),
            });
        }
    }

    let status = checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok);
    Report { status, checks, new_connections_per_second: new_conns, facts: FACTS.to_vec() }
}

/// TIME_WAIT against tcp_max_tw_buckets, and its overflow rate.
fn time_wait_check(before: &Snapshot, now: &Snapshot, seconds: f64, new_conns: Option<f64>) -> Option<Check> {
    let (Some(st), Some(max)) = (now.sockstat.as_ref(), now.limits.as_ref().and_then(|l| l.tcp_max_tw_buckets)) else {
        return None;
    };
    let u = derived::time_wait_utilization(now).unwrap_or(0.0);
    let overflow = rate(
        before.snmp.as_ref().and_then(|t| t.time_wait_overflow),
        now.snmp.as_ref().and_then(|t| t.time_wait_overflow),
        seconds,
    )
    .unwrap_or(0.0);
    let level = if overflow > 0.0 { Level::Critical } else { Level::of(u) };
    let steady = new_conns.map_or(String::new(), |r| {
        format!(
            "; at {r:.0} new connections/s, if this host closes them first TIME_WAIT settles near {:.0}",
            r * f64::from(crate::sources::tcp::ports::TIME_WAIT_SECONDS)
        )
    });
    Some(Check {
        resource: "TIME_WAIT buckets",
        level,
        used: Some(st.tw as f64),
        limit: Some(max as f64),
        utilization: Some(u),
        projected: None,
        seconds_to_exhaustion: None,
        detail: format!("{} TIME_WAIT sockets of tcp_max_tw_buckets {} ({}){steady}", st.tw, max, pct(u)),
        advice: (level > Level::Ok).then(|| {
            format!(
                "Beyond tcp_max_tw_buckets the kernel destroys TIME_WAIT sockets early{} (\"time wait bucket \
                 table overflow\"). Raise net.ipv4.tcp_max_tw_buckets or close fewer connections from this side; \
                 lowering tcp_fin_timeout does not help.",
                if overflow > 0.0 { format!(", {}/s right now", per_s(overflow)) } else { String::new() }
            )
        }),
    })
}

/// Orphaned sockets against tcp_max_orphans.
fn orphans_check(now: &Snapshot) -> Option<Check> {
    let (Some(st), Some(max)) = (now.sockstat.as_ref(), now.limits.as_ref().and_then(|l| l.tcp_max_orphans)) else {
        return None;
    };
    // tcp_max_orphans 0: the kernel resets every orphan, so any is too many.
    let u = derived::ratio(st.orphan as f64, max as f64, derived::AtZero::Exhausted).unwrap_or(1.0);
    let level = Level::of(u);
    Some(Check {
        resource: "orphaned sockets",
        level,
        used: Some(st.orphan as f64),
        limit: Some(max as f64),
        utilization: Some(u),
        projected: None,
        seconds_to_exhaustion: None,
        detail: format!("{} orphans of tcp_max_orphans {} ({})", st.orphan, max, pct(u)),
        advice: (level > Level::Ok).then(|| {
            "Past tcp_max_orphans the kernel resets connections (\"too many orphaned sockets\"). Look for \
             peers that never acknowledge the close; raise net.ipv4.tcp_max_orphans if memory allows."
                .to_owned()
        }),
    })
}

/// The fullest accept queue, and overflows.
fn listen_check(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let Some(p) = &now.ports else { return None };
    let overflows = rate(
        before.snmp.as_ref().and_then(|t| t.listen_overflows),
        now.snmp.as_ref().and_then(|t| t.listen_overflows),
        seconds,
    )
    .unwrap_or(0.0);
    let u = p.listen_utilization_max;
    let level = if u >= LISTEN_CRIT || overflows > 0.0 { Level::Critical } else { Level::of(u) };
    let fullest = p
        .listeners
        .iter()
        .filter(|l| l.limit > 0)
        .max_by(|a, b| (a.length as f64 / a.limit as f64).total_cmp(&(b.length as f64 / b.limit as f64)));
    let who = fullest.map_or("no listener".to_owned(), |l| {
        format!("{}:{} with {} of {} queued", l.local_ip, l.port, l.length, l.limit)
    });
    Some(Check {
        resource: "accept queues",
        level,
        used: fullest.map(|l| l.length as f64),
        limit: fullest.map(|l| l.limit as f64),
        utilization: Some(u),
        projected: None,
        seconds_to_exhaustion: None,
        detail: format!(
            "fullest listener {who} ({}); {} listeners{}",
            pct(u),
            p.listener_count,
            if overflows > 0.0 {
                format!(", {} connections/s dropped on full queues", per_s(overflows))
            } else {
                String::new()
            }
        ),
        advice: (level > Level::Ok).then(|| {
            format!(
                "A full accept queue drops new connections (ListenOverflows). The application behind {who} does \
                 not accept() fast enough: check that it is alive, raise its listen() backlog and net.core.somaxconn."
            )
        }),
    })
}

/// UDP receive queues and the ports dropping datagrams. `drops_recent` is what each port
/// dropped since the sample before (the first of the two, a second earlier).
fn udp_check(now: &Snapshot, seconds: f64) -> Option<Check> {
    let u = now.udp.as_ref()?;
    let mut dropping: Vec<&UdpPort> = u.ports.iter().filter(|p| p.drops_recent > 0).collect();
    dropping.sort_by_key(|p| std::cmp::Reverse(p.drops_recent));
    let earlier: Vec<&UdpPort> = u.ports.iter().filter(|p| p.drops_recent == 0 && p.drops_total > 0).collect();
    let level = if dropping.is_empty() { Level::of(u.queue_utilization_max) } else { Level::Critical };
    let name = |p: &UdpPort| format!("{}:{}", p.local_ip, p.port);
    let mut detail =
        format!("{} UDP sockets; fullest receive queue {}", u.sockets[0] + u.sockets[1], pct(u.queue_utilization_max));
    if !dropping.is_empty() {
        let list: Vec<String> =
            dropping.iter().map(|p| format!("{} ({}/s)", name(p), per_s(p.drops_recent as f64 / seconds))).collect();
        detail.push_str(&format!("; dropping now: {}", list.join(", ")));
    }
    if !earlier.is_empty() {
        let list: Vec<String> = earlier.iter().map(|p| format!("{} ({})", name(p), p.drops_total)).collect();
        detail.push_str(&format!("; dropped earlier, not now: {}", list.join(", ")));
    }
    Some(Check {
        resource: "udp receive queues",
        level,
        used: None,
        limit: None,
        utilization: Some(u.queue_utilization_max),
        projected: None,
        seconds_to_exhaustion: None,
        detail,
        advice: (level > Level::Ok).then(|| {
            let who = dropping.first().map_or("the fullest UDP socket".to_owned(), |p| name(p));
            format!(
                "A UDP socket whose receive queue reaches its buffer drops datagrams silently (the d of `ss -uam`). \
                 The application on {who} reads too slowly: raise its SO_RCVBUF and net.core.rmem_max (which caps \
                 it), add reader threads or SO_REUSEPORT sockets, or find what stalls it."
            )
        }),
    })
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
    use super::words::seen_in_part;
    use super::*;

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
}
