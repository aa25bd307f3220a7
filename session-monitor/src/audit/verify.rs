//! `session-monitor audit verify FILE`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::{GENESIS, log::hash_line};

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub last_hash: String,
}

/// Checks the chain: each record's `prev` is the hash of the line before it and
/// `seq` counts up by one. The error names the first line that breaks it.
pub fn verify_file(path: &Path) -> Result<VerifyReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut prev = GENESIS.to_string();
    let mut expected_seq: Option<u64> = None;
    let mut records = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            bail!("{}:{n}: empty line inside the log", path.display());
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{n}: not a JSON record", path.display()))?;
        let claimed = value.get("prev").and_then(Value::as_str).unwrap_or("");
        let seq = value.get("seq").and_then(Value::as_u64);
        if claimed != prev {
            bail!(
                "{}:{n}: record {} does not follow the record before it (hash mismatch): a record was edited, removed or reordered",
                path.display(),
                seq.map_or_else(|| "?".to_string(), |s| s.to_string())
            );
        }
        match (expected_seq, seq) {
            (_, None) => bail!("{}:{n}: record has no sequence number", path.display()),
            (Some(want), Some(got)) if got != want => {
                bail!(
                    "{}:{n}: sequence number {got}, expected {want}: a record was removed or reordered",
                    path.display()
                )
            }
            _ => {}
        }
        expected_seq = seq.map(|s| s + 1);
        prev = hash_line(line.as_bytes());
        records += 1;
    }
    Ok(VerifyReport {
        records,
        last_hash: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditLog;

    fn write_log(dir: &Path, n: usize) -> std::path::PathBuf {
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path, false).unwrap();
        for i in 0..n {
            let mut f = serde_json::Map::new();
            f.insert("user".into(), format!("user{i}").into());
            log.record("session_start", f);
        }
        path
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
        log.record("daemon_stop", serde_json::Map::new());
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
}
