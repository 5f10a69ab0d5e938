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
