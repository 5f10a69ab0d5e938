//! Operating sockwatch: alert rules (promtool and a real Prometheus), the systemd unit,
//! SIGHUP reload, `sockwatch doctor` on reproduced exhaustion, and the Debian package.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn output_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn alert_rules_pass_promtool() {
    if !have_command("promtool") {
        skip("alert_rules_pass_promtool", "needs promtool (Debian package prometheus)");
        return;
    }
    let check =
        Command::new("promtool").args(["check", "rules", &format!("{ROOT}/prometheus/alerts.yml")]).output().unwrap();
    assert!(check.status.success(), "{}", output_text(&check));
    let rules = std::fs::read_to_string(format!("{ROOT}/prometheus/alerts.yml")).unwrap();
    let alerts = rules.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert!(alerts >= 20, "{alerts} alerts");
    assert!(output_text(&check).contains(&format!("SUCCESS: {alerts} rules found")), "{}", output_text(&check));
    let test = Command::new("promtool")
        .args(["test", "rules", &format!("{ROOT}/prometheus/alerts_test.yml")])
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", output_text(&test));
}

/// Every panel query of the Grafana dashboard parses as PromQL: promtool checks them as
/// recording rules, with Grafana's variables replaced by what Grafana sends.
fn dashboard_queries_pass_promtool() {
    if !have_command("promtool") {
        skip("dashboard_queries_pass_promtool", "needs promtool (Debian package prometheus)");
        return;
    }
    let exprs = dashboard_exprs();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".+");
        rules.push_str(&format!(
            "      - record: dashboard:panel_{n}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let path = std::env::temp_dir().join(format!("sockwatch-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let check = Command::new("promtool").arg("check").arg("rules").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(check.status.success(), "{}", output_text(&check));
    let found = format!("SUCCESS: {} rules found", exprs.len());
    assert!(output_text(&check).contains(&found), "{}", output_text(&check));
}

fn systemd_unit_verifies() {
    if !have_command("systemd-analyze") {
        skip("systemd_unit_verifies", "needs systemd-analyze (Debian package systemd)");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = std::env::temp_dir().join(format!("sockwatch-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = std::fs::read_to_string(format!("{ROOT}/systemd/sockwatch.service")).unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID") && unit.contains("DynamicUser=yes"));
    let path = dir.join("sockwatch.service");
    std::fs::write(&path, unit.replace("/usr/bin/sockwatch", BIN)).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    assert!(verify.status.success() && output_text(&verify).trim().is_empty(), "{}", output_text(&verify));
    let security = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&path).output().unwrap();
    let text = output_text(&security);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for sockwatch.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(exposure <= 2.0, "exposure {exposure} (README records 1.4)");
}

fn sighup_reloads_and_rejects_a_bad_file() {
    let dir = std::env::temp_dir().join(format!("sockwatch-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("sockwatch.toml");
    std::fs::write(&conf, "interval = \"1h\"\nports.top-k = 5\n").unwrap();
    let mut d = Served::start(&["--config", conf.to_str().unwrap()]);
    let samples = |d: &Served| value(&parse_metrics(&http_get(&d.addr, "/metrics").1), "sockwatch_samples_total");
    let interval =
        |d: &Served| value(&parse_metrics(&http_get(&d.addr, "/metrics").1), "sockwatch_sample_interval_seconds");
    assert_eq!(interval(&d), 3600.0);
    let hup = |d: &Served| {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGHUP) }, 0);
    };
    // A valid change: the interval drops to 1 s and samples start coming. The interval in
    // force is 1 s, or longer while a sample takes more than a quarter of it (the documented
    // self-protection, logged when it stretches): on a busy host a sample can take 0.3-1.5 s.
    std::fs::write(&conf, "interval = \"1s\"\nports.top-k = 5\n").unwrap();
    hup(&d);
    let samples_at_least = |d: &Served, n: f64, within: Duration| {
        let t = Instant::now();
        while samples(d) < n {
            assert!(t.elapsed() < within, "samples {} < {n} after {within:?}", samples(d));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    samples_at_least(&d, 3.0, Duration::from_secs(30));
    let in_force = |d: &Served| {
        let i = interval(d);
        let stretched = d.log_count("more than 25% of the 1s interval") > 0;
        assert!(i == 1.0 || (stretched && i > 1.0 && i < 60.0), "interval {i} (stretch logged: {stretched})");
        i
    };
    let i = in_force(&d);
    // A bad file: rejected, the 1 s interval keeps running (two more samples within two
    // intervals in force and a margin; at the old hour none would come).
    std::fs::write(&conf, "interval = \"1s\"\nports.top-kk = 5\n").unwrap();
    hup(&d);
    let before = samples(&d);
    samples_at_least(&d, before + 2.0, Duration::from_secs_f64(2.0 * i + 10.0));
    in_force(&d);
    assert_eq!(d.log_count("reload rejected"), 1, "{:?}", d.log.lock().unwrap());
    assert!(d.child.try_wait().unwrap().is_none(), "still running");
    let _ = std::fs::remove_dir_all(&dir);
}

fn sighup_rejection_is_logged_with_the_key() {
    let dir = std::env::temp_dir().join(format!("sockwatch-hup-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("sockwatch.toml");
    std::fs::write(&conf, "interval = \"1s\"\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--munin.socket", "", "--config", conf.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&conf, "interval = \"1s\"\nmunin.max-clients = 10\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    // The same file again: the un-applied munin setting is not "running", so no second
    // warning (it used to be recorded as running and warned about as changed later).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&conf, "interval = \"forever\"\n").unwrap();
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(child.wait().unwrap().success(), "{log}");
    assert_eq!(log.matches("munin.max-clients changed; restart sockwatch to apply").count(), 2, "{log}");
    assert!(log.contains("reload rejected, keeping the running configuration"), "{log}");
    assert!(log.contains("key `interval`: \"forever\""), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn doctor(ns: &Netns) -> (i32, String, serde_json::Value) {
    let run = |json: bool| {
        let mut args = vec!["netns", "exec", &ns.name, BIN, "doctor", "--munin.socket", ""];
        if json {
            args.push("--json");
        }
        Command::new("ip").args(&args).output().unwrap()
    };
    let text = run(false);
    let json = run(true);
    assert_eq!(text.status.code(), json.status.code());
    (
        text.status.code().unwrap(),
        String::from_utf8(text.stdout).unwrap(),
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(&json))),
    )
}

fn check<'a>(report: &'a serde_json::Value, resource: &str) -> &'a serde_json::Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["resource"] == resource).unwrap()
}

fn doctor_names_the_exhausted_destination() {
    if !require("doctor_names_the_exhausted_destination", &["sysctl"]) {
        return;
    }
    let ns = Netns::new("doc-ports");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40499");
    let (code, text, json) = doctor(&ns);
    assert_eq!(code, 0, "an idle namespace is healthy: {text}");
    assert_eq!(json["status"], "ok");
    let _held = ns.enter(|| {
        let l = TcpListener::bind("127.0.0.1:8080").unwrap();
        let to = l.local_addr().unwrap();
        for _ in 0..460 {
            churn_once(&l, to).unwrap();
        }
        l
    });
    ns.settle();
    let (code, text, json) = doctor(&ns);
    assert_eq!(code, 2, "92 % of the port range is critical: {text}");
    assert!(text.contains("busiest destination 127.0.0.1 -> 127.0.0.1:8080 holds 460 of 500 ports (92%)"), "{text}");
    assert!(text.contains("EADDRNOTAVAIL"), "{text}");
    assert!(text.contains("whatever net.ipv4.tcp_fin_timeout says"), "{text}");
    assert!(text.contains("removed in Linux 4.12"), "{text}");
    let ports = check(&json, "ephemeral ports");
    assert_eq!(
        (ports["level"].as_str(), ports["used"].as_f64(), ports["limit"].as_f64()),
        (Some("critical"), Some(460.0), Some(500.0))
    );
    assert!(ports["advice"].as_str().unwrap().contains("ip_local_port_range"));
    assert_eq!(json["status"], "critical");
}

fn doctor_sees_the_conntrack_table_filling() {
    let test = "doctor_sees_the_conntrack_table_filling";
    if !require(test, &["nft"]) || !ConntrackMax::allowed(test) {
        return;
    }
    // nf_conntrack_max is global (writable only from the initial namespace): shrink it
    // for the test and put it back afterwards. The count is per namespace.
    let _max = ConntrackMax::set(100);
    let ns = Netns::new("doc-ct");
    ns.enable_conntrack();
    let pairs = |n: usize| {
        ns.enter(move || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let to = l.local_addr().unwrap();
            let mut held = Vec::new();
            for _ in 0..n {
                held.push(TcpStream::connect(to).unwrap());
                held.push(l.accept().unwrap().0);
            }
            (l, held)
        })
    };
    let _a = pairs(84);
    let (code, text, json) = doctor(&ns);
    let ct = check(&json, "conntrack table");
    assert_eq!(ct["used"].as_f64(), Some(84.0), "{text}");
    assert_eq!(ct["limit"].as_f64(), Some(100.0));
    assert_eq!((code, ct["level"].as_str()), (1, Some("warning")), "{text}");
    assert!(text.contains("nf_conntrack_max and the hash size together"), "{text}");
    assert!(text.contains("\"nf_conntrack: table full in netns N, dropping packet\""), "Linux 6.x wording: {text}");
    let _b = pairs(8);
    let (code, text, json) = doctor(&ns);
    assert_eq!((code, check(&json, "conntrack table")["level"].as_str()), (2, Some("critical")), "{text}");
    assert!(text.contains("92 entries of nf_conntrack_max 100 (92%)"), "{text}");
}

/// A real Prometheus with the shipped rules, scraping the daemon in a namespace, fires
/// the port exhaustion alert before the first connect() fails.
fn prometheus_fires_before_connect_fails() {
    if !require("prometheus_fires_before_connect_fails", &["prometheus", "sysctl"]) {
        return;
    }
    const RANGE: usize = 200;
    const FILL: usize = 186; // 93 %
    let ns = Netns::new("prom");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40199");
    let _daemon = Daemon::start(&ns, 9822, &["--interval", "1s"]);
    let _prom = Prometheus::start(&ns, "operate", 9822);

    // Fill the destination to 93 %, then stop and ask Prometheus.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (filled_tx, filled_rx) = std::sync::mpsc::channel();
    let ns_name = ns.name.clone();
    let worker = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns_name}")).unwrap();
        // SAFETY: valid fd; affects only this thread.
        assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }, 0);
        let l = TcpListener::bind("127.0.0.1:8080").unwrap();
        let to = l.local_addr().unwrap();
        for _ in 0..FILL {
            churn_once(&l, to).unwrap();
        }
        filled_tx.send(()).unwrap();
        rx.recv().unwrap();
        let mut more = 0;
        loop {
            match churn_once(&l, to) {
                Ok(()) => more += 1,
                Err(e) => return (more, e),
            }
        }
    });
    filled_rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    let state = loop {
        let (status, body) = try_http_get_in(&ns, 9090, "/api/v1/alerts").unwrap_or((0, "not listening yet".into()));
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let found = v["data"]["alerts"].as_array().unwrap().iter().find_map(|a| {
                (a["labels"]["alertname"] == "EphemeralPortsExhaustionCritical")
                    .then(|| a["state"].as_str().unwrap().to_owned())
            });
            if let Some(state) = found {
                break state;
            }
        }
        assert!(Instant::now() < deadline, "no alert within 45 s; last answer {status}: {body}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(state == "firing" || state == "pending", "{state}");
    // Only now exhaust the range: the alert came first, with headroom left.
    tx.send(()).unwrap();
    let (more, err) = worker.join().unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{err}");
    assert_eq!(FILL + more, RANGE, "the alert fired with {more} ports still free");
}

