//! Local terminals: a tmux server run by a fresh user makes its panes `local`
//! sessions of that user, served by tmux; a leader that switches from root to a
//! user makes its session that user's.

use std::{os::unix::fs::MetadataExt as _, thread, time::Duration};

use harness::{Daemon, Kind, TempDir, TestUser, Tmux, test_guard};

const APPEAR: Duration = Duration::from_secs(20);

#[test]
fn local_session_counts_input_not_output() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::start();
    let tmux = Tmux::as_user(&user);
    let pane = tmux.new_session("local", "");
    pane.wait_for_shell(Duration::from_secs(20));

    let session = daemon.wait_for_session("the local session", APPEAR, |s| {
        s.user == user.name() && s.kind == Kind::Local
    });
    let id = session.id.clone();
    assert_eq!(session.uid, user.uid(), "{session:?}");
    assert_eq!(session.server.as_deref(), Some("tmux"), "{session:?}");
    assert_eq!(session.server_pid, tmux.server_pid(), "{session:?}");
    assert_eq!(session.leader_pid, pane.pid(), "{session:?}");
    assert_eq!(
        Some(session.tty.as_str()),
        pane.tty().to_str().and_then(|t| t.strip_prefix("/dev/")),
        "{session:?}"
    );

    // Input (tmux writing keys into the pane) counts.
    daemon.assert_typing_resets_idle(&id, &pane, 2.0, APPEAR);

    // Output (a loop printing) does not.
    pane.type_line("while true; do echo ti''ck; sleep 0.2; done");
    let ticks = |screen: &str| screen.lines().filter(|l| l.trim() == "tick").count();
    harness::wait_until("the loop to print", Duration::from_secs(10), || {
        (ticks(&pane.capture()) >= 2).then_some(())
    });
    let printing = daemon.session_by_id(&id).expect("session listed");
    thread::sleep(Duration::from_secs(4));
    let later = daemon.session_by_id(&id).expect("session listed");
    assert!(
        ticks(&pane.capture()) >= 10,
        "the loop should keep printing"
    );
    assert_eq!(
        later.input_count, printing.input_count,
        "output must not count as input: {printing:?} then {later:?}"
    );
    assert!(
        later.idle_seconds >= 3.0,
        "idle time should grow while the loop prints: {printing:?} then {later:?}"
    );
    pane.send_keys(&["C-c"]);
}

#[test]
fn a_session_first_seen_as_root_is_its_users_once_the_leader_switches_to_them() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::builder()
        .policy(&format!(
            "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n\
             [[rule]]\nname = \"the-user\"\nusers = [\"{}\"]\n\
             idle_timeout = \"4s\"\nwarn_before = \"1s\"\n",
            user.name()
        ))
        .start();
    // The leader writes to its terminal as root (the terminal is resolved then),
    // waits for the test's go, then switches to the user in place, as a login
    // program does: same pid, same terminal.
    let dir = TempDir::new("switch");
    let go = dir.join("go");
    let tmux = Tmux::new();
    let pane = tmux.new_session(
        "switch",
        &format!(
            "echo as root; while [ ! -e {go} ]; do sleep 0.1; done; \
             exec setpriv --reuid={uid} --regid={gid} --init-groups cat",
            go = harness::shell_quote(&go.display().to_string()),
            uid = user.uid(),
            gid = user.gid()
        ),
    );
    let leader = pane.pid();
    let session = daemon.wait_for_session("the session, seen as root's", APPEAR, |s| {
        s.leader_pid == leader
    });
    assert_eq!(session.user, "root", "{session:?}");

    std::fs::write(&go, "").unwrap();
    harness::wait_until(
        "the leader to run as the user",
        Duration::from_secs(10),
        || {
            std::fs::metadata(format!("/proc/{leader}"))
                .is_ok_and(|m| m.uid() == user.uid())
                .then_some(())
        },
    );
    // The user's first keystroke tells the daemon.
    pane.type_text("x");
    let theirs = daemon.wait_for_session("the session, now the user's", APPEAR, |s| {
        s.id == session.id && s.user == user.name()
    });
    assert_eq!(theirs.uid, user.uid(), "{theirs:?}");
    let audit = daemon.audit();
    let switched: Vec<_> = audit
        .iter()
        .filter(|r| r["event"] == "session_user" && r["session_id"] == session.id.as_str())
        .collect();
    assert_eq!(switched.len(), 1, "{switched:?}");
    assert_eq!(switched[0]["user"], user.name(), "{}", switched[0]);
    assert_eq!(switched[0]["previous_user"], "root", "{}", switched[0]);
    assert_eq!(switched[0]["rule"], "the-user", "{}", switched[0]);

    // The user's rule applies: left alone, the session is ended.
    daemon.wait_session_gone(&session.id, Duration::from_secs(20));
    let end = audit_end(&daemon, &session.id);
    assert_eq!(end["reason"], "idle", "{end}");
    assert_eq!(end["user"], user.name(), "{end}");
    harness::wait_until("the leader to be ended", Duration::from_secs(10), || {
        (!harness::process::alive(leader)).then_some(())
    });
}

/// The `session_end` record of session `id`.
fn audit_end(daemon: &Daemon, id: &str) -> serde_json::Value {
    daemon
        .audit()
        .into_iter()
        .find(|r| r["event"] == "session_end" && r["session_id"] == id)
        .expect("an end record")
}
