//! Settings: merged from the command line, the optional TOML file (`--config FILE`) and
//! the defaults, and validated.
//!
//! Each setting is defined once, in [`settings`]: its name (the flag is `--NAME`, the
//! file key is `NAME` as a TOML dotted key), default, type and whether a SIGHUP applies
//! it. This module turns the text of each value into its typed field, in one line per
//! field (`Config::from_resolved`). For example:
//!
//! ```toml
//! interval = "15s"
//! web.listen-address = "127.0.0.1:9822"
//! listeners.ports = [80, 443]
//! conntrack.breakdown = false
//! munin.socket = ""                 # disables the Unix socket
//! sampler.max-share = 0.25
//! ```
//!
//! A flag given on the command line wins over the file; the file wins over the defaults.
//! Unknown keys and bad values are rejected with a message naming the flag, or the file
//! and key, the value came from.

pub mod settings;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sources::ctnetlink::attribution::AttributionConfig;
use crate::sources::ctnetlink::events::EventsConfig;
use crate::sources::tcp::ports::PortsConfig;
use crate::sources::udp::sockets::UdpConfig;
use settings::{Kind, Reload, Setting, SETTINGS};

const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const LOG_LEVELS: &[&str] = match settings::choices("log.level") {
    Some(c) => c,
    None => &[],
};

/// The default Munin socket, also where the plugin looks when not told otherwise.
pub const DEFAULT_MUNIN_SOCKET: &str = settings::MUNIN_SOCKET.default;

/// The settings after merging flags, file and defaults, all validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen_address: SocketAddr,
    /// `--web.config.file`: TLS and basic auth (checked when the server starts).
    pub web_config_file: Option<PathBuf>,
    pub telemetry_path: String,
    pub interval: Duration,
    pub log_level: String,
    /// `text`, `logfmt` or `json`.
    pub log_format: String,
    pub procfs: PathBuf,
    pub ports: PortsConfig,
    pub udp: UdpConfig,
    /// `--netns`: `None` is auto (decided by the sampler from where it runs).
    pub netns: Option<bool>,
    pub netns_top_k: usize,
    /// `--netns.deep`: the deep layer (dumps inside namespaces) on top of the counters.
    pub netns_deep: bool,
    /// `--fds.top-k`: processes kept by descriptor use; 0 skips the per-process walk.
    pub fds_top_k: usize,
    pub conntrack_breakdown: bool,
    pub conntrack_breakdown_interval: Duration,
    /// With the breakdown and `--conntrack.events`: follow events between full dumps.
    pub conntrack_events: Option<EventsConfig>,
    /// With the breakdown: top-K and the NAT port range (`--conntrack.top-k`, `--nat.port-range`).
    pub conntrack_attribution: AttributionConfig,
    pub munin: MuninConfig,
    /// Self-protection: the share of the interval a sample may take.
    pub max_share: f64,
    /// Each setting's value as text and where it came from, in [`SETTINGS`] order: what a
    /// reload compares and keeps.
    resolved: Vec<Resolved>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MuninConfig {
    /// `None`: the Unix socket is disabled.
    pub socket: Option<PathBuf>,
    pub listen_address: Option<SocketAddr>,
    pub max_clients: usize,
    pub idle_timeout: Duration,
}

/// A configuration problem: names where (flag or file and key) the bad value came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// What the command line gave: the config file it names, and the settings given as flags
/// (as text, exactly as typed; a switch given is `"true"`).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    values: Vec<(&'static str, String)>,
}

impl Flags {
    /// Records `--NAME VALUE` (a later call for the same setting wins).
    pub fn set(&mut self, setting: &Setting, value: impl Into<String>) {
        self.values.retain(|(n, _)| *n != setting.name);
        self.values.push((setting.name, value.into()));
    }

    pub fn with(mut self, setting: &Setting, value: impl Into<String>) -> Self {
        self.set(setting, value);
        self
    }

