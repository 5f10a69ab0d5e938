//! The doctor's checks of the `procfs/` sources: TIME_WAIT and orphans against their
//! limits, the conntrack table, descriptors, socket memory, the per-CPU backlog and the
//! neighbour tables. A failure counter that moved between the two samples is critical (it
//! is happening now), a level at 80 % a warning.

use super::words::{check, pct, per_s, rate, seen_in_part, to_read_more};
use super::{Check, Level};
use crate::derived;
use crate::snapshot::Snapshot;
use crate::sources::procfs::cgroup::Owner;

/// TIME_WAIT against tcp_max_tw_buckets, and its overflow rate.
pub(super) fn time_wait_check(
    before: &Snapshot,
    now: &Snapshot,
    seconds: f64,
    new_conns: Option<f64>,
) -> Option<Check> {
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
            r * f64::from(crate::sources::kernel::TIME_WAIT_SECONDS)
        )
    });
    Some(check(
        "TIME_WAIT buckets",
        level,
        st.tw as f64,
        Some(max as f64),
        Some(u),
        format!("{} TIME_WAIT sockets of tcp_max_tw_buckets {} ({}){steady}", st.tw, max, pct(u)),
        &|| {
            format!(
                "Beyond tcp_max_tw_buckets the kernel destroys TIME_WAIT sockets early{} (\"time wait bucket \
                 table overflow\"). Raise net.ipv4.tcp_max_tw_buckets or close fewer connections from this side; \
                 lowering tcp_fin_timeout does not help.",
                if overflow > 0.0 { format!(", {}/s right now", per_s(overflow)) } else { String::new() }
            )
        },
    ))
}

/// Orphaned sockets against tcp_max_orphans.
pub(super) fn orphans_check(now: &Snapshot) -> Option<Check> {
    let (Some(st), Some(max)) = (now.sockstat.as_ref(), now.limits.as_ref().and_then(|l| l.tcp_max_orphans)) else {
        return None;
    };
    // tcp_max_orphans 0: the kernel resets every orphan, so any is too many.
    let u = derived::ratio(st.orphan as f64, max as f64, derived::AtZero::Exhausted).unwrap_or(1.0);
    let level = Level::of(u);
    Some(check(
        "orphaned sockets",
        level,
        st.orphan as f64,
        Some(max as f64),
        Some(u),
        format!("{} orphans of tcp_max_orphans {} ({})", st.orphan, max, pct(u)),
        &|| {
            "Past tcp_max_orphans the kernel resets connections (\"too many orphaned sockets\"). Look for \
             peers that never acknowledge the close; raise net.ipv4.tcp_max_orphans if memory allows."
                .to_owned()
        },
    ))
}

/// The conntrack table, and packets dropped.
pub(super) fn conntrack_check(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let Some(ct) = &now.conntrack else { return None };
    let stat = |pick: fn(&crate::sources::procfs::conntrack::ConntrackStats) -> Option<u64>| {
        let earlier = before.conntrack.as_ref().and_then(|c| pick(c.stats.as_ref()?));
        rate(earlier, ct.stats.as_ref().and_then(pick), seconds).unwrap_or(0.0)
    };
    // A lost insert race (a clash) counts in `drop` and `insert_failed` both: the drops
    // beyond the clashes are the full table's.
    let clashes = stat(|s| s.insert_failed);
    let dropping = (stat(|s| s.drop) - clashes).max(0.0);
    let u = derived::conntrack_utilization(now);
    let level = if dropping > 0.0 {
        Level::Critical
    } else if clashes > 0.0 {
        u.map_or(Level::Warning, Level::of).max(Level::Warning)
    } else {
        u.map_or(Level::Ok, Level::of)
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
        ) + &if clashes > 0.0 {
            format!(", {} insert clashes/s (packets dropped, not a full table)", per_s(clashes))
        } else {
            String::new()
        },
        advice: (level > Level::Ok).then(|| {
            if dropping == 0.0 && clashes > 0.0 && u.is_none_or(|u| u < derived::WARN) {
                return "Insert clashes: two packets of one new flow raced to create its entry and the loser was \
                        dropped. Often DNS: A and AAAA queries sent at once from one UDP socket through NAT, each \
                        loss a 5 s resolver delay (glibc: options single-request-reopen, or a node-local DNS cache). \
                        The table is not full."
                    .to_owned();
            }
            "When the table is full the kernel drops new packets (\"nf_conntrack: table full, dropping \
             packet\", or on Linux 6.x \"nf_conntrack: table full in netns N, dropping packet\") and the host looks dead from outside. Raise net.netfilter.nf_conntrack_max and the hash \
             size together (echo $((max/4)) > /sys/module/nf_conntrack/parameters/hashsize), shorten \
             timeouts (nf_conntrack_tcp_timeout_time_wait), or exempt traffic that needs no tracking (notrack)."
                .to_owned()
        }),
    })
}

