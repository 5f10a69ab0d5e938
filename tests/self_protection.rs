//! Self-protection: the monitor must never hurt the host it watches. A sample that takes
//! more than `--sampler.max-share` of the interval stretches the interval, visibly.

mod common;

use std::time::Duration;

use common::*;

fn slow_samples_stretch_the_interval_visibly() {
    if !require("slow_samples_stretch_the_interval_visibly", &["sysctl"]) {
        return;
    }
    let ns = Netns::new("selfprot");
    let _listeners = time_wait_population(&ns, 100_000, 21_000, 2);
    // Any dump of 100k sockets takes more than 1% of a second.
    let d = Daemon::start(&ns, 9822, &["--interval", "1s", "--sampler.max-share", "0.01"]);
    let m = parse_metrics(&d.get(&ns, "/metrics").1);
    let took = value(&m, "sockwatch_sample_duration_seconds");
    let interval = value(&m, "sockwatch_sample_interval_seconds");
    assert!(took > 0.01, "a 100k-socket sample took {took} s");
    // The interval became the sample's duration / 0.01, rounded up to a tenth of a second.
    assert!(
        interval >= took / 0.01 && interval <= took / 0.01 + 0.1 + 1e-9,
        "interval {interval} for a {took} s sample"
    );
    assert!(interval > 1.0);
    // And it is in force: no second sample within the first second.
    std::thread::sleep(Duration::from_millis(1500));
    let m = parse_metrics(&d.get(&ns, "/metrics").1);
    if interval > 2.0 {
        assert_eq!(value(&m, "sockwatch_samples_total"), 1.0, "sampled again before the stretched interval");
    }
    // Logged once, before the first sample was published, saying what happened.
    let warned: Vec<&String> =
        d.stderr_lines.iter().filter(|l| l.contains("more than 1% of the 1s interval: sampling every")).collect();
    assert_eq!(warned.len(), 1, "{:?}", d.stderr_lines);
}

test_main!(slow_samples_stretch_the_interval_visibly,);
