//! The nested-terminal bypass: a loop inside an idle session that feeds a nested
//! multiplexer (`tmux send-keys`) must not keep anything alive. Only input on the
//! outermost terminal counts.

use std::time::{Duration, Instant};

use harness::{Daemon, Kind, Sshd, TestUser, Tmux, test_guard};

#[test]
fn a_send_keys_loop_in_a_nested_tmux_keeps_nothing_alive() {
    let _guard = test_guard!();
    let user = TestUser::new();
    // With PAM, as on real servers: the login gets an audit session id, which the
    // tmux server started in it inherits even after it daemonizes.
    let sshd = Sshd::start_with_pam();
    sshd.authorize(&user);
    let policy = format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n[[rule]]\nusers = [\"{}\"]\nidle_timeout = \"20s\"\nwarn_before = \"2s\"\n",
        user.name()
    );
    let daemon = Daemon::builder().policy(&policy).start();
    let tmux = Tmux::new();
    let pane = tmux.new_session(
        "outer",
        &format!("{}; echo client-exited; sleep 600", sshd.ssh_command(&user)),
    );
    pane.wait_for_shell(Duration::from_secs(30));
    let outer = daemon.wait_for_session("the ssh session", Duration::from_secs(20), |s| {
        s.user == user.name() && s.kind == Kind::Ssh
    });

    // Inside the ssh session: a tmux whose pane runs a loop that "types" into it
    // every half second.
    pane.type_line("tmux -L nested new-session -d -s inner 'bash --norc'");
    pane.type_line(
        "tmux -L nested send-keys -t inner 'while true; do tmux -L nested send-keys -t inner x; sleep 0.5; done' Enter",
    );
    let typed = Instant::now();
    let inner = daemon.wait_for_session("the nested tmux pane", Duration::from_secs(20), |s| {
        s.user == user.name() && s.kind == Kind::Local
    });
    assert_eq!(
        inner.extra.get("nested_in").and_then(|v| v.as_str()),
        Some(outer.id.as_str()),
        "the pane is nested in the ssh session: {inner:?}"
    );
    // The loop writes into the pane's terminal, yet its idle time keeps growing.
    harness::wait_until("the loop to feed the pane", Duration::from_secs(18), || {
        daemon
            .session_by_id(&inner.id)
            .filter(|s| s.input_count >= inner.input_count + 4)
            .map(|_| ())
    });
    let fed = daemon.session_by_id(&inner.id).expect("listed");
    assert!(
        fed.idle_seconds + 0.5 >= typed.elapsed().as_secs_f64() - 1.0,
        "the nested pane's own input must not count: {fed:?}"
    );

    // Nobody types on the outer terminal: both end, loop included.
    pane.wait_for_text("client-exited", Duration::from_secs(40));
    daemon.wait_session_gone(&outer.id, Duration::from_secs(20));
    daemon.wait_session_gone(&inner.id, Duration::from_secs(15));
    let audit = daemon.audit();
    for id in [&outer.id, &inner.id] {
        let end = audit
            .iter()
            .find(|r| r["event"] == "session_end" && r["session_id"] == id.as_str())
            .unwrap_or_else(|| panic!("an end record for {id}: {audit:?}"));
        assert_eq!(end["reason"], "idle", "{end}");
    }
    harness::wait_until(
        "the user's processes to exit",
        Duration::from_secs(15),
        || user.processes().is_empty().then_some(()),
    );
}
