//! Every setting, defined once: its name (the flag is `--` + name, the TOML key is the
//! name as a dotted key), the type its TOML value must have, its default, its help line
//! and whether a SIGHUP can apply it. The command line (`src/cli.rs`), the man page and
//! completions (`build.rs`), the config file's known keys, the defaults and the reload
//! rules are all read from this table. Parsing and validation of each value live in
//! `config/mod.rs`, in the one line that builds its field.
//!
//! This file uses nothing but `core`, so that `build.rs` can include it.

/// What a setting's TOML value must be; on the command line every value is text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A non-negative integer.
    Count,
    /// A number (integer or float).
    Number,
    /// A boolean; on the command line a switch that takes no value.
    Switch,
    /// An array of port numbers; on the command line comma-separated or repeated.
    Ports,
}

/// The settings whose text takes one of a few words: `--help` lists them, the shell
/// completions offer them, and the config check accepts only them. Words after `|` are
/// accepted but not offered (older spellings).
pub const CHOICES: [(&str, &[&str]); 3] = [
    ("netns", &["auto", "on", "off", "|", "true", "false"]),
    ("log.level", &["error", "warn", "info", "debug", "trace"]),
    ("log.format", &["text", "logfmt", "json"]),
];

/// The words a setting offers, if it is one of [`CHOICES`] (without the hidden ones).
pub const fn choices(name: &str) -> Option<&'static [&'static str]> {
    let mut i = 0;
    while i < CHOICES.len() {
        if eq(CHOICES[i].0, name) {
            let all = CHOICES[i].1;
            let mut n = 0;
            while n < all.len() && !eq(all[n], "|") {
                n += 1;
            }
            return Some(all.split_at(n).0);
        }
        i += 1;
    }
    None
}

/// Every word a setting accepts, hidden ones included.
pub fn accepted<'a>(name: &'a str) -> impl Iterator<Item = &'static str> + 'a {
    CHOICES.iter().filter(move |(n, _)| *n == name).flat_map(|(_, w)| w.iter().copied().filter(|w| *w != "|"))
}

const fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether a SIGHUP applies a changed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Applied on SIGHUP.
    Applies,
    /// Needs new listeners or tasks: applied at the next restart (a SIGHUP warns).
    Restart,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    /// `web.listen-address`: the flag is `--web.listen-address`, the TOML key the same.
    pub name: &'static str,
    /// The placeholder in `--help` (`ADDR`, `DURATION`); unused for a switch.
    pub value_name: &'static str,
    pub kind: Kind,
    /// The default, in the same text a flag would give; `""` is "none" / "off".
    pub default: &'static str,
    pub reload: Reload,
    pub help: &'static str,
}

