//! A golden test: a hand-built snapshot with every part present, rendered, against
//! `tests/fixtures/prometheus/golden.txt` byte for byte, so that a refactor cannot
//! change the output (names, labels and their order, HELP, TYPE, escaping) unnoticed.
//! `SOCKWATCH_BLESS=1 cargo test golden` rewrites the file after a deliberate change.

use std::time::{Duration, SystemTime};

use super::{render, spell_infinities};
use crate::snapshot::{Overdue, Snapshot, Source, SourceStatus};
use crate::sources::ctnetlink::attribution::{Attribution, DestKey, NatKey};
use crate::sources::ctnetlink::dump::Breakdown;
use crate::sources::procfs::conntrack::{Conntrack, ConntrackStats};

fn attribution() -> Attribution {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    Attribution {
        sources: vec![(ip("10.0.0.7"), 61), (ip("2001:db8::5"), 3)],
        destinations: vec![(DestKey { addr: ip("192.0.2.10"), port: 443, proto: 6 }, 58)],
        nat: vec![(NatKey { nat_ip: ip("203.0.113.1"), remote_ip: ip("192.0.2.10"), remote_port: 443, proto: 6 }, 50)],
        distinct_sources: 9,
        distinct_destinations: 4,
        nat_mappings: 1,
        nat_entries: 50,
        nat_ports: 100,
        nat_blocking: vec![30],
        nat_blocking_max: 30,
        nat_seconds_to_exhaustion: vec![Some(35.0)],
        ..Attribution::default()
    }
}
use crate::sources::netns::DeepReading;
use crate::sources::netns::{Namespace, Namespaces, NsCounters, Owner};
use crate::sources::procfs::fds::{Descriptors, FileHandles, ProcessFds};
use crate::sources::procfs::limits::Limits;
use crate::sources::procfs::neighbour::{NeighbourTable, Neighbours};
use crate::sources::procfs::snmp::{SnmpCounters, UdpMib};
use crate::sources::procfs::sockmem::{ProtocolMemory, SocketMemory};
use crate::sources::procfs::sockstat::Sockstat;
use crate::sources::procfs::softnet::{CpuBacklog, Softnet};
use crate::sources::tcp::listeners::{ListenPath, Listener};
use crate::sources::tcp::ports::EphemeralRange;
use crate::sources::tcp::ports::{Destination, Ephemeral, ListenQueue, PortStates, PortUsage};
use crate::sources::tcp::projection::{Trajectory, TwHistogram};
use crate::sources::tcp::sockets::{Sockets, TcpStates};
use crate::sources::udp::sockets::{Udp, UdpPort};

fn dest(remote: &str, port: u16, used: u64, rate: f64, projected: f64, seconds: Option<f64>) -> Destination {
    Destination {
        local_ip: "10.0.0.1".parse().unwrap(),
        remote_ip: remote.parse().unwrap(),
        remote_port: port,
        used,
        close_rate: rate,
        projected,
        seconds_to_exhaustion: seconds,
    }
}

fn golden_ports() -> Option<PortUsage> {
    let heading = dest("10.0.0.2", 80, 2400, 106.0, 6360.0, Some(38.0));
    Some(PortUsage {
        ephemeral: Some(Ephemeral {
            top: vec![heading.clone(), dest("2001:db8::9", 443, 3, 0.0, 3.0, None)],
            destinations: 2,
            untracked: 0,
            bound: 1,
            busiest: 2400,
            projected_max: 6360.0,
            worst: Some(heading),
        }),
        ports: vec![PortStates { port: 8080, states: [0, 5, 0, 1, 0, 0, 2, 0, 1, 0, 0, 0, 0] }],
        listeners: vec![ListenQueue { local_ip: "0.0.0.0".parse().unwrap(), port: 8080, length: 3, limit: 128 }],
        listener_count: 1,
        listen_utilization_max: 3.0 / 128.0,
    })
}

