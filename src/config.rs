//! Command line and config file.
//!
//! Flags follow the Prometheus exporter conventions (`--web.listen-address`, ...). The
//! optional TOML file (`--config FILE`) takes the same settings under the same names,
//! written as TOML dotted keys:
//!
//! ```toml
//! interval = "15s"
//! web.listen-address = "127.0.0.1:9822"
//! web.telemetry-path = "/metrics"
//! log.level = "info"
//! path.procfs = "/proc"
//! ports.top-k = 20
//! listeners.top-k = 20
//! listeners.ports = [80, 443]
//! conntrack.breakdown = false
//! conntrack.breakdown-interval = "60s"
//! munin.socket = "/run/sockwatch/munin.sock"   # "" disables it
//! munin.listen-address = "127.0.0.1:4949"      # off unless set
//! munin.max-clients = 64
//! munin.idle-timeout = "60s"
//! sampler.max-share = 0.25                     # self-protection
//! ```
//!
//! A flag given on the command line wins over the file; the file wins over the defaults.
//! Unknown keys and bad values are rejected with a message naming the key.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::cli::{Cli, Command, Flags};
use serde::Deserialize;

use crate::sources::ports::PortsConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9822";
pub const DEFAULT_TELEMETRY_PATH: &str = "/metrics";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The settings after merging flags, file and defaults, all validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen_address: SocketAddr,
    /// `--web.config.file`: TLS and basic auth (checked when the server starts).
    pub web_config_file: Option<PathBuf>,
    pub telemetry_path: String,
    pub interval: Duration,
    pub log_level: String,
    pub procfs: PathBuf,
    pub ports: PortsConfig,
    pub conntrack_breakdown: bool,
    pub conntrack_breakdown_interval: Duration,
    pub munin: MuninConfig,
    /// Self-protection: the share of the interval a sample may take.
    pub max_share: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MuninConfig {
    /// `None`: the Unix socket is disabled.
    pub socket: Option<PathBuf>,
    pub listen_address: Option<SocketAddr>,
    pub max_clients: usize,
    pub idle_timeout: Duration,
}

pub const DEFAULT_MUNIN_SOCKET: &str = "/run/sockwatch/munin.sock";

