//! The Munin side: the protocol shim spoken raw (limits included), the plugin with the
//! daemon up, down and stuck, a real munin-node running our plugin, and the conntrack
//! breakdown against `conntrack -L`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sockwatch-munin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

use common::MuninSession as Session;

/// `field.value N` lines into a map (`U` as NaN).
fn values(lines: &[String]) -> HashMap<String, f64> {
    lines
        .iter()
        .filter_map(|l| l.split_once(".value "))
        .map(|(k, v)| (k.to_owned(), if v == "U" { f64::NAN } else { v.parse().unwrap() }))
        .collect()
}

fn metric_sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

/// The munin fetch values must be the Prometheus values of the same snapshot.
fn assert_same_snapshot(tcp: &HashMap<String, f64>, ct: &HashMap<String, f64>, m: &HashMap<String, f64>) {
    for state in ["established", "time_wait", "listen", "close_wait", "syn_recv"] {
        let prom = metric_sum(m, &format!("sockwatch_tcp_sockets{{family=\"ipv4\",state=\"{state}\"}}"))
            + metric_sum(m, &format!("sockwatch_tcp_sockets{{family=\"ipv6\",state=\"{state}\"}}"));
        assert_eq!(tcp[state], prom, "{state}");
    }
    assert!(!tcp.contains_key("max_tw"), "tcp_max_tw_buckets is a threshold, not a drawn line");
    assert_eq!(ct["entries"], value(m, "sockwatch_conntrack_entries"));
    assert_eq!(ct["max"], value(m, "sockwatch_conntrack_entries_limit"));
}

/// The graphs the daemon serves without the conntrack breakdown, in order.
const GRAPHS: [&str; 11] = [
    "tcp_states",
    "conntrack",
    "conntrack_errors",
    "ephemeral_ports",
    "listen_queue",
    "listen_drops",
    "udp_drops",
    "netns",
    "netns_counts",
    "resources",
    "resource_failures",
];

fn shim_speaks_the_munin_protocol() {
    let dir = tmpdir("proto");
    let sock = dir.join("munin.sock");
    let d = Served::start(&["--interval", "1h", "--munin.socket", sock.to_str().unwrap()]);
    let mut s = Session::open(&sock);
    let list = s.ask_line("list");
    for g in GRAPHS {
        assert!(list.split_whitespace().any(|n| n == format!("sockwatch_{g}")), "{g} in {list}");
    }
    assert!(s.ask_line("version").starts_with("munins node on "));
    assert!(s.ask_line("\u{1}\u{ff}garbage").starts_with("# Unknown command"));
    assert_eq!(s.ask("fetch sockwatch_nope"), vec!["# Unknown service"]);
    let config = s.ask("config sockwatch_conntrack");
    assert!(config.contains(&"graph_category network".to_owned()), "{config:?}");
    let limit = value(&parse_metrics(&http_get(&d.addr, "/metrics").1), "sockwatch_conntrack_entries_limit");
    assert!(config.contains(&format!("entries.warning {}", limit * 0.8)), "80 % of nf_conntrack_max: {config:?}");
    assert!(config.contains(&format!("entries.critical {}", limit * 0.9)), "{config:?}");
    let tcp = values(&s.ask("fetch sockwatch_tcp_states"));
    let ct = values(&s.ask("fetch sockwatch_conntrack"));
    let m = parse_metrics(&http_get(&d.addr, "/metrics").1);
    assert_same_snapshot(&tcp, &ct, &m);
    let ports = values(&s.ask("fetch sockwatch_ephemeral_ports"));
    assert!((ports["busiest"] - 100.0 * value(&m, "sockwatch_ephemeral_port_utilization_max")).abs() < 1e-3);
    let projected = 100.0 * value(&m, "sockwatch_ephemeral_port_projected_utilization_max");
    assert!((ports["projected"] - projected).abs() < 1e-3, "{ports:?} against {projected}");
    // Multigraph negotiation.
    assert_eq!(s.ask_line("cap multigraph dirtyconfig"), "cap multigraph dirtyconfig\n");
    assert_eq!(s.ask_line("list"), "sockwatch\n");
    let mg = s.ask("fetch sockwatch");
    assert_eq!(mg.iter().filter(|l| l.starts_with("multigraph sockwatch_")).count(), GRAPHS.len(), "{mg:?}");
    s.send(b"quit\n");
    assert_eq!(s.line(), "", "quit closes the session");
}