fn golden_snmp() -> Option<SnmpCounters> {
    Some(SnmpCounters {
        active_opens: Some(10),
        passive_opens: Some(20),
        attempt_fails: Some(1),
        estab_resets: Some(2),
        retrans_segs: Some(3),
        time_wait_overflow: Some(0),
        listen_overflows: Some(4),
        listen_drops: Some(5),
        abort_on_memory: None,
        syncookies_sent: Some(9),
        memory_pressures: Some(1),
        udp: vec![
            UdpMib {
                family: "ipv4",
                protocol: "udp",
                in_datagrams: Some(1500),
                no_ports: Some(12),
                in_errors: Some(7),
                rcvbuf_errors: Some(5),
                sndbuf_errors: Some(1),
                mem_errors: Some(0),
            },
            UdpMib { family: "ipv6", protocol: "udplite", in_datagrams: Some(3), ..UdpMib::default() },
        ],
        ..SnmpCounters::default()
    })
}

fn golden_conntrack_breakdown() -> Option<Breakdown> {
    let mut tcp = [0; 10];
    tcp[3] = 70;
    tcp[7] = 30;
    let mut time_wait = TwHistogram::default();
    time_wait.counts[11] = 30;
    Some(Breakdown {
        tcp,
        udp: 5,
        icmp: 1,
        other: 0,
        assured: 60,
        nated: 2,
        total: 106,
        time_wait,
        time_wait_timeout: 120,
        attribution: attribution(),
        events: Some(crate::sources::ctnetlink::events::EventStats {
            events_total: 5120,
            overflows_total: 1,
            resyncs_total: 2,
            buffer_bytes: 33554432,
        }),
        ..Breakdown::default()
    })
}

fn golden_udp() -> Option<Udp> {
    Some(Udp {
        sockets: [12, 3],
        ports: vec![
            UdpPort {
                local_ip: "0.0.0.0".parse().unwrap(),
                port: 53,
                sockets: 2,
                drops_total: 1234,
                drops_recent: 34,
                queue_bytes: 212_992,
                buffer_bytes: 425_984,
            },
            UdpPort {
                local_ip: "::1".parse().unwrap(),
                port: 8125,
                sockets: 1,
                drops_total: 0,
                drops_recent: 0,
                queue_bytes: 0,
                buffer_bytes: 212_992,
            },
        ],
        drops_total: 1240,
        queue_utilization_max: 0.5,
        untracked: 0,
        interrupted: false,
    })
}

fn golden_listen_path() -> Option<ListenPath> {
    Some(ListenPath {
        top: vec![Listener {
            local_ip: "0.0.0.0".parse().unwrap(),
            port: 8080,
            drops: 42,
            accept_queue: 3,
            backlog: 128,
            syn_queue: 1,
        }],
        listeners: 1,
        drops: 42,
        syn_utilization_max: 1.0 / 128.0,
    })
}

fn golden_descriptors() -> Option<Descriptors> {
    Some(Descriptors {
        host: Some(FileHandles { allocated: 389, max: 2_466_093 }),
        top: vec![ProcessFds {
            pid: 4242,
            command: "nginx \"w\"".into(),
            open: 1000,
            limit: 1024,
            owner: Owner { container_id: None, runtime: None, pod_uid: Some("0f9b2c4e".into()) },
            uid: 33,
        }],
        processes: 120,
        unreadable: 3,
        method: "stat",
    })
}

fn golden_neighbours() -> Option<Neighbours> {
    Some(Neighbours {
        tables: vec![NeighbourTable {
            table: "arp",
            entries: 900,
            forced_gc_runs: Some(5),
            table_fulls: Some(0),
            gc_thresh1: Some(128),
            gc_thresh2: Some(512),
            gc_thresh3: Some(1024),
        }],
    })
}

