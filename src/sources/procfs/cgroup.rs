//! Who a process belongs to (and so the namespace it represents, or the descriptors it
//! holds): the container id, runtime and pod from its `/proc/PID/cgroup` path (Docker, containerd, CRI-O, Podman; cgroupfs and systemd drivers,
//! cgroup v1 and v2).

/// Who a process (and its namespace) belongs to, where it could be found out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `crio`, `podman`.
    pub runtime: Option<&'static str>,
    pub pod_uid: Option<String>,
}

/// Reads `/proc/PID/cgroup` below `proc_root`: the default owner when it cannot be read.
pub fn owner_of(proc_root: &std::path::Path, pid: u32) -> Owner {
    crate::sources::kernel::read_optional(&proc_root.join(pid.to_string()).join("cgroup"))
        .ok()
        .flatten()
        .map_or_else(Owner::default, |t| parse_cgroup(&t))
}

/// The owner named by a `/proc/PID/cgroup` file (v1 lines `N:controllers:/path`, the v2
/// line `0::/path`). The last container-id-looking component wins: it is the innermost.
///
/// A cgroup's name is a claim by whoever could create it, so a container id counts only
/// where a runtime running as root puts it, which only root can create: directly under
/// `/system.slice` or `/machine.slice` (systemd driver), under `/docker` or
/// `/libpod_parent` (cgroupfs driver), or anywhere below `/kubepods*` (the kubelet's tree;
/// a pod's uid only there too). Below a user's delegated tree (`user@UID.service`) it is
/// that user's rootless container: its runtime reads `<runtime>-rootless`. Anywhere else (a
/// service with `Delegate=`, a container's own subtree) it is not taken as a container.
pub fn parse_cgroup(text: &str) -> Owner {
    let mut owner = Owner::default();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some(&top) = parts.first() else { continue };
        let kubepods = top.starts_with("kubepods");
        let mut rootless = false;
        for (i, &part) in parts.iter().enumerate() {
            let parent = if i == 0 { "" } else { parts[i - 1] };
            rootless |= part.starts_with("user@") && part.ends_with(".service");
            let placed_by_root = kubepods
                || (i == 1 && matches!(top, "system.slice" | "machine.slice"))
                || (i >= 1
                    && matches!(parent, "docker" | "libpod_parent")
                    && matches!(top, "docker" | "libpod_parent"));
            if let Some((runtime, id)) = container_id(part, parent).filter(|_| placed_by_root || rootless) {
                owner.container_id = Some(id.to_owned());
                owner.runtime = if rootless { runtime.map(rootless_name) } else { runtime.or(owner.runtime) };
            }
            if let Some(uid) = pod_uid(part).filter(|_| kubepods) {
                owner.pod_uid = Some(uid);
            }
        }
    }
    owner
}

