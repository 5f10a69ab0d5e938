//! Where containers are (issue 16.7): real containers from Debian's Podman, an image
//! imported from a tarball the test makes (busybox-static, no registry), the scratch image
//! of deploy/Containerfile with the static binary, and the Kubernetes DaemonSet manifest
//! against the Kubernetes schemas (kubernetes-validate).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{parse_metrics, require, skip, BIN};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Podman flags that run in a sandbox without CAP_SYS_RESOURCE and with hybrid cgroups, as
/// on any host: runc with the cgroupfs manager, limits under the caller's.
const PODMAN_RUN: &[&str] = &[
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "run",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().unwrap()
}

fn ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// An image holding only the static busybox, imported from a tarball made here.
fn busybox_image(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("sockwatch-bb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root/bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("root/bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("root/bin/sleep")).unwrap();
    let tar = dir.join("rootfs.tar");
    ok(&Command::new("tar").arg("-C").arg(dir.join("root")).arg("-cf").arg(&tar).arg(".").output().unwrap(), "tar");
    let image = format!("localhost/sockwatch-test-bb:{tag}");
    ok(&podman(&["import", tar.to_str().unwrap(), &image]), "podman import");
    let _ = std::fs::remove_dir_all(&dir);
    image
}

/// A running container, removed (with its image) on drop.
struct Container {
    name: String,
    image: String,
}

impl Container {
    fn sleeping(image: &str, name: &str) -> Container {
        // No network: a bridge would add NAT rules to the host's namespace, turning conntrack
        // on there for every later test. The container still gets a namespace of its own.
        let mut args = PODMAN_RUN.to_vec();
        args.extend(["-d", "--network", "none", "--name", name, image, "/bin/sleep", "600"]);
        ok(&podman(&args), "podman run");
        Container { name: name.to_owned(), image: image.to_owned() }
    }

    fn id(&self) -> String {
        ok(&podman(&["inspect", "-f", "{{.Id}}", &self.name]), "podman inspect")
    }

    fn netns(&self) -> u64 {
        let pid = ok(&podman(&["inspect", "-f", "{{.State.Pid}}", &self.name]), "podman inspect");
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        sockwatch::sources::netns::parse_ns_link(&link.to_string_lossy()).unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
        let _ = podman(&["rmi", "-f", &self.image]);
    }
}

#[test]
fn a_podman_container_is_named_on_its_namespace() {
    if !require("a_podman_container_is_named_on_its_namespace", &["podman", "runc", "busybox", "tar"]) {
        return;
    }
    let image = busybox_image("named");
    let c = Container::sleeping(&image, &format!("sockwatch-test-{}", std::process::id()));
    // Every namespace exported (not the default top 20): on a busy host an idle container
    // ranks below the others.
    let out = Command::new(BIN).args(["sample", "--netns", "on", "--netns.top-k", "1000", "--munin.socket", ""]).output().unwrap();
    let text = ok(&out, "sockwatch sample");
    let info = common::netns_info_line(&text, c.netns());
    assert!(info.contains(&format!("container_id=\"{}\",runtime=\"podman\"", c.id())), "{info}");
    let m = parse_metrics(&text);
    assert_eq!(m[&format!("sockwatch_netns_tcp_sockets{{netns=\"{}\"}}", c.netns())], 0.0, "an idle container");
}

/// The static binary `.ci/run` builds for the image (crt-static).
fn static_binary() -> Option<PathBuf> {
    let p = Path::new(ROOT).join("target/x86_64-unknown-linux-gnu/release/sockwatch");
    p.exists().then_some(p)
}

#[test]
fn the_scratch_image_sees_the_other_containers() {
    if !require("the_scratch_image_sees_the_other_containers", &["podman", "runc", "busybox", "tar"]) {
        return;
    }
    let Some(binary) = static_binary() else {
        skip(
            "the_scratch_image_sees_the_other_containers",
            "no static binary: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target x86_64-unknown-linux-gnu",
        );
        return;
    };
    let ldd = Command::new("ldd").arg(&binary).output().unwrap();
    assert!(!ldd.status.success() || String::from_utf8_lossy(&ldd.stdout).contains("statically linked"), "not static");
    let tag = format!("localhost/sockwatch-test:{}", std::process::id());
    let context = binary.parent().unwrap();
    let containerfile = Path::new(ROOT).join("deploy/Containerfile");
    ok(
        &podman(&["build", "-q", "-f", containerfile.to_str().unwrap(), "-t", &tag, context.to_str().unwrap()]),
        "podman build",
    );
    let image = busybox_image("seen");
    let other = Container::sleeping(&image, &format!("sockwatch-test-other-{}", std::process::id()));
    // The image, in the host's PID and network namespaces, as the README and DaemonSet run it.
    let mut args = PODMAN_RUN.to_vec();
    args.extend(["--rm", "--pid", "host", "--network", "host", "--cap-drop", "all", "--cap-add", "SYS_PTRACE"]);
    args.extend(["--cap-add", "SYS_ADMIN", "--read-only", "-v", "/run/netns:/run/netns:ro"]);
    args.extend(["--entrypoint", "/usr/bin/sockwatch", &tag, "sample", "--netns", "on", "--netns.top-k", "1000", "--munin.socket", ""]);
    let out = podman(&args);
    let _ = podman(&["rmi", "-f", &tag]);
    let text = ok(&out, "sockwatch in its scratch image");
    let info = common::netns_info_line(&text, other.netns());
    assert!(info.contains(&format!("container_id=\"{}\"", other.id())), "{info}");
    let m = parse_metrics(&text);
    assert_eq!(m["sockwatch_netns_deep_up"], 1.0, "CAP_SYS_ADMIN given: the deep layer runs");
    assert!(m["sockwatch_netns_namespaces"] >= 2.0);
}

#[test]
fn the_daemonset_manifest_validates_and_its_flags_are_accepted() {
    if !common::require_commands("the_daemonset_manifest_validates_and_its_flags_are_accepted", &["kubernetes-validate"]) {
        return;
    }
    let manifest = Path::new(ROOT).join("deploy/kubernetes/daemonset.yaml");
    let validate = |p: &Path| Command::new("kubernetes-validate").arg("--strict").arg(p).output().unwrap();
    ok(&validate(&manifest), "kubernetes-validate");
    // The check can fail: a misspelt field is refused.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let bad = std::env::temp_dir().join(format!("sockwatch-bad-ds-{}.yaml", std::process::id()));
    std::fs::write(&bad, text.replace("hostPID: true", "hostPid: true")).unwrap();
    assert!(!validate(&bad).status.success(), "a misspelt field passed");
    let _ = std::fs::remove_file(&bad);
    // The container's flags are ones sockwatch accepts (serve swapped for a one-shot sample).
    let args: Vec<String> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("args:"))
        .skip(1)
        .map_while(|l| l.trim_start().strip_prefix("- ").map(str::to_owned))
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    let out = Command::new(BIN).arg("sample").args(&args[1..]).output().unwrap();
    ok(&out, "sockwatch sample with the DaemonSet's flags");
}
