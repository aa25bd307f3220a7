//! Terminal answers are not input: a program in the session that asks the terminal
//! questions in a loop (`printf '\033[6n'`) gets answers written into the pty master by
//! the transport, like keystrokes. They must not keep an abandoned session alive;
//! keys, a paste and a resize still must.
//!
//! For ssh the client's terminal answers (here tmux, the terminal the `ssh` client
//! runs in; sshd writes the answers into the master); for Mosh, mosh-server's own
//! terminal emulator answers. Each test checks which questions were really answered
//! (the loop logs every answer), so it cannot pass because nobody answered.

use std::{
    fs,
    os::unix::fs::{PermissionsExt, chown},
    time::{Duration, Instant},
};

use harness::{Daemon, Kind, Mosh, Pane, Session, Sshd, TestUser, Tmux, test_guard};
use serde_json::Value;

const APPEAR: Duration = Duration::from_secs(30);
/// The idle limit of the test users.
const IDLE: f64 = 8.0;
/// How late past the idle limit the end may come (the goal is 1 s; the machine is
/// small and busy).
const LATE: f64 = 3.0;

/// Asks the terminal the questions named on its command line, over and over, and
/// logs each answer (shell-quoted) to `~/answers.log`. `read` gives up after 0.4 s
/// and keeps what it got by then.
const ASK_LOOP: &str = r#"declare -A Q=(
  [cpr]='\033[6n'
  [status]='\033[5n'
  [da1]='\033[c'
  [da2]='\033[>c'
  [da3]='\033[=c'
  [background]='\033]11;?\007'
  [foreground]='\033]10;?\033\\'
  [version]='\033[>q'
  [size]='\033[18t'
  [burst]='\033[6n\033[6n\033[6n\033[6n\033[6n\033[6n\033[6n\033[6n\033[6n\033[6n\033[6n\033[6n'
)
stty -echo
while :; do
  for k in "$@"; do
    printf "${Q[$k]}"
    IFS= read -rs -t 0.4 -N 400 a
    printf '%s=%q\n' "$k" "$a" >> "$HOME/answers.log"
  done
done
"#;

fn policy(user: &TestUser) -> String {
    format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n\
         [[rule]]\nname = \"answers\"\nusers = [\"{}\"]\nidle_timeout = \"{IDLE}s\"\nwarn_before = \"2s\"\n",
        user.name()
    )
}

fn install_loop(user: &TestUser) {
    let script = user.home().join("ask.sh");
    fs::write(&script, ASK_LOOP).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    chown(&script, Some(user.uid()), Some(user.gid())).unwrap();
}

/// Waits until the session has been idle for 2 s, does `what`, and checks that the
/// idle time restarted and the input was counted.
fn resets_idle(daemon: &Daemon, id: &str, what: &str, action: impl FnOnce()) {
    let idle = daemon.wait_for_session(
        &format!("the session to be idle for 2 s before {what}"),
        Duration::from_secs(20),
        |s| s.id == id && s.idle_seconds >= 2.0,
    );
    let acted = Instant::now();
    action();
    let after = daemon.wait_for_session(
        &format!("{what} to be counted as input"),
        Duration::from_secs(10),
        |s| s.id == id && s.input_count > idle.input_count,
    );
    // Idle since the action at most (a listing can take seconds under emulation).
    let since = acted.elapsed().as_secs_f64();
    assert!(
        after.idle_seconds <= since + 0.2,
        "{what} should restart the idle time: {since:.1} s ago; before {idle:?}, after {after:?}"
    );
}

/// Keys, an arrow, a function key, a bracketed paste and a resize each count.
fn keys_count(daemon: &Daemon, id: &str, tmux: &Tmux, pane: &Pane<'_>) {
    let target = pane.target().to_string();
    resets_idle(daemon, id, "typed keys", || pane.type_text("echo typed"));
    resets_idle(daemon, id, "Enter", || pane.send_keys(&["Enter"]));
    resets_idle(daemon, id, "an arrow key", || pane.send_keys(&["Up"]));
    resets_idle(daemon, id, "a modified arrow key", || {
        pane.send_keys(&["C-Left"])
    });
    resets_idle(daemon, id, "a function key", || pane.send_keys(&["F5"]));
    resets_idle(daemon, id, "a paste", || {
        tmux.run_ok(["set-buffer", "-b", "answers", "pasted words"]);
        tmux.run_ok(["paste-buffer", "-p", "-b", "answers", "-t", &target]);
    });
    // Clears the line for what comes next.
    resets_idle(daemon, id, "C-e C-u", || pane.send_keys(&["C-e", "C-u"]));
    resets_idle(daemon, id, "a resize", || {
        tmux.run_ok(["resize-window", "-t", &target, "-x", "100", "-y", "30"]);
    });
}