/// A configuration problem: names where (flag or file) and which key.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    interval: Option<String>,
    #[serde(default)]
    web: WebSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    path: PathSection,
    #[serde(default)]
    ports: PortsSection,
    #[serde(default)]
    listeners: ListenersSection,
    #[serde(default)]
    conntrack: ConntrackSection,
    #[serde(default)]
    munin: MuninSection,
    #[serde(default)]
    sampler: SamplerSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SamplerSection {
    max_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConntrackSection {
    breakdown: Option<bool>,
    breakdown_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MuninSection {
    socket: Option<String>,
    listen_address: Option<String>,
    max_clients: Option<usize>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PortsSection {
    top_k: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ListenersSection {
    top_k: Option<usize>,
    ports: Option<Vec<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WebSection {
    listen_address: Option<String>,
    telemetry_path: Option<String>,
    #[serde(default)]
    config: WebConfigKey,
}

/// `web.config.file = "..."`, the TOML spelling of `--web.config.file`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigKey {
    file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathSection {
    procfs: Option<PathBuf>,
}

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Flag(&'static str),
    File(&'a Path, &'static str),
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "--{flag}"),
            Origin::File(path, key) => write!(f, "{}: key `{key}`", path.display()),
        }
    }
}

/// Resolves one setting: the flag's value if given, else the file's, else `default`;
/// `check` validates it, and its error is prefixed with where the value came from.
fn setting<V, T>(
    flag: Option<V>,
    file: Option<V>,
    key: &'static str,
    path: Option<&Path>,
    default: T,
    check: impl FnOnce(V) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let (value, origin) = match (flag, file, path) {
        (Some(v), _, _) => (v, Origin::Flag(key)),
        (None, Some(v), Some(p)) => (v, Origin::File(p, key)),
        _ => return Ok(default),
    };
    check(value).map_err(|e| ConfigError(format!("{origin}: {e}")))
}

impl Config {
    /// Merges the flags with the config file they name (if any) and the defaults.
    /// Also used to reload on SIGHUP: same flags, file read again.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let path = flags.config.as_deref();
        let f = flags.clone();
        Ok(Config {
            listen_address: setting(
                f.listen_address,
                file.web.listen_address,
                "web.listen-address",
                path,
                DEFAULT_LISTEN.parse().expect("valid default"),
                |v| parse_listen_address(&v),
            )?,
            web_config_file: setting(f.web_config_file, file.web.config.file, "web.config.file", path, None, |v| {
                if v.is_file() {
                    Ok(Some(v))
                } else {
                    Err(format!("{} is not a readable file", v.display()))
                }
            })?,
            telemetry_path: setting(
                f.telemetry_path,
                file.web.telemetry_path,
                "web.telemetry-path",
                path,
                DEFAULT_TELEMETRY_PATH.to_owned(),
                validate_telemetry_path,
            )?,
            interval: setting(f.interval, file.interval, "interval", path, DEFAULT_INTERVAL, |v| parse_interval(&v))?,
            log_level: setting(f.log_level, file.log.level, "log.level", path, "info".to_owned(), |v| {
                if LOG_LEVELS.contains(&v.as_str()) {
                    Ok(v)
                } else {
                    Err(format!("{v:?} is not a log level (one of {})", LOG_LEVELS.join(", ")))
                }
            })?,
            procfs: setting(f.procfs, file.path.procfs, "path.procfs", path, PathBuf::from("/proc"), |v| {
                if v.is_dir() {
                    Ok(v)
                } else {
                    Err(format!("{} is not a directory", v.display()))
                }
            })?,
            ports: PortsConfig {
                top_k: setting(f.ports_top_k, file.ports.top_k, "ports.top-k", path, 20, check_top_k)?,
                listeners_top_k: setting(
                    f.listeners_top_k,
                    file.listeners.top_k,
                    "listeners.top-k",
                    path,
                    20,
                    check_top_k,
                )?,
                listener_ports: setting(
                    f.listener_ports,
                    file.listeners.ports,
                    "listeners.ports",
                    path,
                    vec![],
                    |v| {
                        if v.len() > MAX_TOP_K {
                            return Err(format!("{} ports listed, at most {MAX_TOP_K}", v.len()));
                        }
                        Ok(v)
                    },
                )?,
            },
            conntrack_breakdown: setting(
                f.conntrack_breakdown.then_some(true),
                file.conntrack.breakdown,
                "conntrack.breakdown",
                path,
                false,
                Ok,
            )?,
            conntrack_breakdown_interval: setting(
                f.conntrack_breakdown_interval,
                file.conntrack.breakdown_interval,
                "conntrack.breakdown-interval",
                path,
                Duration::from_secs(60),
                |v| parse_interval(&v),
            )?,
            max_share: setting(f.max_share, file.sampler.max_share, "sampler.max-share", path, 0.25, |v| {
                if (0.01..=1.0).contains(&v) {
                    Ok(v)
                } else {
                    Err(format!("{v} is outside 0.01 to 1"))
                }
            })?,
            munin: MuninConfig {
                socket: setting(
                    f.munin_socket,
                    file.munin.socket,
                    "munin.socket",
                    path,
                    Some(PathBuf::from(DEFAULT_MUNIN_SOCKET)),
                    |v| Ok((!v.is_empty()).then(|| PathBuf::from(v))),
                )?,
                listen_address: setting(
                    f.munin_listen_address,
                    file.munin.listen_address,
                    "munin.listen-address",
                    path,
                    None,
                    |v| parse_listen_address(&v).map(Some),
                )?,
                max_clients: setting(
                    f.munin_max_clients,
                    file.munin.max_clients,
                    "munin.max-clients",
                    path,
                    64,
                    |n| {
                        if (1..=10_000).contains(&n) {
                            Ok(n)
                        } else {
                            Err(format!("{n} is outside 1 to 10000"))
                        }
                    },
                )?,
                idle_timeout: setting(
                    f.munin_idle_timeout,
                    file.munin.idle_timeout,
                    "munin.idle-timeout",
                    path,
                    Duration::from_secs(60),
                    |v| parse_interval(&v),
                )?,
            },
        })
    }
}

/// A bound on any top-K: series count is what keeps Prometheus healthy.
const MAX_TOP_K: usize = 1000;

fn check_top_k(k: usize) -> Result<usize, String> {
    if k > MAX_TOP_K {
        return Err(format!("{k} is above the maximum of {MAX_TOP_K}"));
    }
    Ok(k)
}

/// Largest configuration (or web configuration) file read: a real one is a few KiB.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = crate::sources::read_small_file(path, MAX_CONFIG_FILE)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
}

/// `127.0.0.1:9822`, `[::1]:9822`, `localhost:9822`, or `:9822` (all interfaces).
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
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

pub fn parse_interval(s: &str) -> Result<Duration, String> {
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

fn validate_telemetry_path(p: String) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with /"));
    }
    if matches!(p.as_str(), "/" | "/-/healthy" | "/-/ready") {
        return Err(format!("{p:?} is taken by the landing page or a health endpoint"));
    }
    // A request's path never contains these (a query starts at `?`, a space ends the
    // path, `#` is never sent): such a path could never match.
    if let Some(c) = p.chars().find(|c| matches!(c, '?' | '#' | '%') || c.is_whitespace() || c.is_control()) {
        return Err(format!("{p:?} contains {c:?}: a request path can never match it"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn telemetry_paths_that_can_never_match_are_refused() {
        for bad in ["/metrics?x=1", "/my metrics", "/m#frag", "/m%20", "/m\tx"] {
            let e = validate_telemetry_path(bad.to_owned()).unwrap_err();
            assert!(e.contains("can never match"), "{bad}: {e}");
        }
        assert_eq!(validate_telemetry_path("/node/metrics".into()).unwrap(), "/node/metrics");
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
        flags.listener_ports = Some(vec![22]);
        assert_eq!(Config::load(&flags).unwrap().ports.listener_ports, vec![22]);
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
        flags.interval = Some("1m".into());
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
        let flags = Flags { interval: Some("soon".into()), ..Flags::default() };
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
}
