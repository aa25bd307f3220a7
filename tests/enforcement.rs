//! Enforcement end to end: real sessions are warned and ended on time, with the
//! warning on the user's screen, and nothing outside the session is touched.
//!
//! Every policy here limits only the test's own users: the defaults are `none`, so
//! the sessions of whoever runs the tests are never at risk.

use std::{
    thread,
    time::{Duration, Instant},
};

use harness::{Daemon, Kind, Mosh, Session, Sshd, TestUser, Tmux, process, test_guard};
use serde_json::Value;

const APPEAR: Duration = Duration::from_secs(20);
/// Upper bound on how late a warning or an end may come (the goal is 1 s; the
/// machine has two cores and runs sshd, mosh and tmux besides the daemon).
const LATE: f64 = 1.0;

/// A policy that limits only `users`.
fn policy_for(users: &[&TestUser], limits: &str) -> String {
    let names: Vec<String> = users.iter().map(|u| format!("\"{}\"", u.name())).collect();
    format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n[[rule]]\nname = \"test users\"\nusers = [{}]\n{limits}\n",
        names.join(", ")
    )
}

/// The audit records of one session, of one event type.
fn records<'a>(audit: &'a [Value], session: &Session, event: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .filter(|r| r["event"] == event && r["session_id"] == session.id.as_str())
        .collect()
}

fn number(record: &Value, key: &str) -> f64 {
    record[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {record}"))
}

#[test]
fn idle_ssh_session_is_warned_then_ended_and_nothing_else_is_touched() {
    let _guard = test_guard!();
    let idle = TestUser::new();
    let bystander = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&idle);
    sshd.authorize(&bystander);
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &[&idle],
            "idle_timeout = \"5s\"\nwarn_before = \"2s\"",
        ))
        .start();
    let tmux = Tmux::new();
    let pane = tmux.new_session(
        "idle",
        &format!(
            "{}; echo client-exited-$?; sleep 600",
            sshd.ssh_command(&idle)
        ),
    );
    let other = tmux.new_session("other", &sshd.ssh_command(&bystander));
    other.wait_for_shell(Duration::from_secs(30));
    pane.wait_for_shell(Duration::from_secs(30));
    let session = daemon.wait_for_session("the idle ssh session", APPEAR, |s| {
        s.user == idle.name() && s.kind == Kind::Ssh
    });
    let kept = daemon.wait_for_session("the other ssh session", APPEAR, |s| {
        s.user == bystander.name() && s.kind == Kind::Ssh
    });

    // The warning reaches the user's screen, then the closing line, then the client
    // exits because the connection is gone.
    pane.wait_for_text(
        "will be closed for inactivity in 2 seconds",
        Duration::from_secs(15),
    );
    pane.wait_for_text(
        "closing this session: no input for 5 seconds",
        Duration::from_secs(10),
    );
    pane.wait_for_text("client-exited-", Duration::from_secs(10));
    daemon.wait_session_gone(&session.id, Duration::from_secs(10));

    // On time: warned at 3 s of idleness, ended at 5 s.
    let audit = daemon.audit();
    let warning = records(&audit, &session, "warning");
    assert_eq!(warning.len(), 1, "one warning: {warning:?}");
    let warned_at = number(warning[0], "idle_seconds");
    assert!(
        (3.0..=3.0 + LATE).contains(&warned_at),
        "warned at {warned_at} s idle"
    );
    let end = records(&audit, &session, "session_end");
    assert_eq!(end.len(), 1, "one end: {end:?}");
    assert_eq!(end[0]["reason"], "idle");
    let ended_at = number(end[0], "idle_seconds");
    assert!(
        (5.0..=5.0 + LATE).contains(&ended_at),
        "ended at {ended_at} s idle"
    );
    for key in [
        "user",
        "uid",
        "kind",
        "tty",
        "remote",
        "rule",
        "duration_seconds",
    ] {
        assert!(
            !end[0][key].is_null(),
            "the end record lacks `{key}`: {}",
            end[0]
        );
    }
    assert_eq!(end[0]["rule"], "test users");

    // The whole session is gone: no process of the user is left.
    harness::wait_until(
        "the user's processes to exit",
        Duration::from_secs(10),
        || idle.processes().is_empty().then_some(()),
    );
    // The listener and the other user's session are untouched.
    assert!(
        process::alive(sshd.pid()),
        "the main sshd listener must survive"
    );
    assert!(
        daemon.session_by_id(&kept.id).is_some(),
        "the other session must survive"
    );
    other.wait_for_shell(Duration::from_secs(10));

    // The audit log verifies, and stops verifying once a record is edited.
    let verified = daemon.cli([
        "audit",
        "verify",
        &daemon.audit_path().display().to_string(),
    ]);
    assert!(verified.status.success(), "{verified:?}");
    let text = std::fs::read_to_string(daemon.audit_path()).unwrap();
    let tampered = text.replacen(
        &format!("\"user\":\"{}\"", idle.name()),
        "\"user\":\"root\"",
        1,
    );
    assert_ne!(text, tampered);
    let copy = daemon.dir().join("tampered.jsonl");
    std::fs::write(&copy, tampered).unwrap();
    let refused = daemon.cli(["audit", "verify", &copy.display().to_string()]);
    assert!(!refused.status.success(), "an edited log must not verify");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("edited, removed or reordered"),
        "{message}"
    );
}

