//! The daemon in its own image, run exactly as the Kubernetes DaemonSet runs it (the
//! options come from deploy/kubernetes/daemonset.yaml): from inside the container it
//! sees and ends an idle host ssh session and an idle exec session of another
//! container, serves /readyz ready, and refuses to start, listing what is missing,
//! without a mount or a capability.
//!
//! The image is the repository's Dockerfile, `prebuilt` target, on a Debian base made
//! with debootstrap (tests/harness/containers.rs), built with podman.

use std::{
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use harness::{
    Container, DaemonSetPod, Kind, Mount, PinDir, Podman, Session, Sshd, TempDir, TestUser, Tmux,
    daemon_binary, describe, http, test_guard, wait_until_ok,
};

const APPEAR: Duration = Duration::from_secs(30);

/// Host directories for the daemon's own state, policy and pinned kernel state:
/// never the machine's.
struct HostDirs {
    dir: TempDir,
    /// Mounted as the container's bpffs, so the daemon pins into a directory the
    /// harness removes, not the node's `/sys/fs/bpf/session-monitor`.
    pins: PinDir,
}

impl HostDirs {
    fn new(policy: &str) -> Self {
        let dir = TempDir::new("daemonset");
        for sub in ["run", "log", "state", "policy"] {
            std::fs::create_dir(dir.join(sub)).expect("mkdir");
        }
        dir.write("policy/policy.toml", policy);
        let pins = PinDir::new("image");
        Self { dir, pins }
    }

    /// The host's own directory for kernel file systems (bpffs: a private directory
    /// on it); the test's for the rest.
    fn source_of(&self, mount: &Mount) -> PathBuf {
        if mount.volume == "bpffs" {
            return self.pins.path().to_path_buf();
        }
        if mount.is_hosts_own() {
            return PathBuf::from(mount.host_path.as_deref().expect("hostPath"));
        }
        let sub = match mount.volume.as_str() {
            "run" => "run",
            "log" => "log",
            "state" => "state",
            "policy" => "policy",
            other => panic!("daemonset.yaml: volume {other} is new: give it a host directory here"),
        };
        self.dir.join(sub)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/control.sock")
    }
}

/// `session-monitor --socket SOCKET ARGS...` from the host, against the daemon in the
/// container (its control socket is on a hostPath mount, as on a node).
fn cli(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(daemon_binary())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running the CLI")
}

fn sessions(socket: &Path) -> Result<Vec<Session>, String> {
    let out = cli(socket, &["sessions", "--json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn wait_for_session(socket: &Path, what: &str, matches: impl Fn(&Session) -> bool) -> Session {
    wait_until_ok(what, APPEAR, || {
        let all = sessions(socket)?;
        all.iter()
            .find(|s| matches(s))
            .cloned()
            .ok_or_else(|| format!("sessions: {}", describe(&all)))
    })
}

/// `GET path` on the container's port, from inside its network namespace (it has
/// no other), as the kubelet probes a pod on the pod's own address.
fn get_in_netns(pid: u32, port: u16, path: &str) -> Result<(u16, String), String> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| e.to_string())?;
    let path = path.to_string();
    // setns changes only the calling thread's namespace: a thread of its own.
    std::thread::spawn(move || {
        // SAFETY: setns on a descriptor we opened; it affects only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        http::get(&format!("127.0.0.1:{port}"), &path)
    })
    .join()
    .expect("the probing thread")
}

/// The daemon's container, started from the image with the DaemonSet's options.
fn run_daemon<'a>(
    podman: &'a Podman,
    pod: &DaemonSetPod,
    dirs: &HostDirs,
    image: &str,
) -> Container<'a> {
    let mut args = pod.podman_options(|m| dirs.source_of(m));
    args.push(image.to_string());
    args.extend(pod.args.iter().cloned());
    podman.run_detached("daemon", &args)
}