fn shim_limits_line_length_and_idle_clients() {
    let dir = tmpdir("limits");
    let sock = dir.join("munin.sock");
    let _d = Served::start(&["--munin.socket", sock.to_str().unwrap(), "--munin.idle-timeout", "1s"]);
    // An over-long line: a message, then the session ends.
    let mut s = Session::open(&sock);
    s.send(&[b'x'; 5000]);
    assert!(s.line().starts_with("# line too long"));
    assert_eq!(s.line(), "");
    // A client that never sends: closed after the idle timeout.
    let mut s = Session::open(&sock);
    let start = Instant::now();
    assert!(s.line().starts_with("# idle timeout"));
    assert_eq!(s.line(), "");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "{waited:?}");
}

fn flood_of_clients_is_capped_and_metrics_stay_fast() {
    let dir = tmpdir("flood");
    let sock = dir.join("munin.sock");
    let d = Served::start(&["--munin.socket", sock.to_str().unwrap(), "--munin.max-clients", "50"]);
    // 200 silent sessions, 50 slots: every newcomer is greeted, and each one past the 50th
    // closes the oldest silent session to make room.
    let mut held = Vec::new();
    for _ in 0..200 {
        let s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
        assert!(first.starts_with("# munin node at "), "{first:?}");
        held.push((s, r));
    }
    let mut evicted = 0;
    for (s, r) in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut next = String::new();
        if r.read_line(&mut next).is_ok() {
            assert_eq!(next, "# idle, closed to make room\n");
            evicted += 1;
        }
    }
    assert_eq!(evicted, 150, "the oldest 150 make room, 50 stay open");
    for (_, r) in &mut held[..150] {
        assert_eq!(r.read(&mut [0u8; 1]).unwrap(), 0, "an evicted session is closed");
    }
    let start = Instant::now();
    assert_eq!(http_get(&d.addr, "/metrics").0, 200);
    assert!(start.elapsed() < Duration::from_secs(1), "/metrics took {:?} during the flood", start.elapsed());
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let mut s = Session::open(&sock); // slots are released
    assert!(s.ask_line("list").contains("sockwatch_tcp_states"));
}

fn plugin(args: &[&str], socket: &Path, env: &[(&str, &str)]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(munin_plugin()).args(args).env("socket", socket).envs(env.iter().copied()).output().unwrap();
    (out, start.elapsed())
}

fn plugin_relays_to_the_daemon() {
    let dir = tmpdir("plugin");
    let sock = dir.join("munin.sock");
    // Namespaces read too: the multigraph below must have a value for every field.
    let d = Served::start(&["--interval", "1h", "--netns", "on", "--munin.socket", sock.to_str().unwrap()]);
    let link = dir.join("sockwatch_tcp_states");
    std::os::unix::fs::symlink(munin_plugin(), &link).unwrap();
    let run = |arg: Option<&str>| {
        let out = Command::new(&link).args(arg).env("socket", &sock).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(Some("autoconf")), "yes\n");
    let suggest = run(Some("suggest"));
    assert_eq!(suggest.lines().collect::<Vec<_>>(), GRAPHS);
    assert!(run(Some("config")).contains("time_wait.warning "), "thresholds come from the daemon");
    let tcp = values(&run(None).lines().map(str::to_owned).collect::<Vec<_>>());
    let ct_link = dir.join("sockwatch_conntrack");
    std::os::unix::fs::symlink(munin_plugin(), &ct_link).unwrap();
    let out = Command::new(&ct_link).env("socket", &sock).output().unwrap();
    let ct_text = String::from_utf8(out.stdout).unwrap();
    let ct = values(&ct_text.lines().map(str::to_owned).collect::<Vec<_>>());
    assert_same_snapshot(&tcp, &ct, &parse_metrics(&http_get(&d.addr, "/metrics").1));
    // The binary itself linked as the plugin (argv[0] names the graph): the same answer
    // as through the plugin file, byte for byte (the daemon holds one snapshot for the hour).
    let direct = dir.join("direct");
    std::fs::create_dir_all(&direct).unwrap();
    std::os::unix::fs::symlink(BIN, direct.join("sockwatch_conntrack")).unwrap();
    let out = Command::new(direct.join("sockwatch_conntrack")).env("socket", &sock).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(ct_text.contains("entries.value "), "{ct_text}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), ct_text);
    // The multigraph form, as munin-node runs it for a multigraph-capable master.
    let mg = dir.join("sockwatch_multigraph");
    std::os::unix::fs::symlink(munin_plugin(), &mg).unwrap();
    let out = Command::new(&mg).env("socket", &sock).env("MUNIN_CAP_MULTIGRAPH", "1").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("multigraph sockwatch_").count(), GRAPHS.len(), "{text}");
    assert!(!text.contains("U\n"), "{text}");
    let out = Command::new(&mg).env("socket", &sock).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("needs a multigraph-capable"));
}

