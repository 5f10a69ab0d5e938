//! The munin-node plugin: the `sockwatch` binary itself. munin-node runs the wildcard
//! plugin file `munin-plugin/sockwatch_`, whose first line `#!/usr/bin/sockwatch
//! munin-plugin` has the kernel run `sockwatch munin-plugin <plugin path> [action]` (one
//! exec, no shell); or the binary linked directly as `sockwatch_<graph>`.
//!
//! It relays `config` and fetch to the daemon's Munin socket with a hard deadline of
//! [`DEADLINE`]. When the daemon is down or slow it still answers at once: `config` from
//! the static graph definitions, fetch with `U` for every field, exit status 0, so it
//! never hangs munin-node and the graphs show a gap instead of stale numbers.
//!
//! Environment (set in plugin-conf.d): `socket`, the daemon's Munin socket
//! (default `/run/sockwatch/munin.sock`); `MUNIN_CAP_MULTIGRAPH`, set by munin-node.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::DEFAULT_MUNIN_SOCKET;
use crate::munin::catalog;
use crate::munin::graphs::{self, Graph};
use crate::munin::shim::MULTIGRAPH_SERVICE;

/// The longest the plugin waits for the daemon, all steps together.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Longest line read from the daemon, and the longest whole answer: a hostile peer on the
/// socket path cannot make the plugin allocate without bound (the real answers are a few
/// KiB: the multigraph config, the largest, is about 12 KiB).
pub const MAX_LINE: u64 = 8 * 1024;
pub const MAX_ANSWER: usize = 1 << 20;
/// The link name of the multigraph form.
pub const MULTIGRAPH_PLUGIN: &str = "sockwatch_multigraph";

enum Target {
    One(&'static Graph),
    Multigraph,
}

fn socket_path() -> String {
    std::env::var("socket").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_MUNIN_SOCKET.to_owned())
}

/// Why the daemon could not be asked; the plugin then answers without it.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} {what}")]
    Protocol { path: String, what: String },
    #[error("the daemon did not answer within {}s", DEADLINE.as_secs())]
    Timeout,
}

/// Asks the daemon: sends `commands`, returns the lines of the last answer (up to `.`).
fn ask(path: &str, commands: &[String]) -> Result<Vec<String>, AskError> {
    let start = Instant::now();
    let left = || DEADLINE.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
    let io = |source| AskError::Io { path: path.to_owned(), source };
    let protocol = |what: String| AskError::Protocol { path: path.to_owned(), what };
    let stream = UnixStream::connect(path).map_err(|source| AskError::Connect { path: path.to_owned(), source })?;
    stream.set_read_timeout(Some(left())).map_err(io)?;
    stream.set_write_timeout(Some(left())).map_err(io)?;
    let mut w = stream.try_clone().map_err(io)?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let mut total = 0usize;
    // One bounded line: the read stops at MAX_LINE bytes, and the whole answer at MAX_ANSWER.
    let mut read_line = |r: &mut BufReader<UnixStream>, line: &mut String| -> Result<usize, AskError> {
        line.clear();
        let n = (&mut *r).take(MAX_LINE).read_line(line).map_err(io)?;
        if n as u64 >= MAX_LINE && !line.ends_with('\n') {
            return Err(protocol(format!("sent a line longer than {MAX_LINE} bytes")));
        }
        total += n;
        if total > MAX_ANSWER {
            return Err(protocol(format!("sent more than {MAX_ANSWER} bytes")));
        }
        Ok(n)
    };
    read_line(&mut r, &mut line)?;
    if !line.starts_with("# munin node at ") {
        return Err(protocol(format!("did not greet like a munin node: {line:?}")));
    }
    let mut answer = Vec::new();
    for (i, cmd) in commands.iter().enumerate() {
        w.write_all(format!("{cmd}\n").as_bytes()).map_err(io)?;
        let multiline = cmd.starts_with("config") || cmd.starts_with("fetch");
        answer.clear();
        loop {
            r.get_ref().set_read_timeout(Some(left())).map_err(io)?;
            if read_line(&mut r, &mut line)? == 0 {
                return Err(protocol("closed the connection".into()));
            }
            let l = line.trim_end_matches('\n');
            if multiline && l == "." {
                break;
            }
            answer.push(l.to_owned());
            if !multiline {
                break;
            }
        }
        if i + 1 == commands.len() {
            let _ = w.write_all(b"quit\n");
        }
    }
    Ok(answer)
}

/// `ask` with a hard deadline: a daemon that accepts and never answers, or a connect
/// stuck on a full backlog, cannot hold the plugin past [`DEADLINE`].
fn ask_with_deadline(commands: Vec<String>) -> Result<Vec<String>, AskError> {
    let path = socket_path();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ask(&path, &commands));
    });
    rx.recv_timeout(DEADLINE + Duration::from_millis(100)).unwrap_or(Err(AskError::Timeout))
}

