//! Container sessions with real runtimes: `podman exec -it` and `docker exec -it`
//! shells, driven from tmux, are `container` sessions attributed to their container
//! and runtime. An idle one is warned on its terminal and ended, while the
//! container's main process and its other execs live on; typing keeps one; revoking
//! the user it runs as ends it; the metrics count it under `kind="container"`.

use std::time::{Duration, Instant};

use harness::{Daemon, Docker, Kind, Podman, Session, TestUser, Tmux, http, process, test_guard};

const APPEAR: Duration = Duration::from_secs(30);

/// A policy that limits only `user`'s sessions.
fn policy_for(user: &TestUser, limits: &str) -> String {
    format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n\
         [[rule]]\nname = \"test user\"\nusers = [\"{}\"]\n{limits}\n",
        user.name()
    )
}

fn is_exec_of(session: &Session, container_id: &str, runtime: &str) -> bool {
    session.kind == Kind::Container
        && session
            .extra
            .get("container")
            .is_some_and(|c| c["id"] == container_id && c["runtime"] == runtime)
}

/// Waits until one sample of the daemon's /metrics has `value` (the gauges follow
/// the session table within a moment).
fn wait_metric(daemon: &Daemon, sample: &str, value: f64) {
    harness::wait_until_ok(
        format!("{sample} to be {value}"),
        Duration::from_secs(15),
        || match metric(daemon, sample) {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// The value of one sample of the daemon's /metrics.
fn metric(daemon: &Daemon, sample: &str) -> Option<f64> {
    let addr = daemon.status()["metrics_addr"]
        .as_str()
        .expect("the metrics endpoint")
        .to_string();
    let (status, text) = http::get(&addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

#[test]
fn podman_exec_sessions_idle_ended_typing_kept_container_lives_on() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let podman = Podman::new();
    let container = podman.run_on_host_root("exec");
    // Another exec, without a terminal: no session, and it must live on.
    container.exec_detached(&["sleep", "1001"]);
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"10s\"\nwarn_before = \"3s\"",
        ))
        .start();
    let tmux = Tmux::new();
    let as_user = Some((user.uid(), user.gid()));
    // One after the other, so that the idle one is pts/0 of the container's devpts
    // and the typed-into one pts/1.
    let idle = tmux.new_session(
        "idle",
        &format!(
            "{}; echo exec-exited-$?; sleep 600",
            container.exec_it_line(as_user, &["bash", "--norc"])
        ),
    );
    idle.wait_for_shell(APPEAR);
    let typing = tmux.new_session(
        "typing",
        &container.exec_it_line(as_user, &["bash", "--norc"]),
    );
    typing.wait_for_shell(APPEAR);
    let exec_on = |tty: &'static str| {
        let (user, id) = (user.name().to_string(), container.id().to_string());
        move |s: &Session| s.user == user && s.tty == tty && is_exec_of(s, &id, "podman")
    };
    let idle_session =
        daemon.wait_for_session("the idle podman exec session", APPEAR, exec_on("pts/0"));
    typing.type_line("true");
    let typing_session = daemon.wait_for_session(
        "the typed-into podman exec session",
        APPEAR,
        exec_on("pts/1"),
    );
    assert_eq!(
        idle_session.server.as_deref(),
        Some("conmon"),
        "{idle_session:?}"
    );
    // Both exec sessions are counted as containers.
    wait_metric(&daemon, "session_monitor_sessions{kind=\"container\"}", 2.0);

    // Keep typing into one, until well after the other is ended.
    let started = Instant::now();
    let mut ended = false;
    while started.elapsed() < Duration::from_secs(60) {
        typing.type_line("true");
        std::thread::sleep(Duration::from_secs(1));
        if daemon.session_by_id(&idle_session.id).is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the idle exec session was not ended within 60 s");
    idle.wait_for_text(
        "will be closed for inactivity in 3 seconds",
        Duration::from_secs(5),
    );
    idle.wait_for_text(
        "closing this session: no input for 10 seconds",
        Duration::from_secs(5),
    );
    idle.wait_for_text("exec-exited-", Duration::from_secs(15));
    for _ in 0..4 {
        typing.type_line("true");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        daemon.session_by_id(&typing_session.id).is_some(),
        "the exec session being typed into was ended"
    );
    // The container runs on, with its main process and the other exec.
    assert!(container.is_running(), "the container stopped");
    assert_eq!(
        container.processes_with("sleep 1001").len(),
        1,
        "the other exec is gone"
    );
    wait_metric(
        &daemon,
        "session_monitor_session_ends_total{kind=\"container\",reason=\"idle\"}",
        1.0,
    );
    let end = daemon
        .audit()
        .into_iter()
        .find(|r| r["event"] == "session_end" && r["session_id"] == idle_session.id.as_str())
        .expect("a session_end record");
    assert_eq!(end["reason"], "idle", "{end}");
}

#[test]
fn revoking_the_user_of_a_podman_exec_session_ends_it() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let podman = Podman::new();
    let container = podman.run_on_host_root("revoke");
    let daemon = Daemon::builder().policy(&policy_for(&user, "")).start();
    let tmux = Tmux::new();
    let pane = tmux.new_session(
        "exec",
        &format!(
            "{}; echo exec-exited-$?; sleep 600",
            container.exec_it_line(Some((user.uid(), user.gid())), &["bash", "--norc"])
        ),
    );
    pane.wait_for_shell(APPEAR);
    let session = daemon.wait_for_session("the podman exec session", APPEAR, |s| {
        s.user == user.name() && is_exec_of(s, container.id(), "podman")
    });
    let out = daemon.cli(["revoke", user.name(), "--reason", "test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_session_gone(&session.id, Duration::from_secs(20));
    pane.wait_for_text("exec-exited-", Duration::from_secs(15));
    assert!(container.is_running(), "the container stopped");
    let audit = daemon.audit();
    assert!(
        audit.iter().any(|r| r["event"] == "session_end"
            && r["session_id"] == session.id.as_str()
            && r["reason"] == "revoked"),
        "no session_end with reason revoked"
    );
}

#[test]
fn docker_exec_session_is_a_container_session_ended_when_idle() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let docker = Docker::start();
    let container = docker.run_base("exec");
    container.exec_detached(&["sleep", "1002"]);
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"6s\"\nwarn_before = \"2s\"",
        ))
        .start();
    let tmux = Tmux::new();
    let pane = tmux.new_session(
        "exec",
        &format!(
            "{}; echo exec-exited-$?; sleep 600",
            container.exec_it_line(Some((user.uid(), user.gid())), &["bash", "--norc"])
        ),
    );
    pane.wait_for_shell(APPEAR);
    let session = daemon.wait_for_session("the docker exec session", APPEAR, |s| {
        s.uid == user.uid() && is_exec_of(s, container.id(), "docker")
    });
    assert_eq!(
        session.server.as_deref(),
        Some("containerd-shim-runc-v2"),
        "{session:?}"
    );
    let shim = session.server_pid.expect("the shim holds the master");
    wait_metric(&daemon, "session_monitor_sessions{kind=\"container\"}", 1.0);
    pane.wait_for_text(
        "will be closed for inactivity in 2 seconds",
        Duration::from_secs(30),
    );
    pane.wait_for_text(
        "closing this session: no input for 6 seconds",
        Duration::from_secs(10),
    );
    daemon.wait_session_gone(&session.id, Duration::from_secs(15));
    pane.wait_for_text("exec-exited-", Duration::from_secs(15));
    // The shim serves the whole container: it, the main process and the other exec
    // live on.
    assert!(process::alive(shim), "the containerd shim was ended");
    assert!(container.is_running(), "the container stopped");
    assert_eq!(
        container.processes_with("sleep 1002").len(),
        1,
        "the other exec is gone"
    );
}
