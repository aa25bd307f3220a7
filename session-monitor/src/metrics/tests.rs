//! What a scraper sees: names, types, labels and values of the encoded families.

use std::collections::BTreeMap;

use super::*;
use crate::{
    enforce::EndReason,
    labels::{ReloadResult, RevocationAction},
    probes::CounterSnapshot,
    sessions::SessionKind,
};

/// `# TYPE` lines: family name -> type.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The value of the sample written exactly as `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

fn kernel_snapshot(seen: u64, dropped: u64) -> CounterSnapshot {
    // The per-probe type is private to `probes`: build it the way it crosses the
    // control socket. Probe names must be 'static, hence the leaked JSON.
    let json = format!(
        r#"[{{"probe": "tty_write", "seen": {seen}, "matched": {matched}, "sent": 3, "dropped": {dropped}}},
            {{"probe": "udp_recv", "seen": 7, "matched": 1, "sent": 1, "dropped": 1}}]"#,
        matched = seen / 2
    );
    CounterSnapshot {
        probes: serde_json::from_str(String::leak(json)).expect("valid probe counters"),
        revoke_signals: 2,
        read_errors: 0,
        answers_ignored: 4,
        injections_ignored: 6,
        procs_insert_failures: 1,
        login_insert_failures: 0,
    }
}

fn live<'a>(kind: SessionKind, idle: f64, network: Option<f64>, user: &'a str) -> LiveSample<'a> {
    LiveSample {
        kind,
        idle_seconds: idle,
        network_idle_seconds: network,
        user,
    }
}