/// A snapshot holding only the kernel limits (`ip_local_port_range`, `tcp_max_tw_buckets`,
/// `nf_conntrack_max`), read from /proc by the plugin itself: what `config` needs for its
/// thresholds when the daemon cannot be asked. Its values are unknown (`U`).
fn limits_snapshot() -> crate::snapshot::Snapshot {
    let proc = std::path::Path::new("/proc");
    crate::snapshot::Snapshot::limits_only(
        crate::sources::procfs::limits::read(proc).ok(),
        crate::sources::procfs::conntrack::read(proc).ok().and_then(|c| c.limit),
    )
}

/// Runs the plugin. `name` is the plugin's path (`argv[0]`, or the plugin file's path);
/// `action` is munin's argument: `config`, `autoconf`, `suggest`, or none for fetch.
pub fn run(name: &str, action: Option<&str>) -> ExitCode {
    let base = name.rsplit('/').next().unwrap_or(name);
    let out = match action.unwrap_or("fetch") {
        "autoconf" => autoconf(),
        "suggest" => suggest(),
        verb @ ("config" | "fetch") => match target(base) {
            Ok(target) => relay(base, &target, verb == "config"),
            Err(code) => return code,
        },
        other => {
            eprintln!("{base}: unknown argument {other:?} (expected config, autoconf, suggest or none)");
            return ExitCode::from(1);
        }
    };
    print!("{out}");
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}

/// `autoconf`: yes when the daemon answers, no with the reason otherwise.
fn autoconf() -> String {
    match ask_with_deadline(vec!["version".into()]) {
        Ok(_) => "yes\n".to_owned(),
        Err(e) => format!("no ({e})\n"),
    }
}

/// `suggest`: the graphs the daemon serves (it knows whether the breakdown graph
/// exists); without it, the static set.
fn suggest() -> String {
    let names = match ask_with_deadline(vec!["list".into()]) {
        Ok(lines) => lines.first().cloned().unwrap_or_default(),
        Err(_) => catalog::graphs(false).map(|g| format!("sockwatch_{}", g.name)).collect::<Vec<_>>().join(" "),
    };
    names.split_whitespace().filter_map(|n| n.strip_prefix("sockwatch_")).map(|g| format!("{g}\n")).collect()
}

/// Which graph the plugin's name asks for. `Err` is the exit status after saying why.
fn target(base: &str) -> Result<Target, ExitCode> {
    if base == MULTIGRAPH_PLUGIN {
        if !std::env::var("MUNIN_CAP_MULTIGRAPH").is_ok_and(|v| v == "1") {
            println!("# {base} needs a multigraph-capable munin-node (MUNIN_CAP_MULTIGRAPH=1)");
            return Err(ExitCode::SUCCESS);
        }
        return Ok(Target::Multigraph);
    }
    match base.strip_prefix("sockwatch_").and_then(|g| catalog::find(g, true)) {
        Some(g) => Ok(Target::One(g)),
        None => {
            eprintln!(
                "{base}: not a sockwatch graph; link the plugin as sockwatch_<graph> (see `{base} suggest`) \
                 or {MULTIGRAPH_PLUGIN}"
            );
            Err(ExitCode::from(1))
        }
    }
}

/// `config` or fetch: the daemon's answer, or one made here without it.
fn relay(base: &str, target: &Target, config: bool) -> String {
    let verb = if config { "config" } else { "fetch" };
    let (commands, service) = match target {
        Target::One(g) => (vec![format!("{verb} sockwatch_{}", g.name)], format!("sockwatch_{}", g.name)),
        Target::Multigraph => {
            (vec!["cap multigraph".into(), format!("{verb} {MULTIGRAPH_SERVICE}")], MULTIGRAPH_SERVICE.to_owned())
        }
    };
    let why = match ask_with_deadline(commands) {
        Ok(lines) if lines.first().is_none_or(|l| !l.starts_with("# Unknown")) => {
            return lines.into_iter().map(|l| l + "\n").collect();
        }
        Ok(_) => format!("the daemon does not serve {service} (conntrack breakdown off?)"),
        Err(e) => e.to_string(),
    };
    // stderr lines starting with "# " are not logged as errors by munin-node.
    eprintln!("# {base}: {why}; answering without it");
    // The limits the thresholds come from are O(1) reads: keep Munin's warning and
    // critical lines when the daemon is down, which is when they matter.
    let limits = config.then(limits_snapshot);
    let mut out = String::new();
    match *target {
        Target::One(g) if config => graphs::config(g, limits.as_ref(), &mut out),
        Target::One(g) => graphs::fetch(g, None, &mut out),
        Target::Multigraph => catalog::multigraph(limits.as_ref(), false, config, !config, &mut out),
    }
    out
}
