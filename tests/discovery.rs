//! Sessions that exist before the daemon starts are found at start-up, and their idle
//! time starts from the terminal's last access time, not from zero.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use harness::{Daemon, Kind, TestUser, Tmux, process, test_guard};

/// Sets the terminal's access time (what the kernel updates when input is read) to
/// `seconds_ago`.
fn set_last_access(tty: &Path, seconds_ago: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let then = now - seconds_ago;
    process::run_ok(
        Command::new("touch")
            .args(["-a", "-d", &format!("@{then}")])
            .arg(tty),
    );
    let atime = std::fs::metadata(tty).unwrap().atime();
    assert_eq!(atime, then as i64, "atime of {}", tty.display());
}

#[test]
fn existing_session_keeps_its_idle_time() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let tmux = Tmux::as_user(&user);
    let pane = tmux.new_session("before", "");
    pane.wait_for_shell(Duration::from_secs(20));

    // Pretend the last keystroke was 300 s ago, or, on a machine up for less than
    // that (a VM of `cargo xtask vm-test`), shortly after boot: the daemon counts time
    // from boot, and no keystroke predates it.
    let ago = 300.min(uptime_seconds().saturating_sub(30));
    let tty = pane.tty();
    set_last_access(&tty, ago);

    let daemon = Daemon::start();
    let session = daemon.wait_for_session("the existing session", Duration::from_secs(10), |s| {
        s.user == user.name() && s.kind == Kind::Local
    });
    assert_eq!(
        Some(session.tty.as_str()),
        tty.to_str().and_then(|t| t.strip_prefix("/dev/")),
        "{session:?}"
    );
    let ago = ago as f64;
    assert!(
        (ago - 10.0..=ago + 30.0).contains(&session.idle_seconds),
        "idle time should count from the terminal's last access {ago} s ago: {session:?}"
    );
}

fn uptime_seconds() -> u64 {
    let uptime = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime");
    uptime
        .split(['.', ' '])
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/uptime: {uptime}"))
}

/// A session that prints all the time is seen by the probes (as output) before
/// start-up discovery runs; that must not cost it the idle time known from its
/// terminal, or a busy session idle for minutes would look idle since its login.
#[test]
fn existing_busy_session_keeps_its_idle_time() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let tmux = Tmux::as_user(&user);
    let pane = tmux.new_session("busy", "");
    let login = Instant::now();
    pane.wait_for_shell(Duration::from_secs(20));
    pane.type_line("while :; do echo ti''ck; sleep 0.02; done");
    pane.wait_for_text("tick", Duration::from_secs(10));

    // The shell is well older than the last keystroke (2 s ago, say).
    thread::sleep(Duration::from_secs(12).saturating_sub(login.elapsed()));
    let tty = pane.tty();
    set_last_access(&tty, 2);
    let touched = Instant::now();

    let daemon = Daemon::start();
    let session = daemon.wait_for_session("the existing session", Duration::from_secs(10), |s| {
        s.user == user.name() && s.kind == Kind::Local
    });
    let expected = 2.0 + touched.elapsed().as_secs_f64();
    assert!(
        (session.idle_seconds - expected).abs() < 3.0,
        "idle time should count from the terminal's last access ({expected:.1} s ago), \
         not from the login {:.1} s ago: {session:?}",
        login.elapsed().as_secs_f64()
    );
    pane.send_keys(&["C-c"]);
}
