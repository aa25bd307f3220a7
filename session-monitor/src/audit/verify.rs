//! `session-monitor audit verify FILE...`: checks the chain over one file or a
//! rotated set.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::{GENESIS, log::hash_line};

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// The files in chain order (oldest first).
    pub files: Vec<PathBuf>,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first record follows one that is not in these files (an older file that
    /// was rotated away, or the copy logrotate's copytruncate made).
    pub starts_mid_chain: bool,
    /// Records the daemon could not write, as its `gap` records say.
    pub gaps: Vec<Gap>,
    /// Places where the file shrank under the daemon (`audit_truncated` records).
    pub truncations: Vec<String>,
    pub last_hash: String,
}

#[derive(Debug, Serialize)]
pub struct Gap {
    /// `FILE:LINE` of the `gap` record.
    pub at: String,
    pub lost_records: u64,
    pub since: String,
    pub error: String,
}

impl VerifyReport {
    /// What `audit verify` prints.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        let range = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!(" (seq {a}-{b})"),
            _ => String::new(),
        };
        let mut out = format!(
            "{}: ok, {} records{range}, chain intact\n",
            names.join(", "),
            self.records
        );
        if self.starts_mid_chain {
            out.push_str(&format!(
                "  starts mid-chain: seq {} follows a record that is not in these files (an older rotated file); \
                 give the older files too to check the link\n",
                self.first_seq.unwrap_or(0)
            ));
        }
        for gap in &self.gaps {
            out.push_str(&format!(
                "  gap at {}: {} records were not written since {} ({})\n",
                gap.at, gap.lost_records, gap.since, gap.error
            ));
        }
        for at in &self.truncations {
            out.push_str(&format!(
                "  {at}: the file shrank under the daemon (copytruncate); the records before are in the copy\n"
            ));
        }
        out
    }
}

struct Parsed {
    path: PathBuf,
    text: String,
    first_seq: Option<u64>,
}

/// Checks the chain over `paths`, taken in chain order whatever order they are
/// given in (by their first sequence number): each record's `prev` is the hash of
/// the record before it, also across files, and `seq` counts up by one. The error
/// names the first line that breaks it.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport> {
    let mut files = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let first_seq = text
            .lines()
            .next()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| v.get("seq").and_then(Value::as_u64));
        files.push(Parsed {
            path: path.clone(),
            text,
            first_seq,
        });
    }
    // Empty files (just rotated) go last: they hold nothing to chain.
    files.sort_by_key(|f| (f.text.is_empty(), f.first_seq));
    let mut report = VerifyReport {
        files: files.iter().map(|f| f.path.clone()).collect(),
        records: 0,
        first_seq: None,
        last_seq: None,
        starts_mid_chain: false,
        gaps: Vec::new(),
        truncations: Vec::new(),
        last_hash: GENESIS.to_string(),
    };
    let mut prev: Option<(String, String)> = None;
    let mut expected_seq: Option<u64> = None;
    for file in &files {
        for (i, line) in file.text.lines().enumerate() {
            let at = format!("{}:{}", file.path.display(), i + 1);
            check_line(line, &at, &mut prev, &mut expected_seq, &mut report)?;
        }
    }
    Ok(report)
}

/// One file, as before rotation existed.
#[cfg(test)]
pub fn verify_file(path: &std::path::Path) -> Result<VerifyReport> {
    verify_files(&[path.to_path_buf()])
}

