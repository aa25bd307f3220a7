//! The daemon under test: started as a child in a temporary directory with its own
//! control socket, log, policy file, audit log and state directory (so that it never
//! touches the machine's), and queried through the real CLI.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::Duration,
};

use serde::Deserialize;
use serde_json::Value;

use crate::{pins::PinDir, process, tempdir::TempDir, tmux::Pane, wait::Wait};

/// How long the daemon may take to load its probes and answer `status`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Options that would make the daemon use the machine's files, each pointed into the
/// daemon's temporary directory unless the test passes it itself: a test must never
/// read /etc/session-monitor or write /var/log or /var/lib.
const ISOLATED: [(&str, &str); 3] = [
    ("--config", "policy.toml"),
    ("--audit-log", "audit.jsonl"),
    ("--state-dir", "state"),
];

/// The policy of a test that writes none: nothing is limited.
pub const UNLIMITED_POLICY: &str = "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\n";

/// The daemon binary: `$SESSION_MONITOR_BIN`, else this workspace's
/// `target/debug/session-monitor`.
pub fn daemon_binary() -> PathBuf {
    let path = match std::env::var_os("SESSION_MONITOR_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/session-monitor"),
    };
    assert!(
        path.is_file(),
        "daemon binary {} not found: build it (`cargo build -p session-monitor`) or set \
         SESSION_MONITOR_BIN; `cargo xtask test` does both",
        path.display()
    );
    path
}

/// The kind of a session, as `sessions --json` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ssh,
    Mosh,
    Console,
    Container,
    Local,
    /// A kind this harness does not know yet.
    #[serde(other)]
    Other,
}

/// One element of `session-monitor sessions --json`. Fields the harness does not name
/// (`container`, and whatever is added later) are kept in `extra`.
#[derive(Clone, Debug, Deserialize)]
pub struct Session {
    pub id: String,
    /// The login's first terminal, `pts/3`, `tty1`, ...; empty for a login without
    /// one (`ssh -T`, `-N`, sftp), which prints `null`.
    #[serde(deserialize_with = "null_as_empty")]
    pub tty: String,
    /// Every terminal of the login.
    #[serde(default)]
    pub terminals: Vec<String>,
    /// What the login carries: `shell`, `exec`, `subsystem`, `forwarding`.
    #[serde(default)]
    pub carries: Vec<String>,
    /// The process carrying the connection (the login ends with it).
    #[serde(default)]
    pub identity_pid: u32,
    pub kind: Kind,
    pub user: String,
    pub uid: u32,
    pub leader_pid: u32,
    pub server_pid: Option<u32>,
    /// File name of the server's executable (`sshd`, `mosh-server`, `tmux`).
    pub server: Option<String>,
    pub remote: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    pub last_input_at: Option<String>,
    /// Seconds since the last input (or since the session started).
    pub idle_seconds: f64,
    /// Seconds since the last datagram from the peer (mosh only).
    pub network_idle_seconds: Option<f64>,
    pub input_bytes: u64,
    pub input_count: u64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Options for starting a daemon; see [`Daemon::builder`].
#[must_use = "call .start() to start the daemon"]
pub struct DaemonBuilder {
    dir: TempDir,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    start_timeout: Duration,
}

impl DaemonBuilder {
    /// The daemon's temporary directory (socket, log), for files it should read, such
    /// as a configuration passed with `--config`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file into the daemon's directory and returns its path.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        self.dir.write(name, contents)
    }

    /// Writes the policy file the daemon reads (`--config DIR/policy.toml`, which is
    /// passed unless the test passes its own `--config`). Without it the daemon runs
    /// with [`UNLIMITED_POLICY`]: a test never risks the sessions of whoever runs it.
    pub fn policy(self, toml: &str) -> Self {
        self.dir.write("policy.toml", toml);
        self
    }

    /// Keeps state in `dir` instead of the daemon's temporary directory, e.g. to
    /// share it between a daemon and its restarted successor.
    pub fn state_dir(self, dir: impl AsRef<Path>) -> Self {
        self.arg("--state-dir").arg(dir.as_ref())
    }

