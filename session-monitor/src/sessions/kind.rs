//! What kind of session a terminal carries, decided by the process that serves it
//! (holds the pty master) and by the cgroup of its leader.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Ssh,
    Mosh,
    Console,
    Container,
    Local,
}

impl SessionKind {
    pub const ALL: [SessionKind; 5] = [
        SessionKind::Ssh,
        SessionKind::Mosh,
        SessionKind::Console,
        SessionKind::Container,
        SessionKind::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Ssh => "ssh",
            SessionKind::Mosh => "mosh",
            SessionKind::Console => "console",
            SessionKind::Container => "container",
            SessionKind::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for SessionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The container a session runs in, from its cgroup path. The path names no pod or
/// Kubernetes namespace, only the pod's UID (kubepods paths).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub runtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

/// Transports recognised by the name of their executable. The name is trusted only
/// when the file belongs to root and only root can write it: a user cannot make their
/// own program look like sshd to get sshd's policy.
fn transport_kind(exe_name: &str) -> Option<SessionKind> {
    Some(match exe_name {
        "sshd" | "sshd-session" => SessionKind::Ssh,
        "mosh-server" => SessionKind::Mosh,
        "containerd-shim"
        | "containerd-shim-runc-v1"
        | "containerd-shim-runc-v2"
        | "conmon"
        | "runc"
        | "crun"
        | "dockerd"
        | "containerd"
        | "docker"
        | "kubelet" => SessionKind::Container,
        _ => return None,
    })
}

/// True when the executable is root's and not writable by anybody else.
pub fn trusted_executable(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) => meta.uid() == 0 && meta.mode() & 0o022 == 0,
        Err(_) => false,
    }
}

/// Decides the kind. `server_exe` is the transport's executable (None for consoles
/// and when no process holds the master), `leader_cgroups` the leader's cgroup paths.
pub fn classify(
    is_pty: bool,
    server_exe: Option<&Path>,
    server_trusted: bool,
    leader_cgroups: &[String],
) -> (SessionKind, Option<ContainerInfo>) {
    let container = leader_cgroups
        .iter()
        .find_map(|path| container_from_cgroup(path));
    if !is_pty {
        return (SessionKind::Console, None);
    }
    let by_transport = server_exe
        .filter(|_| server_trusted)
        .and_then(|exe| exe.file_name())
        .and_then(|name| transport_kind(&name.to_string_lossy()));
    match (by_transport, container) {
        (Some(SessionKind::Container), container) => (SessionKind::Container, container),
        (Some(kind), container) => (kind, container),
        (None, Some(container)) => (SessionKind::Container, Some(container)),
        (None, None) => (SessionKind::Local, None),
    }
}

/// Recognises the cgroup paths container runtimes create, in the cgroup v2 path and
/// in every cgroup v1 hierarchy's (they are the same names):
///
/// - docker: `/system.slice/docker-<id>.scope` (systemd driver), `/docker/<id>`
///   (cgroupfs driver);
/// - containerd under Kubernetes (CRI):
///   `/kubepods.slice/.../kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`,
///   `/kubepods/besteffort/pod<uid>/<id>`;
/// - CRI-O: `.../crio-<id>.scope`, and `.../pod<uid>/crio-<id>` with cgroupfs;
/// - podman: `/machine.slice/libpod-<id>.scope` (systemd, podman 4 adds a
///   `/container` child inside), `/libpod_parent/libpod-<id>` (cgroupfs).
///
/// A reader in a cgroup namespace of its own (a daemon in a container) sees the same
/// names below `/..` components. The runtimes' monitors (`libpod-conmon-<id>`,
/// `crio-conmon-<id>`) are not containers: their suffix is no container id.
pub fn container_from_cgroup(path: &str) -> Option<ContainerInfo> {
    let mut info: Option<ContainerInfo> = None;
    let mut pod_uid = None;
    let mut in_kubepods = false;
    let mut previous = "";
    for part in path.split('/') {
        if part.starts_with("kubepods") {
            in_kubepods = true;
        }
        if let Some(uid) = pod_uid_of(part) {
            pod_uid = Some(uid);
        }
        if let Some((id, runtime)) = runtime_prefixed_id(part) {
            info = Some(ContainerInfo {
                id: id.to_string(),
                runtime: runtime.to_string(),
                ..Default::default()
            });
        }
        if is_container_id(part) && (previous == "docker" || in_kubepods) {
            let runtime = if previous == "docker" {
                "docker"
            } else {
                "kubernetes"
            };
            info = Some(ContainerInfo {
                id: part.to_string(),
                runtime: runtime.to_string(),
                ..Default::default()
            });
        }
        previous = part;
    }
    info.map(|mut info| {
        info.pod_uid = pod_uid;
        info
    })
}

