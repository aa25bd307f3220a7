//! Revoking access: every live session of a user ends at once, on every kind of
//! session, other users are untouched, and the user stays out.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use harness::{Daemon, Kind, Mosh, Session, Sshd, TempDir, TestGroup, TestUser, Tmux, test_guard};
use serde_json::Value;

const APPEAR: Duration = Duration::from_secs(20);
/// The goal is 1 s; this bound is generous for a loaded two-core machine.
const REVOKE_BOUND: Duration = Duration::from_secs(3);

/// One user's ssh, mosh and local sessions.
struct Sessions<'a> {
    _tmux: Tmux,
    _local: Tmux,
    _mosh: Mosh,
    ids: Vec<(Kind, String)>,
    user: &'a TestUser,
}

fn open_all<'a>(daemon: &Daemon, sshd: &Sshd, user: &'a TestUser) -> Sessions<'a> {
    let tmux = Tmux::new();
    let ssh = tmux.new_session("ssh", &sshd.ssh_command(user));
    ssh.wait_for_shell(Duration::from_secs(30));
    let mosh = Mosh::connect(sshd, user);
    mosh.pane().wait_for_shell(Duration::from_secs(30));
    let local = Tmux::as_user(user);
    local
        .new_session("local", "bash --norc")
        .wait_for_shell(Duration::from_secs(10));
    let mut ids = Vec::new();
    for kind in [Kind::Ssh, Kind::Mosh, Kind::Local] {
        let what = format!("{kind:?} session of {}", user.name());
        let s = daemon.wait_for_session(&what, APPEAR, |s| s.user == user.name() && s.kind == kind);
        ids.push((kind, s.id));
    }
    Sessions {
        _tmux: tmux,
        _local: local,
        _mosh: mosh,
        ids,
        user,
    }
}

fn live(daemon: &Daemon, ids: &[(Kind, String)]) -> Vec<Session> {
    daemon
        .sessions()
        .into_iter()
        .filter(|s| ids.iter().any(|(_, id)| *id == s.id))
        .collect()
}

fn ended_revoked(audit: &[Value], id: &str) -> bool {
    audit
        .iter()
        .any(|r| r["event"] == "session_end" && r["session_id"] == id && r["reason"] == "revoked")
}