/// The runtime of a container in a user's delegated tree.
fn rootless_name(runtime: &'static str) -> &'static str {
    match runtime {
        "docker" => "docker-rootless",
        "containerd" => "containerd-rootless",
        "crio" => "crio-rootless",
        "podman" => "podman-rootless",
        _ => "rootless",
    }
}

/// A container id as the runtimes write it: 64 lower-case hex digits. A cgroup name is a
/// claim by whoever could create that cgroup (anyone delegated a subtree can name one
/// `docker-<id>.scope`); only the canonical form is accepted, so at least a variant
/// spelling of a victim's id (upper case) is not taken as that container.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A cgroup path component naming a container: `<prefix>-<id>.scope` (systemd driver),
/// or the bare id under `docker/`, `libpod_parent/` or a pod's directory (cgroupfs driver).
/// Conmon (the monitor process of CRI-O and Podman) is not the container.
fn container_id<'a>(part: &'a str, parent: &str) -> Option<(Option<&'static str>, &'a str)> {
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in
        [("docker-", "docker"), ("cri-containerd-", "containerd"), ("crio-", "crio"), ("libpod-", "podman")]
    {
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_id(id).then_some((Some(runtime), id));
        }
    }
    if !is_id(stem) {
        return None;
    }
    let runtime = match parent {
        "docker" => Some("docker"),
        "libpod_parent" => Some("podman"),
        _ => None, // kubepods/<qos>/pod<uid>/<id>: the runtime is not in the path
    };
    Some((runtime, stem))
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let stem = part.strip_suffix(".slice").unwrap_or(part);
    let uid = stem.rsplit_once("-pod").map_or_else(|| stem.strip_prefix("pod"), |(_, u)| Some(u))?;
    let uid = uid.replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                matches!(b, b'0'..=b'9' | b'a'..=b'f')
            }
        });
    ok.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c0e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e";

    #[test]
    fn container_ids_of_every_runtime_and_driver() {
        for (cgroup, runtime) in [
            (format!("0::/system.slice/docker-{ID}.scope"), Some("docker")),
            (format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}"), Some("docker")),
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f9b2c4e_1a2b_4c3d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
            ),
            (format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f9b2c4e_1a2b_4c3d_8e9f_0a1b2c3d4e5f.slice/crio-{ID}.scope"), Some("crio")),
            (format!("0::/machine.slice/libpod-{ID}.scope/container"), Some("podman")),
            (format!("1:name=systemd:/libpod_parent/{ID}"), Some("podman")),
            (format!("4:memory:/kubepods/burstable/pod0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f/{ID}"), None),
        ] {
            let o = parse_cgroup(&cgroup);
            assert_eq!(o.container_id.as_deref(), Some(ID), "{cgroup}");
            assert_eq!(o.runtime, runtime, "{cgroup}");
            if cgroup.contains("pod0f9b") {
                assert_eq!(o.pod_uid.as_deref(), Some("0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"), "{cgroup}");
            }
        }
    }

    /// Below a user's delegated tree, a container is that user's: rootless, never taken for
    /// the root runtime's container of the same id, and no pod.
    #[test]
    fn a_users_delegated_tree_holds_rootless_containers_only() {
        let o = parse_cgroup(&format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        ));
        assert_eq!((o.container_id.as_deref(), o.runtime), (Some(ID), Some("podman-rootless")));
        let o = parse_cgroup(&format!("0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope"));
        assert_eq!(o.runtime, Some("docker-rootless"));
        let o = parse_cgroup(&format!(
            "0::/user.slice/user-1000.slice/user@1000.service/kubepods/pod0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f/crio-{ID}.scope"
        ));
        assert_eq!((o.runtime, o.pod_uid), (Some("crio-rootless"), None));
    }

    #[test]
    fn not_containers() {
        for cgroup in [
            "0::/init.scope",
            "0::/system.slice/sshd.service",
            "0::/user.slice/user-1000.slice/session-3.scope",
            &format!("0::/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("0::/system.slice/crio-conmon-{ID}.scope"),
            "0::/system.slice/docker-short.scope",
            // Not the runtimes' canonical spelling: refused, not taken as that container.
            &format!("0::/system.slice/docker-{}.scope", ID.to_uppercase()),
            &format!("4:memory:/kubepods/burstable/pod0F9B2C4E-1A2B-4C3D-8E9F-0A1B2C3D4E5F/{}", ID.to_uppercase()),
            "garbage without colons",
            "",
        ] {
            assert_eq!(parse_cgroup(cgroup), Owner::default(), "{cgroup}");
        }
        // Where only a delegated user or service could have made it: not a container.
        for cgroup in [
            format!("0::/user.slice/docker-{ID}.scope"),
            format!("0::/system.slice/foo.service/docker-{ID}.scope"),
            format!("0::/system.slice/foo.service/kubepods/burstable/pod0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f/{ID}"),
            format!("0::/system.slice/foo.service/docker/{ID}"),
        ] {
            assert_eq!(parse_cgroup(&cgroup), Owner::default(), "{cgroup}");
        }
        // A pod's sandbox (pause) cgroup without a container id still names the pod.
        let o = parse_cgroup("0::/kubepods/besteffort/pod0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f");
        assert_eq!((o.container_id, o.pod_uid.as_deref()), (None, Some("0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f")));
    }
}