/// `<runtime prefix><id>`, with `.scope` (systemd cgroup manager) or without
/// (cgroupfs manager: podman's `libpod-<id>`, CRI-O's `crio-<id>`): the id and the
/// runtime's name.
fn runtime_prefixed_id(part: &str) -> Option<(&str, &'static str)> {
    const PREFIXES: [(&str, &str); 4] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    let name = part.strip_suffix(".scope").unwrap_or(part);
    PREFIXES.into_iter().find_map(|(prefix, runtime)| {
        name.strip_prefix(prefix)
            .filter(|id| is_container_id(id))
            .map(|id| (id, runtime))
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>` or `kubepods-burstable-pod<uid>.slice` (systemd escapes `-` as `_`).
fn pod_uid_of(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let idx = part.rfind("pod")?;
    let uid = &part[idx + 3..];
    let looks_like_uid = uid.len() == 36
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    looks_like_uid.then(|| uid.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a";

    #[test]
    fn docker_scope() {
        let info = container_from_cgroup(&format!("/system.slice/docker-{ID}.scope")).unwrap();
        assert_eq!(info.id, ID);
        assert_eq!(info.runtime, "docker");
    }

    #[test]
    fn kubernetes_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_1111_2222_3333_444455556666.slice/cri-containerd-{ID}.scope"
        );
        let info = container_from_cgroup(&path).unwrap();
        assert_eq!(info.id, ID);
        assert_eq!(info.runtime, "containerd");
        assert_eq!(
            info.pod_uid.as_deref(),
            Some("1a2b3c4d-1111-2222-3333-444455556666")
        );
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let path = format!("/kubepods/besteffort/pod1a2b3c4d-1111-2222-3333-444455556666/{ID}");
        let info = container_from_cgroup(&path).unwrap();
        assert_eq!(info.id, ID);
        assert_eq!(
            info.pod_uid.as_deref(),
            Some("1a2b3c4d-1111-2222-3333-444455556666")
        );
    }

    /// Every layout the runtimes produce, as cgroup v2 paths and as the paths of
    /// cgroup v1 hierarchies (`/proc/PID/cgroup` lines `N:controller:PATH`).
    #[test]
    fn every_runtime_layout() {
        let pod = "1a2b3c4d-1111-2222-3333-444455556666";
        let pod_ = pod.replace('-', "_");
        let layouts: Vec<(String, &str, Option<&str>)> = vec![
            // docker, systemd and cgroupfs drivers.
            (format!("/system.slice/docker-{ID}.scope"), "docker", None),
            (format!("/docker/{ID}"), "docker", None),
            // podman, cgroupfs manager (no .scope) and systemd (with podman 4's
            // `container` child).
            (format!("/libpod_parent/libpod-{ID}"), "podman", None),
            (format!("/machine.slice/libpod-{ID}.scope"), "podman", None),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                "podman",
                None,
            ),
            // CRI-O, systemd and cgroupfs.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_}.slice/crio-{ID}.scope"
                ),
                "cri-o",
                Some(pod),
            ),
            (
                format!("/kubepods/besteffort/pod{pod}/crio-{ID}"),
                "cri-o",
                Some(pod),
            ),
            // containerd (CRI), systemd and cgroupfs.
            (
                format!("/kubepods.slice/kubepods-pod{pod_}.slice/cri-containerd-{ID}.scope"),
                "containerd",
                Some(pod),
            ),
            (format!("/kubepods/pod{pod}/{ID}"), "kubernetes", Some(pod)),
            // Seen from a cgroup namespace of its own (the daemon in a container).
            (format!("/../../libpod_parent/libpod-{ID}"), "podman", None),
            (format!("/../docker/{ID}"), "docker", None),
        ];
        for (path, runtime, pod_uid) in layouts {
            let info = container_from_cgroup(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(info.id, ID, "{path}");
            assert_eq!(info.runtime, runtime, "{path}");
            assert_eq!(info.pod_uid.as_deref(), pod_uid, "{path}");
        }
    }

    /// A process's paths on a hybrid machine: v1 hierarchies and the v2 one.
    #[test]
    fn cgroup_v1_and_v2_lines_of_one_process() {
        let paths = vec![
            format!("/docker/{ID}"),
            format!("/docker/{ID}"),
            "/".to_string(),
        ];
        let (kind, info) = classify(
            true,
            Some(Path::new("/usr/bin/containerd-shim-runc-v2")),
            true,
            &paths,
        );
        assert_eq!(kind, SessionKind::Container);
        assert_eq!(info.unwrap().runtime, "docker");
    }

    #[test]
    fn runtime_monitors_and_look_alikes_are_not_containers() {
        for path in [
            format!("/libpod_parent/libpod-conmon-{ID}"),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/system.slice/crio-conmon-{ID}.scope"),
            format!("/system.slice/docker-{}.scope", &ID[..12]),
            format!("/libpod_parent/libpod-{ID}x"),
            format!("/system.slice/{ID}"),
            "/system.slice/docker.service".to_string(),
        ] {
            assert!(container_from_cgroup(&path).is_none(), "{path}");
        }
    }

    #[test]
    fn ordinary_cgroups_are_not_containers() {
        assert!(container_from_cgroup("/user.slice/user-1000.slice/session-3.scope").is_none());
        assert!(container_from_cgroup("/").is_none());
    }

    #[test]
    fn kind_follows_the_transport() {
        let sshd = Path::new("/usr/sbin/sshd");
        assert_eq!(classify(true, Some(sshd), true, &[]).0, SessionKind::Ssh);
        assert_eq!(
            classify(true, Some(Path::new("/usr/bin/mosh-server")), true, &[]).0,
            SessionKind::Mosh
        );
        assert_eq!(
            classify(true, Some(Path::new("/usr/bin/tmux")), true, &[]).0,
            SessionKind::Local
        );
        assert_eq!(classify(false, None, false, &[]).0, SessionKind::Console);
        // An untrusted binary called sshd is just a local terminal.
        assert_eq!(classify(true, Some(sshd), false, &[]).0, SessionKind::Local);
        let cg = vec![format!("/system.slice/docker-{ID}.scope")];
        let (kind, info) = classify(
            true,
            Some(Path::new("/usr/bin/containerd-shim-runc-v2")),
            true,
            &cg,
        );
        assert_eq!(kind, SessionKind::Container);
        assert_eq!(info.unwrap().id, ID);
    }
}