    /// Pins the kernel state in `dir` (on bpffs) instead of a directory of this daemon's
    /// own, e.g. to hand it to a restarted successor (see [`PinDir`]).
    pub fn pin_dir(self, dir: impl AsRef<Path>) -> Self {
        self.arg("--pin-dir").arg(dir.as_ref())
    }

    /// An extra argument for `session-monitor run` (after `--socket`).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable for the daemon (e.g. `RUST_LOG=debug`).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts `session-monitor run --socket DIR/control.sock ARGS...` and waits until
    /// `status` answers. Panics, showing the daemon's log, if it does not.
    pub fn start(self) -> Daemon {
        let binary = daemon_binary();
        let socket = self.dir.join("control.sock");
        let log = self.dir.join("daemon.log");
        let log_file =
            File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let log_err = log_file.try_clone().expect("dup log file");
        let mut command = Command::new(&binary);
        command
            .arg("run")
            .arg("--socket")
            .arg(&socket)
            .args(&self.args)
            .env("NO_COLOR", "1")
            .env_remove("SESSION_MONITOR_SOCKET")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let mut paths = Vec::new();
        for (flag, default) in ISOLATED {
            let path = match flag_value(&self.args, flag) {
                Some(path) => path,
                None => {
                    let path = self.dir.join(default);
                    command.arg(flag).arg(&path);
                    path
                }
            };
            paths.push(path);
        }
        let [policy, audit_log, state_dir] = <[PathBuf; 3]>::try_from(paths).expect("3 paths");
        // The daemon watches every terminal on the machine. Unless the test wrote its
        // own policy, it gets one that limits nothing, so that the sessions of whoever
        // runs the tests are never warned or ended (the built-in defaults would).
        if !policy.exists() && flag_value(&self.args, "--config").is_none() {
            std::fs::write(&policy, UNLIMITED_POLICY)
                .unwrap_or_else(|e| panic!("writing {}: {e}", policy.display()));
        }
        // A free port, so that tests never collide with a daemon already serving
        // metrics on the default one; `status` says which port it got.
        if flag_value(&self.args, "--metrics-addr").is_none() {
            command.arg("--metrics-addr").arg("127.0.0.1:0");
        }
        // Kernel state pinned where only this daemon finds it, removed with it.
        let pins = match flag_value(&self.args, "--pin-dir") {
            Some(_) => None,
            None => {
                let pins = PinDir::new("daemon");
                command.arg("--pin-dir").arg(pins.path());
                Some(pins)
            }
        };
        // `cargo xtask vm-test` runs the suite once per backend: SESSION_MONITOR_BACKEND
        // forces it on every daemon whose test does not pass `--backend` itself.
        if let Some(backend) = forced_backend()
            && flag_value(&self.args, "--backend").is_none()
        {
            command.arg("--backend").arg(backend);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut daemon = Daemon {
            child,
            binary,
            socket,
            log,
            policy,
            audit_log,
            state_dir,
            dir: self.dir,
            _pins: pins,
        };
        let ready = Wait::new("the daemon to answer `status`")
            .timeout(self.start_timeout)
            .poll(Duration::from_millis(100))
            .try_until_ok(|| {
                if let Ok(Some(status)) = daemon.child.try_wait() {
                    return Err(format!("the daemon exited ({status})"));
                }
                let out = daemon.cli(["status", "--json"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            });
        if let Err(message) = ready {
            // Drop prints the log only while panicking; say it here, then panic.
            panic!("{message}\n{}", daemon.log_report());
        }
        daemon
    }
}

/// A running `session-monitor run`. Dropping it sends SIGTERM (then SIGKILL after
/// 10 s) and, if the test is failing, prints the daemon's log.
pub struct Daemon {
    child: Child,
    binary: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    policy: PathBuf,
    audit_log: PathBuf,
    state_dir: PathBuf,
    dir: TempDir,
    /// Dropped after the daemon stopped.
    _pins: Option<PinDir>,
}

impl Daemon {
    /// A daemon with default options, ready to answer.
    pub fn start() -> Daemon {
        Self::builder().start()
    }

    /// A daemon with extra arguments or environment:
    ///
    /// ```no_run
    /// let daemon = harness::Daemon::builder()
    ///     .policy("idle_timeout = \"5m\"\n")
    ///     .arg("--dry-run")
    ///     .env("RUST_LOG", "debug")
    ///     .start();
    /// ```
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            dir: TempDir::new("daemon"),
            args: Vec::new(),
            envs: Vec::new(),
            start_timeout: START_TIMEOUT,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The policy file the daemon was told to read (it may not exist).
    pub fn policy_path(&self) -> &Path {
        &self.policy
    }

    /// Replaces the policy file (the daemon watches it).
    pub fn write_policy(&self, toml: &str) {
        std::fs::write(&self.policy, toml)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.policy.display()));
    }

    /// Where the daemon appends its audit log.
    pub fn audit_path(&self) -> &Path {
        &self.audit_log
    }

    /// The audit log's records, one JSON value per line (empty if none yet).
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("audit log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Where the daemon keeps state across restarts (revocations).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Everything the daemon logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the daemon (SIGHUP to reload, ...).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        process::signal(self.child.id(), signal);
    }

    /// Lets other users reach the control socket (the daemon's directory is
    /// root's and private otherwise), for tests of who may use it.
    pub fn allow_others(&self) {
        self.dir.allow_traverse();
    }

    /// True until the daemon exits.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `session-monitor --socket SOCKET` as a command, to add arguments to.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--socket")
            .arg(&self.socket)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    /// Runs the CLI against this daemon (`["sessions", "--json"]`, ...), whatever
    /// its exit status.
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.args(args);
        command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()))
    }

    /// Runs the CLI, which must succeed and print JSON (pass `--json` yourself).
    pub fn cli_json<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.cli(&args);
        let shown = || {
            let words: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
            format!("`session-monitor {}`", words.join(" "))
        };
        assert!(
            out.status.success(),
            "{} failed ({}): {}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{} printed invalid JSON ({e}):\n{}",
                shown(),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `sessions --json`, typed.
    pub fn sessions(&self) -> Vec<Session> {
        let value = self.cli_json(["sessions", "--json"]);
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("unexpected `sessions --json` ({e}):\n{value:#}"))
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        self.cli_json(["status", "--json"])
    }

    /// `explain ID --json`: the rule and limits that apply to a session.
    pub fn explain(&self, id: &str) -> Value {
        self.cli_json(["explain", id, "--json"])
    }

    /// The first live session for which `matches` is true.
    pub fn session(&self, matches: impl Fn(&Session) -> bool) -> Option<Session> {
        self.sessions().into_iter().find(|s| matches(s))
    }

    /// The live session with this id.
    pub fn session_by_id(&self, id: &str) -> Option<Session> {
        self.session(|s| s.id == id)
    }

    /// Waits until a session matching `matches` is listed. On timeout the panic
    /// message names `what` and lists the sessions that were there.
    pub fn wait_for_session(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Session) -> bool,
    ) -> Session {
        Wait::new(what).timeout(timeout).until_ok(|| {
            let sessions = self.sessions();
            match sessions.iter().find(|s| matches(s)) {
                Some(found) => Ok(found.clone()),
                None => Err(format!("sessions: {}", describe(&sessions))),
            }
        })
    }

    /// Waits until session `id` has been idle for `idle` seconds, types a line on
    /// its terminal through `pane` and checks the keystrokes were counted as input
    /// and restarted the idle time. Returns the session before and after typing.
    pub fn assert_typing_resets_idle(
        &self,
        id: &str,
        pane: &Pane,
        idle: f64,
        appear: Duration,
    ) -> (Session, Session) {
        let before = self.wait_for_session(
            &format!("the session to be idle for {idle} s"),
            appear,
            |s| s.id == id && s.idle_seconds >= idle,
        );
        pane.type_line("true");
        let typed =
            self.wait_for_session("the typing to be counted", Duration::from_secs(5), |s| {
                s.id == id && s.input_count > before.input_count
            });
        assert!(
            typed.input_bytes > before.input_bytes && typed.idle_seconds < 1.5,
            "typing should count as input and restart the idle time: before {before:?}, after {typed:?}"
        );
        (before, typed)
    }

    /// Waits until session `id` is no longer listed.
    pub fn wait_session_gone(&self, id: &str, timeout: Duration) {
        Wait::new(format!("session {id} to end"))
            .timeout(timeout)
            .until_ok(|| match self.session_by_id(id) {
                Some(s) => Err(format!("still listed: {s:?}")),
                None => Ok(()),
            })
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after 10 s) and returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        process::stop_child(&mut self.child, STOP_GRACE)
    }

    /// The log, framed for a failure message.
    fn log_report(&self) -> String {
        format!(
            "----- daemon log ({}) -----\n{}----- end of daemon log -----",
            self.log.display(),
            self.log()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let status = self.stop();
        if std::thread::panicking() {
            eprintln!("daemon pid {} ended: {status:?}", self.child.id());
            eprintln!("{}", self.log_report());
        }
    }
}

