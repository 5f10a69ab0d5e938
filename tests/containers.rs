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

fn a_podman_container_is_named_on_its_namespace() {
    if !require("a_podman_container_is_named_on_its_namespace", &["podman", "runc", "busybox", "tar"]) {
        return;
    }
    let image = busybox_image("named");
    let c = Container::sleeping(&image, &format!("sockwatch-test-{}", std::process::id()));
    // Every namespace exported (not the default top 20): on a busy host an idle container
    // ranks below the others.
    let out = Command::new(BIN)
        .args(["sample", "--netns", "on", "--netns.top-k", "1000", "--munin.socket", ""])
        .output()
        .unwrap();
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
    // The image, in the host's PID and network namespaces, as the README and DaemonSet run it;
    // with `nofile` as given (the last --ulimit wins).
    let run = |nofile: &str| {
        let mut args = PODMAN_RUN.to_vec();
        args.extend(["--ulimit", nofile]);
        args.extend(["--rm", "--pid", "host", "--network", "host", "--cap-drop", "all", "--cap-add", "SYS_PTRACE"]);
        args.extend(["--cap-add", "SYS_ADMIN", "--read-only", "-v", "/run/netns:/run/netns:ro"]);
        args.extend([
            "--entrypoint",
            "/usr/bin/sockwatch",
            &tag,
            "sample",
            "--netns",
            "on",
            "--netns.top-k",
            "1000",
            "--munin.socket",
            "",
        ]);
        podman(&args)
    };
    let roomy = run("nofile=4096:4096");
    // A container's default 1,024 descriptors leave none for namespace sockets (sockwatch keeps
    // 1,024 apart for everything else): the deep layer is down, and says what to raise there.
    let starved = run("nofile=1024:1024");
    let _ = podman(&["rmi", "-f", &tag]);
    let text = ok(&roomy, "sockwatch in its scratch image");
    let info = common::netns_info_line(&text, other.netns());
    assert!(info.contains(&format!("container_id=\"{}\"", other.id())), "{info}");
    let m = parse_metrics(&text);
    assert_eq!(m["sockwatch_netns_deep_up"], 1.0, "CAP_SYS_ADMIN and descriptors given: the deep layer runs");
    assert!(m["sockwatch_netns_deep_sockets"] >= 1.0);
    assert!(m["sockwatch_netns_namespaces"] >= 2.0);
    let m = parse_metrics(&ok(&starved, "sockwatch in its scratch image, 1,024 descriptors"));
    assert_eq!(m["sockwatch_netns_deep_up"], 0.0, "no descriptor to spare: down, not up with nothing kept");
    let log = String::from_utf8_lossy(&starved.stderr);
    assert!(log.contains("--ulimit nofile="), "the container's hint, not systemd's: {log}");
}

fn the_daemonset_manifest_validates_and_its_flags_are_accepted() {
    if !common::require_commands(
        "the_daemonset_manifest_validates_and_its_flags_are_accepted",
        &["kubernetes-validate"],
    ) {
        return;
    }
    let manifest = Path::new(ROOT).join("deploy/kubernetes/base/daemonset.yaml");
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

/// Builds the scratch image of deploy/Containerfile; removed on drop.
struct Image(String);

impl Image {
    fn build(test: &str) -> Option<Image> {
        let Some(binary) = static_binary() else {
            skip(
                test,
                "no static binary: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target x86_64-unknown-linux-gnu",
            );
            return None;
        };
        let tag = format!("localhost/sockwatch-test-spec:{}", std::process::id());
        let containerfile = Path::new(ROOT).join("deploy/Containerfile");
        let context = binary.parent().unwrap().to_str().unwrap().to_owned();
        ok(&podman(&["build", "-q", "-f", containerfile.to_str().unwrap(), "-t", &tag, &context]), "podman build");
        Some(Image(tag))
    }

    /// The image's ENTRYPOINT and CMD.
    fn config(&self) -> (Vec<String>, Vec<String>) {
        let json = ok(&podman(&["image", "inspect", &self.0]), "podman image inspect");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let list = |k: &str| -> Vec<String> {
            v[0]["Config"][k]
                .as_array()
                .map_or_else(Vec::new, |a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        };
        (list("Entrypoint"), list("Cmd"))
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.0]);
    }
}

