//! The daemon (`sockwatch serve`): wires the sampler, the HTTP server and the Munin shim
//! together, reloads on SIGHUP and shuts down on SIGTERM/SIGINT within a bound.

use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::watch;

use sockwatch::config::{Config, Flags};
use sockwatch::listen;
use sockwatch::munin::shim::{self as munin, Shim};
use sockwatch::prometheus::http::{self, Web};
use sockwatch::prometheus::render as prometheus;
use sockwatch::prometheus::webconfig::{WebConfig, WebConfigError};
use sockwatch::sampler::{self, Sampler};
use sockwatch::shutdown::Shutdown;
use tracing_subscriber::{reload, EnvFilter};

pub type LogFilter = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

pub fn log_filter_for(config: &Config) -> EnvFilter {
    EnvFilter::new(format!("sockwatch={}", config.log_level))
}

/// Loads the web config file, if one is named; warns when it enables nothing.
fn load_web_config(path: Option<&std::path::Path>) -> Result<WebConfig, WebConfigError> {
    let Some(path) = path else { return Ok(WebConfig::default()) };
    let w = WebConfig::load(path)?;
    if w.tls.is_none() && w.auth.is_none() {
        tracing::warn!(
            "web config {} enables neither TLS nor basic auth: /metrics is served in plain HTTP to anyone who can connect",
            path.display()
        );
    }
    Ok(w)
}

/// SIGHUP: reads the config file and the web config file again. A bad file is rejected and
/// the running configuration kept; settings that need new listeners are applied at the
/// next restart (and stay recorded as they run until then).
fn reload(flags: &Flags, running: &watch::Sender<Config>, web: &Web, log_filter: &LogFilter) {
    let old = running.borrow().clone();
    let (new, kept) = match old.reload(flags) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: reload rejected, keeping the running configuration: {e}");
            return;
        }
    };
    let web_config = match load_web_config(new.web_config_file.as_deref()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("SIGHUP: reload rejected, keeping the running configuration: {e}");
            return;
        }
    };
    if !kept.is_empty() {
        tracing::warn!("SIGHUP: {} changed; restart sockwatch to apply (kept as running)", kept.join(", "));
    }
    let (tls, basic_auth) = (web_config.tls.is_some(), web_config.auth.is_some());
    // Said once it is in force: a request after this line is checked against the new users.
    web.set_config(web_config);
    tracing::info!(tls, basic_auth, "SIGHUP: web config reloaded (credential cache emptied)");
    if let Err(e) = log_filter.modify(|f| *f = log_filter_for(&new)) {
        tracing::warn!("SIGHUP: cannot change the log level: {e}");
    }
    tracing::info!(interval = %humantime::format_duration(new.interval), "SIGHUP: configuration reloaded");
    running.send_replace(new);
}

pub fn serve(config: Config, flags: Flags, log_filter: LogFilter) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockwatch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A bad web config is a start-up error, before anything listens.
    let web_config = match load_web_config(config.web_config_file.as_deref()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sockwatch: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(run(config, flags, log_filter, web_config));
    // A sample stuck in a kernel read holds a blocking thread that cannot be cancelled;
    // dropping the runtime would wait for it forever. Give it a moment, then leave it.
    runtime.shutdown_timeout(SHUTDOWN_BLOCKING_GRACE);
    tracing::info!("shutdown complete");
    code
}

/// The sampler runs on a blocking thread; keep that thread across samples (tokio's
/// default lets it exit after 10 s idle, which at the default interval meant a new
/// thread, stack and malloc arena every sample). Threads ask for a short scheduler
/// slice (they answer requests); the sampler's gives it back (see sched.rs).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
        .on_thread_start(sockwatch::sched::latency_sensitive)
        .enable_all()
        .build()
}

