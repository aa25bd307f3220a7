//! A session is a login, not a terminal (issue 11): `ssh -T`, `ssh -N` and sftp
//! connections are logins — listed with what they carry, idle-ended,
//! lifetime-ended, revoked — and ending a login ends every process forked from it,
//! also where the login has no logind scope (this sshd runs with `UsePAM no`):
//! `setsid nohup`, a double-forked daemon, a tmux server. Nothing of another user
//! and never the sshd listener is touched.

use std::{
    io::Write as _,
    net::{Ipv4Addr, TcpListener},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use harness::{Daemon, Kind, Session, Sshd, TempDir, TestUser, Tmux, process, test_guard};
use serde_json::Value;

/// How long a new login may take to be listed (the /proc sweep runs every 2 s).
const APPEAR: Duration = Duration::from_secs(30);
/// Generous bounds for ends on a loaded two-core machine.
const END: Duration = Duration::from_secs(60);

/// An ssh (or sftp) client run by the test, killed on drop.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Client {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdin = child.stdin.take();
        Client { child, stdin }
    }

    /// Sends a line to the remote shell (its input is a pipe).
    fn line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the client's stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to the ssh client: {e}"));
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stdin.take();
        process::stop_child(&mut self.child, Duration::from_secs(2));
    }
}

/// `ssh -T user@127.0.0.1 [args...]` (an interactive shell over pipes without args).
fn ssh(sshd: &Sshd, user: &TestUser, options: &[&str], command: &[&str]) -> Client {
    Client::spawn(ssh_command(sshd, user, options, command))
}

/// The command [`ssh`] runs, for a test that sets more on it.
fn ssh_command(sshd: &Sshd, user: &TestUser, options: &[&str], command: &[&str]) -> Command {
    let mut words = sshd.ssh_base_args();
    words.insert(1, "-T".into());
    words.extend(options.iter().map(|s| s.to_string()));
    words.push(format!("{}@127.0.0.1", user.name()));
    words.extend(command.iter().map(|s| s.to_string()));
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    cmd
}

