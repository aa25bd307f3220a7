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

/// The container a session runs in, from its cgroup path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub runtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
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

/// Recognises the cgroup paths container runtimes create:
/// `/system.slice/docker-<id>.scope`, `/docker/<id>`,
/// `/kubepods.slice/.../kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`,
/// `/kubepods/besteffort/pod<uid>/<id>`, `crio-<id>.scope`, `libpod-<id>.scope`.
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
        let scoped = [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ];
        for (prefix, runtime) in scoped {
            if let Some(id) = part
                .strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(".scope"))
                && is_container_id(id)
            {
                info = Some(ContainerInfo {
                    id: id.to_string(),
                    runtime: runtime.to_string(),
                    ..Default::default()
                });
            }
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