fn owner_words(o: &Owner) -> String {
    let mut parts = Vec::new();
    if let Some(id) = &o.container_id {
        parts.push(format!("container {}", &id[..id.len().min(12)]));
    }
    if let Some(uid) = &o.pod_uid {
        parts.push(format!("pod uid {uid}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(", {}", parts.join(", "))
    }
}

/// The host's file handles and the process nearest its own limit.
pub(super) fn descriptors(now: &Snapshot) -> Vec<Check> {
    let Some(d) = &now.descriptors else { return Vec::new() };
    let mut out = Vec::new();
    if let (Some(h), Some(u)) = (d.host, d.host_utilization()) {
        out.push(check(
            "file handles",
            Level::of(u),
            h.allocated as f64,
            Some(h.max as f64),
            Some(u),
            format!("{} of fs.file-max {} allocated host-wide ({})", h.allocated, h.max, pct(u)),
            &|| {
                "At fs.file-max every open() and socket() on the host fails with ENFILE. Find the holders \
                 (the process check below, or lsof); raise fs.file-max only once none is leaking."
                    .to_owned()
            },
        ));
    }
    if let Some(p) = d.top.first() {
        let u = p.utilization();
        let who = format!("{} (pid {}{})", p.command, p.pid, owner_words(&p.owner));
        out.push(check(
            "process descriptors",
            seen_in_part(Level::of(u), d.unreadable),
            p.open as f64,
            Some(p.limit as f64),
            Some(u),
            format!(
                "fullest {who} holds {} of its {} descriptors ({}); {} processes read{}",
                p.open,
                p.limit,
                pct(u),
                d.processes,
                if d.unreadable > 0 {
                    format!("; cannot tell for {} more ({})", d.unreadable, to_read_more())
                } else {
                    String::new()
                }
            ),
            &|| {
                format!(
                    "At its RLIMIT_NOFILE {who} gets EMFILE (\"Too many open files\") on accept(), socket() and \
                     open(). Look for a leak (ls /proc/{}/fd | wc -l rising) or raise its limit: LimitNOFILE= in its \
                     systemd unit, ulimit -n, or the container runtime's nofile (docker --ulimit nofile=, a pod's \
                     runtime default).",
                    p.pid
                )
            },
        ));
    }
    out
}

/// TCP buffer memory against tcp_mem, the pressure flag, and allocation failures now.
pub(super) fn socket_memory(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let m = now.socket_memory.as_ref()?;
    let counter =
        |s: &Snapshot, f: fn(&crate::sources::procfs::snmp::SnmpCounters) -> Option<u64>| s.snmp.as_ref().and_then(f);
    let aborts =
        rate(counter(before, |t| t.abort_on_memory), counter(now, |t| t.abort_on_memory), seconds).unwrap_or(0.0);
    let udp_errors = |s: &Snapshot| s.snmp.as_ref().map(|t| t.udp.iter().filter_map(|u| u.mem_errors).sum::<u64>());
    let mem_errors = rate(udp_errors(before), udp_errors(now), seconds).unwrap_or(0.0);
    let u = m
        .tcp
        .utilization()
        .into_iter()
        .chain(m.udp.utilization())
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let pressure = m.tcp.pressure == Some(true);
    let mut level = u.map_or(Level::Ok, Level::of);
    if pressure {
        level = level.max(Level::Warning);
    }
    if aborts > 0.0 || mem_errors > 0.0 {
        level = Level::Critical;
    }
    let limit = |p: &crate::sources::procfs::sockmem::ProtocolMemory| {
        p.limits.map_or("no limit visible (inside a namespace)".to_owned(), |l| format!("of {} MiB max", l[2] >> 20))
    };
    Some(check(
        "socket memory",
        level,
        m.tcp.used_bytes as f64,
        m.tcp.limits.map(|l| l[2] as f64),
        u,
        format!(
            "TCP buffers {} MiB {}{}; UDP {} MiB {}{}",
            m.tcp.used_bytes >> 20,
            limit(&m.tcp),
            if pressure { ", IN MEMORY PRESSURE" } else { "" },
            m.udp.used_bytes >> 20,
            limit(&m.udp),
            match (aborts > 0.0, mem_errors > 0.0) {
                (false, false) => String::new(),
                _ => format!(
                    "; {} TCP aborts/s and {} UDP drops/s for lack of memory now",
                    per_s(aborts),
                    per_s(mem_errors)
                ),
            }
        ),
        &|| {
            "Above tcp_mem's pressure threshold the kernel shrinks socket buffers; at its max TCP aborts \
             connections (\"out of memory -- consider tuning tcp_mem\") and UDP drops datagrams (udp_mem). Find \
             sockets with full queues (ss -tm, ss -um: slow readers, stuck peers) or raise net.ipv4.tcp_mem / \
             udp_mem (pages). The limits are host-wide."
                .to_owned()
        },
    ))
}

/// Each neighbour table against gc_thresh3 (host-wide).
pub(super) fn neighbours(before: &Snapshot, now: &Snapshot, seconds: f64) -> Vec<Check> {
    let Some(n) = &now.neighbours else { return Vec::new() };
    n.tables
        .iter()
        .map(|t| {
            let was = before.neighbours.as_ref().and_then(|b| b.tables.iter().find(|b| b.table == t.table));
            let fulls = rate(was.and_then(|b| b.table_fulls), t.table_fulls, seconds).unwrap_or(0.0);
            let u = t.utilization();
            let level = if fulls > 0.0 { Level::Critical } else { u.map_or(Level::Ok, Level::of) };
            let family = if t.table == "arp" { "ipv4" } else { "ipv6" };
            check(
                if t.table == "arp" { "ARP table" } else { "NDISC table" },
                level,
                t.entries as f64,
                t.gc_thresh3.map(|v| v as f64),
                u,
                format!(
                    "{} entries of gc_thresh3 {} ({}), host-wide{}",
                    t.entries,
                    t.gc_thresh3.map_or("unknown".into(), |v| v.to_string()),
                    u.map_or("?".into(), pct),
                    if fulls > 0.0 {
                        format!("; {} entries/s refused now (table full)", per_s(fulls))
                    } else {
                        String::new()
                    }
                ),
                &|| {
                    format!(
                        "At gc_thresh3 new neighbours fail (\"neighbour table overflow\") and packets to hosts not yet \
                         resolved are dropped. The table is shared by every network namespace. Raise \
                         net.{family}.neigh.default.gc_thresh3 (and gc_thresh2, gc_thresh1) above the number of hosts \
                         this host talks to directly."
                    )
                },
            )
        })
        .collect()
}

/// The per-CPU backlog: drops between the samples, and the fullest queue now.
pub(super) fn softnet(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let sn = now.softnet.as_ref()?;
    let dropped = rate(before.softnet.as_ref().map(|s| s.dropped()), Some(sn.dropped()), seconds).unwrap_or(0.0);
    let u = sn.backlog_utilization_max();
    let level = if dropped > 0.0 { Level::Critical } else { u.map_or(Level::Ok, Level::of) };
    Some(check(
        "CPU backlog",
        level,
        sn.cpus.iter().filter_map(|c| c.backlog).max().unwrap_or(0) as f64,
        sn.max_backlog.map(|m| m as f64),
        u,
        format!(
            "{} CPUs, {} packets dropped at full backlogs since boot{}; netdev_max_backlog {}",
            sn.cpus.len(),
            sn.dropped(),
            if dropped > 0.0 { format!(", {}/s now", per_s(dropped)) } else { String::new() },
            sn.max_backlog.map_or("not visible".to_owned(), |m| m.to_string())
        ),
        &|| {
            "A CPU's receive backlog is full, so packets are dropped before any socket sees them. Spread receive \
             work over more CPUs (RSS queues, RPS, irqbalance) or raise net.core.netdev_max_backlog; a rising \
             time_squeeze says the softirq runs out of budget (net.core.netdev_budget)."
                .to_owned()
        },
    ))
}
