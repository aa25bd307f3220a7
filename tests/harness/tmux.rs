//! An isolated tmux server (its own socket in a temporary directory), to give programs
//! a real terminal and type into it. Optionally run as a test user, which makes its
//! panes `local` sessions of that user.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    TestUser, process,
    tempdir::TempDir,
    user::login_env,
    wait::{Wait, wait_until_ok},
};

/// Every session's window size: fixed, since nothing is attached.
const WIDTH: u32 = 200;
const HEIGHT: u32 = 50;

/// A tmux server on a private socket. Dropping it kills the server and everything
/// that still runs in its panes.
pub struct Tmux {
    dir: TempDir,
    socket: PathBuf,
    /// Run as this user (name, home) instead of root.
    user: Option<(String, PathBuf)>,
    /// The server and the processes in its panes, recorded when sessions are created.
    server_pid: std::cell::Cell<Option<u32>>,
}

impl Tmux {
    /// A server run by root.
    pub fn new() -> Self {
        let dir = TempDir::new("tmux");
        let socket = dir.join("tmux.sock");
        Self {
            dir,
            socket,
            user: None,
            server_pid: Default::default(),
        }
    }

    /// A server run by `user`: its panes are that user's local sessions.
    pub fn as_user(user: &TestUser) -> Self {
        let mut tmux = Self::new();
        tmux.dir.chown(user.uid(), user.gid());
        tmux.user = Some((user.name().to_string(), user.home().to_path_buf()));
        tmux
    }

    /// `tmux -S SOCKET` as the server's user, with a clean environment and a UTF-8
    /// locale (mosh refuses to start without one).
    pub fn command(&self) -> Command {
        let (mut command, env) = match &self.user {
            Some((name, home)) => {
                let mut command = Command::new("runuser");
                command.args(["-u", name, "--", "tmux"]);
                (command, login_env(name, home))
            }
            None => (Command::new("tmux"), login_env("root", Path::new("/root"))),
        };
        command.env_clear().envs(env).arg("-S").arg(&self.socket);
        command
    }

    /// Runs a tmux command, whatever its exit status.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        process::run(self.command().args(args))
    }

    /// Runs a tmux command that must succeed; returns its output.
    pub fn run_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        process::run_ok(self.command().args(args))
    }

    /// Starts a detached session running `command` (a shell command line; the
    /// user's shell when empty) in a 200x50 window.
    pub fn new_session(&self, name: &str, command: &str) -> Pane<'_> {
        let mut args: Vec<String> =
            vec!["new-session".into(), "-d".into(), "-s".into(), name.into()];
        args.extend([
            "-x".into(),
            WIDTH.to_string(),
            "-y".into(),
            HEIGHT.to_string(),
        ]);
        args.extend(["-e".into(), "LANG=C.UTF-8".into()]);
        if let Some((_, home)) = &self.user {
            args.extend(["-c".into(), home.display().to_string()]);
        }
        if !command.is_empty() {
            args.push(command.into());
        }
        self.run_ok(&args);
        if self.server_pid.get().is_none() {
            // The server can be gone already: a session the daemon ends at once (a
            // revoked user's) takes it along, sooner than this asks in a slow VM.
            let out = self.run(["display-message", "-p", "-t", name, "#{pid}"]);
            if out.status.success() {
                let pid = String::from_utf8_lossy(&out.stdout);
                self.server_pid.set(pid.trim().parse().ok());
            }
        }
        self.pane(name)
    }

    /// The active pane of session `name`.
    pub fn pane(&self, name: &str) -> Pane<'_> {
        Pane {
            tmux: self,
            target: name.to_string(),
        }
    }

    pub fn has_session(&self, name: &str) -> bool {
        self.run(["has-session", "-t", name]).status.success()
    }

    pub fn server_pid(&self) -> Option<u32> {
        self.server_pid.get()
    }
}

impl Default for Tmux {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let Some(server) = self.server_pid.get() else {
            return;
        };
        let mut pids = process::descendants(server);
        pids.push(server);
        let _ = self.run(["kill-server"]);
        let _ = Wait::new("the tmux server to exit")
            .timeout(Duration::from_secs(3))
            .poll(Duration::from_millis(20))
            .try_until_ok(|| {
                if process::alive(server) {
                    Err("alive")
                } else {
                    Ok(())
                }
            });
        process::kill_all(&pids);
    }
}

/// A pane of a [`Tmux`] session: type into it and read its screen.
pub struct Pane<'a> {
    tmux: &'a Tmux,
    target: String,
}

impl Pane<'_> {
    /// The tmux target (the session name).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sends keys by tmux name: `["C-c"]`, `["Enter"]`, `["Up", "Enter"]`.
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.target];
        args.extend_from_slice(keys);
        self.tmux.run_ok(args);
    }

    /// Types `text` literally (no key names).
    pub fn type_text(&self, text: &str) {
        self.tmux
            .run_ok(["send-keys", "-t", &self.target, "-l", text]);
    }

    /// Types `line`, then Enter.
    pub fn type_line(&self, line: &str) {
        self.type_text(line);
        self.send_keys(&["Enter"]);
    }

    /// The visible screen and up to 1000 lines of history, wrapped lines joined.
    pub fn capture(&self) -> String {
        self.tmux.run_ok([
            "capture-pane",
            "-p",
            "-J",
            "-S",
            "-1000",
            "-t",
            &self.target,
        ])
    }

    /// Waits until the pane shows `needle`; returns the screen. On timeout the panic
    /// shows the screen.
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) -> String {
        wait_until_ok(
            format!("{needle:?} in tmux pane {}", self.target),
            timeout,
            || {
                let screen = self.capture();
                if screen.contains(needle) {
                    Ok(screen)
                } else {
                    Err(format!("screen:\n{}", screen.trim_end()))
                }
            },
        )
    }

    /// Waits until a shell in the pane runs commands: types `echo mark-N-$((6*7))`
    /// until `mark-N-42` appears (the typed line shows `$((6*7))`, only the shell
    /// prints 42). This is input to the session, so call it before measuring idle time.
    pub fn wait_for_shell(&self, timeout: Duration) {
        static MARKS: AtomicU32 = AtomicU32::new(1);
        let mark = format!("mark-{}", MARKS.fetch_add(1, Ordering::Relaxed));
        let started = Instant::now();
        // The first line may be lost while a remote shell starts, so retype it now
        // and then.
        let mut typed_at: Option<Instant> = None;
        wait_until_ok(
            format!("a shell in tmux pane {}", self.target),
            timeout,
            || {
                if typed_at.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    self.type_line(&format!("echo {mark}-$((6*7))"));
                    typed_at = Some(Instant::now());
                }
                let screen = self.capture();
                if screen.contains(&format!("{mark}-42")) {
                    Ok(())
                } else {
                    Err(format!(
                        "after {:.1} s, screen:\n{}",
                        started.elapsed().as_secs_f64(),
                        screen.trim_end()
                    ))
                }
            },
        )
    }

    fn format(&self, format: &str) -> String {
        self.tmux
            .run_ok(["display-message", "-p", "-t", &self.target, format])
            .trim()
            .to_string()
    }

    /// The pid of the pane's first process (the command it was started with).
    pub fn pid(&self) -> u32 {
        let pid = self.format("#{pane_pid}");
        pid.parse()
            .unwrap_or_else(|_| panic!("tmux pane_pid is {pid:?}"))
    }

    /// The pane's terminal, `/dev/pts/N`.
    pub fn tty(&self) -> PathBuf {
        PathBuf::from(self.format("#{pane_tty}"))
    }
}
