//! The command line: subcommands from a clap derive, one flag per setting from the
//! settings table. Uses clap and `crate::settings` only, so that `build.rs` includes this
//! very file (and the table) to generate the man page and shell completions: they cannot
//! drift from what the binary accepts.

use std::path::PathBuf;

use clap::{Arg, ArgAction, CommandFactory, Parser, Subcommand};

use crate::settings::{Kind, Setting, SETTINGS};

#[derive(Debug, Parser)]
#[command(
    name = "sockwatch",
    version,
    about = "Exports TCP socket states, ephemeral port use and conntrack fill, sampled in the background."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML config file with the same settings (keys named like the flags).
    #[arg(long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the daemon: sample in the background, serve /metrics (the default).
    Serve,
    /// Take one sample, print it in Prometheus text format, exit.
    Sample,
    /// Sample twice, a second apart, and explain in plain words what is near its limit.
    /// Exit status 0 healthy, 1 warnings, 2 critical, 3 cannot tell (a source could not be read).
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

/// The whole command line: the derived part plus a flag per setting, and `--no-NAME` for
/// each switch (the last of the two given wins, as with node_exporter's flags), so a
/// `true` in the config file can be turned off for one run.
pub fn command() -> clap::Command {
    let negations = SETTINGS.iter().filter(|s| s.kind == Kind::Switch).map(|s| {
        Arg::new(negation(s))
            .long(negation(s))
            .help(format!("Turn --{} off (wins over the config file)", s.name))
            .action(ArgAction::SetTrue)
            .overrides_with(s.name)
            .global(true)
    });
    Cli::command().version(version_line()).args(SETTINGS.iter().map(flag)).args(negations)
}

/// `sockwatch --version`: the version, the git revision and the compiler it was built with,
/// as `sockwatch_build_info` labels them (build.rs sets both; this file is also compiled into
/// build.rs itself, where they are not set yet).
fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        let revision = option_env!("SOCKWATCH_REVISION").unwrap_or("unknown");
        let rustc = option_env!("SOCKWATCH_RUSTC").unwrap_or("unknown");
        format!("{} (revision {revision}, rustc {rustc})", env!("CARGO_PKG_VERSION"))
    })
}

/// `no-NAME`: the flag that turns switch `s` off.
pub fn negation(s: &Setting) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<(&'static str, &'static str)>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        SETTINGS.iter().map(|s| (s.name, &*Box::leak(format!("no-{}", s.name).into_boxed_str()))).collect()
    });
    names.iter().find(|(n, _)| *n == s.name).map_or("no-", |(_, neg)| neg)
}

fn flag(s: &'static Setting) -> Arg {
    let help = match (s.kind, s.default) {
        (Kind::Switch, _) | (_, "") => s.help.to_owned(),
        (_, default) => format!("{} [default: {default}]", s.help),
    };
    let mut arg = Arg::new(s.name).long(s.name).help(help).global(true);
    if let Some(words) = crate::settings::choices(s.name) {
        let hidden = crate::settings::accepted(s.name).filter(|w| !words.contains(w));
        let values: Vec<clap::builder::PossibleValue> = words
            .iter()
            .map(|w| clap::builder::PossibleValue::new(*w))
            .chain(hidden.map(|w| clap::builder::PossibleValue::new(w).hide(true)))
            .collect();
        arg = arg.value_parser(clap::builder::PossibleValuesParser::new(values));
    }
    match s.kind {
        Kind::Switch => arg.action(ArgAction::SetTrue).overrides_with(negation(s)),
        Kind::Ports => arg.value_name(s.value_name).action(ArgAction::Append).value_delimiter(','),
        Kind::Text | Kind::Count | Kind::Number => arg.value_name(s.value_name),
    }
}