/// One container as a manifest (or the README) specifies it.
#[derive(Debug, Default)]
struct Spec {
    what: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    host_pid: bool,
    caps: Vec<String>,
    read_only: bool,
    /// (host path, container path) of hostPath volumes.
    mounts: Vec<(String, String)>,
    port: u16,
}

/// The argv the kubelet gives the runtime: `command` replaces ENTRYPOINT, `args` replaces
/// CMD, and a `command` without `args` drops CMD too.
fn kubelet_argv(spec: &Spec, entrypoint: &[String], cmd: &[String]) -> Vec<String> {
    match (&spec.command, &spec.args) {
        (Some(c), a) => c.iter().chain(a.iter().flatten()).cloned().collect(),
        (None, Some(a)) => entrypoint.iter().chain(a).cloned().collect(),
        (None, None) => entrypoint.iter().chain(cmd).cloned().collect(),
    }
}

/// Every container of every workload in a Kubernetes YAML stream.
fn specs_of(file: &Path) -> Vec<Spec> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_yaml_ng::Value::deserialize(doc).unwrap();
        if !matches!(v["kind"].as_str(), Some("DaemonSet" | "Deployment" | "StatefulSet")) {
            continue;
        }
        let pod = &v["spec"]["template"]["spec"];
        let strings = |x: &serde_yaml_ng::Value| -> Option<Vec<String>> {
            x.as_sequence().map(|s| s.iter().map(|i| i.as_str().unwrap().to_owned()).collect())
        };
        let volumes: Vec<(String, String)> = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|vol| Some((vol["name"].as_str()?.to_owned(), vol["hostPath"]["path"].as_str()?.to_owned())))
            .collect();
        for c in pod["containers"].as_sequence().unwrap() {
            let mounts = c["volumeMounts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let host = volumes.iter().find(|(n, _)| Some(n.as_str()) == m["name"].as_str())?.1.clone();
                    Some((host, m["mountPath"].as_str()?.to_owned()))
                })
                .collect();
            out.push(Spec {
                what: format!(
                    "{} {}/{}",
                    file.display(),
                    v["metadata"]["name"].as_str().unwrap_or("?"),
                    c["name"].as_str().unwrap_or("?")
                ),
                command: strings(&c["command"]),
                args: strings(&c["args"]),
                host_pid: pod["hostPID"].as_bool().unwrap_or(false),
                caps: strings(&c["securityContext"]["capabilities"]["add"]).unwrap_or_default(),
                read_only: c["securityContext"]["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
                mounts,
                port: c["ports"][0]["containerPort"].as_u64().unwrap_or(9822) as u16,
            });
        }
    }
    out
}

