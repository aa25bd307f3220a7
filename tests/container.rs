//! Container sessions: a terminal whose processes live in a cgroup shaped like a
//! container runtime's (`docker exec -it`, `kubectl exec -it`) is a `container`
//! session attributed to its container id, and pod when the path carries it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use harness::{Daemon, Kind, process, test_guard};

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
    let root = process::cgroup2_root();
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

/// A pty session in a devpts instance of its own, as a container mounts: `script`
/// holds the master (fed from a pipe, so the test can type) and its `sleep` leads
/// the session on the slave. Unmounted with the private mount namespace when its
/// processes end.
struct OwnDevptsTerminal {
    child: Child,
    typing: std::process::ChildStdin,
}

impl OwnDevptsTerminal {
    fn start() -> Self {
        let inside = "mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts \
                      && mount --bind /dev/pts/ptmx /dev/ptmx \
                      && exec script -qfc 'sleep 300' /dev/null";
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "setsid",
                "sh",
                "-c",
                inside,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare --mount");
        let typing = child.stdin.take().expect("piped stdin");
        OwnDevptsTerminal { child, typing }
    }

    fn type_keys(&mut self, keys: &str) {
        use std::io::Write as _;
        self.typing.write_all(keys.as_bytes()).expect("typing");
        self.typing.flush().expect("typing");
    }
}

impl Drop for OwnDevptsTerminal {
    fn drop(&mut self) {
        let mut pids = harness::process::descendants(self.child.id());
        pids.push(self.child.id());
        harness::process::kill_all(&pids);
        let _ = self.child.wait();
    }
}

/// Each container has its own `pts/0`: the kernel side keys a terminal by device
/// number and devpts instance, so typing into one `pts/0` is input for its session
/// alone.
#[test]
fn the_same_pts_number_in_two_devpts_instances_is_two_sessions() {
    let _guard = test_guard!();
    let daemon = Daemon::start();
    // A terminal is noticed at its first input.
    let mut first = OwnDevptsTerminal::start();
    first.type_keys("x");
    let a = daemon.wait_for_session(
        "pts/0 of the first instance",
        Duration::from_secs(20),
        |s| s.tty == "pts/0" && s.server_pid == Some(first.child.id()),
    );
    let mut second = OwnDevptsTerminal::start();
    second.type_keys("y");
    let b = daemon.wait_for_session(
        "pts/0 of the second instance",
        Duration::from_secs(20),
        |s| s.tty == "pts/0" && s.server_pid == Some(second.child.id()) && s.input_count > 0,
    );
    assert_ne!(a.id, b.id, "two instances, two sessions");
    let a = daemon.session(|s| s.id == a.id).expect("the first session");

    first.type_keys("typed into the first pts/0\n");
    let typed = harness::wait_until(
        "the first instance's session to see the input",
        Duration::from_secs(10),
        || {
            daemon
                .session(|s| s.id == a.id)
                .filter(|s| s.input_count > a.input_count)
        },
    );
    let other = daemon
        .session(|s| s.id == b.id)
        .expect("the second session is still there");
    assert_eq!(
        other.input_count, b.input_count,
        "input typed into the first instance's pts/0 counted for the second's: {other:?}"
    );
    assert!(typed.input_bytes > a.input_bytes, "{typed:?}");
    drop(first);
    drop(second);
    daemon.wait_session_gone(&a.id, Duration::from_secs(15));
    daemon.wait_session_gone(&b.id, Duration::from_secs(15));
}
