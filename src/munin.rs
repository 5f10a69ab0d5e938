//! The Munin protocol shim: speaks what a munin master (or our plugin) expects of a
//! munin-node, answering from the latest snapshot. It never samples, so it answers in
//! milliseconds however large the kernel tables are.
//!
//! Services are named `sockwatch_<graph>`, the names the wildcard plugin gets installed
//! under, so a master sees the same graphs whether it talks to munin-node (plugin) or to
//! this shim directly. After `cap multigraph`, `list` offers the single multigraph service
//! `sockwatch` instead, so nothing is graphed twice.
//!
//! Limits: one line is at most [`MAX_LINE`] bytes (a longer one ends the session), a
//! session idle for `--munin.idle-timeout` is closed, and at most `--munin.max-clients`
//! sessions run at once (the rest are told to retry and closed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};

use crate::exporter::munin as graphs;
use crate::sampler::Latest;
use crate::snapshot::Snapshot;

/// Longest request line accepted, newline included.
pub const MAX_LINE: usize = 1024;
/// Name of the multigraph service.
pub const MULTIGRAPH_SERVICE: &str = "sockwatch";

/// One parsed request line, matched as munin-node matches them (case-insensitive prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    List(Option<&'a str>),
    Nodes,
    Config(&'a str),
    Fetch(&'a str),
    Cap(&'a str),
    Version,
    Quit,
    Empty,
    Unknown,
}

/// Parses one request line (without its newline). Never fails: anything else is `Unknown`.
pub fn parse_request(line: &str) -> Request<'_> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut words = line.splitn(2, [' ', '\t']);
    let cmd = words.next().unwrap_or("");
    let arg = words.next().map(str::trim).filter(|a| !a.is_empty());
    let first_arg = arg.and_then(|a| a.split_whitespace().next());
    match cmd.to_ascii_lowercase().as_str() {
        "" if line.trim().is_empty() => Request::Empty,
        "list" => Request::List(first_arg),
        "nodes" => Request::Nodes,
        "config" => Request::Config(first_arg.unwrap_or("")),
        "fetch" => Request::Fetch(first_arg.unwrap_or("")),
        "cap" => Request::Cap(arg.unwrap_or("")),
        "version" => Request::Version,
        "quit" | "." => Request::Quit,
        _ => Request::Unknown,
    }
}

/// What the master told us it supports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Session {
    pub multigraph: bool,
    pub dirtyconfig: bool,
}

/// Answers requests from a snapshot. Shared by every session.
pub struct Shim {
    pub latest: Latest,
    pub host: String,
    pub breakdown: bool,
    pub idle_timeout: Duration,
    slots: Arc<Semaphore>,
}

impl Shim {
    pub fn new(latest: Latest, host: String, breakdown: bool, max_clients: usize, idle_timeout: Duration) -> Shim {
        Shim { latest, host, breakdown, idle_timeout, slots: Arc::new(Semaphore::new(max_clients)) }
    }

    /// Appends the answer to `req`; returns false when the session should end.
    pub fn respond(&self, req: &Request<'_>, session: &mut Session, snap: Option<&Snapshot>, out: &mut String) -> bool {
        match *req {
            Request::List(node) => {
                if node.is_none_or(|n| n.eq_ignore_ascii_case(&self.host)) {
                    if session.multigraph {
                        out.push_str(MULTIGRAPH_SERVICE);
                    } else {
                        let names: Vec<String> =
                            graphs::graphs(self.breakdown).map(|g| format!("sockwatch_{}", g.name)).collect();
                        out.push_str(&names.join(" "));
                    }
                }
                out.push('\n');
            }
            Request::Nodes => {
                out.push_str(&self.host);
                out.push_str("\n.\n");
            }
            Request::Config(name) | Request::Fetch(name) => {
                let config = matches!(req, Request::Config(_));
                if name == MULTIGRAPH_SERVICE {
                    let values = !config || session.dirtyconfig;
                    graphs::multigraph(snap, self.breakdown, config, values, out);
                } else {
                    match name.strip_prefix("sockwatch_").and_then(|g| graphs::find(g, self.breakdown)) {
                        Some(g) if config => {
                            graphs::config(g, snap, out);
                            if session.dirtyconfig {
                                graphs::fetch(g, snap, out);
                            }
                        }
                        Some(g) => graphs::fetch(g, snap, out),
                        None => out.push_str("# Unknown service\n"),
                    }
                }
                out.push_str(".\n");
            }
            Request::Cap(caps) => {
                let caps: Vec<&str> = caps.split_whitespace().collect();
                session.multigraph = caps.contains(&"multigraph");
                session.dirtyconfig = caps.contains(&"dirtyconfig");
                out.push_str("cap multigraph dirtyconfig\n");
            }
            Request::Version => {
                out.push_str(&format!(
                    "munins node on {} version: 2.0 (sockwatch {})\n",
                    self.host,
                    env!("CARGO_PKG_VERSION")
                ));
            }
            Request::Quit => return false,
            Request::Empty => {}
            Request::Unknown => {
                out.push_str("# Unknown command. Try cap, list, nodes, config, fetch, version or quit\n");
            }
        }
        true
    }