    fn get(&self, setting: &Setting) -> Option<&str> {
        self.values.iter().find(|(n, _)| *n == setting.name).map(|(_, v)| v.as_str())
    }
}

/// A setting's value as text, and where it came from.
#[derive(Debug, Clone, PartialEq)]
struct Resolved {
    value: String,
    origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
enum Origin {
    Default,
    Flag,
    File(PathBuf),
}

impl Config {
    /// Merges the flags with the config file they name (if any) and the defaults.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => Vec::new(),
        };
        let resolved = SETTINGS
            .iter()
            .map(|s| {
                if let Some(v) = flags.get(s) {
                    return Resolved { value: v.to_owned(), origin: Origin::Flag };
                }
                match (file.iter().find(|(n, _)| *n == s.name), &flags.config) {
                    (Some((_, v)), Some(path)) => Resolved { value: v.clone(), origin: Origin::File(path.clone()) },
                    _ => Resolved { value: s.default.to_owned(), origin: Origin::Default },
                }
            })
            .collect();
        Config::from_resolved(resolved)
    }

    /// SIGHUP: the same flags, the file read again. Settings a reload cannot apply keep
    /// their running values; their names are returned when the file changed them.
    pub fn reload(&self, flags: &Flags) -> Result<(Config, Vec<&'static str>), ConfigError> {
        let new = Config::load(flags)?;
        let mut kept = Vec::new();
        let mut resolved = new.resolved;
        for ((setting, old), new) in SETTINGS.iter().zip(&self.resolved).zip(resolved.iter_mut()) {
            if setting.reload == Reload::Restart && old.value != new.value {
                kept.push(setting.name);
                *new = old.clone();
            }
        }
        Ok((Config::from_resolved(resolved)?, kept))
    }

    /// Each value parsed and validated, then the settings checked against each other.
    fn from_resolved(resolved: Vec<Resolved>) -> Result<Config, ConfigError> {
        let config = Config::each_value(resolved)?;
        if config.conntrack_events.is_some() && !config.conntrack_breakdown {
            return Err(ConfigError(
                "conntrack.events: needs conntrack.breakdown (the events keep the breakdown dump's counts current)"
                    .to_owned(),
            ));
        }
        Ok(config)
    }

    /// Parses and validates each setting's text: one line per field.
    fn each_value(resolved: Vec<Resolved>) -> Result<Config, ConfigError> {
        use settings::*;
        let v = Values(&resolved);
        Ok(Config {
            listen_address: v.get(&LISTEN_ADDRESS, parse_listen_address)?,
            web_config_file: v.get(&WEB_CONFIG_FILE, optional(readable_file))?,
            telemetry_path: v.get(&TELEMETRY_PATH, validate_telemetry_path)?,
            interval: v.get(&INTERVAL, parse_interval)?,
            log_level: v.get(&LOG_LEVEL, log_level)?,
            log_format: v.get(&LOG_FORMAT, log_format)?,
            procfs: v.get(&PROCFS, directory)?,
            ports: PortsConfig {
                top_k: v.get(&PORTS_TOP_K, top_k)?,
                listeners_top_k: v.get(&LISTENERS_TOP_K, top_k)?,
                listener_ports: v.get(&LISTENER_PORTS, port_list)?,
            },
            udp: UdpConfig { top_k: v.get(&UDP_TOP_K, top_k)?, ports: v.get(&UDP_PORTS, port_list)? },
            netns: v.get(&NETNS, auto_on_off)?,
            netns_top_k: v.get(&NETNS_TOP_K, top_k)?,
            netns_deep: v.get(&NETNS_DEEP, switch)?,
            fds_top_k: v.get(&FDS_TOP_K, top_k)?,
            conntrack_breakdown: v.get(&CONNTRACK_BREAKDOWN, switch)?,
            conntrack_breakdown_interval: v.get(&CONNTRACK_BREAKDOWN_INTERVAL, parse_interval)?,
            conntrack_events: v.get(&CONNTRACK_EVENTS, switch)?.then_some(EventsConfig {
                resync: v.get(&CONNTRACK_RESYNC_INTERVAL, parse_interval)?,
                buffer: v.get(&CONNTRACK_EVENT_BUFFER, |n| count_in(n, 4096, 1 << 30))?,
            }),
            conntrack_attribution: AttributionConfig {
                top_k: v.get(&CONNTRACK_TOP_K, top_k)?,
                nat_ports: v.get(&NAT_PORT_RANGE, port_range_size)?,
                nat_recycles: crate::sources::ctnetlink::attribution::nat_recycles_on_this_kernel(),
            },
            max_share: v.get(&MAX_SHARE, fraction)?,
            munin: MuninConfig {
                socket: v.get(&MUNIN_SOCKET, optional(|p| Ok(PathBuf::from(p))))?,
                listen_address: v.get(&MUNIN_LISTEN_ADDRESS, optional(parse_listen_address))?,
                max_clients: v.get(&MUNIN_MAX_CLIENTS, |n| count_in(n, 1, 10_000))?,
                idle_timeout: v.get(&MUNIN_IDLE_TIMEOUT, parse_interval)?,
            },
            resolved,
        })
    }
}

