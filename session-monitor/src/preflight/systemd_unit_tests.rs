//! The systemd unit in deploy/systemd, checked against what the daemon needs: the
//! capabilities preflight requires (no more, no less), and the directories it writes.

use std::{collections::BTreeSet, path::Path};

use super::*;

fn unit() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/session-monitor.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(str::split_whitespace)
        .collect()
}

#[test]
fn the_unit_bounds_the_daemon_to_exactly_the_capabilities_preflight_requires() {
    let unit = unit();
    let bounding: BTreeSet<&str> = values(&unit, "CapabilityBoundingSet").into_iter().collect();
    let required: BTreeSet<&str> = CAPABILITIES.iter().map(|c| c.name).collect();
    assert_eq!(bounding, required);
    assert_eq!(values(&unit, "NoNewPrivileges"), ["yes"]);
}

#[test]
fn the_unit_makes_the_directories_the_daemon_writes() {
    let unit = unit();
    for (key, dir) in [
        ("RuntimeDirectory", RUN_DIR),
        ("LogsDirectory", LOG_DIR),
        ("StateDirectory", STATE_DIR),
    ] {
        let under = match key {
            "RuntimeDirectory" => "/run/",
            "LogsDirectory" => "/var/log/",
            _ => "/var/lib/",
        };
        let made: Vec<String> = values(&unit, key)
            .iter()
            .map(|d| format!("{under}{d}"))
            .collect();
        assert_eq!(made, [dir], "{key}");
    }
    assert_eq!(values(&unit, "Type"), ["notify"]);
    let exec = values(&unit, "ExecStart");
    assert_eq!(exec[..2], ["/usr/sbin/session-monitor", "run"]);
    let config = exec
        .iter()
        .position(|w| *w == "--config")
        .map(|i| exec[i + 1]);
    assert_eq!(config, Some(crate::policy::DEFAULT_PATH));
}
