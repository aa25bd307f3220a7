//! Ending the work, not only the terminal: a process that left the terminal's
//! session (`setsid`, `nohup`, a daemon started from the shell) ends with the
//! session when the session has a cgroup of its own, as systemd-logind gives every
//! login (`user-UID.slice/session-N.scope`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use harness::{Daemon, Kind, TestUser, process, test_guard};

/// A login scope, removed with everything in it on drop.
struct Scope {
    root: PathBuf,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Scope {
    fn new(root: &Path, user: &TestUser) -> Self {
        let dir = root.join(format!(
            "smtest.slice/user-{}.slice/session-{}.scope",
            user.uid(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Scope {
            root: root.to_path_buf(),
            dir,
            children: Vec::new(),
        }
    }

    /// Runs `command` (a shell command line) as `user` inside the scope, in a new
    /// session, with nothing of root's left in the scope.
    fn spawn(&mut self, user: &TestUser, command: &str) -> u32 {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec setpriv --reuid={} --regid={} --init-groups {command}",
            self.dir.display(),
            user.uid(),
            user.gid()
        );
        let child = Command::new("setsid")
            .args(["sh", "-c", &script])
            .env("HOME", user.home())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setsid sh");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        process::kill_all(&self.pids());
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut dir = self.dir.clone();
        while dir != self.root && dir.starts_with(&self.root) {
            if std::fs::remove_dir(&dir).is_err() {
                break;
            }
            dir.pop();
        }
    }
}

#[test]
fn processes_that_left_the_terminal_end_with_a_session_in_its_own_cgroup() {
    let _guard = test_guard!();
    let root = process::cgroup2_root();
    let user = TestUser::new();
    let policy = format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n[[rule]]\nusers = [\"{}\"]\nidle_timeout = \"5s\"\nwarn_before = \"2s\"\n",
        user.name()
    );
    let daemon = Daemon::builder().policy(&policy).start();
    let mut scope = Scope::new(&root, &user);
    // The login: a terminal (script holds the master) with a shell as its leader.
    // (script forwards its stdin, /dev/null, so the leader must not read it.)
    scope.spawn(&user, "script -qfc 'sleep 600' /dev/null");
    let session =
        daemon.wait_for_session("the session in its scope", Duration::from_secs(20), |s| {
            s.user == user.name() && s.kind == Kind::Local
        });
    // Work that left the terminal's session, as `setsid nohup job &` would.
    let escaped = scope.spawn(&user, "sleep 600");
    assert!(process::alive(escaped));

    daemon.wait_session_gone(&session.id, Duration::from_secs(20));
    harness::wait_until(
        "the escaped process to be ended",
        Duration::from_secs(10),
        || (!process::alive(escaped)).then_some(()),
    );
    let end = daemon
        .audit()
        .into_iter()
        .find(|r| r["event"] == "session_end" && r["session_id"] == session.id.as_str())
        .expect("an end record");
    assert_eq!(end["reason"], "idle");
    assert!(end["escaped_processes"].as_u64() >= Some(1), "{end}");
    assert!(
        scope.pids().is_empty(),
        "the scope is empty: {:?}",
        scope.pids()
    );
}
