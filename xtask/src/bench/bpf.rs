//! The daemon's programs and maps as the kernel sees them, through `bpftool`:
//! run time per program (with `kernel.bpf_stats_enabled=1`) and map sizes.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::sys::Sysctl;
use crate::cmd;

pub fn bpftool() -> Option<PathBuf> {
    cmd::find_program("bpftool", &["/usr/sbin/bpftool", "/sbin/bpftool"])
}

fn bpftool_json(args: &[&str]) -> Result<Value> {
    let tool = bpftool().context("bpftool not found")?;
    let out = Command::new(&tool)
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running bpftool {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "bpftool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing bpftool's JSON")
}

/// Cumulative statistics of one program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgSample {
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Statistics of programs, by id.
pub type ProgSamples = BTreeMap<u32, ProgSample>;

/// The programs with the given ids, by id.
pub fn programs(ids: &[u32]) -> Result<ProgSamples> {
    Ok(parse_programs(&bpftool_json(&["prog", "show"])?, ids))
}

fn parse_programs(json: &Value, ids: &[u32]) -> BTreeMap<u32, ProgSample> {
    json.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = u32::try_from(p["id"].as_u64()?).ok()?;
            ids.contains(&id).then(|| {
                (
                    id,
                    ProgSample {
                        name: p["name"].as_str().unwrap_or("?").to_string(),
                        run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
                        run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                    },
                )
            })
        })
        .collect()
}

/// What one program cost over a measured run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProgCost {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
}

impl ProgCost {
    /// What program `name` cost between two samples of its statistics.
    pub fn between(name: &str, before: Option<&ProgSample>, after: &ProgSample) -> Self {
        let before = before.cloned().unwrap_or_default();
        Self {
            name: name.to_string(),
            runs: after.run_cnt.saturating_sub(before.run_cnt),
            run_time_ns: after.run_time_ns.saturating_sub(before.run_time_ns),
        }
    }

    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ns as f64 / self.runs as f64)
    }
}

/// Differences between two samples of the same programs, by program name.
pub fn costs(before: &ProgSamples, after: &ProgSamples) -> Vec<ProgCost> {
    let mut out: Vec<ProgCost> = after
        .iter()
        .map(|(id, a)| ProgCost::between(&a.name, before.get(id), a))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `kernel.bpf_stats_enabled=1` for as long as this lives (it costs two clock
/// reads per program run, so it is on only for the runs that measure programs).
pub fn enable_stats() -> Result<Sysctl> {
    Sysctl::set("kernel.bpf_stats_enabled", "1")
}

/// One of the daemon's maps.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapInfo {
    pub name: String,
    pub kind: String,
    pub max_entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
    /// The kernel's own account of the map's memory (`bytes_memlock`).
    pub memlock_bytes: u64,
}

pub fn maps(ids: &[u32]) -> Result<Vec<MapInfo>> {
    Ok(parse_maps(&bpftool_json(&["map", "show"])?, ids))
}

fn parse_maps(json: &Value, ids: &[u32]) -> Vec<MapInfo> {
    let mut maps: Vec<MapInfo> = json
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["id"]
                .as_u64()
                .is_some_and(|id| ids.iter().any(|&i| u64::from(i) == id))
        })
        .map(|m| MapInfo {
            name: m["name"].as_str().unwrap_or("?").to_string(),
            kind: m["type"].as_str().unwrap_or("?").to_string(),
            max_entries: m["max_entries"].as_u64().unwrap_or(0),
            key_bytes: m["bytes_key"].as_u64().unwrap_or(0),
            value_bytes: m["bytes_value"].as_u64().unwrap_or(0),
            memlock_bytes: m["bytes_memlock"].as_u64().unwrap_or(0),
        })
        .collect();
    maps.sort_by_key(|m| std::cmp::Reverse(m.memlock_bytes));
    maps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_and_their_cost() {
        let json: Value = serde_json::json!([
            {"id": 7, "name": "tp_write", "run_cnt": 10, "run_time_ns": 500},
            {"id": 8, "name": "other", "run_cnt": 1, "run_time_ns": 1},
            {"id": 9, "name": "process_exit"}
        ]);
        let before = parse_programs(&json, &[7, 9]);
        assert_eq!(before.len(), 2);
        let later: Value = serde_json::json!([
            {"id": 7, "name": "tp_write", "run_cnt": 30, "run_time_ns": 1500},
            {"id": 9, "name": "process_exit", "run_cnt": 0, "run_time_ns": 0}
        ]);
        let after = parse_programs(&later, &[7, 9]);
        let c = costs(&before, &after);
        assert_eq!(c[0].name, "process_exit");
        assert_eq!(c[0].ns_per_run(), None);
        assert_eq!(c[1].runs, 20);
        assert_eq!(c[1].ns_per_run(), Some(50.0));
    }

    #[test]
    fn maps_of_the_daemon_only() {
        let json: Value = serde_json::json!([
            {"id": 1, "name": "TTY_ACTIVITY", "type": "hash", "bytes_key": 8,
             "bytes_value": 48, "max_entries": 16384, "bytes_memlock": 1000},
            {"id": 2, "name": "theirs", "type": "hash"}
        ]);
        let maps = parse_maps(&json, &[1]);
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].value_bytes, 48);
        assert_eq!(maps[0].memlock_bytes, 1000);
    }
}