/// `sftp` to the same server (batch commands come on stdin).
fn sftp(sshd: &Sshd, user: &TestUser) -> Client {
    let mut cmd = Command::new("sftp");
    let mut words = sshd.ssh_base_args();
    words.remove(0);
    for w in &mut words {
        if w == "-p" {
            *w = "-P".into();
        }
    }
    cmd.args(&words).arg(format!("{}@127.0.0.1", user.name()));
    Client::spawn(cmd)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn policy_for(user: &TestUser, rule: &str) -> String {
    format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n[[rule]]\nusers = [\"{}\"]\n{rule}\n",
        user.name()
    )
}

fn wait_login(daemon: &Daemon, user: &TestUser, carries: &str) -> Session {
    daemon.wait_for_session(
        &format!(
            "a terminal-less ssh login of {} carrying {carries}",
            user.name()
        ),
        APPEAR,
        |s| {
            s.user == user.name()
                && s.kind == Kind::Ssh
                && s.terminals.is_empty()
                && s.carries.iter().any(|c| c == carries)
        },
    )
}

fn end_record(daemon: &Daemon, id: &str) -> Value {
    daemon
        .audit()
        .into_iter()
        .find(|r| r["event"] == "session_end" && r["session_id"] == id)
        .unwrap_or_else(|| panic!("no end record for {id}"))
}

/// Pids of the user's processes whose command line contains `needle`.
fn user_processes_with(user: &TestUser, needle: &str) -> Vec<u32> {
    user.processes()
        .into_iter()
        .filter(|&pid| process::cmdline(pid).is_some_and(|c| c.contains(needle)))
        .collect()
}

fn wait_gone(what: &str, pids: &[u32]) {
    harness::wait_until(what, Duration::from_secs(20), || {
        pids.iter().all(|&p| !process::alive(p)).then_some(())
    });
}

/// Another user's process, which nothing here may touch.
/// Another user's process, which nothing the test's user does may end; killed on drop.
struct Bystander {
    _other: TestUser,
    child: Child,
}

impl Bystander {
    fn start() -> Self {
        let other = TestUser::new();
        let child = other
            .command("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("the other user's sleep");
        Self {
            _other: other,
            child,
        }
    }

    /// Ending the user's logins left the sshd listener and this process alone.
    fn assert_untouched(&mut self, sshd: &Sshd) {
        assert!(process::alive(sshd.pid()), "the sshd listener survives");
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "another user's process is untouched"
        );
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_idle_ssh_t_shell_is_ended_at_its_deadline_with_its_bash() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"8s\"\nwarn_before = \"3s\"",
        ))
        .start();
    let mut client = ssh(&sshd, &user, &[], &[]);
    let login = wait_login(&daemon, &user, "shell");
    assert_eq!(login.tty, "", "no terminal: {login:?}");
    let bash = harness::wait_until("the login's bash", Duration::from_secs(10), || {
        let pids = process::by_comm("bash", Some(user.uid()));
        (!pids.is_empty()).then_some(pids)
    });

    // What the transport writes into the shell's pipe is input: it resets idle.
    let idle = daemon.wait_for_session("the login to be idle for 3 s", APPEAR, |s| {
        s.id == login.id && s.idle_seconds >= 3.0
    });
    client.line("echo typed");
    let typed = daemon.wait_for_session("the input to be counted", Duration::from_secs(5), |s| {
        s.id == login.id && s.input_count > idle.input_count
    });
    assert!(
        typed.idle_seconds < 2.0,
        "idle time should restart with input: before {idle:?}, after {typed:?}"
    );

    daemon.wait_session_gone(&login.id, END);
    let end = end_record(&daemon, &login.id);
    assert_eq!(end["reason"], "idle", "{end}");
    assert_eq!(end["tty"], Value::Null, "{end}");
    let warning = daemon
        .audit()
        .into_iter()
        .find(|r| r["event"] == "warning" && r["session_id"] == login.id.as_str())
        .expect("a warning record");
    assert_eq!(warning["on_screen"], false, "{warning}");
    wait_gone("the login's bash to be ended", &bash);
    harness::wait_until("the ssh client to exit", Duration::from_secs(20), || {
        client.exited().then_some(())
    });
    assert!(process::alive(sshd.pid()), "the sshd listener survives");
}

#[test]
fn forwarding_and_sftp_logins_are_listed_and_ended_by_max_session() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let mut bystander = Bystander::start();
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "max_session = \"30s\"\nwarn_before = \"2s\"",
        ))
        .start();
    let forward = format!("{}:127.0.0.1:{}", free_port(), sshd.port());
    let _tunnel = ssh(&sshd, &user, &["-N", "-L", &forward], &[]);
    let _sftp = sftp(&sshd, &user);
    let tunnel = wait_login(&daemon, &user, "forwarding");
    let files = wait_login(&daemon, &user, "subsystem");
    assert_ne!(tunnel.id, files.id);
    assert_eq!(tunnel.carries, ["forwarding"], "{tunnel:?}");
    let explain = daemon.explain(&files.id);
    assert_eq!(
        explain["session"]["carries"],
        serde_json::json!(["subsystem"]),
        "{explain}"
    );
    assert_eq!(explain["next"], "warn", "{explain}");

    for login in [&tunnel, &files] {
        daemon.wait_session_gone(&login.id, END);
        let end = end_record(&daemon, &login.id);
        assert_eq!(end["reason"], "lifetime", "{end}");
        assert!(!process::alive(login.identity_pid), "{end}");
    }
    wait_gone("every process of the user", &user_processes_with(&user, ""));
    bystander.assert_untouched(&sshd);
}