/// What is wrong with a value, in words: the validators below return it, and
/// [`ConfigError`] adds where the value came from.
type Problem = String;

/// The resolved values, looked up by setting.
struct Values<'a>(&'a [Resolved]);

impl Values<'_> {
    /// Parses `setting`'s value with `check`; an error is prefixed with where the value
    /// came from.
    fn get<T>(&self, setting: &Setting, check: impl FnOnce(&str) -> Result<T, Problem>) -> Result<T, ConfigError> {
        let i = SETTINGS.iter().position(|s| s == setting).expect("a setting from the table");
        let Resolved { value, origin } = &self.0[i];
        check(value).map_err(|e| {
            let name = setting.name;
            ConfigError(match origin {
                Origin::Flag => format!("--{name}: {e}"),
                Origin::File(path) => format!("{}: key `{name}`: {e}", path.display()),
                Origin::Default => format!("the default of {name} is invalid (a bug): {e}"),
            })
        })
    }
}

/// `""` is `None`; anything else goes through `check`.
fn optional<T>(check: impl FnOnce(&str) -> Result<T, Problem>) -> impl FnOnce(&str) -> Result<Option<T>, Problem> {
    move |v| if v.is_empty() { Ok(None) } else { check(v).map(Some) }
}

fn readable_file(v: &str) -> Result<PathBuf, Problem> {
    let p = PathBuf::from(v);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{v} is not a readable file"))
    }
}

fn directory(v: &str) -> Result<PathBuf, Problem> {
    let p = PathBuf::from(v);
    if p.is_dir() {
        Ok(p)
    } else {
        Err(format!("{v} is not a directory"))
    }
}

/// The log line formats.
pub const LOG_FORMATS: &[&str] = match settings::choices("log.format") {
    Some(c) => c,
    None => &[],
};

fn log_format(v: &str) -> Result<String, Problem> {
    if LOG_FORMATS.contains(&v) {
        Ok(v.to_owned())
    } else {
        Err(format!("{v:?} is not a log format (one of {})", LOG_FORMATS.join(", ")))
    }
}

fn log_level(v: &str) -> Result<String, Problem> {
    if LOG_LEVELS.contains(&v) {
        Ok(v.to_owned())
    } else {
        Err(format!("{v:?} is not a log level (one of {})", LOG_LEVELS.join(", ")))
    }
}

/// `auto` is `None`.
fn auto_on_off(v: &str) -> Result<Option<bool>, Problem> {
    match v {
        "auto" => Ok(None),
        "on" | "true" => Ok(Some(true)),
        "off" | "false" => Ok(Some(false)),
        _ => Err(format!("{v:?} is not auto, on or off")),
    }
}