#[test]
fn revoking_a_user_ends_all_their_sessions_at_once_and_keeps_them_out() {
    let _guard = test_guard!();
    let revoked = TestUser::new();
    let kept = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&revoked);
    sshd.authorize(&kept);
    let daemon = Daemon::start();
    let theirs = open_all(&daemon, &sshd, &revoked);
    let others = open_all(&daemon, &sshd, &kept);

    let started = Instant::now();
    let out = daemon.cli(["revoke", revoked.name(), "--reason", "left the company"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    let ended: usize = said
        .strip_prefix("revoked; ")
        .and_then(|rest| rest.strip_suffix(" live session(s) being ended\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer to `revoke`: {said:?}"));
    assert!(ended >= theirs.ids.len(), "{said:?}");
    harness::wait_until(
        "all three sessions of the revoked user to end",
        REVOKE_BOUND,
        || live(&daemon, &theirs.ids).is_empty().then_some(()),
    );
    let took = started.elapsed();
    eprintln!(
        "revocation ended ssh, mosh and local sessions in {} ms",
        took.as_millis()
    );

    let audit = daemon.audit();
    for (kind, id) in &theirs.ids {
        assert!(
            ended_revoked(&audit, id),
            "{kind:?} session {id} should end as revoked"
        );
    }
    // The other user's three sessions are untouched.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        live(&daemon, &others.ids).len(),
        3,
        "the other user's sessions must survive"
    );
    assert_eq!(others.user.name(), kept.name());
    let revoke = audit
        .iter()
        .find(|r| r["event"] == "revoke")
        .expect("a revoke record");
    assert_eq!(revoke["caller_uid"], 0);
    assert_eq!(revoke["reason"], "left the company");

    // A new login by the revoked user is ended at its first keystroke, before
    // the keystroke can run anything.
    let marker = TempDir::new("revoked-marker");
    marker.chown(revoked.uid(), revoked.gid());
    let witness = marker.join("typed");
    let tmux = Tmux::new();
    let pane = tmux.new_session(
        "again",
        &format!(
            "{}; echo client-exited; sleep 600",
            sshd.ssh_command(&revoked)
        ),
    );
    pane.type_line(&format!("touch {}", witness.display()));
    pane.wait_for_text("client-exited", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!witness.exists(), "the revoked user's input must never run");
    harness::wait_until(
        "the revoked user to have no processes",
        Duration::from_secs(10),
        || revoked.processes().is_empty().then_some(()),
    );

    // Lifting it lets the user back in.
    let out = daemon.cli(["unrevoke", revoked.name()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "revocation lifted\n");
    let listed = daemon.cli_json(["revocations", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}

#[test]
fn revocation_from_the_policy_file_applies_on_reload() {
    let _guard = test_guard!();
    let revoked = TestUser::new();
    let kept = TestUser::new();
    let base = "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\n";
    let daemon = Daemon::builder().policy(base).start();
    let theirs = Tmux::as_user(&revoked);
    theirs
        .new_session("s", "bash --norc")
        .wait_for_shell(Duration::from_secs(10));
    let ours = Tmux::as_user(&kept);
    ours.new_session("s", "bash --norc")
        .wait_for_shell(Duration::from_secs(10));
    let gone = daemon.wait_for_session("the revoked user's session", APPEAR, |s| {
        s.user == revoked.name()
    });
    let stays = daemon.wait_for_session("the other session", APPEAR, |s| s.user == kept.name());

    let started = Instant::now();
    daemon.write_policy(&format!("{base}revoked_users = [\"{}\"]\n", revoked.name()));
    daemon.wait_session_gone(&gone.id, Duration::from_secs(10));
    eprintln!(
        "policy revocation took {} ms (including the reload debounce)",
        started.elapsed().as_millis()
    );
    assert!(ended_revoked(&daemon.audit(), &gone.id));
    assert!(daemon.session_by_id(&stays.id).is_some());
    let listed = daemon.cli_json(["revocations", "--json"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["source"] == "policy" && r["target"]["name"] == revoked.name()),
        "{listed}"
    );
}

#[test]
fn a_revocation_survives_a_daemon_restart() {
    let _guard = test_guard!();
    let revoked = TestUser::new();
    let state = TempDir::new("state");
    let first = Daemon::builder().state_dir(state.path()).start();
    let out = first.cli(["revoke", revoked.name(), "--for", "1h"]);
    assert!(out.status.success(), "{out:?}");
    drop(first);

    let second = Daemon::builder().state_dir(state.path()).start();
    let listed = second.cli_json(["revocations", "--json"]);
    assert_eq!(listed[0]["target"]["name"], revoked.name(), "{listed}");
    let lasts = listed[0]["until"].as_u64().zip(listed[0]["since"].as_u64());
    assert_eq!(
        lasts.map(|(until, since)| until - since),
        Some(3600),
        "{listed}"
    );
    // `--json` prints the daemon's answer as it is.
    assert_eq!(listed, raw(&second, br#"{"cmd":"revocations"}"#)["data"]);
    let tmux = Tmux::as_user(&revoked);
    let pane = tmux.new_session("s", "bash --norc; sleep 600");
    let _ = pane;
    harness::wait_until(
        "the new session to be ended as revoked",
        Duration::from_secs(15),
        || {
            second
                .audit()
                .iter()
                .any(|r| {
                    r["event"] == "session_end"
                        && r["reason"] == "revoked"
                        && r["user"] == revoked.name()
                })
                .then_some(())
        },
    );
}

/// Sends raw bytes to the control socket and returns the answer.
fn raw(daemon: &Daemon, bytes: &[u8]) -> Value {
    let mut stream = UnixStream::connect(daemon.socket()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

#[test]
fn the_control_socket_refuses_strangers_and_junk() {
    let _guard = test_guard!();
    let stranger = TestUser::new();
    let admin = TestUser::new();
    let admins = TestGroup::new();
    admin.add_to_group(&admins);
    let daemon = Daemon::start();
    daemon.allow_others();

    // A non-root caller is refused, and the refusal is audited with its uid.
    let socket = daemon.socket().display().to_string();
    let out = harness::process::run(stranger.command(harness::daemon_binary()).args([
        "--socket",
        &socket,
        "revoke",
        admin.name(),
    ]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );
    let audit = daemon.audit();
    assert!(
        audit
            .iter()
            .any(|r| r["event"] == "control_refused" && r["caller_uid"] == stranger.uid()),
        "{audit:?}"
    );

    // Junk, oversized and unknown requests get a clear error and change nothing.
    for (what, bytes, needle) in [
        (
            "binary junk",
            b"\x00\xff\xfegarbage\n".to_vec(),
            "not UTF-8",
        ),
        ("not JSON", b"revoke everybody\n".to_vec(), "malformed"),
        (
            "unknown command",
            br#"{"cmd":"shutdown"}"#.to_vec(),
            "unknown variant",
        ),
        ("oversized", vec![b'a'; 200 * 1024], "too large"),
        ("empty", Vec::new(), "empty"),
        ("no target", br#"{"cmd":"revoke"}"#.to_vec(), "exactly one"),
    ] {
        let answer = raw(&daemon, &bytes);
        assert_eq!(answer["ok"], false, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{what}: {error}");
    }
    let status = daemon.status();
    assert!(status["sessions"].is_number(), "the daemon still answers");
    // `status --json` prints every field the daemon answers with.
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    let answer = raw(&daemon, br#"{"cmd":"status"}"#);
    assert_eq!(keys(&status), keys(&answer["data"]), "{answer}");
    assert_eq!(
        daemon.cli_json(["revocations", "--json"]),
        Value::Array(vec![])
    );

    // Members of the policy's control group may use it.
    daemon.write_policy(&format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\ncontrol_group = \"{}\"\n",
        admins.name()
    ));
    harness::wait_until(
        "the control group to apply",
        Duration::from_secs(10),
        || {
            let out = harness::process::run(admin.command(harness::daemon_binary()).args([
                "--socket",
                &socket,
                "revocations",
                "--json",
            ]));
            out.status.success().then_some(())
        },
    );
}
