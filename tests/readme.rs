//! The README is the operator's contract: it must document every metric the daemon
//! emits, list none that it does not, and give the two set-up commands.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// Metric names in the README's metrics table (every backticked `sockwatch_…` or
/// `process_…` name in the first cell of a row of the "## Metrics" section).
fn documented() -> BTreeSet<String> {
    let text = readme();
    let section = text.split("\n## Metrics\n").nth(1).expect("a ## Metrics section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .flat_map(|rest| {
            let cell = format!("`{}", rest.split(" |").next().unwrap());
            cell.split('`')
                .skip(1)
                .step_by(2)
                .filter(|n| n.starts_with("sockwatch_") || n.starts_with("process_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The Prometheus rendering's source: every file of src/prometheus/.
fn exporter_code() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/prometheus");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect()
}

fn every_emitted_metric_is_documented() {
    // A fixture tree where every /proc source is present, plus the live netlink dump.
    let procfs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc/linux-6.18");
    let out = Command::new(common::BIN).args(["sample", "--path.procfs", procfs]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let emitted: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert!(emitted.len() > 30, "{emitted:?}");
    let docs = documented();
    let missing: Vec<_> = emitted.difference(&docs).collect();
    assert!(missing.is_empty(), "emitted but not in README's metric table: {missing:?}");
    // Also every name the exporter can emit (some need privileges or options to appear).
    let code = exporter_code();
    let literals: BTreeSet<String> = code
        .split('"')
        .filter(|s| {
            s.starts_with("sockwatch_") && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    assert!(literals.len() >= emitted.len(), "{literals:?}");
    let missing: Vec<_> = literals.difference(&docs).collect();
    assert!(missing.is_empty(), "in the exporter but not in README's metric table: {missing:?}");
}

fn every_documented_metric_exists_in_the_exporter() {
    let code = exporter_code();
    let stale: Vec<_> = documented().into_iter().filter(|m| !code.contains(&format!("\"{m}\""))).collect();
    assert!(stale.is_empty(), "in README but not emitted by the exporter: {stale:?}");
}

fn the_dashboard_uses_documented_metrics_only() {
    let docs = documented();
    let mut used = BTreeSet::new();
    for expr in common::dashboard_exprs() {
        for (i, _) in expr.match_indices("sockwatch_") {
            let name: String =
                expr[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            used.insert(name);
        }
    }
    let unknown: Vec<_> = used.difference(&docs).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics the README does not list: {unknown:?}");
    for alert_metric in ["sockwatch_ephemeral_port_utilization_max", "sockwatch_conntrack_entries_limit"] {
        assert!(used.contains(alert_metric), "{alert_metric} missing from the dashboard");
    }
}

fn readme_gives_the_two_setup_commands() {
    let r = readme();
    assert!(r.contains("\ncargo run --release "), "run command");
    assert!(r.contains("\ncargo test "), "test command");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(ci.contains("\ncargo test"), ".ci/run must call the README's test command");
    assert!(ci.contains("SOCKWATCH_STRICT_TESTS=1"));
}

/// The man page is generated from the command-line definition (build.rs): every flag the
/// README's table documents is in it, so the two cannot drift apart unnoticed.
fn every_documented_flag_is_in_the_man_page() {
    let page = std::path::Path::new(common::BIN).with_file_name("sockwatch.1");
    let man =
        std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e} (written by build.rs)", page.display()));
    // roff escapes hyphens as \-.
    let man = man.replace("\\-", "-");
    let flags: Vec<String> = readme()
        .lines()
        .filter_map(|l| l.strip_prefix("| `--"))
        .map(|rest| format!("--{}", rest.split(['`', ' ']).next().unwrap()))
        .collect();
    assert!(flags.len() >= 15, "{flags:?}");
    let missing: Vec<&String> = flags.iter().filter(|f| !man.contains(f.as_str())).collect();
    assert!(missing.is_empty(), "in the README's flag table but not in sockwatch.1: {missing:?}");
    for completion in ["sockwatch.bash", "_sockwatch", "sockwatch.fish"] {
        let path = page.with_file_name("completions").join(completion);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains("web.listen-address"), "{} lacks the flags", path.display());
    }
}

/// The man page has what an operator looks for (exit status, signals, files, environment),
/// refers to no page that does not exist (clap_mangen's default named a page per
/// subcommand), and the completions offer the words a setting takes.
fn the_man_page_is_whole_and_completions_offer_values() {
    let page = std::path::Path::new(common::BIN).with_file_name("sockwatch.1");
    let man = std::fs::read_to_string(&page).unwrap().replace("\\-", "-");
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXIT STATUS", "SIGNALS", "FILES", "ENVIRONMENT"] {
        assert!(man.contains(&format!("\n.SH {section}\n")), "no {section} section");
    }
    assert!(!man.contains("sockwatch-serve(1)") && !man.contains("sockwatch-doctor(1)"), "a page that does not exist");
    for code in ["0", "1", "2", "3"] {
        assert!(man.contains(&format!(".TP\n\\fB{code}\\fR\n")), "exit status {code}");
    }
    for signal in ["SIGHUP", "SIGTERM"] {
        assert!(man.contains(&format!("\\fB{signal}\\fR")), "{signal}");
    }
    assert!(man.contains(sockwatch::config::settings::MUNIN_SOCKET.default), "the Munin socket's default path");
    let bash = std::fs::read_to_string(page.with_file_name("completions").join("sockwatch.bash")).unwrap();
    for words in ["auto on off", "error warn info debug trace", "text logfmt json"] {
        assert!(bash.contains(words), "bash completion does not offer {words:?}");
    }
    let fish = std::fs::read_to_string(page.with_file_name("completions").join("sockwatch.fish")).unwrap();
    let netns = fish.lines().find(|l| l.contains("-l netns ")).expect("fish: --netns");
    assert!(netns.contains("-a \"auto\\t"), "fish does not offer --netns's words: {netns}");
}

/// The other direction: every setting in the table that defines them has a README row
/// naming its flag, its file key and its default.
fn every_setting_is_in_the_readme_with_its_default() {
    let r = readme();
    for s in sockwatch::config::settings::SETTINGS {
        let row = r
            .lines()
            .find(|l| l.starts_with(&format!("| `--{}` |", s.name)))
            .unwrap_or_else(|| panic!("no README row for --{}", s.name));
        assert!(row.contains(&format!("| `{}` |", s.name)), "{row}: file key");
        let default = match (s.default, s.kind) {
            ("", _) | (_, sockwatch::config::settings::Kind::Switch) => None,
            (d, _) => Some(format!("`{d}`")),
        };
        if let Some(d) = default {
            assert!(row.contains(&d), "{row}: default should be {d}");
        }
    }
}

/// The shipped config file (packaging/sockwatch.toml) shows every setting, commented out.
fn the_shipped_config_shows_every_setting() {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/sockwatch.toml")).unwrap();
    for s in sockwatch::config::settings::SETTINGS {
        assert!(shipped.contains(&format!("\n# {} = ", s.name)), "packaging/sockwatch.toml lacks `# {} = …`", s.name);
    }
}

/// Every command the README shows in a shell block is exercised somewhere, kept in step by
/// this list: a README command missing from it fails here, and each entry names the file
/// that runs it and a string of it that file must hold (so a renamed test or a removed step
/// fails too). The few that act on a real host's services are run by their tests in a
/// namespace or throwaway root of their own.
fn every_readme_command_is_run_somewhere() {
    // (README line starts with, file that runs it, what that file must contain)
    let runs: &[(&str, &str, &str)] = &[
        ("cargo run --release      #", ".ci/run", "cargo build --release"),
        ("cargo test ", ".ci/run", "\ncargo test\n"),
        ("cargo run --release -- sample", "tests/cli.rs", "fn sample_prints_every_source"),
        (
            "cargo run --release -- --interval 15s --web.listen-address :9822",
            "tests/cli.rs",
            "fn unusable_listen_address_fails_fast",
        ),
        ("cargo install cargo-deb && cargo deb", ".ci/run", "cargo deb --quiet"),
        ("dpkg -i target/debian/sockwatch_*.deb", "tests/operate.rs", "\"dpkg\", \"-i\""),
        ("curl -s localhost:9822/metrics", "tests/hardening.rs", "Command::new(\"curl\")"),
        (
            "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release",
            ".ci/run",
            "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release",
        ),
        ("podman build -f deploy/Containerfile", "tests/containers.rs", "\"build\", \"-q\", \"-f\""),
        ("podman run -d --name sockwatch --pid host", "tests/containers.rs", "README's podman run"),
        ("  --cap-drop all --cap-add SYS_PTRACE", "tests/containers.rs", "\"--cap-drop\", \"all\""),
        ("  localhost/sockwatch:latest", "tests/containers.rs", "Image::build"),
        ("kubectl apply -k deploy/kubernetes/base", "tests/kubernetes.rs", "\"deploy/kubernetes/base\""),
        ("kubectl apply -k deploy/kubernetes/monitoring", "tests/kubernetes.rs", "\"deploy/kubernetes/monitoring\""),
        ("kubectl apply -k deploy/kubernetes/podmonitor", "tests/kubernetes.rs", "\"deploy/kubernetes/podmonitor\""),
        ("sockwatch doctor          #", "tests/operate.rs", "fn doctor_names_the_exhausted_destination"),
        ("sockwatch doctor --json", "tests/cli.rs", "\"doctor\", \"--json\""),
        ("install -m 0755 target/release/sockwatch", "tests/munin.rs", "fn real_munin_node_serves_our_values"),
        ("install -m 0755 munin-plugin/sockwatch_", "tests/munin.rs", "fn real_munin_node_serves_our_values"),
        ("install -m 0644 munin-plugin/plugin-conf.d/sockwatch", "tests/munin.rs", "plugin-conf.d"),
        ("munin-node-configure --suggest", "tests/munin.rs", "munin-node-configure"),
        ("munin-node-configure --shell | sh", "tests/munin.rs", "munin-node-configure"),
        (
            "ln -s /usr/share/munin/plugins/sockwatch_ /etc/munin/plugins/",
            "tests/operate.rs",
            "/etc/munin/plugins/sockwatch_tcp_states",
        ),
        ("systemctl restart munin-node", "tests/munin.rs", "munin-node"),
        ("munin-run sockwatch_tcp_states", "tests/munin.rs", "Command::new(\"munin-run\")"),
        ("sudo scripts/noisy-neighbour up", ".ci/run", "scripts/noisy-neighbour up"),
        ("cargo install cargo-fuzz", ".ci/run", "cargo install cargo-fuzz"),
        ("cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run", ".ci/run", "RUSTC_BOOTSTRAP=1 cargo fuzz run"),
    ];
    let text = readme();
    let mut unlisted = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = !in_block && matches!(line.trim_start_matches('`'), "sh" | "bash" | "console");
            continue;
        }
        if !in_block || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !runs.iter().any(|(prefix, _, _)| line.starts_with(prefix)) {
            unlisted.push(line.to_owned());
        }
    }
    assert!(unlisted.is_empty(), "README commands that nothing runs (add them to this list): {unlisted:#?}");
    for (prefix, file, needle) in runs {
        assert!(text.contains(prefix), "listed but no longer in the README: {prefix:?}");
        let body = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + file).unwrap();
        assert!(body.contains(needle), "{prefix:?}: {file} no longer holds {needle:?}");
    }
}

/// The rule of "How it works": each reader (`prometheus/`, `munin/`, `doctor/`) has one file per
/// wing of `src/sources/`; a wing file imports only its own wing and the wings that wing itself
/// stands on, never a wing file beside it; the shared and composing files import no wing; and
/// every snapshot field a wing's source fills is read in that wing's Prometheus file.
fn readers_are_cut_by_the_wings_of_sources() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    // Production code only: a file's test module may build any snapshot it likes.
    let code = |p: &std::path::Path| read(p).split("#[cfg(test)]").next().unwrap().to_owned();
    let uses = |text: &str| -> BTreeSet<String> {
        text.split("crate::sources::")
            .skip(1)
            .map(|s| s.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap().to_owned())
            .collect()
    };
    let mut wings = BTreeSet::new();
    for e in std::fs::read_dir(format!("{root}/sources")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if e.path().is_dir() && name != "kernel" {
            wings.insert(name);
        }
    }
    assert!(wings.len() >= 5, "{wings:?}");
    let stands_on = |w: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::from([w.to_owned(), "kernel".to_owned()]);
        for e in std::fs::read_dir(format!("{root}/sources/{w}")).unwrap() {
            out.extend(uses(&code(&e.unwrap().path())));
        }
        out
    };
    let shared = ["mod.rs", "families.rs", "labels.rs", "render.rs", "graphs.rs", "catalog.rs", "words.rs", "own.rs"];
    let servers = ["http.rs", "webconfig.rs", "auth_queue.rs", "shim.rs", "plugin.rs"];
    for reader in ["prometheus", "munin", "doctor"] {
        for e in std::fs::read_dir(format!("{root}/{reader}")).unwrap() {
            let path = e.unwrap().path();
            let file = path.file_name().unwrap().to_str().unwrap().to_owned();
            let wing = file.trim_end_matches(".rs");
            let text = code(&path);
            if wings.contains(wing) {
                let allowed = stands_on(wing);
                let used = uses(&text);
                assert!(
                    used.is_subset(&allowed),
                    "{reader}/{file} imports {used:?}; its wing stands on {allowed:?} only"
                );
                for other in wings.iter().filter(|o| *o != wing) {
                    assert!(
                        !text.contains(&format!("super::{other}")),
                        "{reader}/{file} imports the wing file {other}.rs beside it"
                    );
                }
            } else if shared.contains(&file.as_str()) {
                let used = uses(&text);
                assert!(
                    used.iter().all(|u| u == "kernel"),
                    "{reader}/{file} is shared or composing, yet imports {used:?}"
                );
            } else {
                assert!(
                    servers.contains(&file.as_str()) || file.ends_with("_tests.rs"),
                    "{reader}/{file}: not a wing, shared or server file"
                );
            }
        }
        for w in &wings {
            assert!(
                std::path::Path::new(&format!("{root}/{reader}/{w}.rs")).exists(),
                "{reader}/ has no file for the {w} wing"
            );
        }
    }
    // Every snapshot field a wing fills is read in that wing's Prometheus file (or one of a
    // wing standing on it, or own.rs for sockwatch's own process).
    let snapshot = read(std::path::Path::new(&format!("{root}/snapshot.rs")));
    let mut wing_of = std::collections::BTreeMap::new();
    let idents = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    };
    for line in snapshot.lines().filter(|l| l.starts_with("use crate::sources::")) {
        let rest = &line["use crate::sources::".len()..];
        // `wing::…::{A, B}` or `{wing::…::A, wing::…::B}`.
        let items: Vec<&str> = if rest.starts_with('{') {
            rest.trim_matches(|c| "{};".contains(c)).split(", ").collect()
        } else {
            vec![rest]
        };
        for item in items {
            let words = idents(item);
            for ty in words.iter().filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase())) {
                wing_of.insert(ty.clone(), words[0].clone());
            }
        }
    }
    let body = snapshot.split("pub struct Snapshot {").nth(1).unwrap().split("\n}").next().unwrap();
    let mut checked = 0;
    for line in body.lines().map(str::trim).filter(|l| l.starts_with("pub ") && l.contains(": Option<")) {
        let field = line["pub ".len()..].split(':').next().unwrap();
        let ty = line.split("Option<").nth(1).unwrap().trim_end_matches(">,").rsplit("::").next().unwrap();
        let Some(w) = wing_of.get(ty).or_else(|| {
            line.contains("crate::sources::")
                .then(|| uses(line).into_iter().next())
                .flatten()
                .as_ref()
                .and_then(|w| wing_of.values().find(|v| *v == w))
        }) else {
            continue;
        };
        let readers: Vec<String> = std::iter::once(w.clone())
            .chain(wings.iter().filter(|o| stands_on(o).contains(w.as_str())).cloned())
            .chain(["own".to_owned()])
            .collect();
        let read_there = readers.iter().any(|r| {
            let p = format!("{root}/prometheus/{r}.rs");
            std::path::Path::new(&p).exists() && code(std::path::Path::new(&p)).contains(&format!("s.{field}"))
        });
        assert!(read_there, "snapshot field {field} ({w} wing) is not rendered in prometheus/{w}.rs");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} snapshot fields checked: the parse of snapshot.rs broke");
    let text = readme();
    assert!(
        text.contains("has its families, its Munin graphs and its doctor checks in the `<wing>` file"),
        "the rule is in How it works"
    );
}

test_main!(
    every_emitted_metric_is_documented,
    every_documented_metric_exists_in_the_exporter,
    the_dashboard_uses_documented_metrics_only,
    readme_gives_the_two_setup_commands,
    every_documented_flag_is_in_the_man_page,
    the_man_page_is_whole_and_completions_offer_values,
    every_setting_is_in_the_readme_with_its_default,
    the_shipped_config_shows_every_setting,
    every_readme_command_is_run_somewhere,
    readers_are_cut_by_the_wings_of_sources,
);