fn plugin_without_daemon_prints_unknown_at_once() {
    let dir = tmpdir("nodaemon");
    let sock = dir.join("absent.sock");
    let (out, took) = plugin(&["sockwatch_conntrack"], &sock, &[]);
    // The plugin file run under its own name, sockwatch_: not a graph name.
    assert!(!out.status.success());
    let link = dir.join("sockwatch_conntrack");
    std::os::unix::fs::symlink(munin_plugin(), &link).unwrap();
    let start = Instant::now();
    let out = Command::new(&link).env("socket", &sock).output().unwrap();
    let took2 = start.elapsed();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "entries.value U\nmax.value U\n");
    assert!(took < Duration::from_secs(2) && took2 < Duration::from_secs(2), "{took:?} {took2:?}");
    let out = Command::new(&link).arg("config").env("socket", &sock).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("entries.label "));
    let out = Command::new(&link).arg("autoconf").env("socket", &sock).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no ("), "{out:?}");
}

fn plugin_gives_up_on_a_stuck_daemon_within_the_deadline() {
    let dir = tmpdir("stuck");
    let sock = dir.join("stuck.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // Accepts and never says a word.
    let _hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(2) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let link = dir.join("sockwatch_tcp_states");
    std::os::unix::fs::symlink(munin_plugin(), &link).unwrap();
    let start = Instant::now();
    let out = Command::new(&link).env("socket", &sock).output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 11);
    assert!(text.lines().all(|l| l.ends_with(".value U")), "{text}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_millis(2600), "took {took:?}");
}

/// munin-node reads its plugins from /etc/munin/plugins and /etc/munin/plugin-conf.d with
/// no option to move them, so it runs in a private mount namespace with our directories
/// bind-mounted there: the host's munin configuration is never touched.
fn real_munin_node_serves_our_values() {
    if !require("real_munin_node_serves_our_values", &["munin-node", "munin-run", "unshare", "mount"]) {
        return;
    }
    let dir = tmpdir("node");
    let sock = dir.join("munin.sock");
    let plugins = dir.join("plugins");
    let conf_d = dir.join("plugin-conf.d");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&conf_d).unwrap();
    for g in ["tcp_states", "conntrack", "ephemeral_ports"] {
        std::os::unix::fs::symlink(munin_plugin(), plugins.join(format!("sockwatch_{g}"))).unwrap();
    }
    std::fs::write(conf_d.join("sockwatch"), format!("[sockwatch_*]\nuser root\nenv.socket {}\n", sock.display()))
        .unwrap();
    let node_conf = dir.join("munin-node.conf");
    std::fs::write(
        &node_conf,
        format!(
            "log_level 4\nlog_file {d}/node.log\npid_file {d}/node.pid\nbackground 0\nsetsid 0\nuser root\ngroup root\n\
             host 127.0.0.1\nport 4949\nallow ^127\\.0\\.0\\.1$\n",
            d = dir.display()
        ),
    )
    .unwrap();

    let ns = Netns::new("munin");
    let daemon = Daemon::start(&ns, 9822, &["--interval", "1h", "--munin.socket", sock.to_str().unwrap()]);

    // munin-run: config and fetch of an installed plugin.
    let munin_run = |plugin: &str, arg: &[&str]| -> String {
        let out = Command::new("munin-run")
            .args(["--config", node_conf.to_str().unwrap(), "--servicedir", plugins.to_str().unwrap()])
            .args(["--sconfdir", conf_d.to_str().unwrap(), plugin])
            .args(arg)
            .output()
            .unwrap();
        assert!(out.status.success(), "munin-run {plugin} {arg:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let config = munin_run("sockwatch_tcp_states", &["config"]);
    assert!(config.contains("graph_title TCP sockets by state\n") && config.contains("time_wait.warning "), "{config}");
    for line in config.lines() {
        let key = line.split_whitespace().next().unwrap();
        assert!(key.starts_with("graph_") || key.contains('.'), "not a munin config line: {line:?}");
    }
    let fetched = munin_run("sockwatch_tcp_states", &[]);
    assert_eq!(fetched.lines().count(), 11, "one value per state");
    assert!(fetched.lines().all(|l| l.contains(".value ") && !l.ends_with(" U")), "{fetched}");

    // munin-node-configure finds the wildcard plugin by its magic markers and asks it.
    let libdir = dir.join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::copy(munin_plugin(), libdir.join("sockwatch_")).unwrap();
    let out = Command::new("munin-node-configure")
        .args(["--suggest", "--libdir", libdir.to_str().unwrap(), "--servicedir", plugins.to_str().unwrap()])
        .args(["--sconfdir", conf_d.to_str().unwrap(), "--config", node_conf.to_str().unwrap()])
        .output()
        .unwrap();
    let suggest = String::from_utf8_lossy(&out.stdout);
    let row = suggest.lines().find(|l| l.starts_with("sockwatch_")).unwrap_or_else(|| panic!("{suggest}"));
    assert!(row.contains("yes") && row.contains("listen_queue"), "munin-node-configure --suggest: {row}");

    // munin-node itself, inside the namespace, in a private mount namespace.
    let script = format!(
        "mount --bind {p} /etc/munin/plugins && mount --bind {c} /etc/munin/plugin-conf.d && \
         exec munin-node --config {n} --foreground",
        p = plugins.display(),
        c = conf_d.display(),
        n = node_conf.display()
    );
    let node = Command::new("ip")
        .args(["netns", "exec", &ns.name, "unshare", "-m", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node_guard = KillOnDrop(node);
    let ns_name = ns.name.clone();
    let (list, tcp, ct) = ns.enter(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match std::net::TcpStream::connect("127.0.0.1:4949") {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "munin-node in {ns_name} did not listen: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("# munin node at "), "{line}");
        let mut ask = |cmd: &str, multi: bool| -> Vec<String> {
            w.write_all(format!("{cmd}\n").as_bytes()).unwrap();
            let mut out = Vec::new();
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                if !multi {
                    return vec![l.trim_end().to_owned()];
                }
                if l == ".\n" || l.is_empty() {
                    return out;
                }
                out.push(l.trim_end().to_owned());
            }
        };
        let list = ask("list", false).remove(0);
        let tcp = ask("fetch sockwatch_tcp_states", true);
        let ct = ask("fetch sockwatch_conntrack", true);
        (list, tcp, ct)
    });
    drop(node_guard);
    for g in ["sockwatch_tcp_states", "sockwatch_conntrack", "sockwatch_ephemeral_ports"] {
        assert!(list.split_whitespace().any(|n| n == g), "{g} not in munin-node's list: {list}");
    }
    let m = parse_metrics(&daemon.get(&ns, "/metrics").1);
    assert_same_snapshot(&values(&tcp), &values(&ct), &m);
    // The values describe the namespace: exactly the daemon's own listener.
    assert_eq!(values(&tcp)["listen"], 1.0);
}

/// Parses `conntrack -L` lines the way munin's fw_conntrack does.
#[derive(Default, Debug, PartialEq)]
struct CtList {
    total: f64,
    udp: f64,
    assured: f64,
    nated: f64,
    tcp: HashMap<String, f64>,
}

fn conntrack_list(ns: &Netns) -> CtList {
    let out = ns.exec_stdout("conntrack", &["-L"]);
    let mut c = CtList::default();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        c.total += 1.0;
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks[0] {
            "tcp" => *c.tcp.entry(toks[3].to_lowercase()).or_default() += 1.0,
            "udp" => c.udp += 1.0,
            _ => {}
        }
        if line.contains("[ASSURED]") {
            c.assured += 1.0;
        }
        let addrs: Vec<&str> =
            toks.iter().filter(|t| t.starts_with("src=") || t.starts_with("dst=")).map(|t| &t[4..]).collect();
        if addrs.len() == 4 && (addrs[0] != addrs[3] || addrs[1] != addrs[2]) {
            c.nated += 1.0;
        }
    }
    c
}

fn breakdown_matches_conntrack_list() {
    if !require("breakdown_matches_conntrack_list", &["nft", "conntrack"]) {
        return;
    }
    let ns = Netns::new("ctlist");
    ns.enable_conntrack();
    // DNAT 127.0.0.1:9999 to 127.0.0.2:8888: entries whose reply comes from another address.
    let nat = "table ip sockwatch_nat {\n chain out {\n  type nat hook output priority -100; policy accept;\n  \
               ip daddr 127.0.0.1 tcp dport 9999 dnat to 127.0.0.2:8888\n }\n}\n";
    let mut child =
        Command::new("ip").args(["netns", "exec", &ns.name, "nft", "-f", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(nat.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let _held = ns.enter(|| {
        use std::net::{TcpListener, TcpStream, UdpSocket};
        let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        let direct = TcpListener::bind("127.0.0.1:8080").unwrap();
        let natted = TcpListener::bind("127.0.0.2:8888").unwrap();
        for _ in 0..6 {
            held.push(Box::new(TcpStream::connect("127.0.0.1:8080").unwrap()));
            held.push(Box::new(direct.accept().unwrap().0));
        }
        for _ in 0..3 {
            held.push(Box::new(TcpStream::connect("127.0.0.1:9999").unwrap()));
            held.push(Box::new(natted.accept().unwrap().0));
        }
        for _ in 0..9 {
            let c = TcpStream::connect("127.0.0.1:8080").unwrap();
            let (mut a, _) = direct.accept().unwrap();
            drop(c);
            let mut b = [0u8; 1];
            assert_eq!(a.read(&mut b).unwrap(), 0);
        }
        let server = UdpSocket::bind("127.0.0.1:5353").unwrap();
        for _ in 0..4 {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.send_to(b"q", "127.0.0.1:5353").unwrap();
            held.push(Box::new(c));
        }
        let mut b = [0u8; 8];
        for _ in 0..4 {
            server.recv_from(&mut b).unwrap();
        }
        held.push(Box::new(direct));
        held.push(Box::new(natted));
        held.push(Box::new(server));
        held
    });
    ns.settle();
    let m = parse_metrics(&ns.exec_stdout(BIN, &["sample", "--conntrack.breakdown", "--log.level", "warn"]));
    let truth = conntrack_list(&ns);
    assert_eq!(value(&m, "sockwatch_source_up{source=\"conntrack_breakdown\"}"), 1.0);
    for state in ["established", "time_wait", "syn_sent", "fin_wait", "close_wait"] {
        let ours = value(&m, &format!("sockwatch_conntrack_tcp_entries{{state=\"{state}\"}}"));
        assert_eq!(ours, truth.tcp.get(state).copied().unwrap_or(0.0), "{state}");
    }
    assert_eq!(truth.tcp["established"], 9.0);
    assert_eq!(truth.tcp["time_wait"], 9.0);
    assert_eq!(value(&m, "sockwatch_conntrack_protocol_entries{protocol=\"udp\"}"), truth.udp);
    assert_eq!(truth.udp, 4.0);
    assert_eq!(value(&m, "sockwatch_conntrack_assured_entries"), truth.assured);
    assert_eq!(value(&m, "sockwatch_conntrack_nat_entries"), truth.nated);
    assert_eq!(truth.nated, 3.0);
    assert_eq!(metric_sum(&m, "sockwatch_conntrack_protocol_entries{"), truth.total);
    assert_eq!(truth.total, value(&m, "sockwatch_conntrack_entries"));
}

/// Without CAP_NET_ADMIN the kernel refuses the ctnetlink dump: the breakdown source is
/// down, the rest works, and the daemon says why once, not at every dump.
fn breakdown_without_cap_net_admin_is_down_and_logged_once() {
    if !require("breakdown_without_cap_net_admin_is_down_and_logged_once", &["setpriv"]) {
        return;
    }
    let unprivileged = ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"];
    let bin = bin_for_any_user();
    let out = Command::new("setpriv")
        .args(unprivileged)
        .args([&bin, "sample", "--conntrack.breakdown", "--munin.socket", ""])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m = parse_metrics(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(value(&m, "sockwatch_source_up{source=\"conntrack_breakdown\"}"), 0.0);
    assert_eq!(value(&m, "sockwatch_source_up{source=\"sockets\"}"), 1.0, "inet_diag needs no privilege");
    assert!(!m.keys().any(|k| k.starts_with("sockwatch_conntrack_tcp_entries")));
    // The daemon: three dumps at a 1 s interval, one log line.
    let out = Command::new("timeout")
        .args(["-s", "TERM", "3.5", "setpriv"])
        .args(unprivileged)
        .args([&bin, "--web.listen-address", "127.0.0.1:0", "--munin.socket", "", "--conntrack.breakdown"])
        .args(["--conntrack.breakdown-interval", "1s"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("CAP_NET_ADMIN").count(), 1, "{log}");
    assert!(log.contains("source=\"conntrack_breakdown\"") || log.contains("conntrack_breakdown"), "{log}");
}

/// `cargo run` as an ordinary user cannot create /run/sockwatch: one warning naming the
/// problem, and the daemon serves HTTP regardless.
fn unusable_munin_socket_directory_is_one_warning() {
    if !require("unusable_munin_socket_directory_is_one_warning", &["setpriv"]) {
        return;
    }
    let dir = tmpdir("nodir");
    // A directory nobody may write to, as /run is for an ordinary user.
    let locked = dir.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    let sock = locked.join("sub/munin.sock");
    let out = Command::new("timeout")
        .args(["-s", "TERM", "1.5", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin_for_any_user())
        .args(["--web.listen-address", "127.0.0.1:0", "--munin.socket", sock.to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("munin socket disabled").count(), 1, "{log}");
    assert!(log.contains(&format!("cannot create {}", sock.parent().unwrap().display())), "{log}");
    assert!(log.contains("first sample published"), "HTTP side kept going: {log}");
    assert_eq!(out.status.code(), Some(124), "ran until timeout stopped it: {log}");
}

/// `munin-run sockwatch_conntrack config` with the daemon down used to print no warning
/// or critical line: the plugin reads the limits from /proc itself, so Munin keeps its
/// thresholds exactly when something is wrong. The TIME_WAIT limit is a threshold, not a
/// line that flattens the stacked states.
fn plugin_config_keeps_thresholds_with_the_daemon_down() {
    let dir = tmpdir("thresholds");
    let sock = dir.join("absent.sock");
    let config = |graph: &str| {
        let link = dir.join(format!("sockwatch_{graph}"));
        let _ = std::os::unix::fs::symlink(munin_plugin(), &link);
        let out = Command::new(&link).arg("config").env("socket", &sock).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<f64>().ok());
    let tcp = config("tcp_states");
    let tw = read("/proc/sys/net/ipv4/tcp_max_tw_buckets").expect("tcp_max_tw_buckets");
    assert!(tcp.contains(&format!("time_wait.warning {}\n", tw * 0.8)), "{tcp}");
    assert!(tcp.contains(&format!("time_wait.critical {}\n", tw * 0.9)), "{tcp}");
    assert!(!tcp.contains("max_tw."), "the limit is not drawn: {tcp}");
    assert!(config("ephemeral_ports").contains("busiest.warning 80\n"));
    match read("/proc/sys/net/netfilter/nf_conntrack_max") {
        Some(max) => {
            let ct = config("conntrack");
            assert!(ct.contains(&format!("entries.warning {}\n", max * 0.8)), "{ct}");
            assert!(ct.contains(&format!("entries.critical {}\n", max * 0.9)), "{ct}");
        }
        None => eprintln!("conntrack module not loaded: its thresholds are not checked here"),
    }
}

/// A hostile peer on the socket path cannot make the plugin read without bound: one
/// endless line, or endless lines that never end the answer, are cut off and the plugin
/// answers `U` within its deadline. (Before: 1.17 GB in 2 s.)
fn plugin_bounds_what_it_reads_from_a_hostile_socket() {
    for (tag, line) in [("endless-line", &b"x"[..]), ("endless-answer", &b"busiest.value 1\n"[..])] {
        let dir = tmpdir(tag);
        let sock = dir.join("hostile.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let chunk: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut sent = s.write_all(b"# munin node at hostile\n").map_or(0, |()| 0usize);
            while s.write_all(&chunk).is_ok() && sent < 1 << 30 {
                sent += chunk.len();
            }
            sent
        });
        let link = dir.join("sockwatch_ephemeral_ports");
        std::os::unix::fs::symlink(munin_plugin(), &link).unwrap();
        let start = Instant::now();
        let out = Command::new(&link).env("socket", &sock).output().unwrap();
        let took = start.elapsed();
        let sent = server.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{tag}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).lines().all(|l| l.ends_with(".value U")), "{tag}: {out:?}");
        assert!(err.contains("longer than") || err.contains("more than"), "{tag}: {err}");
        assert!(sent < 8 << 20, "{tag}: the plugin read {sent} bytes before giving up");
        assert!(took < Duration::from_secs(3), "{tag}: {took:?}");
    }
}

/// Under umask 000 the socket's new directory used to be created 0777 and the socket
/// itself was world-connectable until its chmod: the directory is 0755 and the socket
/// 0660 whatever the umask.
fn socket_and_its_directory_modes_ignore_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir("umask");
    let sock = dir.join("new/dir/munin.sock");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {BIN} --web.listen-address 127.0.0.1:0 --interval 1s --munin.socket {}",
            sock.display()
        ))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(sock.parent().unwrap()), 0o755);
    assert_eq!(mode(&sock), 0o660);
    let _ = child.kill();
    let _ = child.wait();
}

/// munindoc (perldoc) reads the plugin's documentation: it is valid POD (podchecker) and,
/// rendered, documents every graph the daemon serves.
fn the_plugin_documentation_is_valid_pod_naming_every_graph() {
    if !common::require_commands(
        "the_plugin_documentation_is_valid_pod_naming_every_graph",
        &["podchecker", "pod2text"],
    ) {
        return;
    }
    let plugin = concat!(env!("CARGO_MANIFEST_DIR"), "/munin-plugin/sockwatch_");
    let check = Command::new("podchecker").arg(plugin).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let text = String::from_utf8(Command::new("pod2text").arg(plugin).output().unwrap().stdout).unwrap();
    for g in GRAPHS.iter().chain(&["fw_conntrack", "nat_ports"]) {
        assert!(text.lines().any(|l| l.trim() == *g), "{g} not documented:\n{text}");
    }
}

test_main!(
    shim_speaks_the_munin_protocol,
    shim_limits_line_length_and_idle_clients,
    flood_of_clients_is_capped_and_metrics_stay_fast,
    plugin_relays_to_the_daemon,
    plugin_without_daemon_prints_unknown_at_once,
    plugin_gives_up_on_a_stuck_daemon_within_the_deadline,
    real_munin_node_serves_our_values,
    breakdown_matches_conntrack_list,
    breakdown_without_cap_net_admin_is_down_and_logged_once,
    unusable_munin_socket_directory_is_one_warning,
    plugin_config_keeps_thresholds_with_the_daemon_down,
    plugin_bounds_what_it_reads_from_a_hostile_socket,
    socket_and_its_directory_modes_ignore_the_umask,
    the_plugin_documentation_is_valid_pod_naming_every_graph,
);
