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
//! session that sends no command for `--munin.idle-timeout` is closed (empty and unknown
//! lines do not count: a newline now and then keeps nothing open), and at most
//! `--munin.max-clients` sessions are held: when all are taken, a new one closes the
//! session idle longest ([`crate::slots`]); only when all are answering a command does it
//! wait, for [`SLOT_WAIT`] at most, then it is told to retry and closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};

use crate::listen::{AcceptErrors, LISTEN_BACKLOG};
use crate::munin::{catalog, graphs};
use crate::sampler::Latest;
use crate::shutdown::Shutdown;
use crate::slots::{Peer, Slots};
use crate::snapshot::Snapshot;

/// Longest a new session waits for a slot while every session is answering a command.
pub const SLOT_WAIT: Duration = Duration::from_secs(2);

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
    slots: Arc<Slots>,
}

impl Shim {
    pub fn new(latest: Latest, host: String, breakdown: bool, max_clients: usize, idle_timeout: Duration) -> Shim {
        Shim { latest, host, breakdown, idle_timeout, slots: Slots::new(max_clients) }
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
                            catalog::graphs(self.breakdown).map(|g| format!("sockwatch_{}", g.name)).collect();
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
                    catalog::multigraph(snap, self.breakdown, config, values, out);
                } else {
                    match name.strip_prefix("sockwatch_").and_then(|g| catalog::find(g, self.breakdown)) {
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
    pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(self: Arc<Self>, stream: S, peer: Peer) {
        let Ok(slot) = tokio::time::timeout(SLOT_WAIT, self.slots.acquire(peer)).await else {
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
        // Only a command moves the idle deadline: empty and unknown lines do not.
        let mut deadline = tokio::time::Instant::now() + idle;
        loop {
            line.clear();
            let mut limited = (&mut rd).take(MAX_LINE as u64);
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, limited.read_until(b'\n', &mut line)) => r,
                _ = slot.state.evicted() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(b"# idle, closed to make room\n")).await;
                    return;
                }
            };
            match read {
                Err(_) => {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), wr.write_all(b"# idle timeout, closing\n")).await;
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
            let command = !matches!(req, Request::Empty | Request::Unknown);
            if command {
                slot.state.begin();
                deadline = tokio::time::Instant::now() + idle;
            }
            let snap = self.latest.borrow().as_ref().map(|p| p.snapshot.clone());
            out.clear();
            let more = self.respond(&req, &mut session, snap.as_deref(), &mut out);
            // Answered: evictable again while the answer is written, so a client that
            // pipelines commands and never reads cannot hold a slot as "busy".
            if command {
                slot.state.end();
            }
            let written = tokio::select! {
                r = tokio::time::timeout(idle, wr.write_all(out.as_bytes())) => matches!(r, Ok(Ok(()))),
                _ = slot.state.evicted() => false,
            };
            if !written || !more {
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

/// Why the Munin socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("{} is in use by another running process", .0.display())]
    InUse(std::path::PathBuf),
    #[error("{} exists and is not a socket", .0.display())]
    NotSocket(std::path::PathBuf),
}

/// Creates the Unix socket: makes its directory, refuses to steal a live socket, removes a
/// stale one, and sets mode 0660 so the munin group (via the directory) can connect.
pub fn bind_unix(path: &Path) -> Result<UnixListener, SocketError> {
    let io = |action: &'static str, at: &Path| {
        let at = at.to_owned();
        move |source| SocketError::Io { action, path: at, source }
    };
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // 0755 whatever the umask: the socket's own mode (0660) is what admits the group.
        use std::os::unix::fs::DirBuilderExt;
        let existed = dir.exists();
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(io("create", dir))?;
        if !existed {
            // mkdir applies the umask: set the mode we mean (a umask of 077 would lock the
            // munin group out, one of 000 would open it to everyone).
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io("set mode 0755 on", dir))?;
        }
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                tracing::warn!(
                    "{} is world-writable (mode {mode:o}): anyone can replace the Munin socket",
                    dir.display()
                );
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io("remove stale", path))?;
        }
        Ok(_) => return Err(SocketError::NotSocket(path.to_owned())),
        Err(_) => {}
    }
    let listener = listen_unix(path).map_err(io("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io("set mode 0660 on", path))?;
    Ok(listener)
}

/// Binds and listens on a Unix stream socket with [`LISTEN_BACKLOG`] (std and
/// tokio use 128 or 1024: a client with a few thousand connections would keep the queue
/// full and a legitimate `connect()` asleep). Created with mode 0600 whatever the umask, so
/// nobody else can connect before [`bind_unix`] opens it to the group.
fn listen_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "path too long for a Unix socket"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket(2); the fd is owned by the std listener below from here on.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: umask is process-wide: set it around bind only, restored at once; addr is a
    // valid sockaddr_un of `len` bytes.
    let rc = unsafe {
        let old = libc::umask(0o177);
        let rc = libc::bind(fd, (&raw const addr).cast(), len);
        libc::umask(old);
        rc
    };
    // SAFETY: fd is a bound socket.
    if rc != 0 || unsafe { libc::listen(fd, LISTEN_BACKLOG as libc::c_int) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    UnixListener::from_std(std_listener)
}

/// A listener the shim accepts sessions on, with who is at the other end.
pub trait Accept {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_peer(&self) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_peer(&self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, _) = self.accept().await?;
        let peer =
            stream.peer_cred().map_or(Peer::Unknown, |c| Peer::Process { uid: c.uid(), pid: c.pid().unwrap_or(0) });
        Ok((stream, peer))
    }
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_peer(&self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, addr) = self.accept().await?;
        Ok((stream, Peer::ip(addr.ip())))
    }
}

/// The accept loop: a session per connection until shutdown; accept failures logged once
/// per change of state.
async fn serve<L: Accept>(what: &'static str, listener: &L, shim: Arc<Shim>, shutdown: &mut Shutdown) {
    let mut errors = AcceptErrors::default();
    loop {
        tokio::select! {
            r = listener.accept_peer() => match r {
                Ok((stream, peer)) => {
                    errors.accepted(what);
                    tokio::spawn(shim.clone().session(stream, peer));
                }
                Err(e) => errors.failed(what, e).await,
            },
            _ = shutdown.recv() => return,
        }
    }
}

/// Serves sessions on the Unix socket until shutdown, then removes the socket file.
pub async fn serve_unix(listener: UnixListener, path: PathBuf, shim: Arc<Shim>, mut shutdown: Shutdown) {
    serve("munin socket", &listener, shim, &mut shutdown).await;
    drop(listener);
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!("cannot remove {}: {e}", path.display());
    }
}

/// Serves sessions on a TCP listener until shutdown.
pub async fn serve_tcp(listener: TcpListener, shim: Arc<Shim>, mut shutdown: Shutdown) {
    serve("munin TCP", &listener, shim, &mut shutdown).await;
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
        let (_tx, rx) = tokio::sync::watch::channel(None);
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
        assert_eq!(mg.matches("multigraph ").count(), 11);
        // dirtyconfig: config carries the values too.
        ask(&s, &mut session, "cap dirtyconfig");
        let cfg = ask(&s, &mut session, "config sockwatch_conntrack");
        assert!(cfg.contains("graph_title") && cfg.contains("entries.value U"), "{cfg}");
        let mut out = String::new();
        assert!(!s.respond(&Request::Quit, &mut session, None, &mut out));
    }
}