macro_rules! settings {
    ($( $(#[$doc:meta])* $id:ident = $name:literal, $value:literal, $kind:ident, $default:literal, $reload:ident, $help:literal; )*) => {
        $( $(#[$doc])* pub const $id: Setting = Setting {
            name: $name, value_name: $value, kind: Kind::$kind, default: $default,
            reload: Reload::$reload, help: $help,
        }; )*
        /// All settings, in the order `--help` lists them.
        pub const SETTINGS: &[Setting] = &[$($id),*];
    };
}

settings! {
    LISTEN_ADDRESS = "web.listen-address", "ADDR", Text, "127.0.0.1:9822", Restart,
        "Address to serve HTTP on; \":PORT\" means all interfaces";
    WEB_CONFIG_FILE = "web.config.file", "FILE", Text, "", Applies,
        "TLS and basic auth, in the Prometheus exporter-toolkit web config format";
    TELEMETRY_PATH = "web.telemetry-path", "PATH", Text, "/metrics", Restart,
        "Path under which to expose metrics";
    INTERVAL = "interval", "DURATION", Text, "10s", Applies,
        "Sampling interval, e.g. 10s, 1m (1s to 1h)";
    LOG_LEVEL = "log.level", "LEVEL", Text, "info", Applies,
        "Log level: error, warn, info, debug (each sample's timing), trace (each source's read)";
    LOG_FORMAT = "log.format", "FORMAT", Text, "text", Restart,
        "Log line format: text (for people), logfmt or json (for log shippers)";
    PROCFS = "path.procfs", "DIR", Text, "/proc", Applies,
        "procfs mount point";
    PORTS_TOP_K = "ports.top-k", "K", Count, "20", Applies,
        "Busiest destinations exported per address family (0 to 1000)";
    LISTENERS_TOP_K = "listeners.top-k", "K", Count, "20", Applies,
        "Busiest listening ports and listeners exported (0 to 1000)";
    LISTENER_PORTS = "listeners.ports", "PORTS", Ports, "", Applies,
        "Listening ports always exported, comma-separated (e.g. 80,443)";
    UDP_TOP_K = "udp.top-k", "K", Count, "20", Applies,
        "UDP ports exported by drops and, separately, by receive queue fill (0 to 1000)";
    UDP_PORTS = "udp.ports", "PORTS", Ports, "", Applies,
        "UDP ports always exported while they have a socket, comma-separated (e.g. 53,514)";
    FDS_TOP_K = "fds.top-k", "K", Count, "10", Applies,
        "Processes exported by open descriptors against their RLIMIT_NOFILE (0 to 1000; 0 also skips the per-process walk)";
    NETNS = "netns", "MODE", Text, "auto", Applies,
        "Read every network namespace (containers, pods): auto (on in the host's initial network namespace), on, off";
    NETNS_TOP_K = "netns.top-k", "K", Count, "20", Applies,
        "Network namespaces exported, by pressure (0 to 1000)";
    NETNS_DEEP = "netns.deep", "", Switch, "true", Applies,
        "With --netns: dump sockets inside the namespaces that could run out of ports (the per-pod layer); --no-netns.deep keeps each namespace's O(1) counters only";
    MAX_SHARE = "sampler.max-share", "FRACTION", Number, "0.25", Applies,
        "Largest share of the interval a sample may take; slower samples stretch the interval (self-protection)";
    CONNTRACK_BREAKDOWN = "conntrack.breakdown", "", Switch, "false", Restart,
        "Count conntrack entries by state from a ctnetlink dump (needs CAP_NET_ADMIN)";
    CONNTRACK_BREAKDOWN_INTERVAL = "conntrack.breakdown-interval", "DURATION", Text, "60s", Restart,
        "Interval of the conntrack breakdown dump";
    CONNTRACK_EVENTS = "conntrack.events", "", Switch, "false", Restart,
        "With the breakdown: keep sources, destinations and NAT port use current from ctnetlink events, dumping the table only every --conntrack.resync-interval";
    CONNTRACK_RESYNC_INTERVAL = "conntrack.resync-interval", "DURATION", Text, "10m", Restart,
        "With --conntrack.events: how often the full dump that resynchronises the counts runs (1s to 1h)";
    CONNTRACK_EVENT_BUFFER = "conntrack.event-buffer", "BYTES", Count, "16777216", Restart,
        "With --conntrack.events: receive buffer for events (4096 to 1073741824); when it overflows, a full dump resynchronises";
    CONNTRACK_TOP_K = "conntrack.top-k", "K", Count, "20", Restart,
        "With the breakdown: busiest conntrack sources, destinations and NAT mappings exported (0 to 1000)";
    NAT_PORT_RANGE = "nat.port-range", "LOW-HIGH", Text, "1024-65535", Restart,
        "Source ports NAT picks from per mapping (a rule's \"to :LOW-HIGH\"); NAT port use is held against it";
    MUNIN_SOCKET = "munin.socket", "PATH", Text, "/run/sockwatch/munin.sock", Restart,
        "Unix socket for the Munin protocol shim; \"\" disables it";
    MUNIN_LISTEN_ADDRESS = "munin.listen-address", "ADDR", Text, "", Restart,
        "Also speak the Munin protocol on this TCP address (off by default)";
    MUNIN_MAX_CLIENTS = "munin.max-clients", "N", Count, "64", Restart,
        "Munin sessions held at once; past it, an idle session of the client holding the most is closed to make room";
    MUNIN_IDLE_TIMEOUT = "munin.idle-timeout", "DURATION", Text, "60s", Restart,
        "Close a Munin session that sends no command for this long";
}

/// The setting called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}