/// Binds, starts the sampler and the servers, then waits for a signal: SIGHUP reloads,
/// SIGTERM/SIGINT stop everything (the Munin socket file removed).
async fn run(config: Config, flags: Flags, log_filter: LogFilter, web_config: WebConfig) -> ExitCode {
    // Bind first, so a taken or impossible address fails at once with a clear message.
    let listener = match listen::bind_tcp(config.listen_address) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sockwatch: cannot listen on {}: {e}", config.listen_address);
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().map_or(config.listen_address, |a| a);
    // Kept namespace files and sockets count against it (sources::kernel::kept).
    let open_files = sockwatch::sources::kernel::kept::raise_fd_limit();
    tracing::info!(
        %address,
        open_files,
        tls = web_config.tls.is_some(),
        basic_auth = web_config.auth.is_some(),
        path = %config.telemetry_path,
        interval = %humantime::format_duration(config.interval),
        "sockwatch {} serving",
        env!("CARGO_PKG_VERSION")
    );
    let (shutdown_trigger, shutdown_rx) = sockwatch::shutdown::channel();
    let (latest_tx, latest_rx) = watch::channel(None);
    // The running configuration: SIGHUP sends a new one to every loop that reads it.
    let (config_tx, config_rx) = watch::channel(config.clone());
    // The sampler renders each snapshot once, with the exporter the daemon hands it.
    let mut sampler = Sampler::new(&config, prometheus::render);
    if config.conntrack_breakdown {
        let slot = sampler::BreakdownSlot::default();
        sampler.share_breakdown(slot.clone());
        match config.conntrack_events {
            Some(events) => {
                let (attribution, running, root, stop) =
                    (config.conntrack_attribution, config_rx.clone(), config.procfs.clone(), shutdown_rx.clone());
                tokio::task::spawn_blocking(move || {
                    sampler::follow_breakdown(events, attribution, running, root, slot, stop)
                });
            }
            None => {
                tokio::spawn(sampler::run_breakdown(
                    config.conntrack_breakdown_interval,
                    config.conntrack_attribution,
                    config.procfs.clone(),
                    slot,
                    shutdown_rx.clone(),
                ));
            }
        }
    }
    let munin_tasks = start_munin(&config, latest_rx.clone(), &shutdown_rx).await;
    let mut sampler_task = tokio::spawn(sampler::run(sampler, latest_tx, config_rx, shutdown_rx.clone()));
    let web = Arc::new(Web::new(latest_rx, config.telemetry_path.clone(), web_config));
    let http_task = tokio::spawn(http::serve(listener, web.clone(), shutdown_rx));

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let code = loop {
        tokio::select! {
            signal = &mut shutdown => {
                tracing::info!("{signal}: shutting down");
                break ExitCode::SUCCESS;
            }
            Some(()) = async { hangup.as_mut()?.recv().await } => reload(&flags, &config_tx, &web, &log_filter),
            _ = &mut sampler_task => {
                tracing::error!("the sampler stopped unexpectedly; exiting so the service manager restarts us");
                break ExitCode::FAILURE;
            }
        }
    };
    shutdown_trigger.fire();
    let _ = http_task.await;
    for task in munin_tasks {
        let _ = task.await; // removes the Munin socket file
    }
    code
}

/// How long shutdown waits for a blocking thread (a sample in progress) to finish.
const SHUTDOWN_BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts the Munin shim's listeners. A socket that cannot be created is one warning,
/// not a failure: HTTP keeps serving (e.g. `cargo run` as a user cannot write /run).
async fn start_munin(
    config: &Config,
    latest: sampler::Latest,
    shutdown: &Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let m = &config.munin;
    let mut tasks = Vec::new();
    if m.socket.is_none() && m.listen_address.is_none() {
        return tasks;
    }
    let shim =
        Arc::new(Shim::new(latest, munin::hostname(), config.conntrack_breakdown, m.max_clients, m.idle_timeout));
    if let Some(path) = &m.socket {
        match munin::bind_unix(path) {
            Ok(listener) => {
                tracing::info!(socket = %path.display(), "munin shim listening");
                tasks.push(tokio::spawn(munin::serve_unix(listener, path.clone(), shim.clone(), shutdown.clone())));
            }
            Err(e) => tracing::warn!("munin socket disabled: {e} (set --munin.socket, or \"\" to silence this)"),
        }
    }
    if let Some(addr) = m.listen_address {
        match listen::bind_tcp(addr) {
            Ok(listener) => {
                tracing::info!(address = %listener.local_addr().map_or(addr, |a| a), "munin shim listening");
                tasks.push(tokio::spawn(munin::serve_tcp(listener, shim, shutdown.clone())));
            }
            Err(e) => tracing::warn!("munin TCP listener disabled: cannot listen on {addr}: {e}"),
        }
    }
    tasks
}

/// Resolves on SIGTERM or SIGINT, naming which.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
