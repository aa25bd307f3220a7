//! The policy: which rule applies to whom, dry-run, reloads and validation errors.

use std::{thread, time::Duration};

use harness::{Daemon, Kind, TestGroup, TestUser, Tmux, test_guard};
use nix::sys::signal::Signal;
use serde_json::Value;

const APPEAR: Duration = Duration::from_secs(20);

fn local_session(daemon: &Daemon, tmux: &Tmux, user: &TestUser) -> harness::Session {
    let pane = tmux.new_session("s", "bash --norc");
    pane.wait_for_shell(Duration::from_secs(10));
    daemon.wait_for_session("the local session", APPEAR, |s| {
        s.user == user.name() && s.kind == Kind::Local
    })
}

#[test]
fn user_group_and_kind_rules_pick_the_right_limits() {
    let _guard = test_guard!();
    let group = TestGroup::new();
    let in_group = TestUser::new();
    in_group.add_to_group(&group);
    let named = TestUser::new();
    named.add_to_group(&group);
    let exempt = TestUser::new();
    let plain = TestUser::new();
    let policy = format!(
        r#"idle_timeout = "none"
network_timeout = "none"

[[rule]]
name = "local terminals"
kinds = ["local"]
idle_timeout = "1h"

[[rule]]
name = "the group"
groups = ["{group}"]
idle_timeout = "30m"
max_session = "12h"

[[rule]]
name = "one user"
users = ["{named}"]
idle_timeout = "10m"

[[rule]]
name = "robots"
users = ["{exempt}"]
exempt = true
"#,
        group = group.name(),
        named = named.name(),
        exempt = exempt.name()
    );
    let daemon = Daemon::builder().policy(&policy).start();
    let expect = [
        (&plain, "local terminals", "1h", "none", false),
        (&in_group, "the group", "30m", "12h", false),
        // The user rule wins on idle time; the group's session limit still applies.
        (&named, "one user", "10m", "12h", false),
        // Exempt: the other rules still show what would apply, but nothing ends it.
        (&exempt, "robots", "1h", "none", true),
    ];
    for (user, rule, idle, max, is_exempt) in expect {
        let tmux = Tmux::as_user(user);
        let session = local_session(&daemon, &tmux, user);
        let explained = daemon.explain(&session.id);
        assert_eq!(explained["rule"], rule, "{}: {explained}", user.name());
        assert_eq!(
            explained["limits"]["idle_timeout"],
            idle,
            "{}: {explained}",
            user.name()
        );
        assert_eq!(
            explained["limits"]["max_session"],
            max,
            "{}: {explained}",
            user.name()
        );
        assert_eq!(
            explained["limits"]["exempt"],
            is_exempt,
            "{}: {explained}",
            user.name()
        );
        let next = if is_exempt { "none" } else { "warn" };
        assert_eq!(explained["next"], next, "{explained}");
        // The text form names the rule too.
        let text = daemon.cli(["explain", &session.id]);
        assert!(String::from_utf8_lossy(&text.stdout).contains(rule));
    }
}

#[test]
fn dry_run_ends_nothing_and_logs_the_would_be_ends() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let policy = format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\n\n[[rule]]\nusers = [\"{}\"]\nidle_timeout = \"3s\"\nwarn_before = \"1s\"\n",
        user.name()
    );
    let daemon = Daemon::builder().policy(&policy).arg("--dry-run").start();
    let tmux = Tmux::as_user(&user);
    let pane = tmux.new_session("s", "bash --norc");
    pane.wait_for_shell(Duration::from_secs(10));
    let session = daemon.wait_for_session("the session", APPEAR, |s| s.user == user.name());
    harness::wait_until(
        "a would-be end in the audit log",
        Duration::from_secs(15),
        || {
            daemon
                .audit()
                .iter()
                .any(|r| r["event"] == "would_end" && r["session_id"] == session.id.as_str())
                .then_some(())
        },
    );
    thread::sleep(Duration::from_secs(2));
    assert!(
        daemon.session_by_id(&session.id).is_some(),
        "dry-run must not end the session"
    );
    assert!(
        process_alive(session.leader_pid),
        "dry-run must not signal the shell"
    );
    let audit = daemon.audit();
    assert!(
        !audit
            .iter()
            .any(|r| r["event"] == "session_end" && r["session_id"] == session.id.as_str())
    );
    let warning = audit
        .iter()
        .find(|r| r["event"] == "warning" && r["session_id"] == session.id.as_str())
        .expect("a would-be warning");
    assert_eq!(warning["dry_run"], true);
    // Nothing was written to the terminal either.
    assert!(
        !pane.capture().contains("session-monitor"),
        "{}",
        pane.capture()
    );
    // Reported once per deadline, not in a loop.
    let would = audit.iter().filter(|r| r["event"] == "would_end").count();
    assert_eq!(would, 1, "{audit:?}");
}