fn switch(v: &str) -> Result<bool, Problem> {
    v.parse().map_err(|_| format!("{v:?} is not true or false"))
}

fn count_in(v: &str, min: usize, max: usize) -> Result<usize, Problem> {
    let n: usize = v.parse().map_err(|_| format!("{v:?} is not a whole number"))?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is outside {min} to {max}"))
    }
}

fn fraction(v: &str) -> Result<f64, Problem> {
    let x: f64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
    if (0.01..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{v} is outside 0.01 to 1"))
    }
}

fn port_list(v: &str) -> Result<Vec<u16>, Problem> {
    let ports = v
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<u16>().map_err(|_| format!("{p:?} is not a port number")))
        .collect::<Result<Vec<_>, _>>()?;
    if ports.len() > MAX_TOP_K {
        return Err(format!("{} ports listed, at most {MAX_TOP_K}", ports.len()));
    }
    Ok(ports)
}

/// A bound on any top-K: series count is what keeps Prometheus healthy.
const MAX_TOP_K: usize = 1000;

/// `1024-65535` → the number of ports in it (64,512).
fn port_range_size(v: &str) -> Result<u32, Problem> {
    let (low, high) = v.split_once('-').ok_or_else(|| format!("{v:?} is not a range LOW-HIGH such as 1024-65535"))?;
    let port = |p: &str| p.trim().parse::<u16>().map_err(|_| format!("{p:?} in {v:?} is not a port number"));
    let (low, high) = (port(low)?, port(high)?);
    if low == 0 || low > high {
        return Err(format!("{v:?}: the range must run from 1 up to 65535, low to high"));
    }
    Ok(u32::from(high - low) + 1)
}

fn top_k(v: &str) -> Result<usize, Problem> {
    let k: usize = v.parse().map_err(|_| format!("{v:?} is not a whole number"))?;
    if k > MAX_TOP_K {
        return Err(format!("{k} is above the maximum of {MAX_TOP_K}"));
    }
    Ok(k)
}

/// Largest configuration (or web configuration) file read: a real one is a few KiB.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Reads the config file into (setting name, value as text) pairs. Dotted keys and
/// tables are the same thing in TOML: `[web]` + `listen-address` is `web.listen-address`.
fn read_file(path: &Path) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let text = crate::sources::read_small_file(path, MAX_CONFIG_FILE)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
    let mut out = Vec::new();
    flatten("", &table, &mut out).map_err(|(key, e)| ConfigError(format!("{}: key `{key}`: {e}", path.display())))?;
    Ok(out)
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(&'static str, String)>) -> Result<(), (String, String)> {
    for (key, value) in table {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        let has_children = || SETTINGS.iter().any(|s| s.name.starts_with(&format!("{name}.")));
        match (settings::find(&name), value) {
            // A table of settings under a name that is a setting too (`[netns]` + `top-k`
            // beside `--netns`): its children. TOML cannot give the name a value as well.
            (_, toml::Value::Table(inner)) if has_children() => flatten(&name, inner, out)?,
            (Some(setting), _) => out.push((setting.name, file_value(setting.kind, value).map_err(|e| (name, e))?)),
            (None, _) => return Err((name, format!("unknown field `{key}`: not a setting (see sockwatch --help)"))),
        }
    }
    Ok(())
}

