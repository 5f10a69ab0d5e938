//! The `main` of every test binary (each is `harness = false` in Cargo.toml): runs the
//! binary's tests as libtest does, with three things libtest cannot do.
//!
//! - A test that skips (`common::skip`, a missing root, command or opt-in) ends as
//!   *ignored, with its reason* in its own binary's result, not as `ok`: the skip is
//!   visible where the test is, even when a later binary fails and `cargo test` stops.
//! - Every file a test makes under the temporary directory is removed when the binary
//!   ends, whether its tests passed or failed: `TMPDIR` points into a directory of this
//!   run (children inherit it), removed last.
//! - The list of tests is written once, in the binary, by [`test_main!`](crate::test_main).

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Completion, Trial};

thread_local! {
    /// Why the test running on this thread skipped, if it did.
    static SKIPPED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Notes that the test on this thread skips, for its result line.
pub(crate) fn note_skip(why: &str) {
    SKIPPED.with(|s| {
        let mut s = s.borrow_mut();
        *s = Some(match s.take() {
            Some(earlier) => format!("{earlier}; {why}"),
            None => why.to_owned(),
        });
    });
}

/// One test of a binary: its name, its function, and whether it only runs when asked
/// (`--ignored`, as a child process the binary starts itself).
pub struct Test {
    pub name: &'static str,
    pub run: fn(),
    pub only_when_asked: bool,
}

/// Runs `tests` with the command line libtest takes (`--exact`, `--ignored`,
/// `--test-threads`, a filter, ...), then removes this run's temporary files.
pub fn run(tests: Vec<Test>) -> ExitCode {
    let args = Arguments::from_args();
    let scratch = private_tmpdir();
    let trials = tests
        .into_iter()
        .map(|t| {
            let run = t.run;
            Trial::ignorable_test(t.name, move || {
                SKIPPED.with(|s| s.borrow_mut().take());
                run();
                Ok(match SKIPPED.with(|s| s.borrow_mut().take()) {
                    Some(why) => Completion::ignored_with(format!("skipped: {why}")),
                    None => Completion::Completed,
                })
            })
            .with_ignored_flag(t.only_when_asked)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(dir) = scratch {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("could not remove the test run's temporary directory {}: {e}", dir.display());
        }
    }
    conclusion.exit_code()
}

/// Points `TMPDIR` at a new directory of this process (readable by any user, as /tmp is,
/// for the tests that drop privileges), unless a parent test binary already did.
fn private_tmpdir() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    const MARK: &str = "SOCKWATCH_TEST_TMPDIR";
    if std::env::var_os(MARK).is_some() {
        return None; // a child of a test binary: the parent removes it
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".to_owned());
    let dir = std::env::temp_dir().join(format!("sockwatch-{binary}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    // 1777 like /tmp: tests that run the daemon as nobody make their files here too.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).ok()?;
    // At the start of main, before any thread of this process exists.
    std::env::set_var("TMPDIR", &dir);
    std::env::set_var(MARK, &dir);
    Some(dir)
}

/// The `main` of a test binary: `test_main!(a, b, c)` runs the functions `a`, `b`, `c`
/// as tests; names after `only_when_asked:` run only with `--ignored`.
#[macro_export]
macro_rules! test_main {
    ($($name:ident),* $(,)? $(; only_when_asked: $($asked:ident),* $(,)?)?) => {
        fn main() -> std::process::ExitCode {
            let run_by_default = [$((stringify!($name), $name as fn())),*];
            let only_when_asked = [$($((stringify!($asked), $asked as fn())),*)?];
            let tests = run_by_default.into_iter().map(|t| (t, false))
                .chain(only_when_asked.into_iter().map(|t| (t, true)))
                .map(|((name, run), only_when_asked)| common::harness::Test { name, run, only_when_asked })
                .collect();
            common::harness::run(tests)
        }
    };
}
