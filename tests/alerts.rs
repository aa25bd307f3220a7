//! deploy/prometheus: the alerting rules (promtool), the PrometheusRule that carries
//! them, and the Grafana dashboard, every panel of which is queried from a real
//! Prometheus scraping a real daemon.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use harness::{
    Daemon, Kind, Prometheus, TestUser, Tmux, UNLIMITED_POLICY, Wait, process, test_guard,
};
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = process::run(Command::new("promtool").args(args).current_dir(deploy()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    let _guard = test_guard!();
    let checked = promtool(&["check", "rules", "session-monitor.rules.yml"]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "session-monitor.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_prometheusrule_carries_the_same_groups_as_the_rules_file() {
    let _guard = test_guard!();
    let rules = std::fs::read_to_string(deploy().join("session-monitor.rules.yml")).unwrap();
    let resource = std::fs::read_to_string(deploy().join("prometheusrule.yaml")).unwrap();
    let groups = &rules[rules.find("\ngroups:").expect("groups in the rules file") + 1..];
    let spec = &resource[resource
        .find("\nspec:\n")
        .expect("spec in the PrometheusRule")
        + 7..];
    let dedented: Vec<&str> = spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect();
    assert_eq!(
        dedented.join("\n").trim_end(),
        groups.trim_end(),
        "prometheusrule.yaml's spec.groups differ from session-monitor.rules.yml"
    );
    assert!(resource.contains("kind: PrometheusRule"));
}

/// Grafana's variables, as the dashboard would expand them for "All" instances.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
}

#[test]
fn every_dashboard_panel_returns_data_from_a_real_daemon() {
    let _guard = test_guard!();
    let text = std::fs::read_to_string(deploy().join("session-monitor.dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Sessions by kind",
        "Idle time of live sessions",
        "Session ends by reason",
        "Warnings",
        "Revocations",
        "Kernel event drops",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel `{wanted}` in {titles:?}"
        );
    }

    // One session that stays, and one of a test user that is ended for idleness, so
    // that the ends, warnings and lateness panels show real events.
    let user = TestUser::new();
    let daemon = Daemon::builder()
        .policy(&format!(
            "{UNLIMITED_POLICY}\n[[rule]]\nname = \"short\"\nusers = [\"{}\"]\nidle_timeout = \"4s\"\nwarn_before = \"2s\"\n",
            user.name()
        ))
        .start();
    let tmux = Tmux::new();
    let pane = tmux.new_session("s", "bash --norc");
    pane.wait_for_shell(Duration::from_secs(10));
    daemon.wait_for_session("a local session", Duration::from_secs(20), |s| {
        s.kind == Kind::Local && s.user != user.name()
    });
    let user_tmux = Tmux::as_user(&user);
    let user_pane = user_tmux.new_session("s", "bash --norc");
    user_pane.wait_for_shell(Duration::from_secs(10));
    let idle = daemon.wait_for_session("the test user's session", Duration::from_secs(20), |s| {
        s.user == user.name()
    });
    daemon.wait_session_gone(&idle.id, Duration::from_secs(30));
    let addr = daemon.status()["metrics_addr"]
        .as_str()
        .unwrap()
        .to_string();
    let prometheus = Prometheus::start(std::slice::from_ref(&addr));
    // Rates need two scrapes.
    prometheus.wait_for(
        "count_over_time(session_monitor_build_info[1m])",
        Duration::from_secs(60),
        |n| n >= 3.0,
    );
    // The idle end was decided soon after its deadline, and counted.
    let late = prometheus.wait_for(
        "sum(session_monitor_end_lateness_seconds_count{reason=\"idle\"})",
        Duration::from_secs(30),
        |n| n >= 1.0,
    );
    assert_eq!(late, 1.0);
    prometheus.wait_for(
        "sum(session_monitor_end_lateness_seconds_bucket{reason=\"idle\",le=\"5.0\"})",
        Duration::from_secs(30),
        |n| n >= 1.0,
    );
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel `{title}` has no query");
        for target in targets {
            let expr = expand(target["expr"].as_str().expect("expr"));
            let result = Wait::new(format!("panel `{title}`: `{expr}` to return data"))
                .timeout(Duration::from_secs(30))
                .poll(Duration::from_millis(500))
                .until_ok(|| match prometheus.query(&expr) {
                    Ok(result) if !result.is_empty() => Ok(result),
                    Ok(_) => Err("no data".to_string()),
                    Err(e) => Err(e),
                });
            if title == "Sessions by kind" {
                assert!(
                    result.iter().any(|r| r["metric"]["kind"] == "local"
                        && r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)),
                    "{result:?}"
                );
            }
        }
    }
}
