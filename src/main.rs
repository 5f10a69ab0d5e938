//! sockwatch: dispatches to a subcommand. The daemon is in daemon.rs; the parts are in the library crate.

mod cli;
mod daemon;

use std::io::Write;
use std::process::ExitCode;

use clap::FromArgMatches;

use cli::{Cli, Command};
use sockwatch::config::{settings, Config, Flags};
use sockwatch::munin::plugin as munin_plugin;
use sockwatch::prometheus::render as prometheus;
use sockwatch::sampler::Sampler;
use tracing_subscriber::{prelude::*, reload};

fn main() -> ExitCode {
    // Linked as a munin plugin (sockwatch_<graph>): munin-node passes only the action.
    let argv0 = std::env::args().next().unwrap_or_default();
    if argv0.rsplit('/').next().is_some_and(|n| n.starts_with("sockwatch_")) {
        let action = std::env::args().nth(1);
        return munin_plugin::run(&argv0, action.as_deref());
    }
    let (command, flags) = parse_command_line(); // usage errors exit 2 with clap's message
    if let Some(Command::MuninPlugin { plugin, action }) = &command {
        return munin_plugin::run(plugin, action.as_deref());
    }
    let config = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sockwatch: {e}");
            return ExitCode::from(2);
        }
    };
    // The filter is reloadable: SIGHUP can change log.level. The doctor's report says
    // what the warnings would (a source down, a layer off): it logs errors only, unless
    // asked for debug or trace, so nothing but the report reaches a terminal.
    let diagnosing = matches!(command, Some(Command::Doctor { .. }));
    let filter = match config.log_level.as_str() {
        "debug" | "trace" => daemon::log_filter_for(&config),
        _ if diagnosing => tracing_subscriber::EnvFilter::new("sockwatch=error"),
        _ => daemon::log_filter_for(&config),
    };
    let (filter, log_filter) = reload::Layer::new(filter);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log_format.as_str() {
        "json" => registry.with(lines.json().flatten_event(true)).init(),
        "logfmt" => registry.with(lines.event_format(sockwatch::logfmt::Logfmt)).init(),
        _ => registry.with(lines.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))).init(),
    }
    match command.unwrap_or(Command::Serve) {
        Command::Sample => sample_once(&config),
        Command::Serve => daemon::serve(config, flags, log_filter),
        Command::Doctor { json } => doctor(&config, json),
        Command::MuninPlugin { .. } => unreachable!("handled before logging is set up"),
    }
}

/// The subcommand, and the settings given as flags, as text (validated by `Config::load`).
fn parse_command_line() -> (Option<Command>, Flags) {
    let matches = cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut flags = Flags::default();
    flags.config = cli.config;
    for s in settings::SETTINGS {
        match s.kind {
            settings::Kind::Switch if matches.get_flag(s.name) => flags.set(s, "true"),
            settings::Kind::Switch if matches.get_flag(cli::negation(s)) => flags.set(s, "false"),
            settings::Kind::Switch => {}
            _ => {
                if let Some(values) = matches.get_many::<String>(s.name) {
                    flags.set(s, values.map(String::as_str).collect::<Vec<_>>().join(","));
                }
            }
        }
    }
    (cli.command, flags)
}

fn sample_once(config: &Config) -> ExitCode {
    let published = Sampler::new(config, prometheus::render).sample_and_render();
    let mut out = std::io::stdout().lock();
    match out.write_all(&published.rendered).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockwatch: writing to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doctor(config: &Config, json: bool) -> ExitCode {
    let mut sampler = Sampler::new(config, prometheus::render);
    let before = sampler.sample();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let now = sampler.sample();
    let report = sockwatch::doctor::diagnose(&before, &now);
    let text = if json {
        serde_json::to_string_pretty(&report).map(|j| j + "\n").unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}\n"))
    } else {
        sockwatch::doctor::render_text(&report)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::from(report.status.exit_code())
}