fn golden_namespaces() -> Option<Namespaces> {
    Some(Namespaces {
        count: 3,
        unreadable: 1,
        unidentified_processes: 105,
        top: vec![
            Namespace {
                inode: 4026532247,
                pid: Some(4242),
                name: None,
                owner: Owner {
                    container_id: Some("4f1c0e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e".into()),
                    runtime: Some("containerd"),
                    pod_uid: Some("0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f".into()),
                },
                own: false,
                counters: Some(NsCounters {
                    tcp_inuse: 40,
                    time_wait: 27_000,
                    udp_inuse: Some(2),
                    conntrack_entries: Some(250_000),
                    conntrack_drop: Some(17),
                    conntrack_early_drop: Some(3),
                    conntrack_insert_failed: Some(0),
                    active_opens: Some(900_000),
                    attempt_fails: Some(12),
                    listen_overflows: Some(0),
                    time_wait_overflow: None,
                }),
                pressure: 0.95,
                deep: Some(DeepReading {
                    range: EphemeralRange::new(32768, 60999),
                    busiest: Some(dest("10.96.0.10", 443, 21_000, 350.0, 21_000.0, None)),
                    utilization: 21_000.0 / 28_232.0,
                    states: [0, 12, 1, 0, 0, 0, 21_000, 0, 2, 0, 3, 0, 0],
                    soonest: Some(dest("10.96.0.10", 443, 21_000, 350.0, 24_000.0, Some(42.0))),
                    listen_utilization: 0.25,
                    age: 2,
                    age_seconds: 20.0,
                }),
                conntrack: Some(attribution()),
            },
            Namespace {
                inode: 4026531833,
                pid: Some(1),
                name: Some("host \"quoted\"".into()),
                own: true,
                counters: Some(NsCounters { tcp_inuse: 130, time_wait: 3600, ..NsCounters::default() }),
                pressure: 0.13,
                ..Namespace::default()
            },
        ],
        worst_conntrack: Some((4026532247, 250_000)),
        worst_time_wait: Some((4026532247, 27_000)),
        worst_ports: Some((4026532247, 21_000.0 / 28_232.0)),
        soonest: Some((4026532247, 22.0)),
        deep_revisit_samples: 40,
        deep_needs: [2, 5, 193],
        deep_near_revisit_samples: 1,
        deep_down: None,
        deep_off: false,
        deep_refresh_dumps_total: 3,
        deep_near_refresh_seconds: 1.0,
        deep_dumps_total: 77,
        deep_kept: 2,
    })
}

fn golden_process() -> Option<crate::sources::procfs::process::ProcessStats> {
    Some(crate::sources::procfs::process::ProcessStats {
        cpu_seconds: 2.25,
        resident_bytes: 7_340_032,
        virtual_bytes: 52_609_024,
        threads: 7,
        start_time_seconds: 1_795_640_000.5,
        open_fds: 42,
        max_fds: 65_536,
    })
}

fn golden_conntrack() -> Option<Conntrack> {
    Some(Conntrack {
        entries: 100,
        limit: Some(262_144),
        buckets: Some(65_536),
        stats: Some(ConntrackStats {
            entries: Some(100),
            drop: Some(1),
            early_drop: Some(2),
            insert_failed: Some(3),
            invalid: Some(4),
            search_restart: Some(5),
            found: Some(6),
            insert: Some(7),
            clash_resolve: None,
        }),
    })
}

fn golden_limits() -> Option<Limits> {
    Some(Limits {
        port_range_low: 40000,
        port_range_high: 45999,
        reserved_in_range: 0,
        tcp_max_tw_buckets: Some(131_072),
        tcp_fin_timeout: Some(60),
        tcp_tw_reuse: Some(2),
        tcp_max_orphans: Some(65_536),
        tcp_max_syn_backlog: Some(512),
        somaxconn: Some(4096),
        tcp_tw_timeout: None,
    })
}

fn golden_socket_memory() -> Option<SocketMemory> {
    Some(SocketMemory {
        tcp: ProtocolMemory { used_bytes: 4096 * 103, pressure: Some(false), limits: Some([4096, 8192, 16384]) },
        udp: ProtocolMemory { used_bytes: 8192, pressure: None, limits: None },
    })
}

fn golden_softnet() -> Option<Softnet> {
    Some(Softnet {
        cpus: vec![
            CpuBacklog { cpu: 0, processed: 1000, dropped: 0, time_squeeze: 1, backlog: Some(0) },
            CpuBacklog { cpu: 2, processed: 900, dropped: 7, time_squeeze: 2, backlog: Some(250) },
        ],
        max_backlog: Some(1000),
        numbered: true,
    })
}