#[test]
fn typing_keeps_a_session_open_and_output_does_not() {
    let _guard = test_guard!();
    let typist = TestUser::new();
    let printer = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&typist);
    sshd.authorize(&printer);
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &[&typist, &printer],
            "idle_timeout = \"4s\"\nwarn_before = \"2s\"",
        ))
        .start();
    let tmux = Tmux::new();
    let typing = tmux.new_session("typing", &sshd.ssh_command(&typist));
    let printing = tmux.new_session(
        "printing",
        &format!(
            "{}; echo client-exited; sleep 600",
            sshd.ssh_command(&printer)
        ),
    );
    typing.wait_for_shell(Duration::from_secs(30));
    printing.wait_for_shell(Duration::from_secs(30));
    printing.type_line("while true; do echo ti''ck; sleep 0.2; done");
    let typed = daemon.wait_for_session("the typing session", APPEAR, |s| s.user == typist.name());
    let printed =
        daemon.wait_for_session("the printing session", APPEAR, |s| s.user == printer.name());

    // Type every second for well past the idle limit.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(9) {
        typing.type_text("x");
        thread::sleep(Duration::from_secs(1));
    }
    assert!(
        daemon.session_by_id(&typed.id).is_some(),
        "a typing session must stay open"
    );
    printing.wait_for_text("client-exited", Duration::from_secs(5));
    let audit = daemon.audit();
    assert!(records(&audit, &typed, "session_end").is_empty());
    let end = records(&audit, &printed, "session_end");
    assert_eq!(end.len(), 1, "the printing session ends: {audit:?}");
    let ended_at = number(end[0], "idle_seconds");
    assert!(
        (4.0..=4.0 + LATE).contains(&ended_at),
        "ended at {ended_at} s idle"
    );
}

#[test]
fn mosh_sessions_end_when_idle_and_when_the_client_is_gone() {
    let _guard = test_guard!();
    let idle = TestUser::new();
    let vanished = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&idle);
    sshd.authorize(&vanished);
    let policy = format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n\
         [[rule]]\nname = \"idle\"\nusers = [\"{}\"]\nidle_timeout = \"5s\"\nwarn_before = \"2s\"\n\n\
         [[rule]]\nname = \"network\"\nusers = [\"{}\"]\nnetwork_timeout = \"6s\"\n",
        idle.name(),
        vanished.name()
    );
    let daemon = Daemon::builder().policy(&policy).start();
    let idle_mosh = Mosh::connect(&sshd, &idle);
    let gone_mosh = Mosh::connect(&sshd, &vanished);
    idle_mosh.pane().wait_for_shell(Duration::from_secs(30));
    gone_mosh.pane().wait_for_shell(Duration::from_secs(30));
    let idle_session = daemon.wait_for_session("the idle mosh session", APPEAR, |s| {
        s.user == idle.name() && s.kind == Kind::Mosh
    });
    let gone_session = daemon.wait_for_session("the other mosh session", APPEAR, |s| {
        s.user == vanished.name() && s.kind == Kind::Mosh
    });

    // Idle: warned on the screen, ended; mosh-server is gone and the client says so.
    idle_mosh
        .pane()
        .wait_for_text("will be closed for inactivity", Duration::from_secs(15));
    daemon.wait_session_gone(&idle_session.id, Duration::from_secs(15));
    let server = idle_session.server_pid.expect("mosh-server pid");
    harness::wait_until("mosh-server to exit", Duration::from_secs(10), || {
        (!process::alive(server)).then_some(())
    });
    harness::wait_until(
        "mosh-client to exit or report the server gone",
        Duration::from_secs(15),
        || {
            let screen = if idle_mosh.tmux().has_session("mosh") {
                idle_mosh.pane().capture()
            } else {
                String::new()
            };
            (idle_mosh.client_pid().is_none()
                || screen.contains("mosh is exiting")
                || screen.contains("Last contact"))
            .then_some(())
        },
    );

    // Client killed: no more datagrams; the network timeout ends the server.
    gone_mosh.kill_client();
    let killed = Instant::now();
    daemon.wait_session_gone(&gone_session.id, Duration::from_secs(20));
    let took = killed.elapsed().as_secs_f64();
    assert!(
        took >= 3.0,
        "the network timeout (6 s) must not fire early: {took:.1} s after the kill"
    );
    let audit = daemon.audit();
    let end = records(&audit, &gone_session, "session_end");
    assert_eq!(end[0]["reason"], "network", "{:?}", end);
    let server = gone_session.server_pid.expect("mosh-server pid");
    assert!(!process::alive(server), "mosh-server must be ended");
    assert_eq!(
        records(&audit, &idle_session, "session_end")[0]["reason"],
        "idle"
    );
}

#[test]
fn max_session_ends_a_session_that_is_busy_all_the_time() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &[&user],
            "max_session = \"6s\"\nwarn_before = \"2s\"",
        ))
        .start();
    let tmux = Tmux::as_user(&user);
    let pane = tmux.new_session("busy", "bash --norc");
    pane.wait_for_shell(Duration::from_secs(10));
    let session = daemon.wait_for_session("the local session", APPEAR, |s| s.user == user.name());
    assert_eq!(session.kind, Kind::Local);
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.session_by_id(&session.id).is_some() {
        assert!(
            Instant::now() < deadline,
            "the session outlived max_session"
        );
        // The tmux server may already be gone while the end is being recorded.
        let _ = tmux.run(["send-keys", "-t", "busy", "-l", "y"]);
        thread::sleep(Duration::from_millis(500));
    }
    let audit = daemon.audit();
    let warning = records(&audit, &session, "warning");
    assert_eq!(warning[0]["reason"], "lifetime");
    let end = records(&audit, &session, "session_end");
    assert_eq!(end[0]["reason"], "lifetime");
    let lived = number(end[0], "duration_seconds");
    assert!((6.0..=6.0 + LATE).contains(&lived), "ended after {lived} s");
    assert!(
        number(end[0], "idle_seconds") < 1.5,
        "it was busy: {}",
        end[0]
    );
}
