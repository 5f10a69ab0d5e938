//! The command line: subcommands and flags. Self-contained (clap and std only) so that
//! `build.rs` includes this very file to generate the man page and shell completions:
//! they cannot drift from what the binary accepts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sockwatch",
    version,
    about = "Exports TCP socket states, ephemeral port use and conntrack fill, sampled in the background."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the daemon: sample in the background, serve /metrics (the default).
    Serve,
    /// Take one sample, print it in Prometheus text format, exit.
    Sample,
    /// Sample twice, a second apart, and explain in plain words what is near its limit.
    /// Exit status 0 healthy, 1 warnings, 2 critical.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Act as a munin-node plugin (the interpreter line of munin-plugin/sockwatch_).
    MuninPlugin {
        /// The plugin's name or path: sockwatch_<graph> or sockwatch_multigraph.
        plugin: String,
        /// config, autoconf, suggest, or nothing to fetch.
        action: Option<String>,
    },
}

#[derive(Debug, Clone, Default, Args)]
pub struct Flags {
    /// Address to serve HTTP on [default: 127.0.0.1:9822]. ":PORT" means all interfaces.
    #[arg(long = "web.listen-address", value_name = "ADDR", global = true)]
    pub listen_address: Option<String>,
    /// TLS and basic auth, in the Prometheus exporter-toolkit web config format.
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    pub web_config_file: Option<PathBuf>,
    /// Path under which to expose metrics [default: /metrics].
    #[arg(long = "web.telemetry-path", value_name = "PATH", global = true)]
    pub telemetry_path: Option<String>,
    /// Sampling interval, e.g. 10s, 1m [default: 10s].
    #[arg(long = "interval", value_name = "DURATION", global = true)]
    pub interval: Option<String>,
    /// TOML config file with the same settings.
    #[arg(long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace [default: info].
    #[arg(long = "log.level", value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,
    /// procfs mount point [default: /proc].
    #[arg(long = "path.procfs", value_name = "DIR", global = true)]
    pub procfs: Option<PathBuf>,
    /// Busiest destinations exported per address family [default: 20].
    #[arg(long = "ports.top-k", value_name = "K", global = true)]
    pub ports_top_k: Option<usize>,
    /// Busiest listening ports and listeners exported [default: 20].
    #[arg(long = "listeners.top-k", value_name = "K", global = true)]
    pub listeners_top_k: Option<usize>,
    /// Listening ports always exported, comma-separated (e.g. 80,443).
    #[arg(long = "listeners.ports", value_name = "PORTS", value_delimiter = ',', global = true)]
    pub listener_ports: Option<Vec<u16>>,
    /// Largest share of the interval a sample may take; slower samples stretch the
    /// interval (self-protection) [default: 0.25].
    #[arg(long = "sampler.max-share", value_name = "FRACTION", global = true)]
    pub max_share: Option<f64>,
    /// Count conntrack entries by state from a ctnetlink dump (needs CAP_NET_ADMIN).
    #[arg(long = "conntrack.breakdown", global = true)]
    pub conntrack_breakdown: bool,
    /// Interval of the conntrack breakdown dump [default: 60s].
    #[arg(long = "conntrack.breakdown-interval", value_name = "DURATION", global = true)]
    pub conntrack_breakdown_interval: Option<String>,
    /// Unix socket for the Munin protocol shim; "" disables it [default: /run/sockwatch/munin.sock].
    #[arg(long = "munin.socket", value_name = "PATH", global = true)]
    pub munin_socket: Option<String>,
    /// Also speak the Munin protocol on this TCP address (off by default).
    #[arg(long = "munin.listen-address", value_name = "ADDR", global = true)]
    pub munin_listen_address: Option<String>,
    /// Munin sessions held at once; past it, an idle session of the client holding the
    /// most is closed to make room [default: 64].
    #[arg(long = "munin.max-clients", value_name = "N", global = true)]
    pub munin_max_clients: Option<usize>,
    /// Close a Munin session that sends no command for this long [default: 60s].
    #[arg(long = "munin.idle-timeout", value_name = "DURATION", global = true)]
    pub munin_idle_timeout: Option<String>,
}
