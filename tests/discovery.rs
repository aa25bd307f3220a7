//! Sessions that exist before the daemon starts are found at start-up, and their idle
//! time starts from the terminal's last access time, not from zero.

use std::{
    os::unix::fs::MetadataExt as _,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use harness::{Daemon, Kind, TestUser, Tmux, process, test_guard};

#[test]
#[ignore = "daemon bug: Session::last_input_ns (session-monitor/src/sessions/table.rs) clamps \
            the tty access time seeded at start-up to the leader's start, so idle_seconds counts \
            from the shell's start while last_input_at says 300 s ago"]
fn existing_session_keeps_its_idle_time() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let tmux = Tmux::as_user(&user);
    let pane = tmux.new_session("before", "");
    pane.wait_for_shell(Duration::from_secs(20));

    // Pretend the last keystroke was 300 s ago.
    let tty = pane.tty();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let then = now - 300;
    process::run_ok(
        Command::new("touch")
            .args(["-a", "-d", &format!("@{then}")])
            .arg(&tty),
    );
    let atime = std::fs::metadata(&tty).unwrap().atime();
    assert_eq!(atime, then as i64, "atime of {}", tty.display());

    let daemon = Daemon::start();
    let session = daemon.wait_for_session("the existing session", Duration::from_secs(10), |s| {
        s.user == user.name() && s.kind == Kind::Local
    });
    assert_eq!(
        Some(session.tty.as_str()),
        tty.to_str().and_then(|t| t.strip_prefix("/dev/")),
        "{session:?}"
    );
    assert!(
        (290.0..=330.0).contains(&session.idle_seconds),
        "idle time should count from the terminal's last access 300 s ago: {session:?}"
    );
}
