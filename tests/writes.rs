//! What a session's programs write anywhere but into the terminal's master is never
//! input: not /dev/null, not pipes, not regular files.

use std::{thread, time::Duration};

use harness::{Daemon, Kind, TestUser, Tmux, test_guard};

#[test]
fn writes_to_dev_null_pipes_and_files_are_not_input() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::start();
    let tmux = Tmux::as_user(&user);
    let pane = tmux.new_session("writes", "");
    pane.wait_for_shell(Duration::from_secs(20));
    let session = daemon.wait_for_session("the local session", Duration::from_secs(20), |s| {
        s.user == user.name() && s.kind == Kind::Local
    });
    let id = session.id.clone();

    // One command line, then ~5 s of writes and no typing.
    let file = user.home().join("writes.txt");
    pane.type_line(&format!(
        "end=$(( $(date +%s) + 5 )); while [ $(date +%s) -lt $end ]; do \
         echo x >/dev/null; echo y | cat >/dev/null; echo z >> {}; done; echo wri''tes-done",
        file.display()
    ));
    // Let the typed line reach the shell before taking the baseline.
    thread::sleep(Duration::from_millis(500));
    let before = daemon.session_by_id(&id).expect("session listed");
    pane.wait_for_text("writes-done", Duration::from_secs(30));
    let after = daemon.session_by_id(&id).expect("session listed");

    let lines = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .count();
    // Hundreds on a host; under software emulation (`cargo xtask vm-test`), where every
    // fork and exec costs tens of milliseconds, as few as 9. A few prove the loop ran.
    assert!(
        lines >= 3,
        "the loop should have written to {} ({lines} lines)",
        file.display()
    );
    assert_eq!(
        after.input_count, before.input_count,
        "writes to /dev/null, a pipe and a file must not count as input: {before:?} then {after:?}"
    );
    assert!(
        after.idle_seconds >= before.idle_seconds + 3.0,
        "idle time should grow while the command runs: {before:?} then {after:?}"
    );
}