/// Runs the question loop for `kinds` and checks that the session is still ended at
/// its idle limit, and that every kind of question was answered while it ran.
fn questions_keep_nothing_alive(
    daemon: &Daemon,
    session: &Session,
    user: &TestUser,
    pane: &Pane<'_>,
    kinds: &[&str],
) {
    pane.type_line(&format!("bash ~/ask.sh {}", kinds.join(" ")));
    let asked = Instant::now();
    daemon.wait_session_gone(&session.id, Duration::from_secs_f64(IDLE + LATE + 10.0));
    let took = asked.elapsed().as_secs_f64();

    // Ended for inactivity, on time, counted from the Enter that started the loop.
    let audit = daemon.audit();
    let ends: Vec<&Value> = audit
        .iter()
        .filter(|r| r["event"] == "session_end" && r["session_id"] == session.id.as_str())
        .collect();
    assert_eq!(ends.len(), 1, "one end: {audit:?}");
    assert_eq!(ends[0]["reason"], "idle", "{:?}", ends[0]);
    let ended_at = ends[0]["idle_seconds"].as_f64().expect("idle_seconds");
    assert!(
        (IDLE..=IDLE + LATE).contains(&ended_at),
        "ended at {ended_at} s idle, {took:.1} s after the loop started"
    );

    // Every kind was asked and answered. (Not "every time": under emulation an answer
    // can reach the shell's `read` in two pieces, logged under two kinds.)
    let log = fs::read_to_string(user.home().join("answers.log")).unwrap_or_default();
    eprintln!("answers:\n{log}");
    for kind in kinds {
        let answered = log
            .lines()
            .filter(|l| l.starts_with(&format!("{kind}=$'\\E")))
            .count();
        assert!(
            answered >= 1,
            "the terminal should have answered `{kind}`:\n{log}"
        );
    }
    let ignored = daemon.status()["counters"]["answers_ignored"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        ignored >= kinds.len() as u64,
        "status should count the ignored answers: {ignored}"
    );
}

#[test]
fn ssh_answers_from_the_clients_terminal_are_not_input() {
    let _guard = test_guard!();
    let user = TestUser::new();
    install_loop(&user);
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let daemon = Daemon::builder().policy(&policy(&user)).start();
    let tmux = Tmux::new();
    let pane = tmux.new_session(
        "ssh",
        &format!("{}; echo client-exited; sleep 600", sshd.ssh_command(&user)),
    );
    // tmux answers colour queries once it knows the colours.
    tmux.run_ok(["set", "-g", "window-style", "fg=#ffffff,bg=#000000"]);
    pane.wait_for_shell(Duration::from_secs(30));
    let session = daemon.wait_for_session("the ssh session", APPEAR, |s| {
        s.user == user.name() && s.kind == Kind::Ssh
    });

    keys_count(&daemon, &session.id, &tmux, &pane);
    // What tmux 3.3 answers (not `CSI = c`, nor window pixel sizes).
    questions_keep_nothing_alive(
        &daemon,
        &session,
        &user,
        &pane,
        &[
            "cpr",
            "status",
            "da1",
            "da2",
            "background",
            "foreground",
            "version",
            "size",
            "burst",
        ],
    );
    pane.wait_for_text("client-exited", Duration::from_secs(10));
}

#[test]
fn mosh_answers_from_mosh_server_are_not_input() {
    let _guard = test_guard!();
    let user = TestUser::new();
    install_loop(&user);
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let daemon = Daemon::builder().policy(&policy(&user)).start();
    let mosh = Mosh::connect(&sshd, &user);
    let pane = mosh.pane();
    pane.wait_for_shell(Duration::from_secs(30));
    let session = daemon.wait_for_session("the mosh session", APPEAR, |s| {
        s.user == user.name() && s.kind == Kind::Mosh
    });

    keys_count(&daemon, &session.id, mosh.tmux(), &pane);
    // What mosh-server's emulator answers.
    questions_keep_nothing_alive(
        &daemon,
        &session,
        &user,
        &pane,
        &["cpr", "status", "da1", "da2", "burst"],
    );
    // mosh-server is gone with the session.
    let server = session.server_pid.expect("mosh-server pid");
    harness::wait_until("mosh-server to exit", Duration::from_secs(10), || {
        (!harness::process::alive(server)).then_some(())
    });
}
