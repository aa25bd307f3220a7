//! Local terminals: a tmux server run by a fresh user makes its panes `local`
//! sessions of that user, served by tmux.

use std::{thread, time::Duration};

use harness::{Daemon, Kind, TestUser, Tmux, test_guard};

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