/// A file value as the text a flag would give, if its TOML type is the setting's.
fn file_value(kind: Kind, value: &toml::Value) -> Result<String, Problem> {
    use toml::Value as V;
    match (kind, value) {
        (Kind::Text, V::String(s)) => Ok(s.clone()),
        (Kind::Count | Kind::Number, V::Integer(n)) => Ok(n.to_string()),
        (Kind::Number, V::Float(x)) => Ok(x.to_string()),
        (Kind::Switch, V::Boolean(b)) => Ok(b.to_string()),
        (Kind::Ports, V::Array(items)) => items
            .iter()
            .map(|i| i.as_integer().map(|n| n.to_string()).ok_or_else(|| format!("{i} is not a port number")))
            .collect::<Result<Vec<_>, _>>()
            .map(|ports| ports.join(",")),
        (kind, value) => {
            let want = match kind {
                Kind::Text => "a string",
                Kind::Count => "an integer",
                Kind::Number => "a number",
                Kind::Switch => "true or false",
                Kind::Ports => "an array of port numbers",
            };
            Err(format!("invalid type: {}, expected {want}", value.type_str()))
        }
    }
}

/// `127.0.0.1:9822`, `[::1]:9822`, `localhost:9822`, or `:9822` (all interfaces).
fn parse_listen_address(s: &str) -> Result<SocketAddr, Problem> {
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
        return Ok(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
    }
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{s:?} resolves to no address")),
        Err(e) => Err(format!("{s:?} is not HOST:PORT ({e})")),
    }
}

fn parse_interval(s: &str) -> Result<Duration, Problem> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 10s or 1m ({e})"))?;
    if d < MIN_INTERVAL || d > MAX_INTERVAL {
        return Err(format!(
            "{s:?} is outside the allowed range {} to {}",
            humantime::format_duration(MIN_INTERVAL),
            humantime::format_duration(MAX_INTERVAL)
        ));
    }
    Ok(d)
}