#[test]
fn revoke_ends_forwarding_and_sftp_logins() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let mut bystander = Bystander::start();
    let daemon = Daemon::builder().policy(&policy_for(&user, "")).start();
    let forward = format!("{}:127.0.0.1:{}", free_port(), sshd.port());
    let _tunnel = ssh(&sshd, &user, &["-N", "-L", &forward], &[]);
    let _sftp = sftp(&sshd, &user);
    let mut exec = ssh(&sshd, &user, &[], &["sleep", "900"]);
    let tunnel = wait_login(&daemon, &user, "forwarding");
    let files = wait_login(&daemon, &user, "subsystem");
    let command = wait_login(&daemon, &user, "exec");

    let out = daemon.cli(["revoke", user.name()]);
    assert!(out.status.success(), "{out:?}");
    for login in [&tunnel, &files, &command] {
        daemon.wait_session_gone(&login.id, END);
        assert_eq!(end_record(&daemon, &login.id)["reason"], "revoked");
    }
    harness::wait_until(
        "every process of the revoked user to end",
        Duration::from_secs(20),
        || user.processes().is_empty().then_some(()),
    );
    harness::wait_until("the exec client to exit", Duration::from_secs(20), || {
        exec.exited().then_some(())
    });
    bystander.assert_untouched(&sshd);
}

/// Starts, from the login's shell, work that leaves its session and its parent:
/// `setsid nohup`, a double-forked daemon, a tmux server. Returns their pids.
fn escape_from(client: &mut Client, user: &TestUser) -> Vec<u32> {
    client.line("setsid nohup sleep 1001 >/dev/null 2>&1 &");
    client.line("sh -c 'sleep 1002 >/dev/null 2>&1 &' &");
    client.line("tmux -S \"$HOME/escape.sock\" new-session -d 'sleep 1003'");
    let mut pids = Vec::new();
    for needle in ["sleep 1001", "sleep 1002", "sleep 1003"] {
        let found = harness::wait_until(
            format!("`{needle}` to run"),
            Duration::from_secs(15),
            || {
                let p = user_processes_with(user, needle);
                (!p.is_empty()).then_some(p)
            },
        );
        pids.extend(found);
    }
    pids.extend(user_processes_with(user, "escape.sock"));
    pids
}

#[test]
fn escaped_processes_end_with_the_idle_end_of_a_login_without_logind_scope() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let mut bystander = Bystander::start();
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"10s\"\nwarn_before = \"2s\"",
        ))
        .start();
    let mut client = ssh(&sshd, &user, &[], &[]);
    let login = wait_login(&daemon, &user, "shell");
    let escaped = escape_from(&mut client, &user);

    daemon.wait_session_gone(&login.id, END);
    assert_eq!(end_record(&daemon, &login.id)["reason"], "idle");
    wait_gone("the escaped processes to be ended", &escaped);
    bystander.assert_untouched(&sshd);
}

#[test]
fn escaped_processes_end_with_revoke() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let mut bystander = Bystander::start();
    let daemon = Daemon::builder().policy(&policy_for(&user, "")).start();
    let mut client = ssh(&sshd, &user, &[], &[]);
    let login = wait_login(&daemon, &user, "shell");
    let escaped = escape_from(&mut client, &user);

    let out = daemon.cli(["revoke", user.name()]);
    assert!(out.status.success(), "{out:?}");
    daemon.wait_session_gone(&login.id, END);
    assert_eq!(end_record(&daemon, &login.id)["reason"], "revoked");
    wait_gone("the escaped processes to be ended", &escaped);
    bystander.assert_untouched(&sshd);
}