/// The backend every daemon is started with, from `$SESSION_MONITOR_BACKEND`
/// (`fentry`, `tracepoint` or `auto`); `None` when unset or empty (the daemon chooses).
pub fn forced_backend() -> Option<String> {
    std::env::var("SESSION_MONITOR_BACKEND")
        .ok()
        .filter(|b| !b.is_empty())
}

/// The value given to `flag` in `args` (`--flag VALUE` or `--flag=VALUE`).
fn flag_value(args: &[OsString], flag: &str) -> Option<PathBuf> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, arg)| {
        let arg = arg.to_str()?;
        if arg == flag {
            args.get(i + 1).map(PathBuf::from)
        } else {
            arg.strip_prefix(&prefix).map(PathBuf::from)
        }
    })
}

/// One line per session, for failure messages.
pub fn describe(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return "none".to_string();
    }
    sessions
        .iter()
        .map(|s| {
            format!(
                "[{} {} {:?} user={} leader={} server={:?}/{:?} idle={} input_count={}]",
                s.id,
                s.tty,
                s.kind,
                s.user,
                s.leader_pid,
                s.server,
                s.server_pid,
                s.idle_seconds,
                s.input_count
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sessions_json() {
        let json = r#"[{"id":"0a1b2c3d4e5f","tty":"pts/3","kind":"mosh","user":"bob",
            "uid":1001,"leader_pid":42,"server_pid":41,"server":"mosh-server",
            "remote":"127.0.0.1","started_at":"2026-11-25T02:04:15Z","last_input_at":null,
            "idle_seconds":3.5,"network_idle_seconds":1.2,"input_bytes":0,"input_count":0,
            "container":{"id":"x","runtime":"docker"},"policy":"default"}]"#;
        let sessions: Vec<Session> = serde_json::from_str(json).unwrap();
        let s = &sessions[0];
        assert_eq!(s.kind, Kind::Mosh);
        assert_eq!(s.server_pid, Some(41));
        assert_eq!(s.network_idle_seconds, Some(1.2));
        assert_eq!(s.extra["container"]["runtime"], "docker");
        assert_eq!(s.extra["policy"], "default");
    }

    #[test]
    fn finds_flag_values_in_both_spellings() {
        let args: Vec<OsString> = ["--dry-run", "--config", "/a.toml", "--audit-log=/b.jsonl"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            flag_value(&args, "--config"),
            Some(PathBuf::from("/a.toml"))
        );
        assert_eq!(
            flag_value(&args, "--audit-log"),
            Some(PathBuf::from("/b.jsonl"))
        );
        assert_eq!(flag_value(&args, "--state-dir"), None);
    }

    #[test]
    fn unknown_kinds_do_not_break_parsing() {
        let kind: Kind = serde_json::from_str(r#""telnet""#).unwrap();
        assert_eq!(kind, Kind::Other);
    }
}
