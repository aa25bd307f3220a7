//! Metrics as a fleet sees them: a real Prometheus scrapes the daemon over loopback
//! and finds the live sessions and the ends counted by reason.

use std::time::Duration;

use harness::{Daemon, Prometheus, TestUser, Tmux, http, test_guard};

#[test]
fn prometheus_scrapes_live_sessions_and_ends_by_reason() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let policy = format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n[[rule]]\nusers = [\"{}\"]\nidle_timeout = \"6s\"\nwarn_before = \"2s\"\n",
        user.name()
    );
    let daemon = Daemon::builder().policy(&policy).start();
    let addr = daemon.status()["metrics_addr"]
        .as_str()
        .expect("the metrics endpoint is on by default")
        .to_string();

    // Health endpoints: alive, and ready once the probes are attached and read.
    assert_eq!(http::get(&addr, "/healthz").unwrap().0, 200);
    let (status, body) = http::get(&addr, "/readyz").unwrap();
    assert_eq!((status, body.trim()), (200, "ready"));
    let (status, text) = http::get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE session_monitor_session_ends_total counter"),
        "{text}"
    );
    assert!(!text.contains(user.name()), "no user labels unless enabled");

    let prometheus = Prometheus::start(std::slice::from_ref(&addr));
    prometheus.wait_for(
        "up{job=\"session-monitor\"}",
        Duration::from_secs(30),
        |v| v == 1.0,
    );
    prometheus.wait_for(
        "session_monitor_backend_info",
        Duration::from_secs(30),
        |v| v == 1.0,
    );

    let tmux = Tmux::as_user(&user);
    tmux.new_session("s", "bash --norc")
        .wait_for_shell(Duration::from_secs(10));
    let session = daemon.wait_for_session("the local session", Duration::from_secs(20), |s| {
        s.user == user.name()
    });
    prometheus.wait_for(
        "session_monitor_sessions{kind=\"local\"}",
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    daemon.wait_session_gone(&session.id, Duration::from_secs(30));
    prometheus.wait_for(
        "session_monitor_session_ends_total{kind=\"local\",reason=\"idle\"}",
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    prometheus.wait_for(
        "session_monitor_warnings_total{kind=\"local\",reason=\"idle\"}",
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    prometheus.wait_for(
        "sum(session_monitor_kernel_events_total{stat=\"seen\"})",
        Duration::from_secs(30),
        |v| v > 0.0,
    );
}