fn check_line(
    line: &str,
    at: &str,
    prev: &mut Option<(String, String)>,
    expected_seq: &mut Option<u64>,
    report: &mut VerifyReport,
) -> Result<()> {
    if line.trim().is_empty() {
        bail!("{at}: empty line inside the log");
    }
    let value: Value =
        serde_json::from_str(line).with_context(|| format!("{at}: not a JSON record"))?;
    let claimed = value.get("prev").and_then(Value::as_str).unwrap_or("");
    let Some(seq) = value.get("seq").and_then(Value::as_u64) else {
        bail!("{at}: record has no sequence number");
    };
    match prev {
        None => {
            // The first record: the start of the chain, or the continuation of a
            // file not given.
            report.starts_mid_chain = claimed != GENESIS;
            report.first_seq = Some(seq);
        }
        Some((hash, prev_at)) if claimed != hash => {
            let event = value.get("event").and_then(Value::as_str).unwrap_or("");
            if event == "audit_truncated" || event == "audit_reopened" {
                bail!(
                    "{at}: record {seq} ({event}) does not continue {prev_at}: records written between \
                     the copy and the cut of a copytruncate are lost, or a file of the set is missing"
                );
            }
            bail!(
                "{at}: record {seq} does not follow the record before it ({prev_at}; hash mismatch): \
                 a record was edited, removed or reordered, or a file of the set is missing"
            );
        }
        Some(_) => {}
    }
    if let Some(want) = *expected_seq
        && seq != want
    {
        bail!("{at}: sequence number {seq}, expected {want}: a record was removed or reordered");
    }
    match value.get("event").and_then(Value::as_str) {
        Some("gap") => report.gaps.push(Gap {
            at: at.to_string(),
            lost_records: value
                .get("lost_records")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            since: value
                .get("since")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            error: value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }),
        Some("audit_truncated") => report.truncations.push(at.to_string()),
        _ => {}
    }
    *expected_seq = Some(seq + 1);
    let hash = hash_line(line.as_bytes());
    report.last_hash = hash.clone();
    report.last_seq = Some(seq);
    report.records += 1;
    *prev = Some((hash, at.to_string()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog, Rotation};
    use std::path::Path;

    fn write_log(dir: &Path, n: usize) -> std::path::PathBuf {
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path, false).unwrap();
        for i in 0..n {
            log.record(refused(format!("user{i}")));
        }
        path
    }

    /// A record that carries `error`.
    fn refused(error: String) -> AuditEvent {
        AuditEvent::ControlRefused {
            caller_uid: 1001,
            caller_pid: None,
            error,
        }
    }

    fn stop() -> AuditEvent {
        AuditEvent::DaemonStop {
            pid: 1,
            sessions: 0,
        }
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sm-audit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn intact_chain_verifies_and_survives_reopening() {
        let dir = tempdir();
        let path = write_log(&dir, 3);
        // Reopen: the chain continues.
        let mut log = AuditLog::open(&path, false).unwrap();
        log.record(stop());
        assert_eq!(verify_file(&path).unwrap().records, 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn detects_edit_removal_and_reorder() {
        let dir = tempdir();
        let path = write_log(&dir, 4);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        let edited = text.replacen("user1", "userX", 1);
        std::fs::write(&path, edited).unwrap();
        let err = verify_file(&path).unwrap_err().to_string();
        assert!(err.contains(":3:"), "{err}");

        std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
        assert!(verify_file(&path).unwrap_err().to_string().contains(":2:"));

        std::fs::write(
            &path,
            format!("{}\n{}\n{}\n{}\n", lines[0], lines[2], lines[1], lines[3]),
        )
        .unwrap();
        assert!(verify_file(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn numbered(path: &Path, n: u32) -> PathBuf {
        PathBuf::from(format!("{}.{n}", path.display()))
    }

    #[test]
    fn size_rotation_keeps_the_chain_across_files() {
        let dir = tempdir();
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path, false).unwrap();
        log.set_rotation(Some(Rotation {
            max_size: 4096,
            keep: 3,
        }));
        for _ in 0..60 {
            log.record(refused("x".repeat(300)));
        }
        for n in 1..=3 {
            let size = std::fs::metadata(numbered(&path, n)).unwrap().len();
            assert!(size <= 4096, "{n}: {size}");
        }
        assert!(!numbered(&path, 4).exists());
        // Given newest first, as a shell glob sorts them: verified oldest first.
        let set = vec![
            path.clone(),
            numbered(&path, 1),
            numbered(&path, 2),
            numbered(&path, 3),
        ];
        let report = verify_files(&set).unwrap();
        assert_eq!(report.files[0], numbered(&path, 3));
        assert!(report.starts_mid_chain, "older files were deleted");
        assert!(
            report.describe().contains("starts mid-chain"),
            "{}",
            report.describe()
        );
        // Leaving out a file in the middle breaks the chain, naming the place.
        let err = verify_files(&[path.clone(), numbered(&path, 2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("audit.jsonl:1:"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn copytruncate_and_reopen_continue_the_chain() {
        let dir = tempdir();
        let path = write_log(&dir, 3);
        let mut log = AuditLog::open(&path, false).unwrap();
        // copytruncate: copy, then cut the original under the open descriptor.
        std::fs::copy(&path, numbered(&path, 2)).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        log.record(stop());
        let alone = verify_file(&path).unwrap();
        assert!(alone.starts_mid_chain);
        assert_eq!((alone.first_seq, alone.truncations.len()), (Some(4), 1));
        // mv + reopen (SIGUSR1).
        std::fs::rename(&path, numbered(&path, 1)).unwrap();
        log.reopen();
        log.record(stop());
        let set = [numbered(&path, 1), path.clone(), numbered(&path, 2)];
        let report = verify_files(&set).unwrap();
        assert!(!report.starts_mid_chain);
        assert_eq!((report.records, report.last_seq), (7, Some(7)));
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(
            first.lines().next().unwrap().contains("\"seq\":6,"),
            "{first}"
        );
        assert!(first.contains("audit_reopened"), "{first}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failed_writes_advance_nothing_and_leave_a_gap_record() {
        let dir = tempdir();
        let path = write_log(&dir, 2);
        let health = crate::metrics::Health::new();
        let errors = prometheus_client::metrics::counter::Counter::<u64>::default();
        let mut log = AuditLog::open(&path, false)
            .unwrap()
            .observed_by(errors.clone(), health.clone());
        log.break_writes_for_test();
        for _ in 0..3 {
            log.record(stop());
        }
        assert_eq!(errors.get(), 3);
        let ready = health.readiness();
        assert!(ready.is_err(), "{ready:?}");
        assert_eq!(verify_file(&path).unwrap().records, 2);
        log.reopen();
        log.record(stop());
        let report = verify_file(&path).unwrap();
        assert_eq!(report.gaps.len(), 1, "{}", report.describe());
        assert_eq!(report.gaps[0].lost_records, 3);
        assert!(
            report.describe().contains("3 records were not written"),
            "{}",
            report.describe()
        );
        // The next record follows seq 2 directly: nothing advanced while failing.
        assert_eq!(report.first_seq, Some(1));
        assert!(health.readiness().unwrap_err().contains("probes"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
