//! The doctor's checks of the resources beside ports and conntrack: descriptors, socket
//! memory, the listen path, the per-CPU backlog and the neighbour tables. Each in plain
//! words with the fix; a failure counter that moved between the two samples is critical
//! (it is happening now), a level at 80 % a warning.

use super::words::{check, pct, per_s, rate, seen_in_part, to_read_more};
use super::{Check, Level};
use crate::snapshot::Snapshot;
use crate::sources::procfs::cgroup::Owner;

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

/// The listener that drops, and the SYN queue behind "Possible SYN flooding on port X".
pub(super) fn listen_path(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let lp = now.listen_path.as_ref()?;
    let max_syn = now.limits.as_ref().and_then(|l| l.tcp_max_syn_backlog);
    let earlier = |ip, port| {
        before.listen_path.as_ref()?.top.iter().find(|b| (b.local_ip, b.port) == (ip, port)).map(|b| b.drops)
    };
    // The listener whose drops rose most between the samples, else the fullest SYN queue.
    let dropping = lp
        .top
        .iter()
        .map(|l| (l, l.drops.saturating_sub(earlier(l.local_ip, l.port).unwrap_or(l.drops)) as f64 / seconds))
        .filter(|(_, r)| *r > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let fullest_syn = lp.top.iter().max_by(|a, b| a.syn_utilization(max_syn).total_cmp(&b.syn_utilization(max_syn)));
    let snmp_rate = |field: fn(&crate::sources::procfs::snmp::SnmpCounters) -> Option<u64>| {
        rate(before.snmp.as_ref().and_then(field), now.snmp.as_ref().and_then(field), seconds).unwrap_or(0.0)
    };
    let (cookies, syn_drops) = (snmp_rate(|t| t.reqq_full_do_cookies), snmp_rate(|t| t.reqq_full_drop));
    let u = lp.syn_utilization_max;
    let mut level = Level::of(u);
    if cookies > 0.0 {
        level = level.max(Level::Warning);
    }
    if dropping.is_some() || syn_drops > 0.0 {
        level = Level::Critical;
    }
    let syn_words = fullest_syn.map_or(String::new(), |l| {
        format!(
            "; fullest SYN queue {}:{} with {} half-open ({})",
            l.local_ip,
            l.port,
            l.syn_queue,
            pct(l.syn_utilization(max_syn))
        )
    });
    // Dropping now, else the one that dropped most since it opened (the top is by drops).
    let drop_words = match (dropping, lp.top.first().filter(|l| l.drops > 0)) {
        (Some((l, r)), _) => {
            format!("; {}:{} drops {} connections/s ({} since it opened)", l.local_ip, l.port, per_s(r), l.drops)
        }
        (None, Some(l)) => {
            format!("; most drops: {}:{}, {} since it opened, none in the last second", l.local_ip, l.port, l.drops)
        }
        (None, None) => String::new(),
    };
    let flood = if cookies + syn_drops > 0.0 {
        format!(
            "; the SYN queue overflows: {} cookies/s, {} SYNs dropped/s (\"Possible SYN flooding\")",
            per_s(cookies),
            per_s(syn_drops)
        )
    } else {
        String::new()
    };
    let who = dropping.map(|(l, _)| l).or(fullest_syn).map(|l| format!("{}:{}", l.local_ip, l.port));
    Some(check(
        "listen path",
        level,
        lp.drops as f64,
        None,
        Some(u),
        format!("{} listeners, {} drops on those open now{drop_words}{syn_words}{flood}", lp.listeners, lp.drops),
        &|| {
            format!(
                "The listener {} loses connections: its accept queue is full (the application does not accept() \
                 fast enough) or its SYN queue is (a SYN flood, or a backlog too small for the connection rate; this \
                 is the port of the kernel's \"Possible SYN flooding on port X\"). Raise its listen() backlog, \
                 net.core.somaxconn and net.ipv4.tcp_max_syn_backlog; keep net.ipv4.tcp_syncookies=1.",
                who.clone().unwrap_or_else(|| "behind the counters".into())
            )
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