/// Every part of a snapshot, each family's figures from its own function above.
fn snapshot() -> Snapshot {
    let mut states = TcpStates::default();
    for (i, n) in [0, 120, 3, 4, 5, 6, 2400, 7, 8, 9, 10, 11, 0].into_iter().enumerate() {
        states.ipv4[i] = n;
        states.ipv6[i] = n / 2;
    }
    Snapshot {
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_646_199),
        duration: Duration::from_millis(12),
        interval: Duration::from_secs(10),
        sockets: Some(Sockets { states, interrupted: false }),
        ports: golden_ports(),
        sockstat: Some(Sockstat {
            inuse: 130,
            orphan: 1,
            tw: 3600,
            alloc: 140,
            mem_bytes: 4096 * 268,
            udp_inuse: [Some(12), Some(3)],
        }),
        conntrack: golden_conntrack(),
        snmp: golden_snmp(),
        conntrack_breakdown: golden_conntrack_breakdown(),
        conntrack_projection: Some(Trajectory {
            close_rate: 1.5,
            trend: 0.0,
            projected: 256.0,
            seconds_to_exhaustion: None,
        }),
        limits: golden_limits(),
        udp: golden_udp(),
        listen_path: golden_listen_path(),
        descriptors: golden_descriptors(),
        socket_memory: golden_socket_memory(),
        softnet: golden_softnet(),
        neighbours: golden_neighbours(),
        namespaces: golden_namespaces(),
        process: golden_process(),
        sources: Source::ALL
            .iter()
            .map(|&source| SourceStatus {
                source,
                up: source != Source::Snmp,
                errors_total: u64::from(source == Source::Snmp),
                duration: Duration::from_micros(250),
                error: (source == Source::Snmp).then(|| "a \"quoted\" reason\\with a backslash".to_owned()),
            })
            .collect(),
        samples_total: 42,
        inconsistent_total: 1,
        overdue: Some(Overdue { running: Duration::from_secs(7), source: Some(Source::Sockets) }),
    }
}

#[test]
fn infinities_are_spelled_as_the_exposition_format_wants() {
    let text = String::from_utf8(render(&snapshot())).unwrap();
    assert!(text.contains("\nsockwatch_conntrack_seconds_to_full +Inf\n"), "{text}");
    assert!(!text.contains(" inf\n"));
    assert_eq!(spell_infinities(b"a 1\nb -inf\nc{x=\"inf\"} inf\n".to_vec()), b"a 1\nb -Inf\nc{x=\"inf\"} +Inf\n");
}

#[test]
fn golden_rendering_of_every_family() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/prometheus/golden.txt");
    let text = String::from_utf8(render(&snapshot())).unwrap();
    // The build's own facts change with every commit and compiler: placeholders.
    let build = format!("revision=\"{}\",rustc=\"{}\"", env!("SOCKWATCH_REVISION"), env!("SOCKWATCH_RUSTC"));
    assert!(text.contains(&build), "{build} in sockwatch_build_info");
    let text = text.replace(&build, "revision=\"REVISION\",rustc=\"RUSTC\"");
    if std::env::var("SOCKWATCH_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(path).expect("golden file: SOCKWATCH_BLESS=1 cargo test golden");
    if text != golden {
        let first = text.lines().zip(golden.lines()).position(|(a, b)| a != b);
        panic!(
            "rendering differs from {path} at line {}:\n  now:    {:?}\n  golden: {:?}",
            first.map_or(text.lines().count().min(golden.lines().count()) + 1, |i| i + 1),
            first.and_then(|i| text.lines().nth(i)),
            first.and_then(|i| golden.lines().nth(i))
        );
    }
}

/// The same snapshot through every Munin graph (config and values, breakdown on), against
/// `tests/fixtures/munin/golden.txt` byte for byte: the Munin side's golden test.
#[test]
fn golden_munin_graphs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/munin/golden.txt");
    let mut text = String::new();
    crate::munin::catalog::multigraph(Some(&snapshot()), true, true, true, &mut text);
    if std::env::var("SOCKWATCH_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(path).expect("golden file: SOCKWATCH_BLESS=1 cargo test golden");
    let first = text.lines().zip(golden.lines()).position(|(a, b)| a != b);
    assert!(text == golden, "Munin output differs from {path} at line {first:?}");
}

/// `netns.deep = false`: the counters stay, the deep layer's series are absent (not 0).
#[test]
fn the_deep_layer_off_exports_no_deep_series() {
    let mut s = snapshot();
    s.namespaces.as_mut().unwrap().deep_off = true;
    let text = String::from_utf8(render(&s)).unwrap();
    for family in ["sockwatch_netns_deep_up", "sockwatch_netns_deep_namespaces", "sockwatch_netns_deep_dumps_total"] {
        assert!(!text.contains(family), "{family} with the layer off");
    }
    assert!(text.contains("\nsockwatch_netns_info{"), "the counters' namespaces stay");
}