fn process_alive(pid: u32) -> bool {
    harness::process::alive(pid)
}

fn reloads(daemon: &Daemon) -> (u64, u64) {
    let status = daemon.status();
    (
        status["policy_reloads_ok"].as_u64().unwrap(),
        status["policy_reloads_rejected"].as_u64().unwrap(),
    )
}

#[test]
fn a_bad_reload_keeps_the_last_good_policy() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let good = |idle: &str| {
        format!(
            "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\n\n[[rule]]\nname = \"rule {idle}\"\nusers = [\"{}\"]\nidle_timeout = \"{idle}\"\n",
            user.name()
        )
    };
    let daemon = Daemon::builder().policy(&good("1h")).start();
    let tmux = Tmux::as_user(&user);
    let session = local_session(&daemon, &tmux, &user);
    assert_eq!(daemon.explain(&session.id)["limits"]["idle_timeout"], "1h");

    // A file change with an error: rejected, counted, logged; the old rule stays.
    daemon.write_policy(&format!("{}idle_timout = \"5m\"\n", good("2h")));
    harness::wait_until(
        "the bad reload to be rejected",
        Duration::from_secs(10),
        || (reloads(&daemon).1 >= 1).then_some(()),
    );
    assert_eq!(daemon.explain(&session.id)["limits"]["idle_timeout"], "1h");
    let rejected: Vec<Value> = daemon
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "policy_reload" && r["result"] == "rejected")
        .collect();
    let error = rejected[0]["error"].as_str().unwrap();
    assert!(
        error.contains(":8:") && error.contains("idle_timout"),
        "{error}"
    );

    // A good file applies at once, to live sessions too.
    daemon.write_policy(&good("2h"));
    harness::wait_until("the good reload", Duration::from_secs(10), || {
        (daemon.explain(&session.id)["limits"]["idle_timeout"] == "2h").then_some(())
    });

    // SIGHUP reloads too, even an unchanged file.
    let before = reloads(&daemon).0;
    daemon.signal(Signal::SIGHUP);
    harness::wait_until("the SIGHUP reload", Duration::from_secs(10), || {
        (reloads(&daemon).0 > before).then_some(())
    });
}

#[test]
fn check_config_names_file_line_and_key() {
    let _guard = test_guard!();
    let daemon = Daemon::start();
    let file = daemon.dir().join("bad.toml");
    std::fs::write(
        &file,
        "idle_timeout = \"15m\"\n\n[[rule]]\nkinds = [\"ssh\", \"telnet\"]\nidle_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = daemon.cli(["check-config", &file.display().to_string()]);
    assert!(!out.status.success());
    let errors = String::from_utf8_lossy(&out.stderr);
    let name = file.display().to_string();
    assert!(
        errors.contains(&format!("{name}:4: `kinds`")) && errors.contains("telnet"),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{name}:5: `idle_timeout`")) && errors.contains("soon"),
        "{errors}"
    );

    std::fs::write(&file, "idle_timeout = \"15m\"\nwarn_before = \"30s\"\n").unwrap();
    let out = daemon.cli(["check-config", &file.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
}
