//! Container sessions: a terminal whose processes live in a cgroup shaped like a
//! container runtime's (`docker exec -it`, `kubectl exec -it`) is a `container`
//! session attributed to its container id, and pod when the path carries it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use harness::{Daemon, Kind, test_guard};

/// The cgroup v2 hierarchy: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, path, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(path))
    })
}

/// A container-shaped cgroup with a pty session inside (`script` holds the master,
/// the shell it starts is the session leader); removed with its processes on drop.
struct ContainerTerminal {
    root: PathBuf,
    cgroup: PathBuf,
    child: Child,
}

impl ContainerTerminal {
    fn start(root: &Path, relative: &str) -> Self {
        let cgroup = root.join(relative);
        std::fs::create_dir_all(&cgroup)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.display()));
        // The shell joins the cgroup before exec, so the pty and everything in it is
        // created inside.
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec script -qfc 'sleep 300' /dev/null",
            cgroup.display()
        );
        let child = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setsid sh");
        ContainerTerminal {
            root: root.to_path_buf(),
            cgroup,
            child,
        }
    }
}

impl Drop for ContainerTerminal {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.cgroup.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<u32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        harness::process::kill_all(&pids);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Remove the cgroup and the parents this test created, innermost first.
        let mut dir = self.cgroup.clone();
        while dir != self.root && dir.starts_with(&self.root) {
            if std::fs::remove_dir(&dir).is_err() {
                break;
            }
            dir.pop();
        }
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn a_terminal_in_a_container_cgroup_is_a_container_session() {
    let _guard = test_guard!();
    let Some(root) = cgroup2_root() else {
        eprintln!("skipped: no cgroup v2 hierarchy on this machine");
        return;
    };
    let daemon = Daemon::start();
    let pod = "1a2b3c4d-1111-2222-3333-444455556666";
    let shapes = [
        (format!("smtest.slice/docker-{ID}.scope"), "docker", None),
        (
            format!(
                "smtest-kubepods.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
                pod.replace('-', "_")
            ),
            "containerd",
            Some(pod),
        ),
    ];
    for (path, runtime, pod_uid) in shapes {
        let terminal = ContainerTerminal::start(&root, &path);
        let session =
            daemon.wait_for_session("the container terminal", Duration::from_secs(20), |s| {
                s.kind == Kind::Container && s.extra.get("container").is_some_and(|c| c["id"] == ID)
            });
        let container = &session.extra["container"];
        assert_eq!(container["runtime"], runtime, "{container}");
        assert_eq!(container["pod_uid"].as_str(), pod_uid, "{container}");
        // The audit log attributes the session to its container too.
        let start = daemon
            .audit()
            .into_iter()
            .find(|r| r["event"] == "session_start" && r["session_id"] == session.id.as_str())
            .expect("a session_start record");
        assert_eq!(start["kind"], "container");
        assert_eq!(start["container"]["id"], ID);
        drop(terminal);
        daemon.wait_session_gone(&session.id, Duration::from_secs(15));
    }
}
