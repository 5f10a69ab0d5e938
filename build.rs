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
    build_facts();
    // OUT_DIR is <target>/<profile>/build/sockwatch-<hash>/out: three levels up is where
    // the binary goes, whatever CARGO_TARGET_DIR says.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let Some(profile_dir) = out.ancestors().nth(3).map(Path::to_path_buf) else { return Ok(()) };
    let cmd = cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(profile_dir.join("sockwatch.1"), page)?;
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
fn build_facts() {
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
    println!("cargo:rustc-env=SOCKWATCH_REVISION={revision}{}", if dirty { "-dirty" } else { "" });
    println!("cargo:rustc-env=SOCKWATCH_RUSTC={}", rustc.unwrap_or_else(|| "unknown".to_owned()));
    // A commit moves HEAD's branch: build again then (only paths that exist, or cargo would
    // run this script on every build).
    for path in [".git/HEAD", ".git/refs/heads", ".git/index"] {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