/// The Debian package that .ci/run builds with `cargo deb`: its contents, installed for
/// real with dpkg -i (root), listed, the installed binary run, then purged.
fn debian_package_installs_and_runs() {
    let test = "debian_package_installs_and_runs";
    let deb = std::fs::read_dir(format!("{ROOT}/target/debian"))
        .ok()
        .and_then(|d| d.filter_map(Result::ok).map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb")));
    let Some(deb) = deb else {
        skip(test, "no target/debian/*.deb (built by `cargo deb` in .ci/run)");
        return;
    };
    if !require(test, &["dpkg", "dpkg-deb", "unshare", "nsenter", "chroot"]) {
        return;
    }
    let listing = Command::new("dpkg-deb").arg("--contents").arg(&deb).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let expected = [
        "/usr/bin/sockwatch",
        "/usr/lib/systemd/system/sockwatch.service",
        "/etc/sockwatch/sockwatch.toml",
        "/usr/share/munin/plugins/sockwatch_",
        "/etc/munin/plugin-conf.d/sockwatch",
        "/usr/share/sockwatch/prometheus/alerts.yml",
        "/usr/share/sockwatch/grafana/sockwatch.json",
        "/usr/share/man/man1/sockwatch.1.gz",
        "/usr/share/doc/sockwatch/changelog.Debian.gz",
        "/usr/share/lintian/overrides/sockwatch",
        "/usr/share/bash-completion/completions/sockwatch",
        "/usr/share/zsh/vendor-completions/_sockwatch",
        "/usr/share/fish/vendor_completions.d/sockwatch.fish",
        "/usr/share/doc/sockwatch/sockwatch-netns.conf",
    ];
    for file in expected {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(".{file}"))),
            "{file} missing from {}:\n{listing}",
            deb.display()
        );
    }
    // The maintainer scripts cargo-deb generates from the unit: enable and start on
    // install, stop on removal, clean up on purge.
    let ctl = std::env::temp_dir().join(format!("sockwatch-deb-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ctl);
    let out = Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&ctl).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let script = |name: &str| std::fs::read_to_string(ctl.join(name)).unwrap_or_else(|e| panic!("no {name}: {e}"));
    let postinst = script("postinst");
    assert!(postinst.contains("deb-systemd-helper enable sockwatch.service"), "{postinst}");
    assert!(
        postinst.contains("_dh_action=start") && postinst.contains("deb-systemd-invoke $_dh_action sockwatch.service"),
        "{postinst}"
    );
    assert!(script("prerm").contains("deb-systemd-invoke stop sockwatch.service"));
    assert!(script("postrm").contains("deb-systemd-helper purge sockwatch.service"));
    let _ = std::fs::remove_dir_all(&ctl);
    // The shipped config runs the defaults: every key is commented.
    let shipped = std::fs::read_to_string(format!("{ROOT}/packaging/sockwatch.toml")).unwrap();
    let active: Vec<&str> =
        shipped.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).collect();
    assert!(active.is_empty(), "active keys in the shipped config: {active:?}");
    // Installed for real, but in a throwaway root: the host's own root under an overlay in
    // a private mount namespace, so the host's dpkg database, an installed sockwatch and
    // its edited config are never touched (checked at the end).
    let host_before = host_package_state();
    let root = match ThrowawayRoot::new("deb") {
        Ok(root) => root,
        Err(why) => {
            skip(test, &why);
            return;
        }
    };
    let in_root = |cmd: &[&str]| {
        let out = root.run(cmd);
        assert!(out.status.success(), "{cmd:?} in the throwaway root: {}", output_text(&out));
        out
    };
    // A clean root whatever the host has: an installed sockwatch is purged there first.
    in_root(&["dpkg", "--purge", "sockwatch"]);
    std::fs::copy(&deb, root.path("/tmp/sockwatch.deb")).unwrap();
    in_root(&["dpkg", "-i", "/tmp/sockwatch.deb"]);
    // postinst enabled the unit (deb-systemd-helper records it even where systemd is not
    // running, as in this root).
    let wants = "/etc/systemd/system/multi-user.target.wants/sockwatch.service";
    // The link is absolute (/lib/systemd/system/...): it resolves inside the root, not from
    // the host's side, so read the link itself rather than following it.
    let link = std::fs::read_link(root.path(wants)).map_err(|e| e.to_string());
    assert!(
        link.as_ref().is_ok_and(|t| t.ends_with("systemd/system/sockwatch.service")),
        "postinst did not enable sockwatch.service: {link:?}"
    );
    let files = String::from_utf8(in_root(&["dpkg", "-L", "sockwatch"]).stdout).unwrap();
    for file in expected {
        assert!(files.lines().any(|l| l == file), "dpkg -L lacks {file}:\n{files}");
        assert!(root.path(file).exists(), "{file} not installed");
    }
    let out =
        in_root(&["/usr/bin/sockwatch", "sample", "--config", "/etc/sockwatch/sockwatch.toml", "--munin.socket", ""]);
    let m = parse_metrics(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(value(&m, "sockwatch_source_up{source=\"sockets\"}"), 1.0);
    let plugin = in_root(&["env", "socket=/nonexistent", "/usr/share/munin/plugins/sockwatch_", "suggest"]);
    assert!(String::from_utf8_lossy(&plugin.stdout).contains("tcp_states"), "{}", output_text(&plugin));
    // Linked as munin-node-configure links it, the installed file runs /usr/bin/sockwatch
    // as its interpreter (its first line) and fetches; no daemon here, so U.
    in_root(&["mkdir", "-p", "/etc/munin/plugins"]);
    in_root(&["ln", "-sf", "/usr/share/munin/plugins/sockwatch_", "/etc/munin/plugins/sockwatch_conntrack"]);
    in_root(&["ln", "-sf", "/usr/share/munin/plugins/sockwatch_", "/etc/munin/plugins/sockwatch_tcp_states"]);
    // Someone else's plugin of a similar name stays.
    in_root(&["ln", "-sf", "/usr/share/munin/plugins/cpu", "/etc/munin/plugins/sockwatch_mine"]);
    let fetch = in_root(&["env", "socket=/nonexistent", "/etc/munin/plugins/sockwatch_conntrack"]);
    assert_eq!(String::from_utf8_lossy(&fetch.stdout), "entries.value U\nmax.value U\n");
    // Purged: postrm forgets the unit and removes the plugin links it would leave dangling.
    in_root(&["dpkg", "--purge", "sockwatch"]);
    let gone = root.path(wants);
    assert!(!gone.exists() && gone.symlink_metadata().is_err(), "postrm left {wants}");
    for link in ["sockwatch_conntrack", "sockwatch_tcp_states"] {
        let link = root.path(&format!("/etc/munin/plugins/{link}"));
        assert!(link.symlink_metadata().is_err(), "{} dangles after purge", link.display());
    }
    assert!(root.path("/etc/munin/plugins/sockwatch_mine").symlink_metadata().is_ok(), "another plugin removed");
    drop(root);
    assert!(host_package_state() == host_before, "the host's dpkg database or sockwatch files changed");
}

/// What a package test must leave as it found it on the host: the dpkg status database and
/// the installed sockwatch's binary and config, if any.
fn host_package_state() -> Vec<Option<Vec<u8>>> {
    [
        "/var/lib/dpkg/status",
        "/usr/bin/sockwatch",
        "/etc/sockwatch/sockwatch.toml",
        "/etc/munin/plugin-conf.d/sockwatch",
    ]
    .iter()
    .map(|p| std::fs::read(p).ok())
    .collect()
}

test_main!(
    alert_rules_pass_promtool,
    dashboard_queries_pass_promtool,
    systemd_unit_verifies,
    sighup_reloads_and_rejects_a_bad_file,
    sighup_rejection_is_logged_with_the_key,
    doctor_names_the_exhausted_destination,
    doctor_sees_the_conntrack_table_filling,
    prometheus_fires_before_connect_fails,
    debian_package_installs_and_runs,
);