#[test]
fn terminals_multiplexed_on_one_connection_are_one_login() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let daemon = Daemon::builder().policy(&policy_for(&user, "")).start();
    let dir = TempDir::new("control");
    let control = format!("ControlPath={}", dir.join("master").display());
    let with_control = |extra: &[&str]| {
        let mut words = sshd.ssh_args(&user);
        let destination = words.pop().expect("destination");
        for option in extra.iter().copied().chain([control.as_str()]) {
            words.extend(["-o".to_string(), option.to_string()]);
        }
        words.push(destination);
        harness::shell_join(words)
    };
    let tmux = Tmux::new();
    let first = tmux.new_session("master", &with_control(&["ControlMaster=yes"]));
    first.wait_for_shell(Duration::from_secs(30));
    let one = daemon.wait_for_session("the first terminal's login", APPEAR, |s| {
        s.user == user.name() && s.terminals.len() == 1
    });
    let second = tmux.new_session("channel", &with_control(&["ControlMaster=no"]));
    second.wait_for_shell(Duration::from_secs(30));
    let both = daemon.wait_for_session("one login with two terminals", APPEAR, |s| {
        s.id == one.id && s.terminals.len() == 2
    });
    assert_eq!(both.tty, both.terminals[0], "{both:?}");
    assert_eq!(
        daemon
            .sessions()
            .iter()
            .filter(|s| s.user == user.name())
            .count(),
        1,
        "one login: {:?}",
        daemon.sessions()
    );

    // Ending the login ends both terminals' shells.
    let out = daemon.cli(["revoke", user.name()]);
    assert!(out.status.success(), "{out:?}");
    daemon.wait_session_gone(&one.id, END);
    harness::wait_until(
        "every process of the user to end",
        Duration::from_secs(20),
        || user.processes().is_empty().then_some(()),
    );
}

#[test]
fn a_login_without_terminal_is_found_at_start_and_keeps_its_id() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let mut first = Daemon::builder().policy(&policy_for(&user, "")).start();
    let _client = ssh(&sshd, &user, &[], &["sleep", "900"]);
    let before = wait_login(&first, &user, "exec");
    first.stop();

    // Found in /proc by the next daemon, under the same id.
    let second = Daemon::builder().policy(&policy_for(&user, "")).start();
    let after = wait_login(&second, &user, "exec");
    assert_eq!(after.id, before.id, "{before:?} then {after:?}");
    assert_eq!(after.identity_pid, before.identity_pid);
    let start = second
        .audit()
        .into_iter()
        .find(|r| r["event"] == "session_start" && r["session_id"] == after.id.as_str())
        .expect("a start record");
    assert_eq!(start["how"], "discovered", "{start}");
}

/// A shell that asks a forwarded agent something every second (`ssh-add -l` in a
/// loop) makes its sshd write the agent's answers into a socket the shell's program
/// connected to: the client's agent answers by itself, so that is not input either.
#[test]
fn an_ssh_t_shell_polling_its_forwarded_agent_is_ended_as_idle() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let dir = TempDir::new("agent");
    let agent_socket = dir.join("agent.sock");
    let mut agent = Command::new("ssh-agent");
    agent.arg("-D").arg("-a").arg(&agent_socket);
    let _agent = Client::spawn(agent);
    harness::wait_until("the ssh agent to listen", Duration::from_secs(10), || {
        agent_socket.exists().then_some(())
    });
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"8s\"\nwarn_before = \"3s\"",
        ))
        .start();
    let mut ssh = ssh_command(&sshd, &user, &["-A"], &[]);
    ssh.env("SSH_AUTH_SOCK", &agent_socket);
    let mut client = Client::spawn(ssh);
    let login = wait_login(&daemon, &user, "shell");
    let status = user.home().join("agent.status");
    client.line("while :; do ssh-add -l >/dev/null 2>&1; echo $? > ~/agent.status; sleep 1; done");
    // `ssh-add -l` exits 1 for an agent without keys, 2 when it reaches none.
    harness::wait_until(
        "the shell to reach the agent",
        Duration::from_secs(20),
        || (std::fs::read_to_string(&status).ok()?.trim() == "1").then_some(()),
    );

    daemon.wait_session_gone(&login.id, END);
    assert_eq!(end_record(&daemon, &login.id)["reason"], "idle");
}
