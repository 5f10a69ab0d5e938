//! Generates the man page and shell completions from the command-line definition itself
//! (`src/cli.rs` and the settings table it reads, included here), next to the binary: `target/<profile>/sockwatch.1` and
//! `target/<profile>/completions/`. The Debian package ships them (see Cargo.toml).

use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "src/config/settings.rs"]
mod settings;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=src/config/settings.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let version = build_facts();
    // OUT_DIR is <target>/<profile>/build/sockwatch-<hash>/out: three levels up is where
    // the binary goes, whatever CARGO_TARGET_DIR says.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let Some(profile_dir) = out.ancestors().nth(3).map(Path::to_path_buf) else { return Ok(()) };
    let cmd = cli::command().version(&*Box::leak(version.into_boxed_str()));
    let page = man_page(&cmd)?;
    std::fs::write(profile_dir.join("sockwatch.1"), &page)?;
    // Debian installs man pages gzipped (-n: no name or time inside, so builds repeat).
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &page)?;
    std::fs::write(profile_dir.join("sockwatch.1.gz"), gz.finish()?)?;
    let dir = profile_dir.join("completions");
    std::fs::create_dir_all(&dir)?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "sockwatch", &dir)?;
    }
    Ok(())
}

/// The revision and compiler the binary is built from, for `sockwatch_build_info` and
/// `--version`: the git commit when built from a checkout ("unknown" from a tarball without
/// one), `rustc --version`'s version.
/// The man page: clap_mangen's sections for the name, synopsis, options and version, and
/// ours for the commands (clap_mangen's points to a page per subcommand, which do not exist),
/// exit status, signals, files and environment.
fn man_page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut extra = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        extra.push_str(&format!(".TP\n\\fBsockwatch {}\\fR\n{}\n", roff(sub.get_name()), roff(&about)));
    }
    extra.push_str(MAN_SECTIONS);
    page.extend_from_slice(extra.as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// Escapes text for roff: a backslash, and a leading dot or quote.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

const MAN_SECTIONS: &str = r#".SH EXIT STATUS
.TP
\fB0\fR
\fBserve\fR stopped by SIGTERM or SIGINT; \fBsample\fR printed its sample; \fBdoctor\fR found everything it read healthy.
.TP
\fB1\fR
\fBserve\fR could not listen on its address or its sampler stopped; \fBdoctor\fR: a warning (80 % of a limit).
.TP
\fB2\fR
A bad flag, config file or web config file (the message names the setting and the file); \fBdoctor\fR: something critical (90 %, or failing now).
.TP
\fB3\fR
\fBdoctor\fR cannot tell: a source it needs could not be read (named in its output), and nothing it did read was a warning.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Read the config file and the web config file again. A bad file is refused and the running configuration kept. The interval, top\-K settings, log level, procfs path and the web config (TLS, users; the credential cache is emptied) apply at once; a changed listen address, Munin socket or conntrack setting is logged and applies at the next restart.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting, let answers in progress finish (at most 4 s), remove the Munin socket, exit 0.
.SH FILES
.TP
\fI/etc/sockwatch/sockwatch.toml\fR
The config file of the Debian package's unit (\fB\-\-config\fR); keys are named like the flags.
.TP
\fI/run/sockwatch/munin.sock\fR
The Munin protocol socket (\fB\-\-munin.socket\fR), created 0600.
.TP
\fI/usr/share/munin/plugins/sockwatch_\fR, \fI/etc/munin/plugin\-conf.d/sockwatch\fR
The munin\-node plugin and its configuration.
.TP
\fI/usr/share/sockwatch/prometheus/alerts.yml\fR, \fI/usr/share/sockwatch/grafana/sockwatch.json\fR
Alert rules and the Grafana dashboard.
.TP
\fI/proc/net/sockstat\fR, \fI/proc/net/snmp\fR, \fI/proc/net/netstat\fR, \fI/proc/sys/net/netfilter/nf_conntrack_count\fR, \fI/proc/sys/net/ipv4/ip_local_port_range\fR
The O(1) kernel counters read each sample (under \fB\-\-path.procfs\fR); \fI/proc/net/nf_conntrack\fR is never read.
.TP
\fI/run/netns\fR, \fI/var/run/docker/netns\fR
Pinned network namespaces, read with \fB\-\-netns\fR.
.SH ENVIRONMENT
Settings come from flags and the config file only; no environment variable changes them.
.TP
\fBsocket\fR
For \fBsockwatch munin\-plugin\fR (the munin\-node plugin): the path of the daemon's Munin socket, set in plugin\-conf.d (default /run/sockwatch/munin.sock).
"#;

fn build_facts() -> String {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let revision = run("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc = run(&rustc, &["--version"]).and_then(|v| v.split_whitespace().nth(1).map(str::to_owned));
    let revision = format!("{revision}{}", if dirty { "-dirty" } else { "" });
    let rustc = rustc.unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SOCKWATCH_REVISION={revision}");
    println!("cargo:rustc-env=SOCKWATCH_RUSTC={rustc}");
    // A commit moves HEAD's branch: build again then (only paths that exist, or cargo would
    // run this script on every build).
    for path in [".git/HEAD", ".git/refs/heads", ".git/index"] {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    format!("{} (revision {revision}, rustc {rustc})", env!("CARGO_PKG_VERSION"))
}