#[test]
fn every_family_has_its_conventional_name_type_and_labels() {
    let metrics = Metrics::new(false);
    metrics.session_started(SessionKind::Ssh);
    metrics.session_started(SessionKind::Ssh);
    metrics.session_ended(SessionKind::Ssh, EndReason::Idle, 950.0, "alice");
    metrics.warning(SessionKind::Mosh, EndReason::Idle);
    metrics.revocation(RevocationAction::Revoke);
    metrics.reload(ReloadResult::Ok);
    metrics.reload(ReloadResult::Rejected);
    metrics.control_refused(1);
    metrics.set_backend("tracepoint");
    metrics.set_kernel_counters(&kernel_snapshot(10, 4));
    metrics.update_live(&[
        live(SessionKind::Ssh, 30.0, None, "alice"),
        live(SessionKind::Mosh, 4000.0, Some(2.0), "bob"),
    ]);
    let text = metrics.encode();

    let expected = [
        ("session_monitor_sessions", "gauge"),
        ("session_monitor_session_idle_seconds", "histogram"),
        ("session_monitor_session_network_idle_seconds", "histogram"),
        ("session_monitor_session_duration_seconds", "histogram"),
        ("session_monitor_sessions_started_total", "counter"),
        ("session_monitor_session_ends_total", "counter"),
        ("session_monitor_warnings_total", "counter"),
        ("session_monitor_dry_run_ends_total", "counter"),
        ("session_monitor_revocations_total", "counter"),
        ("session_monitor_control_refused_total", "counter"),
        ("session_monitor_audit_write_errors_total", "counter"),
        ("session_monitor_end_lateness_seconds", "histogram"),
        ("session_monitor_ready", "gauge"),
        ("session_monitor_policy_reloads_total", "counter"),
        ("session_monitor_kernel_events_total", "counter"),
        (
            "session_monitor_ringbuf_reservation_failures_total",
            "counter",
        ),
        ("session_monitor_kernel_revoke_signals_total", "counter"),
        ("session_monitor_kernel_read_errors_total", "counter"),
        ("session_monitor_kernel_answers_ignored_total", "counter"),
        ("session_monitor_kernel_injections_ignored_total", "counter"),
        (
            "session_monitor_kernel_procs_insert_failures_total",
            "counter",
        ),
        (
            "session_monitor_kernel_login_insert_failures_total",
            "counter",
        ),
        ("session_monitor_backend_info", "gauge"),
        ("session_monitor_build_info", "gauge"),
    ];
    let found = types(&text);
    for (name, kind) in expected {
        assert_eq!(
            found.get(name).map(String::as_str),
            Some(kind),
            "{name} in\n{text}"
        );
    }
    assert_eq!(
        found.len(),
        expected.len(),
        "unexpected families in\n{text}"
    );
    for name in found.keys() {
        assert!(name.starts_with("session_monitor_"), "{name}");
    }

    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    assert_eq!(value(r#"session_monitor_sessions{kind="ssh"}"#), 1.0);
    assert_eq!(value(r#"session_monitor_sessions{kind="mosh"}"#), 1.0);
    assert_eq!(value(r#"session_monitor_sessions{kind="container"}"#), 0.0);
    assert_eq!(
        value(r#"session_monitor_session_idle_seconds_bucket{kind="ssh",le="15"}"#),
        0.0
    );
    assert_eq!(
        value(r#"session_monitor_session_idle_seconds_bucket{kind="ssh",le="30"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_session_idle_seconds_bucket{kind="mosh",le="3600"}"#),
        0.0
    );
    assert_eq!(
        value(r#"session_monitor_session_idle_seconds_bucket{kind="mosh",le="86400"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_session_idle_seconds_bucket{kind="mosh",le="+Inf"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_session_idle_seconds_sum{kind="mosh"}"#),
        4000.0
    );
    assert_eq!(
        value(r#"session_monitor_session_network_idle_seconds_count{kind="mosh"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_session_network_idle_seconds_count{kind="ssh"}"#),
        0.0
    );
    assert_eq!(
        value(r#"session_monitor_sessions_started_total{kind="ssh"}"#),
        2.0
    );
    assert_eq!(
        value(r#"session_monitor_sessions_started_total{kind="console"}"#),
        0.0
    );
    assert_eq!(
        value(r#"session_monitor_session_ends_total{kind="ssh",reason="idle"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_session_ends_total{kind="local",reason="logout"}"#),
        0.0
    );
    assert_eq!(
        value(r#"session_monitor_session_duration_seconds_count{kind="ssh"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_session_duration_seconds_sum{kind="ssh"}"#),
        950.0
    );
    assert_eq!(
        value(r#"session_monitor_warnings_total{kind="mosh",reason="idle"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_revocations_total{action="revoke"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_revocations_total{action="expire"}"#),
        0.0
    );
    assert_eq!(
        value(r#"session_monitor_policy_reloads_total{result="ok"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_policy_reloads_total{result="rejected"}"#),
        1.0
    );
    assert_eq!(value("session_monitor_control_refused_total"), 1.0);
    assert_eq!(
        value(r#"session_monitor_kernel_events_total{probe="tty_write",stat="seen"}"#),
        10.0
    );
    assert_eq!(
        value(r#"session_monitor_kernel_events_total{probe="tty_write",stat="dropped"}"#),
        4.0
    );
    // Probes absent from the snapshot read 0 rather than missing.
    assert_eq!(
        value(r#"session_monitor_kernel_events_total{probe="process_exit",stat="sent"}"#),
        0.0
    );
    assert_eq!(
        value("session_monitor_ringbuf_reservation_failures_total"),
        5.0
    );
    assert_eq!(value("session_monitor_kernel_revoke_signals_total"), 2.0);
    assert_eq!(value("session_monitor_kernel_answers_ignored_total"), 4.0);
    assert_eq!(
        value("session_monitor_kernel_injections_ignored_total"),
        6.0
    );
    assert_eq!(
        value("session_monitor_kernel_procs_insert_failures_total"),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_kernel_events_total{probe="process_fork",stat="seen"}"#),
        0.0
    );
    assert_eq!(
        value(r#"session_monitor_backend_info{backend="tracepoint"}"#),
        1.0
    );
    let version = format!(
        r#"session_monitor_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&version), 1.0);
}

#[test]
fn no_unbounded_labels_by_default() {
    let metrics = Metrics::new(false);
    metrics.session_ended(SessionKind::Ssh, EndReason::Idle, 10.0, "alice");
    metrics.update_live(&[live(SessionKind::Ssh, 1.0, None, "alice")]);
    let text = metrics.encode();
    assert!(!text.contains("user="), "{text}");
    assert!(!text.contains("alice"), "{text}");
    assert!(!text.contains("session_monitor_user_sessions"), "{text}");
    let labels: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('{')?.1.split_once('}'))
        .flat_map(|(labels, _)| labels.split(','))
        .filter_map(|label| label.split_once('=').map(|(key, _)| key))
        .collect();
    let allowed = [
        "kind", "reason", "action", "result", "probe", "stat", "le", "version",
    ];
    for label in labels {
        assert!(
            allowed.contains(&label),
            "unexpected label {label} in\n{text}"
        );
    }
}

#[test]
fn user_labels_when_enabled() {
    let metrics = Metrics::new(true);
    metrics.session_ended(SessionKind::Ssh, EndReason::Revoked, 10.0, "alice");
    metrics.update_live(&[
        live(SessionKind::Ssh, 1.0, None, "alice"),
        live(SessionKind::Ssh, 2.0, None, "alice"),
        live(SessionKind::Local, 2.0, None, "bob"),
    ]);
    let text = metrics.encode();
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    assert_eq!(
        value(r#"session_monitor_session_ends_total{kind="ssh",reason="revoked",user="alice"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_user_sessions{kind="ssh",user="alice"}"#),
        2.0
    );
    assert_eq!(
        value(r#"session_monitor_user_sessions{kind="local",user="bob"}"#),
        1.0
    );
    assert_eq!(
        types(&text)
            .get("session_monitor_user_sessions")
            .map(String::as_str),
        Some("gauge")
    );
    // The aggregate families keep their bounded labels.
    assert_eq!(value(r#"session_monitor_sessions{kind="ssh"}"#), 2.0);
}

#[test]
fn the_live_snapshot_replaces_the_previous_one() {
    let metrics = Metrics::new(true);
    metrics.update_live(&[
        live(SessionKind::Ssh, 10.0, None, "alice"),
        live(SessionKind::Ssh, 20.0, None, "bob"),
        live(SessionKind::Mosh, 30.0, Some(5.0), "carol"),
    ]);
    metrics.update_live(&[live(SessionKind::Ssh, 700.0, None, "bob")]);
    let text = metrics.encode();
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    assert_eq!(value(r#"session_monitor_sessions{kind="ssh"}"#), 1.0);
    assert_eq!(value(r#"session_monitor_sessions{kind="mosh"}"#), 0.0);
    assert_eq!(
        value(r#"session_monitor_session_idle_seconds_count{kind="ssh"}"#),
        1.0
    );
    assert_eq!(
        value(r#"session_monitor_session_idle_seconds_sum{kind="ssh"}"#),
        700.0
    );
    assert_eq!(
        value(r#"session_monitor_session_network_idle_seconds_count{kind="mosh"}"#),
        0.0
    );
    assert!(!text.contains("alice") && !text.contains("carol"), "{text}");

    metrics.update_live(&[]);
    let text = metrics.encode();
    assert_eq!(
        sample(&text, r#"session_monitor_sessions{kind="ssh"}"#),
        Some(0.0)
    );
}

#[test]
fn nonsense_durations_are_not_observed() {
    let metrics = Metrics::new(false);
    metrics.session_ended(SessionKind::Ssh, EndReason::Logout, f64::NAN, "alice");
    metrics.session_ended(SessionKind::Ssh, EndReason::Logout, -3.0, "alice");
    metrics.update_live(&[live(
        SessionKind::Ssh,
        f64::INFINITY,
        Some(f64::NAN),
        "alice",
    )]);
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"session_monitor_session_ends_total{kind="ssh",reason="logout"}"#
        ),
        Some(2.0)
    );
    // NaN is skipped; a negative duration (clock step) counts as 0.
    assert_eq!(
        sample(
            &text,
            r#"session_monitor_session_duration_seconds_count{kind="ssh"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"session_monitor_session_duration_seconds_sum{kind="ssh"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"session_monitor_sessions{kind="ssh"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"session_monitor_session_idle_seconds_count{kind="ssh"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn kernel_counters_stay_monotonic_when_the_probes_are_reloaded() {
    let metrics = Metrics::new(false);
    metrics.set_kernel_counters(&kernel_snapshot(100, 6));
    metrics.set_kernel_counters(&kernel_snapshot(8, 0));
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"session_monitor_kernel_events_total{probe="tty_write",stat="seen"}"#
        ),
        Some(108.0)
    );
    assert_eq!(
        sample(&text, "session_monitor_ringbuf_reservation_failures_total"),
        Some(7.0)
    );
}

#[test]
fn backend_info_appears_once_set_and_follows_changes() {
    let metrics = Metrics::new(false);
    assert!(!metrics.encode().contains("session_monitor_backend_info"));
    metrics.set_backend("fentry");
    metrics.set_backend("tracepoint");
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"session_monitor_backend_info{backend="tracepoint"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains(r#"backend="fentry""#));
}

#[test]
fn openmetrics_output_declares_units_and_ends_with_eof() {
    let metrics = Metrics::new(false);
    let text = metrics.encode_openmetrics();
    assert!(
        text.contains("# UNIT session_monitor_session_idle_seconds seconds"),
        "{text}"
    );
    assert!(text.contains("# TYPE session_monitor_build info"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn every_kind_and_reason_reads_zero_before_the_first_event() {
    let text = Metrics::new(false).encode();
    for kind in SessionKind::ALL {
        for reason in EndReason::ALL {
            let series =
                format!(r#"session_monitor_session_ends_total{{kind="{kind}",reason="{reason}"}}"#);
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for reason in WARNING_REASONS {
            let series =
                format!(r#"session_monitor_warnings_total{{kind="{kind}",reason="{reason}"}}"#);
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }
    for action in RevocationAction::ALL {
        let series = format!(r#"session_monitor_revocations_total{{action="{action}"}}"#);
        assert_eq!(sample(&text, &series), Some(0.0), "{series}");
    }
    for result in ReloadResult::ALL {
        let series = format!(r#"session_monitor_policy_reloads_total{{result="{result}"}}"#);
        assert_eq!(sample(&text, &series), Some(0.0), "{series}");
    }
}

#[tokio::test]
async fn a_bind_error_names_the_address() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve(addr, Metrics::new(false), Health::new())
        .await
        .expect_err("the port is taken");
    assert!(format!("{err:#}").contains(&addr.to_string()), "{err:#}");
}

/// Prometheus's own linter (`promtool check metrics`, from the prometheus package)
/// accepts the exposition, naming conventions included. Skipped when not installed.
#[test]
fn promtool_accepts_the_exposition() {
    use std::{
        io::Write as _,
        process::{Command, Stdio},
    };

    let metrics = Metrics::new(true);
    metrics.set_backend("tracepoint");
    metrics.session_ended(SessionKind::Mosh, EndReason::Network, 5.0, "alice");
    metrics.update_live(&[live(SessionKind::Mosh, 1.0, Some(3.0), "alice")]);
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child =
        child.unwrap_or_else(|e| panic!("promtool cannot run ({e}): apt-get install prometheus"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(metrics.encode().as_bytes())
        .expect("promtool reads its input");
    let output = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}
