//! Appending records.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::GENESIS;
use crate::clock;

/// The fields of one record besides `seq`, `time`, `event` and `prev`.
pub type Fields = Map<String, Value>;

pub struct AuditLog {
    file: Option<File>,
    path: Option<PathBuf>,
    prev: String,
    seq: u64,
    stdout: bool,
}

/// Escapes characters that could rewrite a terminal or hide text when the log is
/// read (control characters, including DEL and C1, and bidirectional overrides).
/// JSON escaping alone leaves DEL, C1 and bidi characters as they are.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn hash_line(line: &[u8]) -> String {
    Sha256::digest(line)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl AuditLog {
    /// Opens (creating with mode 0600 in a 0700 directory) and continues the chain
    /// of an existing file.
    pub fn open(path: &Path, stdout: bool) -> Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating audit log directory {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening audit log {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        let (prev, seq) = last_record(&mut file)?;
        Ok(Self {
            file: Some(file),
            path: Some(path.to_path_buf()),
            prev,
            seq,
            stdout,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one record. Failures are logged, never fatal: losing the audit file
    /// must not stop enforcement.
    pub fn record(&mut self, event: &str, fields: Fields) {
        let mut record = Map::new();
        record.insert("seq".into(), Value::from(self.seq + 1));
        record.insert(
            "time".into(),
            Value::from(clock::rfc3339(std::time::SystemTime::now())),
        );
        record.insert("event".into(), Value::from(event));
        for (k, v) in fields {
            record.insert(k, sanitize(v));
        }
        record.insert("prev".into(), Value::from(self.prev.clone()));
        let line = match serde_json::to_string(&Value::Object(record)) {
            Ok(line) => line,
            Err(err) => {
                tracing::error!("cannot encode audit record: {err}");
                return;
            }
        };
        if let Some(file) = &mut self.file
            && let Err(err) = writeln!(file, "{line}").and_then(|_| file.flush())
        {
            tracing::error!("cannot write audit log: {err}");
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        self.prev = hash_line(line.as_bytes());
        self.seq += 1;
    }
}

fn sanitize(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(clean(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(sanitize).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (clean(&k), sanitize(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Hash and sequence number of the last record in the file.
fn last_record(file: &mut File) -> Result<(String, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut last: Option<String> = None;
    for line in BufReader::new(&*file).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            last = Some(line);
        }
    }
    file.seek(SeekFrom::End(0))?;
    Ok(match last {
        None => (GENESIS.to_string(), 0),
        Some(line) => {
            let seq = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64))
                .unwrap_or(0);
            (hash_line(line.as_bytes()), seq)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_does_not() {
        assert_eq!(
            clean("a\u{7f}b\u{9b}c\u{202e}d"),
            "a\\u{7f}b\\u{9b}c\\u{202e}d"
        );
        assert_eq!(clean("plain ünïcode"), "plain ünïcode");
        assert_eq!(clean("esc\u{1b}[2J"), "esc\\u{1b}[2J");
    }
}
