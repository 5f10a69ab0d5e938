//! The binary as an operator meets it: flags, config errors, the HTTP endpoints, the
//! one-shot `sample`, an absent conntrack module, shutdown. No root needed.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn sockwatch(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run sockwatch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, code: i32, want: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {e}");
    assert!(e.contains(want), "expected {want:?} in: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
}

fn fixture(rel: &str) -> String {
    format!("{}/tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("sockwatch-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

fn unknown_flag_is_a_usage_error() {
    assert_clean_failure(&sockwatch(&["--web.listen-adress", "x"]), 2, "--web.listen-adress");
    assert_clean_failure(&sockwatch(&["frobnicate"]), 2, "frobnicate");
}

fn bad_values_name_the_setting() {
    assert_clean_failure(&sockwatch(&["sample", "--interval", "fast"]), 2, "--interval: \"fast\"");
    assert_clean_failure(&sockwatch(&["sample", "--log.level", "loud"]), 2, "--log.level");
    assert_clean_failure(&sockwatch(&["sample", "--web.telemetry-path", "metrics"]), 2, "must start with /");
    let p = write_config("unknown", "interval = \"10s\"\n[web]\nlisten-addr = \"127.0.0.1:1\"\n");
    assert_clean_failure(&sockwatch(&["sample", "--config", p.to_str().unwrap()]), 2, "unknown field `listen-addr`");
    let p = write_config("badvalue", "web.listen-address = \"127.0.0.1:notaport\"\n");
    assert_clean_failure(&sockwatch(&["sample", "--config", p.to_str().unwrap()]), 2, "key `web.listen-address`");
    assert_clean_failure(&sockwatch(&["--config", "/nonexistent/sockwatch.toml"]), 2, "cannot read config file");
    // Special files are refused at once instead of read without end (it grew to 2.36 GB).
    assert_clean_failure(&sockwatch(&["sample", "--config", "/dev/zero"]), 2, "not a regular file");
    assert_clean_failure(&sockwatch(&["--web.config.file", "/dev/zero"]), 2, "/dev/zero is not a readable file");
    let big = write_config("big", &format!("# {}\n", "x".repeat(2 << 20)));
    assert_clean_failure(&sockwatch(&["sample", "--config", big.to_str().unwrap()]), 2, "larger than 1048576 bytes");
}

fn unusable_listen_address_fails_fast() {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: bind fails with EADDRNOTAVAIL.
    let start = Instant::now();
    assert_clean_failure(&sockwatch(&["--web.listen-address", "192.0.2.1:9822"]), 1, "cannot listen on 192.0.2.1:9822");
    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_clean_failure(&sockwatch(&["--web.listen-address", &addr]), 1, "in use");
    assert!(start.elapsed() < Duration::from_secs(5));
}

fn sample_prints_every_source() {
    let o = sockwatch(&["sample"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = parse_metrics(&String::from_utf8(o.stdout).unwrap());
    // inet_diag and /proc need no privilege: sockets, sockstat, snmp, limits are up anywhere.
    for source in ["sockets", "sockstat", "snmp", "limits"] {
        assert_eq!(value(&m, &format!("sockwatch_source_up{{source=\"{source}\"}}")), 1.0, "{source}");
    }
    // All 12 states per family, zeros included.
    assert_eq!(m.keys().filter(|k| k.starts_with("sockwatch_tcp_sockets{")).count(), 24);
    assert_eq!(value(&m, "sockwatch_samples_total"), 1.0);
    let ts = value(&m, "sockwatch_sample_timestamp_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - ts).abs() < 60.0, "timestamp {ts} vs now {now}");
}

fn absent_conntrack_module_means_absent_series_not_errors() {
    // A procfs tree with no conntrack sysctls and no sockstat: both sources down, the
    // conntrack series absent, errors counted only for the broken one.
    let o = sockwatch(&["sample", "--path.procfs", &fixture("proc/no-conntrack")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let m = parse_metrics(&text);
    assert_eq!(value(&m, "sockwatch_source_up{source=\"conntrack\"}"), 0.0);
    assert_eq!(value(&m, "sockwatch_source_errors_total{source=\"conntrack\"}"), 0.0);
    assert!(!text.contains("sockwatch_conntrack_entries"), "conntrack series must be absent");
    assert_eq!(value(&m, "sockwatch_source_up{source=\"sockstat\"}"), 0.0);
    assert_eq!(value(&m, "sockwatch_source_errors_total{source=\"sockstat\"}"), 0.0);
    assert_eq!(value(&m, "sockwatch_source_up{source=\"limits\"}"), 1.0);
    assert_eq!(value(&m, "sockwatch_ephemeral_port_range_size"), 28232.0);
    // The log says so once, naming the reason.
    let e = stderr(&o);
    assert!(e.contains("conntrack module not loaded"), "{e}");
}

fn old_kernel_tree_is_read_through_fallback_paths() {
    let o = sockwatch(&["sample", "--path.procfs", &fixture("proc/linux-2.6.18")]);
    let m = parse_metrics(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(value(&m, "sockwatch_conntrack_entries"), 65231.0);
    assert_eq!(value(&m, "sockwatch_conntrack_entries_limit"), 65536.0);
    assert_eq!(value(&m, "sockwatch_conntrack_dropped_total"), (0x2d + 0x11) as f64);
    assert!(!m.contains_key("sockwatch_conntrack_search_restart_total"), "2.6.18 has no such column");
    assert!(!m.contains_key("sockwatch_tcp_time_wait_overflow_total"), "2.6.18 has no such column");
    assert_eq!(value(&m, "sockwatch_sockstat_tcp_sockets{kind=\"tw\"}"), 64711.0);
}

fn sample_output_passes_promtool() {
    if !have_command("promtool") {
        skip("sample_output_passes_promtool", "needs promtool (Debian package prometheus)");
        return;
    }
    for procfs in ["/proc".to_owned(), fixture("proc/linux-6.18"), fixture("proc/no-conntrack")] {
        let o = Command::new("sh")
            .args(["-c", &format!("{BIN} sample --path.procfs {procfs} --log.level error | promtool check metrics")])
            .output()
            .unwrap();
        let printed = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert!(o.status.success() && printed.trim().is_empty(), "promtool on {procfs}: {printed}");
    }
}

fn raw_request(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn http_endpoints() {
    let d = Served::start(&[]);
    let (status, body) = http_get(&d.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE sockwatch_tcp_sockets gauge"), "{body}");
    let head = raw_request(&d.addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    assert_eq!(http_get(&d.addr, "/-/healthy").0, 200);
    assert_eq!(http_get(&d.addr, "/-/ready").0, 200);
    let (status, landing) = http_get(&d.addr, "/");
    assert_eq!(status, 200);
    assert!(landing.contains("href=\"/metrics\""), "{landing}");
    assert_eq!(http_get(&d.addr, "/metricsx").0, 404);
    let post = raw_request(&d.addr, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.0 405") && post.to_lowercase().contains("allow: get, head"), "{post}");
    let headreq = raw_request(&d.addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(headreq.starts_with("HTTP/1.0 200") && !headreq.contains("# HELP"), "{headreq}");
    // Garbage is answered with 400, not a crash, and the daemon keeps serving.
    let garbage = raw_request(&d.addr, "\x16\x03\x01garbage\r\n\r\n");
    assert!(garbage.is_empty() || garbage.contains(" 400 "), "{garbage:?}");
    assert_eq!(http_get(&d.addr, "/metrics").0, 200);
}

fn scrapes_read_the_snapshot_and_never_sample() {
    // With a 1 h interval exactly one sample exists, however often we scrape.
    let d = Served::start(&["--interval", "1h"]);
    for _ in 0..20 {
        let (_, body) = http_get(&d.addr, "/metrics");
        assert_eq!(value(&parse_metrics(&body), "sockwatch_samples_total"), 1.0);
    }
}

fn custom_telemetry_path() {
    let d = Served::start(&["--web.telemetry-path", "/probe"]);
    assert_eq!(http_get(&d.addr, "/probe").0, 200);
    assert_eq!(http_get(&d.addr, "/metrics").0, 404);
    assert!(http_get(&d.addr, "/").1.contains("href=\"/probe\""));
}

fn sigterm_exits_zero_promptly() {
    let mut d = Served::start(&[]);
    let pid = d.child.id() as libc::pid_t;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let start = Instant::now();
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// doctor knows what it does not know: with a procfs tree it cannot read (empty), it says
/// "cannot tell", names every unread source and exits 3, never "ok" with 0. With the module
/// merely absent (the rest of /proc/sys/net read) conntrack is an answer, not a gap.
fn doctor_says_cannot_tell_when_it_reads_nothing() {
    let empty = std::env::temp_dir().join(format!("sockwatch-empty-proc-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = sockwatch(&["doctor", "--path.procfs", empty.to_str().unwrap(), "--munin.socket", ""]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(3), "{text}{}", stderr(&o));
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("sockwatch doctor: CANNOT TELL (cannot tell: "), "{first}");
    for source in ["sockstat", "conntrack", "snmp", "limits"] {
        assert!(first.contains(source), "{source} not named in {first:?}");
        let line = text.lines().find(|l| l.contains(&format!("] {source}: "))).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("CANNOT TELL") && line.contains("cannot tell, not read:"), "{line}");
        assert!(line.contains(empty.to_str().unwrap()), "names the path it tried: {line}");
    }
    let o = sockwatch(&["doctor", "--json", "--path.procfs", empty.to_str().unwrap(), "--munin.socket", ""]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((o.status.code(), json["status"].as_str()), (Some(3), Some("unknown")));
    let _ = std::fs::remove_dir(&empty);

    // The conntrack module not loaded, everything else read: an answer, not a gap.
    let o = sockwatch(&["doctor", "--json", "--path.procfs", &fixture("proc/no-conntrack"), "--munin.socket", ""]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let conntrack = json["checks"].as_array().unwrap().iter().find(|c| c["resource"] == "conntrack").unwrap();
    assert_eq!(conntrack["level"], "ok", "{conntrack}");
    assert!(conntrack["detail"].as_str().unwrap().starts_with("not loaded, nothing tracked"), "{conntrack}");
    // The fixture has no sockstat: that one is still a gap.
    let sockstat = json["checks"].as_array().unwrap().iter().find(|c| c["resource"] == "sockstat").unwrap();
    assert_eq!(sockstat["level"], "unknown", "{sockstat}");
}

/// Every switch can be turned off on the command line (`--no-NAME`), so a flag wins over a
/// `true` in the config file; of the two, the last given wins.
fn a_switch_on_in_the_file_is_turned_off_by_its_no_flag() {
    let cfg = write_config("switch-on.toml", "conntrack.breakdown = true\n");
    let cfg = cfg.to_str().unwrap();
    let breakdown = |args: &[&str]| {
        let o = sockwatch(&[&["sample", "--config", cfg, "--munin.socket", ""], args].concat());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).contains("source=\"conntrack_breakdown\"")
    };
    assert!(breakdown(&[]), "on from the file");
    assert!(!breakdown(&["--no-conntrack.breakdown"]), "the flag wins over the file");
    assert!(breakdown(&["--no-conntrack.breakdown", "--conntrack.breakdown"]), "the last of the two wins");
    assert!(!breakdown(&["--conntrack.breakdown", "--no-conntrack.breakdown"]), "the last of the two wins");
    let help = String::from_utf8_lossy(&sockwatch(&["--help"]).stdout).into_owned();
    assert!(help.contains("--no-conntrack.breakdown") && help.contains("--no-conntrack.events"), "{help}");
}

/// `--version` and `sockwatch_build_info` say the same: version, git revision, rustc.
fn version_and_build_info_agree() {
    let v = String::from_utf8_lossy(&sockwatch(&["--version"]).stdout).trim().to_owned();
    let (revision, rustc) = (env!("SOCKWATCH_REVISION"), env!("SOCKWATCH_RUSTC"));
    assert_eq!(v, format!("sockwatch {} (revision {revision}, rustc {rustc})", env!("CARGO_PKG_VERSION")));
    match std::process::Command::new("rustc").arg("--version").output() {
        Ok(now) => assert!(String::from_utf8_lossy(&now.stdout).contains(rustc), "the compiler's own version"),
        // Another user's toolchain (under /root) is not this user's to run.
        Err(e) => {
            skip("version_and_build_info_agree (the compiler's own version)", &format!("cannot run rustc: {e}"));
        }
    }
    let o = sockwatch(&["sample", "--munin.socket", ""]);
    let m = parse_metrics(&String::from_utf8_lossy(&o.stdout));
    let series = format!(
        "sockwatch_build_info{{version=\"{}\",revision=\"{revision}\",rustc=\"{rustc}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&m, &series), 1.0);
}

/// `process_*` as every exporter has them, held to what the kernel says of the process: its
/// descriptor limit (set here), start time and threads.
fn process_metrics_match_the_kernel() {
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let o = Command::new("sh")
        .args(["-c", &format!("ulimit -n 777 && exec {BIN} sample --munin.socket ''")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m = parse_metrics(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(value(&m, "process_max_fds"), 777.0, "RLIMIT_NOFILE as set");
    let open = value(&m, "process_open_fds");
    assert!((3.0..=777.0).contains(&open), "{open}");
    let started = value(&m, "process_start_time_seconds");
    // /proc's start time has the clock tick's resolution (10 ms) and btime's (1 s).
    assert!(started >= before - 2.0 && started <= before + 30.0, "started {started}, test at {before}");
    assert!(value(&m, "process_resident_memory_bytes") > 1e6);
    assert!(value(&m, "process_threads") >= 1.0);
    assert!(value(&m, "process_cpu_seconds_total") >= 0.0);
}

/// `--log.level` changes what is logged (debug: each sample's timing; trace: each source's
/// read), and `--log.format` how: logfmt and JSON lines a log shipper can parse.
fn log_level_and_format() {
    let log = |args: &[&str]| {
        let o = sockwatch(&[&["sample", "--munin.socket", ""], args].concat());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stderr(&o)
    };
    assert!(!log(&["--log.level", "info"]).contains("sample taken"));
    let debug = log(&["--log.level", "debug"]);
    assert!(debug.lines().any(|l| l.contains("sample taken") && l.contains("took_ms=")), "{debug}");
    assert!(!debug.contains("source read"), "per-source lines are trace");
    let trace = log(&["--log.level", "trace"]);
    for source in ["sockets", "sockstat", "conntrack", "snmp", "limits", "udp"] {
        assert!(trace.contains(&format!("source read source=\"{source}\"")), "{source} in {trace}");
    }
    let logfmt = log(&["--log.level", "debug", "--log.format", "logfmt"]);
    assert!(!logfmt.trim().is_empty());
    for line in logfmt.lines() {
        let mut keys = line.split(' ').take(4).map(|kv| kv.split('=').next().unwrap());
        assert!(keys.by_ref().eq(["ts", "level", "target", "msg"]), "not logfmt: {line}");
    }
    assert!(logfmt.contains("msg=\"sample taken\" took_ms="), "{logfmt}");
    let json = log(&["--log.level", "debug", "--log.format", "json"]);
    let mut taken = 0;
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string() && v["timestamp"].is_string(), "{line}");
        taken += usize::from(v["message"] == "sample taken" && v["took_ms"].is_u64());
    }
    assert_eq!(taken, 1, "{json}");
    let o = sockwatch(&["sample", "--log.format", "xml"]);
    assert_clean_failure(&o, 2, "invalid value 'xml' for '--log.format <FORMAT>'");
    assert!(stderr(&o).contains("[possible values: text, logfmt, json]"), "{}", stderr(&o));
    let cfg = write_config("bad-format.toml", "log.format = \"xml\"\n");
    let o = sockwatch(&["sample", "--config", cfg.to_str().unwrap()]);
    assert_clean_failure(&o, 2, "key `log.format`: \"xml\" is not a log format (one of text, logfmt, json)");
}

test_main!(
    unknown_flag_is_a_usage_error,
    bad_values_name_the_setting,
    unusable_listen_address_fails_fast,
    sample_prints_every_source,
    absent_conntrack_module_means_absent_series_not_errors,
    old_kernel_tree_is_read_through_fallback_paths,
    sample_output_passes_promtool,
    http_endpoints,
    scrapes_read_the_snapshot_and_never_sample,
    custom_telemetry_path,
    sigterm_exits_zero_promptly,
    doctor_says_cannot_tell_when_it_reads_nothing,
    a_switch_on_in_the_file_is_turned_off_by_its_no_flag,
    version_and_build_info_agree,
    process_metrics_match_the_kernel,
    log_level_and_format,
);