/// Every shipped way to run the image starts and serves: the README's `podman run` (the
/// image's own ENTRYPOINT and CMD), each container of each manifest in deploy/kubernetes/base,
/// and each of what every kustomization renders (`kubectl kustomize`), run with podman exactly as the kubelet would (`command` replaces ENTRYPOINT, `args`
/// replaces CMD), in a network namespace of the test's own (the pods' hostNetwork), with
/// their capabilities, read-only root and hostPath volumes. (The DaemonSet crash-looped:
/// its args were appended to an ENTRYPOINT that already held `serve`.)
fn every_shipped_container_spec_starts_as_the_kubelet_runs_it() {
    let test = "every_shipped_container_spec_starts_as_the_kubelet_runs_it";
    if !require(test, &["podman", "runc"]) {
        return;
    }
    let Some(image) = Image::build(test) else { return };
    let (entrypoint, cmd) = image.config();
    let mut specs = vec![Spec {
        what: "README's podman run (no arguments)".into(),
        host_pid: true,
        caps: vec!["SYS_PTRACE".into(), "SYS_ADMIN".into()],
        read_only: true,
        port: 9822,
        ..Spec::default()
    }];
    let dir = Path::new(ROOT).join("deploy/kubernetes/base");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    manifests.sort();
    for m in manifests.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        specs.extend(specs_of(m));
    }
    assert!(specs.len() >= 2, "no workload found in {}", dir.display());
    // What each kustomization renders, as a cluster would receive it.
    if common::require_commands(test, &["kubectl"]) {
        for k in ["base", "monitoring", "podmonitor"] {
            let out =
                Command::new("kubectl").args(["kustomize", &format!("{ROOT}/deploy/kubernetes/{k}")]).output().unwrap();
            let rendered = std::env::temp_dir().join(format!("sockwatch-rendered-{k}-{}.yaml", std::process::id()));
            std::fs::write(&rendered, ok(&out, &format!("kubectl kustomize {k}"))).unwrap();
            let before = specs.len();
            specs.extend(specs_of(&rendered).into_iter().map(|mut s| {
                s.what = format!("kubectl kustomize deploy/kubernetes/{k}: {}", s.what);
                s
            }));
            assert!(specs.len() > before, "{k} renders no workload");
            let _ = std::fs::remove_file(&rendered);
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        let argv = kubelet_argv(spec, &entrypoint, &cmd);
        let ns = common::Netns::new("spec");
        let name = format!("sockwatch-spec-{}-{i}", std::process::id());
        let entry = serde_json::to_string(&argv[..1]).unwrap();
        let netns = format!("ns:/run/netns/{}", ns.name);
        let mut args: Vec<String> = PODMAN_RUN.iter().map(|s| s.to_string()).collect();
        args.extend(["-d", "--name", &name, "--network", &netns, "--cap-drop", "all"].map(String::from));
        if spec.host_pid {
            args.extend(["--pid", "host"].map(String::from));
        }
        for cap in &spec.caps {
            args.extend(["--cap-add".into(), cap.clone()]);
        }
        if spec.read_only {
            args.push("--read-only".into());
        }
        for (host, inside) in &spec.mounts {
            // A hostPath of type DirectoryOrCreate: the kubelet makes it; here it exists
            // already (Netns::new made /run/netns) or the mount is left out.
            if Path::new(host).exists() {
                args.extend(["-v".into(), format!("{host}:{inside}:ro")]);
            }
        }
        args.extend(["--entrypoint".into(), entry, image.0.clone()]);
        args.extend(argv[1..].iter().cloned());
        let run = podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
        struct Remove(String);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
            }
        }
        let _remove = Remove(name.clone());
        ok(&run, &format!("{}: podman run {argv:?}", spec.what));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let ready = loop {
            if let Some((200, _)) = common::try_http_get_in(&ns, spec.port, "/-/ready") {
                break true;
            }
            let state = ok(&podman(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &name]), "inspect");
            if !state.starts_with("running") || std::time::Instant::now() > deadline {
                let logs = podman(&["logs", &name]);
                panic!(
                    "{}: {argv:?} is {state}, not ready: {}{}",
                    spec.what,
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        assert!(ready);
        let (code, text) = common::http_get_in(&ns, spec.port, "/metrics");
        assert_eq!(code, 200, "{}", spec.what);
        let m = parse_metrics(&text);
        assert_eq!(m["sockwatch_source_up{source=\"sockets\"}"], 1.0, "{}", spec.what);
        eprintln!("{}: {argv:?} started and served", spec.what);
    }
}

/// The kubelet's rule itself, on the cases that matter.
fn kubelet_argv_rules() {
    let (e, c) = (vec!["/e".to_owned()], vec!["serve".to_owned(), "--x".to_owned()]);
    let s = |command: Option<&[&str]>, args: Option<&[&str]>| Spec {
        command: command.map(|v| v.iter().map(|s| s.to_string()).collect()),
        args: args.map(|v| v.iter().map(|s| s.to_string()).collect()),
        ..Spec::default()
    };
    assert_eq!(kubelet_argv(&s(None, None), &e, &c), ["/e", "serve", "--x"]);
    assert_eq!(kubelet_argv(&s(None, Some(&["sample"])), &e, &c), ["/e", "sample"]);
    assert_eq!(kubelet_argv(&s(Some(&["/b"]), None), &e, &c), ["/b"]);
    assert_eq!(kubelet_argv(&s(Some(&["/b"]), Some(&["y"])), &e, &c), ["/b", "y"]);
}

test_main!(
    a_podman_container_is_named_on_its_namespace,
    the_scratch_image_sees_the_other_containers,
    the_daemonset_manifest_validates_and_its_flags_are_accepted,
    every_shipped_container_spec_starts_as_the_kubelet_runs_it,
    kubelet_argv_rules,
);
