//! Runs last in `cargo test` (cargo runs the test binaries in name order) and lists the
//! tests that skipped in this run with their reasons, as ignored tests, so a skip is as
//! visible as a failure: `test result: ok. 0 passed; 0 failed; N ignored`.
//!
//! Each skipping test appends `binary::test<TAB>reason` to a file named after the PID of
//! the `cargo test` process that runs every test binary (`common::skip_list`); this binary
//! reads that file and removes it.
mod common;

use libtest_mimic::{Arguments, Trial};

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let path = common::skip_list();
    let listed = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    let mut skipped: Vec<(String, String)> = listed
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(test, why)| (test.to_owned(), why.to_owned()))
        .collect();
    skipped.sort();
    skipped.dedup();
    if skipped.is_empty() {
        println!("\nskipped tests: none");
    } else {
        println!("\nskipped tests ({}), each with its reason:", skipped.len());
        for (test, why) in &skipped {
            println!("  {test}: {why}");
        }
    }
    let trials = skipped
        .into_iter()
        .map(|(test, why)| Trial::test(format!("{test} skipped: {why}"), || Ok(())).with_ignored_flag(true))
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
