//! The NAT lab: client —c0/r0— router —r1/s0— server in three namespaces the test makes,
//! the router masquerading TCP out of r1 to a small port range (an nftables rule), the
//! server at 10.77.2.2:8080, and sockwatch in the router with the conntrack breakdown.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Daemon, Netns};

/// Where the server listens.
pub const SERVER: &str = "10.77.2.2:8080";
/// The mapping's labels on `sockwatch_nat_*` series.
pub const MAPPING: &str = "nat_ip=\"10.77.2.1\",remote_ip=\"10.77.2.2\",remote_port=\"8080\",protocol=\"tcp\"";

pub struct NatLab {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
    /// The masquerade rule's source ports, `low-high`.
    pub range: String,
}

impl NatLab {
    /// Builds the three namespaces (named from `tag`) and the rule's range of `ports` from `low`.
    pub fn build(tag: &str, low: u16, ports: usize) -> NatLab {
        let (client, router, server) =
            (Netns::new(&format!("{tag}c")), Netns::new(&format!("{tag}r")), Netns::new(&format!("{tag}s")));
        let ip = |ns: &Netns, args: &[&str]| {
            ns.exec("ip", args);
        };
        ip(&client, &["link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", &router.name]);
        ip(&router, &["link", "add", "r1", "type", "veth", "peer", "name", "s0", "netns", &server.name]);
        ip(&client, &["addr", "add", "10.77.1.2/24", "dev", "c0"]);
        ip(&client, &["link", "set", "c0", "up"]);
        ip(&client, &["route", "add", "default", "via", "10.77.1.1"]);
        ip(&router, &["addr", "add", "10.77.1.1/24", "dev", "r0"]);
        ip(&router, &["addr", "add", "10.77.2.1/24", "dev", "r1"]);
        ip(&router, &["link", "set", "r0", "up"]);
        ip(&router, &["link", "set", "r1", "up"]);
        ip(&server, &["addr", "add", "10.77.2.2/24", "dev", "s0"]);
        ip(&server, &["link", "set", "s0", "up"]);
        router.sysctl("net.ipv4.ip_forward", "1");
        let range = format!("{low}-{}", low as usize + ports - 1);
        let rules = format!(
            "table ip sockwatch_nat {{\n chain post {{\n  type nat hook postrouting priority srcnat; policy accept;\n  \
             oifname \"r1\" ip protocol tcp masquerade to :{range}\n }}\n}}\n"
        );
        // One file per router: tests build their labs in parallel.
        let file = std::env::temp_dir().join(format!("sockwatch-nat-{}.nft", router.name));
        std::fs::write(&file, rules).unwrap();
        router.exec("nft", &["-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(file);
        NatLab { client, router, server, range }
    }

    /// sockwatch in the router: 1 s samples, the breakdown every `breakdown_interval`, the
    /// NAT range set to the rule's, and `extra`.
    pub fn daemon(&self, port: u16, breakdown_interval: &str, extra: &[&str]) -> Daemon {
        let mut args = vec![
            "--interval",
            "1s",
            "--conntrack.breakdown",
            "--conntrack.breakdown-interval",
            breakdown_interval,
            "--nat.port-range",
            &self.range,
        ];
        args.extend_from_slice(extra);
        Daemon::start(&self.router, port, &args)
    }

    /// The server: accepts every connection and holds it until `stop`.
    pub fn serve_and_hold(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let listener = self.server.enter(|| TcpListener::bind(SERVER).unwrap());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    }
}
