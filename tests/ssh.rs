//! SSH sessions, end to end: a real sshd on loopback, a real `ssh -tt` client in tmux,
//! a fresh user, and the daemon's view of the session through `sessions --json`.

use std::{thread, time::Duration};

use harness::{Daemon, Kind, Sshd, TestUser, Tmux, process, test_guard};

/// How long a new session may take to be listed.
const APPEAR: Duration = Duration::from_secs(20);

#[test]
fn ssh_session_from_login_to_logout() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let daemon = Daemon::start();
    let tmux = Tmux::new();
    let pane = tmux.new_session("ssh", &sshd.ssh_command(&user));
    pane.wait_for_shell(Duration::from_secs(30));

    // Listed as ssh, with the user, its shell as leader and the loopback peer.
    let session = daemon.wait_for_session("the ssh session", APPEAR, |s| {
        s.user == user.name() && s.kind == Kind::Ssh
    });
    let id = session.id.clone();
    assert_eq!(session.uid, user.uid(), "{session:?}");
    assert!(
        session
            .remote
            .as_deref()
            .is_some_and(|r| r.starts_with("127.0.0.1")),
        "remote should be the loopback client: {session:?}"
    );
    assert!(
        matches!(session.server.as_deref(), Some("sshd" | "sshd-session")),
        "the server should be sshd: {session:?}"
    );
    let leader = process::get(session.leader_pid).expect("the leader is alive");
    assert_eq!(
        (leader.comm.as_str(), leader.uid),
        ("bash", user.uid()),
        "the leader should be the user's login shell: {session:?}"
    );

    // Typing resets the idle time.
    daemon.assert_typing_resets_idle(&id, &pane, 3.0, APPEAR);

    // Output of a remote loop is not input: idle time keeps growing.
    pane.type_line("while true; do echo ti''ck; sleep 0.2; done");
    let ticks = |screen: &str| screen.lines().filter(|l| l.trim() == "tick").count();
    harness::wait_until("the loop to print", Duration::from_secs(10), || {
        (ticks(&pane.capture()) >= 2).then_some(())
    });
    let printing = daemon.session_by_id(&id).expect("session listed");
    let ticks_before = ticks(&pane.capture());
    thread::sleep(Duration::from_secs(5));
    let later = daemon.session_by_id(&id).expect("session listed");
    let ticks_after = ticks(&pane.capture());
    assert!(
        ticks_after >= ticks_before + 10,
        "the loop should have kept printing ({ticks_before} then {ticks_after} lines)"
    );
    assert_eq!(
        later.input_count, printing.input_count,
        "output must not count as input: {printing:?} then {later:?}"
    );
    assert!(
        later.idle_seconds >= 4.0,
        "idle time should grow while the loop prints: {printing:?} then {later:?}"
    );

    // Logging out ends the session.
    // bash ignores a C-c that lands while it starts `sleep` (the child has bash's
    // handler until its exec, so it does not die of it): seen in slow VMs (`cargo xtask
    // vm-test`). A few presses end the loop; the extra ones only redraw the prompt.
    for _ in 0..3 {
        pane.send_keys(&["C-c"]);
        thread::sleep(Duration::from_millis(300));
    }
    pane.wait_for_shell(Duration::from_secs(10));
    pane.type_line("exit");
    daemon.wait_session_gone(&id, Duration::from_secs(15));
}