#[test]
fn the_daemon_in_its_image_ends_idle_host_and_container_sessions() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let podman = Podman::new();
    let pod = DaemonSetPod::load();
    assert!(
        pod.host_pid && pod.read_only_root && pod.seccomp_unconfined,
        "{pod:?}"
    );
    assert_eq!(pod.capabilities_drop, ["ALL"]);
    let image = podman.build_daemon_image();
    let other = podman.run_on_host_root("workload");
    let dirs = HostDirs::new(&format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n\
         [[rule]]\nname = \"test user\"\nusers = [\"{}\"]\nidle_timeout = \"10s\"\nwarn_before = \"3s\"\n",
        user.name()
    ));

    let started = Instant::now();
    let daemon = run_daemon(&podman, &pod, &dirs, image);
    let main = daemon.main_pid();
    let ready = wait_until_ok("the daemon in the container to be ready", APPEAR, || {
        if !daemon.is_running() {
            panic!("the daemon's container exited:\n{}", daemon.logs());
        }
        match get_in_netns(main, pod.metrics_port, "/readyz") {
            Ok((200, body)) if body.trim() == "ready" => Ok(started.elapsed()),
            Ok((status, body)) => Err(format!("{status} {body}")),
            Err(e) => Err(e),
        }
    });
    eprintln!(
        "the daemon in its container was ready {:.2} s after `podman run`",
        ready.as_secs_f64()
    );
    // Only the DaemonSet's capabilities, and a read-only root.
    let status = std::fs::read_to_string(format!("/proc/{main}/status")).expect("status");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapEff");
    // CAP_DAC_OVERRIDE 1, KILL 5, SYS_PTRACE 19, SYS_ADMIN 21, PERFMON 38, BPF 39.
    let expected: u64 = [1, 5, 19, 21, 38, 39].iter().map(|b| 1u64 << b).sum();
    assert_eq!(cap_eff, expected, "CapEff {cap_eff:#x}");

    let tmux = Tmux::new();
    let ssh = tmux.new_session(
        "ssh",
        &format!(
            "{}; echo client-exited-$?; sleep 600",
            sshd.ssh_command(&user)
        ),
    );
    let exec = tmux.new_session(
        "exec",
        &format!(
            "{}; echo exec-exited-$?; sleep 600",
            other.exec_it_line(Some((user.uid(), user.gid())), &["bash", "--norc"])
        ),
    );
    ssh.wait_for_shell(APPEAR);
    exec.wait_for_shell(APPEAR);
    let socket = dirs.socket();
    let ssh_session = wait_for_session(&socket, "the host ssh session", |s| {
        s.user == user.name() && s.kind == Kind::Ssh
    });
    // A `container` session by its holder, the exec's conmon. Its container id is
    // not attributed from inside a container: the daemon believes a cgroup name
    // only after walking the cgroup's directories from the hierarchy's root
    // (sessions/cgroup_trust.rs), and the container's own cgroup mount shows only
    // its own cgroup (README, Kubernetes).
    let exec_session = wait_for_session(&socket, "the other container's exec session", |s| {
        s.user == user.name() && s.kind == Kind::Container && s.server.as_deref() == Some("conmon")
    });
    // Warned on their terminals, then ended.
    for pane in [&ssh, &exec] {
        pane.wait_for_text("will be closed for inactivity in 3 seconds", APPEAR);
    }
    ssh.wait_for_text("client-exited-", APPEAR);
    exec.wait_for_text("exec-exited-", APPEAR);
    wait_until_ok("both sessions to be gone", APPEAR, || {
        let all = sessions(&socket)?;
        match all
            .iter()
            .find(|s| s.id == ssh_session.id || s.id == exec_session.id)
        {
            Some(s) => Err(format!("still listed: {s:?}")),
            None => Ok(()),
        }
    });
    assert!(other.is_running(), "the other container stopped");
    assert!(
        daemon.is_running(),
        "the daemon's container stopped:\n{}",
        daemon.logs()
    );
    // The audit log is on the node (a hostPath mount).
    let audit = std::fs::read_to_string(dirs.dir.join("log/audit.jsonl")).unwrap_or_default();
    for id in [&ssh_session.id, &exec_session.id] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains("\"session_end\"") && l.contains(id.as_str())),
            "no session_end for {id} in the audit log"
        );
    }
}

#[test]
fn the_daemon_in_its_image_refuses_to_start_without_a_mount_or_capability() {
    let _guard = test_guard!();
    let podman = Podman::new();
    let image = podman.build_daemon_image();
    let full = DaemonSetPod::load();
    let dirs = HostDirs::new("idle_timeout = \"none\"\nnetwork_timeout = \"none\"\n");
    // Without KILL, and without the state directory's mount (the root is read-only,
    // so the daemon cannot make one).
    let mut pod = full.clone();
    pod.capabilities_add.retain(|c| c != "KILL");
    pod.mounts.retain(|m| m.volume != "state");
    assert_eq!(pod.capabilities_add.len() + 1, full.capabilities_add.len());
    assert_eq!(pod.mounts.len() + 1, full.mounts.len());
    let state_path = &full
        .mounts
        .iter()
        .find(|m| m.volume == "state")
        .expect("a state mount")
        .path;
    let daemon = run_daemon(&podman, &pod, &dirs, image);
    let logs = wait_until_ok("the daemon to exit", APPEAR, || {
        if daemon.is_running() {
            Err("still running")
        } else {
            Ok(daemon.logs())
        }
    });
    let exit = podman.run_ok(["inspect", "-f", "{{.State.ExitCode}}", daemon.id()]);
    assert_ne!(exit, "0", "the daemon exited 0:\n{logs}");
    let refusal = logs
        .split_once("cannot start:")
        .map(|(_, list)| list)
        .unwrap_or_else(|| panic!("no `cannot start:` list:\n{logs}"));
    assert!(refusal.contains("CAP_KILL"), "CAP_KILL not listed:\n{logs}");
    assert!(
        refusal.contains(state_path.as_str()),
        "{state_path} not listed:\n{logs}"
    );
}