    /// Runs one session on any byte stream.
    pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(self: Arc<Self>, stream: S) {
        let Ok(_permit) = self.slots.clone().try_acquire_owned() else {
            let mut stream = stream;
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                stream.write_all(b"# too many connections, try again later\n"),
            )
            .await;
            return;
        };
        let (rd, mut wr) = tokio::io::split(stream);
        let mut rd = BufReader::new(rd);
        let idle = self.idle_timeout;
        let greeting = format!("# munin node at {}\n", self.host);
        if !matches!(tokio::time::timeout(idle, wr.write_all(greeting.as_bytes())).await, Ok(Ok(()))) {
            return;
        }
        let mut session = Session::default();
        let mut line = Vec::with_capacity(128);
        let mut out = String::with_capacity(4096);
        loop {
            line.clear();
            let read = tokio::time::timeout(idle, (&mut rd).take(MAX_LINE as u64).read_until(b'\n', &mut line)).await;
            match read {
                Err(_) => {
                    let _ = wr.write_all(b"# idle timeout, closing\n").await;
                    return;
                }
                Ok(Err(_)) | Ok(Ok(0)) => return,
                Ok(Ok(_)) => {}
            }
            if line.last() != Some(&b'\n') && line.len() >= MAX_LINE {
                let msg = format!("# line too long (more than {MAX_LINE} bytes), closing\n");
                let _ = tokio::time::timeout(idle, wr.write_all(msg.as_bytes())).await;
                return;
            }
            let text = String::from_utf8_lossy(&line);
            let req = parse_request(&text);
            let snap = self.latest.borrow().as_ref().map(|p| p.snapshot.clone());
            out.clear();
            let more = self.respond(&req, &mut session, snap.as_deref(), &mut out);
            if !matches!(tokio::time::timeout(idle, wr.write_all(out.as_bytes())).await, Ok(Ok(()))) || !more {
                return;
            }
        }
    }
}

/// The node name munin masters see: this host's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// Creates the Unix socket: makes its directory, refuses to steal a live socket, removes a
/// stale one, and sets mode 0660 so the munin group (via the directory) can connect.
pub fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!("{} is in use by another running process", path.display()));
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
        }
        Ok(_) => return Err(format!("{} exists and is not a socket", path.display())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set mode 0660 on {}: {e}", path.display()))?;
    Ok(listener)
}

/// Serves sessions on the Unix socket until shutdown, then removes the socket file.
pub async fn serve_unix(listener: UnixListener, path: PathBuf, shim: Arc<Shim>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => { tokio::spawn(shim.clone().session(stream)); }
                Err(e) => {
                    tracing::warn!("munin socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!("cannot remove {}: {e}", path.display());
    }
}

/// Serves sessions on a TCP listener until shutdown.
pub async fn serve_tcp(listener: TcpListener, shim: Arc<Shim>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => { tokio::spawn(shim.clone().session(stream)); }
                Err(e) => {
                    tracing::warn!("munin TCP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_munin_node_reads_them() {
        assert_eq!(parse_request("list\n"), Request::List(None));
        assert_eq!(parse_request("LIST host.example\r\n"), Request::List(Some("host.example")));
        assert_eq!(parse_request("config sockwatch_conntrack"), Request::Config("sockwatch_conntrack"));
        assert_eq!(parse_request("fetch  sockwatch_conntrack  extra"), Request::Fetch("sockwatch_conntrack"));
        assert_eq!(parse_request("fetch"), Request::Fetch(""));
        assert_eq!(parse_request("cap multigraph dirtyconfig\r"), Request::Cap("multigraph dirtyconfig"));
        assert_eq!(parse_request("version"), Request::Version);
        assert_eq!(parse_request("nodes"), Request::Nodes);
        assert_eq!(parse_request("quit"), Request::Quit);
        assert_eq!(parse_request("."), Request::Quit);
        assert_eq!(parse_request(""), Request::Empty);
        assert_eq!(parse_request("   \r\n"), Request::Empty);
        assert_eq!(parse_request("rm -rf /"), Request::Unknown);
        assert_eq!(parse_request("\u{fffd}\u{0}garbage"), Request::Unknown);
    }

    fn shim() -> Shim {
        let (_tx, rx) = watch::channel(None);
        Shim::new(rx, "node.example".into(), false, 4, Duration::from_secs(1))
    }

    fn ask(shim: &Shim, session: &mut Session, line: &str) -> String {
        let mut out = String::new();
        shim.respond(&parse_request(line), session, None, &mut out);
        out
    }

    #[test]
    fn responses() {
        let s = shim();
        let mut session = Session::default();
        let list = ask(&s, &mut session, "list");
        assert!(list.starts_with("sockwatch_tcp_states sockwatch_conntrack "), "{list}");
        assert!(!list.contains("fw_conntrack"), "breakdown graph only when enabled");
        assert_eq!(ask(&s, &mut session, "list other.host"), "\n");
        assert_eq!(ask(&s, &mut session, "nodes"), "node.example\n.\n");
        assert_eq!(ask(&s, &mut session, "fetch nope"), "# Unknown service\n.\n");
        assert_eq!(ask(&s, &mut session, "config nope"), "# Unknown service\n.\n");
        assert!(ask(&s, &mut session, "bogus").starts_with("# Unknown command"));
        // No snapshot yet: every value unknown.
        let fetch = ask(&s, &mut session, "fetch sockwatch_conntrack");
        assert_eq!(fetch, "entries.value U\nmax.value U\n.\n");
        assert_eq!(ask(&s, &mut session, "cap multigraph"), "cap multigraph dirtyconfig\n");
        assert_eq!(ask(&s, &mut session, "list"), "sockwatch\n");
        let mg = ask(&s, &mut session, "fetch sockwatch");
        assert!(mg.starts_with("multigraph sockwatch_tcp_states\n") && mg.ends_with(".\n"), "{mg}");
        assert_eq!(mg.matches("multigraph ").count(), 6);
        // dirtyconfig: config carries the values too.
        ask(&s, &mut session, "cap dirtyconfig");
        let cfg = ask(&s, &mut session, "config sockwatch_conntrack");
        assert!(cfg.contains("graph_title") && cfg.contains("entries.value U"), "{cfg}");
        let mut out = String::new();
        assert!(!s.respond(&Request::Quit, &mut session, None, &mut out));
    }
}