fn validate_telemetry_path(p: &str) -> Result<String, Problem> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with /"));
    }
    if matches!(p, "/" | "/-/healthy" | "/-/ready") {
        return Err(format!("{p:?} is taken by the landing page or a health endpoint"));
    }
    // A request's path never contains these (a query starts at `?`, a space ends the
    // path, `#` is never sent): such a path could never match.
    if let Some(c) = p.chars().find(|c| matches!(c, '?' | '#' | '%') || c.is_whitespace() || c.is_control()) {
        return Err(format!("{p:?} contains {c:?}: a request path can never match it"));
    }
    Ok(p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn conntrack_settings_are_checked_alone_and_together() {
        let (_f, flags) = with_file("conntrack.events = true\n");
        let e = Config::load(&flags).unwrap_err().to_string();
        assert!(e.contains("conntrack.events: needs conntrack.breakdown"), "{e}");
        let (_f, flags) =
            with_file("conntrack.breakdown = true\nconntrack.events = true\nnat.port-range = \"41000-41099\"\n");
        let c = Config::load(&flags).unwrap();
        assert_eq!(c.conntrack_attribution.nat_ports, 100);
        assert_eq!(c.conntrack_events.map(|e| e.resync), Some(Duration::from_secs(600)));
        for (bad, why) in [
            ("\"65535-1024\"", "low to high"),
            ("\"0-10\"", "low to high"),
            ("\"80\"", "LOW-HIGH"),
            ("\"1-x\"", "not a port"),
        ] {
            let (_f, flags) = with_file(&format!("nat.port-range = {bad}\n"));
            let e = Config::load(&flags).unwrap_err().to_string();
            assert!(e.contains("nat.port-range") && e.contains(why), "{bad}: {e}");
        }
        let (_f, flags) = with_file("conntrack.event-buffer = 10\n");
        assert!(Config::load(&flags).unwrap_err().to_string().contains("outside 4096"));
    }

    #[test]
    fn telemetry_paths_that_can_never_match_are_refused() {
        for bad in ["/metrics?x=1", "/my metrics", "/m#frag", "/m%20", "/m\tx"] {
            let e = validate_telemetry_path(bad).unwrap_err();
            assert!(e.contains("can never match"), "{bad}: {e}");
        }
        assert_eq!(validate_telemetry_path("/node/metrics").unwrap(), "/node/metrics");
    }

    fn with_file(toml: &str) -> (tempfile_lite::TempFile, Flags) {
        let f = tempfile_lite::TempFile::new(toml);
        let flags = Flags { config: Some(f.path.clone()), ..Flags::default() };
        (f, flags)
    }

    /// A tiny temp file helper, to avoid a dev-dependency for four tests.
    mod tempfile_lite {
        use std::path::PathBuf;
        pub struct TempFile {
            pub path: PathBuf,
        }
        impl TempFile {
            pub fn new(contents: &str) -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "sockwatch-test-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let mut f = std::fs::File::create(&path).unwrap();
                super::Write::write_all(&mut f, contents.as_bytes()).unwrap();
                TempFile { path }
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    #[test]
    fn defaults() {
        let c = Config::load(&Flags::default()).unwrap();
        assert_eq!(c.listen_address, "127.0.0.1:9822".parse().unwrap());
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.log_level, "info");
        assert_eq!(c.procfs, PathBuf::from("/proc"));
        assert_eq!(c.ports, PortsConfig { top_k: 20, listeners_top_k: 20, listener_ports: vec![] });
    }

    #[test]
    fn ports_settings() {
        let (_f, mut flags) = with_file("ports.top-k = 5\nlisteners.top-k = 7\nlisteners.ports = [80, 443]\n");
        let c = Config::load(&flags).unwrap();
        assert_eq!(c.ports, PortsConfig { top_k: 5, listeners_top_k: 7, listener_ports: vec![80, 443] });
        flags.set(&settings::LISTENER_PORTS, "22");
        assert_eq!(Config::load(&flags).unwrap().ports.listener_ports, vec![22]);
    }

    /// A table under a name that is a setting too: `[netns]` holds `top-k` and `deep`
    /// (it failed with "invalid type: table, expected a string"); the mode itself is a flag
    /// or `netns = "…"` in a file without the table.
    #[test]
    fn a_table_beside_a_setting_of_the_same_name() {
        let (_f, mut flags) = with_file("[netns]\ntop-k = 7\ndeep = false\n");
        let c = Config::load(&flags).unwrap();
        assert_eq!((c.netns_top_k, c.netns_deep, c.netns), (7, false, None));
        flags.set(&settings::NETNS, "on");
        assert_eq!(Config::load(&flags).unwrap().netns, Some(true));
        let (_f, flags) = with_file("netns = \"off\"\n");
        let c = Config::load(&flags).unwrap();
        assert_eq!((c.netns, c.netns_deep), (Some(false), true));
    }

    #[test]
    fn file_values_and_flag_precedence() {
        let (_f, mut flags) = with_file(
            "interval = \"15s\"\nweb.listen-address = \"127.0.0.1:9900\"\nweb.telemetry-path = \"/m\"\nlog.level = \"debug\"\n",
        );
        let c = Config::load(&flags).unwrap();
        assert_eq!(c.interval, Duration::from_secs(15));
        assert_eq!(c.listen_address, "127.0.0.1:9900".parse().unwrap());
        assert_eq!(c.telemetry_path, "/m");
        assert_eq!(c.log_level, "debug");
        flags.set(&settings::INTERVAL, "1m");
        assert_eq!(Config::load(&flags).unwrap().interval, Duration::from_secs(60));
    }

    #[test]
    fn file_errors_name_the_key() {
        for (toml, want) in [
            ("intervall = \"10s\"\n", "unknown field `intervall`"),
            ("web.listen-adress = \"x\"\n", "unknown field `listen-adress`"),
            ("interval = \"ten seconds\"\n", "key `interval`"),
            ("interval = 10\n", "invalid type"),
            ("interval = \"0s\"\n", "outside the allowed range"),
            ("web.listen-address = \"nowhere\"\n", "key `web.listen-address`"),
            ("web.telemetry-path = \"metrics\"\n", "key `web.telemetry-path`: \"metrics\" must start with /"),
            ("log.level = \"loud\"\n", "key `log.level`: \"loud\" is not a log level"),
            ("path.procfs = \"/nonexistent\"\n", "key `path.procfs`"),
            ("[web\n", "config file"),
            ("ports.top-k = 100000\n", "key `ports.top-k`: 100000 is above the maximum"),
            ("listeners.ports = [70000]\n", "listeners.ports"),
            ("listeners.port = [80]\n", "unknown field `port`"),
            ("munin.max-clients = 0\n", "key `munin.max-clients`: 0 is outside"),
            ("munin.listen-address = \"x\"\n", "key `munin.listen-address`"),
            ("conntrack.breakdown = \"yes\"\n", "invalid type"),
        ] {
            let (_f, flags) = with_file(toml);
            let e = Config::load(&flags).unwrap_err().to_string();
            assert!(e.contains(want), "{toml:?}: {e}");
        }
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let flags = Flags::default().with(&settings::INTERVAL, "soon");
        let e = Config::load(&flags).unwrap_err().to_string();
        assert!(e.starts_with("--interval: \"soon\""), "{e}");
        let flags = Flags { config: Some("/nonexistent/sockwatch.toml".into()), ..Flags::default() };
        let e = Config::load(&flags).unwrap_err().to_string();
        assert!(e.contains("cannot read config file /nonexistent/sockwatch.toml"), "{e}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":9822").unwrap(), "[::]:9822".parse().unwrap());
        assert_eq!(parse_listen_address("[::1]:1").unwrap(), "[::1]:1".parse().unwrap());
        assert!(parse_listen_address("localhost:9822").unwrap().ip().is_loopback());
        assert!(parse_listen_address(":99999").is_err());
        assert!(parse_listen_address("127.0.0.1").is_err());
    }

    #[test]
    fn reload_keeps_what_needs_a_restart_and_names_it() {
        let (f, flags) = with_file("interval = \"15s\"\nmunin.max-clients = 8\n");
        let running = Config::load(&flags).unwrap();
        std::fs::write(&f.path, "interval = \"20s\"\nmunin.max-clients = 9\nweb.telemetry-path = \"/m\"\n").unwrap();
        let (new, kept) = running.reload(&flags).unwrap();
        assert_eq!(new.interval, Duration::from_secs(20), "a reload applies the interval");
        assert_eq!(new.munin.max_clients, 8, "and keeps the Munin limit as it runs");
        assert_eq!(new.telemetry_path, "/metrics");
        assert_eq!(kept, ["web.telemetry-path", "munin.max-clients"]);
        // Compared with what runs, not with the file: the next reload names them again.
        let (_, kept) = new.reload(&flags).unwrap();
        assert_eq!(kept, ["web.telemetry-path", "munin.max-clients"]);
        std::fs::write(&f.path, "interval = \"ten\"\n").unwrap();
        assert!(running.reload(&flags).unwrap_err().to_string().contains("key `interval`"));
    }

    #[test]
    fn every_setting_has_a_valid_default_and_a_file_key() {
        let c = Config::load(&Flags::default()).unwrap();
        assert_eq!(c.munin.socket.as_deref(), Some(Path::new(DEFAULT_MUNIN_SOCKET)));
        assert_eq!((c.munin.listen_address, c.web_config_file.as_ref()), (None, None));
        for s in SETTINGS {
            assert_eq!(settings::find(s.name), Some(s), "{} defined twice", s.name);
        }
        let (_f, flags) = with_file("conntrack.breakdown = true\n[munin]\nsocket = \"\"\n[sampler]\nmax-share = 1\n");
        let c = Config::load(&flags).unwrap();
        assert!(c.conntrack_breakdown);
        assert_eq!((c.munin.socket, c.max_share), (None, 1.0));
        let flags = Flags::default().with(&settings::LISTENER_PORTS, "80,443");
        assert_eq!(Config::load(&flags).unwrap().ports.listener_ports, [80, 443]);
    }
}
