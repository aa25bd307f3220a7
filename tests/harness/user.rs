//! Throw-away Unix users and groups, removed with everything they ran.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{process, wait::Wait};

/// Users are `smt<pid>u<n>`, groups `smg<pid>g<n>`: unique per test process, at most
/// 16 characters, and recognisable as leftovers once that process is gone.
pub(crate) const USER_PREFIX: &str = "smt";
pub(crate) const GROUP_PREFIX: &str = "smg";

static NEXT: AtomicU32 = AtomicU32::new(1);

/// A fresh name that is not taken yet.
fn fresh_name(prefix: &str, infix: char, taken: impl Fn(&str) -> bool) -> String {
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}{infix}{n}", std::process::id());
        assert!(name.len() <= 16, "{name} is too long for a user name");
        if !taken(&name) {
            return name;
        }
    }
}

fn user_exists(name: &str) -> bool {
    nix::unistd::User::from_name(name).ok().flatten().is_some()
}

fn group_exists(name: &str) -> bool {
    nix::unistd::Group::from_name(name).ok().flatten().is_some()
}

/// A Unix user with a home directory and bash, created for one test. Its password
/// field is `*`: locked for passwords, but sshd without PAM accepts its keys.
///
/// Dropping it kills every process it runs and deletes it with its home directory.
#[derive(Debug)]
pub struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl TestUser {
    pub fn new() -> Self {
        let name = fresh_name(USER_PREFIX, 'u', user_exists);
        process::run_ok(Command::new("useradd").args(["-m", "-s", "/bin/bash", &name]));
        // Build the value first: if usermod fails, Drop still deletes the user.
        let mut user = Self {
            name: name.clone(),
            uid: 0,
            gid: 0,
            home: PathBuf::new(),
        };
        process::run_ok(Command::new("usermod").args(["-p", "*", &name]));
        let entry = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user {name} was created but cannot be looked up"));
        user.uid = entry.uid.as_raw();
        user.gid = entry.gid.as_raw();
        user.home = entry.dir;
        user
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The primary group (a group of the same name).
    pub fn gid(&self) -> u32 {
        self.gid
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Adds the user to a supplementary group. Sessions started afterwards carry it.
    pub fn add_to_group(&self, group: &TestGroup) {
        process::run_ok(Command::new("usermod").args(["-a", "-G", group.name(), &self.name]));
    }

    /// Appends a public key (one `authorized_keys` line) to `~/.ssh/authorized_keys`.
    pub fn authorize_key(&self, public_key: &str) {
        let dir = self.home.join(".ssh");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let file = dir.join("authorized_keys");
        let mut keys = std::fs::read_to_string(&file).unwrap_or_default();
        keys.push_str(public_key.trim());
        keys.push('\n');
        std::fs::write(&file, keys).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        for path in [&dir, &file] {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    /// `program` run as this user (through `runuser`), with a clean login-like
    /// environment and a UTF-8 locale.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", &self.name, "--"])
            .arg(program)
            .env_clear()
            .envs(login_env(&self.name, &self.home));
        command
    }

    /// Pids of the user's live processes.
    pub fn processes(&self) -> Vec<u32> {
        process::all()
            .into_iter()
            .filter(|p| p.uid == self.uid && p.state != 'Z')
            .map(|p| p.pid)
            .collect()
    }

    /// SIGKILLs every process of the user until none is left.
    pub fn kill_all(&self) {
        kill_user_processes(&self.name, self.uid);
    }
}

impl Default for TestUser {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if self.uid != 0 {
            self.kill_all();
        }
        delete_user(&self.name);
    }
}

/// The environment a login shell of `user` would start with.
pub(crate) fn login_env(user: &str, home: &Path) -> Vec<(String, String)> {
    vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), home.display().to_string()),
        ("USER".into(), user.into()),
        ("LOGNAME".into(), user.into()),
        ("SHELL".into(), "/bin/bash".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TERM".into(), "xterm-256color".into()),
    ]
}

/// Kills the user's processes (pkill, repeated: a dying shell may still fork).
pub(crate) fn kill_user_processes(name: &str, uid: u32) {
    let remaining = || {
        process::all()
            .into_iter()
            .filter(|p| p.uid == uid && p.state != 'Z')
            .count()
    };
    let result = Wait::new(format!("the processes of {name} to die"))
        .timeout(Duration::from_secs(10))
        .poll(Duration::from_millis(50))
        .try_until_ok(|| {
            let _ = process::run(Command::new("pkill").args(["-KILL", "-u", name]));
            match remaining() {
                0 => Ok(()),
                n => Err(format!("{n} left")),
            }
        });
    if let Err(message) = result {
        eprintln!("warning: {message}");
    }
}

/// `userdel -r -f`, quietly (it complains about a missing mail spool).
pub(crate) fn delete_user(name: &str) {
    let out = process::run(Command::new("userdel").args(["-r", "-f", name]));
    if !out.status.success() && user_exists(name) {
        eprintln!(
            "warning: userdel {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// A Unix group created for one test (for per-group policy), deleted on drop.
#[derive(Debug)]
pub struct TestGroup {
    name: String,
    gid: u32,
}

impl TestGroup {
    pub fn new() -> Self {
        let name = fresh_name(GROUP_PREFIX, 'g', group_exists);
        process::run_ok(Command::new("groupadd").arg(&name));
        let Some(gid) = nix::unistd::Group::from_name(&name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
        else {
            let _ = process::run(Command::new("groupdel").arg(&name));
            panic!("group {name} was created but cannot be looked up");
        };
        Self { name, gid }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }
}

impl Default for TestGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = process::run(Command::new("groupdel").arg(&self.name));
    }
}
